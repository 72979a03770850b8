"""Model-load benchmark (issue 17): a Hugging Face style model loaded with safetensors from a cold
kitfs mount, against `kit pull` + `kit unpack` + the same load, all measured in one run.

Run by `make bench` (as `bench/run.py --modelload`) or alone; `--small` for a quick check. Builds a
model of two safetensors shards (512 MiB each; 64 MiB with --small) beside config.json,
tokenizer.json, generation_config.json and model.safetensors.index.json, one of four smaller shards
(read by four loader processes at once, as tensor-parallel ranks do) and one single-file model of
1 GiB (128 MiB). Each is packed by kitfs (default: span-indexed layers); the two-shard and four-shard
models also by the real kit v1.7.0 (`kit pack`: no index). All are pushed to a loopback
docker-registry. With the page cache dropped before every cold step (so the registry's blobs are cold
too), every kit home and kitfs cache empty, it times:

- `curl -o /dev/null` of the model layer blob (the link);
- `safetensors.numpy.load_file` of every shard from a local directory, page cache dropped and warm;
- `kit pull` + `kit unpack` + load;
- `kitfs mount` (cold) + load, for kitfs's default layers and for kit's layers;
- warm cache, a new mount + load, page cache dropped (from the mount being ready, and mount included);
- `dd bs=1M` of the 1 GiB span-indexed file through a cold mount, against curl of its blob;
- four loaders reading the four shards at once: cold mount against kit pull + unpack + four loads;
- beside every mount row, the daemon's CPU-seconds (utime + stime of all its threads) per GiB
  served, from the mount being ready to the last byte loaded.

`--profile` also runs py-spy on the daemon during one more cold default-layers load (not a timed row)
and saves its raw profile, a flamegraph and a summary. The section of docs/benchmarks.md between the
modelload markers is rewritten; the analysis between the modelload-analysis markers is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat  # noqa: E402
import pyspy  # noqa: E402
import report  # noqa: E402
from hfmodel import HfModel, ensure_model  # noqa: E402
from loader import LoaderPool  # noqa: E402
from mounts import KitfsMount  # noqa: E402
from registry import Registry  # noqa: E402
from tools import (  # noqa: E402
    REPO,
    CommandFailed,
    Timer,
    can_drop_page_cache,
    dd_read,
    drop_page_cache,
    find_in_mount,
    find_kit,
    force_unmount,
    fuse_daemon_pid,
    is_mountpoint,
    kitfs,
    numbered_scratch,
    run,
)

BEGIN = "<!-- modelload:begin -->"
END = "<!-- modelload:end -->"
ANALYSIS_BEGIN = "<!-- modelload-analysis:begin -->"
ANALYSIS_END = "<!-- modelload-analysis:end -->"
MIB = 1 << 20
GIB = 1 << 30
REPO_NAME = "bench/modelload"
RANKS = 4

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
CURL_TP = "`curl -o /dev/null` of the 4-shard model's layer blob"
LOCAL_TP = "4 loaders at once from a local directory, page cache dropped"
KIT_TP = "`kit pull` + `kit unpack` + 4 loaders at once"
MOUNT_TP = "kitfs cold mount + 4 loaders at once, default span-indexed layers"


@dataclass(frozen=True)
class Compare:
    """A row's references: kit's row, the link or local row, and the issue's goal on it."""

    kit: str | None = None
    base: str | None = None
    goal: str = ""


