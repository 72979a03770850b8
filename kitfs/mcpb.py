"""MCP Bundles (``.mcpb``): the checks kit makes before packing one, and its raw layer.

A Kitfile's ``mcpServers`` entry names one ``.mcpb`` file, a ZIP archive with a ``manifest.json`` at
its root. kit checks exactly that (pkg/lib/filesystem/mcpb.go ``ValidateMCPB``) and stores the file
verbatim as one raw, uncompressed layer (``application/vnd.kitops.modelkit.mcpb.v1.raw``), so the
layer digest covers the bundle's bytes. We make the same checks and refuse, in addition, bundles
that could hurt whoever unzips them: entries with absolute or ``..`` names, and a ``manifest.json``
that does not read back within a small bound (a zip bomb). Nothing is ever extracted here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

from kitfs.errors import PackError
from kitfs.kitfile import Entry
from kitfs.layers.ignore import clean
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor
from kitfs.storage.local import LocalStore

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # a bundle manifest is a few KiB; more is not a manifest
_CHUNK = 1 << 20


def validate_bundle(path: Path, shown: str) -> None:
    """Raise PackError unless ``path`` is a regular file holding a ZIP with a root manifest.json.

    A symbolic link is refused, as kit's raw layer writer refuses anything but a regular file."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise PackError(f"failed to read MCP bundle {shown}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PackError(f"MCP bundle path {shown} must be a single .mcpb file")
    try:
        with zipfile.ZipFile(path) as bundle:
            _check_names(bundle, shown)
            _check_manifest(bundle, shown)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        EOFError,
        ValueError,
        RuntimeError,  # an encrypted manifest.json
    ) as exc:
        raise PackError(f"MCP bundle {shown} is not a valid ZIP archive: {exc}") from None
    except OSError as exc:
        raise PackError(f"failed to read MCP bundle {shown}: {exc.strerror or exc}") from None


def _check_names(bundle: zipfile.ZipFile, shown: str) -> None:
    for info in bundle.infolist():
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or (len(name) > 1 and name[1] == ":"):
            raise PackError(
                f"MCP bundle {shown} is refused: entry {info.filename!r} would unzip outside "
                "its directory"
            )


def _check_manifest(bundle: zipfile.ZipFile, shown: str) -> None:
    try:
        info = bundle.getinfo(MANIFEST_NAME)
    except KeyError:
        raise PackError(
            f"MCP bundle {shown} does not contain a manifest.json at its root"
        ) from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise PackError(
            f"MCP bundle {shown} is refused: its manifest.json claims {info.file_size} bytes "
            f"(at most {MAX_MANIFEST_BYTES} are read)"
        )
    # Read with a bound: a forged size in the directory must not make us inflate without end.
    with bundle.open(info) as member:
        data = member.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise PackError(f"MCP bundle {shown} is refused: its manifest.json inflates past its size")


def write_layer(context: Path, entry: Entry, store: LocalStore, scratch: Path) -> Descriptor:
    """Check the bundle, store its bytes as one raw layer and return the layer's descriptor.

    As kit's saveContentLayerAsRaw, the descriptor carries the file's path and model-spec file
    metadata; digest and diffId are the same (the layer is the uncompressed file).
    """
    rel = clean(entry.path)
    source = context / rel
    validate_bundle(source, rel)  # a clear message for a directory, a link, a missing file
    fd, tmp_name = tempfile.mkstemp(prefix="kitops_layer_", dir=scratch)
    tmp = Path(tmp_name)
    try:
        hasher = hashlib.sha256()
        src_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "wb") as out, os.fdopen(src_fd, "rb") as src:
            st = os.fstat(src.fileno())
            size = 0
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != st.st_size:
            raise PackError(f"{rel} changed while it was being packed")
        validate_bundle(tmp, rel)  # the bytes stored are the bytes checked
        digest = "sha256:" + hasher.hexdigest()
        store.adopt_blob(tmp, digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    entry.data["digest"] = digest
    entry.data["diffId"] = digest
    return Descriptor(
        media.MCPB_LAYER,
        digest,
        size,
        annotations={
            media.MODELPACK_FILEPATH_ANNOTATION: rel,
            media.MODELPACK_FILE_METADATA_ANNOTATION: file_metadata_json(Path(rel).name, st),
        },
    )


def file_metadata_json(name: str, st: os.stat_result) -> str:
    """model-spec's FileMetadata as Go's json.Marshal writes it (specs-go/v1/annotations.go):
    name, mode (permission bits), uid and gid 0, size, mtime (RFC 3339 with nanoseconds, local
    zone, as Go's time.Time) and typeflag (0 for a regular file), in that order."""
    meta = {
        "name": name,
        "mode": stat.S_IMODE(st.st_mode) & 0o777,
        "uid": 0,
        "gid": 0,
        "size": st.st_size,
        "mtime": go_time_json(st.st_mtime_ns),
        "typeflag": 0,
    }
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=False)


def go_time_json(ns: int) -> str:
    """A time as Go's time.Time.MarshalJSON writes it: RFC 3339, trailing zeros of the
    nanoseconds dropped, ``Z`` for UTC, else the local offset."""
    local = datetime.fromtimestamp(ns // 1_000_000_000).astimezone()
    fraction = f"{ns % 1_000_000_000:09d}".rstrip("0")
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "")
    offset = local.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
