"""Write tar streams byte for byte as Go's ``archive/tar`` does for kit's layers.

kit (pkg/lib/filesystem/tar.go) builds headers with ``tar.FileInfoHeader`` and sanitises them: times
zeroed, uid 1000, gid 0, no user or group names, directory names without a trailing slash. Go picks
USTAR when a header fits, else PAX; it ends the archive with two zero blocks and no record padding.
Python's ``tarfile`` differs on all of those points, so headers are assembled here by hand.
"""

from __future__ import annotations

from typing import BinaryIO

BLOCK = 512
_USTAR_MAX_SIZE = 0o77777777777
REG = b"0"
DIR = b"5"
PAX = b"x"


def _octal(value: int, width: int) -> bytes:
    """Go's formatOctal: zero-padded to width-1 digits and a NUL."""
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def _split_ustar_path(name: str) -> tuple[str, str] | None:
    """Go's splitUSTARPath: the longest prefix (<=155 bytes) whose suffix fits in 100 bytes."""
    if len(name) <= 100 or not name.isascii():
        return None
    length = len(name)
    if length > 156:
        length = 156
    elif name[length - 1] == "/":
        length -= 1
    i = name.rfind("/", 0, length)
    if i <= 0:
        return None
    suffix_len = len(name) - i - 1
    if suffix_len > 100 or suffix_len == 0 or i > 155:
        return None
    return name[:i], name[i + 1 :]


def _header_block(
    name: bytes,
    prefix: bytes,
    mode: int,
    uid: int,
    size: int,
    typeflag: bytes,
    *,
    device_fields: bool = True,
) -> bytes:
    """One header block. Go leaves devmajor/devminor NUL in the extended headers it writes
    (``writeRawFile``) and fills them with zeros in entry headers (``templateV7Plus``)."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(uid, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    if device_fields:
        block[329:337] = _octal(0, 8)
        block[337:345] = _octal(0, 8)
    block[345 : 345 + len(prefix)] = prefix
    checksum = sum(block)
    block[148:156] = f"{checksum:06o}".encode("ascii") + b"\0 "
    return bytes(block)


def _pax_record(key: str, value: str) -> bytes:
    payload = f" {key}={value}\n".encode()
    length = len(payload)
    while True:
        record = str(length).encode("ascii") + payload
        if len(record) == length:
            return record
        length = len(record)


def _to_ascii(name: str) -> str:
    return "".join(c for c in name if ord(c) < 0x80)


def header_bytes(name: str, *, is_dir: bool, mode: int, size: int) -> bytes:
    """The header block(s) Go writes for one sanitised entry (a PAX header first when needed)."""
    typeflag = DIR if is_dir else REG
    uid = 1000
    split = _split_ustar_path(name)
    fits_name = len(name.encode()) <= 100 and name.isascii()
    if (fits_name or split) and size <= _USTAR_MAX_SIZE:
        prefix, base = split if (split and not fits_name) else ("", name)
        return _header_block(base.encode(), prefix.encode(), mode, uid, size, typeflag)
    records: dict[str, str] = {}
    if not fits_name:  # Go records the path whenever it does not fit a plain USTAR name field
        records["path"] = name
    if size > _USTAR_MAX_SIZE:
        records["size"] = str(size)
    body = b"".join(_pax_record(k, records[k]) for k in sorted(records))
    directory, _, base = name.rstrip("/").rpartition("/")
    pax_name = _to_ascii(
        f"{directory}/PaxHeaders.0/{base}" if directory else f"PaxHeaders.0/{base}"
    )
    pax_name = pax_name[:100].rstrip("/")
    pax_header = _header_block(pax_name.encode(), b"", 0, 0, len(body), PAX, device_fields=False)
    real_name = _to_ascii(name)[:100]
    real_size = 0 if size > _USTAR_MAX_SIZE else size
    real = _header_block(real_name.encode(), b"", mode, uid, real_size, typeflag)
    return pax_header + body + b"\0" * _padding(len(body)) + real


def _padding(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


class TarWriter:
    """A minimal streaming tar writer for regular files and directories, Go-compatible."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def add_dir(self, name: str, mode: int) -> None:
        self._out.write(header_bytes(name, is_dir=True, mode=mode, size=0))

    def add_file(
        self, name: str, mode: int, size: int, source: BinaryIO, chunk: int = 1 << 20
    ) -> int:
        """Write a file entry copying exactly ``size`` bytes from ``source``; returns bytes copied."""
        self._out.write(header_bytes(name, is_dir=False, mode=mode, size=size))
        remaining = size
        while remaining:
            data = source.read(min(chunk, remaining))
            if not data:
                raise OSError(f"{name} shrank while it was being packed")
            self._out.write(data)
            remaining -= len(data)
        self._out.write(b"\0" * _padding(size))
        return size

    def close(self) -> None:
        self._out.write(b"\0" * (2 * BLOCK))
