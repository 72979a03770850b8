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
- the same cold and warm mounts and a local load with ``safetensors.safe_open`` instead of
  ``load_file``: the files mapped and each tensor copied out of the mapping (page faults, not
  ``read``), as vLLM and transformers load (the kit row is the ``load_file`` one);
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
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadreport  # noqa: E402
import report  # noqa: E402
from hfmodel import HfModel, ensure_model  # noqa: E402
from loadsteps import (  # noqa: E402
    DEFAULT,
    KIT,
    PAIR,
    RANKS,
    REPO_NAME,
    SINGLE,
    TP,
    Blob,
    ModelLoad,
    Sizes,
    clock,
    measure,
)
from registry import Registry  # noqa: E402
from tools import REPO, find_kit, kitfs, run  # noqa: E402

KIT_PACKED = (PAIR, TP)  # the models kit packs too (for the kit rows and the kit's-layers mount)

# ---- building and publishing -------------------------------------------------------------------


def build_models(work: Path, sizes: Sizes) -> dict[str, HfModel]:
    shapes = {
        PAIR: (2, sizes.shard_mib, 1),
        TP: (RANKS, sizes.tp_shard_mib, 2),
        SINGLE: (1, sizes.single_mib, 3),
    }
    models = {}
    for name, (shards, mib, seed) in shapes.items():
        print(f"modelload: model {name}: {shards} x {mib} MiB at {clock()}", flush=True)
        models[name] = ensure_model(work / f"model-{shards}x{mib}", shards, mib, seed)
    return models


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def local_tag(model: HfModel) -> str:
    """The tag a packed model has in the pack homes: one per model shape, so homes hold every
    size packed (a --small run and a full one never mix up their ModelKits)."""
    return f"modelload:{model.context.name}"


def pack_kitfs(work: Path, models: dict[str, HfModel]) -> Path:
    """A kitfs home holding every model packed with kitfs's defaults, once per kitfs source tree
    (``git rev-parse HEAD:kitfs``) so reruns skip the packing."""
    tree = _git("rev-parse", "HEAD:kitfs")[:12] or "unknown"
    home = work / f"kitfs-home-{tree}"
    for stale in work.glob("kitfs-home-*"):
        if stale != home:
            shutil.rmtree(stale, ignore_errors=True)
    for model in models.values():
        marker = home / f".packed-{model.context.name}"
        if not marker.exists():
            print(f"modelload: kitfs pack {model.context.name} at {clock()}", flush=True)
            kitfs(home, "pack", str(model.context), "-t", local_tag(model))
            marker.touch()
    return home


def pack_kit(work: Path, kit: str, models: list[HfModel]) -> Path:
    """A kit home holding ``models`` packed by the real kit (kit's layers: no index)."""
    home = work / "kit-home"
    home.mkdir(parents=True, exist_ok=True)
    for model in models:
        marker = home / f".packed-{model.context.name}"
        if not marker.exists():
            print(f"modelload: kit pack {model.context.name} at {clock()}", flush=True)
            env = {"KITOPS_HOME": str(home)}
            run([kit, "pack", str(model.context), "-t", local_tag(model)], env=env)
            marker.touch()
    return home


def publish(b: ModelLoad, kitfs_home: Path, kit_home: Path | None) -> None:
    """Push every packed ModelKit to the registry; record each model layer blob."""
    for name, model in b.models.items():
        ref = f"{b.registry.host}/{REPO_NAME}:{DEFAULT}-{name}"
        kitfs(kitfs_home, "tag", local_tag(model), ref)
        kitfs(kitfs_home, "push", ref, "--plain-http")
        b.blobs[(DEFAULT, name)] = model_blob(b.registry.host, ref)
    if kit_home is None or b.kit is None:
        return
    env = {"KITOPS_HOME": str(kit_home)}
    for name in KIT_PACKED:
        ref = f"{b.registry.host}/{REPO_NAME}:{KIT}-{name}"
        run([b.kit, "tag", local_tag(b.models[name]), ref], env=env)
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


# ---- the command ---------------------------------------------------------------------------------


def existing_section(path: Path) -> str | None:
    """The modelload section of an existing report (bench/run.py keeps it when it rewrites the
    page)."""
    return loadreport.existing_section(path)


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
    kit_home = pack_kit(work, kit, [models[n] for n in KIT_PACKED]) if kit else None
    shutil.rmtree(work / "registry", ignore_errors=True)
    registry = Registry(work / "registry")
    registry.start()
    b = ModelLoad(work, registry, kit, args.mount_arg)
    b.models = models
    if kit is None:
        b.notes.append("`kit` was not found ($KIT, PATH or ../shared/tools/kit): no kit rows.")
    try:
        b.remove_scratch()
        print(f"modelload: pushing at {clock()}", flush=True)
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
    analysis = loadreport.existing_analysis(args.output)
    text = loadreport.render(b, args.sizes, command, date, time.monotonic() - started, analysis)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report.write_section(args.output, loadreport.BEGIN, loadreport.END, text)
    print(f"modelload: wrote the modelload section of {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
