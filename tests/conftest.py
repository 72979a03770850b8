"""Shared fixtures. Each section keeps its helpers in a module of its own under tests/."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from ci_skips import pytest_runtest_makereport  # noqa: F401  (the hook: skips fail in CI)
from faultproxy import FaultProxy
from registry import RegistryServer, TokenAuth, start_registry, unreachable_port
from tokenserver import TokenServer

# ---------------------------------------------------------------------------------------------------
# OCI registries: real docker-registry processes (tests/registry.py), a token server
# (tests/tokenserver.py) and a fault-injecting proxy (tests/faultproxy.py). Every fixture stops what
# it started and removes its files, also when the test fails.
# ---------------------------------------------------------------------------------------------------

TEST_USERS = {"alice": "s3cret"}


@pytest.fixture(scope="session", autouse=True)
def private_mount_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """unpack, info and prefetch keep manifests and configs in the mount cache: point its default
    ($KITFS_CACHE) at a temporary directory, so that tests never touch the user's cache."""
    saved = os.environ.get("KITFS_CACHE")
    os.environ["KITFS_CACHE"] = str(tmp_path_factory.mktemp("kitfs-cache"))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("KITFS_CACHE", None)
        else:
            os.environ["KITFS_CACHE"] = saved


@pytest.fixture(autouse=True)
def own_mount_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test its own default mount cache: what one test's unpack cached cannot change what
    another test's requests or faults see."""
    monkeypatch.setenv("KITFS_CACHE", str(tmp_path_factory.mktemp("kitfs-cache")))


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """A plain-HTTP registry without auth, shared by the session: use unique repository names."""
    server = start_registry()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry_factory() -> Iterator[Callable[..., RegistryServer]]:
    """``start(users=..., tls_ca=..., token=...)`` for a variant registry that lives for one test."""
    started: list[RegistryServer] = []

    def start(**kwargs: Any) -> RegistryServer:
        server = start_registry(**kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[RegistryServer]:
    """A registry with htpasswd basic auth: ``.username`` alice, ``.password`` s3cret."""
    server = start_registry(users=TEST_USERS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The throw-away CA that signs ``tls_registry``'s certificate."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_registry(tls_ca: trustme.CA) -> Iterator[RegistryServer]:
    """A registry on HTTPS with a certificate from ``tls_ca``; ``.ca_pem`` is the CA's PEM file."""
    server = start_registry(tls_ca=tls_ca)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def token_registry() -> Iterator[RegistryServer]:
    """A registry with bearer-token auth; ``.extra["token_server"]`` is its ``TokenServer``
    (users alice/s3cret; anonymous callers get no access)."""
    tokens = TokenServer(users=TEST_USERS).start()
    bundle_dir = tempfile.TemporaryDirectory(prefix="kitfs-token-")
    server: RegistryServer | None = None
    try:
        bundle = tokens.write_root_bundle(Path(bundle_dir.name) / "token-ca.pem")
        token = TokenAuth(
            realm=tokens.realm, service=tokens.service, issuer=tokens.issuer, rootcertbundle=bundle
        )
        server = start_registry(users=TEST_USERS, token=token)
        server.extra["token_server"] = tokens
        yield server
    finally:
        if server is not None:
            server.stop()
        tokens.stop()
        bundle_dir.cleanup()


@pytest.fixture
def fault_proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of ``registry``; add rules with ``proxy.add_rule``."""
    proxy = FaultProxy(registry.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def unreachable_host() -> Iterator[str]:
    """``127.0.0.1:PORT`` where nothing listens: the port is held (bound, not listening) for the
    test, so connections are refused and no other server can start there meanwhile."""
    with unreachable_port() as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture
def repo_name() -> str:
    """A repository name no other test uses."""
    return f"kitfs-test/{uuid.uuid4().hex[:12]}"
