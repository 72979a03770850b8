"""A ModelKit made by ``kitfs import`` (from tests/hfhub.py, the loopback stand-in for the Hugging
Face Hub: the real one cannot be reached here) mounts through /dev/fuse, serves its files from
their span-indexed layers, and kit v1.7.0 unpacks it to the same files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_mounting import Mounter
from helpers import cli, ok, payload
from hfhub import Hub, Repo, serve_hub

KIT = Path("/work/shared/tools/kit")
FILES = {
    "README.md": b"# mounted\n",
    "config.json": b'{"dim": 8}\n',
    "model.safetensors": payload(9 << 20, "mount-weights"),  # more than two 4 MiB spans
    "tokenizer/tokenizer.json": b'{"v": 1}\n',
}


@pytest.fixture
def imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kit home holding acme/mounted:latest, imported from the stand-in Hub."""
    home = tmp_path / "home"
    with serve_hub(Hub(repos={"acme/mounted": Repo({"main": dict(FILES)})})) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        ok(cli(home, "import", "acme/mounted"))
    return home


@pytest.fixture
def mounts(imported: Path, tmp_path: Path) -> Iterator[Mounter]:
    mounter = Mounter(tmp_path / "mounts", imported)
    (tmp_path / "mounts").mkdir()
    try:
        yield mounter
    finally:
        mounter.cleanup()


def test_imported_modelkit_mounts_with_its_files(mounts: Mounter) -> None:
    mountpoint = mounts.mount("acme/mounted:latest", None, "--layout", "unpack", local=True)
    for rel, data in FILES.items():
        assert (mountpoint / rel).read_bytes() == data, rel
    with open(mountpoint / "model.safetensors", "rb") as handle:  # a span in the middle
        handle.seek(5 << 20)
        assert handle.read(4096) == FILES["model.safetensors"][5 << 20 : (5 << 20) + 4096]


@pytest.mark.skipif(not KIT.exists(), reason=f"kit v1.7.0 not found at {KIT}")
def test_kit_unpacks_an_imported_modelkit_to_the_same_files(imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "kit-out"
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    result = subprocess.run(
        [str(KIT), "--config", str(imported), "unpack", "acme/mounted:latest", "-d", str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got.pop("Kitfile")
    assert got == FILES
