"""``kitfs pack``: kit's upstream pack-unpack cases, byte-level layer format, and refusals.

The upstream cases are jozu-ai/kitops testing/testdata/pack-unpack/*.yaml: every listed file comes
back after unpack, every ignored one does not. On top of kit's harness each case also pins the exact
tar entry list of every layer (kit's sorted pre-order walk, parent directories included).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import (
    BLOCK,
    WHOLE,
    blob,
    cli,
    config_json,
    decompress,
    fails,
    files_under,
    forge_header,
    kitfs,
    layer_names,
    layer_tars,
    make_tree,
    manifest_json,
    ok,
    raw_entries,
    saved_digest,
    sha256,
    tarfile_names,
)

from kitfs.config import Paths
from kitfs.errors import PackError
from kitfs.layers import spanindex
from kitfs.layers.tarwriter import header_bytes
from kitfs.pack import pack

MODEL = "application/vnd.kitops.modelkit.model.v1.tar"
PART = "application/vnd.kitops.modelkit.modelpart.v1.tar"
CODE = "application/vnd.kitops.modelkit.code.v1.tar"
DATASET = "application/vnd.kitops.modelkit.dataset.v1.tar"
DOCS = "application/vnd.kitops.modelkit.docs.v1.tar"


@dataclass
class Case:
    kitfile: str
    files: list[str]
    ignored: list[str] = field(default_factory=list)
    kitignore: str | None = None
    layers: list[tuple[str, list[str]]] = field(default_factory=list)


CASES = {
    "pack-basic-model": Case(
        kitfile="model:\n  name: m\n  path: ./model\ndatasets:\n  - name: d\n    path: ./datasets\n"
        "code:\n  - path: ./code\n",
        files=["model/my-model.bin", "datasets/my-dataset.bin", "code/my-code.py"],
        layers=[
            (MODEL, ["model", "model/my-model.bin"]),
            (CODE, ["code", "code/my-code.py"]),
            (DATASET, ["datasets", "datasets/my-dataset.bin"]),
        ],
    ),
    "empty-kitfile": Case(
        kitfile="",
        files=[],
        ignored=[
            "model/my-model.bin",
            "datasets/my-dataset.bin",
            "code/my-code.py",
            "some-file.txt",
        ],
        layers=[],
    ),
    "pack-path-is-context-dir": Case(
        kitfile="model:\n  name: m\n  path: .\n",
        files=[
            "file-in-root1.txt",
            "file-in-root2.txt",
            "main-dir/file-main1.txt",
            "main-dir/subdir/file-subdir1.txt",
            "dir2/test-file1.txt",
        ],
        layers=[
            (
                MODEL,
                [
                    "dir2",
                    "dir2/test-file1.txt",
                    "file-in-root1.txt",
                    "file-in-root2.txt",
                    "main-dir",
                    "main-dir/file-main1.txt",
                    "main-dir/subdir",
                    "main-dir/subdir/file-subdir1.txt",
                ],
            )
        ],
    ),
    "path-formats": Case(
        kitfile="docs:\n"
        + "".join(
            f"  - path: {p}\n"
            for p in [
                "my-file.txt",
                "./my-file2.txt",
                "dir-one",
                "dir-two/",
                "./dir-three",
                "./dir-four/",
                "dir-five/my-file.txt",
                "./dir-six/my-file.txt",
            ]
        ),
        files=[
            "my-file.txt",
            "my-file2.txt",
            "dir-one/file.txt",
            "dir-two/file.txt",
            "dir-three/file.txt",
            "dir-four/file.txt",
            "dir-five/my-file.txt",
            "dir-six/my-file.txt",
        ],
        ignored=["dir-five/other.txt"],
        layers=[
            (DOCS, ["my-file.txt"]),
            (DOCS, ["my-file2.txt"]),
            (DOCS, ["dir-one", "dir-one/file.txt"]),
            (DOCS, ["dir-two", "dir-two/file.txt"]),
            (DOCS, ["dir-three", "dir-three/file.txt"]),
            (DOCS, ["dir-four", "dir-four/file.txt"]),
            (DOCS, ["dir-five", "dir-five/my-file.txt"]),
            (DOCS, ["dir-six", "dir-six/my-file.txt"]),
        ],
    ),
    "pack-path-formats": Case(
        kitfile="datasets:\n"
        + "".join(
            f"  - name: ds{i}\n    path: {p}\n"
            for i, p in enumerate(
                [
                    "./test1",
                    "test2",
                    "test3/",
                    "test4/test-single-file.txt",
                    "test5/subdir/subdir2/",
                    "test6/",
                    "test7/test7",
                ]
            )
        ),
        files=[
            "test1/file1.txt",
            "test2/file2.txt",
            "test3/file3.txt",
            "test4/test-single-file.txt",
            "test5/subdir/subdir2/file5.txt",
            "test6/sub/sub2/file6.txt",
            "test6/sub/file6b.txt",
            "test7/test7/test7/test7/test7-file1.txt",
        ],
        ignored=[
            "test4/ignored-file.txt",
            "test5/ignored-file.txt",
            "test5/ignored-subdir/ignored-file.txt",
            "test5/subdir/ignored-subdir/ignored-file.txt",
            "test-ignored/ignored-file.txt",
        ],
        layers=[
            (DATASET, ["test1", "test1/file1.txt"]),
            (DATASET, ["test2", "test2/file2.txt"]),
            (DATASET, ["test3", "test3/file3.txt"]),
            (DATASET, ["test4", "test4/test-single-file.txt"]),
            (
                DATASET,
                ["test5", "test5/subdir", "test5/subdir/subdir2", "test5/subdir/subdir2/file5.txt"],
            ),
            (
                DATASET,
                [
                    "test6",
                    "test6/sub",
                    "test6/sub/file6b.txt",
                    "test6/sub/sub2",
                    "test6/sub/sub2/file6.txt",
                ],
            ),
            (
                DATASET,
                [
                    "test7",
                    "test7/test7",
                    "test7/test7/test7",
                    "test7/test7/test7/test7",
                    "test7/test7/test7/test7/test7-file1.txt",
                ],
            ),
        ],
    ),
    "pack-intersecting-paths": Case(
        kitfile="model:\n  name: m\n  path: main-dir\ndatasets:\n  - name: d\n    path: main-dir/subdir\n"
        "code:\n  - path: .\n",
        files=[
            "main-dir/model-file1.txt",
            "main-dir/model-file2.txt",
            "main-dir/model-file3.txt",
            "main-dir/main-subdir/sub-file1.txt",
            "main-dir/subdir/dataset-file1.txt",
            "main-dir/subdir/nested/dataset-file2.txt",
            "other-dir/code-file1.txt",
            "other-dir/code-file2.txt",
            "root-file1.txt",
            "root-file2",
        ],
        layers=[
            (
                MODEL,
                [
                    "main-dir",
                    "main-dir/main-subdir",
                    "main-dir/main-subdir/sub-file1.txt",
                    "main-dir/model-file1.txt",
                    "main-dir/model-file2.txt",
                    "main-dir/model-file3.txt",
                ],
            ),
            (
                CODE,
                [
                    "other-dir",
                    "other-dir/code-file1.txt",
                    "other-dir/code-file2.txt",
                    "root-file1.txt",
                    "root-file2",
                ],
            ),
            (
                DATASET,
                [
                    "main-dir",
                    "main-dir/subdir",
                    "main-dir/subdir/dataset-file1.txt",
                    "main-dir/subdir/nested",
                    "main-dir/subdir/nested/dataset-file2.txt",
                ],
            ),
        ],
    ),
    "pack-ignores-intersecting": Case(
        kitfile="model:\n  name: m\n  path: main-dir\ndatasets:\n  - name: d\n    path: main-dir/subdir\n"
        "code:\n  - path: .\n",
        kitignore="main-dir/ignored-subdir\nmain-dir/main-subdir/ignored-file1.txt\n"
        "main-dir/subdir/ignored-dataset1.txt\nmain-dir/subdir/ignored-subdir\nignored-dir\n",
        files=[
            "main-dir/model-file1.txt",
            "main-dir/main-subdir/sub-file1.txt",
            "main-dir/subdir/dataset-file1.txt",
            "other-dir/code-file1.txt",
            "root-file1.txt",
        ],
        ignored=[
            "main-dir/ignored-subdir/file1",
            "main-dir/main-subdir/ignored-file1.txt",
            "main-dir/subdir/ignored-dataset1.txt",
            "main-dir/subdir/ignored-subdir/file1",
            "ignored-dir/file1",
        ],
        layers=[
            (
                MODEL,
                [
                    "main-dir",
                    "main-dir/main-subdir",
                    "main-dir/main-subdir/sub-file1.txt",
                    "main-dir/model-file1.txt",
                ],
            ),
            (CODE, ["other-dir", "other-dir/code-file1.txt", "root-file1.txt"]),
            (DATASET, ["main-dir", "main-dir/subdir", "main-dir/subdir/dataset-file1.txt"]),
        ],
    ),
    "pack-ignores-basic": Case(
        kitfile="model:\n  name: m\n  path: .\n",
        kitignore="# Ignore an entire directory\ndir1\ndir2/dirA\nroot-ignored.txt\n"
        "dir3/dir3-ignored.txt\ndir4/*/ignored-file.txt\n**/*.md\n**/ignored\nignored-?.txt\n"
        "!dir5/not-ignored.md\n",
        files=[
            "dir2/file2.txt",
            "dir2/dirB/fileB.txt",
            "root-included.txt",
            "dir3/dir3-included.txt",
            "dir3/dirA/fileA.txt",
            "dir4/dirA/not-ignored",
            "dir4/dirB/not-ignored",
            "dir4/ignored-file.txt",
            "dir5/not-ignored.md",
        ],
        ignored=[
            "dir1/dirA/fileA.txt",
            "dir1/file1.txt",
            "dir2/dirA/fileA.txt",
            "root-ignored.txt",
            "dir3/dir3-ignored.txt",
            "dir4/dirA/ignored-file.txt",
            "dir4/dirB/ignored-file.txt",
            "dir4/dirC/ignored-file.txt",
            "ignored-root.md",
            "dir2/ignored-dir2.md",
            "dir3/dirA/ignored-dirA.md",
            "dir2/ignored/ignored-file1.txt",
            "dir3/dirB/ignored/ignored-file2.txt",
            "ignored-a.txt",
            "ignored-b.txt",
            "ignored-1.txt",
        ],
        layers=[
            (
                MODEL,
                [
                    "dir2",
                    "dir2/dirB",
                    "dir2/dirB/fileB.txt",
                    "dir2/file2.txt",
                    "dir3",
                    "dir3/dir3-included.txt",
                    "dir3/dirA",
                    "dir3/dirA/fileA.txt",
                    "dir3/dirB",
                    "dir4",
                    "dir4/dirA",
                    "dir4/dirA/not-ignored",
                    "dir4/dirB",
                    "dir4/dirB/not-ignored",
                    "dir4/dirC",
                    "dir4/ignored-file.txt",
                    "dir5",
                    "dir5/not-ignored.md",
                    "root-included.txt",
                ],
            )
        ],
    ),
    # testing/testdata/pack-unpack/test_pack-model-with-prompts.yaml (current kit): prompts are
    # code layers with the prompt subtype, written after the docs; ./code/SKILL.md goes only to
    # its prompt layer, not to the code layer that contains it.
    "pack-model-with-prompts": Case(
        kitfile="model:\n  name: test-model\n  path: ./model\ndatasets:\n  - name: test-dataset\n"
        "    path: ./datasets\ncode:\n  - path: ./code\nprompts:\n  - path: CLAUDE.md\n"
        "  - path: AGENTS.md\n  - path: prompts/sample.prompt.txt\n"
        "  - path: prompts/another.prompt.txt\n  - path: prompts-dir/\n  - path: ./code/SKILL.md\n",
        files=[
            "model/my-model.bin",
            "datasets/my-dataset.bin",
            "code/my-code.py",
            "CLAUDE.md",
            "AGENTS.md",
            "prompts/sample.prompt.txt",
            "prompts/another.prompt.txt",
            "prompts-dir/test.prompt.one",
            "prompts-dir/test.prompt.two",
            "code/SKILL.md",
        ],
        layers=[
            (MODEL, ["model", "model/my-model.bin"]),
            (CODE, ["code", "code/my-code.py"]),
            (DATASET, ["datasets", "datasets/my-dataset.bin"]),
            (CODE, ["CLAUDE.md"]),
            (CODE, ["AGENTS.md"]),
            (CODE, ["prompts", "prompts/sample.prompt.txt"]),
            (CODE, ["prompts", "prompts/another.prompt.txt"]),
            (CODE, ["prompts-dir", "prompts-dir/test.prompt.one", "prompts-dir/test.prompt.two"]),
            (CODE, ["code", "code/SKILL.md"]),
        ],
    ),
    "pack-modelkit-parts": Case(
        kitfile="model:\n  name: m\n  path: ./model\n  parts:\n    - path: ./model/part1\n"
        "    - path: model/part2\n    - path: ./part3\n",
        files=[
            "model/main-model-1",
            "model/main-model-2",
            "model/part1",
            "model/part2",
            "part3",
        ],
        layers=[
            (MODEL, ["model", "model/main-model-1", "model/main-model-2"]),
            (PART, ["model", "model/part1"]),
            (PART, ["model", "model/part2"]),
            (PART, ["part3"]),
        ],
    ),
    "pack-modelkit-parts-kitignore": Case(
        kitfile="model:\n  name: m\n  path: ./model\n  parts:\n    - path: model/part1/\n"
        "    - path: model/part2/\n    - path: part3/\n",
        kitignore="**/*.md\n**/part2/ignored\n",
        files=[
            "model/main-model1",
            "model/main-model2",
            "model/part1/part1A",
            "model/part1/part1B",
            "model/part2/part2A",
            "model/part2/part2B",
            "part3/part3A",
        ],
        ignored=[
            "model/main-ignored.md",
            "model/part1/part1-ignored.md",
            "model/part2/ignored/ignored-file.txt",
            "part3/ignored.md",
        ],
        layers=[
            (MODEL, ["model", "model/main-model1", "model/main-model2"]),
            (PART, ["model", "model/part1", "model/part1/part1A", "model/part1/part1B"]),
            (PART, ["model", "model/part2", "model/part2/part2A", "model/part2/part2B"]),
            (PART, ["part3", "part3/part3A"]),
        ],
    ),
}


def write_case(context: Path, case: Case) -> None:
    context.mkdir(parents=True)
    text = "manifestVersion: 1.0.0\npackage:\n  name: test\n" + case.kitfile
    make_tree(context, {p: f"content of {p}\n" for p in case.files + case.ignored})
    (context / "Kitfile").write_text(text)
    if case.kitignore is not None:
        (context / ".kitignore").write_text(case.kitignore)


@pytest.mark.parametrize("name", sorted(CASES))
def test_upstream_pack_unpack_case(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    home, context, out = tmp_path / "home", tmp_path / "ctx", tmp_path / "out"
    write_case(context, case)
    digest = saved_digest(ok(cli(home, "pack", str(context), "-t", f"test:{name}", *WHOLE)))
    ok(cli(home, "unpack", f"test:{name}", "-d", str(out)))

    assert files_under(out) == {"Kitfile", *case.files}
    for rel in case.files:
        assert (out / rel).read_bytes() == (context / rel).read_bytes()
    layers = layer_tars(home, digest)
    assert [(media_type, layer_names(tar)) for media_type, tar in layers] == case.layers
    manifest = manifest_json(home, digest)
    assert [layer["annotations"] for layer in manifest["layers"]] == [
        _annotations(case, i) for i in range(len(case.layers))
    ]


def _annotations(case: Case, index: int) -> dict[str, str]:
    """kit's layer annotations: the path, and the prompt subtype on prompt layers."""
    from kitfs.kitfile import Kitfile

    entry = Kitfile.from_yaml("manifestVersion: 1.0.0\n" + case.kitfile).entries()[index]
    subtype = {"ml.kitops.modelkit.layer-subtype": "prompt"} if entry.kind == "prompt" else {}
    return {**subtype, "org.cncf.model.filepath": _cleaned(case, index)}


