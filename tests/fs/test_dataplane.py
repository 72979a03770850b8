"""The threaded data plane through real mounts: span runs are received, verified and stored by worker
threads (kitfs.oci.handoff, kitfs.fs.spansink), and the event loop only learns which spans
arrived. Many readers at once get the source's bytes, each span fetched once; a span whose bytes
are wrong is EIO for that span only and never cached; a failing worker or an unmount mid-fetch
leaves only verified names in the cache; read-ahead stays inside the file being read.

A real ``docker-registry`` behind the fault proxy (tests/faultproxy.py), which counts the ranges
asked for and plays the misbehaving registry.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from faultproxy import Fault, FaultProxy, ProxyRequest, blob_get, ranges_asked
from fs_modelkits import kitfs
from fs_mounting import Mounter, wait_for
from registry import RegistryServer

from kitfs.config import Paths
from kitfs.fs import spanreader
from kitfs.fs.layerstore import LayerError, LayerStore
from kitfs.fs.source import LocalStorageSource
from kitfs.fs.tree import layer_slots
from kitfs.layers.spanindex import SpanIndex, location_of, parse_index
from kitfs.oci.manifest import Descriptor
from kitfs.reference import parse
from kitfs.storage.cache import BlobCache
from kitfs.storage.local import LocalStore

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

SPAN = 256 << 10
FILE_SIZE = 3 << 20  # 12 spans each
NAMES = ("a.bin", "b.bin", "c.bin", "d.bin")
KITFILE = """\
manifestVersion: 1.0.0
package:
  name: shards
model:
  name: shards
  path: weights
"""


@dataclass
class Shards:
    host: str  # the registry the ModelKit was pushed to (and is in local storage under)
    home: Path
    context: Path
    ref_path: str  # repository:tag, without the registry
    layer: Descriptor
    index: SpanIndex

    def ref(self, host: str) -> str:
        return f"{host}/{self.ref_path}"

    def source(self, name: str) -> bytes:
        return (self.context / "weights" / name).read_bytes()


@pytest.fixture(scope="module")
def shards(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Shards:
    """Four 3 MiB files in one uncompressed, span-indexed model layer (256 KiB spans)."""
    base = tmp_path_factory.mktemp("shards")
    context = base / "context"
    (context / "weights").mkdir(parents=True)
    (context / "Kitfile").write_text(KITFILE)
    rng = random.Random(17)
    for name in NAMES:
        (context / "weights" / name).write_bytes(rng.randbytes(FILE_SIZE))
    home = base / "home"
    ref_path = f"kitfs-dataplane/{os.getpid():x}:v1"
    ref = f"{registry.host}/{ref_path}"
    kitfs(home, "pack", str(context), "-t", ref, "--span-size", str(SPAN))
    kitfs(home, "push", ref, "--plain-http")
    store = LocalStore(Paths(home).storage)
    _repo, mdesc = store.resolve(parse(ref))
    layer = store.load_manifest(mdesc).layers[0]
    location = location_of(layer.annotations, layer.size)
    assert location is not None and location.inline is not None
    index = parse_index(location.inline, location, compression="none", blob_size=layer.size)
    return Shards(registry.host, home, context, ref_path, layer, index)


@pytest.fixture
def mounter(shards: Shards, tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path, shards.home)
    try:
        yield m
    finally:
        m.cleanup()


def _settle(proxy: FaultProxy, quiet: float = 1.0) -> None:
    """Wait until the proxy has seen no new request for ``quiet`` seconds (at most 20 s)."""
    deadline = time.monotonic() + 20
    seen, since = len(proxy.requests), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.05)
        if len(proxy.requests) != seen:
            seen, since = len(proxy.requests), time.monotonic()


def _entry_span(shards: Shards, name: str, offset: int) -> int:
    entry = next(e for e in shards.index.entries if e.name.endswith(name))
    return shards.index.covering(entry.offset + offset, 1)[0]


def _read_in(path: Path, size: int) -> bytes:
    parts = []
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(size):
            parts.append(chunk)
    return b"".join(parts)


MMAP_READER = """
import hashlib, mmap, sys
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as view:
    sys.stdout.write(hashlib.sha256(view).hexdigest())
