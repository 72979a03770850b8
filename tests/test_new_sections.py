"""Kitfile sections added after kit v1.7 (prompts, mcpServers, remote datasets), through the CLI.

Expectations are quoted from current kit: pkg/artifact/kitfile.go (struct order and Validate),
pkg/lib/filesystem/local-storage.go (layer order, the prompt subtype), raw.go and util.go (the mcpb
layer and its model-spec file metadata), pkg/lib/kitfile/filter.go (filter types).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from helpers import WHOLE, cli, fails, ok, saved_digest, sha256

from kitfs.errors import UsageError
from kitfs.reference import parse
from kitfs.storage.local import LocalStore
from kitfs.unpack import Filter, layer_selected

KITFILE = """\
manifestVersion: 1.0.0
package:
  name: agent
model:
  path: model.bin
code:
  - path: src
datasets:
  - name: big
    path: data/big
    remotePath: s3://bucket/big.parquet
    remoteHash: sha256:abcd
  - name: small
    path: data/small.csv
prompts:
  - name: sys
    path: prompts
    description: system prompt
mcpServers:
  - name: filesystem
    path: servers/fs.mcpb
    description: files
"""


def write_bundle(path: Path, entries: dict[str, bytes]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return path.read_bytes()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "prompts").mkdir()
    (ctx / "data").mkdir()
    (ctx / "model.bin").write_bytes(b"weights")
    (ctx / "src" / "main.py").write_text("print('hi')\n")
    (ctx / "prompts" / "system.prompt.md").write_text("You are terse.\n")
    (ctx / "data" / "small.csv").write_text("a,b\n")
    write_bundle(ctx / "servers" / "fs.mcpb", {"manifest.json": b'{"name":"fs"}', "s.js": b"x"})
    (ctx / "Kitfile").write_text(KITFILE)
    return ctx


def pack(home: Path, ctx: Path, tag: str = "agent:1") -> str:
    """Pack as kit does (no span index: these tests compare with kit's exact output)."""
    return saved_digest(ok(cli(home, "pack", str(ctx), "-t", tag, *WHOLE)))


def test_config_json_has_current_kit_field_order(tmp_path: Path, context: Path) -> None:
    home = tmp_path / "home"
    pack(home, context)
    inspect = json.loads(ok(cli(home, "inspect", "agent:1")).stdout)
    store = LocalStore(home / "storage")
    manifest = store.load_manifest(store.resolve(parse("agent:1"))[1])
    config = json.loads(store.read_blob(manifest.config.digest))
    # KitFile struct order: ..., datasets, docs, prompts, mcpServers; DataSet: name, path,
    # remotePath, remoteHash, description, license, parameters, digest, diffId.
    assert list(config) == [
        "manifestVersion",
        "package",
        "model",
        "code",
        "datasets",
        "prompts",
        "mcpServers",
    ]
    assert list(config["datasets"][0]) == ["name", "path", "remotePath", "remoteHash"]
    assert "digest" not in config["datasets"][0]  # a remote dataset has no layer
    assert list(config["prompts"][0]) == ["name", "path", "description", "digest", "diffId"]
    assert inspect["kitfile"] == config


def test_layers_are_written_in_kit_order_with_kit_annotations(
    tmp_path: Path, context: Path
) -> None:
    home = tmp_path / "home"
    pack(home, context)
    manifest = json.loads(ok(cli(home, "inspect", "agent:1")).stdout)["manifest"]
    # pkg/lib/filesystem/local-storage.go createManifest (KitFormat)
    assert list(manifest) == [
        "schemaVersion",
        "mediaType",
        "artifactType",
        "config",
        "layers",
        "annotations",
    ]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.kitops.modelkit.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.kitops.modelkit.config.v1+json"
    layers = manifest["layers"]
    assert [layer["mediaType"] for layer in layers] == [
        "application/vnd.kitops.modelkit.model.v1.tar",
        "application/vnd.kitops.modelkit.code.v1.tar",
        "application/vnd.kitops.modelkit.dataset.v1.tar",
        "application/vnd.kitops.modelkit.code.v1.tar",  # prompts are code layers ...
        "application/vnd.kitops.modelkit.mcpb.v1.raw",
    ]
    assert layers[3]["annotations"] == {
        "ml.kitops.modelkit.layer-subtype": "prompt",  # ... with the prompt subtype
        "org.cncf.model.filepath": "prompts",
    }
    assert layers[1]["annotations"] == {"org.cncf.model.filepath": "src"}
    bundle = (context / "servers" / "fs.mcpb").read_bytes()
    assert layers[4]["digest"] == sha256(bundle) and layers[4]["size"] == len(bundle)
    meta = json.loads(layers[4]["annotations"]["org.cncf.model.file.metadata+json"])
    assert list(meta) == ["name", "mode", "uid", "gid", "size", "mtime", "typeflag"]
    mode = (context / "servers" / "fs.mcpb").stat().st_mode & 0o777
    assert (meta["name"], meta["mode"], meta["uid"], meta["gid"]) == ("fs.mcpb", mode, 0, 0)
    assert (meta["size"], meta["typeflag"]) == (len(bundle), 0)
    assert layers[4]["annotations"]["org.cncf.model.filepath"] == "servers/fs.mcpb"
    assert list(manifest["annotations"]) == ["ml.kitops.modelkit.cli-version"]


def test_unpack_writes_prompts_and_the_bundle_and_names_remote_datasets(
    tmp_path: Path, context: Path
) -> None:
    home = tmp_path / "home"
    pack(home, context)
    out = tmp_path / "out"
    result = ok(cli(home, "unpack", "agent:1", "-d", str(out)))
    assert (
        "Dataset big is remote (s3://bucket/big.parquet): not unpacked to data/big; "
        "kitfs does not fetch remote datasets"
    ) in result.stderr.splitlines()
    assert (out / "servers" / "fs.mcpb").read_bytes() == (
        context / "servers" / "fs.mcpb"
    ).read_bytes()
    assert (out / "prompts" / "system.prompt.md").read_text() == "You are terse.\n"
    assert (out / "data" / "small.csv").read_text() == "a,b\n"
    assert not (out / "data" / "big").exists()
    assert "remotePath: s3://bucket/big.parquet" in (out / "Kitfile").read_text()


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("prompts", ["prompts/system.prompt.md"]),
        ("prompts:sys", ["prompts/system.prompt.md"]),
        ("mcpservers:filesystem", ["servers/fs.mcpb"]),
        ("mcpservers:servers/fs.mcpb", ["servers/fs.mcpb"]),
        ("code", ["src/main.py"]),  # code does not pick up prompt layers
        ("datasets:small", ["data/small.csv"]),
    ],
)
def test_unpack_filters_name_prompts_and_mcpservers_as_kit(
    tmp_path: Path, context: Path, flt: str, expected: list[str]
) -> None:
    home = tmp_path / "home"
    pack(home, context)
    out = tmp_path / "out"
    ok(cli(home, "unpack", "agent:1", "-d", str(out), "--filter", flt))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == expected


