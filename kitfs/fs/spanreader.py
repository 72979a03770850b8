"""Reads of a layer through its pinned span index: fetch only the spans a read covers, verified.

A read asks for the spans that hold its bytes. Missing spans are fetched in runs of neighbours, one
Range request per run (never multi-range), several runs at once for large reads, and read ahead for
sequential readers. Each span's bytes are checked against the digest in the index, which the
manifest pins, before any byte of it is served; a verified span is decompressed and enters the
cache by an atomic rename under its digest, so every mount and process shares it and a killed
daemon leaves nothing half-trusted. The cache file is written with ``O_DIRECT`` from the buffer
the span arrived in, and reads are served from that buffer while it stays in the mount's span memory
(kitfs.fs.spanmemory), so the bytes a loader reads are copied once on their way in and once out to
the kernel. A span that fails (a registry that keeps failing, bytes that do
not match) answers EIO for a few seconds; other spans and files keep reading.

Uncompressed layers whose blob is on this machine (kit's local storage, an OCI layout) are read in
place: a span is hashed where it lies the first time it is needed, and then read from there.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import mmap
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from cachetools import TTLCache

from kitfs.errors import DigestMismatchError, KitfsError
from kitfs.fs.source import Source
from kitfs.fs.spanmemory import Scratch, SpanMemory, read_span_file, write_new_file
from kitfs.fs.spansink import SpanRunSink
from kitfs.fs.tree import LayerSlot
from kitfs.layers.spanindex import Span, SpanIndex, SpanIndexError, decode_member
from kitfs.layers.tarindex import BLOCK, TarEntry, header_mismatch
from kitfs.storage.cache import BlobCache, LayerRecord

log = logging.getLogger(__name__)

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]
# A registry spends milliseconds on each request (distribution 2.8 on loopback: a 4 MiB range
# comes at a quarter of a whole-blob GET's rate), so read-ahead asks for large runs, several at once.
MAX_RUN_BYTES = 32 << 20  # one Range request fetches at most this much (runs go in parallel)
MIN_RUN_BYTES = 32 << 20  # read-ahead waits until it has this much to ask for (or the file ends)
READAHEAD_START = 8 << 20  # a new sequential stream gets this much fetched ahead of it ...
READAHEAD_MAX = 128 << 20  # ... doubling on each read that continues it, up to this
ABSENT_TTL = 1.0  # seconds a span found missing from the cache is not looked for again
STREAMS = 16  # sequential streams remembered per layer (several readers of one layer)
RUN_ATTEMPTS = 3  # a run that ends short is asked for again this many times
OPEN_SPANS = 64  # span files held open per layer
FAILURE_TTL = 5.0


@dataclass
class _Stream:
    """A sequential reader of one file: where its last read ended, how far ahead of it to fetch,
    and the last span a read-ahead asked for (spans up to it are here or on their way)."""

    end: int
    window: int
    horizon: int = -1
    loaded: int = -1  # the last cached span read into span memory ahead of the reader


class SpanError(KitfsError):
    """A span cannot be served (its bytes failed verification or could not be fetched)."""


class SpanReader:
    """Verified partial reads of one layer (see the module docstring)."""

    def __init__(
        self,
        slot: LayerSlot,
        index: SpanIndex,
        source: Source,
        cache: BlobCache,
        limiter: trio.CapacityLimiter,
        *,
        spawn: Spawn | None = None,
        failure_ttl: float = FAILURE_TTL,
        memory: SpanMemory | None = None,
    ) -> None:
        self.slot = slot
        self.index = index
        self.source = source
        self.cache = cache
        self._limiter = limiter
        self._spawn = spawn
        self._memory = memory if memory is not None else SpanMemory(0)
        self._owner = SpanMemory.owner()
        self._scratch = Scratch()
        self._inflight: dict[int, trio.Event] = {}
        self._failed: TTLCache[int, str] = TTLCache(maxsize=65536, ttl=failure_ttl)
        self._files: OrderedDict[int, int] = OrderedDict()  # span position -> open fd
        self._in_place: Path | None = None
        self._in_place_fd = -1
        # Spans known readable: verified in place, or seen in the cache (eviction may remove
        # those later: a read that finds one gone fetches it again).
        self._have: set[int] = set()
        self._absent: set[int] = set()  # spans not in the cache when last looked for ...
        self._absent_since = time.monotonic()  # ... since then (forgotten after ABSENT_TTL)
        self._mismatched: dict[int, str] = {}  # spans whose bytes failed their digest, and why
        self._unsynced: dict[int, Path] = {}  # spans served from their temp file until synced
        self._to_persist: list[tuple[int, Path]] = []  # ... and waiting for _persist_queued
        self._persisting = False
        self._loading: set[int] = set()  # cached spans being read into span memory
        self._closed = False
        self._streams: OrderedDict[int, _Stream] = OrderedDict()  # by where their last read ended
        self._span_files: dict[int, str] = {}
        files = sorted((e.offset, e.offset + e.size) for e in index.entries if e.size)
        self._file_starts = [start for start, _ in files]
        self._file_ends = [end for _, end in files]
        self._window_cap = READAHEAD_MAX
        if cache.max_size is not None:  # read-ahead never crowds out what readers asked for
            self._window_cap = max(index.span_size, min(READAHEAD_MAX, cache.max_size // 4))
        self._checked: set[tuple[int, str]] = set()
        self.fetched_spans = 0  # spans this reader fetched and verified (for logs and tests)
        if index.compression == "none":
            self._in_place = source.local_blob(slot.descriptor)

    # -- reading ---------------------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """Bytes [offset, offset + size) of the layer's uncompressed tar (fewer at its end). A
        memoryview is of a span held in memory: valid until the caller next awaits (a FUSE reply
        is sent before that; anything else copies it first)."""
        positions = self.index.covering(offset, size)
        if not positions:
            return b""
        self._read_ahead(offset, size, positions)  # first, so that it overlaps this read's fetch
        await self.ensure(positions)
        try:
            return self._assemble(offset, size, positions)
        except FileNotFoundError:  # a span was evicted between ensure and now: fetch it again
            await self.ensure(positions)
            return self._assemble(offset, size, positions)

    def read_now(self, offset: int, size: int) -> bytes | memoryview | None:
        """``read``'s bytes when every span they lie in is readable now (none to fetch or wait
        for), else None. FileNotFoundError when a span was evicted since it was seen."""
        positions = self.index.covering(offset, size)
        if not positions:
            return b""
        for position in positions:
            if not self._ready(position):
                return None
        self._read_ahead(offset, size, positions)
        return self._assemble(offset, size, positions)

    async def check_entry(self, offset: int, name: str, size: int) -> None:
        """Check, once, that the verified tar holds at ``offset`` the entry the index says it does:
        the header block before the data must be that entry's (type, size, name). An index that
        points elsewhere is refused for that file (EIO), however well the manifest pins it."""
        if self.slot.raw or (offset, name) in self._checked:
            return  # a raw layer is the file itself: no tar header to check
        reason = "it starts inside the first header" if offset < BLOCK else None
        if reason is None:
            positions = self.index.covering(offset - BLOCK, BLOCK)
            await self.ensure(positions)
            block = bytes(self._assemble(offset - BLOCK, BLOCK, positions))
            reason = header_mismatch(block, TarEntry(name, False, 0, size, offset))
        if reason is not None:
            message = (
                f"{self.slot.label} (layer {self.slot.digest}): the tar does not hold the indexed "
                f"entry at byte {offset}: {reason}"
            )
            log.error("%s", message)
            raise SpanError(message)
        self._checked.add((offset, name))

    def _assemble(self, offset: int, size: int, positions: range) -> bytes | memoryview:
        """The bytes [offset, offset + size) from the spans at ``positions`` (all readable): a
        view of a span held in memory, or of the scratch buffer the span files were read into
        (valid until the caller next awaits), or bytes for a read larger than the scratch."""
        end = min(offset + size, self.index.tar_size)
        if len(positions) == 1:
            held = self._held(positions[0], offset, end)
            if held is not None:
                return held
        into = self._scratch.view(end - offset)
        parts = []
        for position in positions:
            span = self.index.spans[position]
            start, stop = max(offset, span.offset), min(end, span.end)
            held = self._held(position, start, stop)
            if into is None:
                parts.append(held if held is not None else self._pread(position, start, stop))
            elif held is not None:
                into[start - offset : stop - offset] = held
            else:
                self._pread_into(position, start, into[start - offset : stop - offset])
        return into if into is not None else b"".join(parts)

    def _held(self, position: int, start: int, stop: int) -> memoryview | None:
        """Layer bytes [start, stop) of a span held in memory, or None."""
        span = self.index.spans[position]
        held = self._memory.view(self._owner, position)
        if held is None:
            return None
        if stop >= span.end:
            # Read to its end: the span leaves memory, once the reply with this view is sent
            # (the event loop runs the callback after this request's step; a worker thread may
            # receive into the buffer as soon as it is free).
            trio.lowlevel.current_trio_token().run_sync_soon(
                self._memory.read_through, self._owner, position
            )
        return held[start - span.offset : stop - span.offset]

    def _file_of(self, position: int, start: int) -> tuple[int, int]:
        """The fd and file offset of layer byte ``start`` of a readable span."""
        span = self.index.spans[position]
        if self._in_place is not None:
            return self._in_place_fd, span.blob_offset + start - span.offset
        return self._fd(position), start - span.offset

    def _pread(self, position: int, start: int, stop: int) -> bytes:
        fd, at = self._file_of(position, start)
        return os.pread(fd, stop - start, at)

    def _pread_into(self, position: int, start: int, into: memoryview) -> None:
        fd, at = self._file_of(position, start)
        while len(into):
            count = os.preadv(fd, [into], at)
            if not count:
                raise SpanError(
                    f"{self.slot.label}: span {position} is shorter than its index says"
                )
            into, at = into[count:], at + count

    def _fd(self, position: int) -> int:
        fd = self._files.get(position)
        if fd is not None:
            self._files.move_to_end(position)
            return fd
        try:
            fd, path = self._open(position)
        except FileNotFoundError:
            self._have.discard(position)  # evicted since: the next read fetches it again
            raise
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used, for eviction
        self._files[position] = fd
        if len(self._files) > OPEN_SPANS:
            _, oldest = self._files.popitem(last=False)
            os.close(oldest)
        return fd

    @property
    def in_place(self) -> bool:
        return self._in_place is not None

    def join(self, trailer: bytes, expected: str | None) -> LayerRecord:
        """Write every (verified, cached) span in order, then ``trailer``, as the layer's tar in
        the cache; its digest must be ``expected`` when known. Blocking: call in a thread."""
        temp = self.cache.temp_path("tar")
        hasher = hashlib.sha256()
        try:
            with open(temp, "wb") as out:
                for position, span in enumerate(self.index.spans):
                    data = self._span_bytes(position, span)
                    hasher.update(data)
                    out.write(data)
                hasher.update(trailer)
                out.write(trailer)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise DigestMismatchError(expected, digest, f"joined spans of {self.slot.label}")
            self.cache.make_room(0)
            self.cache.commit_tar(temp, digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        for span in self.index.spans:  # the tar holds them now
            with contextlib.suppress(FileNotFoundError):
                self.cache.span_path(span.digest).unlink()
        return LayerRecord(self.slot.digest, digest, self.index.entries)

    def _span_bytes(self, position: int, span: Span) -> bytes:
        fd = self._files.get(position)
        if fd is not None:
            return os.pread(fd, span.size, 0)
        fd, _path = self._open(position)
        try:
            return os.pread(fd, span.size, 0)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._closed = True
        self._memory.drop(self._owner)
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        if self._in_place_fd >= 0:
            os.close(self._in_place_fd)
            self._in_place_fd = -1

    # -- making spans available ----------------------------------------------------------------

    def _ready(self, position: int) -> bool:
        """Whether a span can be read now. The cache is asked (a stat) only for a span nobody
        here is fetching and not found missing in the last ABSENT_TTL seconds: a cold reader asks
        this of the same spans on every read, and a stat on the event loop for each costs more
        than the rest of the read (another mount sharing the cache may add the file meanwhile:
        it is seen on the next look)."""
        if position in self._have or position in self._files:
            return True
        if self._in_place is not None or position in self._inflight:
            return False
        now = time.monotonic()
        if now - self._absent_since > ABSENT_TTL:
            self._absent.clear()
            self._absent_since = now
        elif position in self._absent:
            return False
        if os.path.isfile(self._span_file(position)):
            self._have.add(position)
            return True
        self._absent.add(position)
        return False

    def _span_file(self, position: int) -> str:
        """The cache name of a span, as a string (asked for on every read: no Path objects)."""
        name = self._span_files.get(position)
        if name is None:
            name = self._span_files[position] = str(
                self.cache.span_path(self.index.spans[position].digest)
            )
        return name

    async def ensure(self, positions: range | list[int]) -> None:
        """Make these spans readable: fetch the missing ones (in runs, in parallel), wait for
        those already on their way; SpanError when one of them cannot be had."""
        missing = [p for p in positions if not self._ready(p)]
        if missing:
            self._raise_failed(missing)
            waits = [self._inflight[p] for p in missing if p in self._inflight]
            runs = self._claim(missing)
            async with trio.open_nursery() as nursery:
                for run in runs:
                    nursery.start_soon(self._fetch_run, run)
                for event in waits:
                    nursery.start_soon(event.wait)
            unready = [p for p in missing if not self._ready(p)]
            self._raise_failed(unready)
            if unready:
                raise SpanError(f"{self.slot.label}: span {unready[0]} could not be fetched")

    def _raise_failed(self, positions: list[int]) -> None:
        for position in positions:
            reason = self._failed.get(position)
            if reason is not None:
                raise SpanError(reason)

    def _claim(self, missing: list[int]) -> list[list[int]]:
        """Mark the missing spans nobody fetches yet as ours, grouped into runs of neighbours."""
        runs: list[list[int]] = []
        run_bytes = 0
        for position in missing:
            if position in self._inflight:
                continue
            self._inflight[position] = trio.Event()
            size = self.index.spans[position].blob_size
            if runs and runs[-1][-1] == position - 1 and run_bytes + size <= MAX_RUN_BYTES:
                runs[-1].append(position)
                run_bytes += size
            else:
                runs.append([position])
                run_bytes = size
        return runs

    def _read_ahead(self, offset: int, size: int, positions: range) -> None:
        """For a reader going forward through a file, fetch ahead of it in the background, as the
        kernel reads ahead: a read at a file's start, or one that continues where a read ended,
        opens or continues a stream whose window starts small and doubles on each continuing
        read; read-ahead never passes the end of the file being read."""
        stream = self._continue_stream(offset, size)
        file_end = self._file_end(offset)
        if stream is None or file_end is None or self._spawn is None:
            return
        spans = self.index.spans
        limit = min(file_end, offset + size + stream.window)
        position = max(positions[-1], stream.horizon) + 1
        ahead, missing, on_disk = [], 0, []
        while position < len(spans) and spans[position].offset < limit:
            if position in self._inflight:
                pass
            elif not self._ready(position):
                ahead.append(position)
                missing += spans[position].blob_size
            elif position > stream.loaded and self._in_place is None:
                on_disk.append(position)
            position += 1
        if on_disk:
            self._load_ahead(stream, on_disk)
        whole = position >= len(spans) or spans[position].offset >= file_end
        urgent = bool(ahead) and ahead[0] == positions[-1] + 1
        if ahead and (urgent or missing >= MIN_RUN_BYTES or whole):
            stream.horizon = ahead[-1]
            self._spawn(lambda: self._prefetch(ahead))

    def _load_ahead(self, stream: _Stream, positions: list[int]) -> None:
        """Cached spans ahead of a sequential reader are read into span memory by a worker thread
        (with O_DIRECT where the file system takes it: the disk fills the buffer, no page-cache
        pages, no copy), so the reader is answered from memory and the event loop does no pread.
        Without room in span memory the kernel is asked to read the files ahead instead."""
        if self._spawn is None:
            return
        if self._memory.budget < 4 * self.index.span_size:
            stream.loaded = positions[-1]
            paths = [str(self._unsynced.get(p) or self._span_file(p)) for p in positions]
            self._spawn(lambda: trio.to_thread.run_sync(_will_need, paths))
            return
        # A quarter of span memory ahead of each reader at most (several readers share it, and
        # a span loaded too early would push out one not yet read); later reads load the next.
        limit, wanted = stream.end + self._memory.budget // 4, []
        for position in positions:
            if self.index.spans[position].end > limit:
                break
            stream.loaded = position
            if position not in self._loading and not self._memory.holds(self._owner, position):
                wanted.append(position)
        if not wanted:
            return
        self._loading.update(wanted)
        self._spawn(lambda: self._load(stream, wanted))

    async def _load(self, stream: _Stream, positions: list[int]) -> None:
        """Read these cached spans into span memory, in order, each as soon as it is read; one the
        reader already passed, or a file gone meanwhile (evicted), is left alone: the read path
        reads or fetches it as before."""
        try:
            for position in positions:
                span = self.index.spans[position]
                if self._closed or stream.end >= span.end:
                    continue
                path = self._unsynced.get(position) or self._span_file(position)
                try:
                    buffer = await trio.to_thread.run_sync(
                        read_span_file, self._memory, path, span.size
                    )
                except OSError as exc:
                    log.debug("span %d of %s not read ahead: %s", position, self.slot.label, exc)
                    continue
                if self._closed or self._memory.holds(self._owner, position):
                    self._memory.give(buffer)
                else:
                    self._memory.hold(self._owner, position, buffer, span.size)
        finally:
            self._loading.difference_update(positions)

    def _continue_stream(self, offset: int, size: int) -> _Stream | None:
        """The stream this read continues (its window grown) or opens; None for a random read.
        The kernel keeps a read or two in flight ahead of a sequential reader: a read that starts
        where one ended, or up to two read sizes further, continues a stream."""
        stream = None
        for end in self._streams:
            if end <= offset <= end + 2 * size:
                stream = self._streams.pop(end)
                stream.window = min(self._window_cap, stream.window * 2)
                break
        if stream is None:
            index = bisect.bisect_left(self._file_starts, offset)
            if index == len(self._file_starts) or self._file_starts[index] != offset:
                return None
            stream = _Stream(offset, min(self._window_cap, READAHEAD_START))
        stream.end = offset + size
        self._streams[stream.end] = stream
        while len(self._streams) > STREAMS:
            self._streams.popitem(last=False)
        return stream

    def _file_end(self, offset: int) -> int | None:
        """The end of the data of the file whose bytes hold ``offset`` (None between files)."""
        index = bisect.bisect_right(self._file_starts, offset) - 1
        if index < 0 or offset >= self._file_ends[index]:
            return None
        return self._file_ends[index]

    async def _prefetch(self, positions: list[int]) -> None:
        with contextlib.suppress(KitfsError):
            await self.ensure(positions)

    # -- fetching --------------------------------------------------------------------------------

    async def _fetch_run(self, run: list[int]) -> None:
        """Fetch a run of neighbouring spans with one Range request (again from the first span
        still missing when the answer ends short), verifying and storing each as it completes."""
        try:
            async with self._limiter:
                if self._in_place is not None and self._in_place_fd < 0:
                    self._in_place_fd = await trio.to_thread.run_sync(
                        os.open, self._in_place, os.O_RDONLY | os.O_CLOEXEC
                    )
                if self.cache.max_size is not None:
                    room = sum(self.index.spans[p].size for p in run)
                    await trio.to_thread.run_sync(self.cache.make_room, room)
                pending = list(run)
                for _attempt in range(RUN_ATTEMPTS):
                    pending = await self._stream(pending)
                    if not pending:
                        break
                for position in pending:
                    self._fail(position, "the registry kept ending its answer early")
                await self._retry_mismatched(run)
        except (KitfsError, OSError) as exc:
            for position in run:
                if not self._ready(position):
                    self._fail(position, str(exc))
        except Exception as exc:  # a worker that died: its readers get EIO, the mount goes on
            log.exception("fetching spans %d-%d of %s failed", run[0], run[-1], self.slot.label)
            for position in run:
                if not self._ready(position):
                    self._fail(position, f"fetching the span failed ({type(exc).__name__})")
        finally:
            for position in run:
                event = self._inflight.pop(position, None)
                if event is not None:
                    event.set()

    async def _retry_mismatched(self, run: list[int]) -> None:
        """Spans whose bytes did not match are asked for once more, from the origin registry
        (a mirror may have served them); what fails again stays failed (EIO)."""
        for position in [p for p in run if p in self._mismatched]:
            del self._mismatched[position]
            await self._stream([position], origin_only=True)
            reason = self._mismatched.pop(position, None)
            if reason is not None:
                self._fail(position, reason)

    async def _stream(self, pending: list[int], *, origin_only: bool = False) -> list[int]:
        """One request for the spans in ``pending``; the ones it did not deliver. The bytes are
        received, verified and stored in a worker thread (kitfs.fs.spansink); each span is
        reported to :meth:`_arrived` on the event loop as it completes."""
        spans = [self.index.spans[p] for p in pending]
        sink = SpanRunSink(
            spans,
            pending,
            self._verify_and_store,
            self._arrived,
            trio.lowlevel.current_trio_token(),
            self._memory,
        )
        start, end = spans[0].blob_offset, spans[-1].blob_end
        await self.source.stream_range(
            self.slot.descriptor, start, end - start, sink, origin_only=origin_only
        )
        sink.finish()
        return pending[sink.done :]

    def _arrived(
        self,
        position: int,
        temp: Path | None,
        plain: mmap.mmap | None,
        problem: str | None,
        mismatch: bool,
    ) -> None:
        """A span of a run was received and checked (on the event loop, in order)."""
        if problem is not None:
            reason = f"{self.slot.label} (layer {self.slot.digest}): {problem}"
            if mismatch:
                # Wrong bytes never reach a reader: the span is asked for again from the origin
                # when the run ends (then fails), and the rest of the run goes on.
                self._mismatched[position] = reason
            else:
                self._fail(position, reason)
            return
        self.fetched_spans += 1
        self._have.add(position)
        if plain is not None:
            self._memory.hold(self._owner, position, plain, self.index.spans[position].size)
        if temp is not None:
            self._unsynced[position] = temp
            if self._spawn is not None:
                self._to_persist.append((position, temp))
                if not self._persisting:
                    self._persisting = True
                    self._spawn(self._persist_queued)
        event = self._inflight.pop(position, None)
        if event is not None:
            event.set()  # readers waiting for this span go on while the run goes on

    async def _persist_queued(self) -> None:
        """Sync and name the spans that arrived, in batches: one worker-thread job for all that
        came while the last batch was syncing, not one per span."""
        try:
            while self._to_persist:
                batch, self._to_persist = self._to_persist, []
                with trio.CancelScope(shield=True):  # an unmount waits for it: the spans stay
                    await trio.to_thread.run_sync(self._persist_all, batch)
                for position, temp in batch:
                    if self._unsynced.get(position) == temp:
                        del self._unsynced[position]
        finally:
            self._persisting = False

    def _persist_all(self, batch: list[tuple[int, Path]]) -> None:
        for position, temp in batch:
            try:
                self._persist(position, temp)
            except OSError as exc:  # it stays served from its temp file, never named
                log.warning("span %d of %s cannot be cached: %s", position, self.slot.label, exc)

    def _verify_and_store(
        self, position: int, span: Span, buffer: mmap.mmap, data: memoryview
    ) -> tuple[Path | None, mmap.mmap | None]:
        """Check a span's bytes (``data``, a view of ``buffer``) against the index and write them
        (decompressed) to a temp file; return it and the buffer that holds the plain bytes, to
        serve from (``buffer`` itself for an uncompressed layer); (None, None) when the layer is
        read in place. Runs in a worker thread; raises DigestMismatchError or SpanIndexError for
        bytes that must not be used."""
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != span.digest:
            raise DigestMismatchError(span.digest, actual, f"span {position} at byte {span.offset}")
        if self._in_place is not None:
            return None, None
        decoded = decode_member(data, self.index.compression, span.size)
        if len(decoded) != span.size:
            raise SpanIndexError(f"span {position} holds {len(decoded)} bytes, not {span.size}")
        if decoded is data:
            plain = buffer
        else:
            plain = self._memory.take(span.size)
            plain[: span.size] = decoded
        temp = self.cache.temp_path("span")
        write_new_file(temp, memoryview(plain)[: span.size])
        # This reader serves the span from memory (or its temp file) at once. A cached span is
        # served by later mounts without hashing it again (its name is the digest of its
        # compressed bytes), so it gets that name only once it is on disk: _persist, in the
        # background.
        return temp, plain

    def _open(self, position: int) -> tuple[int, Path]:
        """An fd on a readable span's bytes: its temp file until it is synced, then its cache
        name (tried second too: the rename may have just happened)."""
        final = self.cache.span_path(self.index.spans[position].digest)
        temp = self._unsynced.get(position)
        for path in (temp, final) if temp is not None else (final,):
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC), path
            except FileNotFoundError:
                continue
        raise FileNotFoundError(final)

    def _persist(self, position: int, temp: Path) -> None:
        """Sync a span written by this reader, then give it its digest name (blocking; an open
        fd on the temp file keeps reading the same bytes after the rename)."""
        try:
            fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # the cache was cleared meanwhile
            return
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.cache.commit_span(temp, self.index.spans[position].digest)

    def _fail(self, position: int, reason: str) -> None:
        if position not in self._failed:
            log.error("span %d of %s cannot be served: %s", position, self.slot.label, reason)
        self._failed[position] = reason


def _will_need(paths: list[str]) -> None:
    """Start reading these files into the page cache (a worker thread; a file gone meanwhile,
    evicted, is simply fetched again by the read that needs it)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