def _cleaned(case: Case, index: int) -> str:
    """The cleaned Kitfile path of layer ``index`` (what kit puts in org.cncf.model.filepath)."""
    from kitfs.kitfile import Kitfile

    text = "manifestVersion: 1.0.0\n" + case.kitfile
    entry = Kitfile.from_yaml(text).entries()[index]
    return os.path.normpath(entry.path)


def test_empty_kitfile_packs_zero_layers(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    write_case(context, CASES["empty-kitfile"])
    result = ok(kitfs(home, "pack", str(context), "-t", "test:empty"))
    manifest = manifest_json(home, saved_digest(result))
    assert manifest["layers"] == []
    assert "ModelKit contains no layers" in result.stderr
    assert config_json(home, saved_digest(result)) == {
        "manifestVersion": "1.0.0",
        "package": {"name": "test"},
    }


# -- the layer bytes ------------------------------------------------------------------------


def test_layer_is_byte_for_byte_what_go_archive_tar_writes(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"model/weights.bin": b"w" * 1000, "model/sub/config.json": b"{}"})
    os.chmod(context / "model", 0o750)
    os.chmod(context / "model/sub", 0o700)
    os.chmod(context / "model/weights.bin", 0o640)
    os.chmod(context / "model/sub/config.json", 0o755)
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    result = pack(context, Paths(home), tag="test:bytes")

    expected = (
        forge_header("model", typeflag=b"5", mode=0o750)
        + forge_header("model/sub", typeflag=b"5", mode=0o700)
        + forge_header("model/sub/config.json", size=2, mode=0o755)
        + b"{}"
        + b"\0" * 510
        + forge_header("model/weights.bin", size=1000, mode=0o640)
        + b"w" * 1000
        + b"\0" * 24
        + b"\0" * 1024  # Go ends with two zero blocks and no record padding
    )
    layer = result.manifest.layers[0]
    assert blob(home, layer.digest) == expected
    assert layer.digest == sha256(expected)
    assert layer.size == len(expected)


