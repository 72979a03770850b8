"""The inode tree a mount shows, built by pure functions from the manifest, Kitfile and layer indexes.

Two layouts: ``sections`` (``Kitfile`` plus ``model/``, ``datasets/``, ``code/``, ``docs/``, each a
merge of its layers' entries at the paths ``kit unpack`` writes) and ``unpack`` (one merge of every
layer plus ``Kitfile``, as ``kit unpack`` writes it). A repository mount adds one directory per tag.

The tree is lazy: the Kitfile paths tell, without any layer, which directories lead to which layer
(a layer for ``data/train.csv`` holds ``data/train.csv`` and what lies under it). When an answer needs
a layer's entries that are not known yet, a method raises :class:`NeedsLayers` (or
:class:`NeedsModelKit` / :class:`NeedsTags` for a repository mount); the caller fetches what is
named, hands it over with :meth:`MountTree.add_index` (or ``add_modelkit`` / ``set_tags``) and asks
again. Nothing here does I/O, so the tree is tested without FUSE.

Merging follows ``kit unpack`` into an empty directory (pkg/lib/unpack/core.go): layers apply in
manifest order, the first layer to create a directory sets its mode, a later file replaces an
earlier one (``-o``), and a file never replaces a directory or the other way round.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cachetools import LRUCache

from kitfs.errors import KitfsError
from kitfs.kitfile import Kitfile, is_modelkit_reference
from kitfs.layers.pairing import LayerPair, LayerPairingError, pair_layers
from kitfs.layers.tarindex import TarEntry
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest

log = logging.getLogger(__name__)

ROOT_INODE = 1  # pyfuse3.ROOT_INODE (FUSE_ROOT_ID)
DIR_MODE = 0o755
KITFILE_NAME = "Kitfile"
KITFILE_MODE = 0o644  # kit's unpackConfig writes the Kitfile with 0644
LAYOUTS = ("sections", "unpack")
SECTION_OF_KIND = {
    "model": "model",
    "modelpart": "model",
    "code": "code",
    "dataset": "datasets",
    "docs": "docs",
    "prompt": "prompts",
    "mcpserver": "mcpservers",  # MCP bundles, as `kitfs unpack --filter=mcpservers` writes them
}
# In the sections layout, a ModelKit with datasets kept outside it (``remotePath``) shows this
# file at its root, naming each one, rather than an empty or missing datasets/ directory.
REMOTE_NOTE_NAME = "REMOTE-DATASETS.txt"
ATTR_CACHE_SIZE = 100_000


class TreeError(KitfsError):
    """A ModelKit's manifest and Kitfile disagree in a way that makes its tree unknowable."""


@dataclass(frozen=True)
class LayerSlot:
    """A layer of a ModelKit as the tree sees it: where its entries go and how to verify it."""

    index: int  # position in the manifest's layers
    descriptor: Descriptor
    kind: str  # model, modelpart, code, dataset, docs
    compression: str  # none, gzip, zstd
    root: str  # the Kitfile path, cleaned ("" = the whole section)
    diff_id: str | None = None
    label: str = ""
    raw: bool = False  # the blob is the one file itself (kitfs.layers.raw), not a tar

    @property
    def digest(self) -> str:
        return self.descriptor.digest


@dataclass(frozen=True)
class Attributes:
    """What ``stat`` shows for an inode. ``settled`` is False while a directory's link count still
    depends on layers not indexed yet (it then reports 1, "unknown", as btrfs and many network file
    systems do); ``volatile`` marks what may change while mounted (a repository's tag list)."""

    inode: int
    is_dir: bool
    mode: int  # permission bits only
    size: int
    nlink: int
    mtime_ns: int
    settled: bool = True
    volatile: bool = False


@dataclass(frozen=True)
class FileData:
    """Where a regular file's bytes are: in memory (the Kitfile) or at an offset in a layer's tar."""

    size: int
    content: bytes | None = None
    slot: LayerSlot | None = None
    offset: int = 0
    name: str = ""  # the entry's name in the layer's tar


class NeedsLayers(Exception):
    """The answer depends on these layers' entries: index them, ``add_index`` each, ask again."""

    def __init__(self, slots: Sequence[LayerSlot]) -> None:
        super().__init__(", ".join(s.digest for s in slots))
        self.slots = tuple(slots)