TABLES: dict[str, dict[str, Compare]] = {
    "two shards, one loader": {
        CURL: Compare(),
        CURL_KIT: Compare(),
        LOCAL_COLD: Compare(base=CURL),
        LOCAL_WARM: Compare(base=LOCAL_COLD),
        KIT_LOAD: Compare(base=CURL_KIT),
        MOUNT_DEFAULT: Compare(KIT_LOAD, CURL, "≤ 0.6× kit; daemon ≤ 1.5 CPU-s/GiB"),
        MOUNT_KIT: Compare(KIT_LOAD, CURL_KIT, "≤ 0.9× kit"),
        WARM_LOAD: Compare(None, LOCAL_COLD, "≤ 1.2× local, page cache dropped"),
        WARM_MOUNT_LOAD: Compare(KIT_LOAD, LOCAL_COLD),
    },
    "one file, sequential read": {
        CURL_SINGLE: Compare(),
        DD_SINGLE: Compare(None, CURL_SINGLE, "≤ 2× curl; daemon ≤ 1.5 CPU-s/GiB"),
    },
    "four shards, four loader processes": {
        CURL_TP: Compare(),
        LOCAL_TP: Compare(base=CURL_TP),
        KIT_TP: Compare(base=CURL_TP),
        MOUNT_TP: Compare(KIT_TP, CURL_TP),
    },
}


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
        row.fetched = self.registry.fetched_since(mark).blob_bytes
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


# ---- building and publishing -------------------------------------------------------------------


def build_models(work: Path, sizes: Sizes) -> dict[str, HfModel]:
    shapes = {
        PAIR: (2, sizes.shard_mib, 1),
        TP: (RANKS, sizes.tp_shard_mib, 2),
        SINGLE: (1, sizes.single_mib, 3),
    }
    models = {}
    for name, (shards, mib, seed) in shapes.items():
        print(f"modelload: model {name}: {shards} x {mib} MiB at {_clock()}", flush=True)
        models[name] = ensure_model(work / f"model-{shards}x{mib}", shards, mib, seed)
    return models


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def pack_kitfs(work: Path, models: dict[str, HfModel]) -> Path:
    """A kitfs home holding ``modelload:NAME`` per model, packed with kitfs's defaults, once per
    kitfs source tree (``git rev-parse HEAD:kitfs``) so reruns skip the packing."""
    tree = _git("rev-parse", "HEAD:kitfs")[:12] or "unknown"
    home = work / f"kitfs-home-{tree}"
    for stale in work.glob("kitfs-home-*"):
        if stale != home:
            shutil.rmtree(stale, ignore_errors=True)
    for name, model in models.items():
        marker = home / f".packed-{name}-{model.context.name}"
        if not marker.exists():
            print(f"modelload: kitfs pack {name} at {_clock()}", flush=True)
            kitfs(home, "pack", str(model.context), "-t", f"modelload:{name}")
            marker.touch()
    return home


def pack_kit(work: Path, kit: str, models: dict[str, HfModel], names: list[str]) -> Path:
    """A kit home holding ``modelload:NAME`` packed by the real kit (kit's layers: no index)."""
    home = work / "kit-home"
    home.mkdir(parents=True, exist_ok=True)
    for name in names:
        marker = home / f".packed-{name}-{models[name].context.name}"
        if not marker.exists():
            print(f"modelload: kit pack {name} at {_clock()}", flush=True)
            env = {"KITOPS_HOME": str(home)}
            run([kit, "pack", str(models[name].context), "-t", f"modelload:{name}"], env=env)
            marker.touch()
    return home


def publish(b: ModelLoad, kitfs_home: Path, kit_home: Path | None) -> None:
    """Push every packed ModelKit to the registry; record each model layer blob."""
    for name in b.models:
        ref = f"{b.registry.host}/{REPO_NAME}:{DEFAULT}-{name}"
        kitfs(kitfs_home, "tag", f"modelload:{name}", ref)
        kitfs(kitfs_home, "push", ref, "--plain-http")
        b.blobs[(DEFAULT, name)] = model_blob(b.registry.host, ref)
    if kit_home is None or b.kit is None:
        return
    env = {"KITOPS_HOME": str(kit_home)}
    for name in (PAIR, TP):
        ref = f"{b.registry.host}/{REPO_NAME}:{KIT}-{name}"
        run([b.kit, "tag", f"modelload:{name}", ref], env=env)
        run([b.kit, "push", ref, "--plain-http"], env=env)
        b.blobs[(KIT, name)] = model_blob(b.registry.host, ref)


