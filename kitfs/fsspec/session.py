"""One ModelKit opened for the Python API and the ``kit`` file system: the mount's parts without FUSE.

A session resolves the reference through the mount's source (kit's local storage, a registry, an
OCI layout; wrapped in the signature check when a policy asks for one), builds the mount's tree
(kitfs.fs.tree, pure) for the chosen layout, and reads through the mount's layer store: span
layers span by span, verified, other layers fetched and verified whole before a byte is served,
all of it in the mount's cache. Paths are the mount's paths, relative to its root. Everything
here runs on the trio loop (kitfs.fsspec.runner); the sync side is kitfs.fsspec.client.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from kitfs.errors import KitfsError, UsageError
from kitfs.fs.layerstore import LayerStore, index_into
from kitfs.fs.source import ResolvedModelKit, Source
from kitfs.fs.sourcechoice import open_source
from kitfs.fs.tree import ROOT_INODE, Attributes, LayerSlot, MountTree, NeedsLayers
from kitfs.fsspec.options import KitOptions
from kitfs.fsspec.records import Entry, Handle
from kitfs.kitfile import Kitfile
from kitfs.storage.cache import BlobCache

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_SETTLE_ROUNDS = 64


def _parts(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise FileNotFoundError(errno.ENOENT, "a ModelKit path cannot name '..'", path)
    return parts


class Session:
    """A resolved ModelKit, its tree and its layer store (see the module docstring)."""

    def __init__(
        self, source: Source, kit: ResolvedModelKit, tree: MountTree, store: LayerStore
    ) -> None:
        self.source = source
        self.kit = kit
        self.tree = tree
        self.store = store
        self.handles = 0

    @classmethod
    async def start(
        cls, reference: str, options: KitOptions, cache: BlobCache, nursery: trio.Nursery
    ) -> Session:
        """Resolve ``reference`` (manifest and config, no layer) and check its signatures."""
        source = open_source(reference, options.paths, cache, options.registry, options.refresh)
        if options.signatures is not None:
            from kitfs.fs.verified import VerifiedSource
            from kitfs.signing.enforce import Enforcer

            source = VerifiedSource(source, Enforcer(options.signatures))
        await source.__aenter__()
        try:
            if source.target is None:
                raise UsageError(f"{reference} names a repository: name a tag or digest")
            kit = await source.resolve(source.target)
            for warning in getattr(source, "warnings", ()):
                log.warning("%s", warning)
            tree = MountTree.for_modelkit(
                kit.manifest,
                kit.kitfile,
                options.layout,
                kit.created_ns or time.time_ns(),
                uid=os.getuid(),
                gid=os.getgid(),
            )
        except BaseException:
            await source.aclose()
            raise
        store = LayerStore(source, cache, concurrency=options.registry.concurrency)
        store.attach(nursery)
        return cls(source, kit, tree, store)

    @property
    def digest(self) -> str:
        return self.kit.digest

    @property
    def kitfile(self) -> Kitfile:
        return self.kit.kitfile

    # -- the tree ------------------------------------------------------------------------------

    async def _settle(self, query: Callable[..., T], *args: Any) -> T:
        """Run a tree query, indexing the layers it names, until it answers (as the mount does)."""
        for _round in range(MAX_SETTLE_ROUNDS):
            try:
                return query(*args)
            except NeedsLayers as need:
                await self._index(need.slots)
        raise KitfsError(f"the tree of {self.kit.name} kept asking for more layers")

    async def _index(self, slots: Sequence[LayerSlot]) -> None:
        await index_into(self.store, self.tree, slots)

    async def _inode(self, path: str) -> tuple[int, Attributes]:
        inode, attrs = ROOT_INODE, await self._settle(self.tree.getattr, ROOT_INODE)
        for name in _parts(path):
            if not attrs.is_dir:
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            attrs = await self._settle(self.tree.lookup, inode, name)
            inode = attrs.inode
        return inode, attrs

    async def stat(self, path: str) -> Entry:
        """The entry at ``path``; FileNotFoundError when the ModelKit has none."""
        _inode, attrs = await self._inode(path)
        return _entry("/".join(_parts(path)), attrs)

    async def listdir(self, path: str) -> list[Entry]:
        """A directory's entries, sorted by name; NotADirectoryError for a file."""
        inode, attrs = await self._inode(path)
        base = "/".join(_parts(path))
        if not attrs.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        children = await self._settle(self.tree.listdir, inode)
        out = []
        for name, child in children:
            attrs = await self._settle(self.tree.getattr, child)
            out.append(_entry(f"{base}/{name}" if base else name, attrs))
        return out

    # -- files ---------------------------------------------------------------------------------

    async def open(self, path: str) -> Handle:
        """Open a regular file for reading: its layer is held open (fetched and verified whole
        first when it has no pinned span index) until :meth:`release`."""
        inode, attrs = await self._inode(path)
        if attrs.is_dir:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        data = await self._settle(self.tree.file_data, inode)
        if data.content is not None:
            return Handle(path, data.size, content=data.content)
        assert data.slot is not None
        layer = await self.store.open(data.slot)
        try:
            await self.store.check_entry(layer, data.offset, data.name, data.size)
        except BaseException:
            self.store.release(layer)
            raise
        self.handles += 1
        return Handle(path, data.size, layer=layer, offset=data.offset)

    async def read(self, handle: Handle, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` of an open file (fewer at its end), verified."""
        if offset >= handle.size or size <= 0:
            return b""
        size = min(size, handle.size - offset)
        if handle.content is not None:
            return handle.content[offset : offset + size]
        if handle.layer is None:
            raise ValueError(f"{handle.path} is closed")
        return bytes(await self.store.read(handle.layer, handle.offset + offset, size))

    def release(self, handle: Handle) -> None:
        """Close an open file (idempotent); the layer closes with its last file."""
        layer, handle.layer = handle.layer, None
        if layer is not None:
            self.handles -= 1
            self.store.release(layer)

    async def aclose(self) -> None:
        self.store.close()
        await self.source.aclose()


def _entry(path: str, attrs: Attributes) -> Entry:
    return Entry(path, attrs.is_dir, attrs.size, attrs.mode, attrs.mtime_ns)
