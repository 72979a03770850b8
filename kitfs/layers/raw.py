"""Raw layers: a layer blob that is one regular file itself (``...v1.raw``), not a tar of files.

kit writes them with ``--layer-format raw`` (pkg/lib/filesystem/raw.go) and ModelPack tools write
them for weights; the file's path is the layer's ``org.cncf.model.filepath`` annotation and its mode
comes from ``org.cncf.model.file.metadata+json`` (0644 without it), as kit's extractRawLayer reads
them. A raw layer is indexed as a one-entry tar whose data starts at offset 0, so unpack and the
mount treat it like any other layer: the "tar" is the (decompressed) file, named by its digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import zstandard

from kitfs.errors import DigestMismatchError, UnsafeContentError
from kitfs.layers.codec import decompressing_reader
from kitfs.layers.hashing import HashingReader, opened
from kitfs.layers.scan import ScanResult
from kitfs.layers.tarindex import TarEntry, clean_entry_name
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor

DEFAULT_MODE = 0o644  # kit's extractRawLayer default


def raw_entry(desc: Descriptor, size: int) -> TarEntry:
    """The one file a raw layer holds: its path (checked like a tar entry name) and mode."""
    where = f" in layer {desc.digest}"
    path = desc.annotations.get(media.MODELPACK_FILEPATH_ANNOTATION, "")
    if not path:
        raise UnsafeContentError(
            f"refused raw layer {desc.digest}: it has no {media.MODELPACK_FILEPATH_ANNOTATION} annotation"
        )
    name = clean_entry_name(path, where)
    if name == ".":
        raise UnsafeContentError(
            f"refused raw layer {desc.digest}: its file path {path!r} names no file"
        )
    mode, recorded_size = _metadata(desc)
    if recorded_size is not None and recorded_size != size:
        raise UnsafeContentError(
            f"refused raw layer {desc.digest}: its file is {size} bytes but its metadata "
            f"annotation says {recorded_size}"
        )
    return TarEntry(name, False, mode, size, 0)


def raw_mode(desc: Descriptor) -> int:
    """The mode a raw layer's file is written with (its metadata annotation's, else 0644)."""
    return _metadata(desc)[0]


def _metadata(desc: Descriptor) -> tuple[int, int | None]:
    """Mode and size from the model-spec file metadata annotation, when the layer has one."""
    text = desc.annotations.get(media.MODELPACK_FILE_METADATA_ANNOTATION)
    if not text:
        return DEFAULT_MODE, None
    try:
        meta = json.loads(text)
        mode = meta.get("mode", DEFAULT_MODE)
        size = meta.get("size")
        if not isinstance(mode, int) or (size is not None and not isinstance(size, int)):
            raise ValueError("mode and size must be integers")
    except (ValueError, AttributeError, RecursionError) as exc:
        raise UnsafeContentError(
            f"refused raw layer {desc.digest}: invalid {media.MODELPACK_FILE_METADATA_ANNOTATION} "
            f"annotation ({exc})"
        ) from None
    return mode & 0o777, size


def scan_raw(
    desc: Descriptor,
    path: Path | BinaryIO,
    compression: str,
    out: Path | None,
    *,
    limit: int | None,
    what: str,
    verified: bool = False,
    expected: str | None = None,
    durable: bool = True,
    advance: Callable[[int], None] | None = None,
) -> ScanResult:
    """Hash a raw blob, decompress it (copying the file to ``out``) and hash the file: one pass.

    The counterpart of :func:`kitfs.layers.scan.scan_layer` for raw layers; ``verified`` skips
    hashing a blob whose digest (``expected``, else the descriptor's) was already checked.
    """
    expected = expected or desc.digest
    plain = compression == "none"
    if verified and plain and out is None and not hasattr(path, "read"):
        # A downloaded, verified, uncompressed raw blob is its file: nothing to read again.
        size = os.stat(path).st_size  # type: ignore[arg-type]
        return ScanResult(expected, size, expected, size, (raw_entry(desc, size),))
    with opened(path) as raw_file, contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(out, "wb")) if out is not None else None
        raw = HashingReader(raw_file, hash_it=not verified)  # type: ignore[arg-type]
        stream = raw if plain else decompressing_reader(raw, compression)  # type: ignore[arg-type]
        data = HashingReader(stream, sink, hash_it=not plain)  # type: ignore[arg-type]
        try:
            size = data.drain(limit, advance)
        except (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError) as exc:
            _corrupt_first(raw, expected, verified)
            raise UnsafeContentError(f"{what} cannot be decompressed: {exc}") from None
        if limit is not None and size > limit:
            _corrupt_first(raw, expected, verified)
            raise UnsafeContentError(
                f"refused {what}: it inflates to more than {limit} bytes (decompression bomb?)"
            )
        raw.drain()
        if sink is not None:
            sink.flush()
            if durable:
                os.fsync(sink.fileno())
    blob_digest = expected if verified else raw.digest
    file_digest = blob_digest if plain else data.digest
    return ScanResult(blob_digest, raw.size, file_digest, size, (raw_entry(desc, size),))


def _corrupt_first(raw: HashingReader, expected: str, verified: bool) -> None:
    """A blob that fails to decompress and is not the named one is reported as the mismatch."""
    if verified:
        return
    raw.drain()
    if raw.digest != expected:
        raise DigestMismatchError(expected, raw.digest, f"layer {expected}") from None
