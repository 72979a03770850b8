"""Start the kernel writing a file's pages while more of it arrives.

A download that fsyncs only at the end makes the whole file's writeback wait for that fsync (1 GiB:
about 2 s on this class of machine, after the network is done). Asking for writeback of each
written stretch as it lands (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait)
overlaps the disk with the network, so the final fsync has only the tail left. Where the call does
not exist the final fsync does all of it, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2
STRETCH = 32 * 1024 * 1024


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        call = libc.sync_file_range
        call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        call.restype = ctypes.c_int
        return call  # type: ignore[no-any-return]
    return None


_CALL: list[Callable[[int, int, int, int], int] | None] = []


class Writeback:
    """Track what a file has had written and start writeback every ``stretch`` bytes (not for a
    file that is deleted soon after: ``enabled=False`` leaves its pages to the page cache)."""

    def __init__(
        self, fd: int, start: int = 0, stretch: int = STRETCH, *, enabled: bool = True
    ) -> None:
        if enabled and not _CALL:
            _CALL.append(_sync_file_range())
        self._call = _CALL[0] if enabled else None
        self._fd = fd
        self._synced = start
        self._end = start
        self._stretch = stretch

    def wrote(self, length: int) -> None:
        self._end += length
        if self._call is not None and self._end - self._synced >= self._stretch:
            if self._call(self._fd, self._synced, self._end - self._synced, SYNC_FILE_RANGE_WRITE):
                self._call = None  # not supported here (EINVAL, ENOSYS): fsync does it all
            self._synced = self._end

    def reset(self, position: int = 0) -> None:
        self._synced = self._end = position

    def sync(self) -> None:
        """Wait until everything written is on disk."""
        os.fsync(self._fd)
