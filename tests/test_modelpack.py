"""CNCF ModelPacks and raw layers through every verb: pull, push, info, inspect, list, unpack.

The ModelPacks are built by hand (tests/modelpack_builder.py: Python's tarfile, gzip, zstandard and
the model-spec names) and pushed to a real docker-registry; kitfs's own writer is checked only on
its way back in (``pack --use-model-pack``, ``pack --layer-format raw``), read by the same readers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import blob, cli, fails, kitfs, make_tree, manifest_json, ok, payload, saved_digest
from modelpack_builder import (
    ARTIFACT_TYPE,
    CONFIG_TYPE,
    DERIVED_KITFILE,
    FILES,
    KITFILE_ANNOTATION,
    WEIGHTS,
    ModelPack,
    build,
    fetch_manifest,
    modctl_style,
    push,
    raw_layer,
    sha256,
    tar_layer,
)
from registry import RegistryServer

PLAIN = "--plain-http"
KIT = os.environ.get("KIT", "/work/shared/tools/kit")


def tree_of(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every regular file below ``root`` with its permission bits and bytes."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = (
                path.stat().st_mode & 0o777,
                path.read_bytes(),
            )
    return out


@pytest.fixture(scope="module")
def hand_made(registry: RegistryServer) -> tuple[str, ModelPack]:
    repository = f"modelpack/{uuid.uuid4().hex[:10]}"
    pack = modctl_style()
    push(registry, repository, "v1", pack)
    return f"{registry.host}/{repository}", pack


def test_remote_info_inspect_list_of_a_modelpack_without_kitfile(
    hand_made: tuple[str, ModelPack], tmp_path: Path
) -> None:
    base, pack = hand_made
    home = tmp_path / "home"
    info = ok(cli(home, "info", "--remote", f"{base}:v1", PLAIN)).stdout
    assert yaml.safe_load(info) == DERIVED_KITFILE
    inspect = json.loads(ok(cli(home, "inspect", "--remote", f"{base}:v1", PLAIN)).stdout)
    assert inspect["digest"] == pack.digest
    assert inspect["manifest"]["artifactType"] == ARTIFACT_TYPE
    kitfile = inspect["kitfile"]
    assert kitfile["model"]["digest"] == sha256(pack.layers[0].blob)
    # diffIds come from the config's modelfs, one per layer in manifest order
    assert [p["diffId"] for p in kitfile["model"]["parts"]] == [
        pack.layers[1].diff_id,
        pack.layers[2].diff_id,
        pack.layers[6].diff_id,
    ]
    listing = ok(cli(home, "list", base, PLAIN)).stdout.splitlines()
    assert len(listing) == 2 and listing[1].split()[1] == "v1"
    assert listing[1].split()[-1] == pack.digest


def test_unpack_from_registry_writes_files_at_their_filepaths(
    hand_made: tuple[str, ModelPack], tmp_path: Path
) -> None:
    base, _ = hand_made
    out = tmp_path / "out"
    ok(cli(tmp_path / "home", "unpack", f"{base}:v1", "-d", str(out), PLAIN))
    files = tree_of(out)
    assert yaml.safe_load(files.pop("Kitfile")[1]) == DERIVED_KITFILE
    assert {k: v[1] for k, v in files.items()} == FILES
    assert files["model.safetensors"][0] == 0o640  # the raw layer's file metadata mode
    assert files["tokenizer/vocab.txt"][0] == 0o644


def test_unpack_filters_select_modelpack_layers(
    hand_made: tuple[str, ModelPack], tmp_path: Path
) -> None:
    base, _ = hand_made
    out = tmp_path / "out"
    ok(
        cli(
            tmp_path / "home",
            "unpack",
            f"{base}:v1",
            "-d",
            str(out),
            "--filter=docs,datasets",
            PLAIN,
        )
    )
    assert set(tree_of(out)) == {"README.md", "data/eval.jsonl"}


def test_pull_then_local_verbs_and_push_keep_the_manifest(
    hand_made: tuple[str, ModelPack], registry: RegistryServer, tmp_path: Path
) -> None:
    base, pack = hand_made
    home = tmp_path / "home"
    ok(cli(home, "pull", f"{base}:v1", PLAIN))
    assert blob(home, pack.digest) == pack.manifest
    for layer in pack.layers:
        assert blob(home, sha256(layer.blob)) == layer.blob
    ref = base.split("/", 1)[1]
    assert yaml.safe_load(ok(cli(home, "info", f"{base}:v1")).stdout) == DERIVED_KITFILE
    local = ok(cli(home, "list")).stdout
    assert f"{ref}" in local and pack.digest in local
    out = tmp_path / "out"
    ok(cli(home, "unpack", f"{base}:v1", "-d", str(out)))
    assert {k: v[1] for k, v in tree_of(out).items() if k != "Kitfile"} == FILES
    copy = f"modelpack/{uuid.uuid4().hex[:10]}"
    ok(cli(home, "push", f"{base}:v1", f"{registry.host}/{copy}:again", PLAIN))
    assert fetch_manifest(registry, copy, "again") == pack.manifest


def test_modelpack_with_kit_kitfile_annotation(registry: RegistryServer, tmp_path: Path) -> None:
    layers = [
        tar_layer("weight", "models", {"models/w.bin": WEIGHTS}, "gzip"),
        tar_layer("doc", "README.md", {"README.md": b"# doc\n"}),
    ]
    kitfile = {
        "manifestVersion": "1.0.0",
        "package": {"name": "annotated", "authors": ["Ann"]},
        "model": {
            "name": "m",
            "path": "models",
            "digest": sha256(layers[0].blob),
            "diffId": layers[0].diff_id,
        },
        "docs": [
            {"path": "README.md", "digest": sha256(layers[1].blob), "diffId": layers[1].diff_id}
        ],
    }
    repository = f"modelpack/{uuid.uuid4().hex[:10]}"
    push(registry, repository, "kit", build(layers, kitfile=kitfile))
    base = f"{registry.host}/{repository}"
    home = tmp_path / "home"
    info = yaml.safe_load(ok(cli(home, "info", "--remote", f"{base}:kit", PLAIN)).stdout)
    assert info["package"] == {"name": "annotated", "authors": ["Ann"]}
    assert info["model"] == {"name": "m", "path": "models"}
    row = ok(cli(home, "list", base, PLAIN)).stdout.splitlines()[1].split()
    assert row[1:4] == ["kit", "Ann", "annotated"]
    out = tmp_path / "out"
    ok(cli(home, "unpack", f"{base}:kit", "-d", str(out), PLAIN))
    assert tree_of(out)["models/w.bin"][1] == WEIGHTS


def test_hostile_and_broken_modelpacks_are_refused(
    registry: RegistryServer, tmp_path: Path
) -> None:
    repository = f"modelpack/{uuid.uuid4().hex[:10]}"
    base = f"{registry.host}/{repository}"
    push(registry, repository, "escape", build([raw_layer("weight", "../escape.bin", b"x")]))
    push(registry, repository, "size", build([raw_layer("weight", "w.bin", b"abc", size=99)]))
    nofile = build([tar_layer("doc", "README.md", {"README.md": b"x"})])
    nofile.layers[0].annotations.clear()
    push(registry, repository, "nopath", build(nofile.layers))
    short = build([raw_layer("weight", "w.bin", b"abc")], config=b'{"modelfs": {"diffIds": []}}')
    push(registry, repository, "diffids", short)
    home = tmp_path / "home"
    out = tmp_path / "out"
    for tag, message in (
        ("escape", "outside the context directory"),
        ("size", "metadata annotation says 99"),
        ("nopath", "no org.cncf.model.filepath annotation"),
        ("diffids", "number of layers does not match DiffIDs"),
    ):
        line = fails(kitfs(home, "unpack", f"{base}:{tag}", "-d", str(out), PLAIN))
        assert message in line, line
    assert not (tmp_path / "escape.bin").exists()
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    # ``list`` still lists them (they are ModelPacks), with no name, as a broken local one
    rows = ok(cli(home, "list", base, PLAIN)).stdout.splitlines()[1:]
    assert sorted(row.split()[1] for row in rows) == ["diffids", "escape", "nopath", "size"]


def test_corrupted_raw_blob_in_local_storage_is_refused(
    hand_made: tuple[str, ModelPack], tmp_path: Path
) -> None:
    base, pack = hand_made
    home = tmp_path / "home"
    ok(cli(home, "pull", f"{base}:v1", PLAIN))
    stored = home / "storage" / "blobs" / "sha256" / sha256(WEIGHTS).removeprefix("sha256:")
    stored.chmod(0o644)
    stored.write_bytes(b"\0" + WEIGHTS[1:])
    out = tmp_path / "out"
    line = fails(kitfs(home, "unpack", f"{base}:v1", "-d", str(out), "--filter=model"))
    assert "failed verification" in line and sha256(WEIGHTS) in line, line
    assert not (out / "model.safetensors").exists()


def test_unknown_artifact_is_refused_with_one_line(
    registry: RegistryServer, tmp_path: Path
) -> None:
    repository = f"modelpack/{uuid.uuid4().hex[:10]}"
    pack = build(
        [raw_layer("weight", "w.bin", b"abc")], artifact_type="application/vnd.example+json"
    )
    body = json.loads(pack.manifest)
    body["config"]["mediaType"] = "application/vnd.example.config+json"
    odd = ModelPack(pack.layers, pack.config, json.dumps(body).encode())
    push(registry, repository, "odd", odd)
    line = fails(
        kitfs(tmp_path / "home", "info", "--remote", f"{registry.host}/{repository}:odd", PLAIN)
    )
    assert "is not a ModelKit or ModelPack" in line and "application/vnd.example+json" in line


# -- kitfs's own writers, read back -----------------------------------------------------------

KITFILE = """\
manifestVersion: 1.0.0
package:
  name: written
  version: 2.0.0
  license: MIT
  authors: [Writer]
