"""``kitfs unpack``: write a ModelKit's selected entries back to a directory, safely.

Each layer is read twice: first to verify it (the blob's digest, the uncompressed tar's diffId when the
config records it, and every entry through the strict tar reader) and to find conflicts, then to
extract. Nothing is written until a layer has passed the first pass; files land by atomic rename and
never through a symbolic link. Filters follow kit (pkg/lib/kitfile/filter.go).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from kitfs.atomic import write_atomic
from kitfs.errors import (
    KitfsError,
    NotFoundError,
    UnsafeContentError,
    UsageError,
)
from kitfs.kitfile import Kitfile
from kitfs.layers.codec import decompressing_reader, inflate_limit
from kitfs.layers.raw import copy_raw, scan_raw
from kitfs.layers.scan import check_blob, check_diff_id, scan_layer
from kitfs.layers.spanindex import trailing_allowance
from kitfs.layers.tarindex import TarEntry, TarReader
from kitfs.modelpack import layer_kinds
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest
from kitfs.progress import NullProgress, ProgressSink

log = logging.getLogger(__name__)

# kit's filter types, in its order (pkg/lib/kitfile/filter.go validFilterTypes).
FILTER_TYPES = ("kitfile", "model", "datasets", "code", "prompts", "docs", "mcpservers")
_KIND_TO_FILTER = {
    "model": "model",
    "modelpart": "model",
    "dataset": "datasets",
    "code": "code",
    "docs": "docs",
    "prompt": "prompts",
    "mcpserver": "mcpservers",
}


class UnpackError(KitfsError):
    """Unpacking cannot proceed without losing or endangering data."""


@dataclass(frozen=True)
class Filter:
    """One ``--filter TYPE[,TYPE][:NAME,...]``: the types it selects and, optionally, names or paths."""

    types: tuple[str, ...]
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Filter:
        parts = text.split(":")
        if len(parts) > 2:
            raise UsageError(
                f"invalid filter {text!r}: should be in format <type1>,<type2>[:<filter1>,<filter2>]"
            )
        types = tuple(parts[0].split(","))
        for kind in types:
            if kind not in FILTER_TYPES:
                raise UsageError(
                    f"invalid filter {text!r}: invalid filter type {kind} (must be one of {', '.join(FILTER_TYPES)})"
                )
        names = tuple(parts[1].split(",")) if len(parts) == 2 else ()
        return cls(types, names)

    def matches(self, kind: str, *fields: str) -> bool:
        if kind not in self.types:
            return False
        return not self.names or any(f in self.names for f in fields)


@dataclass
class UnpackOptions:
    target: Path
    filters: list[Filter] = field(default_factory=list)
    overwrite: bool = False
    ignore_existing: bool = False
    notify: Callable[[str], None] | None = None  # status lines for people (remote datasets)


def layer_selected(filters: list[Filter], kind: str, entry: dict[str, object] | None) -> bool:
    """kit's LayerMatchesAnyFilter: datasets/model/parts by name or path, code/docs by path."""
    if not filters:
        return True
    if kind == "kitfile":
        return any("kitfile" in f.types for f in filters)
    data = entry or {}
    path = str(data.get("path", ""))
    name = str(data.get("name", "") or "")
    fields = (path,) if kind in ("code", "docs") else (name, path)
    return any(f.matches(_KIND_TO_FILTER[kind], *fields) for f in filters)


def verify_layer(
    path: Path, desc: Descriptor, compression: str, diff_id: str | None, *, raw: bool = False
) -> list[TarEntry]:
    """Pass one: check digest, size, diffId and every entry; return the entries."""
    if not path.is_file():
        raise NotFoundError(f"layer {desc.digest} is missing from local storage")
    limit = inflate_limit(desc.size, compression)
    what = f"layer {desc.digest[:19]}"
    if raw:
        result = scan_raw(desc, path, compression, None, limit=limit, what=what)
    else:
        result = scan_layer(
            path,
            compression,
            None,
            limit=limit,
            what=what,
            expected_digest=desc.digest,
            trailing=trailing_allowance(desc.annotations, desc.size),
        )
    check_blob(desc, result)
    check_diff_id(diff_id, desc, result)
    return list(result.entries)


