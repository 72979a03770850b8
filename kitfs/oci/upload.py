"""The local side of a blob upload: every byte is read once, in large blocks in a worker thread that
also hashes it, a few blocks ahead of the request that sends it; the hash is kept at the offset the
registry has acknowledged, so that a resumed upload goes on hashing where the registry goes on
storing. The last block of a blob is sent only when the whole blob hashes to its digest, and a
chunked upload is committed with ``?digest=`` only then: a damaged file never becomes a blob.

``kitfs.oci.client`` owns the requests (POST, PATCH, PUT, status, cancel); this module owns the
bytes: reading ahead, hashing, the chunk plan from the registry's ``OCI-Chunk-Min-Length`` and
``OCI-Chunk-Max-Length`` headers (distribution-spec, "Pushing a blob in chunks").
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kitfs.errors import DigestMismatchError, KitfsError, StorageError
from kitfs.oci.manifest import Descriptor

log = logging.getLogger(__name__)

READ_BLOCK = 4 * 1024 * 1024  # one pread + hash in a worker thread
READ_AHEAD = 4  # blocks read (and hashed) ahead of the one being sent: 16 MiB per upload

Hasher = Any  # a hashlib object (sha256 or sha512)


@dataclass(frozen=True)
class ChunkLimits:
    """The chunk sizes a registry accepts, from its answer to the POST that opened the session
    (0: no limit). Every chunk but the last must be at least ``minimum``; none may exceed ``maximum``."""

    minimum: int = 0
    maximum: int = 0

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> ChunkLimits:
        return cls(
            _length(headers.get("oci-chunk-min-length")),
            _length(headers.get("oci-chunk-max-length")),
        )

    def chunk_length(self, preferred: int, size: int) -> int:
        """The PATCH size for a blob of ``size`` bytes: the whole blob in one request unless
        ``preferred`` (a positive option) or the registry's maximum asks for less; a registry
        minimum raises it (its maximum wins if the two contradict each other)."""
        length = preferred if preferred > 0 else size
        length = max(length, self.minimum)
        if self.maximum:
            length = min(length, self.maximum)
        return max(1, min(length, size))


def _length(value: str | None) -> int:
    if value is None:
        return 0
    text = value.strip()
    if not text.isdigit():
        log.info("ignoring a chunk length header that is not a number: %r", value)
        return 0
    return int(text)


def read_verified(path: Path, descriptor: Descriptor, hasher: Hasher) -> bytes:
    """A small blob's bytes, read and hashed in one pass, refused unless they match ``descriptor``
    (blocking: run it in a worker thread)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    hasher.update(data)
    _check(path, descriptor, len(data), hasher)
    return data


def _check(path: Path, descriptor: Descriptor, size: int, hasher: Hasher) -> None:
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if size != descriptor.size:
        raise StorageError(f"{path} changed size while it was being uploaded")
    if actual != descriptor.digest:
        raise DigestMismatchError(
            descriptor.digest, actual, f"blob {descriptor.digest} read from {path}"
        )


class _Attempt:
    """One sending of ``[start, end)``: the bytes from ``hashed`` (where the acknowledged hash
    stands) to ``start`` are hashed without being sent, then the rest is read, hashed and sent."""

    def __init__(self, path: Path, hasher: Hasher, hashed: int, start: int, end: int) -> None:
        self.path = path
        self.hasher = hasher
        self.position = hashed
        self.start = start
        self.end = end
        self.error: KitfsError | None = None
        self.scope = trio.CancelScope()
        self._send, self.receive = trio.open_memory_channel[bytes](READ_AHEAD - 1)

    def read_block(self, fd: int) -> bytes | None:
        """Read and hash the next block (in a worker thread); None for a block only hashed."""
        stop = self.start if self.position < self.start else self.end
        data = os.pread(fd, min(READ_BLOCK, stop - self.position), self.position)
        if not data:
            raise StorageError(f"{self.path} shrank while it was being uploaded")
        self.hasher.update(data)
        self.position += len(data)
        return data if self.position > self.start else None

    async def produce(self) -> None:
        """Read to ``end`` into the channel; a read error ends it early and waits in ``error``."""
        with self.scope:
            async with self._send:
                try:
                    fd = await trio.to_thread.run_sync(os.open, self.path, os.O_RDONLY)
                    try:
                        while self.position < self.end:
                            data = await trio.to_thread.run_sync(self.read_block, fd)
                            if data is not None:
                                await self._send.send(data)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    self.error = StorageError(f"cannot read {self.path}: {exc.strerror or exc}")
                except KitfsError as exc:
                    self.error = exc


class UploadSource:
    """A local blob as an upload body. ``body(start, end)`` gives a fresh body factory for one
    request (httpx calls it once per attempt), which raises DigestMismatchError instead of sending
    the blob's last block when the whole blob does not hash to its digest; ``acknowledge(end)``
    records that the registry holds the blob up to ``end``; ``verify()`` checks the whole blob's
    hash before a chunked upload is committed.

    Reading happens in tasks of ``nursery``, a few blocks ahead of the sender; ``close()`` stops
    whatever is still reading (each read finishes first, so its file is closed in order)."""

    def __init__(
        self,
        path: Path,
        descriptor: Descriptor,
        new_hasher: Callable[[], Hasher],
        nursery: trio.Nursery,
        progress: Callable[[int], None],
    ) -> None:
        self.path = path
        self.descriptor = descriptor
        self._new_hasher = new_hasher
        self._nursery = nursery
        self._progress = progress
        self._acked = 0
        self._hasher = new_hasher()
        self._attempt: _Attempt | None = None

    def body(self, start: int, end: int) -> Callable[[], AsyncIterator[bytes]]:
        def factory() -> AsyncIterator[bytes]:
            return self._stream(self._begin(start, end))

        return factory

    def _begin(self, start: int, end: int) -> _Attempt:
        self._stop()
        if start < self._acked:  # the registry lost bytes (a new session): hash from the start
            self._acked, self._hasher = 0, self._new_hasher()
        attempt = _Attempt(self.path, self._hasher.copy(), self._acked, start, end)
        self._nursery.start_soon(attempt.produce)
        self._attempt = attempt
        return attempt

    async def _stream(self, attempt: _Attempt) -> AsyncIterator[bytes]:
        position = attempt.start
        async with attempt.receive:
            async for data in attempt.receive:
                if position + len(data) == self.descriptor.size:
                    # The blob's last block goes out only once the whole blob hashes right: a
                    # request cut short of its Content-Length cannot be committed by a registry.
                    _check(self.path, self.descriptor, attempt.position, attempt.hasher)
                yield data
                position += len(data)
                self._progress(position)
        if attempt.error is not None:
            raise attempt.error

    def acknowledge(self, end: int) -> None:
        """The registry accepted the bytes up to ``end``: keep the hash that stands there."""
        attempt = self._attempt
        if attempt is not None and attempt.position == end and attempt.error is None:
            self._acked, self._hasher = end, attempt.hasher
        self._stop()

    def verify(self) -> None:
        """Refuse the upload unless every byte was sent and the bytes hash to the digest."""
        if self._acked != self.descriptor.size:
            raise StorageError(
                f"{self.path}: only {self._acked} of {self.descriptor.size} bytes were hashed"
            )
        _check(self.path, self.descriptor, self._acked, self._hasher)

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._attempt is not None:
            self._attempt.scope.cancel()
            self._attempt = None
