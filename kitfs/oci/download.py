"""The receiving end of one blob download: a resumable partial file, written, hashed and passed on
in one pass, off the event loop, while the network keeps receiving.

The network side hands over bytes in order with :meth:`Download.put`; a writer task takes them from
a short queue and, in a worker thread, writes them to the partial file, hashes them and feeds them
to an optional *tee* (kitfs.layers.pipe), whose reader decompresses and indexes the layer in the
same pass. So receiving, writing and hashing overlap instead of taking turns, and nothing reads the
blob a second time. The writes themselves run in a helper thread, with ``O_DIRECT``, while the
writer hashes (kitfs.directappend): no page-cache pages to allocate, and a durable download's final
fsync has little left to wait for.

The partial file is ``.<dest name>.partial``, locked while a download writes it, and kept when a
download is interrupted (a dropped network, Ctrl-C, kill): the next download of the same destination
re-hashes what it holds and continues after it with Range. A file another process is writing is
left alone (this download then uses a temp file of its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import trio

from kitfs.directappend import DirectAppender
from kitfs.errors import RegistryError, StorageError, leading_error
from kitfs.oci.manifest import Descriptor

IO_CHUNK = 1024 * 1024
RESUME_MIN = 1024 * 1024  # a cancelled download keeps its partial file from this size on
QUEUE_DEPTH = 4  # chunks between the network and the writer (parts are up to range_part each)

Progress = Callable[[int], None]
Chunk = bytes | bytearray | memoryview
_Item = tuple[Sequence[Chunk], Callable[[], None] | None]  # bytes to write; called once written


class Tee(Protocol):
    """Where a download passes its bytes on, in order from byte 0 (kitfs.layers.pipe.BytePipe).
    It lives across attempts (mirrors, then the origin), so it keeps its own ``position``."""

    position: int

    @property
    def usable(self) -> bool: ...

    def feed(self, data: bytes | bytearray | memoryview) -> None: ...

    def break_(self, reason: str) -> None: ...


def hasher_for(digest: str) -> Any:
    """A hashlib object for ``digest``'s algorithm (sha256 or sha512)."""
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        raise RegistryError(
            f"unsupported digest algorithm in {digest!r} (sha256 or sha512 expected)"
        )
    return hashlib.new(algorithm)


class ByteProgress:
    """Reports bytes to a callback once each, even when a retry sends or receives them again."""

    def __init__(self, callback: Progress | None) -> None:
        self._callback = callback
        self._high = 0

    def reached(self, position: int) -> None:
        if self._callback is not None and position > self._high:
            self._callback(position - self._high)
            self._high = position


