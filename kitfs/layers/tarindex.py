"""A strict, streaming tar reader: the entry index of a layer and the gate for hostile content.

Every tar that kitfs extracts or serves passes through :class:`TarReader`. It accepts what kit writes
(USTAR, PAX and GNU long-name headers; regular files and directories) and refuses, with the entry
named, everything a ModelKit layer has no business holding: links, devices, absolute or ``..`` paths,
names that are not UTF-8 or are overlong, duplicate entries, and headers that claim more bytes than
the layer holds.
"""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from kitfs.errors import UnsafeContentError

BLOCK = 512
MAX_NAME_BYTES = 4096
MAX_COMPONENT_BYTES = 255
MAX_PAX_BYTES = 1 << 20
MAX_ENTRIES = 1_000_000

_TYPE_NAMES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"7": "a contiguous file",
}


@dataclass(frozen=True)
class TarEntry:
    """One entry of a layer tar, with where its data starts in the uncompressed stream."""

    name: str  # cleaned relative path, forward slashes, no trailing slash
    is_dir: bool
    mode: int  # permission bits (07777)
    size: int
    offset: int  # offset of the data in the uncompressed tar
    mtime: int = 0


class TarFormatError(UnsafeContentError):
    """The tar stream is malformed or truncated."""


def _parse_octal(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"invalid tar header: bad {what} field {text!r}") from None


