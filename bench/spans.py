"""Span reads benchmark (docs/span-index.md): what a mount costs when layers carry a span index.

Run by `make bench` (as `bench/run.py --spans`) or alone. Builds ModelKits whose model directory holds
a small `config.json` beside a large weights file (1 GiB random, and 10 GiB for the first-byte row)
plus a dataset of 3,000 small files, packs them with span indexes (several span sizes) and without
(kit's layers, read whole), pushes them to a loopback docker-registry, and measures, each cold (empty
kitfs cache, page cache dropped) and against limits measured in the same run:

- S1 first bytes: mount, then `cat config.json`; seconds and registry bytes fetched.
- S2 random 4 KiB reads across the weights file: p50/p99 latency and bytes fetched, against the same
  reads of a local copy with the page cache dropped.
- S3 sequential read of the weights file: throughput as a fraction of `curl -o /dev/null` of the blob
  and of Python's sha256 over the same bytes (the network and hash limits).
- S4 one small file of a 3,000-file dataset layer: bytes fetched and seconds.

It rewrites only its own section of docs/benchmarks.md (between the spans markers).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from registry import Registry  # noqa: E402
from tools import (  # noqa: E402
    REPO,
    can_drop_page_cache,
    drop_page_cache,
    force_unmount,
    is_mountpoint,
    kitfs,
    numbered_scratch,
    percentile,
    wait_readable,
)

BEGIN = "<!-- spans:begin -->"
END = "<!-- spans:end -->"
ANALYSIS_BEGIN = "<!-- spans-analysis:begin -->"
ANALYSIS_END = "<!-- spans-analysis:end -->"
MIB = 1 << 20
READ = 4096


@dataclass
class Results:
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, table: str, *cells: object) -> None:
        row = [str(c) for c in cells]
        self.tables.setdefault(table, []).append(row)
        print(f"spans: {table}: {' | '.join(row)}", flush=True)


def _write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 16 * MIB)
            out.write(rng.randbytes(n))
            left -= n


def make_context(root: Path, weights_mib: int, files: int, sparse: bool) -> Path:
    """A context: model/config.json + model/weights.bin, and data/ with ``files`` small files."""
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_text('{"architectures": ["Bench"], "hidden": 4096}\n')
    weights = root / "model" / "weights.bin"
    if sparse:  # the 10 GiB row reads one small file: the weights' content does not matter
        with open(weights, "wb") as out:
            out.truncate(weights_mib * MIB)
    else:
        _write_random(weights, weights_mib * MIB, 1)
    data = root / "data"
    data.mkdir()
    rng = random.Random(2)
    for i in range(files):
        (data / f"part-{i:05d}.csv").write_bytes(b"a,b\n" + rng.randbytes(rng.randrange(500, 3000)))
    (root / "Kitfile").write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: spans-bench\n"
        "model:\n  name: bench\n  path: model\n"
        "datasets:\n  - name: parts\n    path: data\n"
    )
    marker.touch()
    return root


class Bench:
    def __init__(self, work: Path, registry: Registry) -> None:
        self.work = work
        self.registry = registry
        self.home = work / "pack-home"
        self.counter = 0

    def scratch(self, name: str) -> Path:
        self.counter += 1
        return numbered_scratch(self.work, self.counter, name)

    def publish(self, context: Path, tag: str, *flags: str) -> tuple[str, dict[str, object]]:
        ref = f"{self.registry.host}/bench/spans:{tag}"
        kitfs(self.home, "pack", str(context), "-t", ref, *flags)
        kitfs(self.home, "push", ref, "--plain-http")
        inspect = json.loads(kitfs(self.home, "inspect", ref))
        return ref, inspect["manifest"]

    def mount(self, ref: str) -> tuple[Path, Path]:
        mnt, cache = self.scratch("mnt"), self.scratch("cache")
        home = self.scratch("home")
        kitfs(home, "mount", ref, str(mnt), "--plain-http", "--cache-dir", str(cache))
        wait_readable(mnt / "Kitfile")
        return mnt, cache

    def unmount(self, mnt: Path, cache: Path) -> None:
        force_unmount(mnt)
        shutil.rmtree(cache, ignore_errors=True)

    def fetched(self, mark: int) -> int:
        return self.registry.fetched_since(mark).blob_bytes


def _mib(n: float) -> str:
    if n < MIB:
        return f"{n / 1024:.1f} KiB"
    return f"{n / MIB:.2f} MiB" if n < 100 * MIB else f"{n / MIB:.0f} MiB"


def first_bytes(b: Bench, r: Results, ref: str, label: str) -> None:
    drop_page_cache()
    mnt, cache = b.mount(ref)
    mark = b.registry.mark()
    start = time.perf_counter()
    (mnt / "model" / "model" / "config.json").read_bytes()
    seconds = time.perf_counter() - start
    r.add("S1", label, f"{seconds:.3f} s", _mib(b.fetched(mark)))
    b.unmount(mnt, cache)


def random_reads(
    b: Bench, r: Results, ref: str, label: str, size: int, local: Path, count: int
) -> None:
    rng = random.Random(7)
    offsets = [rng.randrange(0, size - READ) // READ * READ for _ in range(count)]
    drop_page_cache()
    mnt, cache = b.mount(ref)
    target = mnt / "model" / "model" / "weights.bin"
    mark = b.registry.mark()
    mount_lat = _preads(target, offsets)
    fetched = b.fetched(mark)
    b.unmount(mnt, cache)
    drop_page_cache()
    local_lat = _preads(local, offsets)
    p50, p99 = percentile(mount_lat, 0.5), percentile(mount_lat, 0.99)
    lp50, lp99 = percentile(local_lat, 0.5), percentile(local_lat, 0.99)
    r.add(
        "S2",
        label,
        f"{p50 * 1000:.1f} ms",
        f"{p99 * 1000:.1f} ms",
        f"{lp50 * 1000:.2f} / {lp99 * 1000:.2f} ms",
        _mib(fetched),
        f"{fetched / (count * READ):.0f}x",
    )


def _preads(path: Path, offsets: list[int]) -> list[float]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        latencies = []
        for offset in offsets:
            start = time.perf_counter()
            os.pread(fd, READ, offset)
            latencies.append(time.perf_counter() - start)
        return latencies
    finally:
        os.close(fd)


def sequential(b: Bench, r: Results, ref: str, label: str, blob_url: str, size: int) -> None:
    drop_page_cache()
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "-o", "/dev/null", blob_url], check=True)
    curl = time.perf_counter() - start
    drop_page_cache()
    mnt, cache = b.mount(ref)
    target = mnt / "model" / "model" / "weights.bin"
    mark = b.registry.mark()
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(target, "rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    seconds = time.perf_counter() - start
    fetched = b.fetched(mark)
    b.unmount(mnt, cache)
    data = b"\0" * (64 * MIB)
    start = time.perf_counter()
    hasher = hashlib.sha256()
    for _ in range(max(1, size // len(data))):
        hasher.update(data)
    sha = (time.perf_counter() - start) * size / (max(1, size // len(data)) * len(data))
    r.add(
        "S3",
        label,
        f"{seconds:.2f} s ({size / seconds / MIB:.0f} MiB/s)",
        f"{curl:.2f} s",
        f"{curl / seconds:.2f}",
        f"{sha:.2f} s",
        _mib(fetched),
    )


def small_file(b: Bench, r: Results, ref: str, label: str, files: int) -> None:
    drop_page_cache()
    mnt, cache = b.mount(ref)
    mark = b.registry.mark()
    start = time.perf_counter()
    (mnt / "datasets" / "data" / f"part-{files // 2:05d}.csv").read_bytes()
    seconds = time.perf_counter() - start
    r.add("S4", label, f"{seconds:.3f} s", _mib(b.fetched(mark)))
    b.unmount(mnt, cache)


def _blob_url(b: Bench, manifest: dict[str, object]) -> tuple[str, int]:
    layers = manifest["layers"]
    assert isinstance(layers, list)
    big = max(layers, key=lambda layer: layer["size"])
    return f"http://{b.registry.host}/v2/bench/spans/blobs/{big['digest']}", int(big["size"])


def run(work: Path, weights_mib: int, big_mib: int, files: int, span_sizes: list[str]) -> Results:
    r = Results()
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    context = make_context(work / f"context-{weights_mib}", weights_mib, files, sparse=False)
    registry = Registry(work / "registry")
    registry.start()
    b = Bench(work, registry)
    try:
        local = context / "model" / "weights.bin"
        size = local.stat().st_size
        refs: dict[str, str] = {}
        for span in span_sizes:
            refs[f"none, {span} spans"], manifest = b.publish(
                context, f"none-{span}", "--span-size", span
            )
        for compression in ("gzip", "zstd"):
            refs[f"{compression}, 4MiB spans"], _ = b.publish(
                context, compression, "--compression", compression
            )
        refs["none, no index (kit's layers)"], plain = b.publish(
            context, "plain", "--no-span-index"
        )
        url, blob_size = _blob_url(b, plain)
        for label, ref in refs.items():
            print(f"spans: {label} at {time.strftime('%H:%M:%S')}", flush=True)
            first_bytes(b, r, ref, f"{weights_mib} MiB weights, {label}")
            small_file(b, r, ref, label, files)
            random_reads(b, r, ref, label, size, local, 200)
            if "kit's" in label or label.startswith(("gzip", "zstd")) or "4MiB" in label:
                sequential(b, r, ref, label, url, blob_size)
        if big_mib:
            big = make_context(work / f"context-{big_mib}", big_mib, 10, sparse=True)
            ref, _ = b.publish(big, "big")
            first_bytes(b, r, ref, f"{big_mib // 1024} GiB weights, none, 4MiB spans")
            shutil.rmtree(big, ignore_errors=True)
    finally:
        for entry in sorted((work / "scratch").iterdir()):
            if is_mountpoint(entry):
                force_unmount(entry)
        registry.stop()
        shutil.rmtree(work / "registry", ignore_errors=True)
        shutil.rmtree(b.home, ignore_errors=True)
        shutil.rmtree(work / "scratch", ignore_errors=True)
    return r


HEADERS = {
    "S1": (
        "S1: cold first bytes: `cat config.json` after mount (a small file beside the weights)",
        ["ModelKit", "time", "bytes fetched"],
    ),
    "S2": (
        "S2: cold random 4 KiB reads of the weights file (200 reads, one reader)",
        ["layer", "p50", "p99", "local file cold p50 / p99", "bytes fetched", "fetched / read"],
    ),
    "S3": (
        "S3: cold sequential read of the weights file, against curl of the blob and Python sha256",
        [
            "layer",
            "kitfs mount",
            "curl -o /dev/null",
            "vs curl (≥0.6 goal)",
            "sha256 alone",
            "bytes fetched",
        ],
    ),
    "S4": (
        "S4: one small file out of the 3,000-file dataset layer",
        ["layer", "time", "bytes fetched"],
    ),
}


def render(r: Results, command: str, date: str, elapsed: float, analysis: str = "") -> str:
    machine = report.machine_facts(REPO)
    lines = [
        BEGIN,
        "## Span reads (docs/span-index.md)",
        "",
        f"- Date: {date}; run time {elapsed / 60:.1f} min; command: `{command}`",
        f"- Machine: {machine.nproc} CPUs, {machine.memory} RAM, Python {machine.python}; kitfs commit {machine.commit}",
        f"- Page cache: {'dropped before every cold step' if can_drop_page_cache() else 'NOT dropped (no permission)'}; every mount starts with an empty cache and home; bytes are GET bodies in the registry's access log",
        "",
    ]
    for key, (title, headers) in HEADERS.items():
        rows = r.tables.get(key, [])
        lines += [f"### {title}", "", "| " + " | ".join(headers) + " |"]
        lines += ["|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += [""]
    lines += [
        ANALYSIS_BEGIN,
        analysis.strip("\n") or "(no analysis written for this run yet)",
        ANALYSIS_END,
    ]
    lines += [END]
    return "\n".join(lines) + "\n"


def existing_section(path: Path) -> str | None:
    """The spans section of an existing report (kept when the main run rewrites the page)."""
    return report.existing_section(path, BEGIN, END)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/kitfs-bench/spans"))
    p.add_argument("--weights-mib", type=int, default=1024)
    p.add_argument("--big-mib", type=int, default=10240, help="0 skips the 10 GiB row")
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--span-sizes", default="1MiB,4MiB,16MiB")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = p.parse_args(argv)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = run(
        args.workdir.resolve(),
        args.weights_mib,
        args.big_mib,
        args.files,
        args.span_sizes.split(","),
    )
    command = "bench/run.py --spans " + " ".join(argv)
    kept = report.existing_section(args.output, ANALYSIS_BEGIN, ANALYSIS_END) or ""
    analysis = kept.removeprefix(ANALYSIS_BEGIN).strip().removesuffix(ANALYSIS_END)
    section = render(results, command.strip(), date, time.monotonic() - started, analysis)
    print(section)
    report.write_section(args.output, BEGIN, END, section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
