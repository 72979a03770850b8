"""The ``kit://`` fsspec file system against a real registry, run as ``nobody`` (a process that
cannot open /dev/fuse): pandas and pyarrow read only the spans they need, the listing is the
mount's, a corrupted span fails only its own reads, an unsigned ModelKit is refused under a
policy, and a span fetched by the file system is a cache hit for a mount."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pwd
import stat
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from faultproxy import Fault, FaultProxy, ProxyRequest, for_digest
from fs_mounting import Mounter, wait_for
from fsspec_kits import BIG_CSV, PARQUET, TRAIN_CSV, WHOLE_TAG, LayerSpans, Tables
from helpers import cli, ok
from nobody import Nobody
from registry import RegistryServer

pytestmark = pytest.mark.timeout(120)

CSV_ENTRY = "data/csv/train.csv"
BIG_ENTRY = "data/csv/big.csv"
PARQUET_ENTRY = "data/table.parquet"
FOOTER_READ = (
    64 << 10
)  # what pyarrow reads first from a Parquet file's end (kDefaultFooterReadSize)


def options(nobody: Nobody, **extra: Any) -> dict[str, Any]:
    """Storage options for the child: plain HTTP, its own empty kit home and a fresh cache."""
    fresh = uuid.uuid4().hex[:8]
    return {
        "plain_http": True,
        "config": str(nobody.workdir(f"home-{fresh}")),
        "cache_dir": str(nobody.workdir(f"cache-{fresh}")),
        **extra,
    }


def blob_gets(proxy: FaultProxy, layer: LayerSpans) -> list[tuple[int, int] | None]:
    """The layer's blob GETs at the registry: (first, last) of each Range, None for a whole GET."""
    out: list[tuple[int, int] | None] = []
    for request in proxy.matching("GET", layer.digest):
        header = request.headers.get("range", "")
        if not header:
            out.append(None)
            continue
        first, _, last = header.removeprefix("bytes=").partition("-")
        out.append((int(first), int(last)))
    return out


def fetched_spans(proxy: FaultProxy, layer: LayerSpans) -> list[int]:
    """The span positions the layer's Range GETs covered, in request order (repeats kept)."""
    spans: list[int] = []
    for got in blob_gets(proxy, layer):
        assert got is not None, f"layer {layer.digest} was fetched whole"
        spans.extend(sorted(layer.spans_in(*got)))
    return spans


def test_pandas_read_csv_fetches_only_the_spans_of_the_file(
    tables: Tables, nobody: Nobody, counting_proxy: FaultProxy
) -> None:
    url = f"kit://{tables.ref(counting_proxy.host)}/{TRAIN_CSV}"
    got = nobody.run(
        f"import pandas as pd\n"
        f"frame = pd.read_csv({url!r}, storage_options={options(nobody)!r})\n"
        f"report([len(frame), int(frame['value'].sum()), list(frame.columns)])\n"
    )
    expected = pd.read_csv(io.BytesIO(tables.files[TRAIN_CSV]))
    assert got == [len(expected), int(expected["value"].sum()), list(expected.columns)]
    layer = tables.layers["data/csv"]
    fetched = fetched_spans(counting_proxy, layer)
    own = layer.spans_of(CSV_ENTRY)
    entry = layer.entry(CSV_ENTRY)
    after = {i for i, s in enumerate(layer.index.spans) if s.offset >= entry.offset + entry.size}
    assert own <= set(fetched), "every span of the file was read"
    assert set(fetched) <= own | after, "a span of big.csv was fetched"
    assert len(fetched) == len(set(fetched)), "a span was fetched twice"
    assert len(layer.spans_of(BIG_ENTRY) - own) >= 5  # the neighbour it must not fetch


