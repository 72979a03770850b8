"""Fixtures for the kit file system: the tables ModelKit in the registry, a counting proxy in front
of it, the unprivileged runner, and the mount fixtures of tests/fs for comparisons."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "fs"))

from faultproxy import FaultProxy  # noqa: E402
from fs_mounting import Mounter  # noqa: E402
from fsspec_kits import (  # noqa: E402
    WHOLE_TAG,
    Tables,
    layer_digests,
    pack_and_push,
    published_layers,
    write_context,
)
from nobody import Nobody, available  # noqa: E402
from registry import RegistryServer  # noqa: E402


@pytest.fixture(scope="session")
def tables(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Tables:
    old_umask = os.umask(0o022)
    try:
        base = tmp_path_factory.mktemp("tables")
        files = write_context(base / "context")
        repository = f"kitfs-fsspec/{uuid.uuid4().hex[:10]}"
        reference = f"{registry.host}/{repository}:v1"
        pack_and_push(base / "home", base / "context", reference)
        whole = f"{registry.host}/{repository}:{WHOLE_TAG}"
        pack_and_push(base / "home", base / "context", whole, "--no-span-index")
        return Tables(
            base / "home",
            repository,
            "v1",
            files,
            published_layers(base / "home", reference),
            layer_digests(base / "home", whole),
        )
    finally:
        os.umask(old_umask)


@pytest.fixture(scope="session")
def nobody() -> Iterator[Nobody]:
    reason = available()
    if reason is not None:
        pytest.skip(f"the unprivileged runner {reason}")
    runner = Nobody.create()
    try:
        yield runner
    finally:
        runner.remove()


@pytest.fixture
def counting_proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A proxy in front of the registry that records every request (and injects faults)."""
    proxy = FaultProxy(registry.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def mounter(tables: Tables, tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path, tables.home)
    try:
        yield m
    finally:
        m.cleanup()