class Download:
    """One blob download's state: the partial file, the running hash, what has arrived
    (``received``, where a resumed request starts) and what is written (``written``)."""

    def __init__(
        self,
        descriptor: Descriptor,
        dest: Path,
        progress: Progress | None,
        *,
        tee: Tee | None = None,
        durable: bool = True,
    ) -> None:
        self.descriptor = descriptor
        self.dest = dest
        self.hasher = hasher_for(descriptor.digest)
        self.written = 0
        self.received = 0
        self.resumed = 0
        self.progress = ByteProgress(progress)
        self.tee = tee
        self.durable = durable
        self.temp, fd, self.resumable = partial_file(dest)
        self.file = os.fdopen(fd, "r+b")
        # Written by a helper thread, with O_DIRECT, while the writer hashes (kitfs.directappend).
        self.appender: DirectAppender | None = None
        self._send, self._receive = trio.open_memory_channel[_Item | trio.Event](QUEUE_DEPTH)

    # -- worker-thread steps -------------------------------------------------------------------

    def prepare(self) -> None:
        """Hash what an interrupted download left, passing on what the tee lacks (blocking)."""
        held = os.fstat(self.file.fileno()).st_size
        if not held or held > self.descriptor.size:
            self.file.truncate(0)
            held = 0
        self.file.seek(0)
        position = 0
        while position < held and (chunk := self.file.read(IO_CHUNK)):
            self.hasher.update(chunk)
            self._pass_on(position, chunk)
            position += len(chunk)
        if self.tee is not None and self.tee.position != held:
            self.tee.break_("the download started again from a shorter partial file")
        self.written = self.received = self.resumed = held
        if self.appender is None:
            self.appender = DirectAppender(self.temp, self.file.fileno(), held)
        self.progress.reached(held)

    def _write(self, chunks: Sequence[Chunk]) -> None:
        try:
            for data in chunks:
                if self.appender is not None:
                    self.appender.write(data)
                else:
                    self.file.write(data)
                self.hasher.update(data)
                self._pass_on(self.written, data)
                self.written += len(data)
            if self.appender is not None:
                self.appender.push()  # on its way to the file now, not when a buffer fills
        except OSError as exc:
            raise StorageError(f"cannot write {self.dest.parent}: {exc.strerror or exc}") from None

    def _pass_on(self, position: int, data: Chunk) -> None:
        tee = self.tee
        if tee is None or not tee.usable:
            return
        end = position + len(data)
        if tee.position == position:
            tee.feed(data)
        elif position < tee.position < end:
            tee.feed(data[tee.position - position :])
        elif tee.position < position:
            tee.break_("bytes went missing between the download and its reader")

    def _restart(self) -> None:
        if self.appender is not None:
            self.appender.reset(0)  # first: a write in flight lands before the truncate
        self.file.seek(0)
        self.file.truncate()
        self.written = 0
        self.hasher = hasher_for(self.descriptor.digest)
        if self.tee is not None:
            self.tee.break_("the registry sent the blob again from its first byte")

    def finish(self) -> None:
        """Flush, and (``durable``) wait until the file is on disk (blocking)."""
        try:
            if self.appender is not None:
                try:
                    self.appender.flush()
                except OSError as exc:
                    raise StorageError(
                        f"cannot write {self.dest.parent}: {exc.strerror or exc}"
                    ) from None
            self.file.flush()
            if self.durable:
                os.fsync(self.file.fileno())
        finally:
            self._close()

    def _close(self) -> None:
        if self.appender is not None:
            self.appender.close()
            self.appender = None
        self.file.close()

    def discard(self, keep: bool = False) -> None:
        """Close; remove the partial file unless ``keep`` (an interruption to resume after)."""
        if keep and self.appender is not None:
            with contextlib.suppress(OSError):  # what arrived is resumed after, if it is there
                self.appender.flush()
        self._close()
        if keep and self.resumable and self.written:
            return
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()

    # -- the event-loop side -----------------------------------------------------------------

    async def discarded(self, keep: bool = False) -> None:
        """``discard`` in a worker thread (what it writes and waits for is disk work), even when
        the download was cancelled."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.discard, keep)

    def range_headers(self) -> dict[str, str]:
        return {"Range": f"bytes={self.received}-"} if self.received else {}

    async def run(self, fetch: Callable[[], Awaitable[None]]) -> None:
        """Run ``fetch`` (which calls :meth:`put`) beside the writer; return when all is written."""
        failed: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                try:
                    await fetch()
                except Exception as exc:  # the writer still writes what arrived: resume after it
                    failed = exc
                await self._send.aclose()
        except BaseExceptionGroup as group:
            raise leading_error(group) from None
        if failed is not None:
            raise failed

    async def put(self, chunks: Sequence[Chunk], written: Callable[[], None] | None = None) -> None:
        """Queue the next bytes, in order, for the writer (waits while the queue is full). They
        are passed as the pieces they arrived in: joining them would copy every byte once more.
        ``written`` is called (on the event loop) once they are written: their buffers are free
        for reuse then (nothing here keeps a reference to them)."""
        self.received += sum(len(c) for c in chunks)
        await self._send.send((chunks, written))

    async def settle(self) -> None:
        """Wait until everything queued is written."""
        done = trio.Event()
        await self._send.send(done)
        await done.wait()

    async def restart(self) -> None:
        """Start over: the server answered a resumed request with the whole blob."""
        await self.settle()
        await trio.to_thread.run_sync(self._restart)
        self.written = self.received = 0

    async def _writer(self) -> None:
        async with self._receive:
            async for item in self._receive:
                if isinstance(item, trio.Event):
                    item.set()
                    continue
                chunks, written = item
                await trio.to_thread.run_sync(self._write, chunks)
                if written is not None:
                    written()
                self.progress.reached(self.written)


def partial_file(dest: Path) -> tuple[Path, int, bool]:
    """(path, fd, resumable): ``.<name>.partial`` beside ``dest``, locked; else a temp file."""
    path = dest.parent / f".{dest.name}.partial"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return path, fd, True
        except BlockingIOError:
            os.close(fd)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        return Path(name), fd, False
    except OSError as exc:
        raise StorageError(
            f"cannot create a download file in {dest.parent}: {exc.strerror}"
        ) from None
