"""``kitfs unpack``: filters, existing files, verification, and hostile layers.

Hostile layers are tars forged byte by byte (tests/helpers.py), stored as layers of hand-built
manifests in local storage; every one must be refused with a message and leave nothing behind.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    blob,
    cli,
    fails,
    files_under,
    forge_file,
    forge_header,
    forge_tar,
    kitfs,
    make_tree,
    manifest_json,
    ok,
    snapshot,
    store_modelkit,
)

from kitfs.config import Paths
from kitfs.pack import pack

KITFILE = """\
manifestVersion: 1.0.0
package:
  name: demo
  authors: [Ada]
model:
  name: slm
  path: model
  parts:
    - name: lora
      path: adapters/lora.bin
code:
  - path: src
  - path: scripts/run.sh
datasets:
  - name: train
    path: data/train
  - name: test
    path: data/test.csv
docs:
  - path: README.md
"""
FILES = {
    "model/weights.bin": "weights",
    "adapters/lora.bin": "lora",
    "src/main.py": "print('hi')\n",
    "src/pkg/util.py": "x = 1\n",
    "scripts/run.sh": "#!/bin/sh\n",
    "data/train/a.csv": "1,2\n",
    "data/train/b.csv": "3,4\n",
    "data/test.csv": "5,6\n",
    "README.md": "# demo\n",
}
BY_TYPE = {
    "kitfile": {"Kitfile"},
    "model": {"model/weights.bin", "adapters/lora.bin"},
    "code": {"src/main.py", "src/pkg/util.py", "scripts/run.sh"},
    "datasets": {"data/train/a.csv", "data/train/b.csv", "data/test.csv"},
    "docs": {"README.md"},
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A kit home holding ``demo:v1`` packed from KITFILE and FILES."""
    home, context = tmp_path / "home", tmp_path / "ctx"
    make_tree(context, {**FILES, "Kitfile": KITFILE})
    pack(context, Paths(home), tag="demo:v1")
    return home


def everything() -> set[str]:
    return set().union(*BY_TYPE.values())


# -- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], everything()),
        (["--filter", "model"], BY_TYPE["model"]),
        (["--filter", "model,docs"], BY_TYPE["model"] | BY_TYPE["docs"]),
        (["--filter", "kitfile"], BY_TYPE["kitfile"]),
        (["--filter", "datasets:train"], {"data/train/a.csv", "data/train/b.csv"}),
        (["--filter", "datasets:data/test.csv"], {"data/test.csv"}),
        (["--filter", "datasets:train,test"], BY_TYPE["datasets"]),
        (["--filter", "code:src"], {"src/main.py", "src/pkg/util.py"}),
        (["--filter", "code:src/"], set()),  # paths match the Kitfile text exactly
        (["--filter", "model:lora"], {"adapters/lora.bin"}),
        (["--filter", "model:slm"], {"model/weights.bin"}),
        (["--filter", "docs", "--filter", "code:scripts/run.sh"], {"README.md", "scripts/run.sh"}),
        (["--model"], BY_TYPE["model"]),
        (["--datasets", "--docs"], BY_TYPE["datasets"] | BY_TYPE["docs"]),
        (["--code", "--kitfile"], BY_TYPE["code"] | BY_TYPE["kitfile"]),
        (["--model", "--filter", "docs"], BY_TYPE["model"]),  # the old flags win, as in kit
    ],
)
def test_filters_select_layers(
    home: Path, tmp_path: Path, args: list[str], expected: set[str]
) -> None:
    out = tmp_path / "out"
    ok(cli(home, "unpack", "demo:v1", "-d", str(out), *args))
    assert files_under(out) == expected
    for rel in expected - {"Kitfile"}:
        assert (out / rel).read_text() == FILES[rel]


