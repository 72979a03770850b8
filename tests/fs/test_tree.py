"""The mount's inode tree, without FUSE: layouts, merging, laziness, link counts, repositories."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from fs_modelkits import Snapshot, kitfs, snapshot, unpack_sections, write_context

from kitfs.config import Paths
from kitfs.fs.tree import (
    ROOT_INODE,
    LayerSlot,
    MountTree,
    NeedsLayers,
    NeedsModelKit,
    NeedsTags,
    TreeError,
    layer_slots,
)
from kitfs.kitfile import Kitfile
from kitfs.layers.codec import open_decompressed
from kitfs.layers.tarindex import TarEntry, index_tar
from kitfs.oci.manifest import Descriptor, Manifest
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

T = TypeVar("T")
MTIME = 1_700_000_000 * 1_000_000_000


class Feeder:
    """Answers the tree's NeedsLayers from layer tars, and records which layers it was asked for."""

    def __init__(self, tree: MountTree, tars: dict[str, bytes]) -> None:
        self.tree = tree
        self.tars = tars
        self.asked: list[str] = []

    def __call__(self, query: Callable[..., T], *args: Any) -> T:
        while True:
            try:
                return query(*args)
            except NeedsLayers as need:
                for slot in need.slots:
                    self.asked.append(slot.digest)
                    entries = index_tar(_stream(self.tars[slot.digest]))
                    self.tree.add_index(slot.digest, entries)

    def read(self, inode: int) -> bytes:
        data = self(self.tree.file_data, inode)
        if data.content is not None:
            return data.content
        assert data.slot is not None
        return self.tars[data.slot.digest][data.offset : data.offset + data.size]

    def walk(self, inode: int = ROOT_INODE, prefix: str = "") -> Snapshot:
        entries: dict[str, tuple[str, int, int, str]] = {}
        for name, child in self(self.tree.listdir, inode):
            path = f"{prefix}{name}"
            attrs = self(self.tree.getattr, child)
            if attrs.is_dir:
                entries[path] = ("dir", attrs.mode, 0, "")
                entries.update(self.walk(child, path + "/").entries)
            else:
                data = self.read(child)
                assert len(data) == attrs.size
                entries[path] = ("file", attrs.mode, attrs.size, hashlib.sha256(data).hexdigest())
        return Snapshot(entries)

    def path(self, path: str) -> int:
        inode = ROOT_INODE
        for part in path.split("/"):
            inode = self(self.tree.lookup, inode, part).inode
        return inode


