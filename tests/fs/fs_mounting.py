"""Running real mounts in tests: the ``kitfs mount`` wrapper that cleans up after itself."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from registry import RegistryServer

from kitfs.fs.mounttable import find_mount

KITFS = str(Path(sys.executable).with_name("kitfs"))
MOUNT_HELPER = str(Path(sys.executable).with_name("mount.kitfs"))
COMPRESSIONS = ("none", "gzip", "zstd")
_PID_RE = re.compile(r"serving .* \(pid (\d+)\)")


@dataclass
class Published:
    """ModelKits in a kit home and in the registry, with their unpacked trees for comparison."""

    home: Path
    registry: RegistryServer
    repository: str
    unpacked: Path
    sections: dict[str, Path]
    big_repository: str
    big_file: Path

    def ref(self, tag: str, host: str | None = None, repository: str | None = None) -> str:
        return f"{host or self.registry.host}/{repository or self.repository}:{tag}"


@dataclass
class Mounter:
    """Runs ``kitfs mount`` and remembers what to clean up. Mounts use an empty kit home (so every
    blob comes from the registry) unless ``local=True`` asks for the home the ModelKits were packed in."""

    base: Path
    published_home: Path
    mountpoints: list[Path] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cache: Path = field(init=False)
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cache = self.base / "cache"
        self.home = self.base / "home"

    def mountpoint(self, name: str = "mnt") -> Path:
        path = self.base / name
        path.mkdir(exist_ok=True)
        self.mountpoints.append(path)
        return path

    def run(
        self, *args: str, timeout: float = 60, local: bool = False
    ) -> subprocess.CompletedProcess[str]:
        home = self.published_home if local else self.home
        return subprocess.run(
            [KITFS, "--config", str(home), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def mount(
        self,
        ref: str,
        mountpoint: Path | None = None,
        *flags: str,
        cache: Path | None = None,
        local: bool = False,
    ) -> Path:
        target = mountpoint or self.mountpoint()
        result = self.try_mount(ref, target, *flags, cache=cache, local=local)
        assert result.returncode == 0, result.stderr
        assert find_mount(target) is not None
        return target

    def try_mount(
        self,
        ref: str,
        mountpoint: Path,
        *flags: str,
        cache: Path | None = None,
        local: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        if mountpoint not in self.mountpoints:
            self.mountpoints.append(mountpoint)
        return self.run(
            "mount",
            ref,
            str(mountpoint),
            "--plain-http",
            "--cache-dir",
            str(cache or self.cache),
            *flags,
            local=local,
        )

    def foreground(self, ref: str, mountpoint: Path, *flags: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                KITFS,
                "--config",
                str(self.home),
                "mount",
                "-f",
                ref,
                str(mountpoint),
                "--plain-http",
                "--cache-dir",
                str(self.cache),
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        wait_for(lambda: find_mount(mountpoint) is not None or process.poll() is not None)
        assert find_mount(mountpoint) is not None, process.stderr.read() if process.stderr else ""
        return process

    def log_path(self, mountpoint: Path, cache: Path | None = None) -> Path:
        name = str(mountpoint).strip("/").replace("/", "-")
        return (cache or self.cache) / "logs" / f"{name}.log"

    def daemon_pid(self, mountpoint: Path, cache: Path | None = None) -> int:
        pids = _PID_RE.findall(self.log_path(mountpoint, cache).read_text())
        assert pids, "the daemon logged no pid"
        return int(pids[-1])

    def cleanup(self) -> None:
        daemons = []
        for path in self.mountpoints:
            with contextlib.suppress(Exception):
                if self.log_path(path).exists():
                    daemons.extend(int(p) for p in _PID_RE.findall(self.log_path(path).read_text()))
            if find_mount(path) is not None:
                subprocess.run(
                    ["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False
                )
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait(5)
        for pid in daemons:
            if not wait_for(lambda pid=pid: not alive(pid), timeout=10) and _is_kitfs(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _is_kitfs(pid: int) -> bool:
    """Whether ``pid`` is still a kitfs mount daemon (and not a process that reused the number)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kitfs" in command and b"mount" in command


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        return state != "Z"
    return False


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
