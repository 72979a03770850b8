"""The mount cache (kitfs/storage/cache.py): atomic entries, verified blobs, LRU that spares pins."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from kitfs.errors import DigestMismatchError, StorageError
from kitfs.layers.tarindex import TarEntry
from kitfs.storage.cache import BlobCache, LayerRecord


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add_tar(cache: BlobCache, data: bytes, age: float) -> str:
    digest = _digest(data)
    temp = cache.temp_path("t")
    temp.write_bytes(data)
    path = cache.commit_tar(temp, digest)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return digest


@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache", max_size=3000).ensure()


def test_eviction_removes_least_recently_used_tars_first(cache: BlobCache) -> None:
    old = _add_tar(cache, b"a" * 1000, age=300)
    mid = _add_tar(cache, b"b" * 1000, age=200)
    new = _add_tar(cache, b"c" * 1000, age=100)
    assert cache.make_room(1000) == 1000
    assert not cache.tar_path(old).exists()
    assert cache.tar_path(mid).exists() and cache.tar_path(new).exists()


def test_eviction_spares_a_tar_that_is_pinned(cache: BlobCache) -> None:
    old = _add_tar(cache, b"a" * 1000, age=300)
    mid = _add_tar(cache, b"b" * 1000, age=200)
    pinned = cache.pin(old)
    assert pinned is not None
    os.utime(cache.tar_path(old), (time.time() - 400, time.time() - 400))
    try:
        cache.make_room(2000)
        assert cache.tar_path(old).exists()
        assert not cache.tar_path(mid).exists()
        assert os.pread(pinned.fd, 4, 0) == b"aaaa"
    finally:
        pinned.close()
    cache.make_room(2500)
    assert not cache.tar_path(old).exists()


def _add_span(cache: BlobCache, data: bytes, age: float) -> str:
    digest = _digest(data)
    temp = cache.temp_path("s")
    temp.write_bytes(data)
    path = cache.commit_span(temp, digest)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return digest


def test_one_eviction_removes_as_many_entries_as_the_incoming_bytes_need(tmp_path: Path) -> None:
    """A cache over its bound (a smaller --cache-size than last time) and a big arrival: one
    make_room evicts every old entry it takes, tars and spans alike, oldest first."""
    cache = BlobCache(tmp_path / "cache", max_size=10_000).ensure()
    tars = [_add_tar(cache, bytes([65 + i]) * 1000, age=900 - 100 * i) for i in range(3)]
    spans = [_add_span(cache, bytes([97 + i]) * 1000, age=600 - 100 * i) for i in range(3)]
    newest = _add_tar(cache, b"z" * 1000, age=10)
    cache.max_size = 3000  # 7000 bytes held: 4000 over, and 1000 more are coming
    assert cache.make_room(1000) == 5000
    assert [cache.tar_path(d).exists() for d in tars] == [False, False, False]
    assert [cache.span_path(d).exists() for d in spans] == [False, False, True]
    assert cache.tar_path(newest).exists()
    assert cache.usage() == 2000


def test_eviction_goes_past_pinned_tars_to_free_enough(cache: BlobCache) -> None:
    oldest = _add_tar(cache, b"a" * 1000, age=500)
    pinned_digest = _add_tar(cache, b"b" * 1000, age=400)
    third = _add_tar(cache, b"c" * 1000, age=300)
    pinned = cache.pin(pinned_digest)
    assert pinned is not None
    os.utime(cache.tar_path(pinned_digest), (time.time() - 450, time.time() - 450))
    try:
        assert cache.make_room(2500) == 2000  # all it can: the pinned one stays
        assert not cache.tar_path(oldest).exists() and not cache.tar_path(third).exists()
        assert cache.tar_path(pinned_digest).exists()
    finally:
        pinned.close()


def test_pin_bumps_the_tar_to_most_recently_used(cache: BlobCache) -> None:
    first = _add_tar(cache, b"a" * 1000, age=300)
    second = _add_tar(cache, b"b" * 1000, age=200)
    handle = cache.pin(first)
    assert handle is not None
    handle.close()
    cache.make_room(2000)
    assert cache.tar_path(first).exists() and not cache.tar_path(second).exists()


def test_pin_of_a_missing_tar_is_none(cache: BlobCache) -> None:
    assert cache.pin(_digest(b"nothing")) is None


def test_unbounded_cache_never_evicts(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c").ensure()
    digest = _add_tar(cache, b"x" * 5000, age=1000)
    assert cache.make_room(10**12) == 0
    assert cache.tar_path(digest).exists()


def test_small_blobs_are_verified_on_write_and_read(cache: BlobCache) -> None:
    data = b'{"manifestVersion": "1.0.0"}'
    digest = _digest(data)
    with pytest.raises(DigestMismatchError):
        cache.write_blob(_digest(b"other"), data)
    cache.write_blob(digest, data)
    assert cache.read_blob(digest) == data
    (cache.blobs / digest.split(":")[1]).write_bytes(b"tampered")
    assert cache.read_blob(digest) is None
    assert not (cache.blobs / digest.split(":")[1]).exists()


def test_layer_records_round_trip(cache: BlobCache) -> None:
    entries = (TarEntry("a", True, 0o755, 0, 512, 0), TarEntry("a/b.bin", False, 0o600, 7, 1024, 5))
    record = LayerRecord(_digest(b"blob"), _digest(b"tar"), entries)
    cache.write_record(record)
    assert cache.read_record(record.digest) == record
    (cache.indexes / record.digest.split(":")[1]).write_text("{not json")
    assert cache.read_record(record.digest) is None


def test_fetch_lock_is_exclusive(cache: BlobCache) -> None:
    digest = _digest(b"layer")
    with cache.try_fetch_lock(digest) as first:
        assert first
        with cache.try_fetch_lock(digest) as second:
            assert not second
    with cache.try_fetch_lock(digest) as again:
        assert again


def test_digests_that_are_not_sha256_are_refused(cache: BlobCache) -> None:
    with pytest.raises(StorageError):
        cache.tar_path("sha256:../../etc/passwd")


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c").ensure()
    stale = cache.tmp / "blob.1.2"
    fresh = cache.tmp / "blob.3.4"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (0, 0))
    cache.ensure()
    assert not stale.exists() and fresh.exists()
