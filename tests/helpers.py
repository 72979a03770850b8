"""Helpers for the local-verb tests: build context trees, run the real CLI, read and forge tars.

The tar helpers here parse and build raw 512-byte headers themselves, independently of
``kitfs.layers``, so that a test of the tar writer or reader does not check the code against itself.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest
from kitfs.storage.local import LocalStore

KITFS = str(Path(sys.executable).parent / "kitfs")
BLOCK = 512
# Pack flags for a ModelKit as kit writes it (no span index): such layers are fetched and verified
# whole before a byte is served, the path every ModelKit packed by kit itself takes.
WHOLE = ("--no-span-index",)


# -- context directories and the CLI --------------------------------------------------------


def make_tree(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Create ``files`` (relative path -> content) under ``root``; a path ending in / is a dir."""
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def files_under(root: Path) -> set[str]:
    """Every regular file below ``root``, as slash paths relative to it."""
    out = set()
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            out.add(Path(dirpath, name).relative_to(root).as_posix())
    return out


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Everything below ``root`` (files with content, dirs, links) to compare before and after."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if path.is_symlink():
                out[rel] = (st.st_mode, os.readlink(path))
            elif path.is_file():
                out[rel] = (st.st_mode, path.read_bytes())
            else:
                out[rel] = (st.st_mode, b"")
    return out


