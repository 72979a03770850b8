"""Fixtures for real mounts: ModelKits pushed to the session's registry, and a mounter that always
unmounts (and stops the daemons it started) in teardown, even when the test fails."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_modelkits import kitfs, unpack_sections, write_context
from fs_mounting import COMPRESSIONS, Mounter, Published
from helpers import WHOLE
from registry import RegistryServer

BIG_SIZE = 24 << 20


@pytest.fixture(scope="session")
def published(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """The intersecting-paths ModelKit under tags none/gzip/zstd, and one with a big model file."""
    old_umask = os.umask(0o022)
    try:
        base = tmp_path_factory.mktemp("published")
        home = base / "home"
        context = write_context(base / "context")
        repository = f"kitfs-fs/{uuid.uuid4().hex[:10]}"
        for compression in COMPRESSIONS:
            ref = f"{registry.host}/{repository}:{compression}"
            kitfs(home, "pack", str(context), "-t", ref, "--compression", compression, *WHOLE)
            kitfs(home, "push", ref, "--plain-http")
        unpacked = base / "unpacked"
        kitfs(home, "unpack", f"{registry.host}/{repository}:none", "-d", str(unpacked))
        sections = unpack_sections(home, f"{registry.host}/{repository}:none", base / "sections")
        big_context = base / "big"
        big_context.mkdir()
        big_file = big_context / "model.bin"
        big_file.write_bytes(os.urandom(BIG_SIZE))
        (big_context / "Kitfile").write_text(
            "manifestVersion: 1.0.0\npackage:\n  name: big\nmodel:\n  name: big\n  path: model.bin\n"
        )
        big_repository = f"kitfs-fs/{uuid.uuid4().hex[:10]}"
        big_ref = f"{registry.host}/{big_repository}:v1"
        kitfs(home, "pack", str(big_context), "-t", big_ref, *WHOLE)
        kitfs(home, "push", big_ref, "--plain-http")
        return Published(home, registry, repository, unpacked, sections, big_repository, big_file)
    finally:
        os.umask(old_umask)


@pytest.fixture
def mounter(published: Published, tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path, published.home)
    try:
        yield m
    finally:
        m.cleanup()
