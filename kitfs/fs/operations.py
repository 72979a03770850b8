"""The pyfuse3 request handlers: a thin layer between the kernel and the tree and layer store.

Each handler asks the tree (pure) for an answer; when the tree needs a layer's index, a tag's
ModelKit or the tag list, it says so with an exception and :meth:`KitfsOperations._settle` fetches
that and asks again. Exceptions become errno values in one place (:func:`_fuse_errors`): pyfuse3
lets only ``FUSEError`` out of a handler, anything else would end the mount's main loop.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pyfuse3
import trio

from kitfs.errors import KitfsError, NotFoundError
from kitfs.fs.layerstore import LayerStore, OpenLayer, index_into
from kitfs.fs.requestbound import DEFAULT_REQUEST_TIMEOUT, RequestBounds
from kitfs.fs.source import TAG_TTL, Source
from kitfs.fs.tree import (
    ROOT_INODE,
    Attributes,
    LayerSlot,
    MountTree,
    NeedsLayers,
    NeedsModelKit,
    NeedsTags,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

FOREVER = 24 * 3600.0  # a mounted ModelKit never changes: the kernel may cache it for a day
BLOCK_SIZE = 128 * 1024
STATFS_BLOCK = 4096
MAX_SETTLE_ROUNDS = 64


def _fuse_errors(method: F) -> F:
    """Map what a handler raises to an errno: OSError keeps its own, a missing ModelKit or blob is
    ENOENT, every other failure is EIO (logged; layer failures are logged by the layer store).
    Each request is bounded in time (kitfs.fs.requestbound): ETIMEDOUT when it runs out."""

    @functools.wraps(method)
    async def wrapper(self: KitfsOperations, *args: Any) -> Any:
        try:
            with self.bounds.bound(method.__name__, args[:2]):
                return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except NotFoundError as exc:
            log.info("%s: %s", method.__name__, exc)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except KitfsError as exc:
            log.debug("%s: %s", method.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("internal error in %s%r", method.__name__, args)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


async def _read_only(*_args: Any, **_kwargs: Any) -> Any:
    raise pyfuse3.FUSEError(errno.EROFS)


@dataclass
class _OpenFile:
    """An open regular file: in-memory bytes, or a span of an open layer tar."""

    size: int
    content: bytes | None = None
    layer: OpenLayer | None = None
    offset: int = 0


class KitfsOperations(pyfuse3.Operations):
    """The file system of one mount."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(
        self,
        tree: MountTree,
        layers: LayerStore,
        source: Source,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        super().__init__()
        self.tree = tree
        self.layers = layers
        self.source = source
        self.bounds = RequestBounds(request_timeout)
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, list[tuple[bytes, pyfuse3.EntryAttributes]]] = {}
        self._next_fh = 0
        self._tag_locks: dict[str, trio.Lock] = {}
        self._tags_listed_at: float | None = None

    # -- feeding the tree ----------------------------------------------------------------------

    async def _settle(self, query: Callable[..., T], *args: Any) -> T:
        """Run a tree query, fetching what it says it needs, until it answers."""
        for _round in range(MAX_SETTLE_ROUNDS):
            try:
                return query(*args)
            except NeedsLayers as need:
                await self._index(need.slots)
            except NeedsModelKit as need:
                await self._resolve_tag(need.tag)
            except NeedsTags:
                await self._refresh_tags()
        raise KitfsError(f"the tree kept asking for more data ({query.__name__})")

    async def _index(self, slots: Sequence[LayerSlot]) -> None:
        await index_into(self.layers, self.tree, slots)

    async def _resolve_tag(self, tag: str) -> None:
        async with self._tag_locks.setdefault(tag, trio.Lock()):
            if self.tree.has_modelkit(tag):
                return
            kit = await self.source.resolve(tag)
            log.info("resolved %s to %s", kit.name, kit.digest)
            self.tree.add_modelkit(
                tag, kit.manifest, kit.kitfile, kit.created_ns or self.tree.mtime_ns
            )

    async def _refresh_tags(self) -> None:
        """The repository's tags, asked of the source at most every TAG_TTL seconds (each source:
        registry, local storage or OCI layout); a failure to list them again keeps the last list
        rather than emptying the mount's root."""
        now = trio.current_time()
        if self._tags_listed_at is not None and now - self._tags_listed_at < TAG_TTL:
            return
        try:
            tags = await self.source.list_tags()
        except KitfsError as exc:
            if not self.tree.has_tags:
                raise
            log.warning("cannot list the tags of %s again: %s", self.source.description, exc)
            return
        self._tags_listed_at = now
        self.tree.set_tags(tags)

    # -- attributes ----------------------------------------------------------------------------

    def _entry(self, attrs: Attributes, parent: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attrs.inode
        entry.generation = 0
        entry.st_mode = (stat.S_IFDIR if attrs.is_dir else stat.S_IFREG) | attrs.mode
        entry.st_nlink = attrs.nlink
        entry.st_uid = self.tree.uid
        entry.st_gid = self.tree.gid
        entry.st_rdev = 0
        entry.st_size = attrs.size
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = (attrs.size + 511) // 512
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = attrs.mtime_ns
        if attrs.volatile:
            entry.attr_timeout = TAG_TTL
        else:
            entry.attr_timeout = FOREVER if attrs.settled else 0
        entry.entry_timeout = self._entry_timeout(parent)
        return entry

    def _entry_timeout(self, parent: int) -> float:
        """Names in a repository mount's root come and go with the tags; all else is fixed."""
        return TAG_TTL if self.tree.is_repository and parent == ROOT_INODE else FOREVER

    # -- lookups -------------------------------------------------------------------------------

    @_fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(name)
        if self.tree.is_repository and parent_inode == ROOT_INODE:
            await self._refresh_tags()
        try:
            attrs = await self._settle(self.tree.lookup, parent_inode, text)
        except FileNotFoundError:
            missing = pyfuse3.EntryAttributes()
            missing.st_ino = 0  # a negative entry the kernel may cache
            missing.entry_timeout = self._entry_timeout(parent_inode)
            return missing
        return self._entry(attrs, parent_inode)

    @_fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        attrs = await self._settle(self.tree.getattr, inode)
        return self._entry(attrs, self.tree.parent_of(inode))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Inodes live as long as the mount (the tree is small and fixed): nothing to drop."""

    # -- directories ---------------------------------------------------------------------------

    def _new_fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

    @_fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if self.tree.is_repository and inode == ROOT_INODE:
            await self._refresh_tags()
        listing = await self._settle(self._listing, inode)
        fh = self._new_fh()
        self._dirs[fh] = listing
        return fh

    def _listing(self, inode: int) -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
        """A directory's entries with their attributes, fixed when it is opened, so that the
        offsets ``readdir`` hands out (positions in this list) stay valid however long it is."""
        children = self.tree.listdir(inode)
        parent = self.tree.parent_of(inode)
        dots = [(b".", inode), (b"..", parent)]
        return [
            (name, self._entry(self.tree.getattr(child), inode))
            for name, child in dots + [(os.fsencode(n), c) for n, c in children]
        ]

    @_fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dirs.get(fh)
        if listing is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        for position in range(start_id, len(listing)):
            name, entry = listing[position]
            if not pyfuse3.readdir_reply(token, name, entry, position + 1):
                break

    @_fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # -- files ---------------------------------------------------------------------------------

    @_fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        data = await self._settle(self.tree.file_data, inode)
        if data.content is not None:
            handle = _OpenFile(data.size, content=data.content)
        else:
            assert data.slot is not None
            layer = await self.layers.open(data.slot)
            try:
                await self.layers.check_entry(layer, data.offset, data.name, data.size)
            except BaseException:
                self.layers.release(layer)
                raise
            handle = _OpenFile(data.size, layer=layer, offset=data.offset)
        fh = self._new_fh()
        self._files[fh] = handle
        # Bytes are served only from a verified layer, and never change: keep the page cache.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        """A read whose bytes are ready (verified, in memory or in a cache file) is answered at
        once: nothing to wait for, so no time bound, no error mapping beyond falling back to the
        bounded path, which also answers everything else (a sequential loader's reads are
        nearly all ready: read-ahead fetched them)."""
        handle = self._files.get(fh)
        if handle is not None and handle.layer is not None and 0 <= off < handle.size:
            try:
                ready = self.layers.read_now(
                    handle.layer, handle.offset + off, min(size, handle.size - off)
                )
            except Exception:  # e.g. a span evicted meanwhile: the bounded path fetches it
                ready = None
            if ready is not None:
                return cast(bytes, ready)  # see _read_bounded
        return await self._read_bounded(fh, off, size)

    @_fuse_errors
    async def _read_bounded(self, fh: int, off: int, size: int) -> bytes:
        handle = self._files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if off >= handle.size or size <= 0:
            return b""
        size = min(size, handle.size - off)
        if handle.content is not None:
            return handle.content[off : off + size]
        assert handle.layer is not None
        data = await self.layers.read(handle.layer, handle.offset + off, size)
        # A memoryview of a span in memory goes to pyfuse3 as it is (it takes any buffer and
        # replies before the event loop runs anything else): no copy on the loop.
        return cast(bytes, data)

    @_fuse_errors
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None and handle.layer is not None:
            self.layers.release(handle.layer)

    async def flush(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    # -- the file system -----------------------------------------------------------------------

    @_fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = BLOCK_SIZE
        data.f_frsize = STATFS_BLOCK
        data.f_blocks = (self.tree.total_size + STATFS_BLOCK - 1) // STATFS_BLOCK
        data.f_bfree = data.f_bavail = 0
        data.f_files = self.tree.inode_count
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    # Extended attributes: answering ENOSYS (rather than "no such attribute") makes the kernel
    # remember that this file system has none, so `ls -l` stops asking twice per file.
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    # Everything that would change the tree: a read-only file system.
    setattr = _read_only
    mknod = _read_only
    mkdir = _read_only
    unlink = _read_only
    rmdir = _read_only
    symlink = _read_only
    rename = _read_only
    link = _read_only
    write = _read_only
    create = _read_only
    setxattr = _read_only
    removexattr = _read_only

    def close(self) -> None:
        """Drop every open layer (the mount is gone)."""
        for handle in self._files.values():
            if handle.layer is not None:
                self.layers.release(handle.layer)
        self._files.clear()
        self._dirs.clear()
        self.layers.close()
