"""Seal a layer: one pass over its tar file that verifies every file and indexes the layer.

The pass follows the downloads (it reads what they have written, while it is in the page cache)
rather than waiting for the whole layer, so verifying and indexing overlap the transfer.

Each file's bytes are checked against what the Hub published for it: the sha256 of an LFS file,
the git blob sha1 (``sha1("blob <size>\\0" + bytes)``) of any other. In the same pass the tar
goes through the span writer ``kitfs pack`` uses (kitfs.layers.spanindex), with a cut before every
entry exactly where pack would cut, so the layer, its digest and its span index are the ones pack
writes for the same files. Nothing of a layer reaches local storage unless every file in it passed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kitfs.hub.errors import VerificationError
from kitfs.hub.plan import END_OF_ARCHIVE, LayerPlan, Member
from kitfs.hub.scratch import Restarted, Scratch, file_key
from kitfs.layers.ignore import clean
from kitfs.layers.spanindex import DEFAULT_SPAN_SIZE, SpanWriter, pin
from kitfs.layers.tarindex import TarEntry, clean_entry_name
from kitfs.oci import media

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class SealedLayer:
    """A verified layer file: its blob digest and size, diffId and descriptor annotations."""

    layer: LayerPlan
    digest: str
    size: int
    diff_id: str
    annotations: dict[str, str]


class _Appender:
    """The span writer's output: the tar is already in the file, so writes are dropped until the
    index itself is appended (an index too large to travel in the manifest)."""

    def __init__(self, fd: int, at: int) -> None:
        self.fd = fd
        self.at = at
        self.armed = False

    def write(self, data: bytes) -> int:
        if self.armed:
            os.pwrite(self.fd, data, self.at)
            self.at += len(data)
        return len(data)

    def flush(self) -> None:
        return None


def seal(
    scratch: Scratch,
    layer: LayerPlan,
    stop: threading.Event,
    span_size: int | None = DEFAULT_SPAN_SIZE,
    on_mismatch: Callable[[str], None] | None = None,
) -> SealedLayer:
    """Verify and index ``layer``, following its downloads: each file's bytes are read as soon
    as they are on disk (still in the page cache), so sealing overlaps the transfer. A file that
    starts again from its first byte starts the layer again. ``on_mismatch`` hears the key of a
    file that failed its digest, so that its bytes are fetched again next time."""
    started = time.monotonic()
    while True:
        try:
            sealed = _seal_once(scratch, layer, stop, span_size, on_mismatch)
            break
        except Restarted as restarted:
            log.info("layer %d: %s started again; sealing it again", layer.number, restarted)
    log.info(
        "sealed layer %d (%s, %d bytes) in %.2fs",
        layer.number, layer.base, layer.tar_size, time.monotonic() - started,
    )  # fmt: skip
    return sealed


def _seal_once(
    scratch: Scratch,
    layer: LayerPlan,
    stop: threading.Event,
    span_size: int | None,
    on_mismatch: Callable[[str], None] | None,
) -> SealedLayer:
    fd = os.open(scratch.layer_path(layer), os.O_RDWR | os.O_CLOEXEC)
    try:
        sink = _Appender(fd, layer.tar_size)
        spans = SpanWriter(sink, "none", span_size or DEFAULT_SPAN_SIZE)  # type: ignore[arg-type]
        entries: list[TarEntry] = []
        for member in layer.members:
            spans.entry_starts(member.total)
            entries.append(
                TarEntry(clean_entry_name(member.name), member.is_dir, member.mode, member.size,
                         member.data_offset, 0)
            )  # fmt: skip
            try:
                _feed_member(fd, member, spans, _Source(scratch, file_key(layer, member), stop))
            except VerificationError:
                if on_mismatch is not None:
                    on_mismatch(file_key(layer, member))
                raise
        spans.write(bytes(END_OF_ARCHIVE))
        index = spans.finish(entries)
        sink.armed = True
        annotations = {media.MODELPACK_FILEPATH_ANNOTATION: clean(layer.entry.path)}
        if span_size is not None:
            annotations.update(pin(index, spans, inline_allowed=True))
        os.ftruncate(fd, sink.at)
        os.fsync(fd)
    finally:
        os.close(fd)
    return SealedLayer(layer, spans.blob_digest, spans.blob_size, spans.diff_id, annotations)


class _Source:
    """Where a file's bytes stand: how many are on disk, waiting for more while it downloads."""

    def __init__(self, scratch: Scratch, key: str, stop: threading.Event) -> None:
        self.scratch = scratch
        self.key = key
        self.stop = stop
        self.generation = scratch.generation(key)

    def available(self, beyond: int) -> int:
        return self.scratch.wait_for(self.key, beyond, self.generation, self.stop)


def _feed_member(fd: int, member: Member, spans: SpanWriter, source: _Source) -> None:
    spans.write(member.header)
    if member.is_dir:
        return
    checker = _Checker(member)
    done = 0
    while done < member.size:
        ready = min(source.available(done), member.size)
        while done < ready:
            data = os.pread(fd, min(CHUNK, ready - done), member.data_offset + done)
            if not data:
                raise VerificationError(f"{member.name}: the layer file ends early")
            checker.update(data)
            spans.write(data)
            done += len(data)
    checker.check()
    spans.write(bytes(-member.size % 512))


class _Checker:
    """The digest a file must have: its LFS sha256, or its git blob sha1."""

    def __init__(self, member: Member) -> None:
        self.member = member
        repo_file = member.file
        self.lfs = repo_file is not None and repo_file.sha256 is not None
        if self.lfs:
            self.hasher = hashlib.sha256()
        else:
            self.hasher = hashlib.sha1(usedforsecurity=False)
            self.hasher.update(b"blob %d\0" % member.size)

    def update(self, data: bytes) -> None:
        self.hasher.update(data)

    def check(self) -> None:
        repo_file = self.member.file
        if repo_file is None:
            return
        actual = self.hasher.hexdigest()
        expected = repo_file.sha256 if self.lfs else repo_file.oid
        if actual != expected:
            what = "sha256" if self.lfs else "git blob sha1"
            raise VerificationError(
                f"{repo_file.path} does not match the {what} the Hub API publishes for it "
                f"(expected {expected}, got {actual}); nothing was stored"
            )
