"""ModelKits for the mount tests, made with the real ``kitfs pack`` and compared with ``kitfs unpack``.

``write_context`` lays out a context directory whose Kitfile paths intersect in every way kit allows:
code at ``.`` around everything, model parts inside the model directory, datasets sharing a parent
directory, a nested dataset directory, docs as a file and a directory, modes other than 0644/0755.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

from kitfs.cli import main as kitfs_main

KITFILE = """\
manifestVersion: 1.0.0
package:
  name: film-slm
  version: 1.0.0
  authors: [Ada, Grace]
model:
  name: film
  path: models
  framework: pytorch
  parts:
    - name: config
      path: models/config.json
    - name: tokenizer
      path: models/tokenizer
code:
  - path: .
    description: everything else
datasets:
  - name: train
    path: data/train.csv
  - name: test
    path: data/test.csv
  - name: extra
    path: data/extra
docs:
  - path: README.md
  - path: docs
"""


def _random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_context(root: Path, *, big: int = 300_000, seed: int = 1) -> Path:
    """A context directory with the Kitfile above; ``big`` sizes the model's weights file."""
    files: dict[str, bytes] = {
        "Kitfile": KITFILE.encode(),
        "README.md": b"# film-slm\n",
        "docs/guide.md": b"how to use it\n" * 50,
        "docs/img/diagram.txt": b"+--+\n|  |\n+--+\n",
        "models/weights.bin": _random_bytes(big, seed),
        "models/config.json": b'{"layers": 2}\n',
        "models/tokenizer/vocab.txt": b"a\nb\nc\n" * 100,
        "models/tokenizer/merges.txt": b"a b\n",
        "data/train.csv": b"x,y\n" + b"1,2\n" * 2000,
        "data/test.csv": b"x,y\n3,4\n",
        "data/extra/more.csv": b"x,y\n5,6\n",
        "data/extra/deep/most.csv": b"x,y\n7,8\n",
        "src/train.py": b"print('train')\n",
        "src/util/helpers.py": b"def helper():\n    return 1\n",
        "notes.txt": b"",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "src" / "train.py").chmod(0o755)
    (root / "src" / "util").chmod(0o750)
    (root / "notes.txt").chmod(0o600)
    return root


def kitfs(home: Path, *args: str) -> None:
    """Run a kitfs verb in this process (the same code as the command line)."""
    code = kitfs_main(["--config", str(home), "--progress", "none", *args])
    assert code == 0, f"kitfs {' '.join(args)} failed with {code}"


@dataclass(frozen=True)
class Snapshot:
    """A directory tree as (type, permission bits, size, sha256) by relative path."""

    entries: dict[str, tuple[str, int, int, str]]

    def __sub__(self, other: Snapshot) -> set[str]:
        return set(self.entries) - set(other.entries)


def snapshot(root: Path, *, skip: tuple[str, ...] = ()) -> Snapshot:
    """Walk ``root`` (through the mount, or an unpacked directory) and record every entry."""
    entries: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel in skip:
                continue
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", stat.S_IMODE(st.st_mode), 0, "")
            else:
                assert stat.S_ISREG(st.st_mode), rel
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entries[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, digest)
    return Snapshot(entries)


SECTION_FILTERS = {"model": "model", "datasets": "datasets", "code": "code", "docs": "docs"}


def unpack_sections(home: Path, ref: str, out: Path) -> dict[str, Path]:
    """``kitfs unpack --filter=SECTION`` of each section, as the sections layout should show it."""
    result = {}
    for section, filter_name in SECTION_FILTERS.items():
        target = out / section
        kitfs(home, "unpack", ref, "-d", str(target), f"--filter={filter_name}")
        result[section] = target
    return result
