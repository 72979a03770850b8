"""The start-up benchmark (`bench/startup.py`): how long `kitfs` takes to be useful.

- the import of ``kitfs.cli`` (``python -X importtime``'s cumulative figure) and the wall time of
  ``kitfs version``, a verb that needs no network, FUSE or signing code;
- warm mounts: from launching ``kitfs mount REF MNT`` to the first successful read of
  ``MNT/Kitfile`` (the figure 1 measure), and to the command's return, for a ModelKit in local
  storage (made with ``kitfs pack``) and for the same ModelKit in a loopback docker-registry. Warm =
  the kitfs cache already holds the manifest and config (one mount before the timed ones).

Every figure is the median of ``--repeat`` runs. With ``--output`` the section is written into that
report between BEGIN and END (docs/benchmarks.md has it after figure 1; the main run keeps it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from mounts import KitfsMount  # noqa: E402
from registry import Registry  # noqa: E402
from tools import KITFS, REPO, fresh_dir, kitfs  # noqa: E402

BEGIN = "<!-- startup:begin -->"
END = "<!-- startup:end -->"
DEFAULT_WORKDIR = Path("/var/tmp/kitfs-bench-startup")
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
REF = "startup/tiny:v1"
_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| kitfs\.cli$", re.MULTILINE)


def import_seconds(cwd: Path) -> float:
    """Cumulative import time of ``kitfs.cli`` as ``python -X importtime`` reports it; run from
    ``cwd`` (not the repository, which ``-c`` would put first on the path)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import kitfs.cli"],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )
    match = _IMPORT_LINE.search(done.stderr)
    if match is None:
        raise RuntimeError("python -X importtime printed no line for kitfs.cli")
    return int(match.group(1)) / 1e6


def wall_seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def warm_mounts(
    home: Path, ref: str, work: Path, name: str, repeat: int
) -> tuple[list[float], list[float]]:
    """Seconds to a readable Kitfile and to the command's return, for ``repeat`` warm mounts."""
    readable, returned = [], []
    mount = KitfsMount(home, ref, fresh_dir(work / f"mnt-{name}"), work / f"cache-{name}", [])
    mount.cache.mkdir(parents=True, exist_ok=True)
    with mount:
        mount.start()  # fills the cache: the timed mounts are warm
        mount.stop()
        for _ in range(repeat):
            start = time.perf_counter()
            readable.append(mount.start())
            assert mount.process is not None
            mount.process.wait(60)
            returned.append(time.perf_counter() - start)
            mount.stop()
    return readable, returned


def build(work: Path) -> tuple[Path, Path]:
    """A kit home holding a small ModelKit packed by kitfs, and the directory it was packed from."""
    home = fresh_dir(work / "home")
    source = REPO / "examples" / "tiny-model"
    kitfs(home, "pack", str(source), "-t", REF)
    return home, source


def measure(work: Path, repeat: int) -> dict[str, float]:
    home, _ = build(work)
    figures: dict[str, float] = {}
    figures["import"] = statistics.median(import_seconds(work) for _ in range(repeat))
    figures["version"] = statistics.median(wall_seconds([KITFS, "version"]) for _ in range(repeat))
    figures["list"] = statistics.median(
        wall_seconds([KITFS, "--config", str(home), "list"]) for _ in range(repeat)
    )
    readable, returned = warm_mounts(home, REF, work, "local", repeat)
    figures["local readable"] = statistics.median(readable)
    figures["local returned"] = statistics.median(returned)
    registry = Registry(work / "registry")
    registry.start()
    try:
        remote = f"{registry.host}/{REF}"
        kitfs(home, "push", REF, remote, "--plain-http")
        readable, returned = warm_mounts(home, remote, work, "registry", repeat)
        figures["registry readable"] = statistics.median(readable)
        figures["registry returned"] = statistics.median(returned)
    finally:
        registry.stop()
    return figures


def section(figures: dict[str, float], repeat: int) -> str:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("`python -X importtime -c 'import kitfs.cli'` (cumulative)", figures["import"]),
        ("`kitfs version` (wall)", figures["version"]),
        ("`kitfs --config HOME list` (wall)", figures["list"]),
        (
            "local storage: `kitfs mount REF MNT` → `MNT/Kitfile` readable",
            figures["local readable"],
        ),
        ("local storage: `kitfs mount REF MNT` returns", figures["local returned"]),
        (
            "registry: `kitfs mount --plain-http HOST/REF MNT` → `MNT/Kitfile` readable",
            figures["registry readable"],
        ),
        ("registry: `kitfs mount --plain-http HOST/REF MNT` returns", figures["registry returned"]),
    ]
    lines = [
        BEGIN,
        "### Start-up",
        "",
        f"- Date: {date}; command: `.venv/bin/python bench/startup.py --repeat {repeat}`; "
        f"kitfs commit {commit}; {os.cpu_count()} CPUs shared with other work",
        "- Median of the runs; warm = the kitfs cache already holds the manifest and config; the "
        "ModelKit is examples/tiny-model packed by `kitfs pack` (local storage, `--config HOME`) and "
        "pushed to docker-registry on 127.0.0.1",
        "",
        "| step | seconds |",
        "|---|---|",
        *(f"| {name} | {report.seconds(value)} |" for name, value in rows),
        END,
    ]
    return "\n".join(lines) + "\n"


def existing_section(path: Path) -> str | None:
    """The start-up section of an existing report (kept when the main run rewrites the page)."""
    return report.existing_section(path, BEGIN, END)


def main(work: Path, repeat: int, output: Path | None) -> int:
    work.mkdir(parents=True, exist_ok=True)
    try:
        text = section(measure(work, repeat), repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    if output is not None:
        report.write_section(output, BEGIN, END, text)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--output", type=Path, default=None, help="write the section into this report")
    ns = p.parse_args()
    sys.exit(main(ns.workdir, ns.repeat, ns.output))