def test_headers_are_sanitised(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"data/a.csv": "a", "data/deep/b.csv": "bb"})
    os.utime(context / "data/a.csv", (1_700_000_000, 1_700_000_000))
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\ndatasets:\n  - path: data/\n")
    digest = pack(context, Paths(home), tag="test:hdr").digest
    ((media_type, tar),) = layer_tars(home, digest)
    entries, end = raw_entries(tar)
    assert [(e.name, e.typeflag, e.size) for e in entries] == [
        ("data", b"5", 0),
        ("data/a.csv", b"0", 1),
        ("data/deep", b"5", 0),
        ("data/deep/b.csv", b"0", 2),
    ]
    for entry in entries:
        assert (entry.mtime, entry.uid, entry.gid) == (0, 1000, 0)
        assert entry.uname == entry.gname == b"\0" * 32
        assert (entry.magic, entry.version) == (b"ustar\0", b"00")
        assert entry.header[136:148] == b"00000000000\0"
        assert entry.header[108:116] == b"0001750\0"
        assert not entry.name.endswith("/")
    assert tar[end:] == b"\0" * 1024


def test_file_modes_are_kept(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"code/run.sh": "#!/bin/sh\n", "code/lib.py": "x = 1\n"})
    os.chmod(context / "code/run.sh", 0o755)
    os.chmod(context / "code/lib.py", 0o600)
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\ncode:\n  - path: code\n")
    digest = pack(context, Paths(home), tag="test:modes").digest
    entries, _ = raw_entries(layer_tars(home, digest)[0][1])
    assert {e.name: e.mode for e in entries}["code/run.sh"] == 0o755
    assert {e.name: e.mode for e in entries}["code/lib.py"] == 0o600


