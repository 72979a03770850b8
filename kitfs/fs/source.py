"""Where a mounted ModelKit comes from: kit's local storage, a registry, or an OCI layout directory.

A source resolves a tag or digest to a verified manifest and Kitfile, lists the repository's tags
(for a repository mount), and gets layer blobs: in place when the bytes are already on this machine
(local storage, an OCI layout written by ``skopeo copy ... oci:DIR:TAG``), else downloaded. Which
source a mount reference names is ``kitfs.fs.sourcechoice.open_source``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import trio

from kitfs.errors import (
    DigestMismatchError,
    MountError,
    NotFoundError,
    StorageError,
)
from kitfs.fs.ocireference import OCI_PREFIX
from kitfs.kitfile import Kitfile
from kitfs.modelpack import kitfile_for
from kitfs.oci.download import Tee
from kitfs.oci.manifest import Descriptor, Manifest, ManifestError, sha256_digest
from kitfs.oci.sink import Sink
from kitfs.oci.tags import model_tags
from kitfs.reference import Reference, is_digest, is_valid_tag
from kitfs.storage.local import LocalStore

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CREATED_ANNOTATION = "org.opencontainers.image.created"
TAG_TTL = 10.0  # seconds a tag's manifest (and the tag list) is trusted before asking again
MAX_CONFIG_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ResolvedModelKit:
    """A verified manifest and its Kitfile, with the name to show for them."""

    name: str
    digest: str
    manifest: Manifest
    kitfile: Kitfile
    created_ns: int | None = None


def created_ns(manifest: Manifest) -> int | None:
    """The manifest's ``org.opencontainers.image.created`` time, when it has a valid one."""
    text = manifest.annotations.get(CREATED_ANNOTATION)
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1_000_000_000)


def modelkit_from(name: str, digest: str, manifest: Manifest, config: bytes) -> ResolvedModelKit:
    """Check that a manifest is a ModelKit or ModelPack and read its Kitfile (kitfs.modelpack)."""
    try:
        kitfile = kitfile_for(manifest, config, name)
    except ManifestError as exc:
        raise MountError(str(exc)) from None
    return ResolvedModelKit(name, digest, manifest, kitfile, created_ns(manifest))


def read_file_range(path: Path, offset: int, length: int, sink: Sink) -> int:
    """Pass bytes of a local file to ``sink``, read straight into its buffers (blocking: call in
    a worker thread); return how many there were."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        done = 0
        while done < length:
            target = sink.buffer()
            target = target[: length - done] if len(target) > length - done else target
            count = os.preadv(fd, [target], offset + done)
            if not count:
                break
            sink.filled(count)
            done += count
        return done
    finally:
        os.close(fd)


class Source:
    """Base of the three sources. ``target`` is the tag or digest to mount, None for a repository."""

    description: str
    target: str | None

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        return None

    async def resolve(self, reference: str) -> ResolvedModelKit:
        """The ModelKit a tag or digest names."""
        raise NotImplementedError

    async def list_tags(self) -> list[str]:
        """The repository's tags."""
        raise NotImplementedError

    def local_blob(self, desc: Descriptor) -> Path | None:
        """A file on this machine holding the blob's bytes (unverified), or None."""
        return None

    async def download(
        self,
        desc: Descriptor,
        dest: Path,
        progress: Progress | None,
        *,
        tee: Tee | None = None,
        durable: bool = True,
    ) -> None:
        """Fetch a blob into ``dest`` (verified; nothing at ``dest`` on failure), passing its bytes
        on to ``tee`` as they arrive (kitfs.oci.download)."""
        raise NotFoundError(f"layer {desc.digest} of {self.description} is missing")

    async def stream_range(
        self,
        desc: Descriptor,
        offset: int,
        length: int,
        sink: Sink,
        *,
        origin_only: bool = False,
    ) -> int:
        """Pass bytes [offset, offset + length) of a blob to ``sink`` (kitfs.oci.handoff), in a
        worker thread, unverified (the caller checks them against a span index); return how many
        there were. ``origin_only`` skips mirrors (bytes a mirror served failed their digest)."""
        path = self.local_blob(desc)
        if path is None:
            raise NotFoundError(f"layer {desc.digest} of {self.description} is missing")
        return await trio.to_thread.run_sync(read_file_range, path, offset, length, sink)

    def name_for(self, reference: str) -> str:
        return f"{self.description}{'@' if is_digest(reference) else ':'}{reference}"


# -- kit's local storage ----------------------------------------------------------------------


