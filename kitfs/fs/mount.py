"""Mounting and unmounting: options, mountpoint checks, the daemon, signals, ``fusermount3 -u``.

``mount`` checks the mountpoint, then (unless in the foreground) forks before trio, pyfuse3 or any
network code is imported: the child detaches, loads the daemon (kitfs.fs.daemon), resolves the
reference (manifest and config only), mounts, and tells the parent through a pipe that the mount is
ready or why it failed, so the command's exit code and message are those of the mount itself; the
parent, having loaded little, exits at once. SIGTERM, SIGINT and SIGHUP end the daemon cleanly: the FUSE loop stops and the
mount is removed (lazily if files are still open), so no stale mount is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kitfs.config import Paths, Refresh, check_refresh, kitfs_cache_dir
from kitfs.errors import KitfsError, MountError, UsageError
from kitfs.fs.ocireference import absolute_reference
from kitfs.fs.requestbound import request_timeout
from kitfs.fs.tree import LAYOUTS
from kitfs.oci.deadline import transfer_settings
from kitfs.oci.options import RegistryOptions
from kitfs.signing import signatures_requested
from kitfs.storage.cache import BlobCache

if TYPE_CHECKING:
    from kitfs.signing.policy import Policy

log = logging.getLogger(__name__)

FUSERMOUNT = "fusermount3"
FSTYPE = "fuse.kitfs"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_FSNAME_SAFE = re.compile(r"[^A-Za-z0-9._:/@+=-]")


@dataclass(frozen=True)
class MountOptions:
    """Everything a mount needs, resolved from flags, ``-o`` options and the environment."""

    reference: str
    mountpoint: Path
    layout: str = "sections"
    cache_dir: Path = field(default_factory=kitfs_cache_dir)
    cache_size: int | None = None
    foreground: bool = False
    debug: bool = False
    allow_other: bool = False
    nonempty: bool = False
    progress: bool = False
    paths: Paths = field(default_factory=Paths.resolve)
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    signatures: Policy | None = None  # what --verify-key / --policy / $KITFS_POLICY require
    refresh: Refresh = "auto"
    request_timeout: float = 300.0  # the longest a FUSE request waits (kitfs.fs.operations)
    shared_cache: bool = False  # a node cache other users may read (kitfs.storage.cache)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UsageError(f"unknown layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")

    @property
    def log_path(self) -> Path:
        name = str(self.mountpoint).strip("/").replace("/", "-") or "root"
        return self.cache_dir / "logs" / f"{name}.log"


# Options mount(8) passes to a helper that are not ours to act on (fstab, systemd, generic VFS).
GENERIC_OPTIONS = frozenset(
    [
        "defaults",
        "ro",
        "rw",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "_netdev",
        "nofail",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "diratime",
        "nodiratime",
        "sync",
        "async",
        "dirsync",
        "lazytime",
        "nolazytime",
        "silent",
        "loud",
        "mand",
        "nomand",
    ]
)
GENERIC_PREFIXES = ("x-", "comment=", "helper=")
FLAG_OPTIONS = frozenset(
    {"allow_other", "nonempty", "debug", "foreground", "plain_http", "shared_cache"}
)
VALUE_OPTIONS = frozenset(
    {
        "layout",
        "cache_dir",
        "cache_size",
        "config",
        "tls_verify",
        "ca_file",
        "cert",
        "key",
        "proxy",
        "concurrency",
        "verify_key",
        "policy",
        "refresh",
        "registries_conf",
        "min_rate",
        "rate_window",
        "idle_timeout",
        "request_timeout",
    }
)


def parse_option_list(texts: Iterable[str], *, sloppy: bool = False) -> dict[str, str | bool]:
    """``-o`` values (``allow_other,layout=unpack,cache_size=20G``) as settings; generic mount
    options (``ro``, ``noauto``, ``_netdev``, ``x-systemd.*``, ...) are accepted and ignored."""
    settings: dict[str, str | bool] = {}
    for text in texts:
        for item in text.split(","):
            item = item.strip()
            if not item or item in GENERIC_OPTIONS or item.startswith(GENERIC_PREFIXES):
                continue
            name, has_value, value = item.partition("=")
            key = name.replace("-", "_")
            if key in FLAG_OPTIONS and not has_value:
                settings[key] = True
            elif key in VALUE_OPTIONS and has_value:
                settings[key] = value
            elif sloppy:
                log.info("ignoring unknown mount option %r", item)
            else:
                raise UsageError(
                    f"unknown mount option {item!r} (kitfs takes {', '.join(sorted(FLAG_OPTIONS))}, "
                    f"and {', '.join(f'{v}=...' for v in sorted(VALUE_OPTIONS))})"
                )
    return settings


def _as_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"{name} must be true or false, not {value!r}")


def build_options(
    reference: str, mountpoint: str | Path, settings: Mapping[str, object]
) -> MountOptions:
    """MountOptions from flat settings (command-line flags merged with ``-o`` options)."""

    def text(key: str) -> str | None:
        value = settings.get(key)
        return None if value is None or value is False else str(value)

    def path(key: str) -> str | None:
        value = text(key)  # the daemon works from "/": relative paths would change meaning
        return os.path.abspath(os.path.expanduser(value)) if value else None

    try:
        concurrency = int(settings.get("concurrency") or 5)  # type: ignore[call-overload]
    except ValueError:
        raise UsageError(
            f"concurrency must be a number, not {settings.get('concurrency')!r}"
        ) from None
    if concurrency < 1:
        raise UsageError("concurrency must be at least 1")
    registry = RegistryOptions(
        plain_http=_as_bool(settings.get("plain_http", False), "plain_http"),
        tls_verify=_as_bool(settings.get("tls_verify", True), "tls_verify"),
        ca_file=path("ca_file"),
        cert=path("cert"),
        key=path("key"),
        proxy=text("proxy"),
        concurrency=concurrency,
        registries_conf=path("registries_conf"),
        **transfer_settings(text("min_rate"), text("rate_window"), text("idle_timeout")),
    )
    size = text("cache_size")
    return MountOptions(
        reference=reference,
        mountpoint=Path(mountpoint),
        layout=text("layout") or "sections",
        cache_dir=kitfs_cache_dir(text("cache_dir")),
        cache_size=parse_size(size) if size else None,
        foreground=_as_bool(settings.get("foreground", False), "foreground"),
        debug=_as_bool(settings.get("debug", False), "debug"),
        allow_other=_as_bool(settings.get("allow_other", False), "allow_other"),
        nonempty=_as_bool(settings.get("nonempty", False), "nonempty"),
        progress=_as_bool(settings.get("progress", False), "progress"),
        paths=Paths.resolve(text("config")),
        registry=registry,
        signatures=_signatures(path("verify_key"), path("policy")),
        refresh=check_refresh(text("refresh") or "auto"),
        request_timeout=request_timeout(text("request_timeout")),
        shared_cache=_as_bool(settings.get("shared_cache", False), "shared_cache"),
    )


def _signatures(verify_key: str | None, policy_file: str | None) -> Policy | None:
    """The policy the options (or ``$KITFS_POLICY``) ask for; the signing code loads only then."""
    if not signatures_requested(verify_key, policy_file):
        return None
    from kitfs.signing.policy import resolve_policy

    return resolve_policy(verify_key, policy_file)


def parse_size(text: str) -> int | None:
    """``10G``, ``512MiB``, ``1.5T``, plain bytes; ``0``, ``none`` or ``unlimited`` mean no bound."""
    if text.strip().lower() in ("", "0", "none", "unlimited"):
        return None
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"invalid size {text!r}: use a number with an optional unit (K, M, G, T)")
    power = " kmgtp".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


# -- mountpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    fstype: str
    source: str
    device: str = ""  # major:minor, the name of the mount's backing device info in /sys/class/bdi


def _unescape(field_text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def mounts() -> Iterator[MountInfo]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            if "-" not in fields:
                continue
            dash = fields.index("-")
            if len(fields) < dash + 3 or len(fields) < 5:
                continue
            yield MountInfo(
                _unescape(fields[4]), fields[dash + 1], _unescape(fields[dash + 2]), fields[2]
            )


def find_mount(path: Path) -> MountInfo | None:
    """The mount whose mountpoint is ``path`` (the last one, if several are stacked)."""
    target = os.path.realpath(path)
    found = None
    for info in mounts():
        if info.mountpoint == target:
            found = info
    return found


def prepare_mountpoint(path: Path, *, nonempty: bool = False) -> Path:
    """Check that ``path`` can take a mount: it exists, is an empty directory, is not mounted.
    A stale FUSE mount there (its daemon died) is cleaned up first."""
    path = Path(os.path.abspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {path} does not exist (create it with mkdir)") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountError(f"cannot use {path} as a mountpoint: {exc.strerror}") from None
        _clean_stale(path)
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint {path} is not a directory")
    existing = find_mount(path)
    if existing is not None and existing.fstype == "autofs":
        # An automount point (x-systemd.automount) waiting for us: looking inside would wait on
        # the very mount being made. The mount goes on top of it.
        return path
    if existing is not None:
        if not _is_stale(path):
            raise MountError(
                f"{path} is already a mount point (unmount it first: kitfs umount {path})"
            )
        _clean_stale(path)
    if not nonempty:
        try:
            with os.scandir(path) as entries:
                if any(True for _ in entries):
                    raise MountError(
                        f"mountpoint {path} is not empty (mount on an empty directory, or pass -o nonempty)"
                    )
        except PermissionError:
            raise MountError(f"cannot read mountpoint {path}: permission denied") from None
    return path


def _is_stale(path: Path) -> bool:
    """Whether a mount's daemon is gone. ``statfs`` always reaches the daemon (``stat`` may be
    answered from the kernel's attribute cache), so a dead one shows as ENOTCONN."""
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _clean_stale(path: Path) -> None:
    log.warning("%s is a stale mount (its daemon is gone): unmounting it", path)
    result = _fusermount("-u", "-z", str(path))
    if result.returncode != 0:
        raise MountError(
            f"{path} is a stale mount that cannot be removed: {result.stderr.strip() or 'fusermount3 failed'}"
        )


