"""The model-load benchmark's state and steps: the run's results, its mounts and each timed step.

Each step is timed by ``ModelLoad.step`` (page cache dropped first for a cold step, registry bytes
counted from its access log) and recorded as a ``Row`` under the row's name; a failed step records
its error and the run goes on. bench/modelload.py builds, packs and publishes the models and calls
``measure``; bench/loadreport.py renders the rows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import procstat
import pyspy
from hfmodel import HfModel
from loader import LoaderPool
from mounts import KitfsMount
from registry import Registry
from tools import (
    CommandFailed,
    Timer,
    dd_read,
    drop_page_cache,
    find_in_mount,
    force_unmount,
    fuse_daemon_pid,
    is_mountpoint,
    numbered_scratch,
    run,
)

MIB = 1 << 20
GIB = 1 << 30
REPO_NAME = "bench/modelload"
RANKS = 4
CURL_RUNS = 3

# The ModelKits: (label, which model, packed by)
PAIR, TP, SINGLE = "pair", "tp", "single"
DEFAULT, KIT = "kitfs", "kit"

CURL = "`curl -o /dev/null` of the model layer blob (kitfs default layer)"
CURL_KIT = "`curl -o /dev/null` of kit's model layer blob"
LOCAL_COLD = "load from a local directory, page cache dropped"
LOCAL_WARM = "load from a local directory, warm"
KIT_LOAD = "`kit pull` + `kit unpack` + load"
MOUNT_DEFAULT = "kitfs cold mount + load, default span-indexed layers"
MOUNT_KIT = "kitfs cold mount + load, kit's layers (no index)"
WARM_LOAD = "kitfs warm cache, new mount, then load (from the mount being ready)"
WARM_MOUNT_LOAD = "kitfs warm cache, new mount + load (mount included)"
CURL_SINGLE = "`curl -o /dev/null` of the single-file model's layer blob"
DD_SINGLE = (
    "kitfs cold mount, then `dd bs=1M` of the single span-indexed file (from the mount being ready)"
)
LOCAL_MMAP = "`safe_open` (mmap) load from a local directory, page cache dropped"
MOUNT_MMAP = "kitfs cold mount + `safe_open` (mmap) load, default span-indexed layers"
WARM_MMAP = "kitfs warm cache, new mount, then `safe_open` (mmap) load (from the mount being ready)"
WARM_MOUNT_MMAP = "kitfs warm cache, new mount + `safe_open` (mmap) load (mount included)"
CURL_TP = "`curl -o /dev/null` of the 4-shard model's layer blob"
LOCAL_TP = "4 loaders at once from a local directory, page cache dropped"
KIT_TP = "`kit pull` + `kit unpack` + 4 loaders at once"
MOUNT_TP = "kitfs cold mount + 4 loaders at once, default span-indexed layers"


@dataclass
class Row:
    """One timed step: seconds, or why it failed; registry bytes; the daemon's CPU and bytes served."""

    seconds: float | None = None
    error: str | None = None
    fetched: int | None = None
    cpu: float | None = None  # daemon CPU-s from the mount being ready to the last byte loaded
    cpu_total: float | None = None  # daemon CPU-s from its start (mount included)
    served: int | None = None  # bytes the loaders or dd read through the mount
    parts: dict[str, float] = field(default_factory=dict)
    runs: int = 1  # times the step's work ran (the curl rows keep the fastest of CURL_RUNS)

    def cpu_per_gib(self) -> float | None:
        if self.cpu is None or not self.served:
            return None
        return self.cpu / (self.served / GIB)


@dataclass(frozen=True)
class Blob:
    ref: str
    digest: str
    size: int

    def url(self, host: str) -> str:
        return f"http://{host}/v2/{REPO_NAME}/blobs/{self.digest}"


@dataclass(frozen=True)
class Sizes:
    shard_mib: int
    tp_shard_mib: int
    single_mib: int


@dataclass
class Profile:
    raw: Path
    flamegraph: Path
    summary: pyspy.Summary | None
    error: str | None = None


