"""Verbs that move ModelKits between local storage and registries: push, pull, and the remote views
(info, inspect, list, unpack, remove) that kit offers with ``--remote``.

Every blob is verified against its digest before it is stored; local storage gains a ModelKit only
after all its blobs are in place, so an interrupted pull leaves storage as it was (plus, at most,
verified blobs that the next pull reuses).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import trio

from kitfs.catalog import ListRow, Removed, row_for
from kitfs.config import Paths
from kitfs.errors import (
    DigestMismatchError,
    KitfileError,
    NotFoundError,
    RegistryError,
    StorageError,
    UsageError,
    first_kitfs_error,
)
from kitfs.kitfile import Kitfile, is_modelkit_reference
from kitfs.limits import MAX_CONFIG_SIZE
from kitfs.modelpack import check_model_artifact, kitfile_for
from kitfs.oci import media
from kitfs.oci.auth import CredentialStore
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.endpoints import open_client
from kitfs.oci.manifest import Descriptor, Manifest, ManifestError
from kitfs.oci.tags import is_attached_tag
from kitfs.offline import CachedResolver, CachePolicy, cached_layer
from kitfs.onepass import read_while_downloading
from kitfs.progress import NullProgress, ProgressSink
from kitfs.reference import Reference
from kitfs.reference import parse as parse_reference
from kitfs.staging import StagedLayer, Staging, stage_layer
from kitfs.storage.cache import PinnedTar, process_gone
from kitfs.storage.local import LocalStore, display_repository
from kitfs.unpack import (
    Filter,
    SelectedLayer,
    UnpackError,
    UnpackOptions,
    VerifiedTar,
    layer_selected,
    select_layers,
    unpack_modelkit,
)

if TYPE_CHECKING:  # the signing code (and cryptography) loads only when a policy asks
    from kitfs.signing.enforce import Enforcer

log = logging.getLogger(__name__)


def _client(ref: Reference, paths: Paths, options: RegistryOptions) -> RegistryClient:
    if ref.is_local:
        raise UsageError(
            f"{ref} names local storage, not a registry (add a registry: host[:port]/{ref.repository})"
        )
    client: RegistryClient = open_client(ref, options, CredentialStore.for_paths(paths))
    return client


async def fetch_manifest(
    client: RegistryClient, ref: Reference, resolver: CachedResolver | None = None
) -> tuple[str, bytes, Manifest]:
    """Resolve a remote reference to (digest, manifest bytes, manifest), refusing non-ModelKits;
    through the mount cache when a ``resolver`` is given."""
    if not ref.reference:
        raise UsageError(f"{ref} needs a tag or digest")
    if resolver is not None:
        digest, body = await resolver.manifest(ref.repository, ref.reference)
    else:
        body, media_type, digest = await client.get_manifest(ref.repository, ref.reference)
        if media_type in (media.OCI_INDEX, media.DOCKER_MANIFEST_LIST):
            raise ManifestError(f"{ref} is an image index, not a ModelKit")
    manifest = Manifest.from_bytes(body, f"manifest of {ref}")
    check_model_artifact(manifest, str(ref))
    if manifest.config.size > MAX_CONFIG_SIZE:  # refused before a byte of it is fetched
        raise KitfileError(
            f"the config of {ref} is {manifest.config.size} bytes: larger than the "
            f"{MAX_CONFIG_SIZE} accepted"
        )
    return digest, body, manifest


async def _gather(jobs: list[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run ``jobs`` at most ``concurrency`` at a time; the first job that fails with a KitfsError
    cancels the others and is raised as itself (not inside trio's ExceptionGroup), so that the
    user sees its one-line message."""
    limiter = trio.CapacityLimiter(max(1, concurrency))

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with limiter:
            await job()

    try:
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(run, job)
    except BaseExceptionGroup as group:
        first = first_kitfs_error(group)
        if first is None:
            raise
        raise first from None


# -- pull -------------------------------------------------------------------------------------