def test_pyarrow_reads_one_column_from_the_footer_and_its_pages(
    tables: Tables, nobody: Nobody, counting_proxy: FaultProxy
) -> None:
    url = f"kit://{tables.ref(counting_proxy.host)}/{PARQUET}"
    got = nobody.run(
        "import fsspec, hashlib, pyarrow.parquet as pq\n"
        f"fs = fsspec.filesystem('kit', **{options(nobody)!r})\n"
        f"table = pq.read_table({url!r}, columns=['b'], filesystem=fs)\n"
        "values = table.column('b').to_numpy().tobytes()\n"
        "report([table.num_rows, table.column_names, hashlib.sha256(values).hexdigest()])\n"
        "sys.stdout.flush()\n"
        "os._exit(0)  # pyarrow may abort at exit after fsspec reads (apache/arrow#39162)\n"
    )
    data = tables.files[PARQUET]
    expected = pq.read_table(io.BytesIO(data), columns=["b"])
    values = expected.column("b").to_numpy().tobytes()
    assert got == [expected.num_rows, ["b"], hashlib.sha256(values).hexdigest()]
    chunk = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(1)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    layer = tables.layers[PARQUET_ENTRY]
    column = layer.spans_of(PARQUET_ENTRY, start, start + chunk.total_compressed_size)
    footer = layer.spans_of(PARQUET_ENTRY, len(data) - FOOTER_READ, len(data))
    fetched = set(fetched_spans(counting_proxy, layer))
    assert column <= fetched
    assert fetched <= column | footer, "spans of other columns were fetched"
    whole = layer.spans_of(PARQUET_ENTRY)
    assert len(whole - fetched) >= 10, f"fetched {len(fetched)} of the file's {len(whole)} spans"


def _mount_listing(root: Path) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ["directory", 0, stat.S_IMODE(st.st_mode), ""]
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ["file", st.st_size, stat.S_IMODE(st.st_mode), digest]
    return out


LISTING = """\
import fsspec, hashlib
fs = fsspec.filesystem('kit', **{options!r})
root = {root!r}
found = fs.find('kit://' + root, withdirs=True, detail=True)
out = {{}}
for name, info in found.items():
    rel = name[len(root) + 1 :]
    if not rel:
        continue
    digest = '' if info['type'] == 'directory' else hashlib.sha256(fs.cat_file(name)).hexdigest()
    size = 0 if info['type'] == 'directory' else info['size']
    out[rel] = [info['type'], size, info['mode'], digest]
walked = sorted(p for p, _dirs, files in fs.walk('kit://' + root))
report([out, walked, sorted(fs.ls('kit://' + root, detail=False))])
"""


@pytest.mark.parametrize("layout", ["sections", "unpack"])
def test_listing_and_bytes_equal_the_mounts(
    tables: Tables, nobody: Nobody, mounter: Mounter, registry: RegistryServer, layout: str
) -> None:
    ref = tables.ref(registry.host)
    mountpoint = mounter.mount(ref, None, "--layout", layout)
    expected = _mount_listing(mountpoint)
    code = LISTING.format(options=options(nobody, layout=layout), root=ref)
    listing, walked, top = nobody.run(code)
    assert listing == expected
    assert top == sorted(f"{ref}/{name}" for name in os.listdir(mountpoint))
    dirs = {ref} | {f"{ref}/{p}" for p, v in expected.items() if v[0] == "directory"}
    assert sorted(walked) == sorted(dirs)


CORRUPT = """\
import fsspec
fs = fsspec.filesystem('kit', **{options!r})
out = {{}}
for attempt in ('first', 'again'):
    try:
        data = fs.cat_file({url!r}, {bad_start}, {bad_end})
        out[attempt] = ['read', data.hex()]
    except OSError as exc:
        out[attempt] = [type(exc).__name__, str(exc)]
out['same file, other span'] = fs.cat_file({url!r}, {good_start}, {good_end}).hex()
out['other file'] = fs.cat_file({big!r}, 0, 4096).hex()
with fs.open({url!r}) as handle:
    handle.seek({bad_start})
    try:
        handle.read(100)
        out['file object'] = 'read'
    except OSError as exc:
        out['file object'] = type(exc).__name__
report(out)
"""


