"""list, tag, remove, info and inspect on kit's local storage, and the storage files themselves.

Formats follow kit (pkg/kit/list.go, pkg/output/util.go, pkg/lib/repo/local/*.go): a Go tabwriter
table with padding 3, compact Go JSON index files named by base64url(registry/repository).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from helpers import blob, cli, fails, kitfs, make_tree, manifest_json, ok, sha256

from kitfs.catalog import format_bytes
from kitfs.config import Paths
from kitfs.kitfile import go_json
from kitfs.pack import pack

ALPHA_KITFILE = (
    "manifestVersion: 1.0.0\npackage:\n  name: alpha\n  description: <b>fast</b> & small\n"
    "  authors: [Ada Lovelace, Bob]\nmodel:\n  name: slm\n  path: m.bin\n"
)
BETA_KITFILE = "manifestVersion: 1.0.0\ndatasets:\n  - path: d.csv\n"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def b64(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def storage_file(home: Path, name: str) -> bytes:
    return (home / "storage" / name).read_bytes()


class Store:
    """A kit home with: alpha:v1,v2; an untagged pack; reg.io:5000/org/beta:1.0 (same as untagged)."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        make_tree(tmp_path / "a", {"m.bin": "weights\n", "Kitfile": ALPHA_KITFILE})
        make_tree(tmp_path / "b", {"d.csv": "1,2\n", "Kitfile": BETA_KITFILE})
        self.alpha = pack(tmp_path / "a", Paths(self.home), tag="alpha:v1,v2")
        self.untagged = pack(tmp_path / "b", Paths(self.home))
        self.beta = pack(tmp_path / "b", Paths(self.home), tag="reg.io:5000/org/beta:1.0")

    def blobs(self) -> set[str]:
        return {f"sha256:{p.name}" for p in (self.home / "storage/blobs/sha256").iterdir()}

    def list_lines(self) -> list[str]:
        return ok(cli(self.home, "list")).stdout.splitlines()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


# -- list -----------------------------------------------------------------------------------


def test_list_table_is_kits(store: Store) -> None:
    a, u = store.alpha.digest, store.untagged.digest
    assert store.beta.digest == u
    result = ok(kitfs(store.home, "list"))
    assert result.stdout == (
        "REPOSITORY             TAG      MAINTAINER     NAME     SIZE      DIGEST\n"
        f"<none>                 <none>   <none>         <none>   2.0 KiB   {u}\n"
        f"alpha                  v1       Ada Lovelace   alpha    2.0 KiB   {a}\n"
        f"alpha                  v2       Ada Lovelace   alpha    2.0 KiB   {a}\n"
        f"reg.io:5000/org/beta   1.0      <none>         <none>   2.0 KiB   {u}\n"
    )
    assert result.stderr == ""


def test_list_of_empty_storage_is_the_header(tmp_path: Path) -> None:
    assert ok(cli(tmp_path / "home", "list")).stdout == (
        "REPOSITORY   TAG   MAINTAINER   NAME   SIZE   DIGEST\n"
    )
    assert ok(cli(tmp_path / "home", "list", "--format", "json")).stdout == "[]\n"


def test_list_json_is_one_object_per_manifest(store: Store) -> None:
    """Go's MarshalIndent of []ModelInfo: <none> comes out HTML-escaped, as from kit."""
    a, u = store.alpha.digest, store.untagged.digest
    result = ok(cli(store.home, "list", "--format", "json"))
    assert result.stdout == (
        "[\n"
        "  {\n"
        '    "repo": "\\u003cnone\\u003e",\n'
        f'    "digest": "{u}",\n'
        '    "tags": null,\n'
        '    "modelName": "\\u003cnone\\u003e",\n'
        '    "size": "2.0 KiB",\n'
        '    "author": "\\u003cnone\\u003e"\n'
        "  },\n"
        "  {\n"
        '    "repo": "alpha",\n'
        f'    "digest": "{a}",\n'
        '    "tags": [\n'
        '      "v1",\n'
        '      "v2"\n'
        "    ],\n"
        '    "modelName": "alpha",\n'
        '    "size": "2.0 KiB",\n'
        '    "author": "Ada Lovelace"\n'
        "  },\n"
        "  {\n"
        '    "repo": "reg.io:5000/org/beta",\n'
        f'    "digest": "{u}",\n'
        '    "tags": [\n'
        '      "1.0"\n'
        "    ],\n"
        '    "modelName": "\\u003cnone\\u003e",\n'
        '    "size": "2.0 KiB",\n'
        '    "author": "\\u003cnone\\u003e"\n'
        "  }\n"
        "]\n"
    )


