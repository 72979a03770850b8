"""kitfs.directappend: a durable download's file, appended with O_DIRECT from reused buffers, holds
exactly the bytes given, in order, whatever their sizes, alignment and where the file started."""

from __future__ import annotations

import errno
import mmap
import os
import random
from pathlib import Path
from typing import Any

import pytest
from helpers import refuse_o_direct

from kitfs import directappend
from kitfs.directappend import ALIGN, BUFFER, DirectAppender


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _appender(path: Path, held: bytes = b"") -> tuple[DirectAppender, int]:
    path.write_bytes(held)
    fd = os.open(path, os.O_RDWR)
    return DirectAppender(path, fd, len(held)), fd


def _mapped(data: bytes) -> mmap.mmap:
    buffer = mmap.mmap(-1, len(data))
    buffer[:] = data
    return buffer


@pytest.mark.parametrize("held", [0, 1, ALIGN - 1, ALIGN, 3 * ALIGN + 17])
def test_the_file_holds_every_byte_in_order(tmp_path: Path, held: int) -> None:
    """Pieces of awkward sizes (bytes, bytearrays, page-aligned mappings), after a partial file
    of any length: the result is the partial file followed by every piece."""
    path = tmp_path / "blob"
    start = _payload(held, 1)
    pieces: list[Any] = [
        _payload(1, 2),
        bytearray(_payload(ALIGN + 5, 3)),
        _mapped(_payload(4 * ALIGN, 4)),  # aligned, but the file is not at a block here
        _payload(BUFFER + 3 * ALIGN + 9, 5),  # more than a gather buffer
        _mapped(_payload(2 * BUFFER + 100, 6)),
        _payload(7, 7),
    ]
    appender, fd = _appender(path, start)
    try:
        assert appender.direct  # this file system takes O_DIRECT: the direct path is tested
        for piece in pieces:
            appender.write(piece)
            appender.push()
        appender.flush()
    finally:
        appender.close()
        os.close(fd)
    assert path.read_bytes() == start + b"".join(bytes(p) for p in pieces)


def test_a_buffer_is_free_once_push_returns(tmp_path: Path) -> None:
    """An aligned buffer is written from where it is: after ``push`` the caller may fill it with
    the next part, and the file keeps the first part's bytes."""
    path = tmp_path / "blob"
    first, second = _payload(2 * BUFFER, 8), _payload(2 * BUFFER, 9)
    buffer = _mapped(first)
    appender, fd = _appender(path)
    try:
        appender.write(buffer)
        appender.push()
        buffer[:] = second  # reused for the next part
        appender.write(buffer)
        appender.push()
        appender.flush()
    finally:
        appender.close()
        os.close(fd)
    assert path.read_bytes() == first + second


def test_what_was_pushed_is_in_the_file_before_the_flush(tmp_path: Path) -> None:
    """An interrupted download keeps what arrived: once the write ``push`` started has landed,
    the whole blocks given are in the file (only the last partial block waits for the flush)."""
    path = tmp_path / "blob"
    data = _payload(3 * ALIGN + 100, 10)
    appender, fd = _appender(path)
    try:
        appender.write(data)
        appender.push()
        appender._wait()  # the helper's write has landed
        assert path.read_bytes() == data[: 3 * ALIGN]
        appender.flush()
        assert path.read_bytes() == data
    finally:
        appender.close()
        os.close(fd)


def test_without_o_direct_the_same_bytes_are_written_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses O_DIRECT (EINVAL on open) gets plain writes of the same
    buffers."""
    refuse_o_direct(monkeypatch)
    path = tmp_path / "blob"
    data = _payload(BUFFER + 5000, 11)
    appender, fd = _appender(path)
    try:
        assert not appender.direct
        appender.write(_mapped(data))
        appender.push()
        appender.flush()
    finally:
        appender.close()
        os.close(fd)
    assert path.read_bytes() == data


def test_a_full_disk_is_reported_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in the helper's write reaches the caller (push or flush), never silently lost."""
    real_pwrite = os.pwrite

    def full(fd: int, data: Any, position: int) -> int:
        if position >= ALIGN:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, position)

    monkeypatch.setattr(directappend.os, "pwrite", full)
    path = tmp_path / "blob"
    appender, fd = _appender(path)
    try:
        with pytest.raises(OSError) as caught:
            appender.write(_payload(4 * ALIGN, 12))
            appender.push()
            appender.write(_payload(4 * ALIGN, 13))
            appender.push()
            appender.flush()
        assert caught.value.errno == errno.ENOSPC
    finally:
        appender.close()
        os.close(fd)
