"""Reads of a layer held whole on this machine: its verified tar in the cache (pinned against
eviction while open), or an uncompressed blob verified where it lies (kit's local storage, an OCI
layout). The other layer reader is kitfs.fs.spanreader; kitfs.fs.layerstore picks one per layer and
both answer ``read``, ``check_entry`` and ``close``.

Reads of an uncompressed layer's tar in the cache (its blob, downloaded with ``O_DIRECT``) go
around the page cache too (``O_DIRECT``): the blocks a read covers land in one reused page-aligned
buffer per reader. A decompressed tar (written through the page cache moments before) and a blob in
place (just read through it to check its digest) are read through the page cache. On this kind of machine (a VM that hands free memory back to its host) page-cache
pages are costly to come by: reading a fresh 1 GiB tar through the page cache, just after writing
it through the page cache, cost the daemon 3-4.7 CPU-seconds, against 1.6-1.9 written and read
around it. A file system without ``O_DIRECT`` is read plainly."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os

import trio

from kitfs.directappend import ALIGN
from kitfs.fs.spanmemory import Scratch
from kitfs.storage.cache import PinnedTar

INLINE_READ = 1 << 20  # reads up to this size pread on the event loop (see ``read``)
BLOCKS = INLINE_READ + 2 * ALIGN  # the blocks an inline read can cover


class TarReader:
    """A verified tar (or uncompressed blob) open as ``fd``; ``pinned`` keeps a cached tar from
    eviction until closed; ``direct`` reads it around the page cache."""

    def __init__(self, fd: int, pinned: PinnedTar | None = None, *, direct: bool = False) -> None:
        self.fd = fd
        self._pinned = pinned
        self._scratch = Scratch()
        self._direct = -1
        if direct:
            with contextlib.suppress(OSError):  # no O_DIRECT here: plain preads, as without
                self._direct = os.open(
                    f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC
                )
        self._blocks: mmap.mmap | None = None

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """Bytes [offset, offset + size). A FUSE read (up to 1 MiB with the widened readahead) is
        read inline, on the event loop: a 1 MiB read from the disk takes 0.6 ms here, and moving
        1 MiB preads of span files to threads made the warm model load slower
        (docs/benchmarks.md); bigger ones go to a thread. An inline read is a view of the
        reader's buffer, valid until the caller next awaits (as SpanReader.read)."""
        ready = self.read_now(offset, size)
        if ready is not None:
            return ready
        return await trio.to_thread.run_sync(os.pread, self.fd, size, offset)

    def read_now(self, offset: int, size: int) -> bytes | memoryview | None:
        """An inline read (see ``read``); None for a large one."""
        if size > INLINE_READ:
            return None
        if self._direct >= 0:
            try:
                return self._read_direct(offset, size)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self._direct)  # the file system takes the open, not the reads
                self._direct = -1
        return self._scratch.pread(self.fd, size, offset)

    def _read_direct(self, offset: int, size: int) -> memoryview:
        """The blocks holding [offset, offset + size), read with O_DIRECT; a view of the bytes
        asked for (fewer at the end of the file), valid until the next read."""
        if self._blocks is None:
            self._blocks = mmap.mmap(-1, BLOCKS)
        start, end = offset - offset % ALIGN, offset + size
        count = os.preadv(
            self._direct, [memoryview(self._blocks)[: end - start + (-end % ALIGN)]], start
        )
        return memoryview(self._blocks)[
            offset - start : max(offset - start, min(count, end - start))
        ]

    async def check_entry(self, offset: int, name: str, size: int) -> None:
        """Nothing to check: the whole tar was verified and indexed by its own entries."""
        return None

    def close(self) -> None:
        if self._pinned is not None:
            self._pinned.close()
        else:
            os.close(self.fd)
        self.fd = -1
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1
