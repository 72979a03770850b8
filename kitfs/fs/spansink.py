"""The receiving end of a run of spans: bytes land in one span-sized buffer, and each span is
verified and stored in the worker thread that received it, then reported to the event loop.

A run is one Range request over neighbouring spans of a layer (kitfs.fs.spanreader). The body is
received into this sink by a worker thread (kitfs.oci.handoff) or read from a local file
(kitfs.fs.source), so hashing, decompressing and writing a span happen beside the receiving, on
whichever core is free, and the event loop only learns "span 7 is here" (or "span 7 was wrong").
The buffer is reused from span to span: a span's bytes are copied once from the kernel into it,
then once into the cache's file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from kitfs.errors import DigestMismatchError
from kitfs.layers.spanindex import Span, SpanIndexError

log = logging.getLogger(__name__)

Store = Callable[[int, Span, memoryview], Path | None]
Report = Callable[[int, Path | None, str | None, bool], None]


class SpanRunSink:
    """A :class:`kitfs.oci.sink.Sink` for the spans at ``positions`` (neighbours, in order):
    ``store`` verifies and writes one (worker thread), ``report(position, temp, problem,
    mismatch)`` runs on the event loop for each span, in order, as soon as it is stored or refused
    (``mismatch``: its bytes were wrong; else the cache could not take them)."""

    def __init__(
        self,
        spans: Sequence[Span],
        positions: Sequence[int],
        store: Store,
        report: Report,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        self._spans = spans
        self._positions = positions
        self._store = store
        self._report = report
        self._token = token
        self._buffer = bytearray(max(span.blob_size for span in spans))
        self._held = 0
        self.done = 0  # spans received (stored or refused)

    def buffer(self) -> memoryview:
        if self.done >= len(self._spans):  # more than the run: the request's limit prevents it
            return memoryview(bytearray(1 << 16))
        return memoryview(self._buffer)[self._held : self._spans[self.done].blob_size]

    def filled(self, count: int) -> None:
        if self.done >= len(self._spans):
            return
        self._held += count
        span = self._spans[self.done]
        if self._held < span.blob_size:
            return
        position = self._positions[self.done]
        temp: Path | None = None
        problem: str | None = None
        mismatch = False
        try:
            temp = self._store(position, span, memoryview(self._buffer)[: span.blob_size])
        except (DigestMismatchError, SpanIndexError) as exc:
            problem, mismatch = str(exc), True
        except OSError as exc:
            problem = f"the cache cannot store span {position}: {exc.strerror or exc}"
        self.done += 1
        self._held = 0
        with contextlib.suppress(trio.RunFinishedError):  # the mount ended meanwhile
            self._token.run_sync_soon(self._report_safely, position, temp, problem, mismatch)

    def _report_safely(
        self, position: int, temp: Path | None, problem: str | None, mismatch: bool
    ) -> None:
        """Runs on the event loop, where an exception would end the whole run: a report that
        comes after its reader stopped (a receiving thread abandoned at unmount) is only logged."""
        try:
            self._report(position, temp, problem, mismatch)
        except Exception:
            log.exception("span %d arrived after its reader stopped", position)
