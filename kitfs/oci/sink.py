"""The receiving end of a body's bytes: a :class:`Sink` owns the buffers they land in and does
its work (hash, decompress, write) as they fill, in a worker thread (kitfs.oci.handoff hands a
registry's answer to one; kitfs.fs.source reads a local file into one).

A sink is called by one thread at a time, with the bytes of one body in order, never a byte twice.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import Protocol


class Sink(Protocol):
    """Where a body's bytes go, in order (see the module docstring)."""

    def buffer(self) -> memoryview:
        """A writable, non-empty view for the next bytes."""
        ...

    def filled(self, count: int) -> None:
        """The first ``count`` bytes of the last buffer hold the next bytes of the body."""
        ...


class BufferSink:
    """Collects up to ``size`` bytes in one preallocated buffer (for small or whole ranges):
    a new one, or ``reuse`` (at least ``size`` bytes; a buffer used before costs no page faults)."""

    def __init__(self, size: int, reuse: bytearray | mmap.mmap | None = None) -> None:
        self._data: bytearray | mmap.mmap = (
            reuse if reuse is not None and len(reuse) >= size else bytearray(size)
        )
        self._size = size
        self.count = 0

    def buffer(self) -> memoryview:
        view = memoryview(self._data)[self.count : self._size]
        return view if len(view) else memoryview(bytearray(1 << 16))  # excess: dropped

    def filled(self, count: int) -> None:
        self.count = min(self._size, self.count + count)

    @property
    def data(self) -> bytes | bytearray | memoryview:
        """What arrived (the buffer itself, or a view of it, when it is full: no copy)."""
        if isinstance(self._data, bytearray) and self.count == len(self._data):
            return self._data
        if self.count == self._size:
            return memoryview(self._data)[: self._size]
        return self._data[: self.count]

    @property
    def storage(self) -> bytearray | mmap.mmap:
        """The buffer, to reuse once its bytes have been used."""
        return self._data


class Counted:
    """A sink that passes at most ``limit`` bytes on to ``inner`` and counts them, so a request
    that drops can be resumed after the last byte the sink took."""

    def __init__(self, inner: Sink, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.count = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.count

    def buffer(self) -> memoryview:
        view = self.inner.buffer()
        return view[: self.remaining] if len(view) > self.remaining else view

    def filled(self, count: int) -> None:
        self.count += count
        self.inner.filled(count)


def feed(sink: Sink, data: bytes | memoryview) -> None:
    """Copy ``data`` into the sink's buffers (for bytes that did not come through a socket)."""
    view = memoryview(data)
    while len(view):
        target = sink.buffer()
        count = min(len(target), len(view))
        target[:count] = view[:count]
        sink.filled(count)
        view = view[count:]


def feed_all(sink: Sink, pieces: Sequence[bytes | memoryview]) -> None:
    for piece in pieces:
        feed(sink, piece)
