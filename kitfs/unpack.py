"""``kitfs unpack``: write a ModelKit's selected entries back to a directory, safely.

Each layer is read once (kitfs.staging): it is verified (the blob's digest, the uncompressed tar's
diffId when the config records it, and every entry through the strict tar reader) while its files
are written into a hidden staging directory in the target; only when every layer passed and no
conflict was found are the files renamed to their paths, never through a symbolic link. Filters follow kit (pkg/lib/kitfile/filter.go).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kitfs.atomic import write_atomic
from kitfs.errors import (
    KitfsError,
    NotFoundError,
    UnsafeContentError,
    UsageError,
)
from kitfs.kitfile import Kitfile
from kitfs.layers.pairing import LayerPair, LayerPairingError, pair_layers
from kitfs.layers.tarindex import TarEntry
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest
from kitfs.progress import NullProgress, ProgressSink
from kitfs.staging import StagedLayer, Staging, commit_file, stage_layer

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
    """Pair each layer with its Kitfile entry (by kind, in order: ``kitfs.layers.pairing``) and
    keep those the filters select."""
    try:
        pairing = pair_layers(manifest, kitfile)
    except LayerPairingError as exc:
        raise UnpackError(
            f"digest in config and manifest do not match in {exc.kind} layer {exc.number}"
        ) from None
    for desc in pairing.skipped:
        log.warning("unknown media type %s: skipping unpack", desc.media_type)
    return [
        _selected(pair) for pair in pairing.pairs if layer_selected(filters, pair.kind, pair.entry)
    ]


def _selected(pair: LayerPair) -> SelectedLayer:
    """The layer to unpack, with where kit puts its entries."""
    entry, layer_type = pair.entry, pair.layer_type
    prefix = (
        ""
        if pair.recorded_digest or not entry or layer_type.raw
        else legacy_prefix(pair.kind, str(entry.get("path", "")))
    )
    return SelectedLayer(pair.descriptor, pair.kind, entry, layer_type, prefix)


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
    staging: Staging | None = None,
    staged: dict[str, StagedLayer] | None = None,
) -> dict[str, int]:
    """Unpack the selected parts of a ModelKit; ``fetch`` yields a local path for each layer blob.

    Each layer is read once (kitfs.staging): verified while its files are written into a hidden
    staging directory in the target, then, once every layer passed, the files are renamed into
    place. ``staged`` holds layers a caller already staged in ``staging`` as they downloaded."""
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
    with contextlib.ExitStack() as stack:
        if staging is None:
            staging = stack.enter_context(_staging(root))
        ready = []
        for layer in layers:
            done = (staged or {}).get(layer.desc.digest)
            if done is None:
                done = _stage(layer, fetch(layer.desc), staging, sink)
            entries = done.entries
            if layer.prefix:
                entries = [replace(e, name=_under(layer.prefix, e.name)) for e in entries]
            claim_paths(claimed, entries, f"layer {layer.desc.digest[:19]}")
            check_conflicts(root, entries, options)
            ready.append((done, entries))
        counts = {"kitfile": 0, "layers": 0, "files": 0}
        if layer_selected(options.filters, "kitfile", None) and write_kitfile(
            kitfile, root, options.overwrite
        ):
            counts["kitfile"] = 1
        for done, entries in ready:
            try:
                counts["files"] += _commit(done, entries, root, options)
            except OSError as exc:  # disk full, permissions: name the file, not a traceback
                where = f"{exc.filename}: " if exc.filename else ""
                raise UnpackError(f"failed to unpack into {root}: {where}{exc.strerror}") from None
            counts["layers"] += 1
    report_remote_datasets(kitfile, options)
    return counts


def _staging(root: Path) -> Staging:
    try:
        return Staging(root)
    except OSError as exc:
        raise UnpackError(f"failed to unpack into {root}: {exc.strerror}") from None


def _stage(
    layer: SelectedLayer, located: Path | VerifiedTar, staging: Staging, sink: ProgressSink
) -> StagedLayer:
    """Read one local layer once: verify it and stage its files."""
    path, desc, compression = _layer_file(located, layer)
    if not path.is_file():
        raise NotFoundError(f"layer {desc.digest} is missing from local storage")
    diff_id = str(layer.entry.get("diffId") or "") or None
    # Progress counts the bytes of files written: known up front only for an uncompressed blob.
    total = desc.size if compression == "none" else None
    task = sink.task(f"unpack {layer.kind} {layer.entry.get('path', '')}", total)
    return stage_layer(
        path,
        desc,
        compression,
        diff_id,
        staging,
        raw=layer.layer_type.raw,
        advance=task.advance,
    )


def _commit(layer: StagedLayer, entries: list[TarEntry], root: Path, options: UnpackOptions) -> int:
    """Move a staged layer's files to their paths and make its directories; count the files."""
    written = 0
    for index, entry in enumerate(entries):
        name = entry.name
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
        commit_file(layer.files[index], target)
        written += 1
    return written


def report_remote_datasets(kitfile: Kitfile, options: UnpackOptions) -> None:
    """Say plainly which selected datasets live outside the ModelKit and were not unpacked."""
    for dataset in kitfile.remote_datasets():
        if options.notify is not None and layer_selected(options.filters, "dataset", dataset):
            name = dataset.get("name") or dataset.get("path", "")
            options.notify(
                f"Dataset {name} is remote ({dataset['remotePath']}): not unpacked to "
                f"{dataset.get('path') or '.'}; kitfs does not fetch remote datasets"
            )