def kitfs(
    home: Path, *args: str, cwd: Path | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kitfs`` command against the kit home ``home``."""
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    return subprocess.run(
        [KITFS, "--config", str(home), *args],
        cwd=cwd,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process (``kitfs.cli.main``): the same code path as the command, faster.

    Log records are not captured here; use :func:`kitfs` when a test checks warnings.
    """
    from kitfs.cli import main

    argv = ["--config", str(home), *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert that a CLI run succeeded, showing its output when it did not."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def fails(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """Assert that a CLI run failed with ``code`` and a one-line message; return that line."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def saved_digest(result: subprocess.CompletedProcess[str]) -> str:
    """The manifest digest from ``pack``'s ``Model saved: <digest>`` line."""
    for line in result.stdout.splitlines():
        if line.startswith("Model saved: "):
            return line.removeprefix("Model saved: ")
    raise AssertionError(f"no 'Model saved' line in {result.stdout!r}")


def payload(size: int, seed: object = 0) -> bytes:
    """Deterministic bytes that do not compress (so sizes and layer offsets are predictable)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- reading what pack stored ---------------------------------------------------------------


def storage(home: Path) -> LocalStore:
    return LocalStore(home / "storage")


def blob(home: Path, digest: str) -> bytes:
    return (home / "storage" / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def manifest_json(home: Path, digest: str) -> dict:  # type: ignore[type-arg]
    return json.loads(blob(home, digest))


def config_json(home: Path, digest: str) -> dict:  # type: ignore[type-arg]
    return json.loads(blob(home, manifest_json(home, digest)["config"]["digest"]))


@dataclass(frozen=True)
class RawEntry:
    """One header of a tar stream as stored, parsed field by field."""

    name: str  # prefix + "/" + name when a USTAR prefix is present
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    uname: bytes
    gname: bytes
    magic: bytes
    version: bytes
    header: bytes


def _octal(field: bytes) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def raw_entries(tar: bytes) -> tuple[list[RawEntry], int]:
    """Every header in an uncompressed tar, and the offset where the end marker starts."""
    out: list[RawEntry] = []
    pos = 0
    while True:
        block = tar[pos : pos + BLOCK]
        assert len(block) == BLOCK, "tar ended without an end-of-archive marker"
        if block == b"\0" * BLOCK:
            return out, pos
        stored = _octal(block[148:156])
        assert stored == sum(block[:148]) + 256 + sum(block[156:]), "bad checksum"
        name = block[0:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        full = (prefix + b"/" + name) if prefix else name
        size = _octal(block[124:136])
        out.append(
            RawEntry(
                name=full.decode(),
                typeflag=block[156:157],
                mode=_octal(block[100:108]),
                uid=_octal(block[108:116]),
                gid=_octal(block[116:124]),
                size=size,
                mtime=_octal(block[136:148]),
                uname=block[265:297],
                gname=block[297:329],
                magic=block[257:263],
                version=block[263:265],
                header=block,
            )
        )
        pos += BLOCK + size + (-size) % BLOCK


def layer_names(tar: bytes) -> list[str]:
    return [e.name for e in raw_entries(tar)[0]]


def decompress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip"):
        import gzip

        return gzip.decompress(data)
    if media_type.endswith("+zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def layer_tars(home: Path, digest: str) -> list[tuple[str, bytes]]:
    """(media type, uncompressed tar) for every layer of a stored manifest, in order."""
    out = []
    for layer in manifest_json(home, digest)["layers"]:
        out.append(
            (layer["mediaType"], decompress(blob(home, layer["digest"]), layer["mediaType"]))
        )
    return out


def tarfile_names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        return archive.getnames()


# -- forging hostile layers -----------------------------------------------------------------


def forge_header(
    name: str | bytes,
    *,
    size: int = 0,
    typeflag: bytes = b"0",
    mode: int = 0o644,
    linkname: bytes = b"",
    prefix: bytes = b"",
) -> bytes:
    """A USTAR header with any name, type and size (nothing is checked: that is the point)."""
    raw_name = name.encode() if isinstance(name, str) else name
    block = bytearray(BLOCK)
    block[0 : len(raw_name)] = raw_name
    block[100:108] = f"{mode:07o}\0".encode()
    block[108:116] = b"0001750\0"
    block[116:124] = b"0000000\0"
    block[124:136] = f"{size:011o}\0".encode()
    block[136:148] = b"00000000000\0"
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157 : 157 + len(linkname)] = linkname
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[329:337] = b"0000000\0"
    block[337:345] = b"0000000\0"
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def forge_file(name: str | bytes, data: bytes, **kwargs: object) -> bytes:
    header = forge_header(name, size=len(data), **kwargs)  # type: ignore[arg-type]
    return header + data + b"\0" * ((-len(data)) % BLOCK)


def forge_tar(*members: bytes, end: bool = True) -> bytes:
    return b"".join(members) + (b"\0" * (2 * BLOCK) if end else b"")


def store_modelkit(
    home: Path,
    layers: list[tuple[str, bytes]],
    *,
    tag: str = "v1",
    repository: str = "localhost/hostile",
    kitfile: dict | None = None,  # type: ignore[type-arg]
) -> str:
    """Put a hand-built ModelKit into local storage: ``layers`` are (kind, blob) pairs.

    The config names each layer's path (``model`` for the model, ``<kind>-<i>`` otherwise) but
    records no digests, so that only the manifest vouches for the blobs.
    """
    store = LocalStore(home / "storage")
    store.ensure()
    descs = []
    config: dict = kitfile or {"manifestVersion": "1.0.0", "package": {"name": "hostile"}}  # type: ignore[type-arg]
    for i, (kind, data) in enumerate(layers):
        digest = store.put_blob(data)
        compression = "gzip" if data[:2] == b"\x1f\x8b" else "none"
        descs.append(Descriptor(media.layer_media_type(kind, compression), digest, len(data)))
        if kitfile is None:
            if kind == "model":
                config["model"] = {"name": "m", "path": "model"}
            else:
                section = {"dataset": "datasets"}.get(kind, kind)
                entry = {"path": f"{kind}-{i}"}
                if kind == "dataset":
                    entry["name"] = f"ds{i}"
                config.setdefault(section, []).append(entry)
    body = json.dumps(config, separators=(",", ":")).encode()
    config_desc = Descriptor(media.KIT_CONFIG, store.put_blob(body), len(body))
    manifest = Manifest(config=config_desc, layers=tuple(descs))
    data = manifest.to_bytes()
    store.put_blob(data)
    store.repo(repository).add(manifest.descriptor(data), [tag])
    return manifest.descriptor(data).digest


def refuse_o_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``os.open`` refuse ``O_DIRECT`` (EINVAL), as a file system without it does."""
    real_open = os.open

    def no_direct(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
