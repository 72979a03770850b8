"""ModelKits in a registry as a mount source: manifests and configs through the mount cache
(kitfs.offline, so a cached ModelKit mounts while its registry is away), layer blobs downloaded or
streamed by range, and blobs kit's local storage already holds used in place. Its own module so
that mounts of local storage and OCI layouts load no HTTP client."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import trio
from cachetools import TTLCache

from kitfs.config import Paths, Refresh
from kitfs.errors import DigestMismatchError, NotFoundError, StorageError
from kitfs.fs.source import (
    MAX_CONFIG_SIZE,
    TAG_TTL,
    Progress,
    ResolvedModelKit,
    Source,
    modelkit_from,
)
from kitfs.oci.auth import CredentialStore
from kitfs.oci.client import RegistryClient
from kitfs.oci.download import Tee
from kitfs.oci.endpoints import open_client
from kitfs.oci.manifest import Descriptor, Manifest, ManifestError
from kitfs.oci.options import RegistryOptions
from kitfs.oci.sink import Sink
from kitfs.oci.tags import model_tags
from kitfs.offline import CachedResolver
from kitfs.reference import Reference
from kitfs.storage.cache import BlobCache
from kitfs.storage.local import LocalStore

log = logging.getLogger(__name__)


class RegistrySource(Source):
    """ModelKits in a registry; blobs kit's local storage already holds are used in place."""

    def __init__(
        self,
        ref: Reference,
        client: RegistryClient,
        store: LocalStore,
        cache: BlobCache,
        refresh: Refresh = "auto",
    ) -> None:
        self.ref = ref
        self.client = client
        self.store = store
        self.cache = cache
        self.description = ref.name
        self.target = ref.reference
        self.warnings: list[str] = []
        self.resolver = CachedResolver(client, cache, ref.registry, refresh, self._warn)
        self._manifests: TTLCache[str, tuple[str, bytes]] = TTLCache(maxsize=256, ttl=TAG_TTL)

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self.warnings.append(message)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def resolve(self, reference: str) -> ResolvedModelKit:
        name = self.name_for(reference)
        digest, body = await self._manifest(reference)
        manifest = Manifest.from_bytes(body, f"manifest of {name}")
        config = await self._config(manifest.config)
        return modelkit_from(name, digest, manifest, config)

    async def _manifest(self, reference: str) -> tuple[str, bytes]:
        cached = self._manifests.get(reference)
        if cached is not None:
            return cached
        digest, body = await self.resolver.manifest(self.ref.repository, reference)
        self._manifests[reference] = (digest, body)
        return digest, body

    async def _config(self, desc: Descriptor) -> bytes:
        if desc.size > MAX_CONFIG_SIZE:
            raise ManifestError(f"the config of {self.description} is {desc.size} bytes: too large")
        data = await trio.to_thread.run_sync(self._stored_config, desc)
        if data is None:
            data = await self.resolver.config(self.ref.repository, desc)
        return data

    def _stored_config(self, desc: Descriptor) -> bytes | None:
        """The config from kit's local storage, copied into the cache so that the ModelKit
        resolves from the cache alone later (``kitfs.offline``)."""
        data = None
        if self.store.has_blob(desc.digest):
            with contextlib.suppress(DigestMismatchError, NotFoundError):
                data = self.store.read_blob(desc.digest)
        if data is not None and self.cache.read_blob(desc.digest) is None:
            with contextlib.suppress(StorageError, OSError):
                self.cache.write_blob(desc.digest, data)
        return data

    async def list_tags(self) -> list[str]:
        tags = sorted(await self.resolver.tags(self.ref.repository))
        if not tags:
            raise NotFoundError(f"repository {self.ref.name} has no tags")
        tags = await model_tags(tags, self.manifest_of, self.description)
        if not tags:
            raise NotFoundError(f"repository {self.ref.name} has no ModelKits or ModelPacks")
        return tags

    async def manifest_of(self, tag: str) -> Manifest:
        """The manifest a tag names (kept for TAG_TTL, as ``resolve`` uses it)."""
        _digest, body = await self._manifest(tag)
        return Manifest.from_bytes(body, f"manifest of {self.name_for(tag)}")

    def local_blob(self, desc: Descriptor) -> Path | None:
        path = self.store.blob_path(desc.digest)
        return path if path.is_file() else None

    async def download(
        self,
        desc: Descriptor,
        dest: Path,
        progress: Progress | None,
        *,
        tee: Tee | None = None,
        durable: bool = True,
    ) -> None:
        if self.resolver.refresh == "never":
            raise NotFoundError(
                f"layer {desc.digest} of {self.description} is not in the cache {self.cache.root} "
                "(--refresh never: the registry is not asked)"
            )
        await self.client.download_blob(
            self.ref.repository, desc, dest, progress, tee=tee, durable=durable
        )

    async def stream_range(
        self,
        desc: Descriptor,
        offset: int,
        length: int,
        sink: Sink,
        *,
        origin_only: bool = False,
    ) -> int:
        if self.local_blob(desc) is not None:
            return await super().stream_range(desc, offset, length, sink)
        if self.resolver.refresh == "never":
            raise NotFoundError(
                f"bytes of layer {desc.digest} of {self.description} are not in the cache "
                f"{self.cache.root} (--refresh never: the registry is not asked)"
            )
        return await self.client.stream_blob_range(
            self.ref.repository, desc.digest, offset, length, sink, origin_only=origin_only
        )


def open_registry_source(
    ref: Reference,
    paths: Paths,
    store: LocalStore,
    cache: BlobCache,
    registry_options: RegistryOptions | None = None,
    refresh: Refresh = "auto",
) -> RegistrySource:
    """The source for a registry reference: its endpoints (mirrors, then the origin) and kit's
    credentials; no I/O yet."""
    client = open_client(
        ref, registry_options or RegistryOptions(), CredentialStore.for_paths(paths)
    )
    return RegistrySource(ref, client, store, cache, refresh)