def _safe_parent(root: Path, rel: str) -> Path:
    """The directory that will hold ``rel``, refusing any symlink on the way."""
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeContentError(f"refused to unpack {rel}: {current} is a symbolic link")
        if not stat.S_ISDIR(st.st_mode):
            raise UnpackError(f"path '{current}' already exists and is not a directory")
    return current


def check_conflicts(root: Path, entries: list[TarEntry], options: UnpackOptions) -> None:
    """Refuse before writing anything: existing files without -o, files where dirs go, symlinks."""
    for entry in entries:
        if entry.name == ".":
            continue
        _safe_parent(root, entry.name)
        target = root / entry.name
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeContentError(f"refused to unpack {entry.name}: {target} is a symbolic link")
        if entry.is_dir:
            if not stat.S_ISDIR(st.st_mode):
                raise UnpackError(f"path '{target}' already exists and is not a directory")
        elif not stat.S_ISREG(st.st_mode):
            raise UnpackError(f"path '{target}' already exists and is not a regular file")
        elif not (options.overwrite or options.ignore_existing):
            raise UnpackError(f"path '{target}' already exists (use -o to overwrite)")


def claim_paths(claimed: dict[str, tuple[bool, str]], entries: list[TarEntry], owner: str) -> None:
    """Refuse entries that would replace what another layer (or the same one) writes.

    ``claimed`` maps each path to (is a directory, who writes it) across the layers of one
    unpack; a directory may come from several layers, anything else from one place only.
    """

    for entry in entries:
        if entry.name == ".":
            continue
        parts = entry.name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            is_dir, other = claimed.setdefault(parent, (True, owner))
            if not is_dir:
                raise UnsafeContentError(
                    f"refused {owner}: {entry.name} needs {parent} to be a directory, "
                    f"but {other} writes a file there"
                )
        previous = claimed.get(entry.name)
        if previous is not None and not (previous[0] and entry.is_dir):
            raise UnsafeContentError(
                f"refused {owner}: {entry.name} is also written by {previous[1]}"
            )
        claimed[entry.name] = (entry.is_dir, owner)


def extract_layer(
    path: Path,
    compression: str,
    root: Path,
    options: UnpackOptions,
    advance: Callable[[int], None],
    prefix: str = "",
) -> int:
    """Pass two: write files (temp + rename) and directories; return the number of files written.

    ``prefix`` places the entries under a directory (legacy layers, see :func:`legacy_prefix`).
    """
    written = 0
    with open(path, "rb") as raw:
        reader = TarReader(decompressing_reader(raw, compression))
        for entry in reader:
            name = _under(prefix, entry.name)
            if name == ".":
                continue
            target = root / name
            _safe_parent(root, name)
            if entry.is_dir:
                if not target.is_dir():
                    target.mkdir(mode=entry.mode & 0o777 or 0o755, parents=True)
                continue
            if options.ignore_existing and os.path.lexists(target):
                log.debug("%s already exists; skipping", target)
                continue
            _write_file(functools.partial(_copy_entry, reader, entry, advance), entry, target)
            written += 1
    return written


def _copy_entry(
    reader: TarReader, entry: TarEntry, advance: Callable[[int], None], out: BinaryIO
) -> None:
    def sink(data: bytes) -> None:
        out.write(data)
        advance(len(data))

    reader.read_data(entry, sink)


def extract_raw(
    desc: Descriptor,
    entry: TarEntry,
    path: Path,
    compression: str,
    root: Path,
    options: UnpackOptions,
    advance: Callable[[int], None],
) -> int:
    """Pass two for a raw layer: write its one file (the entry pass one found) at its path."""
    target = root / entry.name
    _safe_parent(root, entry.name)
    if options.ignore_existing and os.path.lexists(target):
        log.debug("%s already exists; skipping", target)
        return 0
    _write_file(lambda out: copy_raw(desc, path, compression, out, advance), entry, target)
    return 1