class LocalStorageSource(Source):
    """ModelKits in kit's local storage (references without a registry, or ``localhost/...``)."""

    def __init__(self, ref: Reference, store: LocalStore) -> None:
        self.ref = ref
        self.store = store
        self.description = ref.repository
        self.target = ref.reference

    async def resolve(self, reference: str) -> ResolvedModelKit:
        return await trio.to_thread.run_sync(self._resolve, reference)

    def _resolve(self, reference: str) -> ResolvedModelKit:
        ref = replace(
            self.ref,
            tag=None if is_digest(reference) else reference,
            digest=reference if is_digest(reference) else None,
        )
        _repo, desc = self.store.resolve(ref)
        manifest = self.store.load_manifest(desc)
        config = self.store.read_blob(manifest.config.digest)
        return modelkit_from(self.name_for(reference), desc.digest, manifest, config)

    async def list_tags(self) -> list[str]:
        tags = await trio.to_thread.run_sync(lambda: sorted(self.store.repo_for(self.ref).tags()))
        tags = await model_tags(tags, self.manifest_of, self.description)
        if not tags:
            raise NotFoundError(
                f"repository {self.ref.repository} has no tagged ModelKits in local storage"
            )
        return tags

    async def manifest_of(self, tag: str) -> Manifest:
        def load() -> Manifest:
            _repo, desc = self.store.resolve(replace(self.ref, tag=tag, digest=None))
            return self.store.load_manifest(desc)

        return await trio.to_thread.run_sync(load)

    def local_blob(self, desc: Descriptor) -> Path | None:
        path = self.store.blob_path(desc.digest)
        return path if path.is_file() else None


# -- OCI layout directories -------------------------------------------------------------------


class OciLayoutSource(Source):
    """An OCI image layout directory (``oci:PATH[:TAG]``), such as ``skopeo copy`` writes."""

    def __init__(self, root: Path, target: str | None) -> None:
        self.root = root
        self.description = f"{OCI_PREFIX}{root}"
        self.target = target

    def _index(self) -> list[Descriptor]:
        path = self.root / "index.json"
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"{self.root} is not an OCI layout: it has no index.json") from None
        except (OSError, ValueError) as exc:
            raise StorageError(f"{path} is unreadable: {exc}") from None
        manifests = raw.get("manifests") if isinstance(raw, dict) else None
        if not isinstance(manifests, list):
            raise StorageError(f"{path} is not an OCI index")
        return [Descriptor.from_dict(d, f"{path.name} entry") for d in manifests]

    def _blob(self, digest: str) -> bytes:
        path = self._blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is missing from {self.root}") from None
        actual = sha256_digest(data)
        if actual != digest:
            raise DigestMismatchError(digest, actual, f"blob {digest} in {self.root}")
        return data

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.root / "blobs" / algorithm / hexpart

    async def resolve(self, reference: str) -> ResolvedModelKit:
        return await trio.to_thread.run_sync(self._resolve, reference)

    def _resolve(self, reference: str) -> ResolvedModelKit:
        name = self.name_for(reference)
        for desc in self._index():
            if desc.digest == reference or desc.annotations.get(REF_NAME_ANNOTATION) == reference:
                manifest = Manifest.from_bytes(self._blob(desc.digest), f"manifest of {name}")
                config = self._blob(manifest.config.digest)
                return modelkit_from(name, desc.digest, manifest, config)
        raise NotFoundError(f"{name} not found")

    async def list_tags(self) -> list[str]:
        def tags() -> list[str]:
            names = {d.annotations.get(REF_NAME_ANNOTATION, "") for d in self._index()}
            return sorted(n for n in names if n and is_valid_tag(n))

        found = await model_tags(
            await trio.to_thread.run_sync(tags), self.manifest_of, self.description
        )
        if not found:
            raise NotFoundError(
                f"{self.root} holds no tagged ModelKits (name one: oci:{self.root}:TAG)"
            )
        return found

    async def manifest_of(self, tag: str) -> Manifest:
        def load() -> Manifest:
            for desc in self._index():
                if desc.annotations.get(REF_NAME_ANNOTATION) == tag:
                    return Manifest.from_bytes(self._blob(desc.digest), f"manifest of {tag}")
            raise NotFoundError(f"{self.name_for(tag)} not found")

        return await trio.to_thread.run_sync(load)

    def local_blob(self, desc: Descriptor) -> Path | None:
        path = self._blob_path(desc.digest)
        return path if path.is_file() else None