def _stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def _tars(store: LocalStore, manifest: Manifest) -> dict[str, bytes]:
    tars = {}
    for slot in layer_slots(manifest, store.load_kitfile(manifest)):
        with open_decompressed(str(store.blob_path(slot.digest)), slot.compression) as stream:
            tars[slot.digest] = stream.read()
    return tars


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ModelKit per compression in a kit home, with its manifest, Kitfile and unpacked trees."""
    old_umask = os.umask(0o022)
    try:
        base = tmp_path_factory.mktemp("tree")
        home = base / "home"
        context = write_context(base / "context")
        store = LocalStore(Paths(home).storage)
        kits = {}
        for compression in ("none", "gzip", "zstd"):
            ref = f"tree/film:{compression}"
            kitfs(home, "pack", str(context), "-t", ref, "--compression", compression)
            _repo, desc = store.resolve(parse(ref))
            manifest = store.load_manifest(desc)
            kits[compression] = {
                "ref": ref,
                "manifest": manifest,
                "kitfile": store.load_kitfile(manifest),
                "tars": _tars(store, manifest),
            }
        unpacked = base / "unpacked"
        kitfs(home, "unpack", "tree/film:none", "-d", str(unpacked))
        sections = unpack_sections(home, "tree/film:none", base / "sections")
        return {"kits": kits, "unpacked": unpacked, "sections": sections}
    finally:
        os.umask(old_umask)


def _tree(kit: dict[str, Any], layout: str) -> tuple[MountTree, Feeder]:
    tree = MountTree.for_modelkit(kit["manifest"], kit["kitfile"], layout, MTIME, uid=1, gid=2)
    return tree, Feeder(tree, kit["tars"])


# -- whole trees ---------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_unpack_layout_equals_kitfs_unpack(packed: dict[str, Any], compression: str) -> None:
    _, feed = _tree(packed["kits"][compression], "unpack")
    assert feed.walk().entries == snapshot(packed["unpacked"]).entries


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_sections_layout_equals_filtered_unpacks(packed: dict[str, Any], compression: str) -> None:
    kit = packed["kits"][compression]
    _, feed = _tree(kit, "sections")
    shown = feed.walk().entries
    assert sorted(n for n in shown if "/" not in n) == [
        "Kitfile",
        "code",
        "datasets",
        "docs",
        "model",
    ]
    kitfile = (packed["unpacked"] / "Kitfile").read_bytes()
    assert shown["Kitfile"] == ("file", 0o644, len(kitfile), hashlib.sha256(kitfile).hexdigest())
    for section, unpacked in packed["sections"].items():
        inside = {
            name[len(section) + 1 :]: value
            for name, value in shown.items()
            if name.startswith(section + "/")
        }
        assert inside == snapshot(unpacked).entries, section


def test_model_section_holds_parts_under_the_model_path(packed: dict[str, Any]) -> None:
    _, feed = _tree(packed["kits"]["gzip"], "sections")
    names = set(feed.walk().entries)
    assert {
        "model/models/weights.bin",
        "model/models/config.json",
        "model/models/tokenizer/vocab.txt",
    } <= names
    assert not any(name.startswith("code/models") for name in names)


# -- laziness ----------------------------------------------------------------------------


def test_kitfile_and_sections_need_no_layer(packed: dict[str, Any]) -> None:
    tree, feed = _tree(packed["kits"]["gzip"], "sections")
    kitfile = feed.path("Kitfile")
    assert feed.read(kitfile) == (packed["unpacked"] / "Kitfile").read_bytes()
    for section in ("model", "datasets", "code", "docs"):
        assert feed(tree.getattr, feed.path(section)).is_dir
    assert feed.path("datasets/data") > 0
    assert feed.asked == []


def test_one_dataset_file_needs_only_its_layer(packed: dict[str, Any]) -> None:
    kit = packed["kits"]["zstd"]
    tree, feed = _tree(kit, "sections")
    train = next(
        s for s in layer_slots(kit["manifest"], kit["kitfile"]) if s.root == "data/train.csv"
    )
    assert feed.read(feed.path("datasets/data/train.csv")).startswith(b"x,y\n1,2\n")
    assert feed.asked == [train.digest]


def test_listing_a_directory_indexes_the_layers_it_shows(packed: dict[str, Any]) -> None:
    kit = packed["kits"]["none"]
    tree, feed = _tree(kit, "sections")
    with pytest.raises(NeedsLayers) as need:
        tree.listdir(feed.path("datasets/data"))
    assert {s.root for s in need.value.slots} == {"data/train.csv", "data/test.csv", "data/extra"}


def test_unpack_layout_root_needs_the_code_layer_at_dot(packed: dict[str, Any]) -> None:
    tree, _ = _tree(packed["kits"]["none"], "unpack")
    with pytest.raises(NeedsLayers) as need:
        tree.listdir(ROOT_INODE)
    assert "" in {s.root for s in need.value.slots}


# -- attributes ----------------------------------------------------------------------------


def test_directory_link_count_is_unknown_until_its_children_are_indexed(
    packed: dict[str, Any],
) -> None:
    tree, feed = _tree(packed["kits"]["none"], "sections")
    data = feed.path("datasets/data")
    early = tree.getattr(data)
    assert early.nlink == 1 and not early.settled
    feed(tree.listdir, data)
    late = tree.getattr(data)
    assert late.settled and late.nlink == 3  # ".", "..", extra/
    unpacked = os.stat(packed["sections"]["datasets"] / "data")
    assert late.nlink == unpacked.st_nlink


def test_attributes_carry_owner_time_and_kitfile_mode(packed: dict[str, Any]) -> None:
    tree, feed = _tree(packed["kits"]["gzip"], "sections")
    kitfile = tree.getattr(feed.path("Kitfile"))
    assert (kitfile.mode, kitfile.nlink, kitfile.mtime_ns) == (0o644, 1, MTIME)
    root = tree.getattr(ROOT_INODE)
    assert root.is_dir and root.nlink == 2 + 4 and root.settled
    assert (tree.uid, tree.gid) == (1, 2)
    script = tree.getattr(feed.path("code/src/train.py"))
    assert script.mode == 0o755 and script.mtime_ns == MTIME


def test_lookup_of_a_missing_name_is_enoent(packed: dict[str, Any]) -> None:
    tree, feed = _tree(packed["kits"]["none"], "sections")
    with pytest.raises(FileNotFoundError):
        feed(tree.lookup, ROOT_INODE, "nope")
    with pytest.raises(FileNotFoundError):
        feed(tree.lookup, feed.path("datasets"), "missing.csv")
    with pytest.raises(NotADirectoryError):
        feed(tree.listdir, feed.path("Kitfile"))
    with pytest.raises(IsADirectoryError):
        feed(tree.file_data, feed.path("model"))
    assert feed(tree.lookup, feed.path("model/models"), "..").inode == feed.path("model")


def test_inodes_are_stable_and_listing_order_is_sorted(packed: dict[str, Any]) -> None:
    tree, feed = _tree(packed["kits"]["none"], "unpack")
    first = feed(tree.listdir, ROOT_INODE)
    assert [n for n, _ in first] == sorted(n for n, _ in first)
    assert feed(tree.listdir, ROOT_INODE) == first
    assert feed.path("data/test.csv") == feed.path("data/test.csv")
    assert len({inode for _, inode in first}) == len(first)


# -- merging, with hand-made layers -----------------------------------------------------------


def _manifest(kinds_and_paths: list[tuple[str, str]]) -> tuple[Manifest, Kitfile]:
    layers = []
    model: dict[str, Any] = {}
    config: dict[str, Any] = {"manifestVersion": "1.0", "package": {"name": "t"}}
    for i, (kind, path) in enumerate(kinds_and_paths):
        digest = "sha256:" + hashlib.sha256(f"{i}".encode()).hexdigest()
        layers.append(Descriptor(f"application/vnd.kitops.modelkit.{kind}.v1.tar", digest, 10))
        if kind == "model":
            model.update(name="m", path=path)
            config["model"] = model
        elif kind == "modelpart":
            model.setdefault("parts", []).append({"path": path})
            config["model"] = model
        else:
            key = {"code": "code", "dataset": "datasets", "docs": "docs"}[kind]
            config.setdefault(key, []).append({"name": f"d{i}", "path": path})
    config_desc = Descriptor(
        "application/vnd.kitops.modelkit.config.v1+json", "sha256:" + "0" * 64, 2
    )
    return Manifest(config_desc, tuple(layers)), Kitfile.from_config_json(
        json.dumps(config).encode()
    )


def _entry(name: str, *, size: int = 0, mode: int = 0o644, offset: int = 512) -> TarEntry:
    return TarEntry(name, False, mode, size, offset)


def _dir(name: str, mode: int = 0o755) -> TarEntry:
    return TarEntry(name, True, mode, 0, 0)


def _loaded(
    layers: list[tuple[str, str, list[TarEntry]]], layout: str = "unpack"
) -> tuple[MountTree, list[LayerSlot]]:
    manifest, kitfile = _manifest([(kind, path) for kind, path, _ in layers])
    tree = MountTree.for_modelkit(manifest, kitfile, layout, MTIME)
    slots = layer_slots(manifest, kitfile)
    for slot, (_, _, entries) in zip(slots, layers, strict=True):
        tree.add_index(slot.digest, entries)
    return tree, slots


def _at(tree: MountTree, path: str) -> int:
    inode = ROOT_INODE
    for part in path.split("/"):
        inode = tree.lookup(inode, part).inode
    return inode


def test_first_layer_sets_a_shared_directory_and_later_files_replace_earlier() -> None:
    tree, slots = _loaded(
        [
            (
                "code",
                ".",
                [
                    _dir("lib", 0o700),
                    _entry("lib/a.py", size=5, offset=1024),
                    _entry("same.txt", size=1),
                ],
            ),
            (
                "dataset",
                "lib/data",
                [_dir("lib", 0o777), _dir("lib/data"), _entry("lib/data/x", size=2)],
            ),
            ("docs", "same.txt", [_entry("same.txt", size=9, offset=4096)]),
        ]
    )
    assert tree.getattr(_at(tree, "lib")).mode == 0o700
    assert [n for n, _ in tree.listdir(_at(tree, "lib"))] == ["a.py", "data"]
    same = tree.file_data(_at(tree, "same.txt"))
    assert (same.size, same.offset, same.slot) == (9, 4096, slots[2])


def test_a_file_never_replaces_a_directory() -> None:
    tree, _ = _loaded(
        [
            ("code", ".", [_dir("thing"), _entry("thing/inner")]),
            ("docs", ".", [_entry("thing", size=3)]),
        ]
    )
    assert tree.getattr(_at(tree, "thing")).is_dir


def test_entries_outside_a_layers_path_are_not_shown() -> None:
    tree, _ = _loaded(
        [("dataset", "data/a.csv", [_dir("data"), _entry("data/a.csv"), _entry("etc/passwd")])]
    )
    assert [n for n, _ in tree.listdir(ROOT_INODE)] == ["Kitfile", "data"]
    with pytest.raises(FileNotFoundError):
        tree.lookup(ROOT_INODE, "etc")


def test_directories_a_tar_implies_are_shown() -> None:
    tree, _ = _loaded([("code", "src", [_entry("src/deep/er/file.py", size=4)])])
    assert tree.getattr(_at(tree, "src/deep/er")).is_dir
    assert tree.file_data(_at(tree, "src/deep/er/file.py")).size == 4


def test_config_and_manifest_disagreeing_on_a_layer_is_refused() -> None:
    manifest, kitfile = _manifest([("dataset", "d.csv")])
    kitfile.data["datasets"][0]["digest"] = "sha256:" + "f" * 64
    with pytest.raises(TreeError, match="disagree on dataset layer 0"):
        MountTree.for_modelkit(manifest, kitfile, "sections", MTIME)


# -- repositories --------------------------------------------------------------------------


def test_repository_tree_lists_tags_and_resolves_a_tag_when_opened(packed: dict[str, Any]) -> None:
    tree = MountTree.for_repository("sections", MTIME)
    tree.set_tags(["v1", "v2"])
    assert tree.is_repository
    assert [n for n, _ in tree.listdir(ROOT_INODE)] == ["v1", "v2"]
    v1 = tree.lookup(ROOT_INODE, "v1")
    assert v1.is_dir and v1.volatile
    with pytest.raises(NeedsModelKit) as need:
        tree.listdir(v1.inode)
    assert need.value.tag == "v1"
    kit = packed["kits"]["gzip"]
    tree.add_modelkit("v1", kit["manifest"], kit["kitfile"], MTIME)
    assert [n for n, _ in tree.listdir(v1.inode)] == [
        "Kitfile",
        "code",
        "datasets",
        "docs",
        "model",
    ]
    assert tree.getattr(v1.inode).settled
    with pytest.raises(FileNotFoundError):
        tree.lookup(ROOT_INODE, "v3")


def test_repository_tree_asks_for_tags_first() -> None:
    tree = MountTree.for_repository("unpack", MTIME)
    with pytest.raises(NeedsTags):
        tree.listdir(ROOT_INODE)


def test_errno_values_of_tree_errors() -> None:
    tree = MountTree.for_repository("unpack", MTIME)
    with pytest.raises(FileNotFoundError) as missing:
        tree.getattr(999)
    assert missing.value.errno == errno.ENOENT
    assert stat.S_IMODE(tree.getattr(ROOT_INODE).mode) == 0o755
