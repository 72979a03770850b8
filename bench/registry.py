"""A real docker-registry on loopback for the benchmark, with its access log as the byte counter.

distribution 2.8 writes one combined-log line per request, after the response, with the number of
body bytes it sent; summing the GET lines since a mark gives the bytes a command fetched without a
proxy in the data path (a proxy would cost CPU on a two-core machine and skew the timings).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ACCESS_LINE = re.compile(r'"(GET|HEAD) (/v2/\S*) HTTP/[\d.]+" (\d{3}) (\d+|-)')
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Fetched:
    """Bytes a command fetched: blob bodies, everything else (manifests, tags), and request count."""

    blob_bytes: int
    other_bytes: int
    requests: int

    @property
    def total(self) -> int:
        return self.blob_bytes + self.other_bytes


class Registry:
    """``docker-registry serve`` on 127.0.0.1 with storage under ``root``; ``host`` is host:port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.log_path = root / "registry.log"

    def start(self) -> None:
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        if not Path(binary).exists():
            raise RuntimeError(
                "docker-registry is not installed: run `make setup` (Debian package docker-registry)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            port = free_port()
            config = self.root / "config.yml"
            config.write_text(_config(self.root / "storage", port))
            self.host = f"127.0.0.1:{port}"
            log = self.log_path.open("ab")
            self.process = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"docker-registry did not start; see {self.log_path}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2).close()
                return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def mark(self) -> int:
        """A position in the access log; ``fetched_since(mark)`` counts what came after it."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def fetched_since(self, mark: int, settle: float = 1.0) -> Fetched:
        """Sum the GET response bodies logged after ``mark``, once the log has been quiet for 50 ms
        (at most ``settle`` s): a line is written just after its response ends."""
        deadline = time.monotonic() + settle
        size = self.mark()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.mark()
            if now == size:
                time.sleep(0.03)
                if self.mark() == now:
                    break
            size = now
        with self.log_path.open("rb") as log:
            log.seek(mark)
            text = log.read().decode(errors="replace")
        blob = other = count = 0
        for match in ACCESS_LINE.finditer(text):
            method, path, _status, body = match.groups()
            if method != "GET" or body == "-":
                continue
            count += 1
            if "/blobs/" in path and "/uploads/" not in path:
                blob += int(body)
            else:
                other += int(body)
        return Fetched(blob, other, count)


def _config(storage: Path, port: int) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: kitfs-bench-secret\n"
    )