def test_unpack_refuses_a_tampered_bundle_layer(tmp_path: Path, context: Path) -> None:
    home = tmp_path / "home"
    pack(home, context)
    digest = sha256((context / "servers" / "fs.mcpb").read_bytes())
    blob = home / "storage" / "blobs" / "sha256" / digest.split(":")[1]
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    out = tmp_path / "out"
    message = fails(cli(home, "unpack", "agent:1", "-d", str(out), "--filter", "mcpservers"))
    assert "failed verification" in message and digest in message
    assert not (out / "servers").exists()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"server/index.js": b"x"}, "does not contain a manifest.json at its root"),
        ({"sub/manifest.json": b"{}"}, "does not contain a manifest.json at its root"),
        ({"manifest.json": b"{}", "../evil": b"x"}, "would unzip outside its directory"),
        ({"manifest.json": b"{}", "/etc/x": b"x"}, "would unzip outside its directory"),
        (None, "is not a valid ZIP archive"),
    ],
    ids=[
        "missing manifest.json",
        "nested-only manifest.json",
        "parent path",
        "absolute path",
        "not a zip archive",
    ],
)
def test_pack_checks_mcp_bundles_as_kit_and_refuses_hostile_ones(
    tmp_path: Path, context: Path, entries: dict[str, bytes] | None, message: str
) -> None:
    """Cases of kit's TestValidateMCPB (pkg/lib/filesystem/mcpb_test.go), plus hostile names."""
    bundle = context / "servers" / "fs.mcpb"
    if entries is None:
        bundle.write_bytes(b"this is not a zip archive")
    else:
        write_bundle(bundle, entries)
    home = tmp_path / "home"
    line = fails(cli(home, "pack", str(context), "-t", "agent:1"))
    assert message in line and "servers/fs.mcpb" in line
    assert (
        not (home / "storage" / "index.json").exists()
        or "agent" not in ok(cli(home, "list")).stdout
    )


def test_pack_refuses_a_bundle_whose_manifest_inflates_without_bound(
    tmp_path: Path, context: Path
) -> None:
    bundle = context / "servers" / "fs.mcpb"
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", b"{" + b" " * (2 << 20) + b"}")
    line = fails(cli(tmp_path / "home", "pack", str(context), "-t", "agent:1"))
    assert "manifest.json claims" in line