class NeedsModelKit(Exception):
    """A repository mount's tag directory was opened: resolve the tag and ``add_modelkit`` it."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


class NeedsTags(Exception):
    """A repository mount's tag list is not known yet: ``set_tags`` it."""


def clean_path(path: str) -> str:
    """A Kitfile path as the tar entry names it: ``./a/b/`` -> ``a/b``; ``.`` -> ``""``."""
    if not path or path.startswith("/"):
        return ""
    cleaned = posixpath.normpath(path)
    if cleaned == "." or cleaned == ".." or cleaned.startswith("../"):
        return ""
    return cleaned


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it (everything lies within ``""``)."""
    return not root or path == root or path.startswith(root + "/")


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


# -- layers of a ModelKit ------------------------------------------------------------------------


def layer_slots(manifest: Manifest, kitfile: Kitfile) -> list[LayerSlot]:
    """Pair each layer with its Kitfile entry, by kind and in order, as ``kit unpack`` does
    (``kitfs.layers.pairing``); a layer kitfs does not read is left out, as ``kit unpack`` skips it.
    """
    try:
        pairing = pair_layers(manifest, kitfile)
    except LayerPairingError as exc:
        raise TreeError(
            f"the ModelKit's config and manifest disagree on {exc.kind} layer {exc.number}: "
            f"{exc.recorded} against {exc.actual}"
        ) from None
    for desc in pairing.skipped:
        log.warning("layer %s has media type %s: not shown", desc.digest, desc.media_type)
    return [_slot(pair) for pair in pairing.pairs]


def _slot(pair: LayerPair) -> LayerSlot:
    raw = pair.layer_type.raw
    return LayerSlot(
        index=pair.position,
        descriptor=pair.descriptor,
        kind=pair.kind,
        compression=pair.layer_type.compression,
        root=clean_path(_entry_path(pair.entry, pair.descriptor, raw)),
        diff_id=str(pair.entry.get("diffId") or "") or None,
        label=_label(pair.kind, pair.entry, pair.number),
        raw=raw,
    )


def remote_note(kitfile: Kitfile) -> bytes:
    """A few lines naming each dataset kept outside the ModelKit, or nothing."""
    lines = [
        f"dataset {d.get('name') or d.get('path', '')}: path {d.get('path') or '.'} is remote, "
        f"at {d['remotePath']}" + (f" (hash {d['remoteHash']})" if d.get("remoteHash") else "")
        for d in kitfile.remote_datasets()
    ]
    if not lines:
        return b""
    lines.append("kitfs does not fetch remote datasets; the ModelKit holds no layer for them.")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _entry_path(entry: Mapping[str, object], desc: Descriptor, raw: bool = False) -> str:
    """Where a layer's entries lie: the Kitfile path; a raw layer's file is at its annotation."""
    annotated = desc.annotations.get(media.MODELPACK_FILEPATH_ANNOTATION, "")
    path = str(entry.get("path") or "")
    if path and not is_modelkit_reference(path) and not (raw and annotated):
        return path
    return annotated


def _label(kind: str, entry: Mapping[str, object], number: int) -> str:
    name = entry.get("name") or entry.get("path") or f"#{number}"
    return f"{kind} {name}"


# -- one layer's entries, seen from its Kitfile path ---------------------------------------------


@dataclass
class _SlotIndex:
    """A layer's entries at and below its root: path -> entry, and directory -> child names."""

    entries: dict[str, TarEntry]
    children: dict[str, list[str]]


def _index_slot(slot: LayerSlot, entries: Iterable[TarEntry]) -> _SlotIndex:
    """Keep the entries within the slot's root; add directories the tar implies but does not hold
    (unpack creates them); drop the root's parents, which the tree shows from the Kitfile."""
    kept: dict[str, TarEntry] = {}
    outside = 0
    for entry in entries:
        if entry.name == ".":
            continue
        if _is_within(entry.name, slot.root):
            kept[entry.name] = entry
        elif not (entry.is_dir and _is_within(slot.root, entry.name)):
            outside += 1
    if outside:
        log.warning(
            "%s (layer %s) holds %d entries outside its path %r: they are not shown",
            slot.label,
            slot.digest,
            outside,
            slot.root or ".",
        )
    for name in list(kept):
        parent = _parent(name)
        while parent and _is_within(parent, slot.root) and parent not in kept:
            kept[parent] = TarEntry(parent, True, DIR_MODE, 0, 0, 0)
            parent = _parent(parent)
    children: dict[str, list[str]] = {}
    for name in kept:
        if name != slot.root:
            children.setdefault(_parent(name), []).append(name.rpartition("/")[2])
    return _SlotIndex(kept, children)


