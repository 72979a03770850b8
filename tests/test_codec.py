"""kitfs.layers.codec.GzipReader reads what gzip.GzipFile reads, and refuses what it refuses."""

from __future__ import annotations

import gzip
import io
import random
import zlib

import pytest

from kitfs.layers.codec import GzipReader


def _data(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    text = b"".join(
        rng.choice([b"weights ", b"tensor ", b"\n", b"0123456789"]) for _ in range(size // 6)
    )
    return text[:size] + rng.randbytes(size // 4)  # compressible, then not


def _read_all(stream: GzipReader, size: int) -> bytes:
    parts = []
    while chunk := stream.read(size):
        assert len(chunk) <= size
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("read_size", [1, 511, 1 << 20, 3 << 20])
def test_one_member_reads_as_gzipfile_reads_it(read_size: int) -> None:
    data = _data(1_500_000 if read_size > 1 else 20_000)
    blob = gzip.compress(data, mtime=0)
    assert _read_all(GzipReader(io.BytesIO(blob)), read_size) == data


def test_members_follow_one_another_and_zero_padding_ends_the_stream() -> None:
    first, second = _data(300_000, 2), _data(200_000, 3)
    blob = gzip.compress(first) + gzip.compress(second) + b"\0" * 3000
    expected = gzip.GzipFile(fileobj=io.BytesIO(blob)).read()
    assert expected == first + second
    assert GzipReader(io.BytesIO(blob)).read() == expected


def test_padding_longer_than_one_input_piece_is_skipped() -> None:
    data = _data(10_000)
    blob = gzip.compress(data) + b"\0" * (GzipReader.INPUT + 10)
    assert GzipReader(io.BytesIO(blob)).read() == data


def test_an_empty_stream_is_empty() -> None:
    assert GzipReader(io.BytesIO(b"")).read(100) == b""


def test_garbage_after_a_member_is_refused() -> None:
    blob = gzip.compress(_data(10_000)) + b"PK\x03\x04 not gzip"
    with pytest.raises(gzip.BadGzipFile):
        GzipReader(io.BytesIO(blob)).read()
    with pytest.raises(gzip.BadGzipFile):
        gzip.GzipFile(fileobj=io.BytesIO(blob)).read()


def test_a_member_cut_short_raises_eoferror() -> None:
    blob = gzip.compress(_data(100_000))
    with pytest.raises(EOFError):
        GzipReader(io.BytesIO(blob[: len(blob) // 2])).read()


def test_a_wrong_crc_is_an_error() -> None:
    blob = bytearray(gzip.compress(_data(10_000)))
    blob[-8] ^= 0xFF  # the CRC32 in the trailer
    with pytest.raises(zlib.error):
        GzipReader(io.BytesIO(bytes(blob))).read()


def test_a_bomb_is_inflated_only_as_far_as_asked() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 KiB that inflate to 64 MiB
    reader = GzipReader(io.BytesIO(bomb))
    assert reader.read(4096) == b"\0" * 4096
    assert len(reader.read(1 << 20)) <= 1 << 20