def test_a_corrupted_span_fails_only_reads_of_that_span(
    tables: Tables, nobody: Nobody, counting_proxy: FaultProxy
) -> None:
    layer = tables.layers["data/csv"]
    entry = layer.entry(CSV_ENTRY)
    spans = sorted(layer.spans_of(CSV_ENTRY))
    bad = layer.span(spans[len(spans) // 2])
    good = layer.span(spans[1] if spans[1] != spans[len(spans) // 2] else spans[-1])
    digest_of_layer = for_digest(layer.digest)

    def corrupt_the_span(request: ProxyRequest) -> Fault | None:
        """Every Range answer holding the span gets one of the span's bytes flipped."""
        first, _, last = (
            request.headers.get("range", "bytes=0-").removeprefix("bytes=").partition("-")
        )
        end = int(last) if last else layer.slot.descriptor.size - 1
        if not digest_of_layer(request) or not int(first) <= bad.blob_offset + 100 <= end:
            return None
        return Fault(corrupt_at=bad.blob_offset + 100 - int(first))

    counting_proxy.add_rule(corrupt_the_span)
    host = tables.ref(counting_proxy.host)
    bad_start = max(bad.offset - entry.offset, 0) + 10
    good_start = max(good.offset - entry.offset, 0) + 10
    code = CORRUPT.format(
        options=options(nobody),
        url=f"kit://{host}/{TRAIN_CSV}",
        big=f"kit://{host}/{BIG_CSV}",
        bad_start=bad_start,
        bad_end=bad_start + 200,
        good_start=good_start,
        good_end=good_start + 200,
    )
    out = nobody.run(code)
    data = tables.files[TRAIN_CSV]
    for attempt in ("first", "again"):
        kind, message = out[attempt]
        assert kind == "OSError", out[attempt]
        assert layer.digest in message
    assert out["file object"] == "OSError"
    assert bytes.fromhex(out["same file, other span"]) == data[good_start : good_start + 200]
    assert bytes.fromhex(out["other file"]) == tables.files[BIG_CSV][:4096]
    assert counting_proxy.matching("GET", layer.digest), "the corrupted span was asked for"


def test_a_policy_refuses_an_unsigned_modelkit_before_any_layer(
    tables: Tables, nobody: Nobody, counting_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = nobody.workdir(f"keys-{uuid.uuid4().hex[:8]}")
    monkeypatch.chdir(keys)
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    ok(cli(keys / "home", "generate-key-pair"))
    (keys / "cosign.pub").chmod(0o644)
    url = f"kit://{tables.ref(counting_proxy.host)}/{TRAIN_CSV}"
    code = (
        "import fsspec, pandas as pd\n"
        "out = []\n"
        f"so = {options(nobody, verify_key=str(keys / 'cosign.pub'))!r}\n"
        "for attempt in (lambda: fsspec.open(" + repr(url) + ", **so).open().read(),\n"
        "                lambda: pd.read_csv(" + repr(url) + ", storage_options=so)):\n"
        "    try:\n"
        "        attempt()\n"
        "        out.append('read')\n"
        "    except PermissionError as exc:\n"
        "        out.append(str(exc))\n"
        "report(out)\n"
    )
    refusals = nobody.run(code)
    assert len(refusals) == 2 and all(r != "read" for r in refusals)
    assert all("signature" in r.lower() for r in refusals), refusals
    for layer in tables.layers.values():
        assert not counting_proxy.matching("GET", layer.digest)


def test_the_cache_is_shared_with_a_mount(
    tables: Tables, nobody: Nobody, counting_proxy: FaultProxy, mounter: Mounter
) -> None:
    so = options(nobody)
    cache = Path(so["cache_dir"])
    host = tables.ref(counting_proxy.host)
    code = (
        "import fsspec, hashlib\n"
        f"with fsspec.open('kit://{host}/{TRAIN_CSV}', **{so!r}) as handle:\n"
        "    report(hashlib.sha256(handle.read()).hexdigest())\n"
    )
    assert nobody.run(code) == hashlib.sha256(tables.files[TRAIN_CSV]).hexdigest()
    layer = tables.layers["data/csv"]
    before = len(blob_gets(counting_proxy, layer))
    assert before > 0
    mountpoint = mounter.mount(host, None, cache=cache)
    assert (mountpoint / TRAIN_CSV).read_bytes() == tables.files[TRAIN_CSV]
    assert len(blob_gets(counting_proxy, layer)) == before, "the mount fetched a span again"
    # And the other way round: what the mount fetched, the file system finds in the cache.
    assert (mountpoint / BIG_CSV).read_bytes() == tables.files[BIG_CSV]
    after_mount = len(blob_gets(counting_proxy, layer))
    # The cache is private to its user (0700, kitfs.storage.cache): in real use one user mounts and
    # reads. Here the mount runs as root (only root opens /dev/fuse) and the reader as nobody, so
    # what root wrote is handed back to nobody first; the bytes and names stay as the mount left them.
    # Spans get their names after a background fdatasync: wait for the last, then hand over.
    assert wait_for(lambda: not any((cache / "tmp").iterdir()), timeout=60)
    _chown_tree(cache, pwd.getpwnam("nobody"))
    code = (
        "import fsspec, hashlib\n"
        f"fs = fsspec.filesystem('kit', **{so!r})\n"
        f"report(hashlib.sha256(fs.cat_file('kit://{host}/{BIG_CSV}')).hexdigest())\n"
    )
    assert nobody.run(code) == hashlib.sha256(tables.files[BIG_CSV]).hexdigest()
    assert len(blob_gets(counting_proxy, layer)) == after_mount


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):  # a temp file renamed meanwhile
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


WHOLE_READ = """\
import fsspec
fs = fsspec.filesystem('kit', **{options!r})
try:
    report(['read', fs.cat_file({url!r}, 0, 100).hex()])
except OSError as exc:
    report([type(exc).__name__, str(exc)])
"""


def test_a_layer_without_a_span_index_is_verified_whole_before_a_byte_is_served(
    tables: Tables, nobody: Nobody, counting_proxy: FaultProxy
) -> None:
    digest, size = tables.whole_layers["data/csv"]
    url = f"kit://{tables.ref(counting_proxy.host, WHOLE_TAG)}/{TRAIN_CSV}"
    whole_get = for_digest(digest)
    # The last byte of the blob is damaged: the first 100 bytes of train.csv arrive intact, and
    # still must not be served.
    counting_proxy.add_rule(
        lambda r: Fault(corrupt_at=size - 1) if whole_get(r) and "range" not in r.headers else None
    )
    kind, message = nobody.run(WHOLE_READ.format(options=options(nobody), url=url))
    assert kind == "OSError" and digest in message
    counting_proxy.clear()
    gets_before = len(counting_proxy.matching("GET", digest))
    kind, data = nobody.run(WHOLE_READ.format(options=options(nobody), url=url))
    assert (kind, bytes.fromhex(data)) == ("read", tables.files[TRAIN_CSV][:100])
    fetched = counting_proxy.matching("GET", digest)[gets_before:]
    assert [r.headers.get("range") for r in fetched] == [None], "one whole GET of the layer"


def test_storage_options_are_checked(nobody: Nobody) -> None:
    code = (
        "import fsspec\n"
        "out = []\n"
        "for so in ({'verfiy_key': 'x'}, {'layout': 'flat'}, {'cache_size': 'lots'}):\n"
        "    try:\n"
        "        fsspec.filesystem('kit', skip_instance_cache=True, **so)\n"
        "        out.append('accepted')\n"
        "    except ValueError as exc:\n"
        "        out.append(str(exc))\n"
        "report(out)\n"
    )
    out = nobody.run(code)
    assert "unknown kit storage option 'verfiy_key'" in out[0]
    assert "unknown layout 'flat'" in out[1]
    assert "invalid size 'lots'" in out[2]
