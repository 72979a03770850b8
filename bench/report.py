"""Tables and the markdown report: one table per figure, machine facts, and the analysis section.

The hand-written analysis between ANALYSIS_BEGIN and ANALYSIS_END in the existing report is kept when
the report is rewritten, so a new run refreshes the numbers without losing the prose (the prose names
the run it was written for).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ANALYSIS_BEGIN = "<!-- analysis:begin -->"
ANALYSIS_END = "<!-- analysis:end -->"
SIZE_MARK = "<!-- bench-sizes: {} -->"
MIB = 1024 * 1024


@dataclass
class Table:
    """One figure's results as a markdown table, with notes printed under it."""

    figure: str
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append(["" if c is None else str(c) for c in cells])

    def markdown(self) -> str:
        heading = "Setup" if self.figure == "0" else f"Figure {self.figure}"
        lines = [f"### {heading}: {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def mib(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value / MIB:.1f}" if value >= MIB / 10 or value == 0 else f"{value / MIB:.3f}"


def ratio(value: float | None, base: float | None) -> str:
    """``value / base`` as ``2.5×``: above 1 means the row took longer than the kitfs row."""
    if value is None or base is None or base <= 0:
        return "—"
    return f"{value / base:.2f}×"


@dataclass(frozen=True)
class Machine:
    nproc: int
    memory: str
    kernel: str
    python: str
    commit: str
    cpu: str


def machine_facts(repo: Path) -> Machine:
    mem_kib = 0
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = _git(repo, "rev-parse", "--short=12", "HEAD")
    if commit and _git(repo, "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return Machine(
        nproc=os.cpu_count() or 0,
        memory=f"{mem_kib / 1024 / 1024:.1f} GiB",
        kernel=platform.release(),
        python=sys.version.split()[0],
        commit=commit or "unknown",
        cpu=cpu,
    )


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def existing_analysis(path: Path) -> str | None:
    """The hand-written analysis section of an existing report, if it has one."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    start, end = text.find(ANALYSIS_BEGIN), text.find(ANALYSIS_END)
    if start < 0 or end < start:
        return None
    return text[start + len(ANALYSIS_BEGIN) : end].strip("\n")


def existing_size_label(path: Path) -> str | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    for label in ("small", "custom", "default"):
        if SIZE_MARK.format(label) in text:
            return label
    return None


DEFAULT_ANALYSIS = """\
_No analysis has been written for a run yet: read the tables and the automatic list above._"""


def existing_section(path: Path, begin: str, end: str) -> str | None:
    """The part of an existing report between the markers ``begin`` and ``end`` (a benchmark
    that runs on its own writes it; the main run keeps it when it rewrites the page)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        return None
    return text[start : stop + len(end)] + "\n"


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """Replace (or append) the section between the markers in the report at ``path``."""
    try:
        current = path.read_text()
    except FileNotFoundError:
        current = "# kitfs benchmarks\n"
    if existing_section(path, begin, end) is not None:
        start = current.find(begin)
        stop = current.find(end) + len(end)
        current = current[:start] + section.rstrip("\n") + current[stop:]
    else:
        current = current.rstrip("\n") + "\n\n" + section
    path.write_text(current)