async def pull_async(
    ref: Reference,
    paths: Paths,
    options: RegistryOptions,
    progress: ProgressSink,
    gate: Enforcer | None = None,
) -> str:
    store = LocalStore(paths.storage)
    store.ensure()
    # Downloads land in one directory shared by every pull, named by digest: an interrupted pull
    # leaves its partial files there, and the next pull of the same blobs resumes after them.
    scratch = paths.cache / "pull" / "partial"
    scratch.mkdir(parents=True, exist_ok=True)
    async with _client(ref, paths, options) as client:
        digest, body, manifest = await fetch_manifest(client, ref)
        if gate is not None:  # the digest about to be pulled, before any blob is fetched
            await gate.check(ref.name, digest, client, ref.repository)
        missing = [d for d in (manifest.config, *manifest.layers) if not store.has_blob(d.digest)]
        unique = list({d.digest: d for d in missing}.values())
        task = progress.task(f"pull {display_repository(str(ref))}", sum(d.size for d in unique))

        def download(desc: Descriptor) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                verified = scratch / desc.hex
                await client.download_blob(ref.repository, desc, verified, task.advance)
                store.adopt_blob(verified, desc.digest)

            return job

        await _gather([download(d) for d in unique], options.concurrency)
    # The config is read as every other verb reads it (kitfs.limits): a ModelKit that `info`,
    # `unpack` or a mount would refuse is not stored as pulled either.
    kitfile_for(manifest, store.read_blob(manifest.config.digest), str(ref))
    store.put_blob(body)
    tags = [ref.tag] if ref.tag and not ref.digest else []
    store.repo_for(ref).add(manifest.descriptor(body), tags)
    return digest


