"""A bounded pipe between two threads, so that one pass over a download does everything.

A blob download writes and hashes its bytes in a worker thread and also *feeds* them here, in order
from byte 0; another worker thread *reads* them as a file (decompressing, indexing, hashing the tar,
writing files). Nothing read from the pipe may be used before the download's digest checks out: the
consumer writes only to temp files that its caller commits after the check, exactly as a pass over
a verified file would.

Every way one side can stop is handled, so that neither thread waits forever: the feeder ``close``s
(end of stream), ``fail``s (the download failed: the reader raises that), or ``break_``s (the stream
restarted from byte 0, so what was read is not the blob any more: the reader raises
:class:`PipeBroken` and its caller falls back to a pass over the finished file); the reader
``abandon``s (it failed or finished: feeds are dropped from then on).
"""

from __future__ import annotations

import collections
import threading

from kitfs.layers.hashing import Readable

DEFAULT_LIMIT = 64 * 1024 * 1024


class PipeBroken(Exception):
    """The stream was restarted or cut off: what the pipe carried cannot stand for the blob."""


class BytePipe(Readable):
    """Bytes in order from one thread to another, holding at most ``limit`` bytes in between."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._head = 0  # offset into the first chunk already read
        self._held = 0
        self._closed = False
        self._error: BaseException | None = None
        self._abandoned = False
        self.position = 0  # bytes fed so far: the stream offset of the next feed
        self.broken_reason = ""

    # -- the feeding side (the download's writer thread) --------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes (blocks while the pipe is full, unless the reader has gone)."""
        if not data:
            return
        with self._cond:
            while self._held >= self._limit and not self._abandoned and not self._stopped():
                self._cond.wait()
            if self._abandoned or self._stopped():
                return
            self._chunks.append(bytes(data))
            self._held += len(data)
            self.position += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        """End of stream: the reader sees EOF after the bytes held."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The feeder failed: the reader raises ``error`` (at once, dropping what is held)."""
        with self._cond:
            if self._error is None and not self._closed:
                self._error = error
            self._cond.notify_all()

    def break_(self, reason: str) -> None:
        """The stream cannot continue in order: the reader raises :class:`PipeBroken`."""
        with self._cond:
            if not self.broken_reason:
                self.broken_reason = reason
            self._cond.notify_all()

    @property
    def usable(self) -> bool:
        """Whether feeding still makes sense (nothing broke, the reader is still reading)."""
        return not (self._abandoned or self._stopped())

    # -- the reading side (the scanning thread) -----------------------------------------------

    def abandon(self) -> None:
        """The reader is done (finished or failed): feeds are dropped and never block."""
        with self._cond:
            self._abandoned = True
            self._chunks.clear()
            self._held = 0
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all of the next chunk when ``size`` < 0); b"" at the end."""
        with self._cond:
            while not self._chunks and not self._closed and not self._stopped():
                self._cond.wait()
            if self.broken_reason:
                raise PipeBroken(self.broken_reason)
            if self._error is not None:
                raise self._error
            if not self._chunks:
                return b""
            first = self._chunks[0]
            left = len(first) - self._head
            if size < 0 or size >= left:
                data = first if self._head == 0 else first[self._head :]
                self._chunks.popleft()
                self._head = 0
            else:
                data = first[self._head : self._head + size]
                self._head += size
            self._held -= len(data)
            self._cond.notify_all()
            return data

    def _stopped(self) -> bool:
        return bool(self.broken_reason) or self._error is not None