model:
  name: w
  path: model.bin
  format: gguf
  license: Apache-2.0
  parts:
    - path: tok.json
code:
  - path: run.py
datasets:
  - name: d
    path: data.csv
docs:
  - path: README.md
"""
CONTEXT: dict[str, str | bytes] = {
    "Kitfile": KITFILE,
    "model.bin": payload(200_000, "m"),
    "tok.json": b'{"t": 1}\n',
    "run.py": b"print(1)\n",
    "data.csv": b"a,b\n1,2\n",
    "README.md": b"# written\n",
}


def _context(tmp_path: Path) -> Path:
    context = tmp_path / "context"
    make_tree(context, CONTEXT)
    (context / "run.py").chmod(0o755)
    return context


@pytest.mark.parametrize("layer_format", ["tar", "raw"])
def test_pack_use_model_pack_as_kit_writes_it(
    layer_format: str, registry: RegistryServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    repository = f"modelpack/{uuid.uuid4().hex[:10]}"
    ref = f"{registry.host}/{repository}:mp"
    env_epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    result = subprocess.run(
        [
            *_kitfs_argv(home),
            "pack",
            str(_context(tmp_path)),
            "-t",
            ref,
            "--use-model-pack",
            "--layer-format",
            layer_format,
        ],
        capture_output=True,
        text=True,
        env=os.environ | env_epoch,
        timeout=60,
        check=False,
    )
    digest = saved_digest(ok(result))
    manifest = manifest_json(home, digest)
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    suffix = "raw" if layer_format == "raw" else "tar"
    bases = ["weight", "weight.config", "code", "dataset", "doc"]
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        f"application/vnd.cncf.model.{b}.v1.{suffix}" for b in bases
    ]
    paths = ["model.bin", "tok.json", "run.py", "data.csv", "README.md"]
    assert [
        layer["annotations"]["org.cncf.model.filepath"] for layer in manifest["layers"]
    ] == paths
    diff_ids = [_diff_id(blob(home, layer["digest"])) for layer in manifest["layers"]]
    config = json.loads(blob(home, manifest["config"]["digest"]))
    assert config["descriptor"] == {
        "createdAt": "2023-11-14T22:13:20Z",
        "authors": ["Writer"],
        "name": "written",
        "version": "2.0.0",
        "licenses": ["Apache-2.0", "MIT"],
        "title": "written",
    }
    assert config["modelfs"] == {"type": "layers", "diffIds": diff_ids}
    assert config["config"] == {"format": "gguf"}
    assert list(config) == ["descriptor", "modelfs", "config"]  # Go's struct field order
    kitfile = json.loads(manifest["annotations"][KITFILE_ANNOTATION])
    assert kitfile["package"]["name"] == "written"
    assert kitfile["model"]["digest"] == manifest["layers"][0]["digest"]
    assert kitfile["model"]["diffId"] == diff_ids[0]
    # read back: local unpack, push, remote unpack
    out = tmp_path / "out"
    ok(cli(home, "unpack", ref, "-d", str(out)))
    unpacked = tree_of(out)
    assert yaml.safe_load(unpacked.pop("Kitfile")[1]) == yaml.safe_load(KITFILE)
    expected = {
        k: v.encode() if isinstance(v, str) else v for k, v in CONTEXT.items() if k != "Kitfile"
    }
    assert {k: v[1] for k, v in unpacked.items()} == expected
    assert unpacked["run.py"][0] == 0o755
    ok(cli(home, "push", ref, PLAIN))
    again = tmp_path / "again"
    ok(cli(tmp_path / "other", "unpack", ref, "-d", str(again), PLAIN))
    assert {k: v[1] for k, v in tree_of(again).items() if k != "Kitfile"} == expected


def _kitfs_argv(home: Path) -> list[str]:
    from helpers import KITFS

    return [KITFS, "--config", str(home)]


def _diff_id(data: bytes) -> str:
    """The digest of a blob's uncompressed bytes (gzip and zstd recognised by their magic)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_pack_layer_format_raw_stores_each_file_as_its_layer(
    compression: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    context = _context(tmp_path)
    digest = saved_digest(
        ok(
            cli(
                home,
                "pack",
                str(context),
                "-t",
                "raw:1",
                "--layer-format",
                "raw",
                "--compression",
                compression,
            )
        )
    )
    manifest = manifest_json(home, digest)
    assert manifest["artifactType"] == "application/vnd.kitops.modelkit.manifest.v1+json"
    suffix = {"none": "", "gzip": "+gzip", "zstd": "+zstd"}[compression]
    kinds = ["model", "modelpart", "code", "dataset", "docs"]
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        f"application/vnd.kitops.modelkit.{k}.v1.raw{suffix}" for k in kinds
    ]
    config = json.loads(blob(home, manifest["config"]["digest"]))
    for layer, path in zip(
        manifest["layers"],
        ["model.bin", "tok.json", "run.py", "data.csv", "README.md"],
        strict=True,
    ):
        data = (context / path).read_bytes()
        stored = blob(home, layer["digest"])
        assert _diff_id(stored) == sha256(data)
        if compression == "none":
            assert stored == data  # the layer is the file itself
        meta = json.loads(layer["annotations"]["org.cncf.model.file.metadata+json"])
        st = (context / path).stat()
        assert meta["name"] == path and meta["size"] == len(data) and meta["typeflag"] == 48
        assert meta["mode"] == st.st_mode & 0o777
        seconds, nanos = divmod(st.st_mtime_ns, 10**9)
        fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
        assert (
            meta["mtime"]
            == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + fraction + "Z"
        )
        assert list(meta) == ["name", "mode", "uid", "gid", "size", "mtime", "typeflag"]
    assert config["model"]["diffId"] == sha256(CONTEXT["model.bin"])  # type: ignore[arg-type]
    out = tmp_path / "out"
    ok(cli(home, "unpack", "raw:1", "-d", str(out)))
    unpacked = tree_of(out)
    assert unpacked["model.bin"][1] == CONTEXT["model.bin"]
    assert unpacked["run.py"] == (0o755, CONTEXT["run.py"])