def test_list_one_local_repository(store: Store) -> None:
    lines = ok(cli(store.home, "list", "alpha")).stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["REPOSITORY", "TAG"],
        ["alpha", "v1"],
        ["alpha", "v2"],
    ]
    # A tag selects the ModelKit; every tag of it is shown.
    lines = ok(cli(store.home, "list", "alpha:v2")).stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["REPOSITORY", "TAG"],
        ["alpha", "v1"],
        ["alpha", "v2"],
    ]
    assert ok(cli(store.home, "list", "alpha:v9")).stdout.splitlines() == [
        "REPOSITORY   TAG   MAINTAINER   NAME   SIZE   DIGEST"
    ]
    assert fails(cli(store.home, "list", "alpha:a,b"), 2) == (
        "kitfs: repository cannot reference multiple tags"
    )


def test_list_pads_by_characters_not_bytes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_tree(
        tmp_path / "c",
        {
            "m": "x",
            "Kitfile": "manifestVersion: 1.0.0\npackage:\n  name: modèle\n  authors: [Zoë]\n"
            "model:\n  path: m\n",
        },
    )
    digest = pack(tmp_path / "c", Paths(home), tag="uni:v1").digest
    assert ok(cli(home, "list")).stdout.splitlines() == [
        "REPOSITORY   TAG   MAINTAINER   NAME     SIZE      DIGEST",
        f"uni          v1    Zoë          modèle   2.0 KiB   {digest}",
    ]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (500, "500 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (4608, "4.5 KiB"),
        ((1 << 20) - 1, "1023.9 KiB"),
        (1 << 20, "1.0 MiB"),
        (int(6.5 * (1 << 20)), "6.5 MiB"),
        ((1 << 30) - 1, "1023.9 MiB"),
        (1 << 30, "1.0 GiB"),
        (1 << 40, "1.0 TiB"),
        (1 << 50, "1.0 PiB"),
        (500 << 50, "500.0 PiB"),
        (1 << 60, "1024.0 PiB"),
    ],
)
def test_format_bytes_matches_kit(size: int, text: str) -> None:
    assert format_bytes(size) == text


# -- storage files ----------------------------------------------------------------------------


def test_storage_files_are_kits(store: Store) -> None:
    a, u = store.alpha.digest, store.untagged.digest
    a_size = len(blob(store.home, a))
    u_size = len(blob(store.home, u))
    desc_a = f'{{"mediaType":"{MANIFEST}","digest":"{a}","size":{a_size}}}'
    desc_u = f'{{"mediaType":"{MANIFEST}","digest":"{u}","size":{u_size}}}'
    names = sorted(p.name for p in (store.home / "storage").iterdir() if not p.name.startswith("."))
    assert names == sorted(
        [
            "blobs",
            "index.json",
            "oci-layout",
            "bG9jYWxob3N0L2FscGhh-index.json",
            "bG9jYWxob3N0L2FscGhh-tags.json",
            "bG9jYWxob3N0L18=-index.json",
            "cmVnLmlvOjUwMDAvb3JnL2JldGE=-index.json",
            "cmVnLmlvOjUwMDAvb3JnL2JldGE=-tags.json",
        ]
    )
    assert b64("localhost/alpha") == "bG9jYWxob3N0L2FscGhh"
    assert b64("reg.io:5000/org/beta") == "cmVnLmlvOjUwMDAvb3JnL2JldGE="
    assert storage_file(store.home, "oci-layout") == b'{"imageLayoutVersion":"1.0.0"}'
    assert storage_file(store.home, "bG9jYWxob3N0L2FscGhh-index.json") == (
        f'{{"schemaVersion":2,"manifests":[{desc_a}]}}'.encode()
    )
    assert storage_file(store.home, "bG9jYWxob3N0L2FscGhh-tags.json") == (
        f'{{"v1":{desc_a},"v2":{desc_a}}}'.encode()
    )
    assert storage_file(store.home, "bG9jYWxob3N0L18=-index.json") == (
        f'{{"schemaVersion":2,"manifests":[{desc_u}]}}'.encode()
    )
    assert not (store.home / "storage" / "bG9jYWxob3N0L18=-tags.json").exists()
    assert storage_file(store.home, "cmVnLmlvOjUwMDAvb3JnL2JldGE=-tags.json") == (
        f'{{"1.0":{desc_u}}}'.encode()
    )
    assert (
        storage_file(store.home, "index.json")
        == (
            '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
            f'"manifests":[{desc_a},{desc_u}]}}'
        ).encode()
    )
    for digest in store.blobs():
        assert sha256(blob(store.home, digest)) == digest


