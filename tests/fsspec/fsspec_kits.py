"""A ModelKit for the fsspec tests: CSV and Parquet datasets in span layers with small spans, made
with the real ``kitfs pack`` and pushed to the test registry, plus where each file's spans are."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from helpers import cli, ok

from kitfs.fs.tree import LayerSlot, layer_slots
from kitfs.layers.spanindex import Span, SpanIndex, location_of, parse_index
from kitfs.layers.tarindex import TarEntry
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

SPAN_SIZE = 64 << 10
PARQUET_COLUMNS = ("a", "b", "c", "d")
PARQUET_ROWS = 40_000  # 8-byte values: 320 KB per column, five spans each
KITFILE = """\
manifestVersion: 1.0.0
package:
  name: tables
model:
  name: tiny
  path: model/weights.bin
datasets:
  - name: csv
    path: data/csv
  - name: table
    path: data/table.parquet
docs:
  - path: README.md
"""
# Inside the csv layer, big.csv comes first and train.csv last: reading train.csv must not fetch
# big.csv's spans.
TRAIN_CSV = "datasets/data/csv/train.csv"
BIG_CSV = "datasets/data/csv/big.csv"
PARQUET = "datasets/data/table.parquet"


WHOLE_TAG = "whole"  # the same files packed without span indexes


@dataclass(frozen=True)
class Tables:
    """The tables ModelKit: its repository and tag, the kit home it was packed in, the files'
    bytes by mount path, and its span layers by Kitfile path."""

    home: Path
    repository: str
    tag: str
    files: dict[str, bytes]
    layers: dict[str, LayerSpans]
    whole_layers: dict[str, tuple[str, int]]  # the same files under WHOLE_TAG, no span index

    def ref(self, host: str, tag: str | None = None) -> str:
        return f"{host}/{self.repository}:{tag or self.tag}"


def _csv(rows: int, seed: int) -> bytes:
    rng = random.Random(seed)
    lines = ["id,value,label"] + [
        f"{i},{rng.randrange(10**9)},{rng.choice('xyz')}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def write_context(root: Path) -> dict[str, bytes]:
    """The context directory; returns the bytes of each file by its path in the mount."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "model").mkdir(parents=True)
    (root / "data" / "csv").mkdir(parents=True)
    (root / "Kitfile").write_text(KITFILE)
    (root / "README.md").write_text("# tables\n")
    (root / "model" / "weights.bin").write_bytes(random.Random(3).randbytes(100_000))
    (root / "data" / "csv" / "big.csv").write_bytes(_csv(30_000, 1))
    (root / "data" / "csv" / "train.csv").write_bytes(_csv(20_000, 2))
    rng = np.random.default_rng(4)
    table = pa.table({name: rng.integers(0, 2**62, PARQUET_ROWS) for name in PARQUET_COLUMNS})
    pq.write_table(
        table,
        root / "data" / "table.parquet",
        compression="none",
        use_dictionary=False,
        row_group_size=PARQUET_ROWS,
    )
    return {
        TRAIN_CSV: (root / "data" / "csv" / "train.csv").read_bytes(),
        BIG_CSV: (root / "data" / "csv" / "big.csv").read_bytes(),
        PARQUET: (root / "data" / "table.parquet").read_bytes(),
    }


@dataclass(frozen=True)
class LayerSpans:
    """A layer's digest, span index and entries, for mapping Range requests to spans."""

    slot: LayerSlot
    index: SpanIndex

    @property
    def digest(self) -> str:
        return self.slot.digest

    def entry(self, name: str) -> TarEntry:
        return next(e for e in self.index.entries if e.name == name)

    def spans_of(self, name: str, start: int = 0, end: int | None = None) -> set[int]:
        """Positions of the spans holding bytes [start, end) of the entry, and its header's."""
        entry = self.entry(name)
        stop = entry.size if end is None else end
        held = set(self.index.covering(entry.offset + start, stop - start))
        return held | set(self.index.covering(entry.offset - 512, 512))

    def span_at(self, blob_offset: int) -> int:
        return next(i for i, s in enumerate(self.index.spans) if s.blob_offset == blob_offset)

    def spans_in(self, first: int, last: int) -> set[int]:
        """Positions of the spans a Range request for blob bytes [first, last] covers."""
        return {
            i
            for i, s in enumerate(self.index.spans)
            if s.blob_offset <= last and s.blob_end > first
        }

    def span(self, position: int) -> Span:
        return self.index.spans[position]


def published_layers(home: Path, reference: str) -> dict[str, LayerSpans]:
    """The span layers of a ModelKit in ``home``'s local storage, by their Kitfile path."""
    store = LocalStore(home / "storage")
    _repo, desc = store.resolve(parse(reference))
    manifest = store.load_manifest(desc)
    kitfile = store.load_kitfile(manifest)
    out = {}
    for slot in layer_slots(manifest, kitfile):
        location = location_of(slot.descriptor.annotations, slot.descriptor.size)
        assert location is not None and location.inline is not None, slot.label
        index = parse_index(
            location.inline, location, compression=slot.compression, blob_size=slot.descriptor.size
        )
        out[slot.root] = LayerSpans(slot, index)
    return out


def pack_and_push(home: Path, context: Path, reference: str, *flags: str) -> None:
    """Pack with small spans (or ``flags``, such as ``--no-span-index``) and push."""
    ok(
        cli(
            home, "pack", str(context), "-t", reference, *(flags or ("--span-size", str(SPAN_SIZE)))
        )
    )
    ok(cli(home, "push", reference, "--plain-http"))


def layer_digests(home: Path, reference: str) -> dict[str, tuple[str, int]]:
    """Each layer's (digest, size) by its Kitfile path."""
    store = LocalStore(home / "storage")
    _repo, desc = store.resolve(parse(reference))
    manifest = store.load_manifest(desc)
    kitfile = store.load_kitfile(manifest)
    return {s.root: (s.digest, s.descriptor.size) for s in layer_slots(manifest, kitfile)}
