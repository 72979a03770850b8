"""Real registries for the tests: Debian's docker-registry (CNCF distribution 2.8) on loopback ports.

Each server lives in its own temporary directory (config, storage, htpasswd, certificates, log) that
``stop()`` removes together with the process. Variants: htpasswd basic auth, TLS from a throw-away
trustme CA, and token auth against a token server from ``tests/tokenserver.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import trustme
import yaml

REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
START_TIMEOUT = 15.0
START_ATTEMPTS = 3
LOG_LEVEL = "warn"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a server to start on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def unreachable_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 held bound but never listening while the block runs: a connection
    to it is refused, and no server started meanwhile can take it (a released port can be)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@dataclass(frozen=True)
class TokenAuth:
    """The registry side of token auth: where tokens come from and whose signatures to trust."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass
class RegistryServer:
    """A running docker-registry: ``host`` is ``127.0.0.1:PORT``, ``url`` its base URL."""

    host: str
    url: str
    root: Path
    log_path: Path
    ca_pem: Path | None = None
    users: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def username(self) -> str:
        return next(iter(self.users))

    @property
    def password(self) -> str:
        return self.users[self.username]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop the process and remove every file it had (safe to call twice)."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    # Cost 4 keeps the registry's bcrypt check fast; distribution accepts $2b$ hashes.
    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, pw in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")


def registry_config(
    root: Path,
    port: int,
    *,
    tls: tuple[Path, Path] | None = None,
    client_cas: Path | None = None,
    htpasswd: Path | None = None,
    token: TokenAuth | None = None,
) -> dict[str, Any]:
    """The docker-registry configuration (docs/configuration.md of distribution 2.8)."""
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": "kitfs-test-secret"}
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if client_cas:
            http["tls"]["clientcas"] = [str(client_cas)]
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": LOG_LEVEL, "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "kitfs-test", "path": str(htpasswd)}}
    if token:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.rootcertbundle),
            }
        }
    return config


@dataclass(frozen=True)
class _Tls:
    cert: Path
    key: Path
    ca_pem: Path
    client_pem: Path | None  # a client certificate and key in one PEM file, when clients need one


def _tls_files(ca: trustme.CA, directory: Path, client_certs: bool) -> _Tls:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    tls = _Tls(directory / "server.pem", directory / "server.key", directory / "ca.pem", None)
    tls.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    tls.key.write_bytes(leaf.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(tls.ca_pem))
    if not client_certs:
        return tls
    client = ca.issue_cert("kitfs-test-client@example.com")
    client_pem = directory / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    return _Tls(tls.cert, tls.key, tls.ca_pem, client_pem)


def start_registry(
    *,
    users: dict[str, str] | None = None,
    tls_ca: trustme.CA | None = None,
    token: TokenAuth | None = None,
    client_certs: bool = False,
) -> RegistryServer:
    """Start a registry: basic auth when ``users``, TLS when ``tls_ca`` (requiring client
    certificates from the same CA when ``client_certs``; ``.extra["client_pem"]`` holds one), token
    auth when ``token``."""
    workdir = tempfile.TemporaryDirectory(prefix="kitfs-registry-")
    try:
        base = Path(workdir.name)
        (base / "storage").mkdir()
        htpasswd = None
        if users and token is None:
            htpasswd = base / "htpasswd"
            write_htpasswd(htpasswd, users)
        tls = _tls_files(tls_ca, base, client_certs) if tls_ca else None
        server = _launch(base, workdir, tls, htpasswd, token)
        server.users = dict(users or {})
        if tls and tls.client_pem:
            server.extra["client_pem"] = tls.client_pem
        return server
    except BaseException:
        workdir.cleanup()
        raise


def _launch(
    base: Path,
    workdir: tempfile.TemporaryDirectory[str],
    tls: _Tls | None,
    htpasswd: Path | None,
    token: TokenAuth | None,
) -> RegistryServer:
    """Start the process on a free port (another one if that port was taken meanwhile)."""
    config = base / "config.yml"
    for _ in range(START_ATTEMPTS):
        port = free_port()
        settings = registry_config(
            base / "storage",
            port,
            tls=(tls.cert, tls.key) if tls else None,
            client_cas=tls.ca_pem if tls and tls.client_pem else None,
            htpasswd=htpasswd,
            token=token,
        )
        config.write_text(yaml.safe_dump(settings))
        server = RegistryServer(
            host=f"127.0.0.1:{port}",
            url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
            root=base / "storage",
            log_path=base / "registry.log",
            ca_pem=tls.ca_pem if tls else None,
            workdir=workdir,
        )
        with server.log_path.open("ab") as log:
            server.process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        if _wait_ready(server, tls.client_pem if tls else None):
            return server
        stop_process(server.process)
        if "address already in use" not in server.log():
            break
    raise RuntimeError(f"docker-registry did not start:\n{server.log()[-2000:]}")


def _wait_ready(server: RegistryServer, client_pem: Path | None) -> bool:
    """Poll GET /v2/ until the registry answers (any status: 401 is ready too)."""
    deadline = time.monotonic() + START_TIMEOUT
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client_pem:
        context.load_cert_chain(client_pem)
    with httpx.Client(verify=context, timeout=2.0, trust_env=False) as client:
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
