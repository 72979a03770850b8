"""The push side of the Distribution API: blob uploads (a cross-repository mount when possible, else
one PUT, or PATCH chunks the registry asks for, resumed where it says it stopped) and manifest puts
and deletes.

The local side of an upload (reading the file once, hashing it as it goes, holding the last block
back until the digest matches) is ``kitfs.oci.upload``; this module owns the requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from kitfs.errors import (
    DigestMismatchError,
    KitfsError,
    RegistryError,
    StorageError,
    leading_error,
)
from kitfs.oci.auth import Scope
from kitfs.oci.download import ByteProgress, Progress, hasher_for
from kitfs.oci.manifest import Descriptor
from kitfs.oci.transport import (
    MAX_MANIFEST_SIZE,
    Target,
    Transport,
    blob_target,
    digest_of,
    is_digest,
    ref_text,
    transport_reason,
    with_query,
)
from kitfs.oci.upload import ChunkLimits, UploadSource, read_verified

log = logging.getLogger(__name__)

FALLBACK_CHUNK = 16 * 1024 * 1024  # PATCH size for a registry that refuses a whole blob (413)


@dataclass
class UploadSession:
    """An open upload: where to send the next request (each answer moves it) and the registry's
    chunk limits."""

    location: str
    limits: ChunkLimits


class Pusher:
    """Writes blobs and manifests to one registry through ``transport``; ``exists`` says whether
    the registry already holds a blob (the pull side's HEAD)."""

    def __init__(self, transport: Transport, exists: Callable[[str, str], Awaitable[bool]]) -> None:
        self._transport = transport
        self._exists = exists
        self.registry = transport.registry
        self.options = transport.options

    async def upload_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Path,
        progress: Progress | None = None,
        mount_from: str | None = None,
    ) -> None:
        """Upload ``source`` as ``descriptor``'s blob unless the registry has it: mount it from
        ``mount_from`` when possible; else a small blob is read, verified and sent in one PUT, and
        a larger one streams in one PUT too (or in the chunks the registry asks for), hashed as it
        is read. Either way the upload is committed only when the bytes sent hash to the digest: a
        damaged ``source`` raises DigestMismatchError and its upload session is cancelled."""
        tracker = ByteProgress(progress)
        actual_size = (await trio.to_thread.run_sync(os.stat, source)).st_size
        if actual_size != descriptor.size:
            raise StorageError(
                f"{source} is {actual_size} bytes but its descriptor says {descriptor.size}"
            )
        if await self._exists(repository, descriptor.digest):
            tracker.reached(descriptor.size)
            return
        data = None
        if descriptor.size <= self.options.chunked_threshold:
            data = await trio.to_thread.run_sync(
                read_verified, source, descriptor, hasher_for(descriptor.digest)
            )
        session = await self._start_upload(repository, descriptor, mount_from)
        if session is not None:
            if data is not None:
                await self._put_whole(repository, descriptor, data, session.location)
            else:
                await self._put_streamed(repository, descriptor, source, session, tracker)
        tracker.reached(descriptor.size)

    async def _start_upload(
        self, repository: str, descriptor: Descriptor, mount_from: str | None
    ) -> UploadSession | None:
        """Open an upload session; None when a cross-repo mount did it all."""
        target = blob_target(repository, descriptor.digest, "uploading")
        url = self._transport.url(repository, "blobs", "uploads/")
        scopes = [Scope(repository, ("pull", "push"))]
        if mount_from and mount_from != repository:
            url = with_query(with_query(url, "mount", descriptor.digest), "from", mount_from)
            scopes.append(Scope(mount_from))
        response, _ = await self._transport.exchange(
            "POST", url, scopes=scopes, handle=self._transport.expect((201, 202), target)
        )
        if response.status_code == 201:
            log.debug("mounted %s into %s from %s", descriptor.digest, repository, mount_from)
            return None
        return UploadSession(
            self._location(response, target), ChunkLimits.from_headers(response.headers)
        )

    def _location(self, response: httpx.Response, target: Target) -> str:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(
                f"registry {self.registry}: {target.action} {target.noun} failed: no upload location"
            )
        return str(response.url.join(location))

    async def _put_whole(
        self, repository: str, descriptor: Descriptor, data: bytes, location: str
    ) -> None:
        target = blob_target(repository, descriptor.digest, "uploading")
        await self._transport.exchange(
            "PUT",
            with_query(location, "digest", descriptor.digest),
            scopes=[Scope(repository, ("pull", "push"))],
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            handle=self._transport.expect((201, 204), target),
        )

    async def _put_streamed(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Path,
        session: UploadSession,
        tracker: ByteProgress,
    ) -> None:
        """Stream the blob, hashed as it is read: in one PUT that carries it and its digest when
        the registry takes it whole, else in PATCH chunks committed by a PUT once the hash of what
        was sent matches. On any failure but cancellation the session is cancelled, so nothing
        half-done remains."""
        target = blob_target(repository, descriptor.digest, "uploading")
        try:
            async with trio.open_nursery() as nursery:
                blob = UploadSource(
                    source,
                    descriptor,
                    lambda: hasher_for(descriptor.digest),
                    nursery,
                    tracker.reached,
                )
                try:
                    committed = await self._send_blob(repository, blob, session, target)
                    if not committed:
                        blob.verify()
                except Exception:
                    await self._cancel_upload(repository, session.location, target)
                    raise
                finally:
                    blob.close()
        except BaseExceptionGroup as group:
            raise leading_error(group) from None
        if not committed:
            await self._transport.exchange(
                "PUT",
                with_query(session.location, "digest", descriptor.digest),
                scopes=[Scope(repository, ("pull", "push"))],
                handle=self._transport.expect((201, 204), target),
            )

    async def _send_blob(
        self, repository: str, blob: UploadSource, session: UploadSession, target: Target
    ) -> bool:
        """Send the blob's bytes in order, following the session's location; True when the
        upload is committed too (a monolithic PUT). A dropped connection or a refused range (416)
        asks the registry how much it holds and goes on from there; a registry that dropped the
        session (404: distribution does when a body is cut short) gets a new one and the blob from
        the start; one that refuses a whole blob as too large (413) gets chunks. A whole-blob PUT whose
        answer was lost is done if the registry now has the blob."""
        size = blob.descriptor.size
        length = session.limits.chunk_length(self.options.chunk_size, size)
        offset = failures = 0
        monolithic = True
        while offset < size:
            end = min(offset + length, size)
            whole = monolithic and offset == 0 and end == size
            try:
                response = await self._send_part(
                    repository, blob, session, (offset, end), whole, target
                )
            except httpx.TransportError as exc:
                failures += 1
                self._transport.give_up(exc, failures)
                log.info(
                    "registry %s: %s while uploading %s, resuming (%d)",
                    self.registry,
                    transport_reason(exc),
                    blob.descriptor.digest,
                    failures,
                )
                await self._transport.backoff(failures, None)
                if whole and await self._exists(repository, blob.descriptor.digest):
                    return True  # the answer was lost, not the upload (its last block was verified)
            else:
                status = response.status_code
                if whole and status in (201, 204):
                    blob.acknowledge(end)
                    return True
                if status == 202:
                    session.location = self._location(response, target)
                    offset = end
                    blob.acknowledge(end)
                    continue
                failures += 1
                if status == 413:
                    monolithic = False
                    length = session.limits.chunk_length(FALLBACK_CHUNK, size)
                    log.info(
                        "registry %s refused a whole blob as too large: chunks of %d bytes",
                        self.registry,
                        length,
                    )
                elif failures >= self.options.retries:
                    raise RegistryError(
                        f"registry {self.registry}: {target.action} {target.noun} failed: "
                        f"it kept refusing bytes {offset}-{end - 1} (HTTP {status})"
                    )
            offset = await self._resume(repository, session, target)
        return False

    async def _send_part(
        self,
        repository: str,
        blob: UploadSource,
        session: UploadSession,
        span: tuple[int, int],
        whole: bool,
        target: Target,
    ) -> httpx.Response:
        """One request with the blob's bytes ``span``: a PUT with the digest for the ``whole``
        blob, else a PATCH with its Content-Range. Dropped connections are raised, not re-sent."""
        offset, end = span
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - offset)}
        ok: tuple[int, ...]
        if whole:
            method, url, ok = (
                "PUT",
                with_query(session.location, "digest", blob.descriptor.digest),
                (201, 204, 404, 413),
            )
        else:
            method, url, ok = "PATCH", session.location, (202, 404, 416)
            headers["Content-Range"] = f"{offset}-{end - 1}"
        response, _ = await self._transport.exchange(
            method,
            url,
            scopes=[Scope(repository, ("pull", "push"))],
            headers=headers,
            body=blob.body(offset, end),
            handle=self._transport.expect(ok, target),
            resend=False,
        )
        return response

    async def _resume(self, repository: str, session: UploadSession, target: Target) -> int:
        """How many bytes an interrupted upload session holds (its ``Range``), following its new
        location; a new session (at 0) when the registry no longer knows it."""
        scopes = [Scope(repository, ("pull", "push"))]
        response, _ = await self._transport.exchange(
            "GET",
            session.location,
            scopes=scopes,
            handle=self._transport.expect((204, 404), target),
        )
        if response.status_code == 404:
            log.info("registry %s dropped the upload session of %s", self.registry, target.noun)
            started, _ = await self._transport.exchange(
                "POST",
                self._transport.url(repository, "blobs", "uploads/"),
                scopes=scopes,
                handle=self._transport.expect((202,), target),
            )
            session.location = self._location(started, target)
            return 0
        if response.headers.get("location"):
            session.location = self._location(response, target)
        # distribution answers "0-0" for an empty session as well as for one byte: read it as 0.
        end = response.headers.get("range", "0-0").rpartition("-")[2]
        if not end.isdigit():
            raise RegistryError(
                f"registry {self.registry}: {target.action} {target.noun} failed: bad upload status"
            )
        return int(end) + 1 if int(end) > 0 else 0

    async def _cancel_upload(self, repository: str, location: str, target: Target) -> None:
        """Cancel an upload session (best effort: registries also expire abandoned ones)."""
        with contextlib.suppress(KitfsError):
            await self._transport.exchange(
                "DELETE",
                location,
                scopes=[Scope(repository, ("pull", "push"))],
                handle=self._transport.expect((204, 404), target),
            )

    async def put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> str:
        """Upload a manifest under a tag or its digest; returns its digest."""
        target = Target(repository, f"manifest {ref_text(repository, reference)}", "pushing")
        if len(body) > MAX_MANIFEST_SIZE:
            raise RegistryError(f"{target.noun} is larger than {MAX_MANIFEST_SIZE} bytes")
        digest = digest_of(body, reference if is_digest(reference) else "sha256:")
        if is_digest(reference) and digest != reference:
            raise DigestMismatchError(reference, digest, target.noun)
        response, _ = await self._transport.exchange(
            "PUT",
            self._transport.url(repository, "manifests", reference),
            scopes=[Scope(repository, ("pull", "push"))],
            headers={"Content-Type": media_type},
            body=body,
            handle=self._transport.expect((200, 201, 202, 204), target),
        )
        returned = response.headers.get("docker-content-digest", "")
        if returned.startswith("sha256:") and digest.startswith("sha256:") and returned != digest:
            raise DigestMismatchError(
                digest, returned, f"{target.noun} as stored by registry {self.registry}"
            )
        return digest

    async def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        target = Target(repository, f"manifest {repository}@{digest}", "deleting")
        await self._transport.exchange(
            "DELETE",
            self._transport.url(repository, "manifests", digest),
            scopes=[Scope(repository, ("delete",))],
            handle=self._transport.expect((200, 202, 204), target),
        )