def test_unpack_through_the_command(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = ok(kitfs(home, "unpack", "demo:v1", "-d", str(out), "--filter", "datasets:test"))
    assert files_under(out) == {"data/test.csv"}
    assert result.stderr == f"Unpacked 1 layers (1 files) to {out}\n"


def test_unpacked_kitfile_is_kits_yaml_of_the_config(home: Path, tmp_path: Path) -> None:
    ok(cli(home, "unpack", "demo:v1", "-d", str(tmp_path / "out"), "--kitfile"))
    assert (tmp_path / "out" / "Kitfile").read_text() == KITFILE


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        (
            "weights",
            "kitfs: invalid filter 'weights': invalid filter type weights "
            "(must be one of kitfile, model, datasets, code, prompts, docs, mcpservers)",
        ),
        (
            "model,dataset",
            "kitfs: invalid filter 'model,dataset': invalid filter type dataset "
            "(must be one of kitfile, model, datasets, code, prompts, docs, mcpservers)",
        ),
        (
            "model:a:b",
            "kitfs: invalid filter 'model:a:b': should be in format "
            "<type1>,<type2>[:<filter1>,<filter2>]",
        ),
    ],
)
def test_invalid_filter_is_refused(home: Path, tmp_path: Path, flt: str, message: str) -> None:
    assert (
        fails(cli(home, "unpack", "demo:v1", "-d", str(tmp_path / "out"), "--filter", flt), 2)
        == message
    )
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_missing_modelkit_and_bad_references(home: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert fails(cli(home, "unpack", "demo:v2", "-d", out)) == (
        "kitfs: ModelKit demo:v2 not found in local storage"
    )
    assert fails(cli(home, "unpack", "demo", "-d", out)) == (
        "kitfs: ModelKit demo:latest not found in local storage"
    )
    assert (
        fails(cli(home, "unpack", "demo:a,b", "-d", out), 2)
        == "kitfs: can not unpack multiple tags"
    )
    assert fails(cli(home, "unpack", "demo:v1", "-d", out, "-o", "-i"), 2) == (
        "kitfs: -o/--overwrite and -i/--ignore-existing cannot be used together"
    )


# -- existing files -------------------------------------------------------------------------


def test_existing_file_is_refused_and_nothing_is_written(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_tree(out, {"data/test.csv": "mine\n", "unrelated.txt": "keep\n"})
    before = snapshot(out)
    line = fails(cli(home, "unpack", "demo:v1", "-d", str(out)))
    assert line == f"kitfs: path '{out}/data/test.csv' already exists (use -o to overwrite)"
    assert snapshot(out) == before


def test_overwrite_replaces_existing_files(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_tree(out, {"data/test.csv": "mine\n", "Kitfile": "old\n", "unrelated.txt": "keep\n"})
    ok(cli(home, "unpack", "demo:v1", "-d", str(out), "-o"))
    assert (out / "data/test.csv").read_text() == FILES["data/test.csv"]
    assert (out / "Kitfile").read_text() == KITFILE
    assert (out / "unrelated.txt").read_text() == "keep\n"
    assert files_under(out) == everything() | {"unrelated.txt"}


def test_ignore_existing_skips_existing_files(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_tree(out, {"data/test.csv": "mine\n"})
    ok(cli(home, "unpack", "demo:v1", "-d", str(out), "-i"))
    assert (out / "data/test.csv").read_text() == "mine\n"
    assert files_under(out) == everything()


def test_identical_kitfile_is_accepted_and_a_different_one_refused(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ok(cli(home, "unpack", "demo:v1", "-d", str(out), "--kitfile"))
    ok(cli(home, "unpack", "demo:v1", "-d", str(out)))  # the same Kitfile is fine
    assert files_under(out) == everything()
    other = tmp_path / "other"
    make_tree(other, {"Kitfile": "manifestVersion: 1.0.0\n"})
    before = snapshot(other)
    assert fails(cli(home, "unpack", "demo:v1", "-d", str(other))) == (
        f"kitfs: failed to unpack: {other}/Kitfile exists and does not match the ModelKit's "
        "Kitfile (use -o)"
    )
    assert snapshot(other) == before


def test_directory_where_a_file_goes_is_refused(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "README.md").mkdir(parents=True)
    assert fails(cli(home, "unpack", "demo:v1", "-d", str(out), "-o")) == (
        f"kitfs: path '{out}/README.md' already exists and is not a regular file"
    )
    assert files_under(out) == set()


def test_symlink_in_the_target_is_not_followed(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "data").symlink_to(outside)
    (out / "README.md").symlink_to(outside / "readme")
    for args in ([], ["-o"], ["-i"]):
        line = fails(cli(home, "unpack", "demo:v1", "-d", str(out), *args))
        assert line == f"kitfs: refused to unpack data: {out}/data is a symbolic link"
    assert os.listdir(outside) == []
    line = fails(cli(home, "unpack", "demo:v1", "-d", str(out), "--docs", "-o"))
    assert line == f"kitfs: refused to unpack README.md: {out}/README.md is a symbolic link"
    assert os.listdir(outside) == []


def test_modes_follow_the_tar_and_the_umask(home: Path, tmp_path: Path) -> None:
    context = tmp_path / "ctx2"
    make_tree(
        context,
        {
            "bin/tool": "#!/bin/sh\n",
            "bin/open": "x",
            "Kitfile": "manifestVersion: 1.0.0\ncode:\n  - path: bin\n",
        },
    )
    os.chmod(context / "bin/tool", 0o755)
    os.chmod(context / "bin/open", 0o666)
    pack(context, Paths(home), tag="modes:v1")
    old = os.umask(0o022)
    try:
        ok(cli(home, "unpack", "modes:v1", "-d", str(tmp_path / "out")))
    finally:
        os.umask(old)
    assert (tmp_path / "out/bin/tool").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "out/bin/open").stat().st_mode & 0o7777 == 0o644


# -- verification ---------------------------------------------------------------------------


def _layer_digest(home: Path, index: int) -> str:
    desc = home / "storage" / "bG9jYWxob3N0L2RlbW8=-tags.json"
    digest = __import__("json").loads(desc.read_bytes())["v1"]["digest"]
    return manifest_json(home, digest)["layers"][index]["digest"]


@pytest.mark.parametrize("offset", [600, 10])  # in file data, then in a header
def test_corrupt_blob_is_refused_by_digest(home: Path, tmp_path: Path, offset: int) -> None:
    digest = _layer_digest(home, 5)  # dataset "train": the 6th layer
    path = home / "storage" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    line = fails(cli(home, "unpack", "demo:v1", "-d", str(out)))
    assert line.startswith(
        f"kitfs: layer {digest} failed verification: expected {digest}, got sha256:"
    )
    assert not out.exists() or files_under(out) == set()


def test_missing_blob_is_a_clean_error(home: Path, tmp_path: Path) -> None:
    digest = _layer_digest(home, 0)
    (home / "storage" / "blobs" / "sha256" / digest.removeprefix("sha256:")).unlink()
    line = fails(cli(home, "unpack", "demo:v1", "-d", str(tmp_path / "out")))
    assert line == f"kitfs: layer {digest} is missing from local storage"


def test_diff_id_mismatch_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tar = forge_tar(forge_file("model/w.bin", b"w"))
    layer = gzip.compress(tar, mtime=0)
    wrong = "sha256:" + "0" * 64
    from helpers import sha256

    kitfile = {
        "manifestVersion": "1.0.0",
        "package": {},
        "model": {"path": "model", "digest": sha256(layer), "diffId": wrong},
    }
    store_modelkit(home, [("model", layer)], kitfile=kitfile)
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(tmp_path / "out")))
    assert line == (
        f"kitfs: uncompressed layer {sha256(layer)} (diffId) failed verification: "
        f"expected {wrong}, got {sha256(tar)}"
    )


def test_config_digest_that_disagrees_with_the_manifest_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tar = forge_tar(forge_file("model/w.bin", b"w"))
    kitfile = {
        "manifestVersion": "1.0.0",
        "package": {},
        "model": {"path": "model", "digest": "sha256:" + "1" * 64},
    }
    store_modelkit(home, [("model", tar)], kitfile=kitfile)
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(tmp_path / "out")))
    assert line == "kitfs: digest in config and manifest do not match in model layer 0"