class ModelLoad:
    """The registry, models, published ModelKits, scratch space and results of one run."""

    def __init__(self, work: Path, registry: Registry, kit: str | None, mount_args: list[str]):
        self.work, self.registry, self.kit, self.mount_args = work, registry, kit, mount_args
        self.models: dict[str, HfModel] = {}
        self.blobs: dict[tuple[str, str], Blob] = {}
        self.rows: dict[str, Row] = {}
        self.notes: list[str] = []
        self.profile: Profile | None = None
        self.counter = 0

    def scratch(self, name: str) -> Path:
        self.counter += 1
        return numbered_scratch(self.work, self.counter, name)

    def remove_scratch(self) -> None:
        """Unmount whatever is still mounted in the scratch space (its daemon killed if it lingers)
        and empty it."""
        scratch = self.work / "scratch"
        if scratch.exists():
            for entry in sorted(scratch.iterdir()):
                if is_mountpoint(entry):
                    pid = fuse_daemon_pid(entry)
                    force_unmount(entry)
                    _kill_if_alive(pid)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)

    def step(self, name: str, fn: Callable[[Row], float], cold: bool = True) -> Row:
        """Run one timed step (page cache dropped first when ``cold``), record and print it.

        ``fn`` fills the row's extras and returns the seconds; a failure is recorded, not raised."""
        row = self.rows.setdefault(name, Row())
        if cold:
            drop_page_cache()
        mark = self.registry.mark()
        try:
            row.seconds = fn(row)
        except (CommandFailed, OSError, RuntimeError) as exc:
            row.error = str(exc).replace("\n", " | ")[:400]
            print(f"modelload: {name}: FAILED: {row.error}", flush=True)
            return row
        row.fetched = self.registry.fetched_since(mark).blob_bytes // row.runs
        print(f"modelload: {name}: {_describe(row)}", flush=True)
        return row


def _kill_if_alive(pid: int | None) -> None:
    """SIGKILL a daemon this benchmark started that outlived its unmount."""
    if pid is not None and procstat.alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _describe(row: Row) -> str:
    text = f"{row.seconds:.2f} s, registry sent {(row.fetched or 0) / MIB:.0f} MiB"
    per_gib = row.cpu_per_gib()
    if per_gib is not None:
        text += f", daemon {row.cpu:.2f} CPU-s ({per_gib:.2f}/GiB)"
    if row.parts:
        text += " (" + ", ".join(f"{k} {v:.2f} s" for k, v in row.parts.items()) + ")"
    return text


def assign(model: HfModel, base: Path, ranks: int) -> list[list[Path]]:
    """The files each loader reads: one loader reads them all; with ``ranks`` loaders, rank i
    reads the small files and shard i."""
    if ranks == 1:
        return [[base / f for f in model.files]]
    small = [base / f for f in model.files if not f.endswith(".safetensors")]
    return [[*small, base / shard] for shard in model.shards]


def _looked_up(mounted: Mounted) -> tuple[Path, float]:
    """The model's directory in the mount, and the seconds finding it took. They count in the
    load: a layer without an index is fetched whole before its files can be listed, so for kit's
    layers this is where the fetch happens."""
    with Timer() as t:
        path = mounted.model_dir()
    return path, t.seconds


def _mounted_load(
    pool: LoaderPool, model: HfModel, mounted: Mounted, ranks: int
) -> tuple[float, int, float]:
    """Look the model up in the mount and load it: (seconds of both, tensor bytes, lookup)."""
    base, lookup = _looked_up(mounted)
    seconds, loaded = _checked_load(pool, model, base, ranks)
    return lookup + seconds, loaded, lookup


def _checked_load(pool: LoaderPool, model: HfModel, base: Path, ranks: int) -> tuple[float, int]:
    seconds, loaded = pool.load(assign(model, base, ranks))
    if loaded != model.tensor_bytes:
        raise RuntimeError(f"loaded {loaded} tensor bytes, not the model's {model.tensor_bytes}")
    return seconds, loaded


def curl(b: ModelLoad, name: str, blob: Blob) -> None:
    """The link: ``curl -o /dev/null`` of the blob, page cache dropped before each of CURL_RUNS
    runs; the fastest is kept, so one slow sample on a shared machine does not make it the
    reference every ratio is judged against."""

    def fetch(row: Row) -> float:
        for i in range(CURL_RUNS):
            if i:
                drop_page_cache()
            with Timer() as t:
                run(["curl", "-sf", "-o", "/dev/null", blob.url(b.registry.host)])
            row.parts[f"run {i + 1}"] = t.seconds
        row.runs = CURL_RUNS
        return min(row.parts.values())

    b.step(name, fetch)


def local_loads(
    b: ModelLoad, pool: LoaderPool, model: HfModel, ranks: int, names: list[str]
) -> None:
    """Load from the model's own directory: cold (page cache dropped), then warm if named."""
    for i, name in enumerate(names):
        b.step(name, lambda row: _checked_load(pool, model, model.model_dir, ranks)[0], cold=i == 0)