# -- views: merged namespaces --------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    """A path resolved within a view: a directory, or a file in a slot."""

    is_dir: bool
    mode: int
    size: int = 0
    mtime: int = 0
    slot: LayerSlot | None = None
    offset: int = 0
    name: str = ""


class _View:
    """One merged namespace: a section of the sections layout, or the whole unpack layout."""

    def __init__(self, slots: Sequence[LayerSlot]) -> None:
        self.slots = tuple(slots)
        self.skeleton: dict[str, set[str]] = {}
        self.ancestors: set[str] = {""}
        for slot in self.slots:
            parts = slot.root.split("/") if slot.root else []
            for depth, part in enumerate(parts):
                parent = "/".join(parts[:depth])
                self.ancestors.add(parent)
                self.skeleton.setdefault(parent, set()).add(part)

    def covering(self, path: str) -> list[LayerSlot]:
        """The slots whose entries may hold ``path``: those rooted at it or above it."""
        return [s for s in self.slots if _is_within(path, s.root)]

    def rooted_below(self, path: str) -> list[LayerSlot]:
        """The slots rooted at a direct child of ``path`` (listing shows their roots' types)."""
        return [s for s in self.slots if s.root and _parent(s.root) == path and s.root != path]


# -- the tree ------------------------------------------------------------------------------------


@dataclass
class _Kit:
    """One ModelKit in the tree: its Kitfile, its views and their timestamps."""

    key: str  # the tag for a repository mount, "" otherwise
    kitfile: bytes
    views: dict[str, _View]  # section name -> view; the unpack layout has one view, ""
    mtime_ns: int
    layout: str
    note: bytes = b""  # REMOTE_NOTE_NAME's content (sections layout), empty when none


@dataclass
class _Node:
    """An inode: what it stands for. Its attributes are computed from the views when asked."""

    inode: int
    parent: int
    name: str
    kind: str  # "kitroot", "kitfile", "note", "view", "repo", "tag"
    kit: _Kit | None = None
    view: str = ""
    path: str = ""
    tag: str = ""
    children: list[tuple[str, int]] | None = field(default=None, repr=False)