def _checksum_ok(block: bytes) -> bool:
    stored = _parse_octal(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = (
        sum((b - 256 if b > 127 else b) for b in block[:148])
        + 256
        + sum((b - 256 if b > 127 else b) for b in block[156:])
    )
    return stored in (unsigned, signed)


def header_mismatch(block: bytes, entry: TarEntry) -> str | None:
    """Why the 512-byte header block just before ``entry``'s data is not that entry's (None when
    it is): how a reader of a span index checks the index against the verified tar itself."""
    if len(block) != BLOCK or not _checksum_ok(block):
        return "no valid tar header precedes the data"
    typeflag = block[156:157]
    if entry.is_dir != (typeflag == b"5") or typeflag not in (b"0", b"\0", b"5"):
        return f"the header is of type {typeflag!r}"
    size = _parse_octal(block[124:136], "size")
    if size != entry.size and not (size == 0 and entry.size > 0o77777777777):
        return f"the header says {size} bytes, the index {entry.size}"
    name = block[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
    full = f"{prefix}/{name}" if prefix else name
    ascii_name = "".join(c for c in entry.name if ord(c) < 0x80)
    # A name too long for USTAR is in a PAX record before this block, which carries its ASCII start.
    if full.rstrip("/") != entry.name and not ascii_name.startswith(full.rstrip("/")):
        return f"the header names {full!r}, the index {entry.name!r}"
    return None


def _parse_pax(data: bytes, where: str = "") -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError("invalid PAX header: missing record length")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("invalid PAX header: bad record length") from None
        if length <= 0 or pos + length > len(data):
            raise TarFormatError("invalid PAX header: record overruns the header")
        record = data[space + 1 : pos + length - 1]
        key, sep, value = record.partition(b"=")
        if not sep:
            raise TarFormatError("invalid PAX header: record without '='")
        records[_decode(key, "PAX key", where)] = _decode(value, "PAX value", where)
        pos += length
    return records


def _decode(raw: bytes, what: str, where: str = "") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeContentError(
            f"refused tar entry {raw!r}{where}: its {what} is not valid UTF-8"
        ) from None


def clean_entry_name(raw: str, where: str = "") -> str:
    """Normalise an entry name and refuse any that could land outside the extraction root.

    ``where`` (e.g. `` in layer sha256:...``) is put after the entry name in messages.
    """

    def refuse(reason: str, shown: str = raw) -> UnsafeContentError:
        return UnsafeContentError(f"refused tar entry {shown!r}{where}: {reason}")

    if "\0" in raw:
        raise refuse("its name contains a NUL byte")
    if raw.startswith("/"):
        raise refuse("absolute paths are not allowed")
    if len(raw.encode()) > MAX_NAME_BYTES:
        raise refuse(f"its name is longer than {MAX_NAME_BYTES} bytes", raw[:60] + "...")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise refuse("'..' would leave the target directory")
    for part in parts:
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise refuse("a path component is longer than 255 bytes", raw[:60] + "...")
    if not parts:
        return "."
    return posixpath.join(*parts)


class TarReader:
    """Iterate over a tar stream's entries, strictly; read or skip each file's data in turn.

    ``limit`` bounds the uncompressed bytes read (a defence against decompression bombs).
    """

    def __init__(self, stream: BinaryIO, *, limit: int | None = None, what: str = "layer") -> None:
        self._stream = stream
        self._pos = 0
        self._limit = limit
        self._what = what
        self._pending = 0  # data bytes (plus padding) of the current entry not yet consumed
        self._seen: set[str] = set()
        self._base = 0
        self._seek_end: int | None = None  # set for plain seekable files: skip data by seeking
        if _is_seekable_file(stream):
            self._base = stream.tell()
            self._seek_end = os.fstat(stream.fileno()).st_size - self._base

    @property
    def position(self) -> int:
        return self._pos

    def _read(self, size: int) -> bytes:
        if self._limit is not None and self._pos + size > self._limit:
            # Read what the limit allows: a stream that ends first is merely truncated.
            data = self._read_some(self._limit - self._pos)
            if len(data) == self._limit - self._pos and self._stream.read(1):
                raise UnsafeContentError(
                    f"refused {self._what}: it inflates past {self._limit} bytes "
                    "(decompression bomb?)"
                )
            return data
        return self._read_some(size)

    def _read_some(self, size: int) -> bytes:
        data = self._stream.read(size)
        while len(data) < size:
            more = self._stream.read(size - len(data))
            if not more:
                break
            data += more
        self._pos += len(data)
        return data

    def _read_piece(self, size: int) -> bytes:
        """Up to ``size`` bytes, as the stream gives them (a decompressor's pieces need not be
        joined into exact sizes: that copied every byte once more); empty at the end."""
        if self._limit is not None and self._pos + size > self._limit:
            return self._read(size)  # near the bound: the exact read checks it
        data = self._stream.read(size)
        self._pos += len(data)
        return data

    def _read_exact(self, size: int, what: str) -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise self._truncated(what)
        return data

    def _truncated(self, what: str) -> TarFormatError:
        return TarFormatError(f"refused {self._what}: truncated while reading {what}")

    def _skip_pending(self) -> None:
        if self._pending and self._seek_end is not None:
            self._seek_past_pending()
            return
        while self._pending:
            chunk = self._read_piece(min(self._pending, 1 << 20))
            if not chunk:
                raise self._truncated("entry data")
            self._pending -= len(chunk)

    def _seek_past_pending(self) -> None:
        """Skip entry data by seeking (uncompressed layers on disk): indexing costs headers only."""
        target = self._pos + self._pending
        if self._seek_end is not None and target > self._seek_end:
            raise self._truncated("entry data")
        if self._limit is not None and target > self._limit:
            raise UnsafeContentError(
                f"refused {self._what}: it inflates past {self._limit} bytes (decompression bomb?)"
            )
        self._stream.seek(self._base + target)
        self._pos = target
        self._pending = 0

    def read_data(
        self, entry: TarEntry, sink: Callable[[bytes], object], chunk: int = 1 << 20
    ) -> None:
        """Pass the data of ``entry`` (the entry just yielded) to ``sink`` in chunks."""
        if entry.offset != self._pos or self._pending < entry.size:
            raise ValueError("read_data must be called for the entry just yielded")
        remaining = entry.size
        while remaining:
            data = self._read_piece(min(chunk, remaining))
            if not data:
                raise self._truncated("entry data")
            sink(data)
            remaining -= len(data)
        self._pending -= entry.size

    def __iter__(self) -> Iterator[TarEntry]:
        pax: dict[str, str] = {}
        long_name: str | None = None
        count = 0
        while True:
            self._skip_pending()
            block = self._read(BLOCK)
            if not block:
                raise TarFormatError(
                    f"refused {self._what}: the tar ends without its end-of-archive marker"
                )
            if len(block) < BLOCK:
                raise TarFormatError(f"refused {self._what}: truncated tar header")
            if block == b"\0" * BLOCK:
                return
            if not _checksum_ok(block):
                raise TarFormatError(
                    f"refused {self._what}: tar header checksum mismatch at byte {self._pos - BLOCK}"
                )
            typeflag = block[156:157]
            size = _parse_octal(block[124:136], "size")
            if size < 0:
                raise TarFormatError(f"refused {self._what}: negative entry size")
            if typeflag in (b"x", b"g", b"L"):
                if size > MAX_PAX_BYTES:
                    raise TarFormatError(f"refused {self._what}: extended header of {size} bytes")
                data = self._read_exact(size + _padding(size), "an extended header")[:size]
                if typeflag == b"x":
                    pax = _parse_pax(data, self._where)
                elif typeflag == b"L":
                    long_name = _decode(data.split(b"\0", 1)[0], "name", self._where)
                continue
            entry = self._entry(block, typeflag, size, pax, long_name)
            pax, long_name = {}, None
            count += 1
            if count > MAX_ENTRIES:
                raise UnsafeContentError(f"refused {self._what}: more than {MAX_ENTRIES} entries")
            self._pending = size + _padding(size)
            yield entry

    def _entry(
        self, block: bytes, typeflag: bytes, size: int, pax: dict[str, str], long_name: str | None
    ) -> TarEntry:
        raw_name = pax.get("path") or long_name or self._ustar_name(block, self._where)
        if typeflag in _TYPE_NAMES:
            raise UnsafeContentError(
                f"refused tar entry {raw_name!r}{self._where}: it is {_TYPE_NAMES[typeflag]}; "
                "only regular files and directories are allowed"
            )
        if typeflag not in (b"0", b"\0", b"5"):
            raise UnsafeContentError(
                f"refused tar entry {raw_name!r}{self._where}: unsupported type {typeflag!r}"
            )
        is_dir = typeflag == b"5" or (typeflag in (b"0", b"\0") and raw_name.endswith("/"))
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarFormatError(f"refused {self._what}: bad PAX size") from None
        name = clean_entry_name(raw_name, self._where)
        if name == ".":
            if not is_dir:
                raise UnsafeContentError(
                    f"refused tar entry {raw_name!r}{self._where}: a file without a name"
                )
        elif name in self._seen:
            raise UnsafeContentError(f"refused tar entry {name!r}{self._where}: it appears twice")
        self._seen.add(name)
        mode = _parse_octal(block[100:108], "mode") & 0o7777
        mtime = _parse_octal(block[136:148], "mtime")
        if "mtime" in pax:
            try:
                mtime = int(float(pax["mtime"]))
            except ValueError:
                mtime = 0
        return TarEntry(name, is_dir, mode, 0 if is_dir else size, self._pos, mtime)

    @property
    def _where(self) -> str:
        return f" in {self._what}"

    @staticmethod
    def _ustar_name(block: bytes, where: str = "") -> str:
        name = block[0:100].split(b"\0", 1)[0]
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        return _decode(name, "name", where)


def _is_seekable_file(stream: BinaryIO) -> bool:
    """A real file on disk (not a decompressor or a hashing wrapper), where seeking is exact."""
    try:
        return isinstance(stream, io.BufferedReader | io.FileIO) and stream.seekable()
    except (OSError, ValueError):
        return False


def _padding(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


def index_tar(stream: BinaryIO, *, limit: int | None = None, what: str = "layer") -> list[TarEntry]:
    """Read a whole tar stream and return its entries (validated) in order."""
    return list(TarReader(stream, limit=limit, what=what))
