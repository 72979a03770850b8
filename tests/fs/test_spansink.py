"""The receiving end of a run of spans (kitfs.fs.spansink), fed from worker threads as the data
plane feeds it: each span is stored in the feeding thread and reported on the event loop, in
order; bytes split anywhere arrive whole; a report that fails is logged, never the end of the run."""

from __future__ import annotations

import hashlib
import logging
import mmap
from pathlib import Path

import pytest
import trio

from kitfs.errors import DigestMismatchError
from kitfs.fs.spansink import SpanRunSink
from kitfs.layers.spanindex import Span
from kitfs.oci.sink import feed

SIZES = (1000, 4096, 3)


def _spans(data: list[bytes]) -> list[Span]:
    spans, at = [], 0
    for piece in data:
        digest = "sha256:" + hashlib.sha256(piece).hexdigest()
        spans.append(Span(at, len(piece), at, len(piece), digest))
        at += len(piece)
    return spans


def _run(
    pieces: list[bytes], body: bytes, chunk: int, report_raises: bool = False
) -> list[tuple[int, bytes | None, str | None]]:
    spans = _spans(pieces)
    stored: dict[int, bytes] = {}
    reports: list[tuple[int, bytes | None, str | None]] = []

    def store(
        position: int, span: Span, buffer: mmap.mmap, data: memoryview
    ) -> tuple[Path | None, mmap.mmap | None]:
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != span.digest:
            raise DigestMismatchError(span.digest, actual, f"span {position}")
        stored[position] = bytes(data)  # the buffer is reused for the next span
        return None, None

    def report(
        position: int,
        temp: Path | None,
        plain: mmap.mmap | None,
        problem: str | None,
        mismatch: bool,
    ) -> None:
        reports.append((position, stored.get(position), problem))
        if report_raises:
            raise RuntimeError("the reader is gone")

    async def main() -> None:
        sink = SpanRunSink(spans, [10, 11, 12], store, report, trio.lowlevel.current_trio_token())

        def feed_in_pieces() -> None:
            for start in range(0, len(body), chunk):
                feed(sink, body[start : start + chunk])

        await trio.to_thread.run_sync(feed_in_pieces)
        assert sink.done == len(spans)
        await trio.sleep(0)  # the reports queued by the thread run before this task goes on

    trio.run(main)
    return reports


@pytest.mark.parametrize("chunk", [1, 7, 999, 1000, 1001, 10_000])
def test_spans_split_anywhere_arrive_whole_and_in_order(chunk: int) -> None:
    pieces = [bytes([i]) * size for i, size in enumerate(SIZES)]
    reports = _run(pieces, b"".join(pieces), chunk)
    assert reports == [(10 + i, piece, None) for i, piece in enumerate(pieces)]


def test_a_wrong_span_is_reported_and_the_next_ones_still_arrive() -> None:
    pieces = [bytes([i]) * size for i, size in enumerate(SIZES)]
    body = bytearray(b"".join(pieces))
    body[SIZES[0] + 10] ^= 0xFF  # inside the second span
    reports = _run(pieces, bytes(body), 512)
    assert [(p, d) for p, d, _ in reports] == [(10, pieces[0]), (11, None), (12, pieces[2])]
    assert reports[1][2] is not None and "span 11" in reports[1][2]


def test_a_report_that_raises_is_logged_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pieces = [bytes([i]) * size for i, size in enumerate(SIZES)]
    with caplog.at_level(logging.ERROR, logger="kitfs.fs.spansink"):
        reports = _run(pieces, b"".join(pieces), 4096, report_raises=True)
    assert [p for p, _, _ in reports] == [10, 11, 12]
    assert caplog.text.count("arrived after its reader stopped") == 3
