"""Cold path benchmark (issue 10, item 6): pulling, unpacking and mounting whole layers, against the
limits of the machine and against the Go tools, all measured in the same run.

Run by `make bench` (as `bench/run.py --coldpath`) or alone. One ModelKit per compression (none,
gzip, zstd) holds a random model file (1 GiB by default) packed with `--no-span-index`: kit's layer
format, so a mount fetches and verifies the layer whole. One more, the default span-indexed
uncompressed layer, is only mounted and read. They are pushed to a loopback docker-registry and each
cold step (page cache dropped, empty homes and caches) is timed, every step `--repeat` times:

- limits: `curl -o /dev/null` of the layer blob (network), `curl -o FILE` + `sync FILE` (network and
  disk write), Python's sha256 over the blob in memory (hash), zlib inflate of the gzip blob and
  zstandard decompression of the zstd blob, in memory on one core (decompress);
- the Go stand-in: `skopeo copy docker://... oci:DIR`, then `tar -x` of the layer;
- the real kit (v1.7.0 in ../shared/tools/kit, or `$KIT`): `kit pull`, then `kit unpack`;
- kitfs: `kitfs pull`, `kitfs unpack` from local storage after it, `kitfs unpack` straight from
  the registry, and `kitfs mount` + reading the whole model file (launch to last byte).

It rewrites only its own section of docs/benchmarks.md (between the coldpath markers), keeping the
hand-written analysis between the coldpath-analysis markers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from mounts import KitfsMount  # noqa: E402
from registry import Registry  # noqa: E402
from tools import (  # noqa: E402
    KITFS,
    REPO,
    CommandFailed,
    Timer,
    can_drop_page_cache,
    drop_page_cache,
    find_in_mount,
    find_kit,
    force_unmount,
    fresh_dir,
    is_mountpoint,
    kitfs,
    numbered_scratch,
    run,
)

BEGIN = "<!-- coldpath:begin -->"
END = "<!-- coldpath:end -->"
ANALYSIS_BEGIN = "<!-- coldpath-analysis:begin -->"
ANALYSIS_END = "<!-- coldpath-analysis:end -->"
MIB = 1 << 20
READ = MIB
REPO_NAME = "bench/coldpath"
MODEL = "model.bin"
COMPRESSIONS = ("none", "gzip", "zstd")
SPANS = "none-spans"  # the default span-indexed uncompressed layer, only mounted and read
PULL_GOAL, GZIP_GOAL = 1.5, 1.2

CURL = "curl -o /dev/null (network limit)"
CURL_SYNC = "curl -o FILE + sync FILE (network + disk write)"
STARTUP = "kitfs version (Python start-up, in every kitfs row)"
SHA = "Python sha256, in memory (hash limit)"
INFLATE = {
    "gzip": "Python zlib inflate, one core, in memory (decompress limit)",
    "zstd": "Python zstandard decompress, one core, in memory (decompress limit)",
}
SKOPEO = "skopeo copy"
TAR = "tar -x of the layer"
SKOPEO_TAR = "skopeo copy + tar -x"
KIT_PULL = "kit pull"
KIT_UNPACK = "kit unpack (from local storage)"
KIT_BOTH = "kit pull + kit unpack"
PULL = "kitfs pull"
UNPACK_LOCAL = "kitfs unpack (from local storage, after the pull)"
PULL_UNPACK = "kitfs pull + unpack"
UNPACK_REMOTE = "kitfs unpack (straight from the registry)"
MOUNT_READ = "kitfs mount + read the whole file (whole layer)"
MOUNT_READ_SPANS = "kitfs mount + read the whole file (default span-indexed layer)"

# The reference each kitfs row is set against: (kit's row, skopeo + tar's row).
COMPARED = {
    PULL: (KIT_PULL, SKOPEO),
    UNPACK_LOCAL: (KIT_UNPACK, TAR),
    PULL_UNPACK: (KIT_BOTH, SKOPEO_TAR),
    UNPACK_REMOTE: (KIT_BOTH, SKOPEO_TAR),
    MOUNT_READ: (KIT_BOTH, SKOPEO_TAR),
    MOUNT_READ_SPANS: (KIT_BOTH, SKOPEO_TAR),
}
INFLATING = (UNPACK_LOCAL, UNPACK_REMOTE, MOUNT_READ)  # the kitfs rows that decompress the layer
ROW_ORDER = [
    CURL,
    CURL_SYNC,
    SHA,
    *INFLATE.values(),
    STARTUP,
    SKOPEO,
    TAR,
    SKOPEO_TAR,
    KIT_PULL,
    KIT_UNPACK,
    KIT_BOTH,
    PULL,
    UNPACK_LOCAL,
    PULL_UNPACK,
    UNPACK_REMOTE,
    MOUNT_READ,
    MOUNT_READ_SPANS,
]


@dataclass
class Row:
    """One step of one compression: the seconds of each repeat, registry bytes, or why it failed."""

    runs: list[float] = field(default_factory=list)
    fetched: int | None = None
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.runs) if self.runs and not self.error else None


@dataclass(frozen=True)
class Blob:
    ref: str
    digest: str
    size: int

    def url(self, host: str) -> str:
        return f"http://{host}/v2/{REPO_NAME}/blobs/{self.digest}"


@dataclass
class Results:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    blobs: dict[str, Blob] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, compression: str, step: str) -> Row:
        return self.rows.setdefault((compression, step), Row())

    def seconds(self, compression: str, step: str) -> float | None:
        row = self.rows.get((compression, step))
        return row.seconds if row else None


class ColdPath:
    """The registry, the scratch space, the kit binary and the results of one run."""

    def __init__(self, work: Path, registry: Registry, kit: str | None) -> None:
        self.work, self.registry, self.kit = work, registry, kit
        self.results = Results()
        self.counter = 0

    def scratch(self, name: str) -> Path:
        self.counter += 1
        return numbered_scratch(self.work, self.counter, name)

    def clear_scratch(self) -> None:
        scratch = self.work / "scratch"
        if scratch.exists():
            for entry in sorted(scratch.iterdir()):
                if is_mountpoint(entry):
                    force_unmount(entry)
            shutil.rmtree(scratch, ignore_errors=True)

    def step(
        self, compression: str, name: str, fn: Callable[[], float], cold: bool = True
    ) -> float:
        """Run one timed step (after dropping the page cache when ``cold``), record and print it.

        Returns the seconds, or raises CommandFailed after recording the failure."""
        row = self.results.row(compression, name)
        if cold:
            drop_page_cache()
        mark = self.registry.mark()
        try:
            seconds = fn()
        except (CommandFailed, OSError, RuntimeError) as exc:
            row.error = str(exc)
            print(f"coldpath: {compression}: {name}: FAILED: {exc}", flush=True)
            raise CommandFailed(str(exc)) from exc
        row.runs.append(seconds)
        row.fetched = self.registry.fetched_since(mark).blob_bytes if cold else None
        size = self.results.blobs[compression].size
        print(
            f"coldpath: {compression}: {name}: {seconds:.2f} s ({size / seconds / MIB:.0f} MiB/s)",
            flush=True,
        )
        return seconds

    @contextlib.contextmanager
    def summed(self, compression: str, name: str) -> Iterator[list[float]]:
        """``with b.summed(c, NAME) as parts:`` records NAME as the sum of the seconds appended
        to ``parts``, or as failed when a part fails (the failure then goes on to the caller)."""
        parts: list[float] = []
        row = self.results.row(compression, name)
        try:
            yield parts
        except (CommandFailed, OSError, RuntimeError) as exc:
            row.error = str(exc)
            raise
        row.runs.append(sum(parts))
        print(f"coldpath: {compression}: {name}: {sum(parts):.2f} s (sum)", flush=True)


# ---- workload --------------------------------------------------------------------------------------


def make_context(root: Path, model_mib: int) -> Path:
    """A context with one random ``model.bin`` of ``model_mib`` MiB (kept between runs)."""
    marker = root / ".complete"
    if marker.exists():
        return root
    fresh_dir(root)
    with open(root / MODEL, "wb") as out:
        for _ in range(model_mib):
            out.write(os.urandom(MIB))
    (root / "Kitfile").write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: coldpath\n"
        f"model:\n  name: coldpath\n  path: {MODEL}\n"
    )
    marker.touch()
    return root


def pack_flags(label: str) -> list[str]:
    if label == SPANS:
        return ["--compression", "none"]
    return ["--compression", label, "--no-span-index"]


def packed_home(work: Path, context: Path, model_mib: int, labels: list[str]) -> Path:
    """A kitfs home holding ``coldpath:LABEL`` for every label, packed once per kitfs source tree
    (``git rev-parse HEAD:kitfs``) and model size, so reruns skip the packing."""
    tree = _git("rev-parse", "HEAD:kitfs")[:12] or "unknown"
    home = work / f"pack-home-{model_mib}-{tree}"
    for stale in work.glob(f"pack-home-{model_mib}-*"):
        if stale != home:
            shutil.rmtree(stale, ignore_errors=True)
    for label in labels:
        marker = home / f".packed-{label}"
        if marker.exists():
            continue
        print(f"coldpath: packing {label} ({model_mib} MiB) at {time.strftime('%H:%M:%S')}")
        with Timer() as t:
            kitfs(home, "pack", str(context), "-t", f"coldpath:{label}", *pack_flags(label))
        print(f"coldpath: packed {label} in {t.seconds:.1f} s", flush=True)
        marker.touch()
    return home


def publish(b: ColdPath, home: Path, label: str) -> Blob:
    """Push ``coldpath:LABEL`` to the registry; the model layer's digest and size."""
    ref = f"{b.registry.host}/{REPO_NAME}:{label}"
    kitfs(home, "tag", f"coldpath:{label}", ref)
    kitfs(home, "push", ref, "--plain-http")
    manifest = json.loads(kitfs(home, "inspect", ref))["manifest"]
    layer = max(manifest["layers"], key=lambda entry: entry["size"])
    return Blob(ref, layer["digest"], int(layer["size"]))


