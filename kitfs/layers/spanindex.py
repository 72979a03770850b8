"""The span index: a table of digests that lets a reader verify part of a layer blob.

A layer's digest covers the whole blob, so on its own it cannot vouch for a byte range. The span
index cuts the layer's uncompressed tar stream into spans (at most ``span_size`` bytes, cut before a
small entry rather than through it), records where each span starts in the uncompressed stream and
in the blob, and the sha256 of each span's bytes *as stored in the blob*; for gzip and zstd layers
every span is its own gzip member or zstd frame, so it decompresses on its own and the blob is still
one valid stream. The index also lists the tar's entries, so a mount can show the layer without
reading it.

The index is pinned by the manifest: the layer descriptor's annotations carry the sha256 of the
index bytes, and either where the index lives inside the blob (after the tar's end-of-archive
blocks, as eStargz and zstd:chunked do) or the index itself (base64, for uncompressed layers whose
blob then stays byte-identical to kit's). docs/span-index.md is the format's specification.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from kitfs.errors import KitfsError
from kitfs.layers.codec import MAX_TRAILING_BYTES
from kitfs.layers.tarindex import MAX_ENTRIES, TarEntry, UnsafeContentError, clean_entry_name

MEDIA_TYPE = "application/vnd.kitfs.span-index.v1+json"
DIGEST_ANNOTATION = "dev.kitfs.span-index.digest"
OFFSET_ANNOTATION = "dev.kitfs.span-index.offset"
SIZE_ANNOTATION = "dev.kitfs.span-index.size"
INLINE_ANNOTATION = "dev.kitfs.span-index.inline"
ANNOTATIONS = (DIGEST_ANNOTATION, OFFSET_ANNOTATION, SIZE_ANNOTATION, INLINE_ANNOTATION)

DEFAULT_SPAN_SIZE = 4 << 20
MIN_SPAN_SIZE = 64 << 10
MAX_SPAN_SIZE = 64 << 20
MAX_INDEX_SIZE = 64 << 20  # an index larger than this is refused unread
MAX_INLINE_SIZE = 512 << 10  # uncompressed layers carry indexes up to this size in the manifest
GZIP_LEVELS = {"gzip": 6, "gzip-fastest": 1}
ZSTD_LEVEL = 3
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


class SpanIndexError(KitfsError):
    """A span index is malformed or does not match what pins it."""


@dataclass(frozen=True)
class Span:
    """One independently verifiable piece of a layer: where it is and the digest of its blob bytes."""

    offset: int  # start in the uncompressed tar stream
    size: int  # uncompressed bytes
    blob_offset: int  # start in the blob
    blob_size: int  # bytes in the blob (== size for an uncompressed layer)
    digest: str  # sha256 of the blob bytes [blob_offset, blob_offset + blob_size)

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def blob_end(self) -> int:
        return self.blob_offset + self.blob_size


@dataclass(frozen=True)
class SpanIndex:
    """A layer's span table and tar entries (see the module docstring)."""

    compression: str  # none, gzip, zstd
    span_size: int
    tar_size: int  # uncompressed bytes of the tar, to the end of its end-of-archive blocks
    spans: tuple[Span, ...]
    entries: tuple[TarEntry, ...]

    def covering(self, offset: int, size: int) -> range:
        """Positions in ``spans`` of the spans that hold bytes [offset, offset + size)."""
        if size <= 0 or offset >= self.tar_size:
            return range(0)
        end = min(offset + size, self.tar_size)
        return range(self._find(offset), self._find(end - 1) + 1)

    def _find(self, position: int) -> int:
        low, high = 0, len(self.spans) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.spans[middle].offset <= position:
                low = middle
            else:
                high = middle - 1
        return low

    def to_json(self) -> bytes:
        body = {
            "mediaType": MEDIA_TYPE,
            "compression": self.compression,
            "spanSize": self.span_size,
            "tarSize": self.tar_size,
            "spans": [[s.offset, s.blob_offset, s.blob_size, s.digest[7:]] for s in self.spans],
            "entries": [
                [e.name, int(e.is_dir), e.mode, e.size, e.offset, e.mtime] for e in self.entries
            ],
        }
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class IndexLocation:
    """What a layer descriptor's annotations say of its index: the digest, and where it is."""

    digest: str
    offset: int = 0  # in the blob, when embedded
    size: int = 0
    inline: bytes | None = None  # the index bytes, when the manifest carries them


