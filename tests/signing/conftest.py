"""Fixtures of the signature tests: key pairs, ModelKits in the session registry, real mounts and
the real cosign (Debian trixie's 2.5.0 from scripts/fetch-cosign.sh)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import cli, ok
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
    """``good.key``/``good.pub`` and ``other.key``/``other.pub``, made by kitfs's generator with a
    cheap scrypt cost (kitfs reads it; cosign accepts only its own costs: see ``strong_key_dir``)."""
    directory = tmp_path_factory.mktemp("keys")
    write_key_pair(directory, "good", cheap=True)
    write_key_pair(directory, "other", cheap=True)
    return directory


@pytest.fixture(scope="session")
def strong_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``key_dir``, with cosign's scrypt cost: keys to hand to cosign."""
    directory = tmp_path_factory.mktemp("strong-keys")
    write_key_pair(directory, "good")
    write_key_pair(directory, "other")
    return directory


@pytest.fixture(scope="session")
def packed() -> dict[str, Kit]:
    """ModelKits packed once per session (by seed), pushed again for each test by ``make``."""
    return {}


@pytest.fixture
def make(  # type: ignore[no-untyped-def]
    registry: RegistryServer,
    repo_name: str,
    packed: dict[str, Kit],
    tmp_path_factory: pytest.TempPathFactory,
):
    """``make(tag, seed)``: a small ModelKit (its files differ by ``seed``) pushed to
    ``repo_name:tag`` in the registry."""

    def build(tag: str = "v1", seed: str = "", repository: str | None = None) -> Kit:
        if seed not in packed:
            base = tmp_path_factory.mktemp("packed")
            files = {k: v + seed.encode() for k, v in SMALL_FILES.items()}
            packed[seed] = make_kit(
                base / "home",
                base / "ctx",
                registry.host,
                f"kitfs-sign/packed-{len(packed)}",
                files=files,
            )
        source = packed[seed]
        target = repository or repo_name
        ok(
            cli(
                source.home, "push", source.ref(), f"{registry.host}/{target}:{tag}", "--plain-http"
            )
        )
        return replace(source, repository=target, tag=tag)

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