"""


def _read_mmap(path: Path) -> str:
    """The sha256 of a file read through mmap, in another process: a page fault holds the GIL
    while it waits for the daemon, which waits for the fault proxy in this process."""
    done = subprocess.run(
        [sys.executable, "-c", MMAP_READER, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_many_readers_of_one_file_and_of_different_files_get_the_source_bytes_once(
    shards: Shards, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    mnt = mounter.mount(shards.ref(fault_proxy.host))
    weights = mnt / "model" / "weights"
    readers = [
        (NAMES[0], lambda p: _sha(_read_in(p, 4096))),
        (NAMES[0], lambda p: _sha(_read_in(p, 1 << 20))),
        (NAMES[0], _read_mmap),
        (NAMES[0], lambda p: _sha(p.read_bytes())),
        *[(name, lambda p: _sha(_read_in(p, 128 << 10))) for name in NAMES[1:]],
        (NAMES[3], _read_mmap),
    ]
    results: dict[int, str | BaseException] = {}

    def run(i: int, name: str, read: object) -> None:
        try:
            results[i] = read(weights / name)  # type: ignore[operator]
        except BaseException as exc:  # reported below, with the reader that failed
            results[i] = exc

    threads = [
        threading.Thread(target=run, args=(i, name, read)) for i, (name, read) in enumerate(readers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for i, (name, _read) in enumerate(readers):
        got = results.get(i)
        assert isinstance(got, str), f"reader {i} of {name}: {got!r}"
        assert got == _sha(shards.source(name)), f"reader {i} of {name} got other bytes"
    # Readers of the same spans share one fetch: no byte of the layer was asked for twice.
    asked = sorted(ranges_asked(fault_proxy, shards.layer.digest))
    assert asked and all(end >= 0 for _, end in asked)
    assert all(a[1] < b[0] for a, b in zip(asked, asked[1:], strict=False)), asked


def test_read_ahead_of_a_small_read_stays_inside_its_file(
    shards: Shards, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    mnt = mounter.mount(shards.ref(fault_proxy.host))
    with open(mnt / "model" / "weights" / NAMES[1], "rb") as handle:
        assert handle.read(100) == shards.source(NAMES[1])[:100]
    _settle(fault_proxy)  # read-ahead runs in the background: count what it asked for too
    entry = next(e for e in shards.index.entries if e.name.endswith(NAMES[1]))
    first, last = entry.offset, entry.offset + entry.size - 1
    asked = ranges_asked(fault_proxy, shards.layer.digest)
    assert asked
    spans = shards.index.spans
    lo = spans[shards.index.covering(first, 1)[0]].blob_offset
    hi = spans[shards.index.covering(last, 1)[0]].blob_end - 1
    for start, end in asked:
        assert lo <= start and end <= hi, f"asked {start}-{end}, outside {NAMES[1]} ({lo}-{hi})"
    fetched = sum(end - start + 1 for start, end in asked)
    assert fetched <= spanreader.READAHEAD_START + 2 * SPAN + (128 << 10)


def _corrupt_span(index: SpanIndex, position: int) -> object:
    """A rule that flips a byte inside span ``position`` in every answer that carries it."""
    target = index.spans[position].blob_offset + 1000

    def rule(request: ProxyRequest) -> Fault | None:
        if not blob_get(request):
            return None
        header = request.headers.get("range", "")
        if not header:
            return Fault(corrupt_at=target)
        start, _, end = header.removeprefix("bytes=").partition("-")
        if int(start) <= target <= int(end):
            return Fault(corrupt_at=target - int(start))
        return None

    return rule


def test_a_span_that_fails_its_digest_in_a_worker_is_eio_for_that_span_only(
    shards: Shards, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    bad = _entry_span(shards, NAMES[2], FILE_SIZE // 2)
    fault_proxy.add_rule(_corrupt_span(shards.index, bad))  # type: ignore[arg-type]
    mnt = mounter.mount(shards.ref(fault_proxy.host))
    path = mnt / "model" / "weights" / NAMES[2]
    source = shards.source(NAMES[2])
    entry = next(e for e in shards.index.entries if e.name.endswith(NAMES[2]))
    span = shards.index.spans[bad]
    with open(path, "rb", buffering=0) as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        handle.seek(span.offset - entry.offset + 10)
        with pytest.raises(OSError) as failure:
            handle.read(100)
        assert failure.value.errno == errno.EIO
        # The spans around it read (away from the bad span's pages: the kernel reads whole pages).
        before = span.offset - entry.offset - (64 << 10)
        handle.seek(before)
        assert handle.read(4096) == source[before : before + 4096]
        after = span.offset + span.size - entry.offset + (64 << 10)
        handle.seek(after)
        assert handle.read(4096) == source[after : after + 4096]
    # The whole other files read; the bad span's bytes were asked for again from the origin.
    assert (mnt / "model" / "weights" / NAMES[3]).read_bytes() == shards.source(NAMES[3])
    carrying = [
        (s, e)
        for s, e in ranges_asked(fault_proxy, shards.layer.digest)
        if s <= span.blob_offset <= e
    ]
    assert len(carrying) >= 2
    cached = list((mounter.cache / "spans" / "sha256").iterdir())
    assert span.digest.split(":")[1] not in {p.name for p in cached}
    assert wait_for(lambda: not list((mounter.cache / "tmp").iterdir()), timeout=30)
    for cached_span in (mounter.cache / "spans" / "sha256").iterdir():
        assert hashlib.sha256(cached_span.read_bytes()).hexdigest() == cached_span.name


def test_unmount_while_workers_fetch_leaves_only_verified_names(
    shards: Shards, mounter: Mounter, fault_proxy: FaultProxy
) -> None:
    # Every answer stalls after 300 KB: workers are in the middle of receiving when the mount ends.
    fault_proxy.add_rule(
        lambda r: (
            Fault(stall_after=300_000, stall=20) if blob_get(r) and r.headers.get("range") else None
        )
    )
    mnt = mounter.mount(shards.ref(fault_proxy.host))
    readers = [
        threading.Thread(
            target=_read_or_error, args=(mnt / "model" / "weights" / name,), daemon=True
        )
        for name in NAMES
    ]
    for reader in readers:
        reader.start()
    spans = mounter.cache / "spans" / "sha256"
    assert wait_for(lambda: spans.is_dir() and any(spans.iterdir()), timeout=30)
    pid = mounter.daemon_pid(mnt)
    os.kill(pid, signal.SIGTERM)  # as `kitfs umount` of a busy mount, or a node shutting down
    assert wait_for(lambda: not _alive(pid), timeout=30), "the daemon did not end"
    for reader in readers:
        reader.join(30)
        assert not reader.is_alive()
    names = list(spans.iterdir())
    assert names
    for path in names:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def _read_or_error(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.read_bytes()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_worker_that_dies_gives_an_error_not_a_hang(
    shards: Shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (no FUSE): a sink whose worker raises something unexpected fails its spans
    (LayerError, which the mount answers as EIO) and the next read of other spans goes on."""
    ref = parse(shards.ref(shards.host))
    store = LocalStore(Paths(shards.home).storage)
    _repo, mdesc = store.resolve(ref)
    manifest = store.load_manifest(mdesc)
    slot = layer_slots(manifest, store.load_kitfile(manifest))[0]
    real_store = spanreader.SpanReader._verify_and_store
    broken = {_entry_span(shards, NAMES[0], 0)}

    def dying(
        self: spanreader.SpanReader, position: int, span: object, buffer: object, data: memoryview
    ) -> object:
        if position in broken:
            raise RuntimeError("a worker bug")
        return real_store(self, position, span, buffer, data)  # type: ignore[arg-type]

    monkeypatch.setattr(spanreader.SpanReader, "_verify_and_store", dying)

    async def main() -> None:
        source = LocalStorageSource(ref, store)
        layers = LayerStore(source, BlobCache(tmp_path / "cache").ensure())
        layer = await layers.open(slot)
        entry = next(e for e in shards.index.entries if e.name.endswith(NAMES[0]))
        with trio.fail_after(30):
            with pytest.raises(LayerError):
                await layers.read(layer, entry.offset, 4096)
            other = next(e for e in shards.index.entries if e.name.endswith(NAMES[1]))
            data = bytes(await layers.read(layer, other.offset, 4096))
        assert data == shards.source(NAMES[1])[:4096]
        layers.release(layer)
        layers.close()

    trio.run(main)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs a little larger than one file: the cache may hold that file, not its neighbours."""
    target = tmp_path / "disk"
    target.mkdir()
    size = FILE_SIZE + (1 << 20)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_file_as_large_as_the_cache_bound_reads_whole_on_a_disk_that_fits_only_it(
    shards: Shards, mounter: Mounter, fault_proxy: FaultProxy, small_disk: Path
) -> None:
    """The issue's case: `cmp` of a 40 MiB file with --cache-size 40M on a 50 MB file system failed
    with EIO (ENOSPC on spans read ahead past the file). Read-ahead stays inside the file and the
    cache bound: the whole file reads, byte for byte."""
    cache = small_disk / "cache"
    mnt = mounter.mount(
        shards.ref(fault_proxy.host), None, "--cache-size", str(FILE_SIZE), cache=cache
    )
    for name in NAMES[:2]:
        assert _sha((mnt / "model" / "weights" / name).read_bytes()) == _sha(shards.source(name))
    assert "No space left" not in mounter.log_path(mnt, cache).read_text()
