"""Load with faults: 32 readers of random byte ranges of several files across four layers, for a
bounded time, while the proxy injects one registry fault per second and a small cache bound keeps
layers being evicted and fetched again. Every byte a read returns is checked against the copy that
``kitfs unpack`` wrote; a read may fail (EIO, while a layer's fetch failed verification), but never
return other bytes. When the faults stop, every file reads back whole and right.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from faultproxy import (
    Fault,
    FaultProxy,
    blob_get,
    flip,
    once,
    refuse,
    reset_midway,
    stall,
    status,
    truncate,
)
from helpers import cli, ok
from registry import RegistryServer

from kitfs.storage.cache import BlobCache

from .helpers import (
    Kit,
    Mounts,
    alive,
    files_in,
    is_mounted,
    make_kit,
    payload,
    wait_until_read,
)

READERS = 32
DURATION = 20.0
SECTION = {"model": "model", "data": "datasets", "src": "code", "docs": "docs"}


def load_files() -> dict[str, bytes]:
    files = {
        "model/a.bin": payload(2_000_000, seed=21),
        "model/b.bin": payload(1_500_000, seed=22),
        "data/x.bin": payload(1_200_000, seed=23),
        "data/y.csv": b"".join(b"%d,%d\n" % (i, i * 7) for i in range(30_000)),
        "docs/guide.md": b"# guide\n" * 4000,
    }
    for i in range(8):
        files[f"src/m{i}.py"] = payload(20_000 + i * 5000, seed=30 + i)
    return files


def fault(turn: int, rng: random.Random) -> Fault:
    """The fault of one second: every kind in turn (each comes back every 9 s), at random offsets
    inside the smallest layer so that each one bites."""
    kinds = [
        lambda: flip(rng.randrange(0, 30_000)),
        lambda: reset_midway(rng.randrange(1, 30_000)),
        lambda: status(503, retry_after="0"),
        lambda: truncate(rng.randrange(0, 30_000)),
        lambda: Fault(cut_after=rng.randrange(1, 30_000)),
        lambda: status(429),
        lambda: refuse(),
        lambda: stall(1.5, after=rng.randrange(0, 30_000)),
        lambda: status(500),
    ]
    return kinds[turn % len(kinds)]()


@pytest.fixture(scope="module")
def kit(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("loadkit")
    return make_kit(
        base / "home",
        base / "ctx",
        registry.host,
        "reliability/load",
        files=load_files(),
        compression="none",  # no gzip CRC behind the digest check: the check alone must hold
    )


def test_32_readers_with_a_fault_per_second_never_see_a_wrong_byte(
    kit: Kit, mounts: Mounts, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    unpacked = tmp_path / "unpacked"
    ok(cli(kit.home, "unpack", kit.ref(), "-d", str(unpacked), "--plain-http"))
    expected = {rel: data for rel, data in files_in(unpacked).items() if rel != "Kitfile"}
    assert expected == kit.files
    mnt = mounts.mount(kit.ref(fault_proxy.host))
    # A neighbour sharing the cache with a tiny bound evicts every layer no open file reads, as
    # often as it can: layers keep being fetched again, so the faults keep hitting real fetches.
    neighbour = BlobCache(mounts.cache, max_size=1)
    paths = {rel: mnt / SECTION[rel.split("/")[0]] / rel for rel in expected}
    top = {rel: rel.split("/")[0] for rel in expected}
    groups = (
        sorted(r for r in expected if top[r] in ("model", "docs")),
        sorted(r for r in expected if top[r] in ("data", "src")),
    )
    stop = threading.Event()
    counts: Counter[str] = Counter()
    wrong: list[str] = []
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            # Each second the readers move to the other half of the layers, leaving the first
            # half closed for the neighbour to evict: every layer is fetched again and again.
            rel = rng.choice(groups[int(time.monotonic()) % 2])
            data = expected[rel]
            # Half the reads start near the head of a file, where the faults flip bytes.
            offset = rng.randrange(0, min(len(data), 40_000) if rng.random() < 0.5 else len(data))
            length = rng.choice([1, 4096, 65536, 1 << 20])
            try:
                fd = os.open(paths[rel], os.O_RDONLY)
                try:
                    got = os.pread(fd, length, offset)
                finally:
                    os.close(fd)
            except OSError as exc:
                with lock:
                    counts[errno.errorcode.get(exc.errno or 0, str(exc.errno))] += 1
                continue
            with lock:
                if got != data[offset : offset + length]:
                    wrong.append(f"{rel}@{offset}+{length}")
                counts["ok"] += 1

    def evictor() -> None:
        while not stop.wait(0.2):
            if neighbour.make_room(0):
                counts["evictions"] += 1

    def injector() -> None:
        rng = random.Random(7)
        turn = 0
        while not stop.wait(1.0):
            fault_proxy.add_rule(once(blob_get, fault(turn, rng)))
            turn += 1
            counts["faults"] += 1

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    threads.append(threading.Thread(target=injector, daemon=True))
    threads.append(threading.Thread(target=evictor, daemon=True))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(DURATION)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a reader hung"
    assert time.monotonic() - started < DURATION + 30
    assert wrong == [], f"wrong bytes served: {wrong[:5]}"
    assert set(counts) <= {"ok", "faults", "evictions", "EIO"}, counts  # failures are EIO only
    assert counts["ok"] > 1000 and counts["faults"] >= DURATION - 2, counts
    blob_gets = [r for r in fault_proxy.requests if blob_get(r)]
    print(f"load: {dict(counts)}, {len(blob_gets)} blob fetches")
    assert len(blob_gets) >= DURATION, "layers were not fetched again: the faults hit nothing"
    assert is_mounted(mnt) and alive(mounts.pid(mnt))
    fault_proxy.clear()
    for rel, data in expected.items():
        wait_until_read(paths[rel], data)
