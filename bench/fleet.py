"""The fleet benchmark (`bench/run.py --fleet`): N nodes on one machine, each a `kitfs mount` with
its own cache and kit home, reading one ModelKit's model file, straight from the origin or through
CNCF distribution in proxy mode (a pull-through mirror named in registries.conf).

Three ways, each from empty caches and an empty mirror:

- direct: all N nodes read at once from the origin;
- mirror, all at once: all N read at once through the cold mirror;
- mirror, staggered: one node reads first (`kitfs prefetch` would do the same), then the other N-1
  at once: the rollout docs/fleet.md recommends.

Figures: bytes the origin sent (blob bodies, from its access log as in bench/registry.py) and the
wall time from starting the mounts to the last node having read the whole file. The section it writes
into docs/benchmarks.md sits between FLEET_BEGIN and FLEET_END; the main run keeps it.
"""

from __future__ import annotations

import datetime
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from registry import Registry, free_port  # noqa: E402
from tools import KITFS, REPO, force_unmount, fresh_dir, is_mountpoint, kitfs  # noqa: E402

FLEET_BEGIN = "<!-- fleet:begin -->"
FLEET_END = "<!-- fleet:end -->"
MIB = 1024 * 1024


class MirrorRegistry(Registry):
    """docker-registry in proxy mode (``proxy: remoteurl:``) in front of ``remote``."""

    def __init__(self, root: Path, remote: str) -> None:
        super().__init__(root)
        self.remote = remote

    def start(self) -> None:
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            port = free_port()
            config = self.root / "config.yml"
            config.write_text(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'storage'}\n"
                f"http:\n  addr: 127.0.0.1:{port}\n  secret: kitfs-bench-secret\n"
                f"proxy:\n  remoteurl: http://{self.remote}\n"
            )
            self.host = f"127.0.0.1:{port}"
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"docker-registry (proxy) did not start; see {self.log_path}")


@dataclass(frozen=True)
class FleetRun:
    way: str
    nodes: int
    origin_bytes: int
    seconds: float
    ok_nodes: int


def _read(path: Path) -> int:
    total = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MIB):
            total += len(chunk)
    return total


def _node_mount(work: Path, i: int, ref: str, conf: Path | None) -> Path:
    mnt = fresh_dir(work / f"mnt{i}")
    cache = fresh_dir(work / f"cache{i}")
    home = fresh_dir(work / f"home{i}")
    extra = ["--registries-conf", str(conf)] if conf else []
    kitfs(home, "mount", ref, str(mnt), "--plain-http", "--cache-dir", str(cache), *extra)
    return mnt


def _nodes_read(work: Path, ids: range, ref: str, conf: Path | None, size: int) -> int:
    """Mount and read on the nodes ``ids`` at once; the number that read ``size`` bytes."""
    done: list[bool] = []

    def one(i: int) -> None:
        mnt = _node_mount(work, i, ref, conf)
        done.append(_read(mnt / "model" / "model.bin") == size)

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    return sum(done)


def _unmount_all(work: Path) -> None:
    for entry in sorted(work.glob("mnt*")):
        if is_mountpoint(entry):
            subprocess.run([KITFS, "umount", str(entry)], capture_output=True, timeout=60)
            force_unmount(entry)


def run_fleet(work: Path, nodes: int, model_mib: int) -> list[FleetRun]:
    work = fresh_dir(work)
    context = work / "context"
    context.mkdir()
    size = model_mib * MIB
    with open(context / "model.bin", "wb") as out:
        for _ in range(model_mib):
            out.write(os.urandom(MIB))
    (context / "Kitfile").write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: fleet\nmodel:\n  name: m\n  path: model.bin\n"
    )
    origin = Registry(work / "origin")
    origin.start()
    runs: list[FleetRun] = []
    try:
        ref = f"{origin.host}/bench/fleet:v1"
        kitfs(work / "pack-home", "pack", str(context), "-t", ref)
        kitfs(work / "pack-home", "push", ref, "--plain-http")
        for way in ("direct", "mirror, all at once", "mirror, staggered"):
            print(f"bench: fleet of {nodes}, {way}", flush=True)
            runs.append(_one_way(work / "run", origin, ref, way, nodes, size))
    finally:
        origin.stop()
    return runs


