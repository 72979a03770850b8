"""An async client for the OCI Distribution API (manifests, blobs, ranges, uploads, tags) on httpx.

It runs under trio (httpx picks its trio backend through anyio). ``RegistryClient`` is the one object
callers hold; it is composed of the transport (connections, TLS, auth, the retry loop and error
mapping: ``kitfs.oci.transport``), the pull side (``kitfs.oci.pull``), the push side
(``kitfs.oci.push``) and the lists (``kitfs.oci.listing``), all sharing one transport.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import httpx

from kitfs.oci.auth import CredentialSource
from kitfs.oci.download import Progress, Tee
from kitfs.oci.listing import Lister
from kitfs.oci.manifest import Descriptor
from kitfs.oci.options import RegistryOptions
from kitfs.oci.pull import Puller
from kitfs.oci.push import Pusher
from kitfs.oci.sink import Sink
from kitfs.oci.transport import Transport, endpoint_host

__all__ = ["RegistryClient", "RegistryOptions", "endpoint_host"]


class RegistryClient:
    """One registry's Distribution API; use as ``async with RegistryClient(host) as client``."""

    def __init__(
        self,
        registry: str,
        options: RegistryOptions | None = None,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.registry = registry
        self.options = options or RegistryOptions()
        self._transport = Transport(registry, self.options, credentials)
        self.base_url = self._transport.base_url
        self._pull = Puller(self._transport)
        self._push = Pusher(self._transport, self._pull.blob_exists)
        self._lists = Lister(self._transport)

    @property
    def _http(self) -> httpx.AsyncClient:
        """The underlying httpx client (for tests that send a raw request, e.g. a DELETE)."""
        return self._transport.http

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def ping(self) -> None:
        """Check that the registry answers the Distribution API and accepts our credentials."""
        await self._transport.ping()

    # --- pull ------------------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index: (body, media type, digest), verified when asked by digest."""
        return await self._pull.get_manifest(repository, reference)

    async def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest without fetching it; None when it does not exist."""
        return await self._pull.head_manifest(repository, reference)

    async def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the registry holds the blob ``digest`` in ``repository``."""
        return await self._pull.blob_exists(repository, digest)

    async def fetch_blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (a config) in memory, verified against its digest and ``size``."""
        return await self._pull.fetch_blob(repository, digest, size)

    async def read_blob_range(
        self, repository: str, digest: str, offset: int, length: int
    ) -> bytes:
        """``length`` bytes of a blob from ``offset``, unverified (see ``Puller.read_blob_range``)."""
        return await self._pull.read_blob_range(repository, digest, offset, length)

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
        """Pass bytes [offset, offset + length) of a blob to ``sink`` in order, unverified;
        return how many arrived (see ``Puller.stream_blob_range``)."""
        return await self._pull.stream_blob_range(
            repository, digest, offset, length, sink, origin_only=origin_only
        )

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
        """Stream a blob to ``dest``, resumed, verified, then renamed into place (see
        ``Puller.download_blob``)."""
        await self._pull.download_blob(
            repository, descriptor, dest, progress, tee=tee, durable=durable
        )

    # --- push ------------------------------------------------------------------------------------

    async def upload_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Path,
        progress: Progress | None = None,
        mount_from: str | None = None,
    ) -> None:
        """Upload ``source`` as ``descriptor``'s blob unless the registry has it, committed only
        when the bytes sent hash to the digest (see ``Pusher.upload_blob``)."""
        await self._push.upload_blob(repository, descriptor, source, progress, mount_from)

    async def put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> str:
        """Upload a manifest under a tag or its digest; returns its digest."""
        return await self._push.put_manifest(repository, reference, body, media_type)

    async def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (the registry must allow deletes)."""
        await self._push.delete_manifest(repository, digest)

    # --- lists -----------------------------------------------------------------------------------

    async def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        """All tags of a repository, following ``Link: <...>; rel="next"`` pages."""
        return await self._lists.list_tags(repository, page_size)

    async def list_referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> bytes | None:
        """The referrers API's image index for ``digest``, unparsed; None without a referrers API."""
        return await self._lists.list_referrers(repository, digest, artifact_type)
