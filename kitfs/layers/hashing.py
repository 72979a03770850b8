"""A read-through stream that hashes (and optionally copies) what passes: how kitfs verifies a
layer's digest and its diffId in the same pass that decompresses and indexes it."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def opened(source: Path | BinaryIO) -> contextlib.AbstractContextManager[BinaryIO]:
    """``source`` opened for reading: a path is opened (and closed after); a stream, such as a
    download's pipe (kitfs.layers.pipe), is used as it is."""
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb")
    return contextlib.nullcontext(source)


def hash_file(path: Path) -> tuple[str, int]:
    """The sha256 digest and size of a file, read in 1 MiB chunks."""
    with open(path, "rb") as handle:
        reader = HashingReader(handle)  # type: ignore[arg-type]
        size = reader.drain()
    return reader.digest, size


class HashingWriter:
    """A write-through stream that hashes and counts what passes (pack's blobs and tars)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._hasher.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()


class Readable:
    """The file-object methods a stream reader needs, on top of a subclass's ``read``."""

    def read(self, size: int = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class HashingReader(Readable):
    """A read-through stream that hashes what passes, and optionally copies it to ``sink``."""

    def __init__(
        self, stream: BinaryIO, sink: BinaryIO | None = None, *, hash_it: bool = True
    ) -> None:
        self._stream = stream
        self._sink = sink
        self._hasher = hashlib.sha256() if hash_it else None
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if self._hasher is not None:
            self._hasher.update(data)
        if self._sink is not None:
            self._sink.write(data)
        self.size += len(data)
        return data

    def drain(self, limit: int | None = None, advance: Callable[[int], None] | None = None) -> int:
        """Read to the end (or just past ``limit`` bytes); return how many bytes were read
        (each read also reported to ``advance``)."""
        total = 0
        while limit is None or total <= limit:
            chunk = self.read(CHUNK if limit is None else min(CHUNK, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if advance is not None:
                advance(len(chunk))
        return total

    @property
    def digest(self) -> str:
        assert self._hasher is not None
        return "sha256:" + self._hasher.hexdigest()