def model_blob(host: str, ref: str) -> Blob:
    """The largest layer of ``ref``'s manifest, read from the registry."""
    tag = ref.rsplit(":", 1)[1]
    request = urllib.request.Request(
        f"http://{host}/v2/{REPO_NAME}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        manifest = json.loads(response.read())
    layer = max(manifest["layers"], key=lambda entry: int(entry["size"]))
    return Blob(ref, layer["digest"], int(layer["size"]))


# ---- the steps ---------------------------------------------------------------------------------


def assign(model: HfModel, base: Path, ranks: int) -> list[list[Path]]:
    """The files each loader reads: one loader reads them all; with ``ranks`` loaders, rank i
    reads the small files and shard i."""
    if ranks == 1:
        return [[base / f for f in model.files]]
    small = [base / f for f in model.files if not f.endswith(".safetensors")]
    return [[*small, base / shard] for shard in model.shards]


def _checked_load(pool: LoaderPool, model: HfModel, base: Path, ranks: int) -> tuple[float, int]:
    seconds, loaded = pool.load(assign(model, base, ranks))
    if loaded != model.tensor_bytes:
        raise RuntimeError(f"loaded {loaded} tensor bytes, not the model's {model.tensor_bytes}")
    return seconds, loaded


def curl(b: ModelLoad, name: str, blob: Blob) -> None:
    def fetch(row: Row) -> float:
        with Timer() as t:
            run(["curl", "-sf", "-o", "/dev/null", blob.url(b.registry.host)])
        return t.seconds

    b.step(name, fetch)


def local_loads(b: ModelLoad, pool: LoaderPool, model: HfModel, ranks: int, names: list[str]):
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
        load, loaded = _checked_load(pool, model, mounted.model_dir(), ranks)
        _record_cpu(row, before, mounted.cpu(), loaded)
        row.parts = {"mount": mount_s, "load": load}
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


def warm_mount_load(b: ModelLoad, pool: LoaderPool, cache: Path) -> None:
    """A new mount on the cache a cold mount filled, page cache dropped: two rows from one step
    (the load from the mount being ready, and mount + load)."""
    model = b.models[PAIR]
    mounted = Mounted(b, b.blobs[(DEFAULT, PAIR)].ref, cache, _home_of(cache))
    parts: dict[str, float] = {}

    def mount_and_load(row: Row) -> float:
        parts["mount"] = mounted.start()
        before = mounted.cpu()
        parts["load"], loaded = _checked_load(pool, model, mounted.model_dir(), 1)
        _record_cpu(row, before, mounted.cpu(), loaded)
        row.parts = dict(parts)
        return parts["mount"] + parts["load"]

    try:
        whole = b.step(WARM_MOUNT_LOAD, mount_and_load)
    finally:
        mounted.stop()
    b.rows[WARM_LOAD] = Row(
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
        path = mounted.model_dir() / model.shards[0]
        seconds = dd_read(path)
        _record_cpu(row, before, mounted.cpu(), path.stat().st_size)
        row.parts = {"mount": mount_s, "dd": seconds}
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
            assert mounted.pid is not None, "the daemon's pid was not found"
            with pyspy.recording(mounted.pid, path, fmt, native):
                _checked_load(pool, b.models[PAIR], mounted.model_dir(), 1)
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
        print(f"modelload: two shards at {_clock()}", flush=True)
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
        print(f"modelload: one file at {_clock()}", flush=True)
        curl(b, CURL_SINGLE, b.blobs[(DEFAULT, SINGLE)])
        dd_single(b)
        if profile:
            print(f"modelload: profiling at {_clock()}", flush=True)
            profile_load(b, pool, native)
            b.remove_scratch()
    with LoaderPool(RANKS) as pool:
        print(f"modelload: four shards, four loaders at {_clock()}", flush=True)
        curl(b, CURL_TP, b.blobs[(DEFAULT, TP)])
        local_loads(b, pool, tp, RANKS, [LOCAL_TP])
        kit_load(b, pool, KIT_TP, TP, RANKS)
        mount_load(b, pool, MOUNT_TP, (DEFAULT, TP), RANKS)
        b.remove_scratch()


_STARTED = time.monotonic()


def _clock() -> str:
    return f"{time.monotonic() - _STARTED:.0f}s"


# ---- the report ----------------------------------------------------------------------------------


def _x(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0:
        return "—"
    return f"{value / base:.2f}×"


def _seconds(b: ModelLoad, name: str | None) -> float | None:
    row = b.rows.get(name) if name else None
    return row.seconds if row and row.error is None else None


def table(b: ModelLoad, title: str, rows: dict[str, Compare]) -> list[str]:
    headers = [
        "step",
        "seconds",
        "vs kit",
        "vs curl / local",
        "daemon CPU-s per GiB",
        "registry sent (MiB)",
        "goal (issue 17)",
    ]
    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for name, compare in rows.items():
        row = b.rows.get(name)
        if row is None:
            continue
        if row.error:
            cells = [name, f"fails: {row.error[:160]}", *["—"] * 4, compare.goal]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        per_gib = row.cpu_per_gib()
        cells = [
            name,
            f"{row.seconds:.2f}",
            _x(row.seconds, _seconds(b, compare.kit)) if compare.kit else "",
            _x(row.seconds, _seconds(b, compare.base)) if compare.base else "",
            f"{per_gib:.2f} ({row.cpu:.2f} s for {row.served / GIB:.2f} GiB)"
            if per_gib is not None and row.cpu is not None and row.served
            else "",
            f"{row.fetched / MIB:.0f}" if row.fetched is not None else "—",
            compare.goal,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def parts_notes(b: ModelLoad) -> list[str]:
    """Where each composite row's seconds went (pull / unpack / load, mount / load)."""
    notes = []
    for name, row in b.rows.items():
        if row.parts and row.error is None:
            split = ", ".join(f"{k} {v:.2f} s" for k, v in row.parts.items())
            extra = ""
            if row.cpu_total is not None:
                extra = f"; the daemon's CPU from its start: {row.cpu_total:.2f} s"
            notes.append(f"- {name}: {split}{extra}")
    return notes


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _ratio_goal(b: ModelLoad, text: str, row: str, ref: str, limit: float) -> str:
    value, base = _seconds(b, row), _seconds(b, ref)
    if value is None or base is None:
        return f"- {text}: no figure (a step failed or was skipped)"
    return (
        f"- {text}: {_verdict(value <= limit * base)} "
        f"({value:.2f} s against {base:.2f} s, {value / base:.2f}×)"
    )


def goals(b: ModelLoad) -> list[str]:
    """The issue's goals, each judged from this run."""
    lines = [
        _ratio_goal(
            b, "cold mount + load, default layers ≤ 0.6× kit", MOUNT_DEFAULT, KIT_LOAD, 0.6
        ),
        _ratio_goal(b, "cold mount + load, kit's layers ≤ 0.9× kit", MOUNT_KIT, KIT_LOAD, 0.9),
        _ratio_goal(
            b, "cold sequential read of the span-indexed file ≤ 2× curl", DD_SINGLE, CURL_SINGLE, 2
        ),
    ]
    cpu = {n: b.rows[n].cpu_per_gib() for n in (DD_SINGLE, MOUNT_DEFAULT, MOUNT_TP, MOUNT_KIT)}
    known = {n: v for n, v in cpu.items() if v is not None}
    if known:
        worst = max(known.values())
        listed = "; ".join(f"{n}: {v:.2f}" for n, v in known.items())
        lines.append(
            f"- daemon CPU per GiB served cold ≤ 1.5 s: {_verdict(worst <= 1.5)} ({listed})"
        )
    else:
        lines.append("- daemon CPU per GiB served cold ≤ 1.5 s: no figure")
    lines.append(
        _ratio_goal(
            b, "warm cache, new mount, then load ≤ 1.2× local (dropped)", WARM_LOAD, LOCAL_COLD, 1.2
        )
    )
    return lines


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _kit_version(kit: str | None) -> str:
    if kit is None:
        return "kit not found (its rows are left out)"
    try:
        out = subprocess.run([kit, "version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return f"`{kit}` (version unknown)"
    first = (out.strip().splitlines() or ["unknown"])[0].removeprefix("Version:").strip()
    return f"kit {first} (`{kit}`)"


def profile_lines(p: Profile | None) -> list[str]:
    if p is None:
        return []
    lines = ["### Where the daemon's time goes (py-spy, one more cold default-layers load)", ""]
    if p.error:
        return lines + [f"py-spy did not run: {p.error}", ""]
    lines.append(
        f"Raw profile (collapsed stacks: speedscope, inferno or flamegraph.pl read it): `{p.raw}`; "
        f"flamegraph: `{p.flamegraph}` (a second profiled load); summary of the raw profile:"
    )
    lines.append("")
    if p.summary is not None:
        lines += p.summary.markdown() + [""]
    return lines


def render(
    b: ModelLoad, sizes: Sizes, command: str, date: str, elapsed: float, analysis: str
) -> str:
    machine = report.machine_facts(REPO)
    dropped = can_drop_page_cache()
    pair, tp = b.models[PAIR], b.models[TP]
    lines = [
        BEGIN,
        "## Model load: safetensors from a cold mount against kit pull + unpack + load (issue 17)",
        "",
        f"- Date: {date}; run time {elapsed / 60:.1f} min; command: `{command}`",
        f"- Machine: {machine.nproc} CPUs ({machine.cpu}), {machine.memory} RAM, Linux "
        f"{machine.kernel}, Python {machine.python}; kitfs commit {machine.commit}. The machine is "
        "shared with other work: one run, noisy figures.",
        f"- Tools: {_kit_version(b.kit)}; safetensors {_package_version('safetensors')}, numpy "
        f"{_package_version('numpy')}; docker-registry (distribution 2.8) on 127.0.0.1"
        + (f"; mount flags `{' '.join(b.mount_args)}`" if b.mount_args else ""),
        f"- Models (random float16 tensors written by `safetensors.numpy.save_file`, beside "
        "config.json, generation_config.json, tokenizer.json and, for shards, "
        "model.safetensors.index.json; the Kitfile's model is the directory, one layer): "
        f"{len(pair.shards)} × {sizes.shard_mib} MiB ({pair.tensor_bytes / GIB:.2f} GiB of tensors), "
        f"{len(tp.shards)} × {sizes.tp_shard_mib} MiB, and one {sizes.single_mib} MiB "
        "`model.safetensors`. kitfs's layers: `kitfs pack` with its defaults (span index, "
        "uncompressed); kit's layers: `kit pack` (no index: a mount fetches and verifies the layer "
        "whole).",
        "- Method: "
        + (
            "the page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every "
            "step but the warm local load, so the registry's blobs are cold too; "
            if dropped
            else "the page cache could NOT be dropped (not root): cold steps only start with "
            "empty homes and caches; "
        )
        + "every kit home and kitfs cache starts empty (the warm mount reuses the cold mount's "
        "cache). A load is `safetensors.numpy.load_file` of every shard (and reading the small "
        "files) in loader processes started before the step, so no row holds Python's start-up. "
        "Mount rows run from launching `kitfs mount` to the last byte loaded; the kit rows from "
        "`kit pull` to the last byte loaded, with no page cache drop between unpack and load (as "
        "a user runs them). Daemon CPU = utime + stime of the daemon (all threads, "
        "/proc/PID/stat) from the mount being ready to the last byte, per GiB the loaders or dd "
        "read. Ratios: this row / the reference row of this run; below 1.00× against kit means "
        "kitfs was ahead.",
        "",
        "### Goals (issue 17), judged from this run",
        "",
        *goals(b),
        "",
    ]
    for title, rows in TABLES.items():
        lines += table(b, title, rows)
    lines += ["Where the composite rows' seconds went:", "", *parts_notes(b), ""]
    if b.notes:
        lines += [f"- {note}" for note in b.notes] + [""]
    lines += profile_lines(b.profile)
    lines += [
        ANALYSIS_BEGIN,
        analysis.strip("\n") or "(no analysis written for this run yet)",
        ANALYSIS_END,
        END,
    ]
    return "\n".join(lines) + "\n"


def existing_section(path: Path) -> str | None:
    """The modelload section of an existing report (kept when the main run rewrites the page)."""
    return report.existing_section(path, BEGIN, END)


# ---- the command ---------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py --modelload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--small", action="store_true", help="2 × 64 MiB, 4 × 32 MiB and 128 MiB: a quick check"
    )
    p.add_argument("--shard-mib", type=int, help="each of the two shards (default 512; 64)")
    p.add_argument("--tp-shard-mib", type=int, help="each of the four shards (default 256; 32)")
    p.add_argument("--single-mib", type=int, help="the single-file model (default 1024; 128)")
    p.add_argument(
        "--mount-arg",
        action="append",
        default=[],
        help="an extra `kitfs mount` flag for every mount (repeatable, e.g. --mount-arg=--concurrency=8)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also run py-spy on the daemon during one more cold default-layers load",
    )
    p.add_argument(
        "--profile-native", action="store_true", help="with --profile: native frames too (slower)"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp/kitfs-bench-modelload"),
        help="scratch space and the models and packed ModelKits kept between runs",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="the report (default docs/benchmarks.md; with --small, WORKDIR/benchmarks-modelload-small.md)",
    )
    args = p.parse_args(argv)
    base = (64, 32, 128) if args.small else (512, 256, 1024)
    args.sizes = Sizes(
        args.shard_mib or base[0], args.tp_shard_mib or base[1], args.single_mib or base[2]
    )
    if min(args.sizes.shard_mib, args.sizes.tp_shard_mib, args.sizes.single_mib) < 1:
        p.error("sizes must be at least 1 MiB")
    if args.output is None:
        small = args.small or args.sizes != Sizes(*base)
        args.output = (
            args.workdir / "benchmarks-modelload-small.md"
            if small
            else REPO / "docs" / "benchmarks.md"
        )
    return args


def check_tools() -> None:
    for tool in ("curl", "dd", "fusermount3"):
        if shutil.which(tool) is None:
            raise SystemExit(f"modelload: `{tool}` is not installed (run `make setup`)")
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"modelload: {exc}: run `.venv/bin/pip install -e '.[bench]'`") from exc


def run_all(args: argparse.Namespace, kit: str | None) -> ModelLoad:
    work = args.workdir.resolve()
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    models = build_models(work, args.sizes)
    kitfs_home = pack_kitfs(work, models)
    kit_home = pack_kit(work, kit, models, [PAIR, TP]) if kit else None
    shutil.rmtree(work / "registry", ignore_errors=True)
    registry = Registry(work / "registry")
    registry.start()
    b = ModelLoad(work, registry, kit, args.mount_arg)
    b.models = models
    if kit is None:
        b.notes.append("`kit` was not found ($KIT, PATH or ../shared/tools/kit): no kit rows.")
    try:
        b.remove_scratch()
        print(f"modelload: pushing at {_clock()}", flush=True)
        publish(b, kitfs_home, kit_home)
        measure(b, args.profile, args.profile_native)
    finally:
        b.remove_scratch()
        registry.stop()
        shutil.rmtree(work / "registry", ignore_errors=True)
    return b


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_tools()
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    b = run_all(args, find_kit())
    command = " ".join([".venv/bin/python", "bench/run.py", "--modelload", *map(shlex.quote, argv)])
    kept = report.existing_section(args.output, ANALYSIS_BEGIN, ANALYSIS_END) or ""
    analysis = kept.strip().removeprefix(ANALYSIS_BEGIN).removesuffix(ANALYSIS_END)
    text = render(b, args.sizes, command, date, time.monotonic() - started, analysis)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report.write_section(args.output, BEGIN, END, text)
    print(f"modelload: wrote the modelload section of {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