def _one_way(work: Path, origin: Registry, ref: str, way: str, nodes: int, size: int) -> FleetRun:
    work = fresh_dir(work)
    mirror = None
    conf = None
    if way != "direct":
        mirror = MirrorRegistry(work / "mirror", origin.host)
        mirror.start()
        conf = work / "registries.conf"
        conf.write_text(
            f'[[registry]]\nlocation = "{origin.host}"\ninsecure = true\n\n'
            f'[[registry.mirror]]\nlocation = "{mirror.host}"\ninsecure = true\n'
        )
    mark = origin.mark()
    started = time.perf_counter()
    try:
        if way == "mirror, staggered":
            ok = _nodes_read(work, range(0, 1), ref, conf, size)
            ok += _nodes_read(work, range(1, nodes), ref, conf, size)
        else:
            ok = _nodes_read(work, range(nodes), ref, conf, size)
        seconds = time.perf_counter() - started
        fetched = origin.fetched_since(mark, settle=3.0)
    finally:
        _unmount_all(work)
        if mirror is not None:
            mirror.stop()
    return FleetRun(way, nodes, fetched.blob_bytes, seconds, ok)


def section(runs: list[FleetRun], model_mib: int, command: str) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = report.machine_facts(REPO)
    lines = [
        FLEET_BEGIN,
        "## A fleet on one machine: origin bytes with and without a pull-through mirror",
        "",
        f"- Date: {date}; command: `{command}`",
        f"- Machine: {machine.nproc} CPUs, {machine.memory} RAM; kitfs commit {machine.commit}",
        f"- {runs[0].nodes if runs else '?'} nodes = {runs[0].nodes if runs else '?'} `kitfs mount` daemons, each with its own empty cache "
        f"and kit home, each reading the whole {model_mib} MiB model file (one uncompressed layer); "
        "origin and mirror are docker-registry (distribution 2.8) on 127.0.0.1, the mirror in "
        "proxy mode (`proxy: remoteurl:`), named in registries.conf; origin bytes are the blob "
        "bodies in the origin's access log.",
        "",
        "| way | nodes | origin bytes | × the model | wall time (s) | nodes that read it all |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        ratio = run.origin_bytes / (model_mib * MIB) if model_mib else 0.0
        lines.append(
            f"| {run.way} | {run.nodes} | {run.origin_bytes / MIB:.1f} MiB | {ratio:.2f} | "
            f"{run.seconds:.1f} | {run.ok_nodes} |"
        )
    lines += [
        "",
        "- distribution 2.8's proxy fetches a blob twice on its first pull (one copy streamed to "
        "the client, one stored in the background) and streams straight from the origin to every "
        "request that arrives while a blob is still in flight: a cold mirror hit by the whole "
        "fleet at once saves little. Warming it with one node first (`kitfs prefetch` on one node, "
        "or a staggered rollout) makes every other node cost the origin nothing.",
        "- One machine, 2 shared cores: the wall times include N FUSE daemons verifying the layer "
        "on the same CPUs, so they show the cost of the mirror hop, not a network's bandwidth.",
        FLEET_END,
    ]
    return "\n".join(lines) + "\n"


def existing_section(path: Path) -> str | None:
    """The fleet section of an existing report (the main run keeps it)."""
    return report.existing_section(path, FLEET_BEGIN, FLEET_END)


def write_section(path: Path, text: str) -> None:
    """Replace (or append) the fleet section of the report at ``path``."""
    report.write_section(path, FLEET_BEGIN, FLEET_END, text)


def main(work: Path, nodes: int, model_mib: int, output: Path) -> int:
    if nodes < 1 or model_mib < 1:
        print("bench: --fleet-nodes and --fleet-mib must be at least 1", file=sys.stderr)
        return 2
    runs = run_fleet(work, nodes, model_mib)
    command = " ".join([".venv/bin/python", "bench/run.py", *map(shlex.quote, sys.argv[1:])])
    text = section(runs, model_mib, command)
    print(text)
    write_section(output, text)
    shutil.rmtree(work, ignore_errors=True)
    print(f"bench: wrote the fleet section of {output}", flush=True)
    return 0
