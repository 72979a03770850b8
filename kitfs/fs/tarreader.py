"""Reads of a layer held whole on this machine: its verified tar in the cache (pinned against
eviction while open), or an uncompressed blob verified where it lies (kit's local storage, an OCI
layout). The other layer reader is kitfs.fs.spanreader; kitfs.fs.layerstore picks one per layer and
both answer ``read``, ``check_entry`` and ``close``."""

from __future__ import annotations

import os

import trio

from kitfs.fs.spanmemory import Scratch
from kitfs.storage.cache import PinnedTar

INLINE_READ = 1 << 20  # reads up to this size pread on the event loop (see ``read``)


class TarReader:
    """A verified tar (or uncompressed blob) open as ``fd``; ``pinned`` keeps a cached tar from
    eviction until closed."""

    def __init__(self, fd: int, pinned: PinnedTar | None = None) -> None:
        self.fd = fd
        self._pinned = pinned
        self._scratch = Scratch()

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """Bytes [offset, offset + size). A FUSE read (up to 1 MiB with the widened readahead) is
        mostly served by the page cache and is several times faster inline than through a worker
        thread (measured: moving 1 MiB preads of span files to threads made the warm model load
        slower, docs/benchmarks.md); bigger ones go to a thread. An inline read is a view of the
        reader's scratch buffer, valid until the caller next awaits (as SpanReader.read)."""
        ready = self.read_now(offset, size)
        if ready is not None:
            return ready
        return await trio.to_thread.run_sync(os.pread, self.fd, size, offset)

    def read_now(self, offset: int, size: int) -> bytes | memoryview | None:
        """An inline read (see ``read``); None for a large one."""
        if size <= INLINE_READ:
            return self._scratch.pread(self.fd, size, offset)
        return None

    async def check_entry(self, offset: int, name: str, size: int) -> None:
        """Nothing to check: the whole tar was verified and indexed by its own entries."""
        return None

    def close(self) -> None:
        if self._pinned is not None:
            self._pinned.close()
        else:
            os.close(self.fd)
        self.fd = -1