def test_storage_written_by_kit_is_read(tmp_path: Path) -> None:
    """Index files as kit writes them (by hand here) list and resolve."""
    home = tmp_path / "home"
    make_tree(tmp_path / "a", {"m.bin": "w", "Kitfile": ALPHA_KITFILE})
    digest = pack(tmp_path / "a", Paths(home), tag="alpha:v1").digest
    size = len(blob(home, digest))
    desc = f'{{"mediaType":"{MANIFEST}","digest":"{digest}","size":{size}}}'
    key = b64("localhost/kit/made")
    (home / "storage" / f"{key}-index.json").write_text(
        f'{{"schemaVersion":2,"manifests":[{desc}]}}'
    )
    (home / "storage" / f"{key}-tags.json").write_text(f'{{"latest":{desc}}}')
    lines = ok(cli(home, "list")).stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["alpha", "v1"], ["kit/made", "latest"]]
    ok(cli(home, "unpack", "kit/made", "-d", str(tmp_path / "out")))
    assert (tmp_path / "out/m.bin").read_text() == "w"


# -- tag ------------------------------------------------------------------------------------


def test_tag_within_a_repository_and_into_another(store: Store) -> None:
    a = store.alpha.digest
    result = ok(kitfs(store.home, "tag", "alpha:v1", "alpha:prod"))
    assert result.stderr == "Modelkit localhost/alpha:v1 tagged as localhost/alpha:prod\n"
    tags = json.loads(storage_file(store.home, "bG9jYWxob3N0L2FscGhh-tags.json"))
    assert sorted(tags) == ["prod", "v1", "v2"]
    ok(cli(store.home, "tag", f"alpha@{a}", "team/models:best"))
    key = b64("localhost/team/models")
    assert json.loads(storage_file(store.home, f"{key}-tags.json"))["best"]["digest"] == a
    assert json.loads(storage_file(store.home, f"{key}-index.json"))["manifests"][0]["digest"] == a
    assert any(line.split()[:2] == ["team/models", "best"] for line in store.list_lines())
    blobs = store.blobs()
    ok(cli(store.home, "tag", "alpha:v1", "reg.io:5000/org/beta:1.0"))  # moves that tag
    assert store.blobs() == blobs
    beta = {
        (line.split()[1], line.split()[-1])
        for line in store.list_lines()
        if line.startswith("reg.io:5000/org/beta ")
    }
    # The manifest the tag left stays in the repository, untagged (as with kit).
    assert beta == {("1.0", a), ("<none>", store.untagged.digest)}


@pytest.mark.parametrize(
    ("source", "target", "code", "message"),
    [
        ("alpha:nope", "alpha:x", 1, "kitfs: ModelKit alpha:nope not found in local storage"),
        (
            "alpha",
            "alpha:x",
            2,
            "kitfs: source ModelKit reference requires a tag or digest (localhost/alpha:<tag>)",
        ),
        (
            "alpha:v1",
            "other",
            2,
            "kitfs: target ModelKit reference requires a tag (localhost/other:<tag>)",
        ),
        (
            "alpha:v1",
            "Other:x",
            1,
            "kitfs: invalid reference 'Other:x': repository (Other) name must be lowercase",
        ),
    ],
)
def test_tag_errors(store: Store, source: str, target: str, code: int, message: str) -> None:
    assert fails(cli(store.home, "tag", source, target), code) == message


# -- remove ---------------------------------------------------------------------------------


def test_remove_one_of_two_tags_only_untags(store: Store) -> None:
    blobs = store.blobs()
    result = ok(kitfs(store.home, "remove", "alpha:v1"))
    assert result.stdout == f"Removed alpha:v1 (digest {store.alpha.digest})\n"
    assert store.blobs() == blobs
    assert [line.split()[:2] for line in store.list_lines() if line.startswith("alpha")] == [
        ["alpha", "v2"]
    ]


