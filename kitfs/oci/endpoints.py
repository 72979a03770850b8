"""Which endpoints serve a repository: its mirrors from registries.conf in order, then the origin.

``open_client`` returns a plain ``RegistryClient`` when registries.conf says nothing about the
reference, else a ``MirroredClient`` with the same reading methods. Each endpoint is its own
``RegistryClient``, so credentials are looked up for the host actually contacted and every answer is
verified exactly as the origin's (manifests by digest, blobs by digest and size, before anything is
renamed into place). A mirror that fails (unreachable, an error, a corrupt blob) is skipped for that
request, and for ``MIRROR_RETRY_AFTER`` seconds after it could not be reached; the origin's failure is
the one reported. Writes (push, delete) go to the origin only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from kitfs.errors import KitfsError, RegistryError, TransientError
from kitfs.oci.auth import CredentialSource
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.download import Tee
from kitfs.oci.manifest import Descriptor
from kitfs.oci.registries_conf import RegistriesConf, RegistryEntry, load
from kitfs.oci.sink import Counted, Sink
from kitfs.reference import Reference, is_digest

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int], None]
MIRROR_RETRY_AFTER = 30.0  # seconds an unreachable mirror is skipped before it is tried again
MIRROR_RETRIES = 2  # a mirror gets one retry: failing over quickly matters more than persistence


@dataclass
class Endpoint:
    """One place to fetch from: ``registry`` (host[:port]) with the repository rewritten for it."""

    client: RegistryClient
    registry: str
    prefix_from: str  # the part of ``host/repository`` the registries.conf entry matched ...
    prefix_to: str  # ... and what it becomes at this endpoint
    mirror: bool
    pull_from: str = "all"
    down_until: float = 0.0

    def repository(self, origin_name: str) -> str:
        """This endpoint's repository for the origin's ``host/repository``."""
        rewritten = self.prefix_to + origin_name[len(self.prefix_from) :]
        return rewritten.split("/", 1)[1] if "/" in rewritten else ""

    def serves_manifest(self, reference: str) -> bool:
        if not self.mirror or self.pull_from == "all":
            return True
        return is_digest(reference) == (self.pull_from == "digest-only")


def _split(name: str) -> tuple[str, str]:
    host, _, repository = name.partition("/")
    return host, repository


def open_client(
    ref: Reference, options: RegistryOptions, credentials: CredentialSource | None
) -> Any:
    """A client for ``ref``'s repository: plain, or through the mirrors registries.conf names."""
    conf = load(options.registries_conf)
    name = f"{ref.registry}/{ref.repository}"
    entry = conf.find(name)
    if entry is None:
        return RegistryClient(ref.registry, options, credentials)
    if entry.blocked:
        raise RegistryError(f"{name} is blocked by {conf.path} (blocked = true)")
    return _mirrored(ref, name, entry, conf, options, credentials)


def _mirrored(
    ref: Reference,
    name: str,
    entry: RegistryEntry,
    conf: RegistriesConf,
    options: RegistryOptions,
    credentials: CredentialSource | None,
) -> Any:
    matched = name[: entry.matches(name)] if not entry.wildcard else ref.registry
    endpoints = []
    for mirror in entry.mirrors:
        target = entry.rewrite(name, mirror.location)
        host, repository = _split(target)
        if not repository:
            raise RegistryError(
                f"{conf.path}: mirror {mirror.location} leaves no repository for {name}"
            )
        mirror_options = replace(
            options, plain_http=mirror.insecure, retries=min(options.retries, MIRROR_RETRIES)
        )
        endpoints.append(
            Endpoint(
                RegistryClient(host, mirror_options, credentials),
                host,
                matched,
                _rewritten_prefix(entry, matched, mirror.location),
                mirror=True,
                pull_from=mirror.pull_from,
            )
        )
    origin_host, origin_repository = _split(entry.rewrite(name, entry.location))
    origin_options = replace(options, plain_http=options.plain_http or entry.insecure)
    origin = RegistryClient(origin_host, origin_options, credentials)
    if not endpoints and (origin_host, origin_repository) == (ref.registry, ref.repository):
        return origin
    endpoints.append(
        Endpoint(
            origin,
            origin_host,
            matched,
            _rewritten_prefix(entry, matched, entry.location),
            mirror=False,
        )
    )
    return MirroredClient(ref.registry, endpoints)