def test_pack_raw_refuses_directories_and_compressed_modelpack_raw(tmp_path: Path) -> None:
    home = tmp_path / "home"
    context = tmp_path / "context"
    make_tree(
        context, {"Kitfile": "manifestVersion: 1.0.0\nmodel:\n  path: models\n", "models/a": b"a"}
    )
    line = fails(kitfs(home, "pack", str(context), "--layer-format", "raw"))
    assert "not a regular file" in line, line
    line = fails(
        kitfs(
            home,
            "pack",
            str(_context(tmp_path)),
            "--layer-format",
            "raw",
            "--use-model-pack",
            "--compression",
            "gzip",
        )
    )
    assert "compression for raw layers is not supported for ModelPack" in line
    assert not (home / "storage" / "blobs").exists() or not any(
        (home / "storage" / "blobs").rglob("*")
    )


@pytest.mark.skipif(not os.access(KIT, os.X_OK), reason=f"kit v1.7.0 not found at {KIT}")
def test_kit_v17_lists_unpacks_and_pushes_a_default_kitfs_pack(
    registry: RegistryServer, tmp_path: Path
) -> None:
    """What kitfs packs by default stays readable by kit v1.7.0 (which predates ModelPack)."""
    home = tmp_path / "home"
    digest = saved_digest(ok(cli(home, "pack", str(_context(tmp_path)), "-t", "compat:1")))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}

    def kit(*args: str) -> str:
        done = subprocess.run(
            [KIT, "--config", str(home), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = kit("list")
    assert "compat" in listed and digest in listed and "written" in listed
    out = tmp_path / "out"
    kit("unpack", "compat:1", "-d", str(out))
    assert tree_of(out)["model.bin"][1] == CONTEXT["model.bin"]
    assert yaml.safe_load((out / "Kitfile").read_text()) == yaml.safe_load(KITFILE)
    repository = f"compat/{uuid.uuid4().hex[:10]}"
    kit("push", "compat:1", f"{registry.host}/{repository}:1", "--plain-http")
    assert sha256(fetch_manifest(registry, repository, "1")) == digest
    shutil.rmtree(out)