def test_remove_last_tag_deletes_and_collects_but_keeps_shared_blobs(
    store: Store, tmp_path: Path
) -> None:
    # gamma shares alpha's model layer (same file, same path) but has its own config.
    make_tree(
        tmp_path / "g",
        {"m.bin": "weights\n", "Kitfile": "manifestVersion: 1.0.0\nmodel:\n  path: m.bin\n"},
    )
    gamma = pack(tmp_path / "g", Paths(store.home), tag="gamma:v1")
    shared = store.alpha.manifest.layers[0].digest
    assert gamma.manifest.layers[0].digest == shared
    stray = store.home / "storage/blobs/sha256" / ("f" * 64)
    stray.write_bytes(b"an interrupted download")
    ok(cli(store.home, "remove", "alpha:v1"))
    ok(cli(store.home, "remove", "alpha:v2"))
    gone = {store.alpha.digest, store.alpha.manifest.config.digest}
    assert not gone & store.blobs()
    assert shared in store.blobs()
    assert stray.exists()  # only what the removed manifest used is collected
    assert not (store.home / "storage/bG9jYWxob3N0L2FscGhh-index.json").exists()
    assert not (store.home / "storage/bG9jYWxob3N0L2FscGhh-tags.json").exists()
    root = json.loads(storage_file(store.home, "index.json"))
    assert store.alpha.digest not in [m["digest"] for m in root["manifests"]]
    ok(cli(store.home, "unpack", "gamma:v1", "-d", str(tmp_path / "out")))
    assert (tmp_path / "out/m.bin").read_text() == "weights\n"


def test_remove_from_one_repository_keeps_a_manifest_another_uses(store: Store) -> None:
    blobs = store.blobs()
    ok(cli(store.home, "remove", "reg.io:5000/org/beta:1.0"))
    assert store.blobs() == blobs  # the untagged localhost/_ entry still uses it
    assert not (store.home / "storage/cmVnLmlvOjUwMDAvb3JnL2JldGE=-index.json").exists()
    root = json.loads(storage_file(store.home, "index.json"))
    assert store.untagged.digest in [m["digest"] for m in root["manifests"]]


def test_remove_by_digest_drops_every_tag(store: Store) -> None:
    a = store.alpha.digest
    result = ok(cli(store.home, "remove", f"alpha@{a}"))
    assert result.stdout == f"Removed alpha@{a} (digest {a})\n"
    assert not any(line.startswith("alpha") for line in store.list_lines())
    assert a not in store.blobs()


def test_remove_bare_digest_of_an_untagged_pack(store: Store) -> None:
    u = store.untagged.digest
    result = ok(cli(store.home, "remove", u))
    assert result.stdout == f"Removed {u} (digest {u})\n"
    assert not any(line.startswith("<none>") for line in store.list_lines())
    assert u in store.blobs()  # still used by reg.io:5000/org/beta:1.0


def test_remove_several_tags_at_once(store: Store) -> None:
    result = ok(cli(store.home, "remove", "alpha:v1,v2"))
    assert result.stdout.splitlines() == [
        f"Removed alpha:v1 (digest {store.alpha.digest})",
        f"Removed alpha:v2 (digest {store.alpha.digest})",
    ]
    assert store.alpha.digest not in store.blobs()


def test_remove_all_takes_only_untagged_modelkits(store: Store, tmp_path: Path) -> None:
    # Re-packing a tag leaves the older manifest untagged (kit's remove_test).
    (tmp_path / "a" / "m.bin").write_text("new weights\n")
    newer = pack(tmp_path / "a", Paths(store.home), tag="alpha:v1,v2").digest
    old, u = store.alpha.digest, store.untagged.digest
    result = ok(kitfs(store.home, "remove", "--all"))
    assert sorted(result.stdout.splitlines()) == sorted([f"Removed @{u}", f"Removed alpha@{old}"])
    assert [line.split()[:2] for line in store.list_lines()[1:]] == [
        ["alpha", "v1"],
        ["alpha", "v2"],
        ["reg.io:5000/org/beta", "1.0"],
    ]
    assert old not in store.blobs() and newer in store.blobs() and u in store.blobs()