def _write_file(fill: Callable[[BinaryIO], object], entry: TarEntry, target: Path) -> None:
    """Write ``target`` through a temp file beside it that ``fill`` writes, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Created with the entry's mode so that the umask applies, as for kit's os.OpenFile.
    tmp = target.parent / f".{target.name[:40]}.{secrets.token_hex(6)}.kitfs-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, entry.mode & 0o777)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_kitfile(kitfile: Kitfile, root: Path, overwrite: bool) -> bool:
    """Write the Kitfile as kit does; an identical existing one is fine, a different one is refused."""
    body = kitfile.to_yaml().encode()
    target = root / "Kitfile"
    if os.path.lexists(target):
        if not target.is_file() or target.is_symlink():
            raise UnpackError(
                f"failed to unpack config: path {target} exists and is not a regular file"
            )
        if not overwrite:
            if target.read_bytes() == body:
                log.info("found existing Kitfile at %s", target)
                return False
            raise UnpackError(
                f"failed to unpack: {target} exists and does not match the ModelKit's Kitfile (use -o)"
            )
    write_atomic(target, body)
    return True


@dataclass(frozen=True)
class SelectedLayer:
    desc: Descriptor
    kind: str
    entry: dict[str, object]
    layer_type: media.LayerType
    prefix: str = ""  # where the tar's entries go, relative to the target ("" = the target)


PROMPT_SUBTYPE_ANNOTATION = media.LAYER_SUBTYPE_ANNOTATION


def legacy_prefix(kind: str, path: str) -> str:
    """Where kit unpacks a layer whose Kitfile entry records no digest (ModelKits from older kit).

    Those tars hold paths relative to the parent of the layer's path, so kit extracts them into
    ``filepath.Dir(path)`` (pkg/lib/filesystem/unpack/core.go); current tars hold full paths.
    """
    if posixpath.isabs(path):
        raise UnsafeContentError(
            f"error resolving {kind} path: absolute paths are not supported ({path})"
        )
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise UnsafeContentError(
            f"error resolving {kind} path {path}: layer paths must stay within the target directory"
        )
    return posixpath.dirname(cleaned)


def _under(prefix: str, name: str) -> str:
    if not prefix:
        return name
    return prefix if name == "." else f"{prefix}/{name}"


def select_layers(
    manifest: Manifest, kitfile: Kitfile, filters: list[Filter]
) -> list[SelectedLayer]:
    """Pair each layer with its Kitfile entry (by kind, in order) and keep those the filters select."""
    counters: dict[str, int] = {}
    model = kitfile.model or {}
    sections = {
        "model": [model] if model else [],
        "modelpart": list(model.get("parts") or []),
        "code": kitfile.section("code"),
        "dataset": [d for d in kitfile.section("datasets") if not d.get("remotePath")],
        "docs": kitfile.section("docs"),
        "prompt": kitfile.section("prompts"),
        "mcpserver": kitfile.section("mcpServers"),
    }
    selected = []
    for desc, kind in zip(manifest.layers, layer_kinds(manifest), strict=True):
        layer_type = media.parse_layer_media_type(desc.media_type)
        if layer_type is None or kind is None:
            log.warning("unknown media type %s: skipping unpack", desc.media_type)
            continue
        layer_type = replace(layer_type, kind=kind)
        if desc.annotations.get(PROMPT_SUBTYPE_ANNOTATION) == media.LAYER_SUBTYPE_PROMPT:
            # kit's prompts travel as code layers; they pair with the Kitfile's prompts.
            layer_type = replace(layer_type, kind="prompt")
        index = counters.get(layer_type.kind, 0)
        counters[layer_type.kind] = index + 1
        entries = sections[layer_type.kind]
        entry = entries[index] if index < len(entries) else {}
        recorded = entry.get("digest")
        if recorded and recorded != desc.digest:
            raise UnpackError(
                f"digest in config and manifest do not match in {layer_type.kind} layer {index}"
            )
        if layer_selected(filters, layer_type.kind, entry):
            prefix = (
                ""
                if recorded or not entry or layer_type.raw
                else legacy_prefix(layer_type.kind, str(entry.get("path", "")))
            )
            selected.append(SelectedLayer(desc, layer_type.kind, entry, layer_type, prefix))
    return selected


@dataclass(frozen=True)
class VerifiedTar:
    """A layer's uncompressed tar held elsewhere (the mount cache), to be checked against the
    ``diff_id`` that the ModelKit's config records for the layer."""

    path: Path
    diff_id: str


