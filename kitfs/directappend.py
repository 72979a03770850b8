"""Appending a large file with ``O_DIRECT``, from two reused page-aligned buffers.

Every blob download writes a whole file (a pull into local storage, a mount's whole layer in the
cache). Written through the page cache, every byte is copied into newly allocated page-cache pages
and written back later; on this kind of machine (a VM whose free memory is handed back to its host)
allocating those pages costs 0.2-2.4 CPU-seconds per GiB (the copy into them took 44% of a
mount's CPU while it fetched a whole layer), and a pull's final fsync waits for all of the
writeback (kit v1.7.0's pull does not sync). What reads such a file later reads around the page
cache too (kitfs.fs.tarreader) or from its start, cold, as any file. With
``O_DIRECT`` the disk reads the bytes from our buffer: one copy into a buffer that stays mapped,
no page-cache pages, and the data is on its way to the disk as it arrives.

Bytes are gathered in one buffer while the other is being written by a helper thread, so hashing
(the caller's thread) and writing overlap. A page-aligned buffer the caller hands over (a pull's
part, received into an mmap) is written from where it is, with no copy, while the caller hashes
it; :meth:`DirectAppender.push` returns once the buffer is free again. Whole blocks go out with ``O_DIRECT``; the tail that
does not fill a block is written through the plain descriptor at :meth:`DirectAppender.flush`. A
file system that refuses ``O_DIRECT`` (EINVAL) gets plain writes of the same buffers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ALIGN = 4096  # O_DIRECT offsets and lengths: a multiple of any logical block size here
BUFFER = 8 << 20  # bytes gathered before a write (two such buffers per appender)


def page_aligned(view: memoryview) -> bool:
    """Whether a writable buffer starts on a page (an O_DIRECT transfer's memory must)."""
    if view.readonly:
        return False  # bytes: not ours to align, and never page-aligned by promise
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % mmap.PAGESIZE == 0


def aligned_down(position: int) -> int:
    return position - position % ALIGN


class DirectAppender:
    """Writes what :meth:`write` is given at ``position`` onwards in the file at ``path`` (open
    as ``fd`` for plain writes), in order; :meth:`flush` makes everything given so far reach the
    file. From a ``position`` inside a block (a resumed partial file), the bytes up to the next
    block boundary are written plainly first. One thread calls it; :meth:`close` ends it."""

    def __init__(self, path: Path, fd: int, position: int) -> None:
        self._fd = fd
        self._direct = -1
        with contextlib.suppress(OSError):  # no O_DIRECT here: plain writes of the same buffers
            self._direct = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        self._buffers: list[mmap.mmap] = []  # two, made when bytes must be gathered
        self._current = 0
        self._fill = 0
        self._position = position  # where the current buffer's first byte goes
        self._pending: Future[None] | None = None
        self._lent = False  # the write in flight is from the caller's buffer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kitfs-append")

    @property
    def direct(self) -> bool:
        return self._direct >= 0

    def write(self, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
        view = memoryview(data).cast("B")
        lead = -(self._position + self._fill) % ALIGN if not self._fill else 0
        if lead and len(view):  # up to a block boundary, plainly: direct writes start on one
            self._wait()
            count = min(lead, len(view))
            self._write_plain(view[:count], self._position)
            self._position += count
            view = view[count:]
        if not self._fill and self._direct >= 0 and len(view) >= ALIGN and page_aligned(view):
            whole = aligned_down(len(view))  # from the caller's buffer: no copy
            self._wait()
            self._pending = self._pool.submit(self._write_out, view[:whole], whole, self._position)
            self._lent = True
            self._position += whole
            view = view[whole:]
        if len(view) and not self._buffers:
            self._buffers = [mmap.mmap(-1, BUFFER), mmap.mmap(-1, BUFFER)]
        while len(view):
            buffer = self._buffers[self._current]
            count = min(len(view), BUFFER - self._fill)
            buffer[self._fill : self._fill + count] = view[:count]
            self._fill += count
            view = view[count:]
            if self._fill == BUFFER:
                self._wait()
                self._pending = self._pool.submit(self._write_out, buffer, BUFFER, self._position)
                self._position += BUFFER
                self._current ^= 1
                self._fill = 0

    def push(self) -> None:
        """Send the whole blocks gathered so far on their way to the file (the helper writes
        them), keeping only the last partial block: what arrived reaches the file as it comes,
        so an interrupted download keeps it, and the next write still starts on a block.
        Buffers given to :meth:`write` are no longer used once it returns."""
        if self._lent:
            self._wait()
        whole = aligned_down(self._fill)
        if not whole:
            return
        self._wait()
        buffer, other = self._buffers[self._current], self._buffers[self._current ^ 1]
        tail = self._fill - whole
        other[:tail] = buffer[whole : self._fill]
        self._pending = self._pool.submit(self._write_out, buffer, whole, self._position)
        self._position += whole
        self._current ^= 1
        self._fill = tail

    def flush(self) -> None:
        """Write everything given so far (the last partial block plainly); a later write goes on
        after it (plainly up to the next block boundary)."""
        self._wait()
        if self._fill:
            self._write_out(self._buffers[self._current], self._fill, self._position)
            self._position += self._fill
            self._fill = 0

    def reset(self, position: int) -> None:
        """Drop what is gathered and go on at ``position`` (after a restart)."""
        with contextlib.suppress(OSError):
            self._wait()
        self._fill = 0
        self._position = position

    def close(self) -> None:
        """Wait for the write in flight (its error is dropped: call :meth:`flush` to see it) and
        release the buffers and the helper thread."""
        with contextlib.suppress(OSError):
            self._wait()
        self._pool.shutdown(wait=True)
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1
        for buffer in self._buffers:
            with contextlib.suppress(BufferError):  # a view still out: the mapping goes with it
                buffer.close()

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        self._lent = False
        if pending is not None:
            pending.result()  # re-raises the helper's OSError (ENOSPC, EIO) here

    def _write_out(self, buffer: mmap.mmap | memoryview, length: int, position: int) -> None:
        with memoryview(buffer) as whole_buffer, whole_buffer[:length] as view:
            done = 0
            whole = aligned_down(length)
            if self._direct >= 0 and whole:
                try:
                    while done < whole:
                        done += os.pwrite(self._direct, view[done:whole], position + done)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    os.close(self._direct)  # the file system takes the open, not the writes
                    self._direct = -1
            self._write_plain(view[done:], position + done)

    def _write_plain(self, view: memoryview, position: int) -> None:
        done = 0
        while done < len(view):
            written = os.pwrite(self._fd, view[done:], position + done)
            if not written:
                raise OSError(errno.EIO, "the file took no bytes")
            done += written
