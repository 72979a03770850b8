"""Layers on demand: fetch once, verify, decompress, index, and serve reads from the verified tar.

v1 of the design (docs/architecture.md): the first need of a layer (listing or opening a file in it)
fetches the whole blob, streamed and verified against its digest, then decompresses it once into
the cache as a tar named by its own digest (checked against the Kitfile's ``diffId`` when given) and
indexes its entries in the same pass. Reads are then ``os.pread`` at an entry's offset in that tar.
An uncompressed blob that kit's local storage (or the mounted OCI layout) already holds is read in
place after one hash per mount process. Concurrent needs of one layer wait on one fetch: a trio lock
per digest in this process, an ``flock`` per digest across processes sharing the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

import trio
from cachetools import TTLCache

from kitfs.errors import DigestMismatchError, KitfsError, UnsafeContentError
from kitfs.fs.source import Source
from kitfs.fs.spanmemory import DEFAULT_BUDGET, IDLE_RELEASE, SpanMemory
from kitfs.fs.spanreader import SpanError, SpanReader
from kitfs.fs.tarreader import TarReader
from kitfs.fs.tree import LayerSlot, MountTree
from kitfs.layers.codec import inflate_limit
from kitfs.layers.hashing import hash_file
from kitfs.layers.raw import raw_entry, scan_raw
from kitfs.layers.scan import ScanResult, check_blob, check_diff_id, scan_layer
from kitfs.layers.spanindex import (
    MAX_INDEX_SIZE,
    IndexLocation,
    SpanIndex,
    SpanIndexError,
    decode_member,
    location_of,
    parse_index,
    trailing_allowance,
)
from kitfs.layers.tarindex import TarEntry
from kitfs.oci.sink import BufferSink
from kitfs.onepass import read_while_downloading
from kitfs.progress import NullProgress, ProgressSink
from kitfs.storage.cache import BlobCache, LayerRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int], None]
FAILURE_TTL = 5.0  # seconds a failed layer answers EIO at once instead of being fetched again
PROGRESS_MIN_SIZE = 16 << 20  # smaller layers get a log line, not a progress bar
BACKGROUND_SYNC_MIN = 64 << 20  # fresh tars this large are synced after reads start, not before
LOCK_POLL = 0.05


class LayerError(KitfsError):
    """A layer cannot be served: it failed to download, verify, decompress or index."""


class LayerReader(Protocol):
    """What a layer is read through while files in it are open: its whole verified tar
    (kitfs.fs.tarreader) or, for a layer with a pinned span index, its spans (kitfs.fs.spanreader)."""

    async def read(self, offset: int, size: int) -> bytes | memoryview: ...

    def read_now(self, offset: int, size: int) -> bytes | memoryview | None:
        """The bytes when they can be had without waiting (nothing to fetch, nothing large to
        read), else None: ``read`` then gets them."""
        ...

    async def check_entry(self, offset: int, name: str, size: int) -> None: ...

    def close(self) -> None: ...


class OpenLayer:
    """A layer held open for reading while files in it are open, through its reader."""

    def __init__(self, digest: str, reader: LayerReader) -> None:
        self.digest = digest
        self.reader = reader
        self.users = 0

    @property
    def spans(self) -> SpanReader | None:
        """The span reader, for a layer read by spans (``fill`` fetches them all)."""
        return self.reader if isinstance(self.reader, SpanReader) else None

    def close(self) -> None:
        self.reader.close()


class LayerStore:
    """Per-mount access to layers: ``index`` for the tree, ``open``/``read``/``release`` for files."""

    def __init__(
        self,
        source: Source,
        cache: BlobCache,
        *,
        progress: ProgressSink | None = None,
        concurrency: int = 4,
        failure_ttl: float = FAILURE_TTL,
        span_memory: int = DEFAULT_BUDGET,
        memory_idle: float = IDLE_RELEASE,
    ) -> None:
        self.source = source
        self.cache = cache
        self.progress = progress or NullProgress()
        self._downloads = trio.CapacityLimiter(max(1, concurrency))
        self.memory = SpanMemory(span_memory)  # verified spans waiting for their readers
        self.memory_idle = memory_idle  # seconds unused before span memory is released
        self._releasing: trio.CancelScope | None = None  # the release task, ended by close
        self._locks: dict[str, trio.Lock] = {}
        self._records: dict[str, LayerRecord] = {}
        self._verified_in_place: set[str] = set()
        self._open: dict[str, OpenLayer] = {}
        self._failures: TTLCache[str, str] = TTLCache(maxsize=4096, ttl=failure_ttl)
        self._failure_ttl = failure_ttl
        self._span_indexes: dict[str, SpanIndex] = {}
        self._refused_indexes: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self.fetches = 0  # layers this process fetched or decompressed (for logs and tests)

    def attach(self, nursery: trio.Nursery) -> None:
        """Give the store a nursery for background work (read-ahead of span layers); span
        memory left idle goes back to the system (a task that ends with the event loop)."""
        self._nursery = nursery
        if self._releasing is None:
            self._releasing = trio.CancelScope()
            trio.lowlevel.spawn_system_task(self._release_idle_memory, self._releasing)

    async def _release_idle_memory(self, scope: trio.CancelScope) -> None:
        """Every few seconds, span memory unused for ``memory_idle`` seconds is released; until
        the store closes (a process that opens many stores, fsspec sessions, keeps none alive)."""
        with scope:
            while True:
                await trio.sleep(max(0.05, self.memory_idle / 4))
                try:
                    released = self.memory.release_if_idle(self.memory_idle)
                except Exception:  # a system task must not fail: it would end the whole run
                    log.exception("releasing idle span memory failed")
                    continue
                if released:
                    log.debug("span memory idle: %d bytes released", released)

    def _spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(job)

    async def _after(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` in the background when the store has a nursery, else now."""
        if self._nursery is not None:
            self._nursery.start_soon(job)
        else:
            await job()

    async def _persist(self, record: LayerRecord) -> None:
        """Sync a freshly written tar to disk, then write its record."""

        def sync_then_record() -> None:
            try:
                fd = os.open(self.cache.tar_path(record.diff_id), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # evicted meanwhile: nothing to vouch for
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.cache.write_record(record)

        await trio.to_thread.run_sync(sync_then_record)

    def _lock(self, digest: str) -> trio.Lock:
        return self._locks.setdefault(digest, trio.Lock())

    # -- the index ---------------------------------------------------------------------------

    async def index(self, slot: LayerSlot) -> tuple[TarEntry, ...]:
        """The layer's tar entries (fetching and verifying the layer if no index is cached)."""
        spans = self._span_indexes.get(slot.digest)
        if spans is not None:
            return spans.entries
        record = self._records.get(slot.digest)
        if record is None:
            async with self._lock(slot.digest):
                spans = await self._guarded(slot, self._span_index)
                if spans is not None:
                    return spans.entries
                record = await self._guarded(slot, self._record)
        return record.entries

    # -- span indexes ----------------------------------------------------------------------------

    async def _span_index(self, slot: LayerSlot) -> SpanIndex | None:
        """The layer's pinned span index, verified (None when it has none, or one we refused:
        such a layer is then fetched whole and verified before any byte of it is served)."""
        found = self._span_indexes.get(slot.digest)
        if found is not None or slot.digest in self._refused_indexes:
            return found
        desc = slot.descriptor
        location = location_of(desc.annotations, desc.size)
        if location is None:
            return None
        data = await self._index_bytes(slot, location)
        try:
            index = parse_index(data, location, compression=slot.compression, blob_size=desc.size)
            if slot.raw and index.entries != (raw_entry(desc, index.tar_size),):
                raise SpanIndexError("its entry is not the raw layer's file")
        except (SpanIndexError, UnsafeContentError) as exc:
            log.warning(
                "%s (layer %s): span index refused (%s): the layer will be fetched whole and "
                "verified before it is served",
                slot.label,
                desc.digest,
                exc,
            )
            self._refused_indexes.add(slot.digest)
            return None
        if location.inline is None:
            await trio.to_thread.run_sync(self.cache.write_blob, location.digest, data)
        self._span_indexes[slot.digest] = index
        log.info(
            "%s (layer %s): span index of %d spans, %d entries",
            slot.label,
            desc.digest,
            len(index.spans),
            len(index.entries),
        )
        return index

    async def _index_bytes(self, slot: LayerSlot, location: IndexLocation) -> bytes:
        """The index bytes as pinned (checked by the caller): from the manifest, the cache, or
        one Range request of the blob."""
        if location.inline is not None:
            return location.inline
        data = await trio.to_thread.run_sync(self.cache.read_blob, location.digest)
        if data is not None:
            return data
        sink = BufferSink(location.size)
        async with self._downloads:
            await self.source.stream_range(slot.descriptor, location.offset, location.size, sink)
        return bytes(sink.data)

    async def _record(self, slot: LayerSlot) -> LayerRecord:
        record = self._records.get(slot.digest)
        if record is None:
            record = await trio.to_thread.run_sync(self.cache.read_record, slot.digest)
            if record is not None and slot.diff_id and record.diff_id != slot.diff_id:
                log.warning("cached index of %s names another diffId: rebuilding it", slot.digest)
                record = None
            if record is None:
                record = await self._materialize(slot)
            self._records[slot.digest] = record
        return record

    # -- open files ----------------------------------------------------------------------------

    async def open(self, slot: LayerSlot) -> OpenLayer:
        """Hold the layer's verified tar open (fetching it if needed); pair with ``release``."""
        async with self._lock(slot.digest):
            layer = self._open.get(slot.digest)
            if layer is None:
                spans = None
                if not await self._whole_in_cache(slot):
                    spans = await self._guarded(slot, self._span_index)
                if spans is not None:
                    reader = SpanReader(
                        slot,
                        spans,
                        self.source,
                        self.cache,
                        self._downloads,
                        spawn=self._spawn,
                        failure_ttl=self._failure_ttl,
                        memory=self.memory,
                    )
                    layer = OpenLayer(slot.digest, reader)
                else:
                    layer = await self._guarded(slot, self._acquire)
                self._open[slot.digest] = layer
            layer.users += 1
            return layer

    async def fill(self, slot: LayerSlot, layer: OpenLayer) -> None:
        """Bring the whole layer into the cache, verified (``kitfs prefetch``). A layer without
        an index is whole once open; a span layer's spans are all fetched, then joined into the
        layer's tar, checked against the digest that names it (the diffId, or the blob digest of
        an uncompressed layer), so that unpack and later mounts find it whole, offline too."""
        spans = layer.spans
        if spans is None:
            return
        try:
            await spans.ensure(range(len(spans.index.spans)))
        except SpanError as exc:
            raise LayerError(str(exc)) from None
        if spans.fetched_spans:
            self.fetches += 1
        if spans.in_place or self.source.local_blob(slot.descriptor) is not None:
            return  # the blob is on this machine: nothing to keep twice
        trailer = await self._index_trailer(slot)
        expected = slot.digest if slot.compression == "none" else slot.diff_id
        try:
            record = await trio.to_thread.run_sync(spans.join, trailer, expected)
        except (OSError, KitfsError) as exc:
            raise LayerError(
                f"{slot.label} (layer {slot.digest}) cannot be cached whole: {exc}"
            ) from None
        await trio.to_thread.run_sync(self.cache.write_record, record)

    async def _index_trailer(self, slot: LayerSlot) -> bytes:
        """What follows the tar in the layer's uncompressed stream: its embedded index, if any."""
        location = location_of(slot.descriptor.annotations, slot.descriptor.size)
        if location is None or location.inline is not None:
            return b""
        data = await self._index_bytes(slot, location)
        return bytes(decode_member(data, slot.compression, MAX_INDEX_SIZE))

    async def check_entry(self, layer: OpenLayer, offset: int, name: str, size: int) -> None:
        """Before a file is read: its tar header must agree with the index (span layers)."""
        try:
            await layer.reader.check_entry(offset, name, size)
        except SpanError as exc:
            raise LayerError(str(exc)) from None

    async def _whole_in_cache(self, slot: LayerSlot) -> bool:
        """Whether the cache holds the layer's whole verified tar (then it is read from there).
        Decided once per layer and process: a span layer stays one, not re-checked on each open."""
        if slot.digest in self._span_indexes:
            return False
        if slot.digest in self._records:
            return True
        record = await trio.to_thread.run_sync(self.cache.read_record, slot.digest)
        if record is None:
            return False
        return await trio.to_thread.run_sync(self.cache.tar_path(record.diff_id).is_file)

    def release(self, layer: OpenLayer) -> None:
        layer.users -= 1
        if layer.users <= 0 and self._open.get(layer.digest) is layer:
            del self._open[layer.digest]
            layer.close()

    async def read(self, layer: OpenLayer, offset: int, size: int) -> bytes | memoryview:
        """Bytes of a layer's verified tar, through its reader (a span layer fetches and verifies
        the spans it needs first). A memoryview is valid until the caller next awaits: a FUSE
        reply is sent before; anything that keeps the bytes copies them."""
        try:
            return await layer.reader.read(offset, size)
        except SpanError as exc:
            raise LayerError(str(exc)) from None

    def read_now(self, layer: OpenLayer, offset: int, size: int) -> bytes | memoryview | None:
        """``read``'s bytes when they are ready now (see ``LayerReader.read_now``), else None;
        errors are the reader's own (the caller falls back to ``read``)."""
        return layer.reader.read_now(offset, size)

    def close(self) -> None:
        for layer in list(self._open.values()):
            layer.close()
        self._open.clear()
        if self._releasing is not None:
            self._releasing.cancel()
        self.memory.release_if_idle(0.0)

    async def _acquire(self, slot: LayerSlot) -> OpenLayer:
        record = await self._record(slot)
        if slot.compression == "none":
            in_place = await self._open_in_place(slot)
            if in_place is not None:
                return in_place
        for _attempt in range(3):
            pinned = await trio.to_thread.run_sync(self.cache.pin, record.diff_id)
            if pinned is not None:
                # An uncompressed layer's tar is its blob, written with O_DIRECT: read around the
                # page cache too. A decompressed tar was written through it (still dirty, an
                # O_DIRECT read would first wait for its writeback): read plainly.
                direct = slot.compression == "none"
                return OpenLayer(slot.digest, TarReader(pinned.fd, pinned, direct=direct))
            record = await self._materialize(slot)
            self._records[slot.digest] = record
        raise LayerError(f"layer {slot.digest} keeps disappearing from the cache {self.cache.root}")

    async def _open_in_place(self, slot: LayerSlot) -> OpenLayer | None:
        path = self.source.local_blob(slot.descriptor)
        if path is None:
            return None
        if slot.digest not in self._verified_in_place:
            digest, size = await trio.to_thread.run_sync(hash_file, path)
            if digest != slot.digest or size != slot.descriptor.size:
                raise DigestMismatchError(slot.digest, digest, f"layer {slot.digest} in {path}")
            self._verified_in_place.add(slot.digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        return OpenLayer(slot.digest, TarReader(fd))

    # -- failures --------------------------------------------------------------------------------

    async def _guarded(self, slot: LayerSlot, step: Callable[[LayerSlot], Awaitable[T]]) -> T:
        """Run a fetching step. A failure is logged once with the digest, becomes a LayerError
        (EIO for the reader), and is answered at once for a few seconds instead of refetched."""
        failed = self._failures.get(slot.digest)
        if failed is not None:
            raise LayerError(failed)
        try:
            return await step(slot)
        except (KitfsError, OSError) as exc:
            message = f"{slot.label} (layer {slot.digest}) cannot be served: {exc}"
            log.error("%s", message)
            self._failures[slot.digest] = message
            raise LayerError(message) from exc

    # -- fetching ------------------------------------------------------------------------------

    async def _materialize(self, slot: LayerSlot) -> LayerRecord:
        """Make the layer's verified tar (or in-place blob) and its index available; once across
        processes: whoever holds the digest's fetch lock does it, the others wait and reuse it."""
        while True:
            with self.cache.try_fetch_lock(slot.digest) as taken:
                if taken:
                    record = await trio.to_thread.run_sync(self.cache.read_record, slot.digest)
                    if record is not None and await self._available(slot, record):
                        return record
                    return await self._fetch(slot)
            await trio.sleep(LOCK_POLL)

    async def _available(self, slot: LayerSlot, record: LayerRecord) -> bool:
        if slot.compression == "none" and self.source.local_blob(slot.descriptor) is not None:
            return True
        return await trio.to_thread.run_sync(self.cache.tar_path(record.diff_id).is_file)

    async def _fetch(self, slot: LayerSlot) -> LayerRecord:
        desc = slot.descriptor
        what = f"{slot.label} (layer {desc.digest})"
        started = time.monotonic()
        local = self.source.local_blob(desc)
        cached = await self._cached_tar(slot)
        written = False  # a tar this fetch wrote (not yet synced to disk)
        if local is not None and slot.compression == "none":
            result = await self._scan(slot, local, None, what)
            check_blob(desc, result, f"in {local}")
            self._verified_in_place.add(desc.digest)
        elif cached is not None:
            result = await self._rescan(slot, cached, what)
        elif local is not None:
            result = await self._decompress(slot, local, what, verified=False)
            written = True
        else:
            result = await self._download(slot, what)
            written = True
        check_diff_id(slot.diff_id, slot.descriptor, result)
        record = LayerRecord(desc.digest, result.tar_digest, result.entries)
        if written and result.tar_size >= BACKGROUND_SYNC_MIN:
            # Reads are served now, from the verified file in the page cache; the record that
            # lets later mounts trust the tar without hashing it is written only once the tar is
            # on disk (a crash before leaves a tar without a record: it is hashed again).
            await self._after(lambda: self._persist(record))
        elif written:
            await self._persist(record)
        else:
            await trio.to_thread.run_sync(self.cache.write_record, record)
        self.fetches += 1
        elapsed = max(time.monotonic() - started, 1e-6)
        log.info(
            "%s: verified %d bytes (%d uncompressed, %d entries) in %.2fs",
            what,
            desc.size,
            result.tar_size,
            len(result.entries),
            elapsed,
        )
        return record

    async def _cached_tar(self, slot: LayerSlot) -> Path | None:
        """The layer's tar if the cache holds it although its index is gone (it is named by the
        digest of the uncompressed tar, known for a plain layer and from the Kitfile's diffId)."""
        tar_digest = slot.digest if slot.compression == "none" else slot.diff_id
        if tar_digest is None:
            return None
        path = self.cache.tar_path(tar_digest)
        return path if await trio.to_thread.run_sync(path.is_file) else None

    async def _rescan(self, slot: LayerSlot, path: Path, what: str) -> ScanResult:
        """Index a cached tar again, checking it against the digest that names it."""
        plain = dataclasses.replace(slot, compression="none")
        size = (await trio.to_thread.run_sync(path.stat)).st_size
        expected = slot.digest if slot.compression == "none" else slot.diff_id
        result = await self._scan(plain, path, None, what, limit=size, expected=expected)
        if result.tar_digest != expected:
            path.unlink(missing_ok=True)
            raise DigestMismatchError(str(expected), result.tar_digest, f"cached tar of {what}")
        return dataclasses.replace(result, blob_digest=slot.digest, blob_size=slot.descriptor.size)

    async def _scan(
        self,
        slot: LayerSlot,
        path: Path | BinaryIO,
        out: Path | None,
        what: str,
        *,
        verified: bool = False,
        limit: int | None = None,
        expected: str | None = None,
    ) -> ScanResult:
        scan = self._scanner(slot, out, what, verified=verified, limit=limit, expected=expected)
        return await trio.to_thread.run_sync(scan, path)

    def _scanner(
        self,
        slot: LayerSlot,
        out: Path | None,
        what: str,
        *,
        verified: bool = False,
        limit: int | None = None,
        expected: str | None = None,
    ) -> Callable[[Path | BinaryIO], ScanResult]:
        """The blocking scan of a layer's blob (a file or a stream), for a worker thread."""
        bound = inflate_limit(slot.descriptor.size, slot.compression) if limit is None else limit
        digest = expected or slot.digest
        if slot.raw:
            return lambda path: scan_raw(
                slot.descriptor,
                path,
                slot.compression,
                out,
                limit=bound,
                what=what,
                verified=verified,
                expected=digest,
                durable=False,
            )
        return lambda path: scan_layer(
            path,
            slot.compression,
            out,
            limit=bound,
            what=what,
            expected_digest=digest,
            verified=verified,
            trailing=trailing_allowance(slot.descriptor.annotations, slot.descriptor.size),
            durable=False,
        )

    async def _decompress(
        self, slot: LayerSlot, blob: Path, what: str, *, verified: bool
    ) -> ScanResult:
        """Decompress a blob into the cache as its tar; verify the blob unless already done."""
        temp = self.cache.temp_path("tar")
        try:
            result = await self._scan(slot, blob, temp, what, verified=verified)
            if not verified:
                check_blob(slot.descriptor, result, f"in {blob}")
            check_diff_id(slot.diff_id, slot.descriptor, result)
            await trio.to_thread.run_sync(self.cache.make_room, 0)
            await trio.to_thread.run_sync(self.cache.commit_tar, temp, result.tar_digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return result

    async def _download(self, slot: LayerSlot, what: str) -> ScanResult:
        desc = slot.descriptor
        log.info("%s: fetching %d bytes from %s", what, desc.size, self.source.description)
        async with self._downloads:
            await trio.to_thread.run_sync(self.cache.drop_partials, desc.digest)
            await trio.to_thread.run_sync(self.cache.make_room, desc.size)
            advance = self._progress_for(slot)
            if slot.compression == "none":
                dest = self.cache.tar_path(desc.digest)
                await self.source.download(desc, dest, advance, durable=False)
                os.chmod(dest, self.cache.file_mode)  # downloads are 0600; a shared cache reads
                try:
                    return await self._scan(slot, dest, None, what, verified=True)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        dest.unlink()
                    raise
            # Named by digest, not by process: a fetch that a killed or restarted daemon left
            # half done continues from what it had (kitfs.oci.download keeps the partial file).
            # The blob is read once, as it arrives: it is decompressed, hashed and indexed into
            # the tar's temp file in the same pass, and the tar is committed only once the blob's
            # digest checked out. The blob file is only there to resume from, so it is not synced.
            blob = self.cache.tmp / f"blob-{desc.hex}"
            temp = self.cache.temp_path("tar")
            try:
                result = await self._one_pass(slot, blob, temp, what, advance)
                check_diff_id(slot.diff_id, slot.descriptor, result)
                await trio.to_thread.run_sync(self.cache.make_room, 0)
                await trio.to_thread.run_sync(self.cache.commit_tar, temp, result.tar_digest)
                return result
            finally:
                for leftover in (blob, temp):
                    with contextlib.suppress(FileNotFoundError):
                        leftover.unlink()

    async def _one_pass(
        self, slot: LayerSlot, blob: Path, out: Path, what: str, advance: Progress | None
    ) -> ScanResult:
        """Download ``blob`` while a worker thread decompresses, hashes and indexes it into
        ``out`` (kitfs.onepass: the download's digest check decides, before ``out`` is used)."""
        scan = self._scanner(slot, out, what, verified=True)
        return await read_while_downloading(
            lambda tee: self.source.download(
                slot.descriptor, blob, advance, tee=tee, durable=False
            ),
            scan,
            lambda: scan(blob),
            what,
        )

    def _progress_for(self, slot: LayerSlot) -> Progress | None:
        if slot.descriptor.size < PROGRESS_MIN_SIZE:
            return None
        return self.progress.task(f"fetch {slot.label}", slot.descriptor.size).advance


async def index_into(store: LayerStore, tree: MountTree, slots: Sequence[LayerSlot]) -> None:
    """Index layers for a tree, several at once; the first failure is raised after all have
    finished (as itself: an exception group would hide the errno it maps to)."""
    failures: list[Exception] = []

    async def one(slot: LayerSlot) -> None:
        try:
            entries = await store.index(slot)
        except (KitfsError, OSError) as exc:
            failures.append(exc)
            return
        tree.add_index(slot.digest, entries)

    async with trio.open_nursery() as nursery:
        for slot in slots:
            nursery.start_soon(one, slot)
    if failures:
        raise failures[0]
