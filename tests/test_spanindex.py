"""The span index format (kitfs/layers/spanindex.py): what a reader accepts, and what it refuses.

A reader relies on every field of an index it accepts, so each way an index can lie (a digest that is
not the pinned one, spans that leave gaps or overlap, entries outside the tar or with unsafe names)
must be refused before the index is used.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os

import pytest

from kitfs.layers import spanindex
from kitfs.layers.spanindex import (
    IndexLocation,
    SpanIndexError,
    SpanWriter,
    location_of,
    parse_index,
    pin,
)
from kitfs.layers.tarindex import TarEntry

SPAN = 64 << 10


def _written(compression: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    out = io.BytesIO()
    writer = SpanWriter(out, compression, SPAN)
    writer.write(data)
    index = writer.finish([TarEntry("f", False, 0o644, len(data) - 1024, 512, 0)])
    annotations = pin(index, writer, inline_allowed=True)
    return out.getvalue(), annotations


def _index_bytes(blob: bytes, location: IndexLocation) -> bytes:
    if location.inline is not None:
        return location.inline
    return blob[location.offset : location.offset + location.size]


@pytest.mark.parametrize("compression", ["none", "gzip", "gzip-fastest", "zstd"])
def test_an_index_round_trips_and_its_spans_rebuild_the_stream(compression: str) -> None:
    data = os.urandom(200_000) + b"\0" * 300_000
    blob, annotations = _written(compression, data)
    location = location_of(annotations, len(blob))
    assert location is not None
    codec = spanindex.layer_compression(compression)
    index = parse_index(
        _index_bytes(blob, location), location, compression=codec, blob_size=len(blob)
    )
    rebuilt = b"".join(
        spanindex.decode_member(blob[s.blob_offset : s.blob_end], codec, s.size)
        for s in index.spans
    )
    assert rebuilt == data
    assert index.covering(0, 1) == range(0, 1)
    assert list(index.covering(SPAN - 1, 2)) == [0, 1]
    assert index.covering(len(data), 10) == range(0)


def _embedded(index: dict, blob_prefix: bytes) -> tuple[bytes, IndexLocation]:  # type: ignore[type-arg]
    body = json.dumps(index).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return body, IndexLocation(digest, len(blob_prefix), len(body))


def _base() -> tuple[dict, bytes]:  # type: ignore[type-arg]
    tar = os.urandom(2 * SPAN)
    spans = [
        [0, 0, SPAN, hashlib.sha256(tar[:SPAN]).hexdigest()],
        [SPAN, SPAN, SPAN, hashlib.sha256(tar[SPAN:]).hexdigest()],
    ]
    index = {
        "mediaType": spanindex.MEDIA_TYPE,
        "compression": "none",
        "spanSize": SPAN,
        "tarSize": 2 * SPAN,
        "spans": spans,
        "entries": [["model", 1, 0o755, 0, 512, 0], ["model/w", 0, 0o644, 1000, 1024, 0]],
    }
    return index, tar


def test_a_valid_hand_made_index_is_accepted() -> None:
    index, tar = _base()
    body, location = _embedded(index, tar)
    parsed = parse_index(body, location, compression="none", blob_size=len(tar) + len(body))
    assert [e.name for e in parsed.entries] == ["model", "model/w"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i["spans"][1].__setitem__(1, SPAN + 1), "does not follow"),
        (lambda i: i["spans"][1].__setitem__(0, SPAN - 1), "changes size"),
        (lambda i: i.__setitem__("tarSize", 3 * SPAN), "bad size|do not cover"),
        (lambda i: i["spans"].pop(), "bad size"),
        (lambda i: i["entries"].append(["../etc/passwd", 0, 0o644, 1, 0, 0]), "'\\.\\.'"),
        (lambda i: i["entries"].append(["/abs", 0, 0o644, 1, 0, 0]), "absolute"),
        (lambda i: i["entries"].append(["model/w", 0, 0o644, 1, 0, 0]), "twice"),
        (lambda i: i["entries"].append(["a//b", 0, 0o644, 1, 0, 0]), "unsafely"),
        (lambda i: i["entries"].append(["far", 0, 0o644, 10, 2 * SPAN, 0]), "outside"),
        (lambda i: i.__setitem__("compression", "gzip"), "for a 'gzip' layer"),
        (lambda i: i.__setitem__("mediaType", "text/plain"), "is not a"),
        (lambda i: i["spans"][0].__setitem__(3, "zz"), "malformed"),
        (lambda i: i["spans"][0].__setitem__(2, -1), "malformed"),
        (lambda i: i.__setitem__("spanSize", 1), "out of range"),
        (lambda i: i.pop("entries"), "malformed"),
    ],
)
def test_a_lying_index_is_refused(change: object, message: str) -> None:
    index, tar = _base()
    change(index)  # type: ignore[operator]
    body, location = _embedded(index, tar)
    with pytest.raises(SpanIndexError, match=message):
        parse_index(body, location, compression="none", blob_size=len(tar) + len(body))


def test_an_index_that_is_not_the_pinned_one_is_refused_before_it_is_parsed() -> None:
    index, tar = _base()
    body, location = _embedded(index, tar)
    with pytest.raises(SpanIndexError, match="not the pinned"):
        parse_index(body + b" ", location, compression="none", blob_size=len(tar) + len(body))


def test_a_compressed_index_member_that_inflates_past_the_bound_is_refused() -> None:
    bomb = spanindex.encode_member(b"\0" * (spanindex.MAX_INDEX_SIZE + 10), "gzip")
    location = IndexLocation("sha256:" + hashlib.sha256(bomb).hexdigest(), 0, len(bomb))
    with pytest.raises(SpanIndexError, match="inflates past"):
        parse_index(bomb, location, compression="gzip", blob_size=len(bomb))


@pytest.mark.parametrize(
    "annotations",
    [
        {},
        {spanindex.DIGEST_ANNOTATION: "md5:abc"},
        {spanindex.DIGEST_ANNOTATION: "sha256:" + "a" * 64},
        {spanindex.DIGEST_ANNOTATION: "sha256:" + "a" * 64, spanindex.OFFSET_ANNOTATION: "x"},
        {
            spanindex.DIGEST_ANNOTATION: "sha256:" + "a" * 64,
            spanindex.OFFSET_ANNOTATION: "900",
            spanindex.SIZE_ANNOTATION: "200",
        },
        {spanindex.DIGEST_ANNOTATION: "sha256:" + "a" * 64, spanindex.INLINE_ANNOTATION: "!!"},
    ],
)
def test_annotations_that_pin_no_index_mean_no_index(annotations: dict[str, str]) -> None:
    assert location_of(annotations, 1000) is None


def test_the_inline_form_decodes_from_base64() -> None:
    body = b'{"a":1}'
    annotations = spanindex.annotations_for(body, None)
    location = location_of(annotations, 10)
    assert location is not None and location.inline == body
    assert annotations[spanindex.INLINE_ANNOTATION] == base64.b64encode(body).decode()


def test_small_entries_never_straddle_a_span_and_large_ones_start_one() -> None:
    out = io.BytesIO()
    writer = SpanWriter(out, "none", SPAN)
    cuts = []
    for size in (1000, 40_000, 30_000, 200_000, 10):
        writer.entry_starts(size)
        cuts.append(writer.position)
        writer.write(b"x" * size)
    index = writer.finish([])
    starts = {s.offset for s in index.spans}
    assert cuts[2] in starts  # 40 KB + 30 KB would not fit in 64 KiB: cut before the third
    assert cuts[3] in starts  # a large entry starts a span
    assert all(s.size <= SPAN for s in index.spans)


def test_span_sizes_out_of_range_are_refused() -> None:
    with pytest.raises(SpanIndexError, match="span size"):
        SpanWriter(io.BytesIO(), "none", 1024)