def test_pack_is_reproducible_when_mtimes_change(tmp_path: Path) -> None:
    """Upstream TestPackReproducibility."""
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"test-file.txt": "model", "test-dir/test-subfile.txt": "data"})
    (context / "Kitfile").write_text(
        "manifestVersion: 1.0.0\nmodel:\n  path: test-file.txt\n"
        "datasets:\n  - path: test-dir/test-subfile.txt\n"
    )
    first = saved_digest(ok(kitfs(home, "pack", str(context), "-t", "test:repack1")))
    later = time.time() + 3600
    for rel in ("test-file.txt", "test-dir", "test-dir/test-subfile.txt"):
        os.utime(context / rel, (later, later))
    second = saved_digest(ok(kitfs(home, "pack", str(context), "-t", "test:repack2")))
    assert first == second
    index = json.loads((home / "storage" / "index.json").read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [first]


def test_manifest_shape(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"m.bin": "weights"})
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: m.bin\n")
    result = pack(context, Paths(home), tag="test:shape", span_size=None)
    body = blob(home, result.digest)
    layer = result.manifest.layers[0]
    config = result.manifest.config
    assert (
        body
        == (
            '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            '"artifactType":"application/vnd.kitops.modelkit.manifest.v1+json",'
            f'"config":{{"mediaType":"application/vnd.kitops.modelkit.config.v1+json",'
            f'"digest":"{config.digest}","size":{config.size}}},'
            f'"layers":[{{"mediaType":"{MODEL}","digest":"{layer.digest}","size":{layer.size},'
            '"annotations":{"org.cncf.model.filepath":"m.bin"}}],'
            '"annotations":{"ml.kitops.modelkit.cli-version":"kitfs-0.1.0"}}'
        ).encode()
    )
    assert result.digest == sha256(body)
    assert (
        blob(home, config.digest)
        == (
            '{"manifestVersion":"1.0.0","package":{},"model":{"path":"m.bin",'
            f'"digest":"{layer.digest}","diffId":"{layer.digest}"}}}}'
        ).encode()
    )


def test_source_date_epoch_sets_the_created_annotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"m.bin": "weights"})
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: m.bin\n")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    result = pack(context, Paths(home), tag="test:epoch")
    assert manifest_json(home, result.digest)["annotations"] == {
        "ml.kitops.modelkit.cli-version": "kitfs-0.1.0",
        "org.opencontainers.image.created": "2023-11-14T22:13:20Z",
    }
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(PackError, match="^invalid SOURCE_DATE_EPOCH 'yesterday'"):
        pack(context, Paths(home), tag="test:epoch2")


