"""Layers on demand (kitfs/fs/layerstore.py) from kit's local storage: verification, the cache, one
fetch for many readers. Registry-backed fetching is covered through real mounts in test_mount.py."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from fs_modelkits import kitfs, write_context
from helpers import WHOLE

from kitfs.config import Paths
from kitfs.fs.layerstore import LayerError, LayerStore
from kitfs.fs.source import LocalStorageSource
from kitfs.fs.tree import LayerSlot, layer_slots
from kitfs.reference import parse
from kitfs.storage.cache import BlobCache
from kitfs.storage.local import LocalStore


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("layerstore")
    context = write_context(base / "context", big=2_000_000)
    home = base / "home"
    for compression in ("none", "gzip", "zstd"):
        kitfs(
            home,
            "pack",
            str(context),
            "-t",
            f"ls/film:{compression}",
            "--compression",
            compression,
            *WHOLE,
        )
    return home


def _setup(
    home: Path, tmp_path: Path, compression: str
) -> tuple[LayerStore, list[LayerSlot], BlobCache]:
    ref = parse(f"ls/film:{compression}")
    store = LocalStore(Paths(home).storage)
    _repo, desc = store.resolve(ref)
    manifest = store.load_manifest(desc)
    slots = layer_slots(manifest, store.load_kitfile(manifest))
    cache = BlobCache(tmp_path / "cache").ensure()
    return LayerStore(LocalStorageSource(ref, store), cache), slots, cache


def _weights(slots: list[LayerSlot]) -> LayerSlot:
    return next(s for s in slots if s.kind == "model")


def test_uncompressed_layers_are_read_in_place_without_a_copy(home: Path, tmp_path: Path) -> None:
    layers, slots, cache = _setup(home, tmp_path, "none")
    slot = _weights(slots)

    async def run() -> bytes:
        entries = await layers.index(slot)
        weights = next(e for e in entries if e.name == "models/weights.bin")
        layer = await layers.open(slot)
        try:
            return bytes(await layers.read(layer, weights.offset, 16))
        finally:
            layers.release(layer)

    expected = (home.parent / "context" / "models" / "weights.bin").read_bytes()[:16]
    assert trio.run(run) == expected
    assert list(cache.tars.iterdir()) == []
    assert cache.read_record(slot.digest) is not None


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_layers_are_decompressed_into_the_cache_once(
    home: Path, tmp_path: Path, compression: str
) -> None:
    layers, slots, cache = _setup(home, tmp_path, compression)
    slot = _weights(slots)

    async def run() -> list[bytes]:
        results: list[bytes] = []

        async def reader() -> None:
            entries = await layers.index(slot)
            weights = next(e for e in entries if e.name == "models/weights.bin")
            layer = await layers.open(slot)
            results.append(bytes(await layers.read(layer, weights.offset, weights.size)))
            layers.release(layer)

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(reader)
        return results

    expected = (home.parent / "context" / "models" / "weights.bin").read_bytes()
    assert trio.run(run) == [expected] * 8
    assert layers.fetches == 1
    record = cache.read_record(slot.digest)
    assert record is not None and record.diff_id == slot.diff_id
    assert [p.name for p in cache.tars.iterdir()] == [slot.diff_id.split(":")[1]]  # type: ignore[union-attr]


def test_a_wrong_diff_id_fails_and_caches_nothing(home: Path, tmp_path: Path) -> None:
    layers, slots, cache = _setup(home, tmp_path, "gzip")
    slot = dataclasses.replace(_weights(slots), diff_id="sha256:" + "e" * 64)
    with pytest.raises(LayerError, match="diffId"):
        trio.run(layers.index, slot)
    assert list(cache.tars.iterdir()) == []
    assert list(cache.tmp.iterdir()) == []
    assert cache.read_record(slot.digest) is None


def _private_copy(home: Path, tmp_path: Path) -> Path:
    """A kit home of the test's own (a copy of the module's storage), to damage blobs in."""
    copy = tmp_path / "home"
    shutil.copytree(home / "storage", copy / "storage")
    return copy


def _flip(path: Path, at: int) -> bytes:
    """Flip one bit of the file at ``at`` (same size); return what it held before."""
    good = path.read_bytes()
    data = bytearray(good)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return good


def test_a_damaged_local_blob_fails_verification(home: Path, tmp_path: Path) -> None:
    own = _private_copy(home, tmp_path)
    layers, slots, cache = _setup(own, tmp_path, "zstd")
    slot = _weights(slots)
    blob = LocalStore(Paths(own).storage).blob_path(slot.digest)
    good = _flip(blob, blob.stat().st_size // 2)
    # The blob's own digest fails (not only the diffId of what it decompresses to).
    with pytest.raises(LayerError, match=f"{re.escape(str(blob))} failed verification"):
        trio.run(layers.index, slot)
    assert list(cache.tars.iterdir()) == []
    assert list(cache.tmp.iterdir()) == []
    assert cache.read_record(slot.digest) is None
    # The failure is remembered for a few seconds: no second attempt hammers the source, even
    # once the blob is sound again; a new store (a new mount) reads it.
    blob.write_bytes(good)
    with pytest.raises(LayerError, match="failed verification"):
        trio.run(layers.index, slot)
    again, _, _ = _setup(own, tmp_path, "zstd")
    assert trio.run(again.index, slot) == trio.run(
        _setup(home, tmp_path / "x", "zstd")[0].index, slot
    )


def test_an_in_place_blob_damaged_after_indexing_is_refused_by_the_next_store(
    home: Path, tmp_path: Path
) -> None:
    """Two stores (two mounts) on one cache: the first indexes an uncompressed layer in place, the
    blob is then damaged in kit's storage; the second, finding the index cached, must still hash
    the blob before it serves a byte of it."""
    own = _private_copy(home, tmp_path)
    first, slots, cache = _setup(own, tmp_path, "none")
    slot = _weights(slots)
    entries = trio.run(first.index, slot)
    weights = next(e for e in entries if e.name == "models/weights.bin")
    assert cache.read_record(slot.digest) is not None
    blob = LocalStore(Paths(own).storage).blob_path(slot.digest)
    good = _flip(blob, weights.offset + 100)
    second, _, _ = _setup(own, tmp_path, "none")

    async def read_head(store: LayerStore) -> bytes:
        assert await store.index(slot) == entries  # from the cache: no hash needed for this
        layer = await store.open(slot)
        try:
            return bytes(await store.read(layer, weights.offset, 4096))
        finally:
            store.release(layer)

    with pytest.raises(LayerError, match=slot.digest):
        trio.run(read_head, second)
    blob.write_bytes(good)
    third, _, _ = _setup(own, tmp_path, "none")
    assert (
        trio.run(read_head, third)
        == (home.parent / "context" / "models" / "weights.bin").read_bytes()[:4096]
    )


def test_a_cached_tar_whose_index_is_gone_is_reindexed_without_fetching(
    home: Path, tmp_path: Path
) -> None:
    layers, slots, cache = _setup(home, tmp_path, "gzip")
    slot = _weights(slots)
    entries = trio.run(layers.index, slot)
    (cache.indexes / slot.digest.split(":")[1]).unlink()
    again, _, _ = _setup(home, tmp_path, "gzip")
    source: Any = again.source

    def no_local_blob(desc: object) -> None:
        return None

    source.local_blob = no_local_blob  # nothing to decompress from: only the cached tar is left
    assert trio.run(again.index, slot) == entries
    assert cache.read_record(slot.digest) is not None