# ---- the steps -------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object]) -> float:
    with Timer() as t:
        fn()
    return t.seconds


def _check_size(path: Path, size: int) -> None:
    if path.stat().st_size != size:
        raise RuntimeError(f"{path} has {path.stat().st_size} bytes, not {size}")


def limits(b: ColdPath, c: str, blob: Blob, model_size: int) -> None:
    url = blob.url(b.registry.host)
    b.step(c, CURL, lambda: _timed(lambda: run(["curl", "-sf", "-o", "/dev/null", url])))
    target = b.scratch("curl") / "blob"

    def curl_sync() -> float:
        with Timer() as t:
            run(["curl", "-sf", "-o", str(target), url])
            run(["sync", str(target)])
        return t.seconds

    b.step(c, CURL_SYNC, curl_sync)
    _check_size(target, blob.size)
    data = target.read_bytes()
    shutil.rmtree(target.parent)
    b.step(c, SHA, lambda: _timed(lambda: hashlib.sha256(data).hexdigest()), cold=False)
    b.step(c, STARTUP, lambda: _timed(lambda: run([KITFS, "version"])))
    if c in INFLATE:
        inflate = _inflate_gzip if c == "gzip" else _inflate_zstd
        b.step(
            c, INFLATE[c], lambda: _timed(lambda: _expect(inflate(data), model_size)), cold=False
        )


