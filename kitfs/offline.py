"""Resolving registry references through the mount cache, so that a cached ModelKit keeps working
while its registry is away.

Manifests and configs are kept in the blob cache by digest (``BlobCache.write_blob``; every read
checks the digest), and each tag resolution is recorded (``kitfs.storage.tagrecords``). With
``refresh="auto"`` a digest reference is served from the cache without asking the registry at all (a
digest names immutable bytes), and a tag is asked for; when the registry cannot answer (unreachable,
5xx after the retries, a broken TLS or HTTP exchange) the digest the tag last resolved to is used,
with one warning. ``"always"`` asks for tags and never falls back; ``"never"`` asks nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from kitfs import limits
from kitfs.config import Refresh
from kitfs.errors import (
    AuthError,
    KitfsError,
    NotFoundError,
    RegistryError,
    StorageError,
)
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, ManifestError
from kitfs.reference import is_digest
from kitfs.storage.cache import BlobCache, PinnedTar, digest_hex
from kitfs.storage.tagrecords import TagRecords
from kitfs.unpack import VerifiedTar

log = logging.getLogger(__name__)

MAX_CONFIG_SIZE = limits.MAX_CONFIG_SIZE  # one bound for every verb


def _falls_back(exc: KitfsError) -> bool:
    """Whether an answer means "the registry is not there" rather than "the registry said no":
    a denial (401/403) or a missing tag (404) is an answer, and is not papered over."""
    return isinstance(exc, RegistryError) and not isinstance(exc, AuthError)


class CachedResolver:
    """Manifests and configs of one registry, through ``cache``; ``client`` is a RegistryClient
    (or ``kitfs.oci.endpoints.MirroredClient``) and is not contacted when ``refresh="never"``."""

    def __init__(
        self,
        client: Any,
        cache: BlobCache,
        registry: str,
        refresh: Refresh = "auto",
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.registry = registry
        self.refresh = refresh
        self.records = TagRecords(cache.root, cache.shared)
        self._warn = warn or (lambda message: log.warning("%s", message))
        self._warned: set[tuple[str, str]] = set()
        self.fell_back = False  # whether an answer came from the cache because the registry failed

    def _name(self, repository: str, reference: str) -> str:
        sep = "@" if is_digest(reference) else ":"
        return f"{self.registry}/{repository}{sep}{reference}"

    def _not_cached(self, what: str) -> NotFoundError:
        return NotFoundError(
            f"{what} is not in the cache {self.cache.root} (--refresh never: the registry is not asked)"
        )

    async def manifest(self, repository: str, reference: str) -> tuple[str, bytes]:
        """(digest, body) of the manifest ``reference`` names; the body is not parsed here."""
        if is_digest(reference):
            cached = await trio.to_thread.run_sync(self._read, reference)
            if cached is not None:
                return reference, cached
            if self.refresh == "never":
                raise self._not_cached(f"manifest {self._name(repository, reference)}")
            return await self._fetch(repository, reference)
        if self.refresh == "never":
            found = await self._recorded(repository, reference)
            if found is None:
                raise self._not_cached(f"{self._name(repository, reference)}")
            return found[0], found[1]
        try:
            return await self._fetch(repository, reference)
        except KitfsError as exc:
            if self.refresh == "always" or not _falls_back(exc):
                raise
            found = await self._recorded(repository, reference)
            if found is None:
                raise
            self._fell_back(repository, reference, exc, found[0], found[2])
            self.fell_back = True
            return found[0], found[1]

    async def _fetch(self, repository: str, reference: str) -> tuple[str, bytes]:
        body, media_type, digest = await self.client.get_manifest(repository, reference)
        if media_type in (media.OCI_INDEX, media.DOCKER_MANIFEST_LIST):
            raise ManifestError(
                f"{self._name(repository, reference)} is an image index, not a ModelKit"
            )
        await trio.to_thread.run_sync(self._remember, repository, reference, digest, body)
        return digest, body

    def _read(self, digest: str) -> bytes | None:
        """A cached manifest or config (verified by the cache), marked as used for ``cache prune``."""
        if not digest.startswith("sha256:"):
            return None  # the cache names files by sha256 only: other digests are never cached
        data = self.cache.read_blob(digest)
        if data is not None:
            with contextlib.suppress(OSError, StorageError):
                os.utime(self.cache.blobs / digest_hex(digest))
        return data

    def _remember(self, repository: str, reference: str, digest: str, body: bytes) -> None:
        if not digest.startswith("sha256:"):
            return
        with contextlib.suppress(StorageError, OSError):
            self.cache.write_blob(digest, body)
            if not is_digest(reference):
                self.records.record(self.registry, repository, reference, digest)

    async def _recorded(self, repository: str, tag: str) -> tuple[str, bytes, float] | None:
        def lookup() -> tuple[str, bytes, float] | None:
            found = self.records.lookup(self.registry, repository, tag)
            if found is None:
                return None
            body = self._read(found[0])
            return None if body is None else (found[0], body, found[1])

        return await trio.to_thread.run_sync(lookup)

    def _fell_back(
        self, repository: str, tag: str, exc: KitfsError, digest: str, when: float
    ) -> None:
        if (repository, tag) in self._warned:
            return
        self._warned.add((repository, tag))
        moment = datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        self._warn(
            f"{exc}; using {digest} from the cache, which {self._name(repository, tag)} "
            f"resolved to at {moment}"
        )

    async def tags(self, repository: str) -> list[str]:
        """The repository's tags from the registry; when it cannot answer (and ``refresh`` allows),
        or with ``refresh="never"``, the tags recorded in the cache."""
        if self.refresh != "never":
            try:
                return list(await self.client.list_tags(repository))
            except KitfsError as exc:
                if self.refresh == "always" or not _falls_back(exc):
                    raise
                recorded = await trio.to_thread.run_sync(
                    self.records.tags, self.registry, repository
                )
                if not recorded:
                    raise
                if (repository, "") not in self._warned:
                    self._warned.add((repository, ""))
                    self._warn(
                        f"{exc}; showing the {len(recorded)} tags of {self.registry}/{repository} "
                        "recorded in the cache"
                    )
                return recorded
        return await trio.to_thread.run_sync(self.records.tags, self.registry, repository)

    async def config(self, repository: str, desc: Descriptor) -> bytes:
        """The config blob, from the cache (verified) or the registry (verified, then cached)."""
        if desc.size > MAX_CONFIG_SIZE:
            raise ManifestError(
                f"the config of {self.registry}/{repository} is {desc.size} bytes: too large"
            )
        data = await trio.to_thread.run_sync(self._read, desc.digest)
        if data is not None:
            return data
        if self.refresh == "never":
            raise self._not_cached(f"config {desc.digest} of {self.registry}/{repository}")
        data = await self.client.fetch_blob(repository, desc.digest, desc.size)
        if desc.digest.startswith("sha256:"):
            with contextlib.suppress(StorageError, OSError):
                await trio.to_thread.run_sync(self.cache.write_blob, desc.digest, data)
        return bytes(data)


@dataclass(frozen=True)
class CachePolicy:
    """How the verbs outside the mount (unpack, info, prefetch) use the mount cache."""

    root: Path
    refresh: Refresh = "auto"

    def open(self) -> BlobCache:
        return BlobCache(self.root).ensure()


def cached_layer(
    cache: BlobCache, desc: Descriptor, compression: str, diff_id: str | None
) -> tuple[Path | VerifiedTar, PinnedTar] | None:
    """A layer's bytes in the mount cache, held against eviction (close the PinnedTar after use).

    An uncompressed layer's tar is its blob (checked against the manifest's digest by whoever reads
    it); a compressed layer is kept only as its tar, usable when the config records the ``diffId``
    it must hash to, so the chain of digests still starts at the manifest.
    """
    if compression == "none":
        name = desc.digest
    elif diff_id:
        name = diff_id
    else:
        return None
    if not name.startswith("sha256:"):
        return None  # the cache holds sha256-named tars only
    pinned = cache.pin(name)
    if pinned is None:
        return None
    return (pinned.path if compression == "none" else VerifiedTar(pinned.path, name)), pinned
