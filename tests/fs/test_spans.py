"""Verified span reads through real mounts: a layer with a pinned span index is listed from the
index alone and read span by span, each span checked against its digest before a byte is served.

Every registry here is a real ``docker-registry``; request counts and ranges are observed at the
fault proxy (tests/faultproxy.py) in front of it, which also plays the misbehaving registries.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
from faultproxy import (
    Fault,
    FaultProxy,
    ProxyRequest,
    Response,
    always,
    blob_get,
    ranges_asked,
)
from fs_modelkits import kitfs, snapshot, unpack_sections, write_context
from fs_mounting import Mounter, alive, wait_for
from helpers import WHOLE
from registry import RegistryServer

from kitfs.config import Paths
from kitfs.fs import spanreader
from kitfs.fs.layerstore import LayerStore, OpenLayer
from kitfs.fs.sourcechoice import open_source
from kitfs.fs.tree import layer_slots
from kitfs.layers import spanindex
from kitfs.layers.spanindex import SpanIndex, location_of, parse_index
from kitfs.layers.tarindex import TarEntry
from kitfs.oci.manifest import Descriptor, Manifest
from kitfs.oci.options import RegistryOptions
from kitfs.reference import parse
from kitfs.storage.cache import BlobCache
from kitfs.storage.local import LocalStore

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

SPAN = 64 << 10  # small spans, so that a few MiB of test data make many of them
BIG = 3 << 20
COMPRESSIONS = ("none", "gzip", "zstd")
KIT = Path(__file__).resolve().parents[3] / "shared" / "tools" / "kit"


@dataclass
class Spanned:
    home: Path
    registry: RegistryServer
    repository: str
    context: Path
    sections: dict[str, Path]

    def ref(self, tag: str, host: str | None = None) -> str:
        return f"{host or self.registry.host}/{self.repository}:{tag}"

    def manifest(self, tag: str) -> Manifest:
        store = LocalStore(Paths(self.home).storage)
        _repo, desc = store.resolve(parse(self.ref(tag)))
        return store.load_manifest(desc)

    def layer(self, tag: str, kitfile_path: str) -> tuple[Descriptor, SpanIndex]:
        """The descriptor and verified span index of the layer for a Kitfile path."""
        store = LocalStore(Paths(self.home).storage)
        manifest = self.manifest(tag)
        kitfile = store.load_kitfile(manifest)
        for entry, desc in zip(kitfile.entries(), manifest.layers, strict=True):
            if entry.path == kitfile_path:
                blob = store.blob_path(desc.digest).read_bytes()
                location = location_of(desc.annotations, desc.size)
                assert location is not None
                data = location.inline
                if data is None:
                    data = blob[location.offset : location.offset + location.size]
                compression = "none" if tag == "none" else tag
                return desc, parse_index(
                    data, location, compression=compression, blob_size=len(blob)
                )
        raise KeyError(kitfile_path)


@pytest.fixture(scope="module")
def spanned(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Spanned:
    base = tmp_path_factory.mktemp("spanned")
    home = base / "home"
    context = write_context(base / "context", big=BIG, seed=7)
    repository = f"kitfs-spans/{random.Random(os.getpid()).randrange(1 << 40):x}"
    for compression in COMPRESSIONS:
        ref = f"{registry.host}/{repository}:{compression}"
        kitfs(home, "pack", str(context), "-t", ref, "--compression", compression,
              "--span-size", str(SPAN))  # fmt: skip
        kitfs(home, "push", ref, "--plain-http")
    sections = unpack_sections(home, f"{registry.host}/{repository}:none", base / "sections")
    return Spanned(home, registry, repository, context, sections)


@pytest.fixture
def mounter(spanned: Spanned, tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path, spanned.home)
    try:
        yield m
    finally:
        m.cleanup()


def _span_ranges(index: SpanIndex, offset: int, size: int) -> list[tuple[int, int]]:
    positions = index.covering(offset, size)
    first, last = index.spans[positions[0]], index.spans[positions[-1]]
    return [(first.blob_offset, last.blob_end - 1)]


def _index_range(desc: Descriptor) -> list[tuple[int, int]]:
    location = location_of(desc.annotations, desc.size)
    assert location is not None
    if location.inline is not None:
        return []
    return [(location.offset, location.offset + location.size - 1)]


# -- the tree comes from the index alone -----------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_listing_reads_only_the_index_and_files_equal_unpack(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy, compression: str
) -> None:
    mnt = mounter.mount(spanned.ref(compression, fault_proxy.host))
    names = []
    for dirpath, _dirs, files in os.walk(mnt):
        for name in files:
            os.stat(Path(dirpath) / name)
            names.append(name)
    assert "weights.bin" in names
    manifest = spanned.manifest(compression)
    for desc in manifest.layers:
        # No layer byte but the index itself (none at all when the manifest carries it inline).
        assert ranges_asked(fault_proxy, desc.digest) == _index_range(desc)
    for section, unpacked in spanned.sections.items():
        assert snapshot(mnt / section) == snapshot(unpacked), section


def test_inline_and_embedded_indexes_as_packed(spanned: Spanned) -> None:
    for compression in COMPRESSIONS:
        for desc in spanned.manifest(compression).layers:
            location = location_of(desc.annotations, desc.size)
            assert location is not None
            assert (location.inline is not None) == (compression == "none"), compression
    # An uncompressed layer stays the exact tar kit writes (no index bytes inside it).
    home = spanned.home.parent / "plain-home"
    kitfs(home, "pack", str(spanned.context), "-t", "plain:1", *WHOLE)
    store = LocalStore(Paths(home).storage)
    _repo, desc = store.resolve(parse("plain:1"))
    plain = [d.digest for d in store.load_manifest(desc).layers]
    assert plain == [d.digest for d in spanned.manifest("none").layers]


# -- reads fetch only their spans ------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_small_file_read_fetches_one_span(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy, compression: str
) -> None:
    mnt = mounter.mount(spanned.ref(compression, fault_proxy.host))
    data = (mnt / "model" / "models" / "config.json").read_bytes()
    assert data == (spanned.context / "models" / "config.json").read_bytes()
    desc, index = spanned.layer(compression, "models/config.json")
    entry = next(e for e in index.entries if e.name == "models/config.json")
    expected = _index_range(desc) + _span_ranges(index, entry.offset, entry.size)
    assert ranges_asked(fault_proxy, desc.digest) == expected
    # Of the model layer around it (whose listing decides the directory), only the index.
    model, _ = spanned.layer(compression, "models")
    assert ranges_asked(fault_proxy, model.digest) == _index_range(model)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_random_reads_fetch_their_covering_spans_only(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy, compression: str
) -> None:
    mnt = mounter.mount(spanned.ref(compression, fault_proxy.host))
    desc, index = spanned.layer(compression, "models")
    entry = next(e for e in index.entries if e.name == "models/weights.bin")
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    rng = random.Random(3)
    offsets = sorted(rng.randrange(0, BIG - 4096) for _ in range(5))
    fetched: set[int] = set()
    with open(mnt / "model" / "models" / "weights.bin", "rb", buffering=0) as handle:
        for offset in offsets:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            handle.seek(offset)
            assert handle.read(4096) == original[offset : offset + 4096]
            fetched.update(index.covering(entry.offset + offset, 4096))
    asked = ranges_asked(fault_proxy, desc.digest)[len(_index_range(desc)) :]
    allowed = {(index.spans[p].blob_offset, index.spans[p].blob_end) for p in fetched}
    # Each request asks for whole spans that some read covered (the kernel may read ahead within
    # its window, which stays inside spans a read already needed or their neighbours).
    total = sum(end + 1 - start for start, end in asked)
    assert total <= sum(e - s for s, e in allowed) + 2 * len(offsets) * (256 << 10)
    assert total < desc.size // 2
    starts = {s.blob_offset for s in index.spans}
    assert all(start in starts for start, _ in asked)


def test_sequential_read_is_complete_and_spans_are_shared_by_the_next_mount(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    mnt = mounter.mount(spanned.ref("gzip", fault_proxy.host))
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    assert (mnt / "model" / "models" / "weights.bin").read_bytes() == original
    desc, index = spanned.layer("gzip", "models")
    asked = ranges_asked(fault_proxy, desc.digest)
    assert asked[0] == _index_range(desc)[0]
    # Every span was asked for once, in runs (one request per run of neighbours, not per span).
    covered = sorted(asked[1:])
    entry = next(e for e in index.entries if e.name == "models/weights.bin")
    needed = index.covering(entry.offset, entry.size)
    assert covered[0][0] == index.spans[needed[0]].blob_offset
    assert covered[-1][1] >= index.spans[needed[-1]].blob_end - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:], strict=False))
    assert len(covered) < len(needed) / 2
    # Each fetched span gets its digest name once it is on disk (an fdatasync in the background).
    wanted = {index.spans[p].digest for p in needed}

    def named() -> set[str]:
        return {f"sha256:{p.name}" for p in (mounter.cache / "spans" / "sha256").iterdir()}

    assert wait_for(lambda: named() >= wanted, timeout=120), sorted(wanted - named())
    # A second mount, another process, the same cache: no layer request at all.
    fault_proxy.clear()
    second = mounter.mount(spanned.ref("gzip", fault_proxy.host), mounter.mountpoint("second"))
    assert (second / "model" / "models" / "weights.bin").read_bytes() == original
    assert ranges_asked(fault_proxy, desc.digest) == []


@pytest.mark.parametrize(
    ("flags", "bound"), [(("--span-memory", "0"), 0), (("-o", "span_memory=256K"), 256 << 10)]
)
def test_mounts_with_little_or_no_span_memory_serve_the_same_bytes(
    spanned: Spanned,
    mounter: Mounter,
    fault_proxy: FaultProxy,
    flags: tuple[str, str],
    bound: int,
) -> None:
    """With span memory off (every read from the span files) or smaller than the read-ahead, two
    readers of the file at once still get the source's bytes; the daemon logs the bound it took."""
    mnt = mounter.mount(spanned.ref("zstd", fault_proxy.host), None, *flags)
    log_file = mounter.cache / "logs" / (str(mnt).strip("/").replace("/", "-") + ".log")
    assert f"span memory: up to {bound} bytes" in log_file.read_text()
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    path = mnt / "model" / "models" / "weights.bin"
    got: list[bytes] = []
    readers = [threading.Thread(target=lambda: got.append(path.read_bytes())) for _ in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(120)
    assert got == [original, original]


# -- read-ahead stays within its budget ---------------------------------------------------------

READAHEAD_BUDGET = 512 << 10  # far below the 3 MiB file, so that a read-ahead past it shows


@dataclass
class _Weights:
    """weights.bin of a spanned ModelKit, open through a LayerStore (as a mount's reads see it)."""

    store: LayerStore
    layer: OpenLayer
    entry: TarEntry
    cache: BlobCache


@contextlib.asynccontextmanager
async def _weights(
    spanned: Spanned, tag: str, host: str, base: Path, **store_options: Any
) -> AsyncIterator[_Weights]:
    """Open weights.bin of ``tag`` from the registry at ``host`` through a LayerStore on a cache
    under ``base`` (``store_options`` go to the store); the layer is released afterwards."""
    cache = BlobCache(base / "cache").ensure()
    source = open_source(
        spanned.ref(tag, host), Paths(base / "home"), cache, RegistryOptions(plain_http=True)
    )
    async with source:
        assert source.target is not None
        kit = await source.resolve(source.target)
        slot = next(s for s in layer_slots(kit.manifest, kit.kitfile) if s.root == "models")
        store = LayerStore(source, cache, **store_options)
        entry = next(e for e in await store.index(slot) if e.name == "models/weights.bin")
        layer = await store.open(slot)
        try:
            yield _Weights(store, layer, entry, cache)
        finally:
            store.release(layer)


async def _read_through_a_store(
    spanned: Spanned, proxy: FaultProxy, base: Path, reads: list[tuple[int, int]]
) -> bytes:
    """Read ``(offset, size)`` pieces of weights.bin through a LayerStore on a registry source
    (what a mount's FUSE reads call, in this process), then let its read-ahead finish."""
    # The nursery waits for the read-ahead the reads start.
    async with _weights(spanned, "none", proxy.host, base) as w, trio.open_nursery() as nursery:
        w.store.attach(nursery)
        got = [bytes(await w.store.read(w.layer, w.entry.offset + o, n)) for o, n in reads]
    return b"".join(got)


@pytest.mark.parametrize(
    "reads",
    [
        [(0, 100)],  # head -c 100
        [(0, 256 << 10)],  # one larger read at the start
        [(i * (64 << 10), 64 << 10) for i in range(16)],  # a sequential reader, 1 MiB of it
    ],
    ids=["head", "one-read", "sequential"],
)
def test_read_ahead_never_fetches_more_than_its_budget_past_the_reads(
    spanned: Spanned,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reads: list[tuple[int, int]],
) -> None:
    """Bytes asked of the registry for reads from the start of a file bigger than the read-ahead
    budget stay below what was read + the budget + two spans (rounding to whole spans): a
    sequential reader gets read-ahead, but not the rest of the file. (The budget is made small
    here by its constants; test_head_of_a_big_file_fetches... bounds it by --cache-size.)"""
    monkeypatch.setattr(spanreader, "READAHEAD_START", READAHEAD_BUDGET)
    monkeypatch.setattr(spanreader, "READAHEAD_MAX", READAHEAD_BUDGET)
    desc, index = spanned.layer("none", "models")
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    got = trio.run(_read_through_a_store, spanned, fault_proxy, tmp_path, reads)
    assert got == b"".join(original[o : o + n] for o, n in reads)
    fetched = sum(last + 1 - first for first, last in ranges_asked(fault_proxy, desc.digest))
    read = max(o + n for o, n in reads)
    assert fetched >= read
    assert fetched <= read + READAHEAD_BUDGET + 2 * SPAN, fetched
    assert read + READAHEAD_BUDGET + 2 * SPAN < BIG  # the file goes on: the budget is what stops it


def _quiet(proxy: FaultProxy, seconds: float, timeout: float = 30.0) -> bool:
    """Wait until ``proxy`` has seen no new request for ``seconds``."""
    deadline = time.monotonic() + timeout
    seen, since = len(proxy.requests), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if len(proxy.requests) != seen:
            seen, since = len(proxy.requests), time.monotonic()
        elif time.monotonic() - since >= seconds:
            return True
    return False


def test_head_of_a_big_file_fetches_no_more_than_the_cache_size_allows(
    registry: RegistryServer, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """``head -c 100`` of an 8 MiB file through a mount with --cache-size 2M: read-ahead never
    exceeds the cache size, so the registry is asked for at most the kernel's own read-ahead
    (1 MiB: kitfs.fs.daemon widens it to that) + 2 MiB + two spans, not the whole file."""
    home, context = tmp_path / "home", tmp_path / "context"
    context.mkdir()
    size = 8 << 20
    (context / "big.bin").write_bytes(random.Random(17).randbytes(size))
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: big.bin\n")
    ref = f"{registry.host}/kitfs-spans/head-{os.getpid()}:v1"
    kitfs(home, "pack", str(context), "-t", ref, "--compression", "none", "--span-size", str(SPAN))
    kitfs(home, "push", ref, "--plain-http")
    store = LocalStore(Paths(home).storage)
    _repo, mdesc = store.resolve(parse(ref))
    layer = store.load_manifest(mdesc).layers[0]
    mounter = Mounter(tmp_path / "node", home)
    mounter.base.mkdir()
    try:
        mnt = mounter.mount(
            ref.replace(registry.host, fault_proxy.host), None, "--cache-size", "2M"
        )
        head = subprocess.run(
            ["head", "-c", "100", str(mnt / "model" / "big.bin")], capture_output=True, check=True
        )
        assert head.stdout == (context / "big.bin").read_bytes()[:100]
        assert _quiet(fault_proxy, seconds=1.0)  # what read-ahead asks for, it has asked for
        daemon = mounter.daemon_pid(mnt)
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)  # read-ahead ends with it
        assert wait_for(lambda: not alive(daemon), timeout=20)
    finally:
        mounter.cleanup()
    fetched = sum(last + 1 - first for first, last in ranges_asked(fault_proxy, layer.digest))
    assert 0 < fetched <= (1 << 20) + (2 << 20) + 2 * SPAN, fetched


# -- a registry that lies or misbehaves ------------------------------------------------------


def _registry_blob(registry: RegistryServer, digest: str) -> Path:
    hexpart = digest.split(":")[1]
    found = list(registry.root.rglob(f"blobs/sha256/{hexpart[:2]}/{hexpart}/data"))
    assert found, f"{digest} is not in the registry's storage"
    return found[0]


def test_a_flipped_byte_in_the_stored_blob_fails_only_its_span(
    registry: RegistryServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    context = write_context(tmp_path / "context", big=BIG, seed=11)
    ref = f"{registry.host}/kitfs-spans/flip-{os.getpid()}:v1"
    kitfs(home, "pack", str(context), "-t", ref, "--span-size", str(SPAN))
    kitfs(home, "push", ref, "--plain-http")
    store = LocalStore(Paths(home).storage)
    _repo, mdesc = store.resolve(parse(ref))
    manifest = store.load_manifest(mdesc)
    model = manifest.layers[0]
    location = location_of(model.annotations, model.size)
    assert location is not None and location.inline is not None
    index = parse_index(location.inline, location, compression="none", blob_size=model.size)
    entry = next(e for e in index.entries if e.name == "models/weights.bin")
    bad = index.covering(entry.offset + BIG // 2, 1)[0]
    blob = _registry_blob(registry, model.digest)
    data = bytearray(blob.read_bytes())
    data[index.spans[bad].blob_offset + 10] ^= 0xFF
    blob.write_bytes(bytes(data))
    mounter = Mounter(tmp_path / "node", home)  # an empty kit home: every blob comes remotely
    mounter.base.mkdir()
    try:
        mnt = mounter.mount(ref)
        original = (context / "models" / "weights.bin").read_bytes()
        with open(mnt / "model" / "models" / "weights.bin", "rb", buffering=0) as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            bad_span = index.spans[bad]
            handle.seek(bad_span.offset - entry.offset + 100)
            with pytest.raises(OSError) as failure:
                handle.read(100)
            assert failure.value.errno == errno.EIO
            handle.seek(0)
            assert handle.read(4096) == original[:4096]  # other spans of the same file read
        assert (mnt / "model" / "models" / "config.json").read_bytes() == (
            context / "models" / "config.json"
        ).read_bytes()
        assert (mnt / "datasets" / "data" / "train.csv").read_bytes() == (
            context / "data" / "train.csv"
        ).read_bytes()
        cached = {p.name for p in (mounter.cache / "spans" / "sha256").iterdir()}
        assert index.spans[bad].digest.split(":")[1] not in cached
        assert "span" in mounter.log_path(mnt).read_text()
    finally:
        mounter.cleanup()


def _push_manifest(home: Path, ref: str, manifest: Manifest) -> None:
    store = LocalStore(Paths(home).storage)
    body = manifest.to_bytes()
    store.put_blob(body)
    store.repo_for(parse(ref)).add(manifest.descriptor(body), [parse(ref).tag or "v1"])
    kitfs(home, "push", ref, "--plain-http")


def test_an_index_that_does_not_match_its_pin_is_refused_and_the_layer_read_whole(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    manifest = spanned.manifest("zstd")
    wrong = "sha256:" + hashlib.sha256(b"not the index").hexdigest()
    layers = []
    for desc in manifest.layers:
        annotations = {**desc.annotations, spanindex.DIGEST_ANNOTATION: wrong}
        layers.append(Descriptor(desc.media_type, desc.digest, desc.size, annotations=annotations))
    lying = Manifest(
        config=manifest.config,
        layers=tuple(layers),
        annotations=manifest.annotations,
        media_type=manifest.media_type,
        artifact_type=manifest.artifact_type,
    )
    ref = spanned.ref("lying-index")
    _push_manifest(spanned.home, ref, lying)
    mnt = mounter.mount(spanned.ref("lying-index", fault_proxy.host))
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    assert (mnt / "model" / "models" / "weights.bin").read_bytes() == original
    model = manifest.layers[0]
    asked = ranges_asked(fault_proxy, model.digest)
    assert (0, -1) in asked  # fetched whole, verified against the layer digest
    assert "span index refused" in mounter.log_path(mnt).read_text()


def test_a_pinned_index_that_misplaces_a_file_is_refused_for_that_file(
    spanned: Spanned, mounter: Mounter
) -> None:
    """A writer's own lie (the manifest pins it, so digests alone cannot catch it): the index says
    src/train.py's data is where src/util/helpers.py's is. The tar header before those bytes
    names another file, so opening train.py fails while the other files read."""
    manifest = spanned.manifest("none")
    layers = []
    for desc in manifest.layers:
        location = location_of(desc.annotations, desc.size)
        assert location is not None and location.inline is not None
        index = json.loads(location.inline)
        by_name = {e[0]: e for e in index["entries"]}
        if "src/train.py" in by_name:
            victim, other = by_name["src/train.py"], by_name["src/util/helpers.py"]
            victim[4], victim[3] = other[4], other[3]
        body = json.dumps(index, separators=(",", ":")).encode()
        annotations = {**desc.annotations, **spanindex.annotations_for(body, None)}
        layers.append(Descriptor(desc.media_type, desc.digest, desc.size, annotations=annotations))
    lying = Manifest(
        config=manifest.config,
        layers=tuple(layers),
        annotations=manifest.annotations,
        media_type=manifest.media_type,
        artifact_type=manifest.artifact_type,
    )
    _push_manifest(spanned.home, spanned.ref("misplaced"), lying)
    mnt = mounter.mount(spanned.ref("misplaced"))
    with pytest.raises(OSError) as failure:
        (mnt / "code" / "src" / "train.py").read_bytes()
    assert failure.value.errno == errno.EIO
    assert (mnt / "code" / "src" / "util" / "helpers.py").read_bytes() == (
        spanned.context / "src" / "util" / "helpers.py"
    ).read_bytes()
    assert "does not hold the indexed entry" in mounter.log_path(mnt).read_text()


def test_a_registry_that_ignores_range_still_serves_verified_bytes(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    desc, index = spanned.layer("none", "models")
    store = LocalStore(Paths(spanned.home).storage)
    whole = store.blob_path(desc.digest).read_bytes()
    fault_proxy.add_rule(
        always(
            lambda r: blob_get(r) and r.path.endswith(desc.digest),
            Fault(respond=Response(200, {"Content-Type": "application/octet-stream"}, whole)),
        )
    )
    mnt = mounter.mount(spanned.ref("none", fault_proxy.host))
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    with open(mnt / "model" / "models" / "weights.bin", "rb") as handle:
        handle.seek(BIG - 5000)
        assert handle.read(5000) == original[-5000:]
    assert (mnt / "model" / "models" / "config.json").read_bytes() == (
        spanned.context / "models" / "config.json"
    ).read_bytes()


def test_a_short_206_is_asked_again_and_never_serves_wrong_bytes(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    desc, index = spanned.layer("zstd", "models")
    seen = {"n": 0}

    def short_once(request: ProxyRequest) -> Fault | None:
        if not (blob_get(request) and request.path.endswith(desc.digest)):
            return None
        if not request.headers.get("range"):
            return None
        seen["n"] += 1
        return Fault(truncate_to=1000) if seen["n"] % 2 == 0 else None

    fault_proxy.add_rule(short_once)
    mnt = mounter.mount(spanned.ref("zstd", fault_proxy.host))
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    assert (mnt / "model" / "models" / "weights.bin").read_bytes() == original
    assert seen["n"] >= 3


def test_a_corrupted_range_in_transit_is_eio_for_that_read_then_recovers(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    """One bit flipped inside a zstd span's data (a raw block of random weights: it decompresses
    to wrong bytes, nothing but the span's digest can tell) in its answer and in the retry from
    the origin: the read is EIO, never the wrong bytes; once the failure expires, a read of the
    same bytes fetches the span again and gets them right."""
    desc, index = spanned.layer("zstd", "models")
    entry = next(e for e in index.entries if e.name == "models/weights.bin")
    span = index.spans[index.covering(entry.offset + BIG // 2, 1)[0]]
    start = -(-(span.offset - entry.offset) // 4096) * 4096  # a page of the file inside the span
    assert span.offset <= entry.offset + start and entry.offset + start + 4096 <= span.end
    # The frame's header comes first, then its one raw block: plain byte k is blob byte extra + k.
    extra = span.blob_size - span.size
    plain_at = entry.offset + start + 2048 - span.offset
    corrupted = {"left": 2}

    def corrupt_the_span(request: ProxyRequest) -> Fault | None:
        header = request.headers.get("range", "")
        if not (blob_get(request) and request.path.endswith(desc.digest) and header):
            return None
        first, _, last = header.removeprefix("bytes=").partition("-")
        if corrupted["left"] > 0 and int(first) <= span.blob_offset <= int(last):
            corrupted["left"] -= 1
            return Fault(corrupt_at=span.blob_offset - int(first) + extra + plain_at)
        return None

    fault_proxy.add_rule(corrupt_the_span)
    mnt = mounter.mount(spanned.ref("zstd", fault_proxy.host))
    expected = (spanned.context / "models" / "weights.bin").read_bytes()[start : start + 4096]
    served: list[bytes] = []

    def read_page() -> int:
        """The errno of a read of the page (0 when it read), noting every byte it served."""
        with open(mnt / "model" / "models" / "weights.bin", "rb", buffering=0) as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            handle.seek(start)
            try:
                served.append(handle.read(4096))
            except OSError as exc:
                return exc.errno or -1
        return 0

    assert read_page() == errno.EIO
    assert corrupted["left"] == 0  # the first answer and the retry from the origin were both bad
    assert served == []
    assert wait_for(lambda: read_page() == 0, timeout=20)
    assert served == [expected]
    assert "span" in mounter.log_path(mnt).read_text()


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# -- crashes and the cache bound ------------------------------------------------------------


def test_kill_9_mid_fetch_leaves_only_verified_spans(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    desc, index = spanned.layer("none", "models")
    fault_proxy.add_rule(
        always(
            lambda r: blob_get(r) and r.path.endswith(desc.digest),
            Fault(stall_after=300_000, stall=30),
        )
    )
    mnt = mounter.mount(spanned.ref("none", fault_proxy.host))
    reader = threading.Thread(
        target=_read_or_none, args=(mnt / "model" / "models" / "weights.bin",), daemon=True
    )
    reader.start()
    assert wait_for(lambda: any((mounter.cache / "spans" / "sha256").iterdir()), timeout=20)
    os.kill(mounter.daemon_pid(mnt), signal.SIGKILL)
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False, capture_output=True)
    reader.join(10)
    for path in (mounter.cache / "spans" / "sha256").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_the_cache_bound_covers_spans(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    """Spans a first, unbounded mount cached (3 MiB of them) are evicted, as many as it takes, by
    the first fetch of a mount of the same cache with --cache-size 1M: the cache fits its bound."""
    first = mounter.mount(spanned.ref("zstd", fault_proxy.host))
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    assert (first / "model" / "models" / "weights.bin").read_bytes() == original
    spans = mounter.cache / "spans" / "sha256"
    _desc, index = spanned.layer("zstd", "models")
    wanted = len(index.spans) - 2  # all but the first and the last (which hold other files)
    assert wait_for(lambda: len(list(spans.iterdir())) >= wanted, timeout=60)
    pid = mounter.daemon_pid(first)
    subprocess.run(["fusermount3", "-u", str(first)], check=True)
    assert wait_for(lambda: not alive(pid), timeout=20)
    held = sum(p.stat().st_size for p in spans.iterdir())
    assert held >= BIG

    bound = 1 << 20
    mnt = mounter.mount(
        spanned.ref("zstd", fault_proxy.host), mounter.mountpoint("bounded"), "--cache-size", "1M"
    )
    assert (mnt / "model" / "models" / "config.json").read_bytes() == (
        spanned.context / "models" / "config.json"
    ).read_bytes()
    # make_room counts what is coming: two runs in flight at once may overshoot by a span each.
    assert BlobCache(mounter.cache).usage() <= bound + 2 * SPAN
    log = mounter.log_path(mnt).read_text()
    assert log.count("evicted span") >= (held - bound) // SPAN


# -- kit, skopeo and kitfs index --------------------------------------------------------------


def _kit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KIT), "--config", str(home), "--progress", "none", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not KIT.exists(), reason="the reference kit v1.7.0 is not in ../shared/tools")
@pytest.mark.parametrize("compression", ["none", "gzip"])  # kit v1.7 reads no zstd layers at all
def test_kit_pulls_unpacks_and_pushes_an_indexed_modelkit(
    spanned: Spanned, tmp_path: Path, mounter: Mounter, compression: str
) -> None:
    home = tmp_path / "kit-home"
    ref = spanned.ref(compression)
    result = _kit(home, "pull", ref, "--plain-http")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    result = _kit(home, "unpack", ref, "-d", str(out))
    assert result.returncode == 0, result.stderr
    expected = snapshot(spanned.context, skip=("Kitfile",))
    got = snapshot(out, skip=("Kitfile",))
    assert {k: v[2:] for k, v in got.entries.items() if v[0] == "file"} == {
        k: v[2:] for k, v in expected.entries.items() if v[0] == "file"
    }
    copy = f"{spanned.registry.host}/{spanned.repository}-kit:{compression}"
    assert _kit(home, "tag", ref, copy).returncode == 0
    result = _kit(home, "push", copy, "--plain-http")
    assert result.returncode == 0, result.stderr
    # kit kept the manifest (and so the pinned indexes) byte for byte: the copy mounts by spans.
    mnt = mounter.mount(copy)
    assert (mnt / "model" / "models" / "config.json").read_bytes() == (
        spanned.context / "models" / "config.json"
    ).read_bytes()
    assert "span index of" in mounter.log_path(mnt).read_text()


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_copy_keeps_the_indexes(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    source = f"docker://{spanned.ref('zstd')}"
    copy = f"{spanned.registry.host}/{spanned.repository}-skopeo:zstd"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
         "--preserve-digests", source, f"docker://{copy}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    mnt = mounter.mount(copy.replace(spanned.registry.host, fault_proxy.host))
    assert (mnt / "model" / "models" / "config.json").read_bytes() == (
        spanned.context / "models" / "config.json"
    ).read_bytes()
    desc, _index = spanned.layer("zstd", "models")
    assert (0, -1) not in ranges_asked(fault_proxy, desc.digest)


@pytest.mark.skipif(not KIT.exists(), reason="the reference kit v1.7.0 is not in ../shared/tools")
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_kitfs_index_makes_a_kit_packed_modelkit_span_readable(
    spanned: Spanned, tmp_path: Path, mounter: Mounter, fault_proxy: FaultProxy, compression: str
) -> None:
    home = tmp_path / "kit-home"
    kit_ref = f"{spanned.registry.host}/{spanned.repository}-bykit:{compression}"
    packed = _kit(home, "pack", str(spanned.context), "-t", kit_ref, "--compression", compression)
    assert packed.returncode == 0, packed.stderr
    indexed = f"{spanned.registry.host}/{spanned.repository}-bykit:{compression}-indexed"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("kitfs")), "--config", str(home),
         "--progress", "none", "index", kit_ref, "-t", indexed, "--push", "--plain-http"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if compression == "none":
        assert "0 B of new layer bytes uploaded" in result.stdout
    else:
        assert "re-encoded" in result.stderr
    mnt = mounter.mount(indexed.replace(spanned.registry.host, fault_proxy.host))
    assert (mnt / "model" / "models" / "config.json").read_bytes() == (
        spanned.context / "models" / "config.json"
    ).read_bytes()
    assert "span index of" in mounter.log_path(mnt).read_text()
    # kit still unpacks the indexed ModelKit to the same files.
    out = tmp_path / "kit-out"
    fresh = tmp_path / "fresh"
    assert _kit(fresh, "pull", indexed, "--plain-http").returncode == 0
    assert _kit(fresh, "unpack", indexed, "-d", str(out)).returncode == 0
    assert (out / "models" / "weights.bin").read_bytes() == (
        spanned.context / "models" / "weights.bin"
    ).read_bytes()


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_raw_layers_are_read_by_spans_with_an_inline_index(
    registry: RegistryServer, tmp_path: Path, fault_proxy: FaultProxy, compression: str
) -> None:
    home, context = tmp_path / "home", tmp_path / "context"
    context.mkdir()
    weights = random.Random(5).randbytes(BIG)
    (context / "w.bin").write_bytes(weights)
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: w.bin\n")
    ref = f"{registry.host}/kitfs-spans/raw-{compression}-{os.getpid()}:v1"
    kitfs(home, "pack", str(context), "-t", ref, "--layer-format", "raw",
          "--compression", compression, "--span-size", str(SPAN))  # fmt: skip
    kitfs(home, "push", ref, "--plain-http")
    store = LocalStore(Paths(home).storage)
    _repo, mdesc = store.resolve(parse(ref))
    layer = store.load_manifest(mdesc).layers[0]
    location = location_of(layer.annotations, layer.size)
    assert location is not None and location.inline is not None
    index = parse_index(location.inline, location, compression=compression, blob_size=layer.size)
    mounter = Mounter(tmp_path / "node", home)
    mounter.base.mkdir()
    try:
        mnt = mounter.mount(ref.replace(registry.host, fault_proxy.host))
        with open(mnt / "model" / "w.bin", "rb", buffering=0) as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            handle.seek(BIG // 2)
            assert handle.read(4096) == weights[BIG // 2 : BIG // 2 + 4096]
        assert ranges_asked(fault_proxy, layer.digest) == _span_ranges(index, BIG // 2, 4096)
        assert (mnt / "model" / "w.bin").read_bytes() == weights
    finally:
        mounter.cleanup()


def test_kitfs_pull_keeps_the_indexes_and_local_mounts_read_spans_in_place(
    spanned: Spanned, tmp_path: Path
) -> None:
    """After `kitfs pull`, the manifest (so its pinned indexes) is byte for byte the registry's,
    and a mount of the local copy verifies each span where it lies in kit's storage."""
    home = tmp_path / "pulled"
    ref = spanned.ref("none")
    kitfs(home, "pull", ref, "--plain-http")
    store = LocalStore(Paths(home).storage)
    _repo, desc = store.resolve(parse(ref))
    assert store.read_blob(desc.digest) == spanned.manifest("none").to_bytes()
    mounter = Mounter(tmp_path / "node", home)
    mounter.base.mkdir()
    try:
        mnt = mounter.mount(ref, local=True)
        original = (spanned.context / "models" / "weights.bin").read_bytes()
        with open(mnt / "model" / "models" / "weights.bin", "rb") as handle:
            handle.seek(BIG - 4096)
            assert handle.read(4096) == original[-4096:]
        assert list((mounter.cache / "spans" / "sha256").iterdir()) == []  # read in place
        assert "span index of" in mounter.log_path(mnt).read_text()
    finally:
        mounter.cleanup()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_spans_already_read_serve_a_new_mount_while_the_registry_is_away(
    spanned: Spanned, mounter: Mounter, fault_proxy: FaultProxy, compression: str
) -> None:
    """Offline (issue 13) with span layers: the manifest, config and index come from the cache
    by digest, and the spans a first mount verified serve the next one; spans never fetched fail
    with EIO rather than hang or serve anything unverified."""
    manifest = spanned.manifest(compression)
    digest = "sha256:" + hashlib.sha256(manifest.to_bytes()).hexdigest()
    by_digest = f"{fault_proxy.host}/{spanned.repository}@{digest}"
    first = mounter.mount(by_digest)
    config = (first / "model" / "models" / "config.json").read_bytes()
    subprocess.run(["fusermount3", "-u", str(first)], check=True)
    fault_proxy.refuse_connections()
    try:
        again = mounter.mount(by_digest, mounter.mountpoint("offline"))
        assert (again / "model" / "models" / "config.json").read_bytes() == config
        # The weights' spans (its header's, too) were never fetched: opening them fails cleanly.
        with pytest.raises(OSError) as failure:
            (again / "model" / "models" / "weights.bin").read_bytes()
        assert failure.value.errno == errno.EIO
    finally:
        fault_proxy.refuse_connections(False)


async def _sequential_with_span_memory(
    spanned: Spanned,
    tag: str,
    host: str,
    base: Path,
    budget: int,
    chunk: int,
    pause: float = 0.0,
) -> tuple[bytes, int, int, int]:
    """Read weights.bin from start to end in ``chunk`` reads (``pause`` seconds apart: a loader's
    own work) through a LayerStore whose span memory holds ``budget`` bytes; (bytes read, buffers
    mapped, most bytes held, spans fetched)."""
    got, most = [], 0
    async with _weights(spanned, tag, host, base, span_memory=budget) as w:
        store, entry = w.store, w.entry
        async with trio.open_nursery() as nursery:
            store.attach(nursery)
            for offset in range(0, entry.size, chunk):
                size = min(chunk, entry.size - offset)
                got.append(bytes(await store.read(w.layer, entry.offset + offset, size)))
                most = max(most, store.memory.held_bytes)
                if pause:
                    await trio.sleep(pause)
        assert w.layer.spans is not None
        fetched = w.layer.spans.fetched_spans
    assert store.memory.held_bytes == 0  # the layer closed: its spans left memory
    return b"".join(got), store.memory.created, most, fetched


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_spans_are_served_from_reused_buffers_and_their_cache_files_hold_the_same_bytes(
    spanned: Spanned, fault_proxy: FaultProxy, tmp_path: Path, compression: str
) -> None:
    """A sequential reader is served from span memory: every byte equals the source, memory never
    holds more than its budget, and buffers are reused (far fewer mapped than spans fetched).
    The spans' cache files (written with O_DIRECT from those buffers) then serve a second store
    that keeps nothing in memory, with no request to the registry."""
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    budget = 6 * SPAN
    got, created, most, fetched = trio.run(
        _sequential_with_span_memory, spanned, compression, fault_proxy.host, tmp_path,
        budget, 200_000,
    )  # fmt: skip
    assert got == original
    assert fetched >= BIG // SPAN  # every span of the file went through memory
    assert most <= budget
    assert 0 < created <= 24 < fetched, (created, fetched)
    assert _quiet(fault_proxy, 0.3)
    fault_proxy.clear()
    again, _, most, fetched = trio.run(
        _sequential_with_span_memory, spanned, compression, fault_proxy.host, tmp_path, 0,
        1 << 20,
    )  # fmt: skip
    assert again == original
    assert (most, fetched) == (0, 0)
    assert fault_proxy.matching("GET", "/blobs/") == []


async def _read_now_then_read(
    spanned: Spanned, host: str, base: Path, requests: Callable[[], int]
) -> dict[str, object]:
    """What ``read_now`` (the FUSE read's path without waiting) gives for a range of weights.bin
    before it was fetched, after, and after its span file was removed; the registry's request
    count around each step."""
    seen: dict[str, object] = {}
    # No span memory: the spans are read from their files.
    async with _weights(spanned, "none", host, base, span_memory=0) as w:
        store, layer = w.store, w.layer
        offset = w.entry.offset + 5 * SPAN + 100  # inside a span, not at the file's start
        before = requests()
        seen["cold"] = store.read_now(layer, offset, 4096)
        seen["cold requests"] = requests() - before
        seen["read"] = bytes(await store.read(layer, offset, 4096))
        before = requests()
        seen["ready"] = bytes(store.read_now(layer, offset, 4096) or b"")
        seen["ready requests"] = requests() - before
        for path in w.cache.root.rglob("*"):
            if path.is_file() and "span" in str(path.relative_to(w.cache.root)):
                path.unlink()
        try:  # an fd it holds open still reads the verified bytes; else it cannot answer
            seen["evicted"] = bytes(store.read_now(layer, offset, 4096) or b"")
        except FileNotFoundError:
            seen["evicted"] = "FileNotFoundError"
        seen["read again"] = bytes(await store.read(layer, offset, 4096))
        seen["offset"] = offset - w.entry.offset
    return seen


def test_read_now_answers_only_ready_bytes_and_never_fetches(
    spanned: Spanned, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """A FUSE read first asks ``read_now`` (no time bound, nothing awaited): it must give None for
    bytes not fetched yet, without a request; the verified bytes once they are ready, without a
    request; and an error (so the read falls back to the fetching path) when the span's file went
    away (or the same bytes, through the fd it holds open), never wrong or empty bytes."""
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    seen = trio.run(
        _read_now_then_read,
        spanned,
        fault_proxy.host,
        tmp_path,
        lambda: len(fault_proxy.matching("GET", "/blobs/")),
    )
    start = int(cast(int, seen["offset"]))
    assert seen["cold"] is None and seen["cold requests"] == 0
    assert seen["read"] == original[start : start + 4096]
    assert seen["ready"] == seen["read"] and seen["ready requests"] == 0
    assert seen["evicted"] in ("FileNotFoundError", seen["read"])
    assert seen["read again"] == seen["read"]


def test_a_warm_sequential_reader_is_answered_from_spans_read_ahead_into_memory(
    spanned: Spanned, fault_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a warm cache, the spans ahead of a sequential reader are read from their files into span
    memory by worker threads, so most reads are answered from memory, not by a pread on the event
    loop; the bytes equal the source, nothing is fetched, and memory stays within its budget."""
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    cold, _, _, fetched = trio.run(
        _sequential_with_span_memory, spanned, "none", fault_proxy.host, tmp_path, 0, 1 << 20
    )
    assert cold == original and fetched >= BIG // SPAN
    assert _quiet(fault_proxy, 0.3)
    fault_proxy.clear()
    preads = []
    pread_into = spanreader.SpanReader._pread_into

    def counted(self: spanreader.SpanReader, *args: Any) -> None:
        preads.append(args[0])
        pread_into(self, *args)

    monkeypatch.setattr(spanreader.SpanReader, "_pread_into", counted)
    budget, chunk = 16 * SPAN, 32 << 10
    warm, _, most, fetched = trio.run(
        _sequential_with_span_memory, spanned, "none", fault_proxy.host, tmp_path, budget, chunk,
        0.002,
    )  # fmt: skip
    reads = -(-len(original) // chunk)
    assert warm == original
    assert fetched == 0 and fault_proxy.matching("GET", "/blobs/") == []
    assert 0 < most <= budget
    assert len(preads) < reads // 4, (len(preads), reads)


async def _read_then_idle(spanned: Spanned, host: str, base: Path) -> dict[str, object]:
    """Read weights.bin through a store whose span memory is released after 0.2 s unused; what
    memory holds while reading, after the reads stop, and what a read after that gives."""
    seen: dict[str, object] = {}
    async with _weights(spanned, "none", host, base, span_memory=16 * SPAN, memory_idle=0.2) as w:
        store, layer, entry = w.store, w.layer, w.entry
        async with trio.open_nursery() as nursery:
            store.attach(nursery)
            half = entry.size // 2
            seen["first half"] = bytes(await store.read(layer, entry.offset, half))
        seen["in use"] = store.memory.held_bytes + store.memory.idle_bytes
        await trio.sleep(1.0)  # the reader pauses (its file stays open)
        seen["idle"] = store.memory.held_bytes + store.memory.idle_bytes
        seen["second half"] = bytes(await store.read(layer, entry.offset + half, entry.size - half))
    return seen


def test_span_memory_goes_back_to_the_system_when_reads_stop(
    spanned: Spanned, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """A loader that stops reading (its model loaded) leaves no span memory behind: after the
    idle time the held spans and idle buffers are released; a later read still gets the verified
    bytes (from the spans' cache files, or fetched again)."""
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    seen = trio.run(_read_then_idle, spanned, fault_proxy.host, tmp_path)
    half = len(original) // 2
    assert seen["first half"] == original[:half]
    assert cast(int, seen["in use"]) > 0
    assert seen["idle"] == 0
    assert seen["second half"] == original[half:]


def _system_tasks() -> int:
    """The tasks directly under trio's root task (where system tasks run)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return sum(len(nursery.child_tasks) for nursery in root.child_nurseries)


async def _stores_opened_and_closed(spanned: Spanned, host: str, base: Path) -> tuple[int, int]:
    """Open, read through and close three stores in one event loop (as fsspec sessions come and
    go); the event loop's tasks before and after, and the span memory the last one keeps."""
    before = _system_tasks()
    kept = 0
    for round_ in range(3):
        async with _weights(spanned, "none", host, base / str(round_), span_memory=16 * SPAN) as w:
            async with trio.open_nursery() as nursery:
                w.store.attach(nursery)
                await w.store.read(w.layer, w.entry.offset, 1 << 20)
            store = w.store
        store.close()
        kept = store.memory.held_bytes + store.memory.idle_bytes
    # The closed stores' release tasks see their cancellation; short-lived system tasks (trio
    # finalizing httpx's async generators) end too: only tasks that stay are counted.
    await trio.testing.wait_all_tasks_blocked()
    after = _system_tasks()
    return after - before, kept


def test_a_closed_store_keeps_no_memory_and_no_task(
    spanned: Spanned, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Closing a store (a mount ending, an fsspec session closed) ends its idle-memory task and
    gives its span memory back at once: a process that opens many keeps none of them alive."""
    tasks, kept = trio.run(_stores_opened_and_closed, spanned, fault_proxy.host, tmp_path)
    assert tasks == 0
    assert kept == 0


def test_a_cold_sequential_reader_looks_for_each_span_file_once(
    spanned: Spanned, fault_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read asks whether the spans it and its read-ahead cover are cached; the cache is
    asked (a stat on the event loop) at most once per span file, not again on every read of a
    cold reader while its spans are missing or on their way."""
    looked: list[str] = []
    real_isfile = os.path.isfile

    def counting(path: Any) -> bool:
        if "/spans/" in str(path):
            looked.append(str(path))
        return real_isfile(path)

    monkeypatch.setattr(os.path, "isfile", counting)
    # Looked for again after ABSENT_TTL: a slow run must not count those.
    monkeypatch.setattr(spanreader, "ABSENT_TTL", 600.0)
    reads = [(i * (16 << 10), 16 << 10) for i in range(128)]  # 2 MiB in 16 KiB reads
    got = trio.run(_read_through_a_store, spanned, fault_proxy, tmp_path, reads)
    original = (spanned.context / "models" / "weights.bin").read_bytes()
    assert len(got) == 2 << 20 and got == original[: len(got)]
    assert looked, "the reader never looked in the cache"
    assert len(looked) == len(set(looked)), f"{len(looked)} looks for {len(set(looked))} spans"
