"""The benchmark's ModelKit context directory: generated once per set of sizes, reused after that.

Layout (Kitfile paths):

- ``model/weights.bin``: the model, incompressible random bytes (``--model-mib``).
- ``model/embeddings.bin``: a model part that compresses about 4:1 (``--compressible-mib``).
- ``data/small``: dataset ``small-files``, tiny CSV files in 20 folders (``--small-files``).
- ``data/big.csv``: dataset ``big``, hex text that compresses about 2:1 (``--big-dataset-mib``).
- ``data/mid.csv``: dataset ``mid``, the same kind of text (``--mid-dataset-mib``).
- ``src``: code, a few Python files; ``docs``: a README and a model card.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

MIB = 1024 * 1024
CHUNK = 16 * MIB
SMALL_FILE_FOLDERS = 20

KITFILE = """\
manifestVersion: 1.0.0
package:
  name: kitfs-bench
  version: 1.0.0
  description: Generated ModelKit for the kitfs benchmark
  license: Apache-2.0
  authors: [kitfs bench]
model:
  name: bench-model
  path: model/weights.bin
  framework: none
  format: raw
  description: Incompressible random weights
  parts:
    - name: embeddings
      path: model/embeddings.bin
      type: raw
datasets:
  - name: small-files
    path: data/small
    description: Many tiny CSV files
  - name: big
    path: data/big.csv
    description: One large CSV file
  - name: mid
    path: data/mid.csv
    description: One mid-sized CSV file
code:
  - path: src
    description: Training and serving code
docs:
  - path: docs
    description: README and model card
"""


@dataclass(frozen=True)
class Sizes:
    """Workload sizes in MiB (files) and count (small files)."""

    model_mib: int
    compressible_mib: int
    big_dataset_mib: int
    mid_dataset_mib: int
    small_files: int


@dataclass(frozen=True)
class Workload:
    """Where the generated context lives and the paths the figures read."""

    context: Path
    sizes: Sizes
    model_path: str = "model/weights.bin"
    mid_path: str = "data/mid.csv"
    big_path: str = "data/big.csv"
    small_dir: str = "data/small"
    mid_name: str = "mid"
    big_name: str = "big"
    small_name: str = "small-files"

    def local(self, rel: str) -> Path:
        return self.context / rel


def ensure_workload(root: Path, sizes: Sizes) -> Workload:
    """The context directory under ``root`` for ``sizes``; generated only if missing or stale."""
    context = root / "context"
    stamp = root / "workload.json"
    wanted = json.dumps(asdict(sizes), sort_keys=True)
    if stamp.is_file() and stamp.read_text() == wanted and (context / "Kitfile").is_file():
        return Workload(context, sizes)
    if context.exists():
        shutil.rmtree(context)
    stamp.unlink(missing_ok=True)
    _generate(context, sizes)
    stamp.write_text(wanted)
    return Workload(context, sizes)


def _generate(context: Path, sizes: Sizes) -> None:
    (context / "model").mkdir(parents=True)
    (context / "data").mkdir()
    (context / "Kitfile").write_text(KITFILE)
    _write_random(context / "model/weights.bin", sizes.model_mib * MIB)
    _write_compressible(context / "model/embeddings.bin", sizes.compressible_mib * MIB)
    _write_csv_text(context / "data/big.csv", sizes.big_dataset_mib * MIB)
    _write_csv_text(context / "data/mid.csv", sizes.mid_dataset_mib * MIB)
    _write_small_files(context / "data/small", sizes.small_files)
    _write_code_and_docs(context)


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            out.write(os.urandom(n))
            left -= n


def _write_compressible(path: Path, size: int) -> None:
    """Pages of 1 KiB random bytes followed by 3 KiB of zeros: gzip and zstd shrink it about 4:1."""
    page = 4096
    with path.open("wb") as out:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            pages = -(-n // page)
            noise = os.urandom(pages * 1024)
            block = b"".join(
                noise[i * 1024 : (i + 1) * 1024] + bytes(page - 1024) for i in range(pages)
            )
            out.write(block[:n])
            left -= n


def _write_csv_text(path: Path, size: int) -> None:
    """Lines of hex digits separated by commas: text a CSV reader accepts, compressing about 2:1."""
    with path.open("wb") as out:
        out.write(b"id,a,b,c,d\n")
        left = size - 11
        while left > 0:
            n = min(CHUNK, left)
            text = bytearray(os.urandom(n // 2 + 1).hex().encode()[:n])
            text[63::64] = b"\n" * len(range(63, n, 64))
            text[15::64] = b"," * len(range(15, n, 64))
            out.write(text)
            left -= n


def _write_small_files(folder: Path, count: int) -> None:
    for i in range(count):
        sub = folder / f"part-{i % SMALL_FILE_FOLDERS:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{i},{j},{(i * 31 + j * 17) % 997}\n" for j in range(8))
        (sub / f"sample-{i:05d}.csv").write_text("id,row,value\n" + rows)


def _write_code_and_docs(context: Path) -> None:
    src = context / "src"
    src.mkdir()
    (src / "train.py").write_text('"""Train the bench model."""\n\nprint("training")\n')
    (src / "serve.py").write_text('"""Serve the bench model."""\n\nprint("serving")\n')
    (src / "requirements.txt").write_text("numpy\n")
    docs = context / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("# kitfs bench\n\nA generated ModelKit.\n")
    (docs / "MODEL_CARD.md").write_text("# Model card\n\nRandom weights; not a real model.\n")
