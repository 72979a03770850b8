"""``kitfs index``: give a ModelKit packed without span indexes (by kit, or ``--no-span-index``) a
span index on every layer, as a new ModelKit in local storage.

What it costs depends on the layer (docs/span-index.md):

- an uncompressed layer keeps its bytes: its index travels in the manifest (the descriptor's
  ``dev.kitfs.span-index.inline`` annotation), so pushing the result uploads a new manifest only;
  an index too large for the manifest is appended to the blob instead, a new blob of the same size
  plus the index;
- a gzip or zstd layer is one compressed stream that cannot be entered mid-way, so it is
  re-encoded span by span (same files, same tar, new blob and diffId): pushing uploads it again.

Every layer is verified (digest, diffId, every tar entry) before anything is written, and the new
blobs are written to temp files and moved into the store only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from kitfs.config import Paths
from kitfs.errors import DigestMismatchError, KitfsError
from kitfs.layers.codec import inflate_limit, open_decompressed
from kitfs.layers.hashing import CHUNK
from kitfs.layers.raw import raw_entry
from kitfs.layers.scan import check_blob, check_diff_id, scan_layer
from kitfs.layers.spanindex import (
    ANNOTATIONS,
    DEFAULT_SPAN_SIZE,
    MAX_INLINE_SIZE,
    SpanWriter,
    annotations_for,
    location_of,
    pin,
    trailing_allowance,
)
from kitfs.layers.tarindex import BLOCK, TarEntry
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor
from kitfs.reference import Reference
from kitfs.storage.local import LocalStore, display_repository

log = logging.getLogger(__name__)


class IndexingError(KitfsError):
    """A ModelKit cannot be indexed."""


@dataclass(frozen=True)
class LayerChange:
    """What indexing did to one layer: ``how`` is kept (it had an index), inline, appended or
    re-encoded; ``new_bytes`` is what a push of the result uploads for it."""

    before: Descriptor
    after: Descriptor
    how: str
    new_bytes: int
    diff_id: str | None = None  # the new layer's diffId, when its blob changed


@dataclass(frozen=True)
class IndexResult:
    digest: str
    reference: Reference
    changes: tuple[LayerChange, ...]

    @property
    def upload_bytes(self) -> int:
        return sum(c.new_bytes for c in self.changes)


def index_modelkit(
    paths: Paths, source: Reference, target: Reference, span_size: int = DEFAULT_SPAN_SIZE
) -> IndexResult:
    """Index every layer of ``source`` (in local storage) and store the result as ``target``."""
    store = LocalStore(paths.storage)
    _, desc = store.resolve(source)
    manifest = store.load_manifest(desc)
    name = display_repository(str(source))
    store.require_blobs(manifest, name)
    kitfile = store.load_kitfile(manifest)
    scratch = paths.cache / "index"
    scratch.mkdir(parents=True, exist_ok=True)
    diff_ids = {str(e.data.get("digest", "")): e.data.get("diffId") for e in kitfile.entries()}
    changes = [
        _index_layer(store, layer, diff_ids.get(layer.digest), span_size, scratch)
        for layer in manifest.layers
    ]
    rewritten = {c.before.digest: c for c in changes if c.after.digest != c.before.digest}
    config = manifest.config
    if rewritten:
        for entry in kitfile.entries():
            change = rewritten.get(str(entry.data.get("digest", "")))
            if change is not None:
                entry.data["digest"] = change.after.digest
                entry.data["diffId"] = change.diff_id
        body = kitfile.to_config_json()
        config = replace(manifest.config, digest=store.put_blob(body), size=len(body))
    layers = tuple(c.after for c in changes)
    new_manifest = replace(manifest, config=config, layers=layers)
    manifest_body = new_manifest.to_bytes()
    digest = store.put_blob(manifest_body)
    tags = [t for t in (target.tag, *target.extra_tags) if t]
    store.repo_for(target).add(new_manifest.descriptor(manifest_body), tags)
    return IndexResult(digest, target, tuple(changes))


def _index_layer(
    store: LocalStore, desc: Descriptor, diff_id: str | None, span_size: int, scratch: Path
) -> LayerChange:
    layer_type = media.parse_layer_media_type(desc.media_type)
    if layer_type is None:
        raise IndexingError(
            f"layer {desc.digest} has media type {desc.media_type!r}: not a kit layer"
        )
    compression = layer_type.compression
    if location_of(desc.annotations, desc.size) is not None:
        return LayerChange(desc, desc, "kept", 0)
    if layer_type.raw:
        return _index_raw(store, desc, compression, span_size)
    path = store.blob_path(desc.digest)
    result = scan_layer(
        path,
        compression,
        None,
        limit=inflate_limit(desc.size, compression),
        what=f"layer {desc.digest}",
        expected_digest=desc.digest,
        trailing=trailing_allowance(desc.annotations, desc.size),
    )
    check_blob(desc, result)
    check_diff_id(diff_id, desc, result)
    entries = result.entries
    plain = {k: v for k, v in desc.annotations.items() if k not in ANNOTATIONS}
    if compression == "none":
        return _index_plain(store, desc, plain, entries, span_size, scratch)
    return _reencode(store, desc, plain, compression, entries, span_size, scratch)


def _index_raw(
    store: LocalStore, desc: Descriptor, compression: str, span_size: int
) -> LayerChange:
    """A raw layer is its file: spans over the file's bytes, the index inline in the manifest (an
    uncompressed one keeps its blob; a compressed one cannot be entered mid-stream and stays as it
    is, verified whole)."""
    if compression != "none":
        return LayerChange(desc, desc, "raw-whole", 0)
    path = store.blob_path(desc.digest)
    writer = SpanWriter(_Null(), "none", span_size)  # type: ignore[arg-type]
    with open(path, "rb") as stream:
        while data := stream.read(CHUNK):
            writer.write(data)
    entry = raw_entry(desc, writer.position)
    index = writer.finish([entry])
    if writer.blob_digest != desc.digest or writer.blob_size != desc.size:
        raise DigestMismatchError(desc.digest, writer.blob_digest, f"layer {desc.digest}")
    pins = pin(index, writer, inline_allowed=True, inline_only=True)
    if not pins:
        return LayerChange(desc, desc, "raw-whole", 0)
    return LayerChange(desc, replace(desc, annotations={**desc.annotations, **pins}), "inline", 0)


def _segments(entries: tuple[TarEntry, ...]) -> list[int]:
    """Where each entry's headers start in the tar: right after the padded data of the one before."""
    starts = [0]
    for entry in entries[:-1]:
        starts.append(entry.offset + entry.size + (-entry.size % BLOCK))
    return starts