# -- kit's filter cases (pkg/lib/kitfile/filter_test.go) -------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "types", "names"),
    [
        ("simple model filter", "model", ("model",), ()),
        ("model with specific filters", "model:llama-7b,gpt-3", ("model",), ("llama-7b", "gpt-3")),
        ("multiple types", "model,datasets,code", ("model", "datasets", "code"), ()),
        ("multiple types with filters", "datasets:training-data,validation", ("datasets",), ("training-data", "validation")),
    ],
)  # fmt: skip
def test_parse_filter(name: str, text: str, types: tuple[str, ...], names: tuple[str, ...]) -> None:
    """TestParseFilter_EdgeCases, the valid rows."""
    assert Filter.parse(text) == Filter(types, names), name


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("too many colons", "model:filter1:filter2:extra", "should be in format <type1>,<type2>[:<filter1>,<filter2>]"),
        ("invalid type", "invalidtype", "invalid filter type"),
        ("empty filter", "", "invalid filter"),
        ("filter with empty type", ":filter1,filter2", "invalid filter type"),
    ],
)  # fmt: skip
def test_parse_filter_errors(name: str, text: str, message: str) -> None:
    """TestParseFilter_EdgeCases, the error rows."""
    with pytest.raises(UsageError) as info:
        Filter.parse(text)
    assert message in str(info.value), name


@pytest.mark.parametrize(
    ("name", "kind", "entry", "text", "expected"),
    [
        ("match by name", "prompt", {"name": "docx", "path": "skills/docx"}, "prompts:docx", True),
        ("match by path fallback", "prompt", {"path": "skills/docx"}, "prompts:skills/docx", True),
        ("no match", "prompt", {"name": "docx", "path": "skills/docx"}, "prompts:xlsx", False),
        ("prompts type without specific filter matches all", "prompt", {"name": "docx", "path": "skills/docx"}, "prompts", True),
        ("empty name matches by path", "prompt", {"path": "SKILL.md"}, "prompts:SKILL.md", True),
        ("match by name", "mcpserver", {"name": "filesystem", "path": "filesystem.mcpb"}, "mcpservers:filesystem", True),
        ("match by path", "mcpserver", {"name": "filesystem", "path": "filesystem.mcpb"}, "mcpservers:filesystem.mcpb", True),
        ("no match", "mcpserver", {"name": "filesystem", "path": "filesystem.mcpb"}, "mcpservers:postgres", False),
        ("mcpservers type without specific filter matches all", "mcpserver", {"name": "filesystem", "path": "filesystem.mcpb"}, "mcpservers", True),
        ("other type does not match", "mcpserver", {"name": "filesystem", "path": "filesystem.mcpb"}, "datasets", False),
    ],
)  # fmt: skip
def test_should_unpack_layer_by_name(
    name: str, kind: str, entry: dict[str, object], text: str, expected: bool
) -> None:
    """TestShouldUnpackLayer_PromptByName and TestShouldUnpackLayer_MCPServerByName."""
    assert layer_selected([Filter.parse(text)], kind, entry) is expected, name


def test_remote_dataset_paths_stay_out_of_other_layers(tmp_path: Path) -> None:
    """kit's LayerPathsFromKitfile lists remote datasets too: code at . does not pack them."""
    ctx = tmp_path / "ctx"
    (ctx / "data" / "big").mkdir(parents=True)
    (ctx / "data" / "big" / "local-copy.parquet").write_bytes(b"not for the ModelKit")
    (ctx / "main.py").write_text("x\n")
    (ctx / "Kitfile").write_text(
        "manifestVersion: 1.0.0\ncode:\n  - path: .\ndatasets:\n  - name: big\n    path: data/big\n"
        "    remotePath: s3://bucket/big\n    remoteHash: sha256:00\n"
    )
    home = tmp_path / "home"
    pack(home, ctx, "r:1")
    out = tmp_path / "out"
    ok(cli(home, "unpack", "r:1", "-d", str(out)))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "Kitfile",
        "main.py",
    ]


def test_pack_refuses_a_symlinked_bundle(tmp_path: Path, context: Path) -> None:
    bundle = context / "servers" / "fs.mcpb"
    real = context / "servers" / "real.zip"
    bundle.rename(real)
    bundle.symlink_to(real.name)
    line = fails(cli(tmp_path / "home", "pack", str(context), "-t", "agent:1"))
    assert line == "kitfs: MCP bundle path servers/fs.mcpb must be a single .mcpb file"