def kit_load(b: ModelLoad, pool: LoaderPool, name: str, model_name: str, ranks: int) -> None:
    """`kit pull` + `kit unpack` + load, from a fresh kit home, as one cold step."""
    if b.kit is None or (KIT, model_name) not in b.blobs:
        return
    kit, ref, model = b.kit, b.blobs[(KIT, model_name)].ref, b.models[model_name]
    env = {"KITOPS_HOME": str(b.scratch("kit-home"))}
    target = b.scratch("kit-unpack")

    def pull_unpack_load(row: Row) -> float:
        with Timer() as pull:
            run([kit, "pull", ref, "--plain-http"], env=env)
        with Timer() as unpack:
            run([kit, "unpack", ref, "-d", str(target)], env=env)
        load, _ = _checked_load(pool, model, target / "model", ranks)
        row.parts = {"pull": pull.seconds, "unpack": unpack.seconds, "load": load}
        return pull.seconds + unpack.seconds + load

    try:
        b.step(name, pull_unpack_load)
    finally:
        shutil.rmtree(env["KITOPS_HOME"], ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)


class Mounted:
    """One kitfs mount for a step; ``stop`` unmounts it and kills its daemon if it lingers."""

    def __init__(self, b: ModelLoad, ref: str, cache: Path, home: Path) -> None:
        self.mount = KitfsMount(home, ref, b.scratch("mnt"), cache, list(b.mount_args))
        self.pid: int | None = None

    def start(self) -> float:
        seconds = self.mount.start()
        self.pid = self.mount.pid or fuse_daemon_pid(self.mount.mountpoint)
        return seconds

    def model_dir(self) -> Path:
        return find_in_mount(self.mount.mountpoint, "model", "model/config.json").parent

    def cpu(self) -> float | None:
        return procstat.cpu_seconds(self.pid)

    def stop(self) -> None:
        pid = self.pid
        try:
            self.mount.stop()
        finally:
            force_unmount(self.mount.mountpoint)
            _kill_if_alive(pid)
            shutil.rmtree(self.mount.mountpoint, ignore_errors=True)


def mount_load(
    b: ModelLoad,
    pool: LoaderPool,
    name: str,
    key: tuple[str, str],
    ranks: int,
    cache: Path | None = None,
) -> Path | None:
    """Cold mount (fresh cache and home) + load; returns the cache (with its home beside it, for a
    warm mount after it) or None when the ModelKit is missing."""
    if key not in b.blobs:
        return None
    model = b.models[key[1]]
    cache = cache or b.scratch("cache")
    mounted = Mounted(b, b.blobs[key].ref, cache, _home_of(cache))

    def mount_and_load(row: Row) -> float:
        mount_s = mounted.start()
        before = mounted.cpu()
        load, loaded, lookup = _mounted_load(pool, model, mounted, ranks)
        _record_cpu(row, before, mounted.cpu(), loaded)
        row.parts = {"mount": mount_s, "load": load, "lookup": lookup}
        return mount_s + load

    try:
        b.step(name, mount_and_load)
    finally:
        mounted.stop()
    return cache


def _home_of(cache: Path) -> Path:
    home = cache.parent / f"{cache.name}-home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def _record_cpu(row: Row, before: float | None, after: float | None, served: int) -> None:
    if before is not None and after is not None:
        row.cpu, row.cpu_total, row.served = after - before, after, served


def warm_mount_load(
    b: ModelLoad,
    pool: LoaderPool,
    cache: Path,
    names: tuple[str, str] = (WARM_MOUNT_LOAD, WARM_LOAD),
) -> None:
    """A new mount on the cache a cold mount filled, page cache dropped: two rows from one step
    (``names``: mount + load, and the load from the mount being ready)."""
    model = b.models[PAIR]
    mounted = Mounted(b, b.blobs[(DEFAULT, PAIR)].ref, cache, _home_of(cache))
    parts: dict[str, float] = {}

    def mount_and_load(row: Row) -> float:
        parts["mount"] = mounted.start()
        before = mounted.cpu()
        parts["load"], loaded, parts["lookup"] = _mounted_load(pool, model, mounted, 1)
        _record_cpu(row, before, mounted.cpu(), loaded)
        row.parts = dict(parts)
        return parts["mount"] + parts["load"]

    try:
        whole = b.step(names[0], mount_and_load)
    finally:
        mounted.stop()
    b.rows[names[1]] = Row(
        seconds=parts.get("load") if whole.error is None else None,
        error=whole.error,
        fetched=whole.fetched,
        cpu=whole.cpu,
        served=whole.served,
    )


