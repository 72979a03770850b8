"""Fixtures of the signature tests: key pairs, ModelKits in the session registry, real mounts and
the real cosign (Debian trixie's 2.5.0 from scripts/fetch-cosign.sh)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry import RegistryServer
from reliability.helpers import Kit, Mounts, make_kit

from .helpers import COSIGN, write_key_pair

SMALL_FILES = {
    "model/weights.bin": b"weights " * 512,
    "data/train.csv": b"a,b\n1,2\n",
    "src/train.py": b"print('train')\n",
    "docs/README.md": b"# signed\n",
}


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``good.key``/``good.pub`` and ``other.key``/``other.pub``, made by kitfs's generator."""
    directory = tmp_path_factory.mktemp("keys")
    write_key_pair(directory, "good")
    write_key_pair(directory, "other")
    return directory


@pytest.fixture
def make(registry: RegistryServer, tmp_path: Path, repo_name: str):  # type: ignore[no-untyped-def]
    """``make(tag, seed)``: pack and push a small ModelKit to ``repo_name`` in the registry."""
    home = tmp_path / "pack-home"

    def build(tag: str = "v1", seed: str = "") -> Kit:
        files = {k: v + seed.encode() for k, v in SMALL_FILES.items()}
        return make_kit(
            home, tmp_path / f"ctx-{tag}", registry.host, repo_name, files=files, tag=tag
        )

    return build


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    manager = Mounts(tmp_path)
    try:
        yield manager
    finally:
        manager.cleanup()


@pytest.fixture(scope="session")
def cosign_binary() -> Path:
    if not os.access(COSIGN, os.X_OK):
        pytest.skip(f"cosign not found at {COSIGN}: run scripts/fetch-cosign.sh (make setup does)")
    return COSIGN
