"""One verifying pass over a stored layer blob, shared by ``unpack`` and the mount.

The pass hashes the blob, decompresses it (optionally copying the tar out), hashes the tar (the
diffId) and runs every entry through the strict tar reader. A blob that fails to decompress or parse
is reported as a digest mismatch when its bytes are not the ones the manifest named, so a corrupted
download reads as corruption rather than as hostile content.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from kitfs.errors import DigestMismatchError, UnsafeContentError
from kitfs.layers.codec import MAX_TRAILING_BYTES, decompressing_reader
from kitfs.layers.hashing import HashingReader, opened
from kitfs.layers.readahead import HashedFile
from kitfs.layers.tarindex import TarEntry, TarReader
from kitfs.oci.manifest import Descriptor

READ_AHEAD_MIN = 8 * 1024 * 1024


@dataclass(frozen=True)
class ScanResult:
    """What one pass over a stored blob found: both digests and sizes, and the tar's entries."""

    blob_digest: str
    blob_size: int
    tar_digest: str
    tar_size: int
    entries: tuple[TarEntry, ...]


def scan_layer(
    path: Path | BinaryIO,
    compression: str,
    out: Path | None,
    *,
    limit: int | None,
    what: str,
    expected_digest: str,
    verified: bool = False,
    trailing: int = MAX_TRAILING_BYTES,
    extract: Callable[[TarReader, TarEntry], None] | None = None,
    durable: bool = True,
) -> ScanResult:
    """Hash a blob, decompress it (copying the tar to ``out``), hash and index the tar: one pass.

    ``path`` is the blob's file, or a stream of its bytes as they arrive (kitfs.layers.pipe).

    ``verified`` skips hashing a blob whose digest was already checked (a fresh download).
    ``trailing`` bounds the bytes allowed after the tar's end (more for a layer with an embedded
    span index: :func:`kitfs.layers.spanindex.trailing_allowance`).
    ``extract`` is called with each entry as the reader yields it, and may read its data
    (``TarReader.read_data``): how ``unpack`` writes files in the same pass (kitfs.staging).
    ``durable=False`` leaves syncing ``out`` to the caller.
    """
    plain = compression == "none"
    if plain and verified and out is None and extract is None and isinstance(path, os.PathLike):
        return _index_in_place(
            Path(path), limit=limit, what=what, digest=expected_digest, trailing=trailing
        )
    # A large stored blob is read and hashed ahead in a second thread (kitfs.layers.readahead).
    ahead = (
        not verified
        and isinstance(path, (str, os.PathLike))
        and os.path.getsize(path) >= READ_AHEAD_MIN
    )
    source = HashedFile(Path(path)) if ahead else opened(path)  # type: ignore[arg-type]
    with source as raw_file, contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(out, "wb")) if out is not None else None
        raw = HashingReader(raw_file, hash_it=not verified and not ahead)  # type: ignore[arg-type]
        blob_digest = _digest_source(raw, raw_file if ahead else None)  # type: ignore[arg-type]
        stream = raw if plain else decompressing_reader(raw, compression)  # type: ignore[arg-type]
        tar = HashingReader(stream, sink, hash_it=not plain)  # type: ignore[arg-type]
        try:
            reader = TarReader(tar, limit=limit, what=what)  # type: ignore[arg-type]
            found = []
            for entry in reader:
                found.append(entry)
                if extract is not None:
                    extract(reader, entry)
            entries = tuple(found)
            # Writers pad archives to at most a 10 KiB record; more after the end marker is a
            # decompression bomb's payload, not a tar's.
            if tar.drain(trailing) > trailing:
                raise _bomb_tail(what, trailing)
            raw.drain()
        except (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError) as exc:
            _corrupt_first(raw, expected_digest, verified, blob_digest)
            raise UnsafeContentError(f"{what} cannot be decompressed: {exc}") from None
        except UnsafeContentError:
            _corrupt_first(raw, expected_digest, verified, blob_digest)
            raise
        if sink is not None:
            sink.flush()
            if durable:
                os.fsync(sink.fileno())
        digest = expected_digest if verified else blob_digest()
    tar_digest = digest if plain else tar.digest
    return ScanResult(digest, raw.size, tar_digest, tar.size, entries)


def _index_in_place(
    path: Path, *, limit: int | None, what: str, digest: str, trailing: int
) -> ScanResult:
    """Index a verified uncompressed layer where it lies: the reader seeks past each entry's
    data, so only the headers are read (a fresh download was hashed as it arrived)."""
    with open(path, "rb") as tar_file:
        reader = TarReader(tar_file, limit=limit, what=what)  # type: ignore[arg-type]
        entries = tuple(reader)
        size = os.fstat(tar_file.fileno()).st_size
    if size - reader.position > trailing:
        raise _bomb_tail(what, trailing)
    return ScanResult(digest, size, digest, size, entries)


def _bomb_tail(what: str, trailing: int) -> UnsafeContentError:
    return UnsafeContentError(
        f"refused {what}: more than {trailing} bytes follow the end of "
        "its tar archive (decompression bomb?)"
    )


def _digest_source(raw: HashingReader, ahead: HashedFile | None) -> Callable[[], str]:
    """How to get the blob's digest once it was read: from the read-ahead thread, or ``raw``."""
    if ahead is not None:
        return ahead.digest
    return lambda: raw.digest


def _corrupt_first(
    raw: HashingReader, expected: str, verified: bool, digest: Callable[[], str]
) -> None:
    """Report a failed parse of bytes that are not the named blob as the digest mismatch it is."""
    if verified:
        return
    raw.drain()
    actual = digest()
    if actual != expected:
        raise DigestMismatchError(expected, actual, f"layer {expected}") from None


def check_blob(desc: Descriptor, result: ScanResult, where: str = "") -> None:
    """The blob is the one the manifest names: digest and size."""
    what = f"layer {desc.digest} {where}".rstrip()
    if result.blob_digest != desc.digest:
        raise DigestMismatchError(desc.digest, result.blob_digest, what)
    if result.blob_size != desc.size:
        raise DigestMismatchError(
            desc.digest, f"{result.blob_size} bytes instead of {desc.size}", what
        )


def check_diff_id(diff_id: str | None, desc: Descriptor, result: ScanResult) -> None:
    """The uncompressed tar is the one the Kitfile records, when it records one."""
    if diff_id and result.tar_digest != diff_id:
        raise DigestMismatchError(
            diff_id, result.tar_digest, f"uncompressed layer {desc.digest} (diffId)"
        )