@pytest.mark.parametrize(
    ("compression", "suffix", "xfl"),
    [("gzip", "+gzip", 0), ("gzip-fastest", "+gzip", 4), ("zstd", "+zstd", None)],
)
def test_compressed_packs_unpack_identically(
    tmp_path: Path, compression: str, suffix: str, xfl: int | None
) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(
        context,
        {"model/w.bin": os.urandom(3000) + b"\0" * 100_000, "code/a.py": "print(1)\n"},
    )
    (context / "Kitfile").write_text(
        "manifestVersion: 1.0.0\nmodel:\n  path: model\ncode:\n  - path: code\n"
    )
    plain = pack(context, Paths(home), tag="test:plain", span_size=None)
    packed = pack(
        context, Paths(home), tag=f"test:{compression}", compression=compression, span_size=None
    )
    config = config_json(home, packed.digest)
    for raw, layer, entry in zip(
        plain.manifest.layers,
        packed.manifest.layers,
        [config["model"], config["code"][0]],
        strict=True,
    ):
        assert layer.media_type == raw.media_type + suffix
        data = blob(home, layer.digest)
        assert layer.digest == sha256(data) and layer.size == len(data)
        # diffId is the digest of the uncompressed tar, which is the uncompressed layer's digest.
        assert entry == {**entry, "digest": layer.digest, "diffId": raw.digest}
        if xfl is not None:
            assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl]) + b"\xff"
            assert sha256(gzip.decompress(data)) == raw.digest
    ok(cli(home, "unpack", "test:plain", "-d", str(tmp_path / "a")))
    ok(cli(home, "unpack", f"test:{compression}", "-d", str(tmp_path / "b")))
    for rel in ("model/w.bin", "code/a.py", "Kitfile"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_span_indexed_layers_stay_one_valid_stream_with_a_pinned_index(
    tmp_path: Path, compression: str
) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    files = {f"model/f{i:03d}.txt": os.urandom(9000) for i in range(40)}
    make_tree(context, {**files, "model/big.bin": os.urandom(300_000)})
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    plain = pack(context, Paths(home), tag="test:plain", span_size=None)
    packed = pack(
        context, Paths(home), tag=f"test:{compression}", compression=compression, span_size=65536
    )
    layer = packed.manifest.layers[0]
    data = blob(home, layer.digest)
    location = spanindex.location_of(layer.annotations, layer.size)
    assert location is not None
    index_bytes = location.inline or data[location.offset : location.offset + location.size]
    index = spanindex.parse_index(
        index_bytes, location, compression=compression, blob_size=layer.size
    )
    stream = decompress(data, layer.media_type)
    if compression == "none":
        assert location.inline is not None and data == blob(home, plain.manifest.layers[0].digest)
    else:
        # The tar, then the index: kit's and Python's readers see the same members as before.
        assert stream[: index.tar_size] == blob(home, plain.manifest.layers[0].digest)
        assert stream[index.tar_size :] == index.to_json()
    assert config_json(home, packed.digest)["model"]["diffId"] == sha256(stream)
    assert tarfile_names(stream) == tarfile_names(blob(home, plain.manifest.layers[0].digest))
    # Every span decodes on its own to its slice of the tar; small files never straddle spans.
    tar = stream[: index.tar_size]
    for span in index.spans:
        member = data[span.blob_offset : span.blob_end]
        assert sha256(member) == span.digest
        assert (
            spanindex.decode_member(member, compression, span.size) == tar[span.offset : span.end]
        )
        assert span.size <= 65536
    for entry in index.entries:
        if 0 < entry.size <= 60000:
            assert len(index.covering(entry.offset, entry.size)) == 1, entry.name
        if not entry.is_dir:
            assert (
                tar[entry.offset : entry.offset + entry.size] == (context / entry.name).read_bytes()
            )
    again = pack(
        context, Paths(home), tag=f"again:{compression}", compression=compression, span_size=65536
    )
    assert again.digest == packed.digest


# -- long and non-ASCII names ---------------------------------------------------------------

LONG_DIR = "/".join(f"dir{i:02d}" + "x" * 15 for i in range(6))  # 125 characters


def test_long_paths_use_gos_ustar_prefix_split(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    long_file = f"{LONG_DIR}/file.bin"
    make_tree(context, {long_file: "deep"})
    (context / "Kitfile").write_text(
        "manifestVersion: 1.0.0\ncode:\n  - path: dir00xxxxxxxxxxxxxxx\n"
    )
    digest = pack(context, Paths(home), tag="test:long").digest
    tar = layer_tars(home, digest)[0][1]
    entries, _ = raw_entries(tar)
    by_name = {e.name: e for e in entries}
    assert list(by_name) == [LONG_DIR.rsplit("/", 6 - n)[0] for n in range(1, 6)] + [
        LONG_DIR,
        long_file,
    ]
    # Go takes the longest prefix that fits (Python's tarfile would take the shortest).
    header = by_name[long_file].header
    assert header[0:100].rstrip(b"\0") == b"file.bin"
    assert header[345:500].rstrip(b"\0") == LONG_DIR.encode()
    header = by_name[LONG_DIR].header
    assert header[0:100].rstrip(b"\0") == b"dir05" + b"x" * 15
    assert all(e.typeflag in (b"0", b"5") for e in entries)  # no PAX or GNU headers needed
    assert tarfile_names(tar)[-1] == long_file
    listing = subprocess.run(
        ["tar", "tvf", "-"], input=tar, capture_output=True, check=True
    ).stdout.decode()
    assert f" {long_file}\n" in listing
    assert listing.splitlines()[-1].split()[:2] == ["-rw-r--r--", "1000/0"]
    ok(cli(home, "unpack", "test:long", "-d", str(tmp_path / "out")))
    assert (tmp_path / "out" / long_file).read_text() == "deep"


def test_unsplittable_and_non_ascii_names_get_pax_headers(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    long_name = "n" * 120 + ".bin"
    make_tree(context, {f"docs/{long_name}": "long", "docs/modèle.txt": "accent"})
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\ndocs:\n  - path: docs\n")
    digest = pack(context, Paths(home), tag="test:pax").digest
    tar = layer_tars(home, digest)[0][1]
    entries, _ = raw_entries(tar)
    pax = [e for e in entries if e.typeflag == b"x"]
    assert [e.name for e in pax] == [
        "docs/PaxHeaders.0/modle.txt",
        f"docs/PaxHeaders.0/{long_name}"[:100],
    ]
    for entry in pax:
        assert (entry.mode, entry.uid, entry.gid, entry.mtime) == (0, 0, 0, 0)
        assert entry.header[329:345] == b"\0" * 16  # Go leaves the device fields empty here
    record = f" path=docs/{long_name}\n"
    size = len(record) + len(str(len(record) + 3))
    assert tar.find(f"{size}{record}".encode()) > 0
    assert ("docs/" + long_name)[:100] in [e.name for e in entries]
    assert "docs/modle.txt" in [e.name for e in entries]
    assert tarfile_names(tar) == ["docs", "docs/modèle.txt", f"docs/{long_name}"]
    listing = subprocess.run(["tar", "tvf", "-"], input=tar, capture_output=True, check=True)
    assert f"docs/{long_name}".encode() in listing.stdout
    ok(cli(home, "unpack", "test:pax", "-d", str(tmp_path / "out")))
    assert (tmp_path / "out/docs/modèle.txt").read_text() == "accent"
    assert (tmp_path / "out/docs" / long_name).read_text() == "long"


def test_huge_file_header_records_path_and_size_in_pax() -> None:
    long_dir = "d" * 80
    name = f"{long_dir}/{'f' * 30}"  # 111 bytes: splittable, but the size needs PAX anyway
    size = 8 << 30
    data = header_bytes(name, is_dir=False, mode=0o644, size=size)
    pax_body = data[BLOCK : 2 * BLOCK].rstrip(b"\0")
    assert pax_body == f"121 path={name}\n".encode() + b"19 size=8589934592\n"
    real = data[2 * BLOCK :]
    assert real[0:100] == name.encode()[:100]
    assert real[124:136] == b"00000000000\0"


# -- Kitfile location, tags, model references ---------------------------------------------------


def test_kitfile_from_another_place_and_from_stdin(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"m.bin": "weights", "Kitfile": "not: a kitfile\n"})
    other = tmp_path / "elsewhere.yaml"
    other.write_text("manifestVersion: 1.0.0\nmodel:\n  path: m.bin\n")
    first = saved_digest(ok(cli(home, "pack", str(context), "-f", str(other), "-t", "a:v1")))
    second = ok(
        kitfs(home, "pack", str(context), "-f", "-", "-t", "b:v1", input=other.read_bytes())
    )
    assert saved_digest(second) == first
    # The -f Kitfile is not the context's "Kitfile", which is still left out of layers.
    assert layer_names(layer_tars(home, first)[0][1]) == ["m.bin"]


def test_lowercase_and_dot_kitfile_names_are_found(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(
        context, {"m.bin": "w", ".kitfile": "manifestVersion: 1.0.0\nmodel:\n  path: m.bin\n"}
    )
    digest = saved_digest(ok(cli(home, "pack", str(context), "-t", "dot:v1")))
    assert config_json(home, digest)["model"]["path"] == "m.bin"


def test_extra_tags_and_default_latest(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"m.bin": "w", "Kitfile": "manifestVersion: 1.0.0\nmodel:\n  path: m.bin\n"})
    digest = saved_digest(ok(cli(home, "pack", str(context), "-t", "org/repo:a,b,c")))
    tags = json.loads((home / "storage" / "bG9jYWxob3N0L29yZy9yZXBv-tags.json").read_bytes())
    assert sorted(tags) == ["a", "b", "c"]
    assert {t["digest"] for t in tags.values()} == {digest}
    ok(cli(home, "pack", str(context), "-t", "plain"))
    tags = json.loads((home / "storage" / "bG9jYWxob3N0L3BsYWlu-tags.json").read_bytes())
    assert list(tags) == ["latest"]


def test_model_reference_reuses_the_parent_and_excludes_its_paths(tmp_path: Path) -> None:
    home = tmp_path / "home"
    parent, child = tmp_path / "parent", tmp_path / "child"
    make_tree(parent, {"my-model/weights.bin": "parent weights"})
    (parent / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: my-model\n")
    pack(parent, Paths(home), tag="test-ref:model-1")
    make_tree(
        child,
        {"my-model/weights.bin": "stale copy", "adapter.bin": "adapter", "src/train.py": "x"},
    )
    (child / "Kitfile").write_text(
        "manifestVersion: 1.0.0\nmodel:\n  path: test-ref:model-1\n  parts:\n"
        "    - path: adapter.bin\ncode:\n  - path: .\n"
    )
    result = pack(child, Paths(home), tag="test-ref:model-2")
    layers = layer_tars(home, result.digest)
    assert [(m, layer_names(t)) for m, t in layers] == [
        (PART, ["adapter.bin"]),
        (CODE, ["src", "src/train.py"]),  # my-model belongs to the parent's layer
    ]
    assert config_json(home, result.digest)["model"]["path"] == "test-ref:model-1"


def test_model_reference_loop_is_refused(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"f.txt": "x"})
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: f.txt\n")
    pack(context, Paths(home), tag="test-ref:model-1")
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: test-ref:model-1\n")
    pack(context, Paths(home), tag="test-ref:model-2")
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: test-ref:model-2\n")
    with pytest.raises(PackError) as caught:
        pack(context, Paths(home), tag="test-ref:model-1")
    assert str(caught.value) == (
        "found cycle in modelkit references: [test-ref:model-1=>test-ref:model-2=>test-ref:model-1]"
    )


def test_model_reference_chain_is_limited_to_ten(tmp_path: Path) -> None:
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"f.txt": "x"})
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: f.txt\n")
    pack(context, Paths(home), tag="chain:k0")
    for i in range(1, 12):
        (context / "Kitfile").write_text(
            f"manifestVersion: 1.0.0\nmodel:\n  path: chain:k{i - 1}\n"
        )
        if i < 11:
            pack(context, Paths(home), tag=f"chain:k{i}")
    with pytest.raises(PackError) as caught:
        pack(context, Paths(home), tag="chain:k11")
    refs = "=>".join(f"chain:k{i}" for i in range(11, -1, -1))
    assert str(caught.value) == f"reached maximum number of model references: [{refs}]"


