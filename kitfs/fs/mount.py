"""Mounting and unmounting: mountpoint checks, the fork and its readiness pipe, ``fusermount3 -u``.

``mount`` checks the mountpoint, then (unless in the foreground) forks before trio, pyfuse3 or any
network code is imported: the child detaches, loads the daemon (kitfs.fs.daemon), resolves the
reference (manifest and config only), mounts, and tells the parent through a pipe that the mount is
ready or why it failed, so the command's exit code and message are those of the mount itself; the
parent, having loaded little, exits at once. SIGTERM, SIGINT and SIGHUP end the daemon cleanly: the FUSE loop stops and the
mount is removed (lazily if files are still open), so no stale mount is left behind. The options
are ``kitfs.fs.options``; the mount table is ``kitfs.fs.mounttable``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from kitfs.errors import KitfsError, MountError
from kitfs.fs.mounttable import find_mount
from kitfs.fs.ocireference import absolute_reference
from kitfs.fs.options import MountOptions
from kitfs.storage.cache import BlobCache

log = logging.getLogger(__name__)

FUSERMOUNT = "fusermount3"
FSTYPE = "fuse.kitfs"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# -- mountpoints --------------------------------------------------------------------------------


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


def mount(options: MountOptions) -> int:
    """Mount as ``options`` say: in the foreground, or as a daemon once the mount is ready."""
    mountpoint = prepare_mountpoint(options.mountpoint, nonempty=options.nonempty)
    # The daemon works from "/" (so it keeps no directory busy): make every path absolute first.
    options = replace(
        options, mountpoint=mountpoint, reference=absolute_reference(options.reference)
    )
    BlobCache(options.cache_dir, options.cache_size).ensure()
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
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    os.chdir("/")