class MountTree:
    """All inodes of one mount: a single ModelKit, or a repository with one directory per tag."""

    def __init__(self, layout: str, mtime_ns: int, *, uid: int = 0, gid: int = 0) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}")
        self.layout = layout
        self.mtime_ns = mtime_ns
        self.uid = uid
        self.gid = gid
        self._nodes: dict[int, _Node] = {}
        self._keys: dict[tuple[str, ...], int] = {}
        self._indexes: dict[str, list[TarEntry]] = {}
        self._slot_indexes: dict[tuple[str, str], _SlotIndex] = {}
        self._attrs: LRUCache[int, Attributes] = LRUCache(maxsize=ATTR_CACHE_SIZE)
        self._kits: dict[str, _Kit] = {}
        self._tags: list[str] | None = None
        self._next_inode = ROOT_INODE
        self.is_repository = False
        self.total_size = 0

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def for_modelkit(
        cls,
        manifest: Manifest,
        kitfile: Kitfile,
        layout: str,
        mtime_ns: int,
        *,
        uid: int = 0,
        gid: int = 0,
    ) -> MountTree:
        """The tree of one ModelKit: its root is the mount's root."""
        tree = cls(layout, mtime_ns, uid=uid, gid=gid)
        kit = tree._make_kit("", manifest, kitfile, mtime_ns)
        tree._kits[""] = kit
        tree._new_node(("kitroot", ""), ROOT_INODE, "", "kitroot", kit=kit)
        return tree

    @classmethod
    def for_repository(cls, layout: str, mtime_ns: int, *, uid: int = 0, gid: int = 0) -> MountTree:
        """The tree of a repository: one directory per tag, each filled by ``add_modelkit``."""
        tree = cls(layout, mtime_ns, uid=uid, gid=gid)
        tree.is_repository = True
        tree._new_node(("repo",), ROOT_INODE, "", "repo")
        return tree

    def _make_kit(self, key: str, manifest: Manifest, kitfile: Kitfile, mtime_ns: int) -> _Kit:
        slots = layer_slots(manifest, kitfile)
        self.total_size += sum(layer.size for layer in manifest.layers)
        if self.layout == "unpack":
            views = {"": _View(slots)}
        else:
            grouped: dict[str, list[LayerSlot]] = {}
            for slot in slots:
                grouped.setdefault(SECTION_OF_KIND[slot.kind], []).append(slot)
            views = {name: _View(group) for name, group in grouped.items()}
        note = remote_note(kitfile)
        if note and self.layout == "unpack":
            log.warning("%s", note.decode().strip().replace("\n", "; "))
            note = b""
        return _Kit(key, kitfile.to_yaml().encode("utf-8"), views, mtime_ns, self.layout, note)

    def set_tags(self, tags: Iterable[str]) -> None:
        """The repository's current tags (a repository mount lists these)."""
        current = sorted(set(tags))
        if current == self._tags:
            return  # unchanged: keep the root's listing and attributes
        self._tags = current
        root = self._nodes[ROOT_INODE]
        root.children = None
        self._attrs.pop(ROOT_INODE, None)

    def add_modelkit(self, tag: str, manifest: Manifest, kitfile: Kitfile, mtime_ns: int) -> None:
        """Fill a tag directory of a repository mount (once: a mounted ModelKit never changes)."""
        if tag in self._kits:
            return
        self._kits[tag] = self._make_kit(tag, manifest, kitfile, mtime_ns)
        inode = self._keys.get(("tag", tag))
        if inode is not None:
            self._nodes[inode].kit = self._kits[tag]
            self._attrs.pop(inode, None)

    def add_index(self, digest: str, entries: Sequence[TarEntry]) -> None:
        """A layer's entries (from ``kitfs.layers.tarindex``), by the layer's digest."""
        if digest in self._indexes:
            return
        # Only settled attributes and complete listings are kept, so nothing known goes stale.
        self._indexes[digest] = list(entries)

    def has_modelkit(self, tag: str) -> bool:
        return tag in self._kits

    @property
    def has_tags(self) -> bool:
        return self._tags is not None

    # -- queries ---------------------------------------------------------------------------------

    def lookup(self, parent: int, name: str) -> Attributes:
        """The attributes of ``name`` in directory ``parent``; FileNotFoundError when absent."""
        node = self._node(parent)
        if name == ".":
            return self.getattr(parent)
        if name == "..":
            return self.getattr(node.parent)
        child = self._child(node, name)
        if child is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        return self.getattr(child)

    def getattr(self, inode: int) -> Attributes:
        cached = self._attrs.get(inode)
        if cached is not None:
            return cached
        attrs = self._compute_attrs(self._node(inode))
        if attrs.settled:
            self._attrs[inode] = attrs
        return attrs

    def listdir(self, inode: int) -> list[tuple[str, int]]:
        """A directory's entries as (name, inode), sorted by name: a stable order for offsets."""
        node = self._node(inode)
        if node.children is None:
            names = self._child_names(node)
            pairs = []
            for name in names:
                child = self._child(node, name)
                if child is not None:
                    pairs.append((name, child))
            node.children = pairs
        return node.children

    def parent_of(self, inode: int) -> int:
        return self._node(inode).parent

    def file_data(self, inode: int) -> FileData:
        """Where the bytes of a regular file are; IsADirectoryError for a directory."""
        node = self._node(inode)
        if node.kind == "kitfile":
            assert node.kit is not None
            return FileData(len(node.kit.kitfile), content=node.kit.kitfile)
        if node.kind == "note":
            assert node.kit is not None
            return FileData(len(node.kit.note), content=node.kit.note)
        if node.kind == "view":
            found = self._resolve(node)
            if found is not None and not found.is_dir:
                return FileData(found.size, slot=found.slot, offset=found.offset, name=found.name)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), node.name)

    @property
    def inode_count(self) -> int:
        return len(self._nodes)

    # -- nodes -----------------------------------------------------------------------------------

    def _node(self, inode: int) -> _Node:
        node = self._nodes.get(inode)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "stale inode", str(inode))
        return node

    def _new_node(
        self,
        key: tuple[str, ...],
        parent: int,
        name: str,
        kind: str,
        *,
        kit: _Kit | None = None,
        view: str = "",
        path: str = "",
        tag: str = "",
    ) -> int:
        """The inode for ``key``, allocated on first sight: inodes are stable while mounted."""
        inode = self._keys.get(key)
        if inode is not None:
            return inode
        if self._nodes:
            self._next_inode += 1
        inode = self._next_inode
        self._nodes[inode] = _Node(inode, parent, name, kind, kit, view, path, tag)
        self._keys[key] = inode
        return inode

    def _kit_of(self, node: _Node) -> _Kit:
        if node.kit is None:
            if node.kind == "tag":
                raise NeedsModelKit(node.tag)
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), node.name)
        return node.kit

    def _child(self, node: _Node, name: str) -> int | None:
        """The inode of ``name`` in ``node`` (allocated on first sight), None when absent."""
        if node.kind == "repo":
            return self._tag_child(node, name)
        if node.kind in ("kitfile", "note"):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), node.name)
        kit = self._kit_of(node)
        if node.kind in ("kitroot", "tag"):
            if name == KITFILE_NAME:
                return self._new_node(("kitfile", kit.key), node.inode, name, "kitfile", kit=kit)
            if name == REMOTE_NOTE_NAME and kit.note:
                return self._new_node(("note", kit.key), node.inode, name, "note", kit=kit)
            if kit.layout == "sections":
                if name not in kit.views:
                    return None
                return self._new_node(
                    ("view", kit.key, name, ""), node.inode, name, "view", kit=kit, view=name
                )
            return self._view_child(node, kit, "", "", name)
        return self._view_child(node, kit, node.view, node.path, name)

    def _tag_child(self, node: _Node, name: str) -> int | None:
        if self._tags is None:
            raise NeedsTags()
        if name not in self._tags and name not in self._kits:
            return None
        return self._new_node(
            ("tag", name), node.inode, name, "tag", kit=self._kits.get(name), tag=name
        )

    def _view_child(
        self, node: _Node, kit: _Kit, view_name: str, base: str, name: str
    ) -> int | None:
        if name in (".", "..") or "/" in name or not name:
            return None
        path = _join(base, name)
        found = self._resolve_path(kit.views[view_name], path)
        if found is None:
            return None
        return self._new_node(
            ("view", kit.key, view_name, path),
            node.inode,
            name,
            "view",
            kit=kit,
            view=view_name,
            path=path,
        )

    def _child_names(self, node: _Node) -> list[str]:
        if node.kind == "repo":
            if self._tags is None:
                raise NeedsTags()
            return sorted(set(self._tags) | set(self._kits))
        if node.kind in ("kitfile", "note"):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), node.name)
        kit = self._kit_of(node)
        if node.kind in ("kitroot", "tag"):
            if kit.layout == "sections":
                return sorted({KITFILE_NAME, *kit.views, *([REMOTE_NOTE_NAME] if kit.note else [])})
            return sorted({KITFILE_NAME, *self._listing_names(kit.views[""], "")})
        found = self._resolve(node)
        if found is None or not found.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), node.name)
        return sorted(self._listing_names(kit.views[node.view], node.path))

    def _listing_names(self, view: _View, path: str) -> set[str]:
        """A directory's names, asking at once for every layer its listing needs (so they are
        fetched together): those holding it and those rooted at its children."""
        self._require([*view.covering(path), *view.rooted_below(path)])
        return self._view_names(view, path)

    # -- merging -----------------------------------------------------------------------------------

    def _slot_index(self, slot: LayerSlot) -> _SlotIndex | None:
        key = (slot.digest, slot.root)
        index = self._slot_indexes.get(key)
        if index is None:
            entries = self._indexes.get(slot.digest)
            if entries is None:
                return None
            index = self._slot_indexes[key] = _index_slot(slot, entries)
        return index

    def _require(self, slots: Iterable[LayerSlot]) -> list[_SlotIndex]:
        """The indexes of ``slots``; NeedsLayers names those not known yet."""
        missing: dict[str, LayerSlot] = {}
        out = []
        for slot in slots:
            index = self._slot_index(slot)
            if index is None:
                missing.setdefault(slot.digest, slot)
            else:
                out.append(index)
        if missing:
            raise NeedsLayers(list(missing.values()))
        return out

    def _resolve(self, node: _Node) -> _Found | None:
        assert node.kit is not None
        return self._resolve_path(node.kit.views[node.view], node.path)

    def _resolve_path(self, view: _View, path: str) -> _Found | None:
        """What ``path`` is in a view: the merge of the covering layers' entries, else a directory
        the Kitfile paths imply, else nothing."""
        if not path:
            return _Found(
                True, DIR_MODE
            )  # a view's base: tars name no entry there ("." is skipped)
        covering = view.covering(path)
        found: _Found | None = None
        for slot, index in zip(covering, self._require(covering), strict=True):
            entry = index.entries.get(path)
            if entry is None:
                continue
            if found is None or (not found.is_dir and not entry.is_dir):
                found = _Found(
                    entry.is_dir,
                    entry.mode,
                    entry.size,
                    entry.mtime,
                    slot,
                    entry.offset,
                    entry.name,
                )
            elif found.is_dir != entry.is_dir:
                log.warning(
                    "%s holds %r as a %s, but an earlier layer has it as a %s: keeping the first",
                    slot.label,
                    path,
                    "directory" if entry.is_dir else "file",
                    "directory" if found.is_dir else "file",
                )
        if path in view.ancestors:
            if found is not None and not found.is_dir:
                log.warning("%r is a file in a layer but a directory in the Kitfile", path)
                found = None
            if found is None:
                return _Found(True, DIR_MODE)
        return found

    def _view_names(self, view: _View, path: str) -> set[str]:
        names = set(view.skeleton.get(path, ()))
        for index in self._require(view.covering(path)):
            names.update(index.children.get(path, ()))
        return names

    def _subdirs_known(self, view: _View, path: str) -> bool:
        """Whether every layer that decides the type of ``path``'s children is indexed."""
        return all(
            self._slot_index(s) is not None
            for s in (*view.covering(path), *view.rooted_below(path))
        )

    # -- attributes --------------------------------------------------------------------------------

    def _compute_attrs(self, node: _Node) -> Attributes:
        if node.kind == "repo":
            return self._dir_attrs(node, self.mtime_ns, DIR_MODE, settled=False, volatile=True)
        if node.kind == "tag" and node.kit is None:
            return self._dir_attrs(node, self.mtime_ns, DIR_MODE, settled=False, volatile=True)
        kit = self._kit_of(node)
        if node.kind == "kitfile":
            return Attributes(node.inode, False, KITFILE_MODE, len(kit.kitfile), 1, kit.mtime_ns)
        if node.kind == "note":
            return Attributes(node.inode, False, KITFILE_MODE, len(kit.note), 1, kit.mtime_ns)
        if node.kind in ("kitroot", "tag"):
            if kit.layout == "sections":
                return Attributes(node.inode, True, DIR_MODE, 0, 2 + len(kit.views), kit.mtime_ns)
            return self._view_dir_attrs(node, kit, _Found(True, DIR_MODE))
        found = self._resolve(node)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), node.name)
        if not found.is_dir:
            mtime = found.mtime * 1_000_000_000 if found.mtime > 0 else kit.mtime_ns
            return Attributes(node.inode, False, found.mode, found.size, 1, mtime)
        return self._view_dir_attrs(node, kit, found)

    def _view_dir_attrs(self, node: _Node, kit: _Kit, found: _Found) -> Attributes:
        view = kit.views[node.view]
        mtime = found.mtime * 1_000_000_000 if found.mtime > 0 else kit.mtime_ns
        if not self._subdirs_known(view, node.path):
            return self._dir_attrs(node, mtime, found.mode or DIR_MODE, settled=False)
        subdirs = 0
        for name in self._view_names(view, node.path):
            child = self._resolve_path(view, _join(node.path, name))
            if child is not None and child.is_dir:
                subdirs += 1
        return Attributes(node.inode, True, found.mode or DIR_MODE, 0, 2 + subdirs, mtime)

    def _dir_attrs(
        self, node: _Node, mtime_ns: int, mode: int, *, settled: bool, volatile: bool = False
    ) -> Attributes:
        return Attributes(
            node.inode, True, mode, 0, 1, mtime_ns, settled=settled, volatile=volatile
        )
