"""kitfs benchmark: `make bench` (default sizes) or `make bench-small` (about 20x smaller).

Builds a generated ModelKit in each compression, pushes it to a real docker-registry on 127.0.0.1,
and measures the mount against pulling and unpacking (figures 1-7 of docs/benchmarks.md). Prints one
table per figure and writes them, with the machine, date and command, to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import figures  # noqa: E402
import report  # noqa: E402
import tables  # noqa: E402
from harness import Bench  # noqa: E402
from registry import Registry  # noqa: E402
from tools import (  # noqa: E402
    KITFS,
    REPO,
    can_drop_page_cache,
    find_kit,
    force_unmount,
    is_mountpoint,
)
from workload import Sizes, ensure_workload  # noqa: E402

DEFAULTS = {
    "model_mib": 1024,
    "compressible_mib": 200,
    "big_dataset_mib": 300,
    "mid_dataset_mib": 50,
    "small_files": 2000,
}
SMALL = {
    "model_mib": 50,
    "compressible_mib": 10,
    "big_dataset_mib": 15,
    "mid_dataset_mib": 3,
    "small_files": 100,
}
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
PUSH_BEGIN = "<!-- push:begin -->"
PUSH_END = "<!-- push:end -->"
HOW_TO_RUN = (
    "Flags go through `BENCH_ARGS`, e.g. `make bench BENCH_ARGS='--compressions none,gzip --model-mib 256'`: "
    "`--small`, the sizes (`--model-mib --compressible-mib --big-dataset-mib --mid-dataset-mib --small-files`), "
    "`--compressions`, `--repeat`, `--readers`, `--random-reads`, `--workdir` (default /var/tmp/kitfs-bench, "
    "about 15 GiB at the default sizes), `--output`, `--keep`. Run as root so that cold steps can drop the page "
    "cache. A `--small` run writes this page only over another small run, else next to its workdir. "
    "`--spans` runs only the span-reads benchmark (bench/spans.py, its flags after `--spans`) and rewrites only "
    "its section; "
    "`--fleet` (with `--fleet-nodes`, `--fleet-mib`) runs only the fleet benchmark (bench/fleet.py) and "
    "rewrites only its section, which the other runs keep; "
    "`--coldpath` runs only the cold-path benchmark (bench/coldpath.py, its flags after `--coldpath`: "
    "`--model-mib`, `--repeat`, `--compressions`, `--workdir`, `--output`) and rewrites only its section; "
    "`--modelload` runs only the model-load benchmark (bench/modelload.py, its flags after `--modelload`: "
    "`--small`, `--profile`, `--mount-arg`, the sizes, `--workdir`, `--output`) and rewrites only its section; "
    "`--csi` runs only the CSI publish benchmark (bench/csi.py, its flags after `--csi`: `--model-mib`, "
    "`--repeat`, `--workdir`, `--output`, `--no-write`) and rewrites only its section."
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--small", action="store_true", help="about 20x smaller sizes, for a quick check"
    )
    p.add_argument(
        "--model-mib", type=int, help="the random model file (default 1024; 50 with --small)"
    )
    p.add_argument(
        "--compressible-mib", type=int, help="the compressible model part (default 200; 10)"
    )
    p.add_argument("--big-dataset-mib", type=int, help="the large dataset file (default 300; 15)")
    p.add_argument(
        "--mid-dataset-mib", type=int, help="the dataset file of figure 2 (default 50; 3)"
    )
    p.add_argument(
        "--small-files", type=int, help="files in the small-files dataset (default 2000; 100)"
    )
    p.add_argument(
        "--compressions",
        default="none,gzip,zstd",
        help="layer compressions to build (default none,gzip,zstd)",
    )
    p.add_argument(
        "--readers", type=int, default=16, help="concurrent readers in figure 5 (default 16)"
    )
    p.add_argument(
        "--random-reads",
        type=int,
        help="1 MiB reads in figure 5, all readers together (default 2048; 256 with --small)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("KITFS_BENCH_DIR", "/var/tmp/kitfs-bench")),
        help="scratch space (default $KITFS_BENCH_DIR or /var/tmp/kitfs-bench)",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="markdown report (default docs/benchmarks.md; --small runs write there only over another small run)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        help="runs of each quick step, the median is kept (default 3; 1 with --small)",
    )
    p.add_argument("--keep", action="store_true", help="keep the registry data and scratch files")
    p.add_argument(
        "--fleet",
        action="store_true",
        help="run only the fleet benchmark (bench/fleet.py) and rewrite its section of the report",
    )
    p.add_argument("--fleet-nodes", type=int, default=8, help="nodes in the fleet (default 8)")
    p.add_argument(
        "--fleet-mib", type=int, default=256, help="the fleet's model file (default 256)"
    )
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> tuple[Sizes, str]:
    base = SMALL if args.small else DEFAULTS
    values = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    label = "small" if args.small else "default"
    if values != base:
        label = "custom"
    return Sizes(**values), label


def command_line(args: argparse.Namespace) -> str:
    """The command as markdown: the make target when run by make, and the script line it ran."""
    direct = " ".join([".venv/bin/python", "bench/run.py", *map(shlex.quote, sys.argv[1:])])
    if os.environ.get("MAKELEVEL"):
        extra = " ".join(a for a in sys.argv[1:] if a != "--small")
        target = "make bench-small" if args.small else "make bench"
        make = f"{target} BENCH_ARGS={shlex.quote(extra)}" if extra else target
        return f"`{make}` (which runs `{direct}`)"
    return f"`{direct}`"


def kit_available() -> bool:
    """Whether the reference `kit` (``$KIT``, PATH, or ../shared/tools/kit) runs."""
    kit = find_kit()
    if kit is None:
        return False
    try:
        return subprocess.run([kit, "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def kit_version() -> str:
    """``kit version``'s first line and where the binary is, for the report."""
    kit = find_kit()
    try:
        out = subprocess.run([kit or "kit", "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (out.stdout.strip().splitlines() or ["unknown"])[0]
    return f"{first} ({kit})"


def mount_available() -> str | None:
    """None if `kitfs mount` exists, else why not."""
    done = subprocess.run([KITFS, "mount", "--help"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return "`kitfs mount` is not available: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return None


def ratarmount_problem() -> str | None:
    from tools import RATARMOUNT

    if not os.path.exists(RATARMOUNT):
        return "ratarmount is not installed (pip install -e '.[bench]')"
    done = subprocess.run([RATARMOUNT, "--version"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return "`ratarmount --version` failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return None


def ratarmount_version() -> str:
    from tools import RATARMOUNT

    try:
        out = subprocess.run(
            [RATARMOUNT, "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except OSError:
        return "not installed"
    for line in out.splitlines():
        if line.lower().startswith("ratarmount "):
            return line.strip()
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--fsspec"]:
        import fsspec_reads  # not bench/fsspec.py: bench/ is first on sys.path, it would shadow fsspec

        return fsspec_reads.main(argv[1:])
    if argv[:1] == ["--spans"]:
        import spans

        return spans.main(argv[1:])
    if argv[:1] == ["--coldpath"]:
        import coldpath

        return coldpath.main(argv[1:])
    if argv[:1] == ["--modelload"]:
        import modelload

        return modelload.main(argv[1:])
    if argv[:1] == ["--csi"]:
        import csi

        return csi.main(argv[1:])
    args = parse_args(argv)
    if args.fleet:
        import fleet

        work = args.workdir.resolve() / "fleet"
        return fleet.main(work, args.fleet_nodes, args.fleet_mib, args.output or DEFAULT_OUTPUT)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sizes, label = sizes_from(args)
    compressions = [c.strip() for c in args.compressions.split(",") if c.strip()]
    random_reads = args.random_reads or (256 if args.small else 2048)
    work = args.workdir.resolve()
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    print(f"bench: sizes {sizes} in {work}", flush=True)
    workload = ensure_workload(work / f"workload-{label}", sizes)
    print(f"bench: workload ready after {time.monotonic() - started:.0f}s", flush=True)
    shutil.rmtree(work / "registry", ignore_errors=True)
    registry = Registry(work / "registry")
    try:
        registry.start()
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    b = Bench(
        work,
        registry,
        workload,
        compressions,
        can_drop_page_cache(),
        kit_available(),
        random_reads,
        args.readers,
        args.repeat or (1 if args.small else 3),
    )
    shutil.rmtree(b.pack_home, ignore_errors=True)
    skipped: dict[str, str] = {}
    try:
        run_figures(b, skipped)
    finally:
        cleanup(b, keep=args.keep)
    elapsed = time.monotonic() - started
    text = render(b, args, sizes, label, date, elapsed, skipped)
    print(text)
    output = choose_output(args, label)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    b.save_json(work / f"results-{label}.json")
    print(
        f"bench: wrote {output} and {work / f'results-{label}.json'} in {elapsed:.0f}s total",
        flush=True,
    )
    return 0


def run_figures(b: Bench, skipped: dict[str, str]) -> None:
    for c in list(b.compressions):
        print(f"bench: pack + push ({c}) at {_clock()}", flush=True)
        figures.pack_and_push(b, c)
        pack = b.get("setup", c, "kitfs pack", "-")
        push = b.get("setup", c, "kitfs push", "-")
        if (pack and pack.error) or (push and push.error):
            skipped[c] = (pack.error if pack and pack.error else push.error if push else "") or "?"
    b.compressions = [c for c in b.compressions if c not in skipped]
    problem = mount_available()
    if problem:
        skipped["mount"] = problem
        print(f"bench: {problem}; skipping the mount figures", flush=True)
    for c in b.compressions:
        print(f"bench: figures 1-4 ({c}) at {_clock()}", flush=True)
        if problem:
            figures.figure2(b, c, mount=False)
            figures.figure3(b, c, mount=False)
            continue
        figures.figure1(b, c)
        figures.figure2(b, c)
        cache = figures.figure3(b, c)
        figures.figure4(b, c)
        print(f"bench: figure 5 ({c}) at {_clock()}", flush=True)
        figures.figure5(b, c, cache)
        b.remove(cache, cache.parent / f"{cache.name}-home")
    ratar = ratarmount_problem()
    if ratar is None and "gzip" not in b.compressions:
        ratar = "no gzip ModelKit was built (--compressions)"
    if ratar is None and problem:
        ratar = problem
    if ratar:
        skipped["ratarmount"] = ratar
    else:
        print(f"bench: figure 6 (gzip, ratarmount) at {_clock()}", flush=True)
        figures.figure6(b)


_STARTED = time.monotonic()


def _clock() -> str:
    return f"{time.monotonic() - _STARTED:.0f}s"


def cleanup(b: Bench, keep: bool) -> None:
    scratch = b.work / "scratch"
    if scratch.exists():
        for entry in sorted(scratch.iterdir()):
            if is_mountpoint(entry):
                force_unmount(entry)
    b.registry.stop()
    if not keep:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(b.work / "registry" / "storage", ignore_errors=True)
        shutil.rmtree(b.pack_home, ignore_errors=True)


def choose_output(args: argparse.Namespace, label: str) -> Path:
    if args.output:
        return args.output
    if label == "default":
        return DEFAULT_OUTPUT
    existing = report.existing_size_label(DEFAULT_OUTPUT)
    if existing in (None, label):
        return DEFAULT_OUTPUT
    out = args.workdir.resolve() / f"benchmarks-{label}.md"
    print(
        f"bench: {DEFAULT_OUTPUT} holds a {existing}-size run; writing this {label} run to {out}",
        flush=True,
    )
    return out


def render(
    b: Bench,
    args: argparse.Namespace,
    sizes: Sizes,
    label: str,
    date: str,
    elapsed: float,
    skipped: dict[str, str],
) -> str:
    machine = report.machine_facts(REPO)
    s = sizes
    lines = [
        "# kitfs benchmarks",
        "",
        report.SIZE_MARK.format(label),
        "",
        "How much sooner and cheaper a ModelKit is usable through `kitfs mount` than by pulling and "
        "unpacking it whole. One command runs everything (`make bench`, or `make bench-small` for a "
        "quick check at about 1/20 of the sizes); it prints these tables and rewrites this page. "
        "Nothing here is asserted by the test suite: every ratio compares two methods measured "
        "side by side in the same run, on the same machine, against the same loopback registry.",
        "",
        HOW_TO_RUN,
        "",
        "## This run",
        "",
        f"- Date: {date}; total run time {elapsed / 60:.1f} min",
        f"- Command: {command_line(args)}",
        f"- Machine: {machine.nproc} CPUs ({machine.cpu}), {machine.memory} RAM, Linux {machine.kernel}, Python {machine.python}; shared with other work, so single runs carry noise",
        f"- kitfs commit: {machine.commit}",
        f"- Sizes ({label}): model {s.model_mib} MiB random + {s.compressible_mib} MiB compressible part; datasets of {s.small_files} small CSV files, {s.big_dataset_mib} MiB and {s.mid_dataset_mib} MiB; a code folder and docs",
        f"- Compressions: {', '.join(b.compressions) or 'none built'}",
        "- Registry: docker-registry (distribution 2.8) on 127.0.0.1; bytes fetched are summed from its access log (GET response bodies)",
        f"- Page cache: {'dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every cold step' if b.page_cache_droppable else 'NOT dropped (no permission): cold steps only start with empty kitfs caches and homes'}",
        f"- Reference `kit`: {kit_version() if b.kit_available else 'not installed (rows skipped)'}; ratarmount: {ratarmount_version()}",
        "- Cold = empty kitfs cache and empty `--config` home (nothing in local storage) and a dropped page cache; warm = the same cache/home again, page cache as the previous step left it.",
        f"- Repeats: quick steps (figures 1, 4 and 6, the mount and `unpack --filter` rows of figure 2, the warm rows of figure 3) run {b.repeat} time(s) and the median is shown; the long pull + unpack steps, the cold reads of figure 3 and figure 5 run once",
        "- \"vs kitfs mount\" = that row's time / the kitfs mount's time in the same state and compression: above 1.00× the mount was faster.",
        "",
    ]
    if skipped:
        lines += ["Skipped:", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    lines += ["## Results", ""]
    import startup

    # bench/startup.py writes the start-up section; it stays after figure 1
    kept_startup = startup.existing_section(args.output or DEFAULT_OUTPUT)
    lines += [tables.setup_table(b).markdown(), tables.figure1_table(b).markdown()]
    if kept_startup:
        lines += [kept_startup]
    for table in (
        tables.figure2_table(b),
        tables.figure3_table(b),
        tables.figure4_table(b),
        tables.figure5_table(b),
        tables.figure6_table(b, skipped.get("ratarmount")),
        tables.figure7_table(b),
    ):
        lines += [table.markdown()]
    lines += ["## Where kitfs loses in this run (computed from the tables above)", ""]
    lost = tables.losses(b)
    lines += [f"- {line}" for line in lost] if lost else ["- Nowhere in this run."]
    if b.errors:
        lines += ["", "## Errors in this run", ""] + [f"- {e}" for e in b.errors]
    analysis = report.existing_analysis(args.output or DEFAULT_OUTPUT) or report.DEFAULT_ANALYSIS
    lines += [
        "",
        "## What the numbers mean",
        "",
        report.ANALYSIS_BEGIN,
        analysis,
        report.ANALYSIS_END,
        "",
    ]
    import coldpath
    import fleet
    import spans

    kept_spans = spans.existing_section(args.output or DEFAULT_OUTPUT)  # `--spans` runs write it
    if kept_spans:
        lines += [kept_spans]
    kept = fleet.existing_section(args.output or DEFAULT_OUTPUT)  # `--fleet` runs write it
    if kept:
        lines += [kept]
    kept_coldpath = coldpath.existing_section(args.output or DEFAULT_OUTPUT)  # `--coldpath` runs
    if kept_coldpath:
        lines += [kept_coldpath]
    import modelload

    kept_modelload = modelload.existing_section(args.output or DEFAULT_OUTPUT)  # `--modelload`
    if kept_modelload:
        lines += [kept_modelload]
    kept_push = report.existing_section(  # written by hand from bench/push.sh runs
        args.output or DEFAULT_OUTPUT, PUSH_BEGIN, PUSH_END
    )
    if kept_push:
        lines += [kept_push]
    import csi

    kept_csi = csi.existing_section(args.output or DEFAULT_OUTPUT)  # `--csi` runs write it
    if kept_csi:
        lines += [kept_csi]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