# -- refusals -------------------------------------------------------------------------------


def _context(tmp_path: Path, kitfile: str | None, files: dict[str, str] | None = None) -> Path:
    context = tmp_path / "ctx"
    make_tree(context, files or {"model/m.bin": "w"})
    if kitfile is not None:
        (context / "Kitfile").write_text(kitfile)
    return context


def _no_modelkit_stored(home: Path) -> bool:
    index = home / "storage" / "index.json"
    return not index.exists() or json.loads(index.read_bytes())["manifests"] == []


@pytest.mark.parametrize(
    ("kitfile", "message"),
    [
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: nope\n",
            "kitfs: model path 'nope' does not exist in {ctx}",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  name: m\n  path: ../x\n",
            "kitfs: {ctx}/Kitfile: invalid Kitfile: paths outside the context directory are not "
            "supported in a Kitfile (path ../x in model m)",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  name: m\n  path: /etc\n",
            "kitfs: {ctx}/Kitfile: invalid Kitfile: absolute paths are not supported in a "
            "Kitfile (path /etc in model m)",
        ),
        (
            "manifestVersion: 1.0.0\ncode:\n  - path: escape\n",
            "kitfs: code path 'escape' resolves outside the context directory {ctx}",
        ),
        (
            "manifestVersion: 1.0.0\ncode:\n  - path: escape/inner\n",
            "kitfs: code path 'escape/inner' resolves outside the context directory {ctx}",
        ),
        (
            "manifestVersion: 1.0.0\nmodel: [\n",
            "kitfs: {ctx}/Kitfile: invalid YAML: while parsing a flow node expected the node "
            "content, but found '<stream end>' in \"<byte string>\", line 3, column 1: ^",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: model\n  weights: x\n",
            "kitfs: {ctx}/Kitfile: line 4: unknown field 'weights' in model",
        ),
        (
            None,
            "kitfs: no Kitfile in {ctx} (looked for Kitfile, kitfile, .kitfile); use -f to name one",
        ),
    ],
    ids=[
        "missing-path",
        "parent-path",
        "absolute-path",
        "symlink-outside",
        "through-symlink",
        "invalid-yaml",
        "unknown-field",
        "no-kitfile",
    ],
)
def test_bad_input_is_refused_with_one_line(
    tmp_path: Path, kitfile: str | None, message: str
) -> None:
    outside = tmp_path / "outside"
    make_tree(outside, {"inner/secret": "s"})
    context = _context(tmp_path, kitfile)
    (context / "escape").symlink_to(outside)
    home = tmp_path / "home"
    line = fails(cli(home, "pack", str(context), "-t", "test:bad"))
    assert line == message.format(ctx=context)
    assert _no_modelkit_stored(home)