def _feed(stream: BinaryIO, writer: SpanWriter, entries: tuple[TarEntry, ...]) -> None:
    """Copy a tar stream into a span writer, telling it where each entry starts."""
    starts = _segments(entries) if entries else []
    last = entries[-1] if entries else None
    ends = starts[1:] + ([last.offset + last.size + (-last.size % BLOCK)] if last else [])
    position = 0
    for start, end in zip(starts, ends, strict=True):
        _copy(stream, writer, start - position)
        writer.entry_starts(end - start)
        position = start
    while data := stream.read(CHUNK):
        writer.write(data)


def _copy(stream: BinaryIO, writer: SpanWriter, size: int) -> None:
    while size > 0:
        data = stream.read(min(CHUNK, size))
        if not data:
            raise DigestMismatchError("", "a layer that changed while it was indexed")
        writer.write(data)
        size -= len(data)


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)


def _index_plain(
    store: LocalStore,
    desc: Descriptor,
    annotations: dict[str, str],
    entries: tuple[TarEntry, ...],
    span_size: int,
    scratch: Path,
) -> LayerChange:
    path = store.blob_path(desc.digest)
    writer = SpanWriter(_Null(), "none", span_size)  # type: ignore[arg-type]
    with open(path, "rb") as stream:
        _feed(stream, writer, entries)  # type: ignore[arg-type]
    index = writer.finish(entries)
    if writer.blob_digest != desc.digest:
        raise DigestMismatchError(desc.digest, writer.blob_digest, f"layer {desc.digest}")
    body = index.to_json()
    if len(body) <= MAX_INLINE_SIZE:
        after = replace(desc, annotations={**annotations, **annotations_for(body, None)})
        return LayerChange(desc, after, "inline", 0)

    # Too big for the manifest: the same tar with the index appended after it.
    def write(out: BinaryIO) -> tuple[str, int, str, dict[str, str]]:
        copier = SpanWriter(out, "none", span_size)
        with open(path, "rb") as stream:
            _feed(stream, copier, entries)  # type: ignore[arg-type]
        copier.finish(entries)
        _stored, offset = copier.append_index(index)
        return copier.blob_digest, copier.blob_size, copier.diff_id, annotations_for(body, offset)

    return _new_blob(store, desc, annotations, scratch, write, "appended")


def _reencode(
    store: LocalStore,
    desc: Descriptor,
    annotations: dict[str, str],
    compression: str,
    entries: tuple[TarEntry, ...],
    span_size: int,
    scratch: Path,
) -> LayerChange:
    def write(out: BinaryIO) -> tuple[str, int, str, dict[str, str]]:
        writer = SpanWriter(out, compression, span_size)
        with open_decompressed(str(store.blob_path(desc.digest)), compression) as stream:
            _feed(stream, writer, entries)
        index = writer.finish(entries)
        stored, offset = writer.append_index(index)
        return writer.blob_digest, writer.blob_size, writer.diff_id, annotations_for(stored, offset)

    return _new_blob(store, desc, annotations, scratch, write, "re-encoded")


def _new_blob(
    store: LocalStore,
    desc: Descriptor,
    annotations: dict[str, str],
    scratch: Path,
    write: Callable[[BinaryIO], tuple[str, int, str, dict[str, str]]],
    how: str,
) -> LayerChange:
    fd, name = tempfile.mkstemp(prefix="kitfs_index_", dir=scratch)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size, diff_id, pins = write(out)
            out.flush()
            os.fsync(out.fileno())
        store.adopt_blob(temp, digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    after = Descriptor(desc.media_type, digest, size, annotations={**annotations, **pins})
    return LayerChange(desc, after, how, size, diff_id)