def _rewritten_prefix(entry: RegistryEntry, matched: str, location: str) -> str:
    return location if not entry.wildcard else (location or matched)


class _HighWater:
    """Reports each byte of a blob once to ``callback`` across attempts at several endpoints (one
    that failed half-way had reported bytes that the next one sends again)."""

    def __init__(self, callback: Progress) -> None:
        self.callback = callback
        self.reported = 0

    def attempt(self) -> Progress:
        position = 0

        def advance(amount: int) -> None:
            nonlocal position
            position += amount
            if position > self.reported:
                self.callback(position - self.reported)
                self.reported = position

        return advance


class MirroredClient:
    """The reading half of ``RegistryClient`` over several endpoints, tried in order."""

    def __init__(self, registry: str, endpoints: list[Endpoint]) -> None:
        self.registry = registry
        self.endpoints = endpoints
        self.origin = endpoints[-1]

    async def __aenter__(self) -> MirroredClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.aclose()

    def _name(self, repository: str) -> str:
        return f"{self.registry}/{repository}"

    async def _first(
        self,
        repository: str,
        call: Callable[[RegistryClient, str], Awaitable[T]],
        reference: str | None = None,
    ) -> T:
        """``call`` at each usable endpoint in turn; the origin's failure is raised."""
        name = self._name(repository)
        for endpoint in self.endpoints:
            if endpoint.mirror and (
                time.monotonic() < endpoint.down_until
                or (reference is not None and not endpoint.serves_manifest(reference))
            ):
                continue
            try:
                return await call(endpoint.client, endpoint.repository(name))
            except KitfsError as exc:
                if not endpoint.mirror:
                    raise
                if isinstance(exc, TransientError):
                    endpoint.down_until = time.monotonic() + MIRROR_RETRY_AFTER
                log.warning(
                    "mirror %s failed (%s): trying the next endpoint", endpoint.registry, exc
                )
        raise AssertionError("the origin is always the last endpoint")

    # -- reading ----------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        return await self._first(repository, lambda c, r: c.get_manifest(r, reference), reference)

    async def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        return await self._first(repository, lambda c, r: c.head_manifest(r, reference), reference)

    async def fetch_blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        return await self._first(repository, lambda c, r: c.fetch_blob(r, digest, size))

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
        water = _HighWater(progress) if progress is not None else None
        await self._first(
            repository,
            lambda c, r: c.download_blob(
                r,
                descriptor,
                dest,
                water.attempt() if water is not None else None,
                tee=tee,
                durable=durable,
            ),
        )

    async def read_blob_range(
        self, repository: str, digest: str, offset: int, length: int
    ) -> bytes:
        return await self._first(
            repository, lambda c, r: c.read_blob_range(r, digest, offset, length)
        )

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
        """A range from the first endpoint that serves it; an endpoint that fails mid-way is
        followed by the next from the first byte not yet passed on (bytes are verified by the
        caller, against the span index; after a mismatch it asks with ``origin_only``)."""
        counted = Counted(sink, length)

        async def call(client: RegistryClient, name: str) -> int:
            await client.stream_blob_range(
                name, digest, offset + counted.count, length - counted.count, counted
            )
            return counted.count

        if origin_only:
            return await call(self.origin.client, self.origin.repository(self._name(repository)))
        return await self._first(repository, call)

    async def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        return await self._first(repository, lambda c, r: c.list_tags(r, page_size))

    # -- everything else goes to the origin ---------------------------------------------------

    def __getattr__(self, attribute: str) -> Any:
        method = getattr(self.origin.client, attribute)
        if not callable(method):
            return method

        def at_origin(repository: str, *args: Any, **kwargs: Any) -> Any:
            return method(self.origin.repository(self._name(repository)), *args, **kwargs)

        return at_origin
