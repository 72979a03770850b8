"""The model-load benchmark's section of docs/benchmarks.md: the goals of issue 17 judged from one
run, one table per model with every row set against kit's and the link's or local disk's row from the
same run, where the composite rows' seconds went, and the py-spy summary when there is one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import report
from loadsteps import (
    CURL,
    CURL_KIT,
    CURL_SINGLE,
    CURL_TP,
    DD_SINGLE,
    GIB,
    KIT_LOAD,
    KIT_TP,
    LOCAL_COLD,
    LOCAL_MMAP,
    LOCAL_TP,
    LOCAL_WARM,
    MIB,
    MOUNT_DEFAULT,
    MOUNT_KIT,
    MOUNT_MMAP,
    MOUNT_TP,
    PAIR,
    TP,
    WARM_LOAD,
    WARM_MMAP,
    WARM_MOUNT_LOAD,
    WARM_MOUNT_MMAP,
    ModelLoad,
    Profile,
    Sizes,
)
from tools import REPO, can_drop_page_cache

BEGIN = "<!-- modelload:begin -->"
END = "<!-- modelload:end -->"
ANALYSIS_BEGIN = "<!-- modelload-analysis:begin -->"
ANALYSIS_END = "<!-- modelload-analysis:end -->"


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
    "two shards, one loader mapping them (`safetensors.safe_open`)": {
        LOCAL_MMAP: Compare(base=CURL),
        MOUNT_MMAP: Compare(KIT_LOAD, CURL),
        WARM_MMAP: Compare(None, LOCAL_MMAP),
        WARM_MOUNT_MMAP: Compare(None, LOCAL_MMAP),
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
        "cache). Each curl row is the fastest of three runs, each after a page cache drop (every "
        "other row runs once). A load is `safetensors.numpy.load_file` of every shard (and reading the small "
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


def existing_analysis(path: Path) -> str:
    """The hand-written analysis of an existing section (kept when a run rewrites it)."""
    kept = report.existing_section(path, ANALYSIS_BEGIN, ANALYSIS_END) or ""
    return kept.strip().removeprefix(ANALYSIS_BEGIN).removesuffix(ANALYSIS_END)


def existing_section(path: Path) -> str | None:
    """The modelload section of an existing report (kept when the main run rewrites the page)."""
    return report.existing_section(path, BEGIN, END)
