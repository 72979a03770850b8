"""A mount's options: the ``MountOptions`` record, read from command-line flags merged with ``-o``
options (mount(8) and fstab style, generic options accepted and ignored), sizes such as ``20G``,
and the options handed to libfuse.

Both sides of a mount use it: the command that checks the mountpoint and forks
(``kitfs.fs.mount``) and the daemon that serves it (``kitfs.fs.daemon``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kitfs.config import Paths, Refresh, check_refresh, kitfs_cache_dir
from kitfs.errors import UsageError
from kitfs.fs.requestbound import request_timeout
from kitfs.fs.tree import LAYOUTS
from kitfs.oci.deadline import transfer_settings
from kitfs.oci.options import RegistryOptions
from kitfs.signing import signatures_requested

if TYPE_CHECKING:
    from kitfs.signing.policy import Policy

log = logging.getLogger(__name__)

DEFAULT_SPAN_MEMORY = 192 << 20  # kitfs.fs.spanmemory.DEFAULT_BUDGET (not imported: mmap, ctypes)
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_FSNAME_SAFE = re.compile(r"[^A-Za-z0-9._:/@+=-]")

Notify = Callable[
    [str], None
]  # how the daemon reports "ready" (or "error ...") to the mount command


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
    request_timeout: float = 300.0  # the longest a FUSE request waits (kitfs.fs.requestbound)
    shared_cache: bool = False  # a node cache other users may read (kitfs.storage.cache)
    span_memory: int = DEFAULT_SPAN_MEMORY  # verified spans held in memory for readers

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
        "span_memory",
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
    memory = text("span_memory")
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
        span_memory=span_memory(memory),
    )


def span_memory(text: str | None) -> int:
    """``--span-memory``: the bytes of verified spans a mount keeps in memory for its readers
    (default 192 MiB; ``0`` keeps none: every read comes from the span files)."""
    if text is None or text == "":
        return DEFAULT_SPAN_MEMORY
    if text.strip().lower() in ("0", "none"):
        return 0
    size = parse_size(text)
    if size is None:  # "unlimited": memory must have a bound
        raise UsageError(f"span_memory must be a size (e.g. 256M) or 0, not {text!r}")
    return size


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


def fuse_options(options: MountOptions) -> set[str]:
    """The options handed to libfuse: read-only, kernel permission checks, our name and type."""
    fsname = _FSNAME_SAFE.sub("_", options.reference)[:200] or "kitfs"
    result = {"ro", "default_permissions", "noatime", "subtype=kitfs", f"fsname={fsname}"}
    if options.allow_other:
        result.add("allow_other")
    return result
