"""Read a stored blob on two cores: one thread reads and hashes it, the caller's thread decompresses.

A pass over a local blob (``unpack`` from local storage, the mount decompressing a blob kit's
storage holds) would otherwise read, hash, decompress, hash the tar and write, all in one thread.
:class:`HashedFile` moves the reading and the blob's sha256 to a second thread, which feeds the
bytes through a pipe (kitfs.layers.pipe) to the caller's reader. The digest is only known once the
whole file was read (:meth:`HashedFile.digest` waits for it, even when the caller stopped early),
so nothing read from it may be used before the caller compared that digest.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import TracebackType

from kitfs.layers.hashing import Readable
from kitfs.layers.pipe import BytePipe

CHUNK = 4 * 1024 * 1024
LIMIT = 32 * 1024 * 1024


class HashedFile(Readable):
    """``path``'s bytes as a stream, read and hashed ahead in a thread; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by the reading thread
        self._pipe = BytePipe(LIMIT)
        self._hasher = hashlib.sha256()
        self.size = 0
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="hash-ahead", daemon=True)

    def __enter__(self) -> HashedFile:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pipe.abandon()
        self._thread.join()

    def _run(self) -> None:
        try:
            with self._file:
                while chunk := self._file.read(CHUNK):
                    self._hasher.update(chunk)
                    self.size += len(chunk)
                    self._pipe.feed(chunk)  # dropped once the reader has gone: hashing goes on
        except OSError as exc:
            self._error = exc
            self._pipe.fail(exc)
        else:
            self._pipe.close()

    def read(self, size: int = -1) -> bytes:
        return self._pipe.read(size)

    def digest(self) -> str:
        """The sha256 of the whole file (waits until it was read to the end)."""
        self._pipe.abandon()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return "sha256:" + self._hasher.hexdigest()
