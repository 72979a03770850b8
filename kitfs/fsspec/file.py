"""File objects of the ``kit`` file system: random access with read-ahead for sequential readers,
safe to share between threads.

A read that continues where the previous one ended fetches more than it was asked for, doubling
from READAHEAD_MIN up to READAHEAD_MAX, and keeps the rest for the next read (the layer store's
span reader reads further ahead in the background on its own). A read elsewhere (Parquet's footer,
a column chunk) fetches exactly its bytes, so it costs only the spans that cover them. One lock per
file object makes each ``read``/``seek`` atomic: threads sharing one object never see each other's
half-updated position or buffer.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fsspec.caching import BaseCache
from fsspec.spec import AbstractBufferedFile

if TYPE_CHECKING:
    from kitfs.fsspec.client import Client
    from kitfs.fsspec.records import Handle
    from kitfs.fsspec.session import Session

READAHEAD_MIN = 256 << 10
READAHEAD_MAX = 8 << 20


class SequentialReadAhead(BaseCache):
    """Exact fetches for random reads; growing read-ahead once reads follow each other."""

    name = "kitfs-sequential"

    def __init__(self, blocksize: int, fetcher: Any, size: int) -> None:
        super().__init__(blocksize, fetcher, size)
        self.buffer = b""
        self.start = 0  # file offset of buffer[0]
        self.next = -1  # where a read continuing the last one starts
        self.window = READAHEAD_MIN

    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else start
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        end_of_buffer = self.start + len(self.buffer)
        if self.start <= start and stop <= end_of_buffer:
            self.hit_count += 1
            out = self.buffer[start - self.start : stop - self.start]
        elif start == self.next or (self.start <= start < end_of_buffer):
            out = self._ahead(start, stop, end_of_buffer)
        else:
            self.miss_count += 1
            self.window = READAHEAD_MIN
            out = self.fetcher(start, stop)
            self.total_requested_bytes += stop - start
        self.next = start + len(out)
        return out

    def _ahead(self, start: int, stop: int, end_of_buffer: int) -> bytes:
        """A sequential read: keep what the buffer holds of it, fetch the rest plus a window."""
        self.miss_count += 1
        kept = self.buffer[start - self.start :] if self.start <= start < end_of_buffer else b""
        fetch_from = start + len(kept)
        fetch_to = min(self.size, max(stop, fetch_from + self.window))
        fresh = self.fetcher(fetch_from, fetch_to)
        self.total_requested_bytes += fetch_to - fetch_from
        self.window = min(self.window * 2, READAHEAD_MAX)
        self.buffer, self.start = kept + fresh, start
        return self.buffer[: stop - start]


class KitFile(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only file of a ModelKit (what ``fs.open`` returns); close it to release its layer."""

    def __init__(
        self,
        fs: Any,
        path: str,
        client: Client,
        session: Session,
        handle: Handle,
        **kwargs: Any,
    ) -> None:
        self._client = client
        self._session = session
        self._handle = handle
        self._io_lock = threading.RLock()
        super().__init__(fs, path, mode="rb", size=handle.size, cache_type="none", **kwargs)
        self.cache = SequentialReadAhead(self.blocksize, self._fetch_range, self.size)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._client.read(self._session, self._handle, start, end - start)

    def read(self, length: int = -1) -> bytes:
        with self._io_lock:
            return bytes(super().read(length))

    def seek(self, loc: int, whence: int = 0) -> int:
        with self._io_lock:
            return int(super().seek(loc, whence))

    def tell(self) -> int:
        with self._io_lock:
            return int(self.loc)

    def readinto(self, b: Any) -> int:
        with self._io_lock:
            return int(super().readinto(b))

    def readline(self) -> bytes:  # type: ignore[override]
        with self._io_lock:
            return bytes(super().readline())

    def close(self) -> None:
        with self._io_lock:
            if not self.closed:
                self._client.release(self._session, self._handle)
            super().close()