def dd_single(b: ModelLoad) -> None:
    """Cold mount, then `dd bs=1M` of the single-file model's safetensors file through it."""
    key = (DEFAULT, SINGLE)
    if key not in b.blobs:
        return
    cache = b.scratch("cache")
    mounted = Mounted(b, b.blobs[key].ref, cache, _home_of(cache))
    model = b.models[SINGLE]

    def mount_and_dd(row: Row) -> float:
        mount_s = mounted.start()
        before = mounted.cpu()
        base, lookup = _looked_up(mounted)
        path = base / model.shards[0]
        seconds = lookup + dd_read(path)
        _record_cpu(row, before, mounted.cpu(), path.stat().st_size)
        row.parts = {"mount": mount_s, "dd": seconds, "lookup": lookup}
        return seconds

    try:
        b.step(DD_SINGLE, mount_and_dd)
    finally:
        mounted.stop()
        shutil.rmtree(cache, ignore_errors=True)


def profile_load(b: ModelLoad, pool: LoaderPool, native: bool) -> None:
    """Two more cold default-layer mounts + loads under py-spy (raw, then flamegraph): where the
    daemon's time goes. Not timed rows: py-spy slows the daemon it samples."""
    problem = pyspy.available()
    out = b.work / "profile"
    out.mkdir(exist_ok=True)
    b.profile = Profile(out / "daemon-raw.txt", out / "daemon-flamegraph.svg", None, problem)
    if problem:
        return
    for fmt, path in (("raw", b.profile.raw), ("flamegraph", b.profile.flamegraph)):
        cache = b.scratch("profile-cache")
        mounted = Mounted(b, b.blobs[(DEFAULT, PAIR)].ref, cache, _home_of(cache))
        drop_page_cache()
        try:
            mounted.start()
            if mounted.pid is None:
                raise RuntimeError("the daemon's pid was not found")
            with pyspy.recording(mounted.pid, path, fmt, native):
                _checked_load(pool, b.models[PAIR], mounted.model_dir(), 1)
            if not path.exists():
                raise RuntimeError(f"py-spy wrote no {path}; see {path}.log")
        except (CommandFailed, OSError, RuntimeError) as exc:
            b.profile.error = f"{fmt}: {exc}"
            return
        finally:
            mounted.stop()
            shutil.rmtree(cache, ignore_errors=True)
    b.profile.summary = pyspy.summarise(b.profile.raw)
    summary_path = out / "daemon-summary.md"
    summary_path.write_text("\n".join(b.profile.summary.markdown(top=40)) + "\n")
    print(f"modelload: profile in {out}", flush=True)


def measure(b: ModelLoad, profile: bool, native: bool) -> None:
    pair, tp = b.models[PAIR], b.models[TP]
    with LoaderPool(1) as pool:
        print(f"modelload: two shards at {clock()}", flush=True)
        curl(b, CURL, b.blobs[(DEFAULT, PAIR)])
        if (KIT, PAIR) in b.blobs:
            curl(b, CURL_KIT, b.blobs[(KIT, PAIR)])
        local_loads(b, pool, pair, 1, [LOCAL_COLD, LOCAL_WARM])
        kit_load(b, pool, KIT_LOAD, PAIR, 1)
        cache = mount_load(b, pool, MOUNT_DEFAULT, (DEFAULT, PAIR), 1)
        if cache is not None and b.rows[MOUNT_DEFAULT].error is None:
            warm_mount_load(b, pool, cache)
        b.remove_scratch()
        mount_load(b, pool, MOUNT_KIT, (KIT, PAIR), 1)
        b.remove_scratch()
        print(f"modelload: mapped loads (safe_open) at {clock()}", flush=True)
    with LoaderPool(1, mmap=True) as pool:
        local_loads(b, pool, pair, 1, [LOCAL_MMAP])
        cache = mount_load(b, pool, MOUNT_MMAP, (DEFAULT, PAIR), 1)
        if cache is not None and b.rows[MOUNT_MMAP].error is None:
            warm_mount_load(b, pool, cache, (WARM_MOUNT_MMAP, WARM_MMAP))
        b.remove_scratch()
    with LoaderPool(1) as pool:
        print(f"modelload: one file at {clock()}", flush=True)
        curl(b, CURL_SINGLE, b.blobs[(DEFAULT, SINGLE)])
        dd_single(b)
        if profile:
            print(f"modelload: profiling at {clock()}", flush=True)
            profile_load(b, pool, native)
            b.remove_scratch()
    with LoaderPool(RANKS) as pool:
        print(f"modelload: four shards, four loaders at {clock()}", flush=True)
        curl(b, CURL_TP, b.blobs[(DEFAULT, TP)])
        local_loads(b, pool, tp, RANKS, [LOCAL_TP])
        kit_load(b, pool, KIT_TP, TP, RANKS)
        mount_load(b, pool, MOUNT_TP, (DEFAULT, TP), RANKS)
        b.remove_scratch()


_STARTED = time.monotonic()


def clock() -> str:
    return f"{time.monotonic() - _STARTED:.0f}s"
