"""The kit:// file system against ``kit unpack --filter``: cold reads of one dataset file.

Packs a ModelKit (a model file, a CSV dataset and a Parquet dataset of several int64 columns) with
kitfs (4 MiB spans, uncompressed), pushes it to a docker-registry on 127.0.0.1, and times, each in a
fresh process with an empty cache and kit home and the page cache dropped (as root):

- ``pandas.read_csv("kit://...")`` of the CSV, against ``kit unpack --filter datasets:csv`` and
  ``pandas.read_csv`` of the unpacked file;
- ``pyarrow.parquet.read_table("kit://...", columns=[one])``, against ``kit unpack --filter
  datasets:table`` and ``read_table`` of the unpacked file.

Bytes fetched come from the registry's access log. Run: ``bench/run.py --fsspec [--csv-mib N
--parquet-mib N --model-mib N --repeat N --workdir DIR]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry import Registry  # noqa: E402
from tools import KIT, drop_page_cache, fresh_dir, kitfs  # noqa: E402

ROWS_PER_GROUP = 1 << 20
COLUMNS = ("a", "b", "c", "d", "e", "f", "g", "h")
KITFILE = """\
manifestVersion: 1.0.0
package:
  name: fsspec-bench
model:
  name: weights
  path: model.bin
datasets:
  - name: csv
    path: data/events.csv
  - name: table
    path: data/table.parquet
"""
READ_CSV = """\
import json, sys, time
start = time.perf_counter()
import pandas as pd
frame = pd.read_csv(sys.argv[1], storage_options=json.loads(sys.argv[2]) or None)
print(json.dumps([time.perf_counter() - start, len(frame)]))
"""
READ_TABLE = """\
import json, sys, time
start = time.perf_counter()
import pyarrow.parquet as pq
options = json.loads(sys.argv[2])
filesystem = None
if options:
    import fsspec
    filesystem = fsspec.filesystem("kit", **options)
table = pq.read_table(sys.argv[1], columns=["b"], filesystem=filesystem)
print(json.dumps([time.perf_counter() - start, table.num_rows]), flush=True)
# pyarrow may abort at interpreter exit after reading through an fsspec file system
# ("terminate called without an active exception", apache/arrow#39162): leave without it.
import os
os._exit(0)
"""


def write_context(root: Path, csv_mib: int, parquet_mib: int, model_mib: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    (root / "Kitfile").write_text(KITFILE)
    with (root / "model.bin").open("wb") as out:
        for _ in range(model_mib):
            out.write(os.urandom(1 << 20))
    rng = np.random.default_rng(1)
    with (root / "data" / "events.csv").open("w") as out:
        out.write("id,value,score,label\n")
        written, row = 0, 0
        while written < csv_mib << 20:
            ids = np.arange(row, row + 100_000)
            block = "\n".join(
                f"{i},{v},{s:.6f},{'xyz'[i % 3]}"
                for i, v, s in zip(
                    ids, rng.integers(0, 10**9, 100_000), rng.random(100_000), strict=True
                )
            )
            out.write(block + "\n")
            written += len(block) + 1
            row += 100_000
    rows = (parquet_mib << 20) // (8 * len(COLUMNS))
    table = pa.table({c: rng.integers(0, 2**62, rows) for c in COLUMNS})
    pq.write_table(
        table, root / "data" / "table.parquet", compression="none", row_group_size=ROWS_PER_GROUP
    )


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start, done.stdout


def fsspec_read(script: str, url: str, work: Path) -> tuple[float, float]:
    """A cold read through kit://: (whole process seconds, seconds inside it from import on)."""
    options = {
        "plain_http": True,
        "cache_dir": str(fresh_dir(work / "cache")),
        "config": str(fresh_dir(work / "home")),
    }
    drop_page_cache()
    seconds, out = timed([sys.executable, "-c", script, url, json.dumps(options)])
    return seconds, float(json.loads(out)[0])


def kit_then_read(script: str, ref: str, name: str, rel: str, work: Path) -> tuple[float, float]:
    """``kit unpack --filter datasets:NAME`` then the same read of the local file:
    (unpack seconds, read process seconds)."""
    target = fresh_dir(work / "unpacked")
    home = fresh_dir(work / "kit-home")
    drop_page_cache()
    unpack, _ = timed(
        [KIT, "unpack", ref, "-d", str(target), "--filter", f"datasets:{name}", "--plain-http"],
        env={"KITOPS_HOME": str(home)},
    )
    read, _ = timed([sys.executable, "-c", script, str(target / rel), "{}"])
    return unpack, read


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="bench/run.py --fsspec", description="kit:// against kit unpack"
    )
    p.add_argument("--csv-mib", type=int, default=200)
    p.add_argument("--parquet-mib", type=int, default=256)
    p.add_argument("--model-mib", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/kitfs-bench-fsspec"))
    args = p.parse_args(argv)
    work = fresh_dir(args.workdir)
    registry = Registry(work / "registry")
    registry.start()
    try:
        write_context(work / "context", args.csv_mib, args.parquet_mib, args.model_mib)
        ref = f"{registry.host}/bench/fsspec-{uuid.uuid4().hex[:8]}:v1"
        kitfs(work / "pack-home", "pack", str(work / "context"), "-t", ref)
        kitfs(work / "pack-home", "push", ref, "--plain-http")
        rows = []
        cases = (
            ("read_csv", READ_CSV, "csv", "data/events.csv"),
            ("read_table, 1 of 8 columns", READ_TABLE, "table", "data/table.parquet"),
        )
        for label, script, name, rel in cases:
            url = f"kit://{ref}/datasets/{rel}"
            ours, theirs, ours_bytes, theirs_bytes = [], [], 0, 0
            for _ in range(args.repeat):
                mark = registry.mark()
                ours.append(fsspec_read(script, url, work))
                ours_bytes = registry.fetched_since(mark).blob_bytes
                mark = registry.mark()
                theirs.append(kit_then_read(script, ref, name, rel, work))
                theirs_bytes = registry.fetched_since(mark).blob_bytes
            rows.append(
                f"| {label} | {statistics.median(t for t, _ in ours):.2f} s "
                f"({statistics.median(r for _, r in ours):.2f} s in the reader) | "
                f"{ours_bytes / 2**20:.1f} MiB | "
                f"{statistics.median(u + r for u, r in theirs):.2f} s "
                f"(unpack {statistics.median(u for u, _ in theirs):.2f} s + read "
                f"{statistics.median(r for _, r in theirs):.2f} s) | "
                f"{theirs_bytes / 2**20:.1f} MiB |"
            )
        sizes = {
            rel: (work / "context" / rel).stat().st_size
            for rel in ("data/events.csv", "data/table.parquet", "model.bin")
        }
        print(
            "sizes: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in sizes.items()),
            f"runs: {args.repeat} (medians)",
            "",
            "| cold read | kit:// (fsspec) | fetched | kit unpack --filter, then read | fetched |",
            "|---|---|---|---|---|",
            *rows,
            sep="\n",
        )
    finally:
        registry.stop()
        shutil.rmtree(work / "cache", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
