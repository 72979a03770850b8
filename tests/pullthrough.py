"""A fleet's registries on loopback: an origin whose access log counts what it serves, and CNCF
distribution in proxy mode (a pull-through mirror, ``proxy: remoteurl:``) in front of it.

Both are real ``docker-registry`` processes (distribution 2.8) like those of tests/registry.py; the
origin's access log (one combined-log line per request, written after the response) is the count of
blob bodies it sent, as in bench/registry.py.
"""

from __future__ import annotations

import collections
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from registry import REGISTRY_BINARY, RegistryServer, free_port, registry_config, stop_process

ACCESS_LINE = re.compile(r'"GET /v2/\S*/blobs/(sha256:[0-9a-f]{64}) HTTP/[\d.]+" (\d{3}) (\d+|-)')
START_TIMEOUT = 15.0


def start(*, remote_url: str | None = None, access_log: bool = False) -> RegistryServer:
    """A plain-HTTP registry; a pull-through mirror of ``remote_url`` when given."""
    workdir = tempfile.TemporaryDirectory(prefix="kitfs-fleet-")
    base = Path(workdir.name)
    (base / "storage").mkdir()
    for _ in range(3):
        port = free_port()
        config: dict[str, Any] = registry_config(base / "storage", port)
        config["log"]["accesslog"] = {"disabled": not access_log}
        config["log"]["level"] = "info" if access_log else "warn"
        if remote_url:
            config["proxy"] = {"remoteurl": remote_url}
        (base / "config.yml").write_text(yaml.safe_dump(config))
        server = RegistryServer(
            host=f"127.0.0.1:{port}",
            url=f"http://127.0.0.1:{port}",
            root=base / "storage",
            log_path=base / "registry.log",
            workdir=workdir,
        )
        with server.log_path.open("ab") as log:
            server.process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(base / "config.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if _ready(server):
            return server
        stop_process(server.process)
    workdir.cleanup()
    raise RuntimeError("docker-registry did not start")


def _ready(server: RegistryServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            assert server.process is not None
            if server.process.poll() is not None:
                return False
            try:
                client.get(f"{server.url}/v2/")
                return True
            except httpx.TransportError:
                time.sleep(0.05)
    return False


def blob_bodies(server: RegistryServer) -> collections.Counter[str]:
    """How many times the registry sent each blob's body (GET answered 200 or 206)."""
    served: collections.Counter[str] = collections.Counter()
    for digest, code, _size in ACCESS_LINE.findall(server.log()):
        if code in ("200", "206"):
            served[digest] += 1
    return served