def test_the_command_reports_a_bad_kitfile_in_one_line(tmp_path: Path) -> None:
    context = _context(tmp_path, "manifestVersion: 1.0.0\nmodel:\n  path: model\n  weights: x\n")
    line = fails(kitfs(tmp_path / "home", "pack", str(context)))
    assert line == f"kitfs: {context}/Kitfile: line 4: unknown field 'weights' in model"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--compression", "brotli"], 2, "invalid choice: 'brotli'"),
        (
            ["-t", "Test:v1"],
            1,
            "kitfs: invalid reference 'Test:v1': repository (Test) name must be lowercase",
        ),
        (["-t", "test:bad tag"], 1, "kitfs: invalid tag 'bad tag' in reference 'test:bad tag'"),
        (["-t", "test:v1,-x"], 1, "kitfs: invalid tag '-x' in reference 'test:v1,-x'"),
        (
            ["-t", "test@sha256:" + "a" * 64],
            1,
            "kitfs: --tag cannot name a digest: a ModelKit's digest is computed when it is packed",
        ),
    ],
)
def test_bad_flags_are_refused(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    context = _context(tmp_path, "manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    result = cli(tmp_path / "home", "pack", str(context), *args)
    assert result.returncode == code
    assert message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert _no_modelkit_stored(tmp_path / "home")


def test_missing_context_directory(tmp_path: Path) -> None:
    line = fails(cli(tmp_path / "home", "pack", str(tmp_path / "nowhere")))
    assert (
        line
        == f"kitfs: context directory {tmp_path / 'nowhere'} does not exist or is not a directory"
    )


def test_non_utf8_kitfile_is_a_clean_error(tmp_path: Path) -> None:
    context = _context(tmp_path, None)
    (context / "Kitfile").write_bytes(b"manifestVersion: 1.0.0\nmodel:\n  path: \xff\n")
    line = fails(cli(tmp_path / "home", "pack", str(context)))
    assert line.startswith(f"kitfs: {context}/Kitfile: invalid YAML: unacceptable character #x00ff")


def test_symlinks_inside_the_context_are_skipped_with_a_warning(tmp_path: Path) -> None:
    home = tmp_path / "home"
    context = _context(
        tmp_path,
        "manifestVersion: 1.0.0\nmodel:\n  path: model\n",
        {"model/m.bin": "w", "model/z.bin": "z"},
    )
    (context / "model" / "link.bin").symlink_to("m.bin")
    (context / "model" / "outside").symlink_to(tmp_path)
    result = ok(kitfs(home, "pack", str(context), "-t", "test:links"))
    assert layer_names(layer_tars(home, saved_digest(result))[0][1]) == [
        "model",
        "model/m.bin",
        "model/z.bin",
    ]
    warnings = [line for line in result.stderr.splitlines() if "symbolic link" in line]
    assert warnings == [
        "WARNING kitfs.pack: skipped symbolic link model/link.bin: ModelKits hold only files and directories",
        "WARNING kitfs.pack: skipped symbolic link model/outside: ModelKits hold only files and directories",
    ]


def test_unreadable_file_is_a_clean_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read anything")
    context = _context(tmp_path, "manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    os.chmod(context / "model/m.bin", 0)
    line = fails(cli(tmp_path / "home", "pack", str(context)))
    assert line == "kitfs: failed to open file for archiving: model/m.bin: Permission denied"


def test_unpacking_what_python_tarfile_reads(tmp_path: Path) -> None:
    """A layer kitfs writes is an ordinary tar: Python's tarfile extracts the same files."""
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {"data/x/y.txt": "y", "data/z.txt": "z"})
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\ndatasets:\n  - path: data\n")
    digest = pack(context, Paths(home), tag="test:tarfile").digest
    with tarfile.open(fileobj=io.BytesIO(layer_tars(home, digest)[0][1])) as archive:
        archive.extractall(tmp_path / "py", filter="data")
    assert files_under(tmp_path / "py") == {"data/x/y.txt", "data/z.txt"}
    shutil.rmtree(tmp_path / "py")


# -- .kitignore rules (upstream pkg/lib/filesystem/ignore_test.go and patternmatcher) --------------


@pytest.mark.parametrize(
    ("patterns", "layers", "path", "layer", "ignored"),
    [
        (["dir1"], [], "dir1/subdir1/subdir2/file.txt", "", True),
        (["dir1/*.txt"], [], "dir1/testfile.txt", "", True),
        (["**/testfile.txt"], [], "dir1/subdir1/subdir2/testfile.txt", "", True),
        (["dir1", "!dir1/testfile.txt"], [], "dir1/testfile.txt", "", False),
        ([], ["main", "main/subdir"], "main/subdir/testfile.txt", "main", True),
        ([], ["main", "main/subdir"], "main/subdir/testfile.txt", "main/subdir", False),
        (
            ["**/testfile.txt"],
            ["main", "main/subdir"],
            "main/subdir/testfile.txt",
            "main/subdir",
            True,
        ),
        # kit always leaves its own files out, but only at the context root
        ([], [], "Kitfile", "", True),
        ([], [], ".kitignore", "", True),
        ([], [], "sub/Kitfile", "", False),
        # patternmatcher details
        (["**.md"], [], "docs/readme.md", "", True),  # "**x" is a plain suffix match
        (["**/x.md"], [], "x.md", "", True),
        (["dir/*"], [], "dir/a/b", "", True),  # a parent matches
        (["*.bin"], [], "sub/a.bin", "", False),  # "*" does not cross "/"
        (["data[^0-9].csv"], [], "datax.csv", "", True),
        (["data[^0-9].csv"], [], "data1.csv", "", False),
        (["a\\*b"], [], "a*b", "", True),
        (["a\\*b"], [], "axb", "", False),
        (["/abs.txt"], [], "abs.txt", "", True),
        (["./x/../y"], [], "y", "", True),
        (["f(1).txt"], [], "f(1).txt", "", True),
        (["last", "!last", "last"], [], "last", "", True),
    ],
)
def test_ignore_rules(
    patterns: list[str], layers: list[str], path: str, layer: str, ignored: bool
) -> None:
    from kitfs.layers.ignore import IgnoreRules, parse_patterns

    rules = IgnoreRules(parse_patterns(patterns), layers)
    assert rules.matches(path, layer) is ignored


def test_kitignore_file_syntax(tmp_path: Path) -> None:
    from kitfs.layers.ignore import IgnoreRules

    (tmp_path / ".kitignore").write_text("\ufeff# comment\n\n  spaced.txt  \n! kept.txt\n*.txt\n")
    rules = IgnoreRules.from_context(tmp_path, [])
    assert [(p.text, p.exclusion) for p in rules.patterns[:3]] == [
        ("spaced.txt", False),
        ("kept.txt", True),
        ("*.txt", False),
    ]
    assert rules.has_exclusions
    (tmp_path / ".kitignore").write_text("!\n")
    with pytest.raises(
        PackError, match='^invalid .kitignore file: illegal exclusion pattern: "!"$'
    ):
        IgnoreRules.from_context(tmp_path, [])
    (tmp_path / ".kitignore").write_text("data[\n")
    with pytest.raises(
        PackError, match="^invalid .kitignore file: syntax error in pattern 'data\\['"
    ):
        IgnoreRules.from_context(tmp_path, [])


def test_unwritable_storage_is_a_clean_error(tmp_path: Path) -> None:
    context = _context(tmp_path, "manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "storage").write_text("not a directory")
    line = fails(cli(home, "pack", str(context)))
    assert (
        line
        == f"kitfs: failed to write to local storage: {home}/storage/blobs/sha256: Not a directory"
    )


def test_non_utf8_file_names_are_refused_unless_ignored(tmp_path: Path) -> None:
    context = _context(tmp_path, "manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    (context / "model").joinpath(os.fsdecode(b"caf\xe9.bin")).write_bytes(b"x")
    line = fails(cli(tmp_path / "home", "pack", str(context)))
    assert line == (
        "kitfs: cannot pack model/caf\\xe9.bin: its name is not valid UTF-8 "
        "(rename it, or leave it out with .kitignore)"
    )
    assert _no_modelkit_stored(tmp_path / "home")
    (context / ".kitignore").write_text("model/caf*\n")
    digest = saved_digest(ok(cli(tmp_path / "home", "pack", str(context))))
    assert layer_names(layer_tars(tmp_path / "home", digest)[0][1]) == ["model", "model/m.bin"]