def _fusermount(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [FUSERMOUNT, *args], capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise MountError(f"{FUSERMOUNT} is not installed (install the fuse3 package)") from None


def unmount(path: Path, *, lazy: bool = False) -> None:
    """Unmount a kitfs mount with ``fusermount3 -u`` (``-z`` when lazy); the daemon then exits."""
    path = Path(os.path.abspath(path))
    info = find_mount(path)
    if info is None:
        if not os.path.lexists(path):
            raise MountError(f"{path} does not exist")
        raise MountError(f"{path} is not mounted")
    if info.fstype != FSTYPE:
        raise MountError(f"{path} is not a kitfs mount (it is {info.fstype})")
    result = _fusermount("-u", *(["-z"] if lazy else []), str(path))
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        if "busy" in detail.lower():
            raise MountError(
                f"cannot unmount {path}: it is busy (a process has a file open or its working "
                f"directory there); close them, or run `kitfs umount --lazy {path}`"
            )
        raise MountError(f"cannot unmount {path}: {detail or 'fusermount3 failed'}")


# -- the mount ----------------------------------------------------------------------------------


Notify = Callable[[str], None]


def fuse_options(options: MountOptions) -> set[str]:
    """The options handed to libfuse: read-only, kernel permission checks, our name and type."""
    fsname = _FSNAME_SAFE.sub("_", options.reference)[:200] or "kitfs"
    result = {"ro", "default_permissions", "noatime", "subtype=kitfs", f"fsname={fsname}"}
    if options.allow_other:
        result.add("allow_other")
    return result


def mount(options: MountOptions) -> int:
    """Mount as ``options`` say: in the foreground, or as a daemon once the mount is ready."""
    mountpoint = prepare_mountpoint(options.mountpoint, nonempty=options.nonempty)
    # The daemon works from "/" (so it keeps no directory busy): make every path absolute first.
    options = replace(
        options, mountpoint=mountpoint, reference=absolute_reference(options.reference)
    )
    BlobCache(options.cache_dir, options.cache_size, options.shared_cache or None).ensure()
    if options.foreground:
        from kitfs.fs.daemon import run

        _configure_logging(options.debug, None)
        run(options, lambda _state: None)
        return 0
    return _daemonize(options)


def _configure_logging(debug: bool, log_path: Path | None) -> None:
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if not debug:
        for noisy in ("httpx", "httpcore", "pyfuse3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_path is not None:
        log.info("kitfs mount daemon started (pid %d), logging to %s", os.getpid(), log_path)


def _daemonize(options: MountOptions) -> int:
    """Fork (before trio starts); the parent returns once the child mounted, or raises its error."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os._exit(_daemon_main(options, write_end))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode("utf-8", "replace").strip()
    if answer.split("\n", 1)[0] == "ready":
        for line in answer.splitlines()[1:]:  # warnings of the resolve (a cached tag, ...)
            print(f"kitfs: warning: {line.removeprefix('warning ')}", file=sys.stderr)
        return 0
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    if answer.startswith("error "):
        raise MountError(answer[len("error ") :])
    raise MountError(f"the mount daemon exited before mounting (see {options.log_path})")


def _daemon_main(options: MountOptions, pipe: int) -> int:
    """The daemon: detach, log to a file, serve; report readiness or the first error on ``pipe``."""
    reported = False

    def notify(state: str) -> None:
        nonlocal reported
        if not reported:
            reported = True
            with contextlib.suppress(OSError):
                os.write(pipe, state.encode())
                os.close(pipe)

    try:
        os.setsid()
        _detach(options.log_path)
        _configure_logging(options.debug, options.log_path)
        from kitfs.fs.daemon import run  # trio, pyfuse3 and the layer code load after the fork

        run(options, notify)
        return 0
    except KitfsError as exc:
        log.error("%s", exc)
        notify(f"error {exc}")
        return exc.exit_code
    except BaseException as exc:
        log.exception("the mount daemon failed")
        notify(f"error internal error: {type(exc).__name__}: {exc} (see {options.log_path})")
        return 70
    finally:
        notify("error the mount daemon stopped")


def _detach(log_path: Path) -> None:
    """Standard input from /dev/null, output to the log (libfuse writes its own errors there)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(out, 0o600)  # the log names what was read: private, like the cache
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    os.chdir("/")