BlobFetcher = Callable[[Descriptor], Path | VerifiedTar]


def _layer_file(located: Path | VerifiedTar, layer: SelectedLayer) -> tuple[Path, Descriptor, str]:
    """(file, what it must hash to, its compression) for a located layer."""
    if isinstance(located, Path):
        return located, layer.desc, layer.layer_type.compression
    size = located.path.stat().st_size
    desc = Descriptor(
        layer.desc.media_type, located.diff_id, size, annotations=layer.desc.annotations
    )
    return located.path, desc, "none"


def unpack_modelkit(
    manifest: Manifest,
    kitfile: Kitfile,
    fetch: BlobFetcher,
    options: UnpackOptions,
    progress: ProgressSink | None = None,
) -> dict[str, int]:
    """Unpack the selected parts of a ModelKit; ``fetch`` yields a local path for each layer blob."""
    root = options.target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnpackError(f"failed to create directory {root}: {exc.strerror}") from None
    root = root.resolve()
    sink = progress or NullProgress()
    layers = select_layers(manifest, kitfile, options.filters)
    claimed: dict[str, tuple[bool, str]] = {}
    if layer_selected(options.filters, "kitfile", None):
        claimed["Kitfile"] = (False, "the ModelKit's Kitfile")
    verified = []
    for layer in layers:
        path, desc, compression = _layer_file(fetch(layer.desc), layer)
        diff_id = str(layer.entry.get("diffId") or "") or None
        entries = verify_layer(path, desc, compression, diff_id, raw=layer.layer_type.raw)
        if layer.prefix:
            entries = [replace(e, name=_under(layer.prefix, e.name)) for e in entries]
        claim_paths(claimed, entries, f"layer {layer.desc.digest[:19]}")
        check_conflicts(root, entries, options)
        verified.append((layer, path, desc, compression, entries))
    counts = {"kitfile": 0, "layers": 0, "files": 0}
    if layer_selected(options.filters, "kitfile", None) and write_kitfile(
        kitfile, root, options.overwrite
    ):
        counts["kitfile"] = 1
    for layer, path, desc, compression, entries in verified:
        total = sum(e.size for e in entries)
        task = sink.task(f"unpack {layer.kind} {layer.entry.get('path', '')}", total)
        try:
            if layer.layer_type.raw:
                counts["files"] += extract_raw(
                    desc, entries[0], path, compression, root, options, task.advance
                )
            else:
                counts["files"] += extract_layer(
                    path, compression, root, options, task.advance, layer.prefix
                )
        except OSError as exc:  # disk full, permissions: name the file, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            raise UnpackError(f"failed to unpack into {root}: {where}{exc.strerror}") from None
        counts["layers"] += 1
    report_remote_datasets(kitfile, options)
    return counts


def report_remote_datasets(kitfile: Kitfile, options: UnpackOptions) -> None:
    """Say plainly which selected datasets live outside the ModelKit and were not unpacked."""
    for dataset in kitfile.remote_datasets():
        if options.notify is not None and layer_selected(options.filters, "dataset", dataset):
            name = dataset.get("name") or dataset.get("path", "")
            options.notify(
                f"Dataset {name} is remote ({dataset['remotePath']}): not unpacked to "
                f"{dataset.get('path') or '.'}; kitfs does not fetch remote datasets"
            )
