"""The pull side of the Distribution API: manifests (by tag or digest, verified when the digest is
known), small blobs in memory, Range reads and streams, and whole-blob downloads to a file (resumed
after a drop, in parallel Range parts when large, verified before the rename).

Every request goes through ``kitfs.oci.transport.Transport``; what arrives is handed on as it comes
(``kitfs.oci.download``) and checked against the digest the caller asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
from pathlib import Path

import httpx
import trio

from kitfs.errors import (
    DigestMismatchError,
    KitfsError,
    RegistryError,
    TransientError,
    leading_error,
)
from kitfs.oci import media
from kitfs.oci.auth import Scope
from kitfs.oci.body import body_pieces
from kitfs.oci.deadline import TransferTooSlow, paused
from kitfs.oci.download import RESUME_MIN, Download, Progress, Tee
from kitfs.oci.handoff import receive_body
from kitfs.oci.manifest import Descriptor
from kitfs.oci.sink import BufferSink, Counted, Sink
from kitfs.oci.transport import (
    CONTENT_RANGE_RE,
    IO_CHUNK,
    MAX_MANIFEST_SIZE,
    Headers,
    Target,
    Transport,
    blob_target,
    digest_of,
    is_digest,
    ref_text,
)

log = logging.getLogger(__name__)

MAX_SMALL_BLOB = 64 * 1024 * 1024
ACCEPT_MANIFESTS = ", ".join(media.MANIFEST_TYPES)


class Puller:
    """Reads one registry's manifests and blobs through ``transport``."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.registry = transport.registry
        self.options = transport.options
        self._ignores_range = False  # set when the registry answered a Range request with 200

    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index: (body, media type, digest), verified when asked by digest."""
        target = Target(repository, f"manifest {ref_text(repository, reference)}", "fetching")
        response, body = await self._transport.exchange(
            "GET",
            self._transport.url(repository, "manifests", reference),
            scopes=[Scope(repository)],
            headers={"Accept": ACCEPT_MANIFESTS},
            handle=self._transport.expect((200,), target, MAX_MANIFEST_SIZE),
        )
        media_type = self._manifest_media_type(response, body, target)
        return body, media_type, self._verify_manifest(response, body, reference, target)

    def _manifest_media_type(
        self, response: httpx.Response, body: bytes | None, target: Target
    ) -> str:
        declared = response.headers.get("content-type", "").split(";", 1)[0].strip()
        if declared in media.MANIFEST_TYPES:
            return declared
        with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            inner = json.loads(body).get("mediaType") if body else None
            if inner in media.MANIFEST_TYPES:
                return str(inner)
        raise RegistryError(
            f"registry {self.registry}: {target.noun} is not an OCI manifest (media type {declared or 'unknown'})"
        )

    def _verify_manifest(
        self, response: httpx.Response, body: bytes, reference: str, target: Target
    ) -> str:
        expected = (
            reference if is_digest(reference) else response.headers.get("docker-content-digest", "")
        )
        if is_digest(expected):
            actual = digest_of(body, expected)
            if actual != expected:
                raise DigestMismatchError(
                    expected, actual, f"{target.noun} from registry {self.registry}"
                )
            if is_digest(reference):
                return reference
        return digest_of(body)

    async def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest without fetching it; None when it does not exist."""
        target = Target(repository, f"manifest {ref_text(repository, reference)}", "checking")
        response, _ = await self._transport.exchange(
            "HEAD",
            self._transport.url(repository, "manifests", reference),
            scopes=[Scope(repository)],
            headers={"Accept": ACCEPT_MANIFESTS},
            handle=self._transport.expect((200, 404), target),
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("docker-content-digest", "")
        if is_digest(reference):
            digest = reference
        size = response.headers.get("content-length", "")
        if not is_digest(digest) or not size.isdigit():
            body, media_type, digest = await self.get_manifest(repository, reference)
            return Descriptor(media_type, digest, len(body))
        return Descriptor(self._manifest_media_type(response, None, target), digest, int(size))

    async def blob_exists(self, repository: str, digest: str) -> bool:
        target = blob_target(repository, digest, "checking")
        response, _ = await self._transport.exchange(
            "HEAD",
            self._transport.url(repository, "blobs", digest),
            scopes=[Scope(repository)],
            handle=self._transport.expect((200, 404), target),
        )
        return response.status_code == 200

    async def fetch_blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (a config) in memory, verified against its digest and ``size``."""
        target = blob_target(repository, digest, "fetching")
        limit = size if size is not None else MAX_SMALL_BLOB

        def oversize() -> KitfsError:
            return DigestMismatchError(digest, f"more than {size} bytes", target.noun)

        _, body = await self._transport.exchange(
            "GET",
            self._transport.url(repository, "blobs", digest),
            scopes=[Scope(repository)],
            handle=self._transport.expect(
                (200,), target, max(limit, 1), oversize if size is not None else None
            ),
        )
        actual = digest_of(body, digest)
        if actual != digest or (size is not None and len(body) != size):
            raise DigestMismatchError(
                digest, actual, f"{target.noun} from registry {self.registry}"
            )
        return body

    async def read_blob_range(
        self, repository: str, digest: str, offset: int, length: int
    ) -> bytes:
        """``length`` bytes of a blob from ``offset`` (fewer only at its end), unverified: the caller
        checks them against something it trusts (a layer index built from verified bytes)."""
        if length <= 0:
            return b""
        target = blob_target(repository, digest, f"reading bytes {offset}-{offset + length - 1} of")
        partial = self._transport.expect((206,), target, length)

        async def handle(response: httpx.Response) -> tuple[httpx.Response, bytes]:
            if response.status_code == 200:
                raise RegistryError(
                    f"registry {self.registry} ignored a Range request for {target.noun}: it cannot serve partial reads"
                )
            return await partial(response)

        response, body = await self._transport.exchange(
            "GET",
            self._transport.url(repository, "blobs", digest),
            scopes=[Scope(repository)],
            headers={"Range": f"bytes={offset}-{offset + length - 1}"},
            handle=handle,
        )
        match = CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
        if match is None or int(match.group(1)) != offset:
            raise RegistryError(
                f"registry {self.registry} answered a Range request for {target.noun} with the wrong range"
            )
        return body

    async def stream_blob_range(
        self,
        repository: str,
        digest: str,
        offset: int,
        length: int,
        sink: Sink,
        *,
        origin_only: bool = False,
    ) -> int:
        """Pass bytes [offset, offset + length) of a blob to ``sink`` in order, unverified (the
        caller checks them against digests it trusts); return how many arrived. The body is
        received in a worker thread (kitfs.oci.handoff). (``origin_only`` matters to a client
        with mirrors, kitfs.oci.endpoints; this one talks to one registry.)

        One range per request (some registries refuse multi-range). A dropped connection resumes
        after the last byte delivered; a registry that ignores Range and answers 200 is read as a
        stream, skipping to ``offset``. A short 206 returns fewer bytes, for the caller to retry.
        """
        counted = Counted(sink, length)
        target = blob_target(repository, digest, f"reading bytes {offset}- of")

        def headers() -> Headers:
            return {"Range": f"bytes={offset + counted.count}-{offset + length - 1}"}

        async def handle(response: httpx.Response) -> None:
            skip = 0
            if response.status_code == 200:
                skip = offset + counted.count
                self._ignores_range = True
                log.info(
                    "registry %s ignored a Range request: reading %s as a stream",
                    self.registry,
                    digest,
                )
            elif response.status_code == 206:
                match = CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
                if match is None or int(match.group(1)) != offset + counted.count:
                    raise RegistryError(
                        f"registry {self.registry} answered a Range request for {target.noun} with the wrong range"
                    )
            else:
                raise await self._transport.fail(response, target)
            await receive_body(response, counted, skip, self.options.timeout)

        if length > 0:
            await self._transport.exchange(
                "GET",
                self._transport.url(repository, "blobs", digest),
                scopes=[Scope(repository)],
                headers=headers,
                handle=handle,
            )
        return counted.count

    async def download_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        dest: Path,
        progress: Progress | None = None,
        *,
        tee: Tee | None = None,
        durable: bool = True,
    ) -> None:
        """Stream a blob to ``dest``: resumes dropped transfers with Range, verifies size and digest,
        and only then renames the temp file into place (nothing appears at ``dest`` otherwise).

        ``tee`` also gets every byte in order as it is written (kitfs.oci.download), for a reader
        that must not use them before this returns. ``durable=False`` skips the final fsync, for a
        file that is deleted after one read (it still resumes after a crash, not a power cut)."""
        state = Download(descriptor, dest, progress, tee=tee, durable=durable)
        try:
            await trio.to_thread.run_sync(state.prepare)
            if state.resumed:
                log.info(
                    "resuming %s after the %d bytes already here", descriptor.digest, state.resumed
                )
            await state.run(lambda: self._fetch_rest(repository, state))
            await trio.to_thread.run_sync(state.finish)
            self._check_download(state, repository)
            os.replace(state.temp, dest)
        except (KitfsError, Exception) as exc:
            await state.discarded(keep=isinstance(exc, TransientError))
            raise
        except BaseException:
            # Interrupted (Ctrl-C, or cancelled because another blob of the same pull failed):
            # keep what arrived to resume after, unless it is too little to be worth it.
            await state.discarded(keep=state.written >= RESUME_MIN)
            raise
        log.debug("downloaded %s (%d bytes) to %s", descriptor.digest, descriptor.size, dest)

    async def _fetch_rest(self, repository: str, state: Download) -> None:
        """Everything after what ``state`` holds: parallel parts for a large rest, then (or else)
        one stream; each byte goes to ``state.put`` in order."""
        size = state.descriptor.size
        if size - state.received >= self.options.parallel_min > 0:
            await self._download_parts(repository, state)
        if state.received < size or not size:
            await self._transport.exchange(
                "GET",
                self._transport.url(repository, "blobs", state.descriptor.digest),
                scopes=[Scope(repository)],
                headers=state.range_headers,
                handle=lambda response: self._receive(response, state, repository),
            )

    async def _download_parts(self, repository: str, state: Download) -> None:
        """The rest of a large blob as several Range requests at once (``concurrency``), handed
        on in order as each next part completes, so the file is always a clean prefix. The first
        part goes alone: a registry that answers it with the whole blob (it ignores Range) gets
        no more parallel requests, and the download goes on as one stream."""
        size = state.descriptor.size
        part = max(IO_CHUNK, self.options.range_part)
        starts = list(range(state.received, size, part))
        data: dict[int, BufferSink] = {}
        done = {start: trio.Event() for start in starts}
        # Parts held in memory, from their request until the writer has written them.
        slots = trio.Semaphore(max(1, self.options.concurrency) + 1)
        # Buffers of parts already written, for the next parts: a new 32 MiB buffer costs page
        # faults for every page of it, a reused one none. They are mappings, page-aligned, so
        # that a durable download writes them to disk from where they are (kitfs.directappend).
        spare: list[mmap.mmap] = []

        async def fetch(start: int) -> None:
            data[start] = await self._fetch_part(
                repository,
                state.descriptor.digest,
                start,
                part,
                size,
                spare.pop() if spare else mmap.mmap(-1, part),
            )
            done[start].set()

        async def commit(start: int) -> None:
            await done[start].wait()
            sink = data.pop(start)

            def written() -> None:
                if isinstance(sink.storage, mmap.mmap):
                    spare.append(sink.storage)
                if start != starts[0]:
                    slots.release()

            await state.put([sink.data], written)

        await fetch(starts[0])
        await commit(starts[0])
        if self._ignores_range or len(starts) == 1:
            return
        try:
            async with trio.open_nursery() as nursery:

                async def produce() -> None:
                    for start in starts[1:]:
                        await slots.acquire()
                        nursery.start_soon(fetch, start)

                nursery.start_soon(produce)
                for start in starts[1:]:
                    await commit(start)
        except BaseExceptionGroup as group:
            raise leading_error(group) from None

    async def _fetch_part(
        self,
        repository: str,
        digest: str,
        start: int,
        part: int,
        size: int,
        reuse: mmap.mmap | None = None,
    ) -> BufferSink:
        length = min(part, size - start)
        sink = BufferSink(length, reuse)
        for _attempt in range(self.options.retries):
            await self.stream_blob_range(
                repository, digest, start + sink.count, length - sink.count, sink
            )
            if sink.count >= length:
                return sink
        raise TransientError(
            f"registry {self.registry} kept ending its answers early for bytes {start}- of {digest}"
        )

    async def _receive(self, response: httpx.Response, state: Download, repository: str) -> None:
        target = blob_target(repository, state.descriptor.digest, "downloading")
        if response.status_code == 416 and state.received == state.descriptor.size:
            return  # the connection dropped after the last byte: nothing is left to fetch
        if response.status_code not in (200, 206):
            raise await self._transport.fail(response, target)
        if response.status_code == 200 and state.received:
            await state.restart()
        elif response.status_code == 206:
            match = CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != state.received:
                raise RegistryError(
                    f"registry {self.registry} resumed {target.noun} at the wrong offset"
                )
        pieces: list[bytes] = []
        held = 0
        try:
            async for chunk in body_pieces(response, self.options.timeout):
                pieces.append(chunk)
                held += len(chunk)
                if held >= IO_CHUNK:
                    await self._flush(state, pieces, held, target)
                    pieces, held = [], 0
        except (httpx.TransportError, TransferTooSlow):
            # The bytes that arrived before the drop are good: keep them and resume after them.
            await self._flush(state, pieces, held, target)
            raise
        await self._flush(state, pieces, held, target)

    async def _flush(self, state: Download, pieces: list[bytes], held: int, target: Target) -> None:
        if not pieces:
            return
        if state.received + held > state.descriptor.size:
            raise DigestMismatchError(
                state.descriptor.digest, f"more than {state.descriptor.size} bytes", target.noun
            )
        with paused():  # a full writer queue is our time, not the registry's
            await state.put(pieces)

    def _check_download(self, state: Download, repository: str) -> None:
        noun = blob_target(repository, state.descriptor.digest, "").noun
        actual = f"{state.hasher.name}:{state.hasher.hexdigest()}"
        if state.written != state.descriptor.size:
            raise DigestMismatchError(
                state.descriptor.digest,
                f"{state.written} bytes instead of {state.descriptor.size}",
                noun,
            )
        if actual != state.descriptor.digest:
            raise DigestMismatchError(
                state.descriptor.digest, actual, f"{noun} from registry {self.registry}"
            )
