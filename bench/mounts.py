"""FUSE mounts the benchmark starts and always stops: kitfs (`kitfs mount`) and ratarmount."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tools import (
    KITFS,
    MOUNT_TIMEOUT,
    RATARMOUNT,
    CommandFailed,
    Timer,
    force_unmount,
    fuse_daemon_pid,
    is_mountpoint,
    wait_readable,
)


class KitfsMount:
    """``kitfs --config HOME mount REF MNT --plain-http --cache-dir CACHE`` as a user runs it.

    ``start()`` returns the seconds from launching the command to a readable ``MNT/Kitfile``. Works
    whether ``kitfs mount`` daemonises (returns once mounted) or stays in the foreground.
    """

    def __init__(
        self, home: Path, ref: str, mountpoint: Path, cache: Path, extra: list[str]
    ) -> None:
        self.home, self.ref, self.mountpoint, self.cache = home, ref, mountpoint, cache
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.log = cache.parent / f"{cache.name}.mount.log"

    def command(self) -> list[str]:
        return [
            KITFS,
            "--config",
            str(self.home),
            "--progress",
            "none",
            "mount",
            self.ref,
            str(self.mountpoint),
            "--plain-http",
            "--cache-dir",
            str(self.cache),
            *self.extra,
        ]

    def start(self) -> float:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with Timer() as t, self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            self._wait_kitfile()
        self.pid = fuse_daemon_pid(self.mountpoint)
        return t.seconds

    def _wait_kitfile(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + MOUNT_TIMEOUT
        kitfile = self.mountpoint / "Kitfile"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code not in (None, 0):
                raise CommandFailed(f"`kitfs mount` exited {code}: {self._log_tail()}")
            if is_mountpoint(self.mountpoint):
                wait_readable(kitfile, timeout=max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.005)
        raise CommandFailed(
            f"`kitfs mount` gave no Kitfile in {MOUNT_TIMEOUT:.0f}s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def stop(self) -> None:
        """Unmount (as `kitfs umount` does: fusermount3 -u, without starting another Python) and
        wait for the daemon to exit; `kitfs umount`, then a lazy unmount, if that fails."""
        if is_mountpoint(self.mountpoint):
            subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, timeout=60
            )
        if is_mountpoint(self.mountpoint):
            subprocess.run(
                [KITFS, "umount", str(self.mountpoint)], capture_output=True, timeout=120
            )
            force_unmount(self.mountpoint)
        self._wait_daemon()

    def _wait_daemon(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait(10)
        self.process = None
        deadline = time.monotonic() + 30
        while self.pid is not None and _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.pid = None

    def reset(self) -> None:
        """Unmount and empty the cache and the home: the next ``start()`` is a cold one."""
        self.stop()
        for path in (self.cache, self.home):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)

    def __enter__(self) -> KitfsMount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class RatarMount:
    """``ratarmount --index-file IDX ARCHIVE MNT``; ``start()`` returns seconds until mounted."""

    def __init__(self, archive: Path, mountpoint: Path, index: Path) -> None:
        self.archive, self.mountpoint, self.index = archive, mountpoint, index
        self.pid: int | None = None

    def start(self) -> float:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        cmd = [RATARMOUNT, "--index-file", str(self.index), str(self.archive), str(self.mountpoint)]
        with Timer() as t:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=MOUNT_TIMEOUT * 5)
            if done.returncode != 0:
                tail = " | ".join(done.stderr.strip().splitlines()[-3:])
                raise CommandFailed(f"`{' '.join(cmd)}` exited {done.returncode}: {tail}")
            while not is_mountpoint(self.mountpoint):
                time.sleep(0.005)
        self.pid = fuse_daemon_pid(self.mountpoint)
        return t.seconds

    def stop(self) -> None:
        if is_mountpoint(self.mountpoint):
            subprocess.run(
                [RATARMOUNT, "-u", str(self.mountpoint)], capture_output=True, timeout=60
            )
            force_unmount(self.mountpoint)

    def __enter__(self) -> RatarMount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
