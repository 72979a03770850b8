"""Measuring helpers: run commands, drop caches, read files, sample a process's memory, mounts."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KITFS = str(Path(sys.executable).parent / "kitfs")
RATARMOUNT = str(Path(sys.executable).parent / "ratarmount")
SHARED_KIT = REPO.parent / "shared" / "tools" / "kit"
COMMAND_TIMEOUT = 1800.0
MOUNT_TIMEOUT = 120.0


def find_kit() -> str | None:
    """The reference `kit` binary: ``$KIT``, else `kit` on PATH, else the kit v1.7.0 kept beside
    the repository in ../shared/tools/kit (see its README); None when there is none."""
    for candidate in (os.environ.get("KIT"), shutil.which("kit"), str(SHARED_KIT)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


KIT = find_kit() or "kit"


class CommandFailed(RuntimeError):
    """A benchmark step's command failed; the message holds the command and its stderr tail."""


def run(
    cmd: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, env: dict[str, str] | None = None
) -> str:
    """Run ``cmd``, return its stdout; raise CommandFailed with the stderr tail on failure."""
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"`{' '.join(cmd)}` timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CommandFailed(f"`{' '.join(cmd)}` exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout


def kitfs(home: Path, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """``kitfs --config HOME --progress none ARGS...``."""
    return run([KITFS, "--config", str(home), "--progress", "none", *args], timeout=timeout)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


_drop_warned = False


def drop_page_cache() -> bool:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``; False (and one warning) where not allowed."""
    global _drop_warned
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as exc:
        if not _drop_warned:
            print(f"bench: page cache not dropped ({exc})", file=sys.stderr)
            _drop_warned = True
        return False


def can_drop_page_cache() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def dd_read(path: Path, timeout: float = COMMAND_TIMEOUT) -> float:
    """Seconds for ``dd if=PATH of=/dev/null bs=1M``: the sequential read every figure uses."""
    with Timer() as t:
        run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], timeout=timeout)
    return t.seconds


def ls_lr(path: Path) -> tuple[float, int]:
    """Seconds for ``ls -lR PATH`` and the number of lines it printed."""
    with Timer() as t:
        out = run(["ls", "-lR", str(path)], timeout=600)
    return t.seconds, out.count("\n")


def fresh_dir(path: Path) -> Path:
    """An empty directory at ``path`` (removed first if it exists)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def numbered_scratch(work: Path, number: int, name: str) -> Path:
    """An empty ``WORK/scratch/NNN-NAME`` for one step of a run (a mount left there is removed)."""
    path = work / "scratch" / f"{number:03d}-{name}"
    if is_mountpoint(path):
        force_unmount(path)
    return fresh_dir(path)


def wait_readable(path: Path, timeout: float = MOUNT_TIMEOUT) -> bytes:
    """Poll until ``path`` can be read; return its bytes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return path.read_bytes()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def is_mountpoint(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == str(path) for line in f)
    except OSError:
        return False


def force_unmount(path: Path) -> None:
    """Last resort when a daemon's own unmount failed: lazy fusermount3."""
    for cmd in (["fusermount3", "-u", str(path)], ["fusermount3", "-uz", str(path)]):
        if not is_mountpoint(path):
            return
        subprocess.run(cmd, capture_output=True, timeout=60)


def fuse_daemon_pid(mountpoint: Path, exclude: int | None = None) -> int | None:
    """The pid of the process serving ``mountpoint``: it names the mountpoint and holds /dev/fuse."""
    target = str(mountpoint)
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), exclude):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(arg.decode(errors="replace").rstrip("/") == target for arg in cmdline):
            continue
        if _holds_dev_fuse(int(entry)):
            return int(entry)
        found.append(int(entry))
    return max(found) if found else None


def _holds_dev_fuse(pid: int) -> bool:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


@dataclass
class RssSampler:
    """Samples VmRSS of ``pid`` every 50 ms in a thread; ``peak_mib`` also reads VmHWM at the end.

    With ``pid`` None (the daemon was not found) it does nothing and ``peak_mib`` is None.
    """

    pid: int | None
    peak_kib: int = 0
    hwm_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        if self.pid is None:
            return self
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        assert self.pid is not None
        while not self._stop.wait(0.05):
            rss = _status_kib(self.pid, "VmRSS")
            if rss is None:
                return
            self.peak_kib = max(self.peak_kib, rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.pid is not None:
            self.hwm_kib = _status_kib(self.pid, "VmHWM") or 0

    @property
    def peak_mib(self) -> float | None:
        if self.pid is None:
            return None
        return max(self.peak_kib, self.hwm_kib) / 1024

    def into(self, extra: dict[str, float]) -> dict[str, float]:
        """``extra`` with ``rss_mib`` added when a peak was measured."""
        peak = self.peak_mib
        return {**extra, "rss_mib": peak} if peak else extra


def random_block_reads(
    path: Path, readers: int, total_reads: int, block: int = 1024 * 1024, seed: int = 1
) -> tuple[float, list[float]]:
    """``readers`` threads each pread ``total_reads / readers`` random aligned blocks of ``path``.

    Returns the wall seconds for all reads and every read's latency in seconds.
    """
    import random

    blocks = os.stat(path).st_size // block
    if blocks < 1:
        raise RuntimeError(f"{path} is smaller than one {block}-byte block")
    per_reader = max(1, total_reads // readers)
    latencies: list[list[float]] = [[] for _ in range(readers)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(readers + 1)

    def reader(index: int) -> None:
        rng = random.Random(seed + index)
        fd = -1
        try:
            fd = os.open(path, os.O_RDONLY)
            barrier.wait()
            for _ in range(per_reader):
                offset = rng.randrange(blocks) * block
                start = time.perf_counter()
                data = os.pread(fd, block, offset)
                latencies[index].append(time.perf_counter() - start)
                if len(data) != block:
                    raise OSError(f"short read at {offset}: {len(data)} bytes")
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
        finally:
            if fd >= 0:
                os.close(fd)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    real = [f for f in failures if not isinstance(f, threading.BrokenBarrierError)] or failures
    if real:
        raise real[0] if isinstance(real[0], OSError) else RuntimeError(repr(real[0]))
    return wall, [x for per in latencies for x in per]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def find_in_mount(mountpoint: Path, section: str, rel: str) -> Path:
    """Where the mount shows the Kitfile path ``rel`` of ``section`` (``model``, ``datasets``, ...)."""
    candidates = [mountpoint / section / rel, mountpoint / rel]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{rel} is at none of {', '.join(map(str, candidates))}")
