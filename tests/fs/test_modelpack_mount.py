"""Real mounts of hand-built ModelPacks and raw layers, and repository views that hold signatures.

The repository under test holds, next to a ModelPack and a kit ModelKit, what cosign and registries
without the referrers API put there: ``sha256-<hex>.sig`` / ``.att`` tags, a ``sha256-<hex>``
referrers fallback index, and a plain container image. The signature manifests are built by hand in
cosign's shape (an OCI image manifest whose layer is a simplesigning payload); cosign itself is not
installed here, and no signature is verified: only how the tags are listed is under test.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fs_mounting import Mounter
from helpers import cli, make_tree, ok
from modelpack_builder import (
    DERIVED_KITFILE,
    FILES,
    ModelPack,
    build,
    modctl_style,
    put_manifest,
    raw_layer,
    sha256,
    upload_blob,
)
from modelpack_builder import push as push_modelpack
from registry import RegistryServer

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

PLAIN = "--plain-http"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
KITFILE = "manifestVersion: 1.0.0\npackage:\n  name: kit-one\nmodel:\n  path: w.bin\n"


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry below ``root``: permission bits, and bytes for files."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.stat()
        out[rel] = (st.st_mode & 0o777, path.read_bytes() if path.is_file() else None)
    return out


def _image(client: httpx.Client, repository: str, tag: str, layer: bytes, layer_type: str) -> str:
    """An OCI image manifest (as cosign writes signatures and attestations); returns its digest."""
    config = b'{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}'
    for data in (config, layer):
        upload_blob(client, repository, data)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [{"mediaType": layer_type, "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()
    put_manifest(client, repository, tag, body)
    return sha256(body)


@pytest.fixture(scope="module")
def crowded(
    registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, ModelPack]:
    """A repository with a ModelPack (v1), a ModelKit (kit) and four tags that are neither."""
    base = tmp_path_factory.mktemp("crowded")
    repository = f"modelpack-fs/{uuid.uuid4().hex[:10]}"
    pack = modctl_style()
    push_modelpack(registry, repository, "v1", pack)
    home = base / "home"
    context = base / "context"
    make_tree(context, {"Kitfile": KITFILE, "w.bin": b"kit weights\n"})
    ref = f"{registry.host}/{repository}:kit"
    ok(cli(home, "pack", str(context), "-t", ref))
    ok(cli(home, "push", ref, PLAIN))
    hexpart = pack.digest.removeprefix("sha256:")
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        signing = "application/vnd.dev.cosign.simplesigning.v1+json"
        payload = json.dumps({"critical": {"image": {"docker-manifest-digest": pack.digest}}})
        sig = _image(client, repository, f"sha256-{hexpart}.sig", payload.encode(), signing)
        _image(
            client,
            repository,
            f"sha256-{hexpart}.att",
            b'{"payloadType":"x"}',
            "application/vnd.dsse.envelope.v1+json",
        )
        _image(
            client, repository, "image", b"not a model", "application/vnd.oci.image.layer.v1.tar"
        )
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": sig,
                        "size": 1,
                    }
                ],
            }
        ).encode()
        put_manifest(client, repository, f"sha256-{hexpart}", index, OCI_INDEX)
    return f"{registry.host}/{repository}", pack


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path, tmp_path / "published-home")
    try:
        yield m
    finally:
        m.cleanup()


def test_sections_layout_of_a_modelpack(crowded: tuple[str, ModelPack], mounter: Mounter) -> None:
    base, _ = crowded
    mnt = mounter.mount(f"{base}:v1")
    assert sorted(os.listdir(mnt)) == ["Kitfile", "code", "datasets", "docs", "model"]
    assert yaml.safe_load((mnt / "Kitfile").read_text()) == DERIVED_KITFILE
    where = {
        "model.safetensors": "model",
        "tokenizer/tokenizer.json": "model",
        "tokenizer/vocab.txt": "model",
        "generation_config.json": "model",
        "extra/adapter.bin": "model",
        "README.md": "docs",
        "src/infer.py": "code",
        "src/lib/util.py": "code",
        "data/eval.jsonl": "datasets",
    }
    for rel, section in where.items():
        assert (mnt / section / rel).read_bytes() == FILES[rel], rel
    assert (mnt / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(mnt / "model")) == [
        "extra",
        "generation_config.json",
        "model.safetensors",
        "tokenizer",
    ]


def test_unpack_layout_of_a_modelpack_equals_unpack(
    crowded: tuple[str, ModelPack], mounter: Mounter, tmp_path: Path
) -> None:
    base, _ = crowded
    out = tmp_path / "unpacked"
    ok(cli(tmp_path / "home", "unpack", f"{base}:v1", "-d", str(out), PLAIN))
    mnt = mounter.mount(f"{base}:v1", None, "--layout", "unpack")
    assert _snapshot(mnt) == _snapshot(out)


def test_repository_mount_and_list_show_models_only(
    crowded: tuple[str, ModelPack], mounter: Mounter, tmp_path: Path
) -> None:
    base, pack = crowded
    mnt = mounter.mount(base)
    assert sorted(os.listdir(mnt)) == ["kit", "v1"]
    assert (mnt / "v1" / "model" / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert (mnt / "kit" / "model" / "w.bin").read_bytes() == b"kit weights\n"
    hexpart = pack.digest.removeprefix("sha256:")
    assert not (mnt / f"sha256-{hexpart}.sig").exists()
    rows = ok(cli(tmp_path / "home", "list", base, PLAIN)).stdout.splitlines()[1:]
    assert sorted(row.split()[1] for row in rows) == ["kit", "v1"]


def test_raw_layers_from_local_storage_are_served(mounter: Mounter, tmp_path: Path) -> None:
    """A kitfs ``--layer-format raw`` pack, mounted from local storage (read in place)."""
    home = mounter.home
    context = tmp_path / "context"
    weights = os.urandom(2 << 20)
    make_tree(
        context,
        {
            "Kitfile": "manifestVersion: 1.0.0\nmodel:\n  path: m/w.bin\ndocs:\n  - path: README.md\n",
            "m/w.bin": weights,
            "README.md": b"# raw\n",
        },
    )
    ok(cli(home, "pack", str(context), "-t", "rawmount:1", "--layer-format", "raw"))
    mnt = mounter.mount("rawmount:1")
    assert (mnt / "model" / "m" / "w.bin").read_bytes() == weights
    assert (mnt / "docs" / "README.md").read_bytes() == b"# raw\n"
    flat = mounter.mount("rawmount:1", mounter.mountpoint("flat"), "--layout", "unpack")
    assert sorted(p.relative_to(flat).as_posix() for p in flat.rglob("*")) == [
        "Kitfile",
        "README.md",
        "m",
        "m/w.bin",
    ]


def test_hostile_raw_layers_are_never_served(
    registry: RegistryServer, mounter: Mounter, tmp_path: Path
) -> None:
    """A raw layer whose filepath climbs out, or whose size contradicts its metadata, reads as EIO:
    the Kitfile (kit's annotation here, so it names safe paths) cannot vouch for the layer."""
    escape = raw_layer("weight", "../../outside.bin", b"evil")
    liar = raw_layer("doc", "README.md", b"short", size=4096)
    kitfile = {
        "manifestVersion": "1.0.0",
        "model": {"path": "w.bin", "digest": sha256(escape.blob), "diffId": escape.diff_id},
        "docs": [{"path": "README.md", "digest": sha256(liar.blob), "diffId": liar.diff_id}],
    }
    repository = f"modelpack-fs/{uuid.uuid4().hex[:10]}"
    push_modelpack(registry, repository, "bad", build([escape, liar], kitfile=kitfile))
    mnt = mounter.mount(f"{registry.host}/{repository}:bad")
    for section in ("model", "docs"):
        with pytest.raises(OSError) as caught:
            os.listdir(mnt / section)
        assert caught.value.errno == errno.EIO
    assert not (tmp_path / "outside.bin").exists()
    log = mounter.log_path(mnt).read_text()
    assert "'..' would leave the target directory" in log
    assert "metadata annotation says 4096" in log