def test_push_pull_and_remote_unpack_carry_prompts_and_bundles(
    tmp_path: Path, context: Path, registry: object
) -> None:
    home = tmp_path / "home"
    ref = f"{registry.host}/kitfs-sections/agent:1"  # type: ignore[attr-defined]
    digest = pack(home, context, ref)
    ok(cli(home, "push", ref, "--plain-http"))
    direct = tmp_path / "direct"  # straight from the registry, nothing stored
    ok(cli(tmp_path / "empty", "unpack", ref, "-d", str(direct), "--plain-http"))
    assert (direct / "servers" / "fs.mcpb").read_bytes() == (
        context / "servers" / "fs.mcpb"
    ).read_bytes()
    assert (direct / "prompts" / "system.prompt.md").read_text() == "You are terse.\n"
    other = tmp_path / "other"
    assert f"Pulled {digest}" in ok(cli(other, "pull", ref, "--plain-http")).stdout
    assert ok(cli(other, "info", ref)).stdout == ok(cli(home, "info", ref)).stdout


def test_mcpb_pack_unpack_as_kits_integration_test(tmp_path: Path) -> None:
    """testing/mcpb_test.go TestMCPBPackUnpack and TestMCPBUnpackFilter."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Kitfile").write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: agent-mcp-bundle\n  version: 1.0.0\n"
        "mcpServers:\n  - name: filesystem\n    path: ./filesystem.mcpb\n"
        "  - name: postgres\n    path: ./postgres.mcpb\ndocs:\n  - path: ./README.md\n"
    )
    (ctx / "README.md").write_text("readme\n")
    fs = write_bundle(
        ctx / "filesystem.mcpb",
        {
            "manifest.json": b'{"name": "filesystem-server"}',
            "server/index.js": b"console.log('fs')",
        },
    )
    pg = write_bundle(
        ctx / "postgres.mcpb",
        {"manifest.json": b'{"name": "postgres-server"}', "server/index.js": b"console.log('pg')"},
    )
    home = tmp_path / "home"
    packed = ok(cli(home, "pack", str(ctx), "-t", "mcpb:test"))
    assert f"Saved mcpb layer: {sha256(fs)}" in packed.stderr
    assert f"Saved mcpb layer: {sha256(pg)}" in packed.stderr
    inspected = ok(cli(home, "inspect", "mcpb:test")).stdout
    assert "application/vnd.kitops.modelkit.mcpb.v1.raw" in inspected
    assert sha256(fs) in inspected and sha256(pg) in inspected
    out = tmp_path / "out"
    ok(cli(home, "unpack", "mcpb:test", "-d", str(out)))
    assert (out / "filesystem.mcpb").read_bytes() == fs and (
        out / "postgres.mcpb"
    ).read_bytes() == pg
    only = tmp_path / "only"
    ok(cli(home, "unpack", "mcpb:test", "--filter=mcpservers:postgres", "-d", str(only)))
    assert sorted(p.name for p in only.iterdir()) == ["postgres.mcpb"]


def _store_bundle_kit(home: Path, annotation: str, config: dict[str, object]) -> None:
    from kitfs.oci import media
    from kitfs.oci.manifest import Descriptor, Manifest

    store = LocalStore(home / "storage")
    store.ensure()
    bundle = b"PK\x05\x06" + b"\0" * 18  # an empty ZIP: the bytes do not matter here
    layer = Descriptor(
        media.MCPB_LAYER,
        store.put_blob(bundle),
        len(bundle),
        {"org.cncf.model.filepath": annotation},
    )
    body = json.dumps(config).encode()
    cfg = Descriptor(media.KIT_CONFIG, store.put_blob(body), len(body))
    manifest = Manifest(config=cfg, layers=(layer,))
    data = manifest.to_bytes()
    store.put_blob(data)
    store.repo("localhost/hostile").add(manifest.descriptor(data), ["v1"])


@pytest.mark.parametrize(
    ("annotation", "config", "message"),
    [
        ("../escape.mcpb", {"manifestVersion": "1.0.0"}, "'..' would leave the target directory"),
        ("/etc/escape.mcpb", {"manifestVersion": "1.0.0"}, "absolute paths are not allowed"),
        ("ok.mcpb", {"manifestVersion": "1.0.0", "mcpServers": [{"name": "x", "path": "a/../../escape.mcpb"}]}, "outside the context directory"),
    ],
)  # fmt: skip
def test_unpack_refuses_bundle_layers_that_would_land_outside(
    tmp_path: Path, annotation: str, config: dict[str, object], message: str
) -> None:
    home = tmp_path / "home"
    _store_bundle_kit(home, annotation, config)
    out = tmp_path / "sub" / "out"
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert message in line
    assert (
        not (tmp_path / "sub" / "escape.mcpb").exists() and not (tmp_path / "escape.mcpb").exists()
    )
    assert not out.exists() or list(out.iterdir()) == []
