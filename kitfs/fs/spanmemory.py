"""Verified spans held in memory between arriving and being read, in reused page-aligned buffers.

A sequential reader of a span layer (a model loader) reads each span moments after read-ahead
fetched it. Writing the span through the page cache and reading it back from there cost more CPU
than everything else a span goes through on a small VM (fresh page-cache pages, the copy, the
writeback before ``fdatasync``; measured in docs/benchmarks.md). So a worker thread receives a span
into one of these buffers, verifies it, writes it to its cache file with ``O_DIRECT`` (the disk
reads the buffer; no page-cache copy), and the event loop then serves the reader's requests from
the same buffer. Memory is bounded by ``budget``: the oldest span (or one already read to its
end) leaves memory for a new one, and its buffer is reused rather than unmapped, because touching
fresh memory is what costs here. A span that left memory is read from its cache file as before;
the cached spans ahead of a sequential reader (a warm cache) are read into these buffers by a
worker thread, with ``O_DIRECT`` too (``read_span_file``), so that reader is answered from memory.

Buffers move between threads under one lock: ``take`` (any thread) hands out an idle buffer or a
new one, ``hold`` (event loop) makes a verified span readable, evicting what the budget cannot
keep back to the idle list. A buffer is only ever idle when no reader can see it: eviction happens
on the event loop between tasks, and views of a held span are only handed out for a reply the
event loop sends before it runs anything else (``SpanReader.read``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import mmap
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from kitfs.directappend import ALIGN, page_aligned

PAGE = mmap.PAGESIZE
DEFAULT_BUDGET = 192 << 20  # spans held in memory per mount (read-ahead runs up to 128 MiB ahead)
IDLE_RELEASE = 30.0  # seconds without a span taken or read: the memory goes back to the system

_owners = itertools.count(1)


def capacity(size: int) -> int:
    """The buffer size that holds ``size`` bytes: whole MiB above one (so that spans of nearly
    the same size share buffers), whole pages below."""
    unit = 1 << 20 if size > 1 << 20 else PAGE
    return max(unit, -(-size // unit) * unit)


class SpanMemory:
    """Page-aligned span buffers: idle ones for receiving, held ones for serving (module doc)."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = max(0, budget)
        self._lock = threading.Lock()
        self._idle: dict[int, list[mmap.mmap]] = {}
        self._idle_bytes = 0
        self._held: OrderedDict[tuple[int, int], tuple[mmap.mmap, int]] = OrderedDict()
        self._held_bytes = 0
        self.created = 0  # buffers mapped (for tests: reuse keeps this small)
        self.last_used = time.monotonic()  # the last take or view

    @staticmethod
    def owner() -> int:
        """A key for one reader's spans (never reused, unlike ``id``)."""
        return next(_owners)

    def take(self, size: int) -> mmap.mmap:
        """A page-aligned buffer of at least ``size`` bytes (any thread)."""
        want = capacity(size)
        self.last_used = time.monotonic()
        with self._lock:
            idle = self._idle.get(want)
            if idle:
                self._idle_bytes -= want
                return idle.pop()
            self.created += 1
        # Private anonymous memory: cheaper to fault in than the shared memory mmap's default.
        return mmap.mmap(-1, want, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def give(self, buffer: mmap.mmap) -> None:
        """Return a buffer nobody reads or writes any more (any thread); kept for reuse while
        idle buffers stay within the budget, else unmapped when its last view goes."""
        size = len(buffer)
        with self._lock:
            if self._idle_bytes + size <= max(self.budget, 64 << 20):
                self._idle.setdefault(size, []).append(buffer)
                self._idle_bytes += size

    def hold(self, owner: int, position: int, buffer: mmap.mmap, size: int) -> None:
        """Make a verified span's bytes (``buffer[:size]``) readable (event loop)."""
        key = (owner, position)
        old = self._held.pop(key, None)
        if old is not None:
            self._held_bytes -= len(old[0])
            self.give(old[0])
        if len(buffer) > self.budget:
            self.give(buffer)
            return
        self._held[key] = (buffer, size)
        self._held_bytes += len(buffer)
        while self._held_bytes > self.budget:
            _, (evicted, _) = self._held.popitem(last=False)
            self._held_bytes -= len(evicted)
            self.give(evicted)

    def holds(self, owner: int, position: int) -> bool:
        """Whether a span is held (a check: not a use, so it neither counts as one for
        ``release_if_idle`` nor moves the span in the eviction order)."""
        return (owner, position) in self._held

    def view(self, owner: int, position: int) -> memoryview | None:
        """The held bytes of a span, or None (event loop). The view is valid until the event loop
        next runs another task: reply with it (or copy it) before awaiting anything."""
        found = self._held.get((owner, position))
        if found is None:
            return None
        self.last_used = time.monotonic()
        self._held.move_to_end((owner, position))
        return memoryview(found[0])[: found[1]]

    def read_through(self, owner: int, position: int) -> None:
        """A reader got to the end of this span: it leaves memory, and its buffer receives the
        next span (event loop, between tasks: once no reply with a view of it is pending). The kernel's
        page cache of the mounted file answers a reader that comes back; a read that does not
        find the span here reads its cache file."""
        found = self._held.pop((owner, position), None)
        if found is not None:
            self._held_bytes -= len(found[0])
            self.give(found[0])

    def drop(self, owner: int) -> None:
        """Forget a reader's spans (its layer closed); their buffers become idle (event loop)."""
        for key in [key for key in self._held if key[0] == owner]:
            buffer, _ = self._held.pop(key)
            self._held_bytes -= len(buffer)
            self.give(buffer)

    def release_if_idle(self, idle: float = IDLE_RELEASE) -> int:
        """After ``idle`` seconds without a span taken or read (a model loaded, its server
        running), give the memory back: held spans leave memory (each has its cache file, which
        serves a later read) and idle buffers are unmapped. The bytes released (event loop)."""
        if time.monotonic() - self.last_used < idle:
            return 0
        for key in list(self._held):
            buffer, _ = self._held.pop(key)
            self._held_bytes -= len(buffer)
            self.give(buffer)
        with self._lock:
            idle_buffers = [b for buffers in self._idle.values() for b in buffers]
            self._idle.clear()
            released, self._idle_bytes = self._idle_bytes, 0
        for buffer in idle_buffers:
            with contextlib.suppress(BufferError):  # a view still out: unmapped when it goes
                buffer.close()
        return released

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def idle_bytes(self) -> int:
        return self._idle_bytes


class Scratch:
    """One reusable buffer for reads answered on the event loop. A view of it is valid until the
    loop runs another task (a FUSE reply is sent before that), so one per reader serves all its
    requests, and a 1 MiB read costs a copy from the page cache, not a fresh 1 MiB of memory."""

    SIZE = 1 << 20  # the largest FUSE read (libfuse 3.14's 256 pages)

    def __init__(self) -> None:
        self._buffer: bytearray | None = None

    def view(self, size: int) -> memoryview | None:
        """``size`` bytes of the buffer to fill (None when larger than it)."""
        if size > self.SIZE:
            return None
        if self._buffer is None:
            self._buffer = bytearray(self.SIZE)
        return memoryview(self._buffer)[:size]

    def pread(self, fd: int, size: int, offset: int) -> bytes | memoryview:
        view = self.view(size)
        if view is None:
            return os.pread(fd, size, offset)
        return view[: os.preadv(fd, [view], offset)]


def write_new_file(path: Path, data: memoryview | bytes) -> None:
    """Create ``path`` holding ``data``: with ``O_DIRECT`` for the page-aligned whole blocks when
    the file system takes it (the disk reads ``data`` in place: no page-cache pages, no copy),
    plain writes for the rest. ``data`` must start on a page boundary for the direct part (a
    :class:`SpanMemory` buffer does); anything else is written plainly."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    view = memoryview(data).cast("B")
    direct = len(view) >= ALIGN and page_aligned(view)
    try:
        fd = os.open(path, flags | (os.O_DIRECT if direct else 0), 0o600)
    except OSError as exc:
        if not direct or exc.errno != errno.EINVAL:
            raise
        direct = False  # a file system without O_DIRECT (tmpfs on older kernels)
        fd = os.open(path, flags, 0o600)
    try:
        done = 0
        if direct:
            aligned = len(view) - len(view) % ALIGN
            try:
                while done < aligned:
                    done += os.write(fd, view[done:aligned])
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        while done < len(view):
            done += os.write(fd, view[done:])
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    os.close(fd)


def read_span_file(memory: SpanMemory, path: Path | str, size: int) -> mmap.mmap:
    """A buffer from ``memory`` holding the ``size`` bytes of the file at ``path`` (a cached span),
    read with ``O_DIRECT`` where the file system takes it (the disk fills the buffer: no
    page-cache pages, no copy), else plainly. OSError when the file is not ``size`` bytes long.
    Blocking: a worker thread's job."""
    buffer = memory.take(size)
    try:
        _read_into(path, memoryview(buffer), size)
    except BaseException:
        memory.give(buffer)
        raise
    return buffer


def _read_into(path: Path | str, view: memoryview, size: int) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_DIRECT)
        direct = True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd, direct = os.open(path, flags), False
    try:
        # O_DIRECT reads whole blocks: ask for the size rounded up (the buffer has the room; the
        # file's end makes the last read short).
        want = min(len(view), -(-size // ALIGN) * ALIGN) if direct else size
        done = 0
        while done < want:
            try:
                count = os.preadv(fd, [view[done:want]], done)
            except OSError as exc:
                if not direct or exc.errno != errno.EINVAL:
                    raise
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                direct = False
                continue
            if not count:
                break
            done += count
        if done != size:
            raise OSError(errno.EIO, f"{path} is not {size} bytes long")
    finally:
        os.close(fd)