def location_of(annotations: Mapping[str, str], blob_size: int) -> IndexLocation | None:
    """The pinned index a layer descriptor names, or None when it names none (or names it badly:
    such a layer is served as one without an index, after the whole blob is verified)."""
    digest = annotations.get(DIGEST_ANNOTATION)
    if digest is None or not digest.startswith("sha256:") or not _HEX_RE.match(digest[7:]):
        return None
    inline = annotations.get(INLINE_ANNOTATION)
    if inline is not None:
        try:
            data = base64.b64decode(inline, validate=True)
        except (binascii.Error, ValueError):
            return None
        return IndexLocation(digest, 0, len(data), data)
    try:
        offset = int(annotations.get(OFFSET_ANNOTATION, ""))
        size = int(annotations.get(SIZE_ANNOTATION, ""))
    except ValueError:
        return None
    if offset < 0 or size <= 0 or size > MAX_INDEX_SIZE or offset + size > blob_size:
        return None
    return IndexLocation(digest, offset, size)


def trailing_allowance(annotations: Mapping[str, str], blob_size: int) -> int:
    """How many bytes may follow a layer's tar: a writer's padding, plus an embedded index."""
    location = location_of(annotations, blob_size)
    extra = MAX_INDEX_SIZE if location is not None and location.inline is None else 0
    return MAX_TRAILING_BYTES + extra


def annotations_for(index_bytes: bytes, offset: int | None) -> dict[str, str]:
    """Descriptor annotations pinning ``index_bytes``: embedded at ``offset``, or inline."""
    found = {DIGEST_ANNOTATION: "sha256:" + hashlib.sha256(index_bytes).hexdigest()}
    if offset is None:
        found[INLINE_ANNOTATION] = base64.b64encode(index_bytes).decode()
    else:
        found[OFFSET_ANNOTATION] = str(offset)
        found[SIZE_ANNOTATION] = str(len(index_bytes))
    return found


# -- reading ----------------------------------------------------------------------------------


def decode_member(data: bytes | memoryview, compression: str, limit: int) -> bytes | memoryview:
    """The uncompressed bytes of one span or index member (at most ``limit`` of them)."""
    try:
        if compression == "none":
            return data
        if compression == "gzip":
            inflater = zlib.decompressobj(31)
            out = inflater.decompress(data, limit + 1)
            if len(out) > limit or not inflater.eof or inflater.unused_data:
                raise SpanIndexError("a gzip member inflates past its recorded size")
            return out
        if compression == "zstd":
            parts, total = [], 0
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
                while total <= limit and (chunk := reader.read(min(1 << 20, limit + 1 - total))):
                    parts.append(chunk)
                    total += len(chunk)
            out = b"".join(parts)
            if len(out) > limit:
                raise SpanIndexError("a zstd frame inflates past its recorded size")
            return out
    except (zlib.error, zstandard.ZstdError) as exc:
        raise SpanIndexError(f"a member does not decompress: {exc}") from None
    raise SpanIndexError(f"unknown compression {compression!r}")