def _expect(produced: int, at_least: int) -> None:
    if produced < at_least:
        raise RuntimeError(f"decompressed {produced} bytes, fewer than the model's {at_least}")


def _inflate_gzip(data: bytes) -> int:
    """zlib inflate of every gzip member of ``data``, 1 MiB of input at a time; bytes produced."""
    view, produced, start = memoryview(data), 0, 0
    while start < len(data):
        inflater = zlib.decompressobj(31)
        pos = start
        while not inflater.eof and pos < len(data):
            produced += len(inflater.decompress(view[pos : pos + READ]))
            pos += READ
        produced += len(inflater.flush())
        start = len(data) - len(inflater.unused_data) if inflater.eof else len(data)
    return produced


def _inflate_zstd(data: bytes) -> int:
    """zstandard decompression of every frame of ``data``, 1 MiB at a time; bytes produced."""
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    produced = 0
    while chunk := reader.read(READ):
        produced += len(chunk)
    return produced


def skopeo_tar(b: ColdPath, c: str, blob: Blob, model_size: int) -> None:
    layout = b.scratch("skopeo") / "oci"
    src = f"docker://{blob.ref}"
    copy = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, f"oci:{layout}:{c}"]
    target = b.scratch("tar")
    decompress = {"none": [], "gzip": ["-z"], "zstd": ["--zstd"]}[c]
    layer = layout / "blobs" / "sha256" / blob.digest.split(":", 1)[1]
    tar = ["tar", *decompress, "-xf", str(layer), "-C", str(target)]
    with b.summed(c, SKOPEO_TAR) as parts:
        parts.append(b.step(c, SKOPEO, lambda: _timed(lambda: run(copy))))
        parts.append(b.step(c, TAR, lambda: _timed(lambda: run(tar))))
        _check_size(target / MODEL, model_size)
    shutil.rmtree(layout.parent)
    shutil.rmtree(target)