def scratch_dir(paths: Paths, kind: str) -> Path:
    """This process's scratch directory, ``$KITOPS_HOME/cache/KIND/PID``; the directories of
    processes that are gone (killed mid-download) are removed first, so that their partial
    files do not stay forever."""
    base = paths.cache / kind
    base.mkdir(parents=True, exist_ok=True)
    for entry in base.iterdir():
        if entry.name.isdigit() and entry.is_dir() and process_gone(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
    own = base / str(os.getpid())
    own.mkdir(exist_ok=True)
    return own


def pull(
    ref: Reference,
    paths: Paths,
    options: RegistryOptions,
    progress: ProgressSink | None = None,
    gate: Enforcer | None = None,
) -> str:
    """Copy a ModelKit from its registry into local storage, skipping blobs already there
    (refused before any blob is fetched when ``gate``'s signature policy is not met)."""
    return trio.run(pull_async, ref, paths, options, progress or NullProgress(), gate)


# -- push -------------------------------------------------------------------------------------


async def push_async(
    source: Reference,
    dest: Reference,
    paths: Paths,
    options: RegistryOptions,
    progress: ProgressSink,
) -> str:
    store = LocalStore(paths.storage)
    _, desc = store.resolve(source)
    body = store.read_blob(desc.digest)
    manifest = Manifest.from_bytes(body, f"manifest of {source}")
    blobs = store.require_blobs(manifest, display_repository(str(source)))
    task = progress.task(f"push {dest}", sum(d.size for d in blobs))
    async with _client(dest, paths, options) as client:

        def upload(blob: Descriptor) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                # upload_blob skips a blob the registry has and hashes what it sends as it reads
                # it: a damaged local blob is refused before its upload is committed.
                await client.upload_blob(
                    dest.repository, blob, store.blob_path(blob.digest), task.advance
                )

            return job

        await _gather([upload(b) for b in blobs], options.concurrency)
        media_type = manifest.media_type or media.OCI_MANIFEST
        references = [t for t in (dest.tag, *dest.extra_tags) if t] or [desc.digest]
        for reference in references:
            await client.put_manifest(dest.repository, reference, body, media_type)
    return desc.digest


def push(
    source: Reference,
    dest: Reference,
    paths: Paths,
    options: RegistryOptions,
    progress: ProgressSink | None = None,
) -> str:
    """Upload a ModelKit from local storage to a registry (blobs first, then the manifest per tag)."""
    return trio.run(push_async, source, dest, paths, options, progress or NullProgress())


# -- remote views (called by the local verbs with --remote or a registry reference) ----------


async def _fetch_modelkit(
    client: RegistryClient, ref: Reference, resolver: CachedResolver | None = None
) -> tuple[str, Manifest, Kitfile]:
    digest, _, manifest = await fetch_manifest(client, ref, resolver)
    if resolver is not None:
        config = await resolver.config(ref.repository, manifest.config)
    else:
        config = await client.fetch_blob(
            ref.repository, manifest.config.digest, manifest.config.size
        )
    return digest, manifest, kitfile_for(manifest, config, str(ref))


def _resolver(
    client: RegistryClient, ref: Reference, cached: CachePolicy | None
) -> CachedResolver | None:
    if cached is None:
        return None
    try:
        cache = cached.open()
    except StorageError as exc:
        if cached.refresh == "never":
            raise
        log.info("not using the mount cache: %s", exc)  # a read-only home, say: work without it
        return None
    return CachedResolver(client, cache, ref.registry, cached.refresh)


def fetch_modelkit(
    ref: Reference, paths: Paths, options: RegistryOptions, cached: CachePolicy | None = None
) -> tuple[str, Manifest, Kitfile]:
    """The manifest and Kitfile of a remote ModelKit, without storing anything (but, with
    ``cached``, through the mount cache: it keeps the manifest and config)."""

    async def run() -> tuple[str, Manifest, Kitfile]:
        async with _client(ref, paths, options) as client:
            return await _fetch_modelkit(client, ref, _resolver(client, ref, cached))

    return trio.run(run)


def list_remote(ref: Reference, paths: Paths, options: RegistryOptions) -> list[ListRow]:
    """kit list REGISTRY/REPO[:TAG]: one row per tag that is a ModelKit."""

    async def run() -> list[ListRow]:
        async with _client(ref, paths, options) as client:
            tags = [ref.tag] if ref.tag else await client.list_tags(ref.repository)
            rows = []
            for tag in tags:
                if not ref.tag and is_attached_tag(tag):
                    continue  # signatures, attestations, referrers fallback tags
                try:
                    digest, _, manifest = await fetch_manifest(client, ref.with_tag(tag))
                except ManifestError:
                    continue
                config = await client.fetch_blob(
                    ref.repository, manifest.config.digest, manifest.config.size
                )
                try:
                    kitfile: Kitfile | None = kitfile_for(manifest, config, str(ref.with_tag(tag)))
                except KitfileError as exc:  # listed, as the local list shows a broken one
                    log.warning("%s: %s", ref.with_tag(tag), exc)
                    kitfile = None
                rows.append(row_for(ref.repository, digest, (tag,), manifest, kitfile))
            return rows

    return trio.run(run)


def unpack_remote(
    ref: Reference,
    paths: Paths,
    reg_options: RegistryOptions,
    options: UnpackOptions,
    progress: ProgressSink,
    cached: CachePolicy | None = None,
) -> dict[str, int]:
    """Unpack straight from the registry: fetch only the selected layers, into a scratch dir
    (with ``cached``, layers the mount cache holds are read from it instead)."""
    return _unpack_remote(ref, paths, reg_options, options, progress, cached=cached)[0]


def _unpack_remote(
    ref: Reference,
    paths: Paths,
    reg_options: RegistryOptions,
    options: UnpackOptions,
    progress: ProgressSink,
    gate: Enforcer | None = None,
    cached: CachePolicy | None = None,
) -> tuple[dict[str, int], Kitfile]:
    """``unpack_remote``, also giving the Kitfile of what it unpacked: the manifest is resolved
    once, so a tag that moves meanwhile cannot mix two ModelKits."""
    scratch = Path(tempfile.mkdtemp(prefix="unpack-", dir=scratch_dir(paths, "unpack")))
    pins: list[PinnedTar] = []
    attempt = _Attempt()
    downloads = _Downloads(scratch, options.target, attempt.staged)
    try:
        while True:
            manifest, kitfile, located = trio.run(
                _fetch_selected,
                ref,
                paths,
                reg_options,
                options.filters,
                downloads,
                progress,
                cached,
                pins,
                attempt,
                gate,
            )
            try:
                counts = unpack_modelkit(
                    manifest,
                    kitfile,
                    _locator(located, scratch),
                    options,
                    progress,
                    staging=downloads.staging,
                    staged=attempt.staged,
                )
                return counts, kitfile
            except DigestMismatchError as exc:
                # Nothing is written before every layer passed: a damaged copy in the mount
                # cache is dropped and the layer downloaded instead (unless --refresh never).
                bad = _damaged_cached_layer(located, exc)
                if bad is None or cached is None or cached.refresh == "never" or attempt.offline:
                    raise
                log.warning("%s: dropping the mount cache's copy, downloading it", exc)
                attempt.damaged.add(bad[0])
                _release(pins)
                cached.open().remove_tar(bad[1])
    finally:
        _release(pins)
        if downloads.staging is not None:
            downloads.staging.close()
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class _Attempt:
    """What one unpack learned across its attempts: cached layers found damaged, whether the
    registry was away (then a damaged cached layer cannot be replaced: the error stands), and the
    layers already downloaded and staged (verified: not fetched again)."""

    damaged: set[str] = field(default_factory=set)
    offline: bool = False
    staged: dict[str, StagedLayer] = field(default_factory=dict)


@dataclass
class _Downloads:
    """Where an unpack's downloads go: blob files in ``scratch`` (to fall back on), and each
    layer's files staged as its bytes arrive (``staged`` by layer digest) in a staging directory
    of ``target``, made when the first layer is about to be fetched (not before the signature
    check, so a refused unpack creates nothing)."""

    scratch: Path
    target: Path
    staged: dict[str, StagedLayer]
    staging: Staging | None = None

    def stage_in(self) -> Staging:
        if self.staging is None:
            try:
                self.staging = Staging(self.target.resolve())
            except OSError as exc:
                raise UnpackError(
                    f"failed to create directory {self.target}: {exc.strerror}"
                ) from None
        return self.staging


def _locator(
    located: dict[str, Path | VerifiedTar], scratch: Path
) -> Callable[[Descriptor], Path | VerifiedTar]:
    """Where each layer is: in the mount cache, else downloaded into ``scratch``."""
    return lambda desc: located.get(desc.digest, scratch / desc.hex)


def _damaged_cached_layer(
    located: dict[str, Path | VerifiedTar], exc: DigestMismatchError
) -> tuple[str, str] | None:
    """(layer digest, cached tar digest) of the cached layer that failed ``exc``, if one did."""
    for layer, found in located.items():
        name = found.diff_id if isinstance(found, VerifiedTar) else layer
        if exc.expected == name:
            return layer, name
    return None


def _release(pins: list[PinnedTar]) -> None:
    for pin in pins:
        pin.close()
    pins.clear()


async def _fetch_selected(
    ref: Reference,
    paths: Paths,
    reg_options: RegistryOptions,
    filters: list[Filter],
    into: _Downloads,
    progress: ProgressSink,
    cached: CachePolicy | None,
    pins: list[PinnedTar],
    attempt: _Attempt,
    gate: Enforcer | None = None,
) -> tuple[Manifest, Kitfile, dict[str, Path | VerifiedTar]]:
    """A remote ModelKit's manifest and Kitfile, with the layers ``filters`` select downloaded
    (verified) and their files staged as they arrive (``into``); one client, so one auth
    handshake. Layers the mount cache holds are returned by digest (pinned in ``pins``) and not
    downloaded."""
    async with _client(ref, paths, reg_options) as client:
        resolver = _resolver(client, ref, cached)
        digest, manifest, kitfile = await _fetch_modelkit(client, ref, resolver)
        if gate is not None:
            await gate.check(ref.name, digest, client, ref.repository)
        selected = select_layers(manifest, kitfile, filters)
        attempt.offline = resolver is not None and resolver.fell_back
        located = await _from_cache(
            resolver, [s for s in selected if s.desc.digest not in attempt.damaged], pins
        )
        wanted = [
            layer
            for layer in selected
            if layer.desc.digest not in located and layer.desc.digest not in into.staged
        ]
        if wanted and resolver is not None and resolver.refresh == "never":
            raise NotFoundError(
                f"layer {wanted[0].desc.digest} of {ref} is not in the cache {resolver.cache.root} "
                "(--refresh never: the registry is not asked)"
            )
        total = sum(layer.desc.size for layer in wanted)
        task = progress.task(f"fetch {display_repository(str(ref))}", total)

        def job(layer: SelectedLayer) -> Callable[[], Awaitable[None]]:
            desc = layer.desc
            blob = into.scratch / desc.hex
            diff_id = str(layer.entry.get("diffId") or "") or None

            async def run() -> None:
                staging = into.stage_in()  # on the event loop: one directory for every layer

                def stage(source: Path | BinaryIO) -> StagedLayer:
                    return stage_layer(
                        source,
                        desc,
                        layer.layer_type.compression,
                        diff_id,
                        staging,
                        raw=layer.layer_type.raw,
                        verified=True,
                    )

                into.staged[desc.digest] = await read_while_downloading(
                    lambda tee: client.download_blob(
                        ref.repository, desc, blob, task.advance, tee=tee, durable=False
                    ),
                    stage,
                    lambda: stage(blob),
                    f"layer {desc.digest[:19]}",
                )
                blob.unlink(missing_ok=True)  # its bytes are in the staged files now

            return run

        await _gather([job(layer) for layer in wanted], reg_options.concurrency)
    return manifest, kitfile, located


async def _from_cache(
    resolver: CachedResolver | None, selected: list[SelectedLayer], pins: list[PinnedTar]
) -> dict[str, Path | VerifiedTar]:
    located: dict[str, Path | VerifiedTar] = {}
    if resolver is None:
        return located
    for layer in selected:
        diff_id = str(layer.entry.get("diffId") or "") or None
        found = await trio.to_thread.run_sync(
            cached_layer, resolver.cache, layer.desc, layer.layer_type.compression, diff_id
        )
        if found is not None:
            located[layer.desc.digest] = found[0]
            pins.append(found[1])
    return located


def remove_remote(ref: Reference, paths: Paths, options: RegistryOptions) -> list[Removed]:
    """Delete a manifest from its registry (by digest, or the manifest a tag points at)."""
    if not ref.reference:
        raise UsageError(f"tag or digest is required when removing ({ref}:<tag>)")

    async def run() -> list[Removed]:
        async with _client(ref, paths, options) as client:
            found = await client.head_manifest(ref.repository, ref.reference or "")
            if found is None:
                raise NotFoundError(f"model {display_repository(str(ref))} not found")
            try:
                await client.delete_manifest(ref.repository, found.digest)
            except RegistryError as exc:
                raise RegistryError(f"removing {ref} failed: {exc}") from None
            return [Removed(str(ref), found.digest, untagged_only=False)]

    return trio.run(run)


MAX_MODEL_REFERENCE_CHAIN = 10


def unpack_reference(
    ref: Reference,
    paths: Paths,
    reg_options: RegistryOptions,
    options: UnpackOptions,
    progress: ProgressSink,
    chain: tuple[str, ...] = (),
    gate: Enforcer | None = None,
    cached: CachePolicy | None = None,
) -> dict[str, int]:
    """Unpack a ModelKit from local storage, else straight from its registry; then, when its model
    path names another ModelKit, that ModelKit's model layers too (kit's model references, at most
    ten deep, loops refused). With ``gate``, each ModelKit's signatures are checked before any of
    its layers is fetched or written."""
    store = LocalStore(paths.storage)
    try:
        _, desc = store.resolve(ref)
    except NotFoundError:
        if ref.is_local:
            raise
        counts, kitfile = _unpack_remote(ref, paths, reg_options, options, progress, gate, cached)
    else:
        if gate is not None:  # stored here, but its signatures are the registry's
            trio.run(gate.check_reference, ref, desc.digest, paths, reg_options)
        manifest = store.load_manifest(desc)
        kitfile = store.load_kitfile(manifest)
        counts = unpack_modelkit(
            manifest, kitfile, lambda d: store.blob_path(d.digest), options, progress
        )
    parent = _model_reference(kitfile)
    if parent is None or not layer_selected(options.filters, "model", kitfile.model):
        return counts
    here = (*chain, str(ref))
    if parent in here:
        raise UnpackError(f"found cycle in modelkit references: [{'=>'.join([*here, parent])}]")
    if len(here) > MAX_MODEL_REFERENCE_CHAIN:
        raise UnpackError(
            f"reached maximum number of model references: [{'=>'.join([*here, parent])}]"
        )
    log.info("unpacking referenced modelkit %s", parent)
    parent_options = replace(options, filters=[Filter(("model",))], ignore_existing=True)
    parent_counts = unpack_reference(
        parse_reference(parent), paths, reg_options, parent_options, progress, here, gate, cached
    )
    return {k: counts[k] + (parent_counts[k] if k != "kitfile" else 0) for k in counts}


def _model_reference(kitfile: Kitfile) -> str | None:
    model = kitfile.model or {}
    path = str(model.get("path") or "")
    return path if path and is_modelkit_reference(path) else None
