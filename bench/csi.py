"""The CSI benchmark (`bench/run.py --csi`): publish-to-readable time of a kitfs CSI volume, cold
and warm, beside `kitfs mount` of the same ModelKit.

"Readable" means: the call returned (the `kitfs mount` command, or NodePublishVolume answered by a
`kitfs csi` plugin over its unix socket) and the volume's Kitfile was read through the mount. Cold:
an empty cache (the manifest and config are fetched from the registry; no layer is). Warm: the
ModelKit was mounted and read whole on this node before, so every blob is in the cache and only
the tag is asked of the registry. No kubelet runs here: this script calls the plugin with the gRPC
client generated from kitfs/csi/csi.proto, as the tests do.

Writes its section (between CSI_BEGIN and CSI_END) at the end of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from registry import Registry  # noqa: E402
from tools import KITFS, REPO, force_unmount, fresh_dir, is_mountpoint, kitfs  # noqa: E402

CSI_BEGIN = "<!-- csi:begin -->"
CSI_END = "<!-- csi:end -->"
KITFILE = "manifestVersion: 1.0.0\npackage:\n  name: csi-bench\nmodel:\n  name: w\n  path: model\n"
MIB = 1024 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-mib", type=int, default=256, help="the model file (default 256)")
    p.add_argument("--repeat", type=int, default=7, help="runs of each step; medians (default 7)")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/kitfs-bench/csi"))
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print the section only")
    return p.parse_args(argv)


class Plugin:
    """`kitfs csi` on a unix socket in ``base``, with its cache in ``cache``."""

    def __init__(self, base: Path, cache: Path) -> None:
        import grpc

        from kitfs.csi import csi_pb2, csi_pb2_grpc

        self.pb = csi_pb2
        self.base = fresh_dir(base)
        self.socket = base / "csi.sock"
        self.log = (base / "plugin.log").open("ab")
        self.process = subprocess.Popen(
            [
                KITFS, "csi", "--endpoint", f"unix://{self.socket}", "--node-id", "bench",
                "--state-dir", str(base / "state"), "--cache-dir", str(cache), "--plain-http",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        identity = csi_pb2_grpc.IdentityStub(self.channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if identity.Probe(csi_pb2.ProbeRequest(), timeout=2).ready.value:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
        raise RuntimeError(f"kitfs csi did not start; see {base / 'plugin.log'}")

    def publish(self, target: Path, ref: str) -> None:
        pb = self.pb
        mode = pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        )
        cap = pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(), access_mode=mode)
        self.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=target.name, target_path=str(target), volume_capability=cap,
                readonly=True, volume_context={"reference": ref},
            ),
            timeout=120,
        )  # fmt: skip

    def unpublish(self, target: Path) -> None:
        request = self.pb.NodeUnpublishVolumeRequest(volume_id=target.name, target_path=str(target))
        self.node.NodeUnpublishVolume(request, timeout=60)

    def stop(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def _readable(target: Path) -> None:
    if "csi-bench" not in (target / "Kitfile").read_text():
        raise RuntimeError(f"{target}/Kitfile is not the benchmark's")


def _read_all(target: Path) -> None:
    with (target / "model" / "model" / "model.bin").open("rb") as handle:
        while handle.read(4 * MIB):
            pass


def time_mount(work: Path, ref: str, cache: Path, n: int) -> float:
    target = fresh_dir(work / f"mnt-{n}")
    start = time.perf_counter()
    kitfs(work / "home", "mount", ref, str(target), "--plain-http", "--cache-dir", str(cache))
    _readable(target)
    seconds = time.perf_counter() - start
    _read_all(target)
    subprocess.run([KITFS, "umount", str(target)], capture_output=True, timeout=60)
    if is_mountpoint(target):
        force_unmount(target)
    return seconds


def time_publish(plugin: Plugin, work: Path, ref: str, n: int) -> float:
    parent = fresh_dir(work / "pods" / f"pod-{n}")
    target = parent / "mount"
    start = time.perf_counter()
    plugin.publish(target, ref)
    _readable(target)
    seconds = time.perf_counter() - start
    _read_all(target)
    plugin.unpublish(target)
    return seconds


def prepare(work: Path, model_mib: int) -> tuple[Registry, str]:
    registry = Registry(work / "registry")
    registry.start()
    context = fresh_dir(work / "context")
    (context / "Kitfile").write_text(KITFILE)
    (context / "model").mkdir()
    with (context / "model" / "model.bin").open("wb") as handle:
        for _ in range(model_mib):
            handle.write(os.urandom(MIB))
    ref = f"{registry.host}/bench/csi:v1"
    kitfs(work / "home", "pack", str(context), "-t", ref)
    kitfs(work / "home", "push", ref, "--plain-http")
    return registry, ref


def measure(work: Path, ref: str, repeat: int) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {
        "mount cold": [],
        "mount warm": [],
        "csi cold": [],
        "csi warm": [],
    }
    warm_cache = work / "cache-warm"
    for n in range(repeat):
        runs["mount cold"].append(time_mount(work, ref, fresh_dir(work / "cache-cold"), n))
        runs["mount warm"].append(time_mount(work, ref, warm_cache, 100 + n))
        plugin = Plugin(work / "plugin-cold", fresh_dir(work / "cache-csi-cold"))
        try:
            runs["csi cold"].append(time_publish(plugin, work, ref, n))
        finally:
            plugin.stop()
    plugin = Plugin(work / "plugin-warm", warm_cache)  # the cache the warm mounts filled
    try:
        time_publish(plugin, work, ref, 999)  # the plugin's first volume (not counted)
        for n in range(repeat):
            runs["csi warm"].append(time_publish(plugin, work, ref, 200 + n))
    finally:
        plugin.stop()
    return runs


def section(runs: dict[str, list[float]], model_mib: int, command: str) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    med = {k: statistics.median(v) for k, v in runs.items()}

    def cell(key: str) -> str:
        values = ", ".join(f"{v:.3f}" for v in runs[key])
        return f"**{med[key]:.3f} s** ({values})"

    lines = [
        CSI_BEGIN,
        "## CSI: publish-to-readable, cold and warm, beside `kitfs mount`",
        "",
        f"Measured {date} on the machine above (2 cores shared with other sessions; load average "
        f"{load} at the end of the run). A ModelKit with one {model_mib} MiB "
        "model file, packed by kitfs, in a local docker-registry. Readable: the call returned "
        "(`kitfs mount`, or NodePublishVolume answered by `kitfs csi` over its unix socket) and the "
        "volume's Kitfile was read. Cold: an empty cache; warm: the ModelKit was mounted and read "
        "whole on the node before. No kubelet runs here: the script calls the plugin with the gRPC "
        f"client generated from kitfs/csi/csi.proto. Command: `{command}`.",
        "",
        "| | cold, median (runs) | warm, median (runs) |",
        "|---|---|---|",
        f"| `kitfs mount` | {cell('mount cold')} | {cell('mount warm')} |",
        f"| CSI NodePublishVolume | {cell('csi cold')} | {cell('csi warm')} |",
        f"| mount / CSI | {med['mount cold'] / med['csi cold']:.1f}× | "
        f"{med['mount warm'] / med['csi warm']:.1f}× |",
        "",
        "- The plugin's resident spawner has the interpreter, trio, pyfuse3, the registry client and "
        "the signing code loaded; a publish forks it, and the child resolves the tag (one manifest "
        "request; the config comes from the cache when warm) and mounts. `kitfs mount` pays a fresh "
        "interpreter and those imports on every mount.",
        "- Both ask the registry what the tag names on every mount (refresh auto); a CSI publish also "
        "asks for the manifest with the volume's own credentials first (kitfs/csi/access.py: the node "
        "cache is shared), so a warm publish makes two small requests to the registry.",
        CSI_END,
    ]
    return "\n".join(lines) + "\n"


def existing_section(path: Path) -> str | None:
    """The CSI section of an existing report (the main run keeps it)."""
    return report.existing_section(path, CSI_BEGIN, CSI_END)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    work = fresh_dir(args.workdir.resolve())
    registry, ref = prepare(work, args.model_mib)
    try:
        runs = measure(work, ref, args.repeat)
    finally:
        registry.stop()
    command = " ".join([".venv/bin/python", "bench/run.py", "--csi", *map(shlex.quote, argv)])
    text = section(runs, args.model_mib, command)
    print(text)
    if not args.no_write:
        report.write_section(args.output, CSI_BEGIN, CSI_END, text)
        print(f"bench: wrote the CSI section of {args.output}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