def kit_rows(b: ColdPath, c: str, blob: Blob, model_size: int) -> None:
    if b.kit is None:
        return
    kit = b.kit
    env = {"KITOPS_HOME": str(b.scratch("kit-home"))}
    target = b.scratch("kit-unpack")
    with b.summed(c, KIT_BOTH) as parts:
        pull = [kit, "pull", blob.ref, "--plain-http"]
        parts.append(b.step(c, KIT_PULL, lambda: _timed(lambda: _run_go(pull, env))))
        unpack = [kit, "unpack", blob.ref, "-d", str(target)]
        parts.append(b.step(c, KIT_UNPACK, lambda: _timed(lambda: _run_go(unpack, env))))
        _check_size(target / MODEL, model_size)
    shutil.rmtree(env["KITOPS_HOME"])
    shutil.rmtree(target)


def _run_go(cmd: list[str], env: dict[str, str]) -> None:
    """Run a Go tool; when it fails, the error names its ``panic:`` line if it panicked (the tail
    of its stderr is then only a goroutine trace)."""
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )
    if done.returncode == 0:
        return
    lines = done.stderr.strip().splitlines()
    panic = [line for line in lines if line.startswith("panic:")]
    detail = panic[0] if panic else " | ".join(lines[-3:])
    raise CommandFailed(f"`{' '.join(cmd)}` exited {done.returncode}: {detail}")


def kitfs_pull_unpack(b: ColdPath, c: str, blob: Blob, model_size: int) -> None:
    home = b.scratch("pull-home")
    target = b.scratch("pull-unpack")
    cache = b.scratch("pull-cache")
    pull = ["pull", blob.ref, "--plain-http"]
    unpack = ["unpack", blob.ref, "-d", str(target), "--cache-dir", str(cache)]
    with b.summed(c, PULL_UNPACK) as parts:
        parts.append(b.step(c, PULL, lambda: _timed(lambda: kitfs(home, *pull))))
        parts.append(b.step(c, UNPACK_LOCAL, lambda: _timed(lambda: kitfs(home, *unpack))))
        _check_size(target / MODEL, model_size)
    for path in (home, target, cache):
        shutil.rmtree(path)


def kitfs_unpack_remote(b: ColdPath, c: str, blob: Blob, model_size: int) -> None:
    home, target, cache = b.scratch("unpack-home"), b.scratch("unpack"), b.scratch("unpack-cache")
    unpack = ["unpack", blob.ref, "-d", str(target), "--plain-http", "--cache-dir", str(cache)]
    b.step(c, UNPACK_REMOTE, lambda: _timed(lambda: kitfs(home, *unpack)))
    _check_size(target / MODEL, model_size)
    for path in (home, target, cache):
        shutil.rmtree(path)


def kitfs_mount_read(b: ColdPath, c: str, blob: Blob, model_size: int, name: str) -> None:
    home, cache, mnt = b.scratch("mount-home"), b.scratch("mount-cache"), b.scratch("mnt")
    mount = KitfsMount(home, blob.ref, mnt, cache, [])

    def mount_and_read() -> float:
        with Timer() as t:
            mount.start()
            read = _read_all(find_in_mount(mnt, "model", MODEL))
        if read != model_size:
            raise RuntimeError(f"read {read} bytes of {MODEL} through the mount, not {model_size}")
        return t.seconds

    try:
        b.step(c, name, mount_and_read)
    finally:
        mount.stop()
        for path in (home, cache):
            shutil.rmtree(path, ignore_errors=True)


def _read_all(path: Path) -> int:
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(READ):
            total += len(chunk)
    return total


def kitfs_mount_read_whole(b: ColdPath, c: str, blob: Blob, model_size: int) -> None:
    kitfs_mount_read(b, c, blob, model_size, MOUNT_READ)


def kitfs_mount_read_spans(b: ColdPath, c: str, blob: Blob, model_size: int) -> None:
    """The default span-indexed uncompressed layer (a row of the none table)."""
    if c == "none" and SPANS in b.results.blobs:
        kitfs_mount_read(b, c, b.results.blobs[SPANS], model_size, MOUNT_READ_SPANS)


