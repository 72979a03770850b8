"""Layer compression codecs: gzip and zstd streams in and out, with a bound on what we inflate."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import zstandard

from kitfs.errors import PackError
from kitfs.layers.hashing import Readable

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
            yield GzipReader(raw)  # type: ignore[misc]
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
        return GzipReader(raw)  # type: ignore[return-value]
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    raise ValueError(f"unknown compression {compression!r}")


class GzipReader(Readable):
    """The uncompressed bytes of a gzip stream (every member, in order), as gzip.GzipFile reads
    them, at about the speed of zlib itself: the input goes to zlib in 1 MiB pieces, and zlib
    (``wbits=31``) parses each member's header and checks its CRC and length. GzipFile reads
    128 KiB at a time through a buffering wrapper and computes the CRC in a second pass.

    Like GzipFile: members may follow one another, zero bytes may pad the end, anything else
    after a member is an error (gzip.BadGzipFile, an OSError), and a member cut short raises
    EOFError. ``read(size)`` returns at most ``size`` bytes, so a bomb is never inflated ahead
    of the reader's own bound."""

    INPUT = 1 << 20

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(31)
        self._input = b""  # compressed bytes read but not yet inflated
        self._in_member = False  # bytes of the current member were given to zlib
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(self.INPUT):
                parts.append(chunk)
            return b"".join(parts)
        while size and not self._done:
            if not self._input and not self._fill():
                break
            inflater = self._inflater
            out = inflater.decompress(self._input, size)
            self._in_member = True
            self._input = inflater.unconsumed_tail
            if inflater.eof:
                self._input = inflater.unused_data
                self._next_member()
            if out:
                return out
        return b""

    def _fill(self) -> bool:
        """More input; False at the end of the stream (an error inside a member)."""
        self._input = self._raw.read(self.INPUT)
        if self._input:
            return True
        if self._in_member:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        self._done = True
        return False

    def _next_member(self) -> None:
        """After a member: skip zero padding; what follows must be the next member, or nothing."""
        self._in_member = False
        self._inflater = zlib.decompressobj(31)
        while True:
            self._input = self._input.lstrip(b"\0")
            if self._input:
                break
            self._input = self._raw.read(self.INPUT)
            if not self._input:
                self._done = True
                return
        if len(self._input) < 2:
            self._input += self._raw.read(1)
        if not self._input.startswith(b"\x1f\x8b"):
            raise gzip.BadGzipFile("Not a gzipped file (after a member: not another one)")


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