def parse_index(
    data: bytes, location: IndexLocation, *, compression: str, blob_size: int
) -> SpanIndex:
    """Check index bytes against the digest that pins them, decode and validate them.

    ``data`` are the bytes as found in the blob (a gzip member or zstd frame for compressed layers)
    or in the manifest. Every field is checked so that a reader can rely on it: the spans tile the
    tar stream and the blob up to the index, and every entry lies inside the tar with a safe name.
    """
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != location.digest:
        raise SpanIndexError(f"the span index is {actual}, not the pinned {location.digest}")
    member = compression if location.inline is None else "none"
    try:
        raw = json.loads(bytes(decode_member(data, member, MAX_INDEX_SIZE)))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SpanIndexError(f"the span index is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("mediaType") != MEDIA_TYPE:
        raise SpanIndexError(f"the span index is not a {MEDIA_TYPE}")
    if raw.get("compression") != compression:
        raise SpanIndexError(
            f"the span index is for a {raw.get('compression')!r} layer, not {compression!r}"
        )
    try:
        index = SpanIndex(
            compression,
            _int(raw["spanSize"]),
            _int(raw["tarSize"]),
            _spans(raw["spans"], _int(raw["tarSize"])),
            _entries(raw["entries"]),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SpanIndexError(f"the span index is malformed: {exc!r}") from None
    end = location.offset if location.inline is None else blob_size
    _check_tiling(index, end)
    return index


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _spans(raw: Sequence[Sequence[object]], tar_size: int) -> tuple[Span, ...]:
    spans: list[Span] = []
    for position, item in enumerate(raw):
        offset, blob_offset, blob_size, digest = item
        end = raw[position + 1][0] if position + 1 < len(raw) else tar_size
        if not isinstance(digest, str) or not _HEX_RE.match(digest):
            raise ValueError(f"span {position} has a bad digest")
        spans.append(
            Span(
                _int(offset),
                _int(end) - _int(offset),
                _int(blob_offset),
                _int(blob_size),
                f"sha256:{digest}",
            )
        )
    return tuple(spans)


def _entries(raw: Sequence[Sequence[object]]) -> tuple[TarEntry, ...]:
    if len(raw) > MAX_ENTRIES:
        raise ValueError(f"more than {MAX_ENTRIES} entries")
    entries = []
    seen: set[str] = set()
    for name, is_dir, mode, size, offset, mtime in raw:
        if not isinstance(name, str):
            raise ValueError("an entry name is not a string")
        try:
            cleaned = clean_entry_name(name, " in a span index")
        except UnsafeContentError as exc:
            raise SpanIndexError(str(exc)) from None
        if cleaned != name or name in seen or (name == "." and not is_dir):
            raise SpanIndexError(f"the span index names entry {name!r} unsafely or twice")
        seen.add(name)
        entries.append(
            TarEntry(name, bool(is_dir), _int(mode) & 0o7777, _int(size), _int(offset), _int(mtime))
        )
    return tuple(entries)


def _check_tiling(index: SpanIndex, blob_end: int) -> None:
    """Spans start at 0 and follow each other without gaps in both streams; entries lie inside."""
    if not MIN_SPAN_SIZE <= index.span_size <= MAX_SPAN_SIZE:
        raise SpanIndexError(f"the span index's span size {index.span_size} is out of range")
    tar_at, blob_at = 0, 0
    for number, span in enumerate(index.spans):
        if span.offset != tar_at or span.blob_offset != blob_at:
            raise SpanIndexError(f"span {number} does not follow the one before it")
        if not 0 < span.size <= index.span_size or span.blob_size <= 0:
            raise SpanIndexError(f"span {number} has a bad size")
        if index.compression == "none" and span.blob_size != span.size:
            raise SpanIndexError(f"span {number} of an uncompressed layer changes size")
        tar_at, blob_at = span.end, span.blob_end
    if tar_at != index.tar_size or blob_at != blob_end:
        raise SpanIndexError("the spans do not cover the layer up to its index")
    for entry in index.entries:
        if entry.offset + entry.size > index.tar_size or (entry.is_dir and entry.size):
            raise SpanIndexError(f"entry {entry.name!r} lies outside the layer")


# -- writing ----------------------------------------------------------------------------------


def encode_member(data: bytes, compression: str) -> bytes:
    """One span (or the index) as stored in the blob: as is, one gzip member or one zstd frame.
    gzip members carry Go's header fields (mtime 0, OS 255) as ``codec.compressing_writer`` does."""
    if compression == "none":
        return data
    if compression in GZIP_LEVELS:
        return gzip.compress(data, compresslevel=GZIP_LEVELS[compression], mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    raise SpanIndexError(f"unknown compression {compression!r}")


def layer_compression(compression: str) -> str:
    """How a pack compression names the layer's codec (gzip-fastest is gzip)."""
    return "gzip" if compression in GZIP_LEVELS else compression


class SpanWriter:
    """A file-like sink for a layer's uncompressed tar that writes it to ``out`` span by span.

    The tar writer calls :meth:`entry_starts` before each entry's header so that a span is cut
    before an entry that would not fit in it (small files then never straddle two spans; a file
    larger than a span starts one). :meth:`finish` cuts the last span and returns the index; the
    caller then appends it (:meth:`append_index`) or carries it inline.
    """

    def __init__(
        self,
        out: BinaryIO,
        compression: str,
        span_size: int = DEFAULT_SPAN_SIZE,
        on_span: Callable[[int], None] | None = None,
    ) -> None:
        if not MIN_SPAN_SIZE <= span_size <= MAX_SPAN_SIZE:
            raise SpanIndexError(
                f"span size {span_size} must be between {MIN_SPAN_SIZE} and {MAX_SPAN_SIZE}"
            )
        self._out = out
        self._pack_compression = compression
        self.compression = layer_compression(compression)
        self.span_size = span_size
        self._buffer = bytearray()
        self._spans: list[Span] = []
        self._tar_at = 0
        self._blob_at = 0
        self._on_span = on_span
        self.diff_hasher = hashlib.sha256()
        self.blob_hasher = hashlib.sha256()
        # Uncompressed, the blob is the tar: one hash serves as digest and diffId.
        self._plain = self._pack_compression == "none"

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            room = self.span_size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= self.span_size:
                self._cut()
        return len(data)

    def flush(self) -> None:
        return None

    def entry_starts(self, total: int) -> None:
        """An entry of ``total`` bytes (headers, data, padding) follows: cut if it would straddle."""
        if self._buffer and len(self._buffer) + total > self.span_size:
            self._cut()

    def _cut(self) -> None:
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        stored = encode_member(data, self._pack_compression)
        self._emit(stored, data)
        self._spans.append(
            Span(
                self._tar_at,
                len(data),
                self._blob_at,
                len(stored),
                "sha256:" + hashlib.sha256(stored).hexdigest(),
            )
        )
        self._tar_at += len(data)
        self._blob_at += len(stored)
        if self._on_span is not None:
            self._on_span(len(data))

    def _emit(self, stored: bytes, plain: bytes) -> None:
        self._out.write(stored)
        self.blob_hasher.update(stored)
        if not self._plain:
            self.diff_hasher.update(plain)

    def finish(self, entries: Sequence[TarEntry]) -> SpanIndex:
        """Cut the last span; the index of everything written so far."""
        self._cut()
        return SpanIndex(
            self.compression, self.span_size, self._tar_at, tuple(self._spans), tuple(entries)
        )

    def append_index(self, index: SpanIndex) -> tuple[bytes, int]:
        """Write the index after the tar (as one more member); its stored bytes and blob offset."""
        plain = index.to_json()
        stored = encode_member(plain, self._pack_compression)
        offset = self._blob_at
        self._emit(stored, plain)
        self._blob_at += len(stored)
        return stored, offset

    @property
    def position(self) -> int:
        """Bytes of the uncompressed stream written so far."""
        return self._tar_at + len(self._buffer)

    @property
    def blob_size(self) -> int:
        return self._blob_at

    @property
    def blob_digest(self) -> str:
        return "sha256:" + self.blob_hasher.hexdigest()

    @property
    def diff_id(self) -> str:
        hasher = self.blob_hasher if self._plain else self.diff_hasher
        return "sha256:" + hasher.hexdigest()


def pin(
    index: SpanIndex, writer: SpanWriter, *, inline_allowed: bool, inline_only: bool = False
) -> dict[str, str]:
    """Finish a layer written through ``writer``: carry the index inline (uncompressed layers whose
    index is small, so that the blob stays exactly the tar kit writes) or append it to the blob;
    return the descriptor annotations that pin it. ``inline_only`` (raw layers: nothing may follow
    the file in its blob) gives no index at all when it is too large for the manifest."""
    plain = index.to_json()
    fits = len(plain) <= MAX_INLINE_SIZE
    if inline_only:
        return annotations_for(plain, None) if fits else {}
    if inline_allowed and index.compression == "none" and fits:
        return annotations_for(plain, None)
    stored, offset = writer.append_index(index)
    return annotations_for(stored, offset)