def test_remove_all_force_takes_everything(store: Store) -> None:
    a, u = store.alpha.digest, store.untagged.digest
    result = ok(cli(store.home, "remove", "--all", "--force"))
    assert result.stdout.splitlines() == [
        f"Removed @{u}",
        "Untagged alpha:v1",
        "Untagged alpha:v2",
        f"Removed alpha@{a}",
        "Untagged reg.io:5000/org/beta:1.0",
        f"Removed reg.io:5000/org/beta@{u}",
    ]
    assert store.list_lines() == ["REPOSITORY   TAG   MAINTAINER   NAME   SIZE   DIGEST"]
    assert store.blobs() == set()
    assert json.loads(storage_file(store.home, "index.json"))["manifests"] == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["alpha:nope"], 1, "kitfs: ModelKit alpha:nope not found in local storage"),
        (["alpha"], 2, "kitfs: tag or digest is required when removing (localhost/alpha:<tag>)"),
        ([], 2, "kitfs: modelkit is required for remove unless --all is specified"),
        (
            ["--all", "alpha:v1"],
            2,
            "kitfs: modelkit should not be specified when --all flag is used",
        ),
        (["--all", "--remote"], 2, "kitfs: cannot use --all with --remote"),
    ],
)
def test_remove_errors(store: Store, args: list[str], code: int, message: str) -> None:
    blobs = store.blobs()
    assert fails(cli(store.home, "remove", *args), code) == message
    assert store.blobs() == blobs


# -- info / inspect -------------------------------------------------------------------------


def test_info_prints_the_kitfile_as_yaml(store: Store) -> None:
    result = ok(kitfs(store.home, "info", "alpha:v1"))
    assert result.stdout == (
        "manifestVersion: 1.0.0\n"
        "package:\n"
        "  name: alpha\n"
        "  description: <b>fast</b> & small\n"
        "  authors: [Ada Lovelace, Bob]\n"
        "model:\n"
        "  name: slm\n"
        "  path: m.bin\n"
    )
    assert ok(cli(store.home, "info", store.untagged.digest)).stdout == BETA_KITFILE


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["info", "alpha"], 2, "kitfs: missing tag or digest from ModelKit reference 'alpha'"),
        (["info", "alpha:nope"], 1, "kitfs: ModelKit alpha:nope not found in local storage"),
        (
            ["inspect", "alpha:v1,v2"],
            2,
            "kitfs: invalid reference format: extra tags are not supported: v2",
        ),
        (
            ["info", "-r", "alpha:v1"],
            2,
            "kitfs: can not check remote: alpha:v1 does not contain registry",
        ),
    ],
)
def test_info_and_inspect_errors(store: Store, args: list[str], code: int, message: str) -> None:
    assert fails(cli(store.home, *args), code) == message


def test_inspect_prints_digest_version_kitfile_and_manifest(store: Store) -> None:
    a = store.alpha.digest
    result = ok(kitfs(store.home, "inspect", "alpha:v2"))
    manifest = manifest_json(store.home, a)
    config = json.loads(blob(store.home, manifest["config"]["digest"]))
    layer = manifest["layers"][0]
    assert config["model"] == {
        "name": "slm",
        "path": "m.bin",
        "digest": layer["digest"],
        "diffId": layer["digest"],
    }
    expected = {"digest": a, "cliVersion": "kitfs-0.1.0", "kitfile": config, "manifest": manifest}
    assert result.stdout == go_json(expected, indent=2) + "\n"
    assert '"description": "\\u003cb\\u003efast\\u003c/b\\u003e \\u0026 small"' in result.stdout
    assert result.stdout.startswith('{\n  "digest": "sha256:')
    assert json.loads(result.stdout) == expected


def test_inspect_reports_unknown_cli_version(tmp_path: Path) -> None:
    from helpers import forge_file, forge_tar, store_modelkit

    home = tmp_path / "home"
    digest = store_modelkit(home, [("model", forge_tar(forge_file("model/x", b"x")))])
    view = json.loads(ok(cli(home, "inspect", "hostile:v1")).stdout)
    assert (view["digest"], view["cliVersion"]) == (digest, "unknown")


def test_remove_force_by_tag_drops_every_tag(store: Store) -> None:
    a = store.alpha.digest
    result = ok(cli(store.home, "remove", "--force", "alpha:v1"))
    assert result.stdout == f"Removed alpha:v1 (digest {a})\n"
    assert not any(line.startswith("alpha") for line in store.list_lines())
    assert a not in store.blobs()