Group = Callable[[ColdPath, str, Blob, int], None]
GROUPS: list[Group] = [
    limits,
    skopeo_tar,
    kit_rows,
    kitfs_pull_unpack,
    kitfs_unpack_remote,
    kitfs_mount_read_whole,
    kitfs_mount_read_spans,
]


def measure(b: ColdPath, compressions: list[str], repeat: int, model_size: int) -> None:
    """Every group of steps for every compression, ``repeat`` times, interleaved so that a slow
    spell of the shared machine spreads over all rows instead of landing on one."""
    for rep in range(1, repeat + 1):
        for c in compressions:
            print(f"coldpath: {c}, run {rep} of {repeat}, at {time.strftime('%H:%M:%S')}")
            for group in GROUPS:
                # A failed step is recorded in its row; the other groups go on.
                with contextlib.suppress(CommandFailed):
                    group(b, c, b.results.blobs[c], model_size)
            b.clear_scratch()


# ---- the report ------------------------------------------------------------------------------------


def _x(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0:
        return "—"
    return f"{value / base:.2f}×"


def _kit_lacks_zstd(c: str, step: str, error: str) -> bool:
    """kit v1.7.0 cannot read zstd layers: its unpack panics (checked on the error, not assumed)."""
    return c == "zstd" and step.startswith("kit ") and "panic:" in error


def _failure(c: str, step: str, error: str) -> str:
    if _kit_lacks_zstd(c, step, error):
        return "fails (kit v1.7.0 has no zstd)"
    return f"fails: {error[:160]}"


def failure_notes(r: Results) -> list[str]:
    """The error behind every failed row, once per step (the table shows a short form)."""
    notes = []
    for (c, step), row in r.rows.items():
        if row.error and not step.endswith(("+ kit unpack", "+ tar -x", "+ unpack")):
            notes.append(f"{c}, {step} failed: {row.error[-300:]}")
    return notes


def table(r: Results, c: str) -> list[str]:
    blob = r.blobs[c]
    curl, limit = r.seconds(c, CURL), r.seconds(c, INFLATE.get(c, ""))
    headers = ["step", "seconds", "MiB/s of the blob", "vs curl"]
    if c in INFLATE:
        headers.append("vs decompress limit")
    headers += ["vs kit", "vs skopeo+tar", "fetched (MiB)", "runs (s)"]
    lines = [
        f"### {c}: a {blob.size / MIB:.0f} MiB layer blob ({blob.digest[:19]}…)",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for step in ROW_ORDER:
        row = r.rows.get((c, step))
        if row is None:
            continue
        if row.error:
            cells = [step, _failure(c, step, row.error)] + ["—"] * (len(headers) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        s = row.seconds
        assert s is not None
        kit_ref, skopeo_ref = COMPARED.get(step, ("", ""))
        rate = "—" if step == STARTUP else f"{blob.size / s / MIB:.0f}"
        cells = [step, f"{s:.2f}", rate, _x(s, curl)]
        if c in INFLATE:
            cells.append(_x(s, limit))
        kit_cell = _x(s, r.seconds(c, kit_ref)) if kit_ref else ""
        if kit_ref and r.rows.get((c, kit_ref)) and r.rows[(c, kit_ref)].error:
            kit_cell = "kit fails"
        cells += [kit_cell, _x(s, r.seconds(c, skopeo_ref)) if skopeo_ref else ""]
        cells.append(f"{row.fetched / MIB:.0f}" if row.fetched is not None else "—")
        cells.append(", ".join(f"{x:.2f}" for x in row.runs))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def goals(r: Results, compressions: list[str]) -> list[str]:
    """The issue's three goals, each judged from this run's medians."""
    lines: list[str] = []
    curl = r.seconds("none", CURL)
    for step in (PULL, MOUNT_READ):
        s = r.seconds("none", step)
        if s is None or curl is None:
            lines.append(f"- {step} (none) within {PULL_GOAL}× of curl: no figure (step failed)")
            continue
        lines.append(
            f"- {step} (none) within {PULL_GOAL}× of curl: {_verdict(s <= PULL_GOAL * curl)} "
            f"({s:.2f} s against curl's {curl:.2f} s, {s / curl:.2f}×)"
        )
    spans = r.seconds("none", MOUNT_READ_SPANS)
    if spans is not None and curl is not None:
        lines.append(
            f"- (for comparison, not a goal row) the default span-indexed layer, mounted and read: "
            f"{spans / curl:.2f}× curl"
        )
    lines.append(_ahead_goal(r, compressions))
    gzip_line = _gzip_goal(r) if "gzip" in compressions else None
    if gzip_line:
        lines.append(gzip_line)
    return lines


def _ahead_goal(r: Results, compressions: list[str]) -> str:
    behind, compared, ref_fails = [], 0, 0
    for c in compressions:
        for step, refs in COMPARED.items():
            s = r.seconds(c, step)
            if s is None:
                continue
            for ref in refs:
                row = r.rows.get((c, ref))
                if row is None:
                    continue
                if row.error:
                    ref_fails += 1
                    continue
                compared += 1
                other = row.seconds
                if other is not None and s >= other:
                    behind.append(f"{c}: {step} {s / other:.2f}× {ref}")
    missing = [
        f"{c} {step}"
        for c in compressions
        for step in COMPARED
        if (c, step) in r.rows and r.rows[(c, step)].error
    ]
    text = (
        f"- kitfs ahead of kit and of skopeo + tar on every row: {_verdict(not behind and not missing)} "
        f"(ahead in {compared - len(behind)} of {compared} comparisons"
    )
    if ref_fails:
        text += f"; {ref_fails} against a reference step that failed are not counted"
    text += ")"
    if behind:
        text += "; behind: " + "; ".join(behind)
    if missing:
        text += "; kitfs steps that failed: " + ", ".join(missing)
    return text


def _gzip_goal(r: Results) -> str | None:
    limit = r.seconds("gzip", INFLATE["gzip"])
    if limit is None:
        return "- gzip within 1.2× of Python's single-core inflate: no figure (inflate failed)"
    parts, ok = [], True
    for step in INFLATING:
        s = r.seconds("gzip", step)
        if s is None:
            ok = False
            parts.append(f"{step}: failed")
            continue
        ok = ok and s <= GZIP_GOAL * limit
        parts.append(f"{step} {s / limit:.2f}×")
    return (
        f"- gzip within {GZIP_GOAL}× of Python's single-core inflate ({limit:.2f} s for the blob) "
        f"on the rows that inflate: {_verdict(ok)} ({'; '.join(parts)})"
    )


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (out.strip().splitlines() or ["unknown"])[0]


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def render(
    r: Results,
    labels: list[str],
    model_mib: int,
    repeat: int,
    kit: str | None,
    command: str,
    date: str,
    elapsed: float,
    analysis: str,
) -> str:
    machine = report.machine_facts(REPO)
    compressions = [c for c in labels if c != SPANS]
    kit_version = _version([kit, "version"]).removeprefix("Version:").strip() if kit else ""
    kit_text = f"kit {kit_version} (`{kit}`)" if kit else "kit not found"
    dropped = can_drop_page_cache()
    lines = [
        BEGIN,
        "## Cold path: whole layers against curl, sha256, skopeo + tar and kit",
        "",
        f"- Date: {date}; run time {elapsed / 60:.1f} min; command: `{command}`",
        f"- Machine: {machine.nproc} CPUs ({machine.cpu}), {machine.memory} RAM, Linux "
        f"{machine.kernel}, Python {machine.python}; kitfs commit {machine.commit}. **The machine "
        "is shared with other work while this runs: the figures are noisy** (the runs column shows "
        "the spread).",
        f"- Tools: {kit_text}; {_version(['skopeo', '--version'])}; "
        f"{' '.join(_version(['curl', '--version']).split()[:2])}; "
        f"{_version(['tar', '--version'])}; docker-registry (distribution 2.8) on 127.0.0.1",
        f"- Workload: one {model_mib} MiB random file (`{MODEL}`) as the model of one ModelKit per "
        "compression, packed by `kitfs pack --compression C --no-span-index` (kit's layer format: "
        "a mount fetches and verifies the layer whole); one more packed with the default span "
        "index (uncompressed) is only mounted and read.",
        f"- Each step ran {repeat} time(s), interleaved; the median is shown, every run in the last "
        "column. "
        + (
            "The page cache was dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every "
            "step except the in-memory limits; every kit/kitfs step starts with an empty home and "
            "cache."
            if dropped
            else "The page cache could NOT be dropped (not root): cold steps only start with "
            "empty homes and caches."
        ),
        "- Ratios are this row's time / the reference's time: `vs curl` and `vs decompress limit` "
        "above 1.00× are slower than the limit; `vs kit` and `vs skopeo+tar` below 1.00× mean "
        "kitfs was ahead. kitfs pull is set against `kit pull` and `skopeo copy`, unpack from local "
        "storage against `kit unpack` and `tar -x`; pull + unpack, unpack from the registry and "
        "mount + read (the time until the model's bytes are usable) against the sums "
        "`kit pull + kit unpack` and `skopeo copy + tar -x`. Fetched = blob bytes the registry "
        "sent (its access log); the in-memory limits fetch nothing. `kitfs pull` fsyncs what it "
        "downloads, as `curl -o FILE + sync FILE` does; the unpacks and tar do not sync.",
        "",
        "### Goals (issue 10), judged from the medians below",
        "",
        *goals(r, compressions),
        "",
    ]
    for c in compressions:
        if c in r.blobs:
            lines += table(r, c)
    notes = r.notes + failure_notes(r)
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    lines += [
        ANALYSIS_BEGIN,
        analysis.strip("\n") or "(no analysis written for this run yet)",
        ANALYSIS_END,
        END,
    ]
    return "\n".join(lines) + "\n"


def existing_section(path: Path) -> str | None:
    """The coldpath section of an existing report (kept when the main run rewrites the page)."""
    return report.existing_section(path, BEGIN, END)


def check_tools(kit: str | None, notes: list[str]) -> None:
    for tool in ("curl", "skopeo", "tar", "sync"):
        if shutil.which(tool) is None:
            raise SystemExit(f"coldpath: `{tool}` is not installed (make setup installs skopeo)")
    if kit is None:
        notes.append(
            "`kit` was not found (`$KIT`, PATH or ../shared/tools/kit): its rows are left out."
        )


def run_all(args: argparse.Namespace, labels: list[str], kit: str | None) -> Results:
    work = args.workdir.resolve()
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    context = make_context(work / f"context-{args.model_mib}", args.model_mib)
    home = packed_home(work, context, args.model_mib, labels)
    shutil.rmtree(work / "registry", ignore_errors=True)
    registry = Registry(work / "registry")
    registry.start()
    b = ColdPath(work, registry, kit)
    check_tools(kit, b.results.notes)
    try:
        for label in labels:
            print(f"coldpath: pushing {label} at {time.strftime('%H:%M:%S')}", flush=True)
            b.results.blobs[label] = publish(b, home, label)
        compressions = [c for c in labels if c != SPANS]
        measure(b, compressions, args.repeat, args.model_mib * MIB)
    finally:
        b.clear_scratch()
        registry.stop()
        shutil.rmtree(work / "registry", ignore_errors=True)
    return b.results


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py --coldpath",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-mib", type=int, default=1024, help="the model file (default 1024)")
    p.add_argument("--repeat", type=int, default=2, help="runs of every step (default 2)")
    p.add_argument("--compressions", default="none,gzip,zstd")
    p.add_argument(
        "--no-spans", action="store_true", help="leave out the span-indexed mount + read row"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp/kitfs-bench-coldpath"),
        help="scratch space and the cached contexts and packed ModelKits",
    )
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = p.parse_args(argv)
    if args.model_mib < 1 or args.repeat < 1:
        p.error("--model-mib and --repeat must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    labels = [c.strip() for c in args.compressions.split(",") if c.strip()]
    unknown = [c for c in labels if c not in COMPRESSIONS]
    if unknown:
        print(f"coldpath: unknown compression {', '.join(unknown)}", file=sys.stderr)
        return 2
    if "none" in labels and not args.no_spans:
        labels.append(SPANS)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    kit = find_kit()
    results = run_all(args, labels, kit)
    command = " ".join([".venv/bin/python", "bench/run.py", "--coldpath", *map(shlex.quote, argv)])
    kept = report.existing_section(args.output, ANALYSIS_BEGIN, ANALYSIS_END) or ""
    analysis = kept.strip().removeprefix(ANALYSIS_BEGIN).removesuffix(ANALYSIS_END)
    elapsed = time.monotonic() - started
    text = render(
        results, labels, args.model_mib, args.repeat, kit, command, date, elapsed, analysis
    )
    print(text)
    report.write_section(args.output, BEGIN, END, text)
    print(f"coldpath: wrote the coldpath section of {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
