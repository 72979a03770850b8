"""kitfs.fs.tarreader: reads of a whole layer on this machine, around the page cache (O_DIRECT
into one reused aligned buffer), give exactly the file's bytes for any offset and size, and fall
back to plain reads where the file system refuses O_DIRECT."""

from __future__ import annotations

import errno
import fcntl
import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import refuse_o_direct

from kitfs.fs import tarreader
from kitfs.fs.tarreader import ALIGN, INLINE_READ, TarReader

SIZE = 3 * INLINE_READ + 1234  # not a whole number of blocks: the last read is short


@pytest.fixture
def tar(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(5).randbytes(SIZE)
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    return path, data


READS = [
    (0, 1),
    (0, INLINE_READ),
    (1, INLINE_READ),  # one block more than a megabyte, unaligned
    (ALIGN - 1, 2),  # across a block boundary
    (512, 100_000),
    (INLINE_READ + 777, 4096),
    (SIZE - 10, 10),  # the last bytes
    (SIZE - 10, INLINE_READ),  # past the end: fewer
    (SIZE, 100),  # at the end: nothing
    (SIZE + ALIGN, 100),  # past it: nothing
]


def _read_all(
    path: Path, reads: list[tuple[int, int]], direct: bool = True
) -> tuple[list[bytes], bool]:
    reader = TarReader(os.open(path, os.O_RDONLY), direct=direct)
    try:
        got = [bytes(trio.run(reader.read, offset, size)) for offset, size in reads]
        return got, reader._direct >= 0
    finally:
        reader.close()


def test_every_read_gives_the_files_bytes(tar: tuple[Path, bytes]) -> None:
    path, data = tar
    got, direct = _read_all(path, READS)
    assert direct  # the direct path is what this test covers (this file system takes O_DIRECT)
    assert got == [data[offset : offset + size] for offset, size in READS]


def test_a_large_read_goes_to_a_thread_and_is_whole(tar: tuple[Path, bytes]) -> None:
    path, data = tar
    got, _ = _read_all(path, [(3, 2 * INLINE_READ + 5)])
    assert got == [data[3 : 3 + 2 * INLINE_READ + 5]]


def test_without_o_direct_reads_are_plain_and_the_same(
    tar: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_o_direct(monkeypatch)
    path, data = tar
    got, direct = _read_all(path, READS)
    assert not direct
    assert got == [data[offset : offset + size] for offset, size in READS]


def test_reads_that_o_direct_refuses_fall_back_to_plain_ones(
    tar: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that takes the O_DIRECT open but not the reads (EINVAL)."""
    real_preadv = os.preadv
    refused: list[int] = []

    def picky(fd: int, buffers: Any, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(tarreader.os, "preadv", picky)
    path, data = tar
    got, direct = _read_all(path, READS)
    assert refused and not direct
    assert got == [data[offset : offset + size] for offset, size in READS]


def test_a_tar_still_in_the_page_cache_is_read_through_it(tar: tuple[Path, bytes]) -> None:
    """``direct=False`` (a decompressed tar, written through the page cache moments ago)."""
    path, data = tar
    got, direct = _read_all(path, READS, direct=False)
    assert not direct
    assert got == [data[offset : offset + size] for offset, size in READS]