# -- hostile layers -------------------------------------------------------------------------

HOSTILE: dict[str, tuple[Callable[[str], bytes], str]] = {
    "parent": (
        lambda o: forge_tar(forge_file("../evil.txt", b"x")),
        "refused tar entry '../evil.txt' in layer {short}: '..' would leave the target directory",
    ),
    "parent-inside": (
        lambda o: forge_tar(forge_file("model/../../evil.txt", b"x")),
        "refused tar entry 'model/../../evil.txt' in layer {short}: '..' would leave the target "
        "directory",
    ),
    "absolute": (
        lambda o: forge_tar(forge_file(f"{o}/abs.txt", b"x")),
        "refused tar entry '{outside}/abs.txt' in layer {short}: absolute paths are not allowed",
    ),
    "symlink": (
        lambda o: forge_tar(forge_header("model/link", typeflag=b"2", linkname=o.encode())),
        "refused tar entry 'model/link' in layer {short}: it is a symbolic link; only regular "
        "files and directories are allowed",
    ),
    "hardlink": (
        lambda o: forge_tar(forge_header("model/hard", typeflag=b"1", linkname=f"{o}/x".encode())),
        "refused tar entry 'model/hard' in layer {short}: it is a hard link; only regular files "
        "and directories are allowed",
    ),
    "device": (
        lambda o: forge_tar(forge_header("model/null", typeflag=b"3")),
        "refused tar entry 'model/null' in layer {short}: it is a character device; only regular "
        "files and directories are allowed",
    ),
    "fifo": (
        lambda o: forge_tar(forge_header("model/pipe", typeflag=b"6")),
        "refused tar entry 'model/pipe' in layer {short}: it is a FIFO; only regular files and "
        "directories are allowed",
    ),
    "duplicate": (
        lambda o: forge_tar(forge_file("model/a", b"first"), forge_file("model/a", b"second")),
        "refused tar entry 'model/a' in layer {short}: it appears twice",
    ),
    "non-utf8": (
        lambda o: forge_tar(forge_file(b"model/caf\xe9", b"x")),
        "refused tar entry b'model/caf\\xe9' in layer {short}: its name is not valid UTF-8",
    ),
    "gnu-longname-parent": (
        lambda o: forge_tar(
            forge_header("././@LongLink", typeflag=b"L", size=13) + b"../../evil.x\0" + b"\0" * 499,
            forge_file("model/x", b"x"),
        ),
        "refused tar entry '../../evil.x' in layer {short}: '..' would leave the target directory",
    ),
    "pax-path-parent": (
        lambda o: forge_tar(
            forge_header("PaxHeaders.0/x", typeflag=b"x", size=19)
            + b"19 path=../../evil\n"
            + b"\0" * 493,
            forge_file("model/x", b"x"),
        ),
        "refused tar entry '../../evil' in layer {short}: '..' would leave the target directory",
    ),
    "truncated": (
        lambda o: forge_header("model/big", size=1 << 30) + b"only a little",
        "refused layer {short}: truncated while reading entry data",
    ),
    "no-end-marker": (
        lambda o: forge_file("model/a", b"a"),
        "refused layer {short}: the tar ends without its end-of-archive marker",
    ),
    "bad-checksum": (
        lambda o: forge_tar(
            forge_file("model/a", b"a")[:148]
            + b"0000001\0"
            + b"0" * 0
            + forge_file("model/a", b"a")[156:]
        ),
        "refused layer {short}: tar header checksum mismatch at byte 0",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_layer_is_refused(tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    template, message = HOSTILE[name]
    layer = template(str(outside))
    home, out = tmp_path / "home", tmp_path / "out"
    # A harmless layer first: nothing of it may be written either.
    good = forge_tar(forge_header("docs", typeflag=b"5", mode=0o755), forge_file("docs/a.md", b"a"))
    store_modelkit(home, [("model", layer), ("docs", good)])
    digest = manifest_json(home, _stored_digest(home))["layers"][0]["digest"]
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    expected = message.format(short=digest[:19], outside=outside)
    assert line == f"kitfs: {expected}"
    assert os.listdir(outside) == []
    assert files_under(out) == set()
    assert files_under(tmp_path) == {f"home/{p}" for p in files_under(home)}


def _stored_digest(home: Path) -> str:
    import json

    tags = home / "storage" / "bG9jYWxob3N0L2hvc3RpbGU=-tags.json"
    return json.loads(tags.read_bytes())["v1"]["digest"]


def test_gzip_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """A tiny valid tar followed by 64 MiB of zeros, 64 KiB once compressed."""
    home, out = tmp_path / "home", tmp_path / "out"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    tar = forge_tar(forge_file("model/w.bin", b"w"))
    parts = [compressor.compress(tar)]
    zeros = b"\0" * (1 << 20)
    parts += [compressor.compress(zeros) for _ in range(64)]
    parts.append(compressor.flush())
    layer = b"".join(parts)
    assert len(layer) < 100_000
    store_modelkit(home, [("model", layer)])
    digest = manifest_json(home, _stored_digest(home))["layers"][0]["digest"]
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert line == (
        f"kitfs: refused layer {digest[:19]}: more than 1048576 bytes follow the end of its tar "
        "archive (decompression bomb?)"
    )
    assert files_under(out) == set()


def test_gzip_garbage_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store_modelkit(home, [("model", b"\x1f\x8b\x08\x00garbage that is not deflate")])
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(tmp_path / "out")))
    digest = manifest_json(home, _stored_digest(home))["layers"][0]["digest"]
    assert line.startswith(f"kitfs: layer {digest[:19]} cannot be decompressed: ")


def test_tars_from_other_writers_unpack(tmp_path: Path) -> None:
    """GNU tar style: trailing record padding, './' prefixes, directories with a slash."""
    home, out = tmp_path / "home", tmp_path / "out"
    tar = (
        forge_tar(
            forge_header("./model/", typeflag=b"5", mode=0o755),
            forge_file("./model/w.bin", b"weights"),
            forge_header("model/sub/", typeflag=b"0", mode=0o755),
        )
        + b"\0" * 8192
    )
    store_modelkit(home, [("model", tar)])
    ok(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert (out / "model/w.bin").read_bytes() == b"weights"
    assert (out / "model/sub").is_dir()


def test_blob_bytes_stay_untouched_by_unpack(home: Path, tmp_path: Path) -> None:
    digest = _layer_digest(home, 0)
    before = blob(home, digest)
    ok(cli(home, "unpack", "demo:v1", "-d", str(tmp_path / "out")))
    assert blob(home, digest) == before


def _short(home: Path, index: int) -> str:
    return manifest_json(home, _stored_digest(home))["layers"][index]["digest"][:19]


def test_a_file_in_two_layers_is_refused_before_writing(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    first = forge_tar(forge_header("model", typeflag=b"5"), forge_file("model/w.bin", b"one"))
    second = forge_tar(forge_file("model/w.bin", b"two"))
    store_modelkit(home, [("model", first), ("code", second)])
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert line == (
        f"kitfs: refused layer {_short(home, 1)}: model/w.bin is also written by "
        f"layer {_short(home, 0)}"
    )
    assert files_under(out) == set()


def test_a_layer_cannot_replace_the_kitfile(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    store_modelkit(home, [("code", forge_tar(forge_file("Kitfile", b"manifestVersion: evil\n")))])
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert line == (
        f"kitfs: refused layer {_short(home, 0)}: Kitfile is also written by the ModelKit's Kitfile"
    )
    # Without the Kitfile selected, the layer's own file is fine.
    ok(cli(home, "unpack", "hostile:v1", "-d", str(out), "--code"))
    assert (out / "Kitfile").read_bytes() == b"manifestVersion: evil\n"


def test_a_file_where_a_directory_is_needed_is_refused(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    tar = forge_tar(forge_file("model", b"a file"), forge_file("model/w.bin", b"w"))
    store_modelkit(home, [("model", tar)])
    line = fails(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert line == (
        f"kitfs: refused layer {_short(home, 0)}: model/w.bin needs model to be a directory, "
        f"but layer {_short(home, 0)} writes a file there"
    )
    assert files_under(out) == set()


def test_directories_shared_between_layers_are_fine(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    first = forge_tar(forge_header("main", typeflag=b"5"), forge_file("main/a", b"a"))
    second = forge_tar(forge_header("main", typeflag=b"5"), forge_file("main/sub/b", b"b"))
    store_modelkit(home, [("model", first), ("dataset", second)])
    ok(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert files_under(out) == {"Kitfile", "main/a", "main/sub/b"}


def test_target_that_is_not_a_directory(home: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert fails(cli(home, "unpack", "demo:v1", "-d", str(tmp_path / "afile"))) == (
        f"kitfs: failed to create directory {tmp_path / 'afile'}: File exists"
    )
    assert fails(cli(home, "unpack", "demo:v1", "-d", str(tmp_path / "afile/sub"))) == (
        f"kitfs: failed to create directory {tmp_path / 'afile/sub'}: Not a directory"
    )
    assert (tmp_path / "afile").read_text() == "x"


def test_legacy_layers_unpack_into_the_parent_of_their_path(tmp_path: Path) -> None:
    """Configs without layer digests come from older kit, whose tars are relative to the
    parent of the Kitfile path: kit extracts them into filepath.Dir(path)."""
    home, out = tmp_path / "home", tmp_path / "out"
    model = forge_tar(forge_header("llama", typeflag=b"5"), forge_file("llama/w.bin", b"w"))
    data = forge_tar(forge_file("train.csv", b"1,2\n"))
    kitfile = {
        "manifestVersion": "1.0.0",
        "package": {},
        "model": {"path": "models/llama"},
        "datasets": [{"name": "d", "path": "./data/sets/train.csv"}],
    }
    store_modelkit(home, [("model", model), ("dataset", data)], kitfile=kitfile)
    ok(cli(home, "unpack", "hostile:v1", "-d", str(out)))
    assert files_under(out) == {"Kitfile", "models/llama/w.bin", "data/sets/train.csv"}


def test_legacy_layer_path_outside_the_target_is_refused(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    kitfile = {"manifestVersion": "1.0.0", "package": {}, "model": {"path": "../../up/m"}}
    store_modelkit(home, [("model", forge_tar(forge_file("m", b"w")))], kitfile=kitfile)
    assert fails(cli(home, "unpack", "hostile:v1", "-d", str(out))) == (
        "kitfs: ModelKit config is refused: the model path '../../up/m' is outside the context "
        "directory"
    )
    assert files_under(tmp_path) == {f"home/{p}" for p in files_under(home)}


def test_prompt_layers_do_not_take_code_entries(tmp_path: Path) -> None:
    """kit packs prompts as code layers annotated with the 'prompt' subtype."""
    import json

    from kitfs.oci.manifest import Descriptor, Manifest
    from kitfs.storage.local import LocalStore

    home, out = tmp_path / "home", tmp_path / "out"
    store = LocalStore(home / "storage")
    store.ensure()
    prompt = forge_tar(forge_header("prompts", typeflag=b"5"), forge_file("prompts/p.md", b"hi"))
    code = forge_tar(forge_header("src", typeflag=b"5"), forge_file("src/a.py", b"x"))
    code_type = "application/vnd.kitops.modelkit.code.v1.tar"
    layers = (
        Descriptor(
            code_type,
            store.put_blob(prompt),
            len(prompt),
            annotations={"ml.kitops.modelkit.layer-subtype": "prompt"},
        ),
        Descriptor(code_type, store.put_blob(code), len(code)),
    )
    from helpers import sha256

    config = {
        "manifestVersion": "1.0.0",
        "package": {},
        "code": [{"path": "src", "digest": sha256(code), "diffId": sha256(code)}],
        "prompts": [{"path": "prompts", "digest": sha256(prompt)}],
    }
    body = json.dumps(config).encode()
    manifest = Manifest(
        Descriptor(
            "application/vnd.kitops.modelkit.config.v1+json", store.put_blob(body), len(body)
        ),
        layers,
    )
    data = manifest.to_bytes()
    store.put_blob(data)
    store.repo("localhost/prompted").add(manifest.descriptor(data), ["v1"])
    ok(cli(home, "unpack", "prompted:v1", "-d", str(out)))
    assert files_under(out) == {"Kitfile", "prompts/p.md", "src/a.py"}
    ok(cli(home, "unpack", "prompted:v1", "-d", str(tmp_path / "code"), "--filter", "code"))
    assert files_under(tmp_path / "code") == {"src/a.py"}


@pytest.mark.parametrize(
    ("path", "prefix"),
    [("models/llama", "models"), ("./a/b/c.bin", "a/b"), ("m.bin", ""), ("", ""), (".", "")],
)
def test_legacy_prefix(path: str, prefix: str) -> None:
    from kitfs.unpack import legacy_prefix

    assert legacy_prefix("model", path) == prefix


@pytest.mark.parametrize("path", ["/abs/m", "../m", "a/../../m"])
def test_legacy_prefix_refuses_paths_outside(path: str) -> None:
    from kitfs.errors import UnsafeContentError
    from kitfs.unpack import legacy_prefix

    with pytest.raises(UnsafeContentError, match="^error resolving model path"):
        legacy_prefix("model", path)
