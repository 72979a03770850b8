"""``kitfs prefetch``: fill the mount cache with a ModelKit's layers without mounting it.

It goes through the same source and layer store as a mount (``LayerStore.open``: fetch once,
verify the digest and diffId, decompress, index, commit by rename), so what a later mount finds in
the cache is exactly what it would have fetched itself, and mounts running meanwhile share the
fetches through the cache's locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from kitfs.config import Paths
from kitfs.errors import UsageError
from kitfs.fs.layerstore import LayerStore
from kitfs.fs.sourcechoice import open_source
from kitfs.fs.tree import LayerSlot, layer_slots
from kitfs.oci.client import RegistryOptions
from kitfs.offline import Refresh
from kitfs.progress import ProgressSink
from kitfs.storage.cache import BlobCache
from kitfs.unpack import Filter, select_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prefetched:
    """What a prefetch did: the ModelKit, its layers in the cache, and how many it had to fetch."""

    name: str
    digest: str
    layers: int
    bytes: int
    fetched: int
    warnings: tuple[str, ...] = ()


async def prefetch(
    reference: str,
    paths: Paths,
    cache: BlobCache,
    registry: RegistryOptions,
    *,
    refresh: Refresh = "auto",
    filters: list[Filter] | None = None,
    progress: ProgressSink,
) -> Prefetched:
    """Resolve ``reference`` and bring every layer ``filters`` select into ``cache``, verified."""
    source = open_source(reference, paths, cache, registry, refresh)
    async with source:
        if source.target is None:
            raise UsageError(f"{reference} names a repository: prefetch needs a tag or digest")
        kit = await source.resolve(source.target)
        wanted = {
            layer.desc.digest for layer in select_layers(kit.manifest, kit.kitfile, filters or [])
        }
        slots = list(
            {
                s.digest: s for s in layer_slots(kit.manifest, kit.kitfile) if s.digest in wanted
            }.values()
        )
        store = LayerStore(source, cache, progress=progress, concurrency=registry.concurrency)
        task = progress.task(f"prefetch {kit.name}", sum(s.descriptor.size for s in slots))

        async def bring(slot: LayerSlot) -> None:
            layer = await store.open(slot)
            try:
                await store.fill(slot, layer)
            finally:
                store.release(layer)
            task.advance(slot.descriptor.size)

        try:
            async with trio.open_nursery() as nursery:
                for slot in slots:
                    nursery.start_soon(bring, slot)
        finally:
            store.close()
        log.info("prefetched %d layers of %s (%s)", len(slots), kit.name, kit.digest)
        return Prefetched(
            kit.name,
            kit.digest,
            len(slots),
            sum(s.descriptor.size for s in slots),
            store.fetches,
            tuple(getattr(source, "warnings", ())),
        )
