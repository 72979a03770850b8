"""Layer compression codecs: gzip and zstd streams in and out, with a bound on what we inflate."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import zstandard

from kitfs.errors import PackError

# Deflate cannot expand more than ~1032:1; zstd can, so zstd gets an absolute bound instead.
GZIP_MAX_RATIO = 1100
DEFAULT_INFLATE_CAP = 1 << 40
# Tar writers pad an archive to at most a 10 KiB record; more bytes after the end-of-archive marker
# are a decompression bomb's payload, not a tar's: readers stop inflating past this many.
MAX_TRAILING_BYTES = 1 << 20


def inflate_limit(
    compressed_size: int, compression: str, cap: int = DEFAULT_INFLATE_CAP
) -> int | None:
    """The most uncompressed bytes a layer of this size may honestly produce."""
    if compression == "none":
        return compressed_size
    if compression == "gzip":
        return min(compressed_size * GZIP_MAX_RATIO + (1 << 20), cap)
    return cap


@contextmanager
def open_decompressed(path: str, compression: str) -> Iterator[BinaryIO]:
    """Open a stored layer blob and yield a stream of its uncompressed tar."""
    with open(path, "rb") as raw:
        if compression == "none":
            yield raw
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream  # type: ignore[misc]
        elif compression == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            with reader:
                yield reader  # type: ignore[misc]
        else:
            raise ValueError(f"unknown compression {compression!r}")


def decompressing_reader(raw: BinaryIO, compression: str) -> BinaryIO:
    """Wrap an open compressed stream in a reader of its uncompressed bytes."""
    if compression == "none":
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    raise ValueError(f"unknown compression {compression!r}")


def compressing_writer(out: BinaryIO, compression: str) -> BinaryIO:
    """Wrap ``out`` so that what is written to the result reaches ``out`` compressed.

    gzip matches Go's compress/gzip header (no name, mtime 0, OS 255, XFL 4 at level 1); the deflate
    bytes themselves come from zlib, so only the uncompressed digest (diffId) equals kit's.
    """
    if compression == "none":
        return out
    if compression in ("gzip", "gzip-fastest"):
        level = 1 if compression == "gzip-fastest" else 6
        return gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=level, mtime=0)  # type: ignore[return-value]
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)  # type: ignore[return-value]
    raise PackError(
        f"invalid compression type {compression!r}: must be one of 'none', 'gzip', 'gzip-fastest', or 'zstd'"
    )
