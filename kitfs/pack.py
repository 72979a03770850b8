"""``kitfs pack``: turn a context directory and its Kitfile into a ModelKit in local storage.

Layers are written as kit writes them (pkg/lib/filesystem/tar.go, local-storage.go): one tar per
Kitfile entry, walked from the context directory in sorted order, entry names relative to it, parent
directories included, headers sanitised, other entries' paths and ``.kitignore`` matches left out.
The manifest follows kit's current shape (mediaType, artifactType, a ``org.cncf.model.filepath``
annotation per layer). kit also stamps ``org.opencontainers.image.created`` with the current time;
kitfs does so only when ``SOURCE_DATE_EPOCH`` is set, so that packing is reproducible by default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from kitfs import __version__, mcpb
from kitfs.config import Paths
from kitfs.errors import KitfileError, KitfsError, PackError
from kitfs.kitfile import DEFAULT_NAMES, Entry, Kitfile, is_modelkit_reference
from kitfs.layers.codec import compressing_writer
from kitfs.layers.hashing import HashingWriter
from kitfs.layers.ignore import IgnoreRules, clean, is_within
from kitfs.layers.spanindex import DEFAULT_SPAN_SIZE, SpanWriter, pin
from kitfs.layers.tarindex import TarEntry, clean_entry_name
from kitfs.layers.tarwriter import BLOCK, TarWriter, header_bytes
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor, Manifest
from kitfs.packformat import KIT_TAR, PackFormat, write_raw_layer
from kitfs.progress import NullProgress, ProgressSink
from kitfs.reference import DEFAULT_TAG, Reference, is_valid_tag
from kitfs.reference import parse as parse_reference
from kitfs.storage.local import DEFAULT_REPOSITORY, LocalStore, display_repository

log = logging.getLogger(__name__)

CLI_VERSION = f"kitfs-{__version__}"
ARTIFACT_TYPE = media.KIT_ARTIFACT
CREATED_ANNOTATION = "org.opencontainers.image.created"
MAX_MODEL_REFERENCE_CHAIN = 10


@dataclass(frozen=True)
class PackResult:
    digest: str
    reference: Reference
    manifest: Manifest
    kitfile: Kitfile


def find_kitfile(context: Path, kitfile: str | None) -> tuple[bytes, str]:
    """The Kitfile's bytes and a name for messages: ``-f`` (``-`` is stdin), else a default name."""
    if kitfile == "-":
        import sys

        if sys.stdin.isatty():
            raise PackError("no Kitfile piped on standard input (-f -)")
        return sys.stdin.buffer.read(), "Kitfile from standard input"
    if kitfile:
        try:
            return Path(kitfile).read_bytes(), kitfile
        except OSError as exc:
            raise PackError(f"cannot read Kitfile {kitfile}: {exc.strerror}") from None
    for name in DEFAULT_NAMES:
        path = context / name
        if path.is_file():
            try:
                return path.read_bytes(), str(path)
            except OSError as exc:
                raise PackError(f"cannot read Kitfile {path}: {exc.strerror}") from None
    raise PackError(
        f"no Kitfile in {context} (looked for {', '.join(DEFAULT_NAMES)}); use -f to name one"
    )


def check_entry_path(context: Path, entry: Entry) -> None:
    """Refuse a Kitfile path that escapes the context directory or does not exist."""
    raw = entry.path or "."
    label = f"{entry.kind} path {raw!r}"
    if os.path.isabs(raw):
        raise PackError(f"{label}: absolute paths are not supported in a Kitfile")
    cleaned = clean(raw)
    if cleaned == ".." or cleaned.startswith("../"):
        raise PackError(f"{label} is outside the context directory {context}")
    full = context / cleaned
    real_context = context.resolve()
    try:
        real = full.resolve(strict=True)
    except FileNotFoundError:
        raise PackError(f"{label} does not exist in {context}") from None
    except OSError as exc:
        raise PackError(f"{label}: {exc.strerror}") from None
    if real != real_context and real_context not in real.parents:
        raise PackError(f"{label} resolves outside the context directory {context}")
    if not (real.is_file() or real.is_dir()):
        raise PackError(f"{label} is neither a file nor a directory")


def _same_tree(a: str, b: str) -> bool:
    """Whether one path is the other's ancestor or equal (kit's sameDirTree)."""
    return is_within(a, b) or is_within(b, a)


def _is_utf8(name: str) -> bool:
    """Whether a name from os.listdir is real UTF-8 (undecodable bytes come back as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk_layer(
    context: Path, layer_path: str, rules: IgnoreRules
) -> Iterator[tuple[str, os.stat_result]]:
    """Entries of one layer in kit's order: a sorted pre-order walk from the context root."""
    base = clean(layer_path)

    def visit(rel_dir: str) -> Iterator[tuple[str, os.stat_result]]:
        directory = context / rel_dir if rel_dir != "." else context
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise PackError(f"cannot read directory {directory}: {exc.strerror}") from None
        for name in names:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(context / rel)
            if stat.S_ISLNK(st.st_mode):
                if _same_tree(base, rel) and not rules.matches(rel, base):
                    log.warning(
                        "skipped symbolic link %s: ModelKits hold only files and directories", rel
                    )
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue
            if not _same_tree(base, rel):
                continue
            if rules.matches(rel, base):
                if stat.S_ISDIR(st.st_mode) and rules.has_exclusions:
                    yield from visit(rel)
                continue
            if not _is_utf8(rel):
                shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
                raise PackError(
                    f"cannot pack {shown}: its name is not valid UTF-8 "
                    "(rename it, or leave it out with .kitignore)"
                )
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                yield from visit(rel)

    yield from visit(".")


def write_layer(
    context: Path,
    entry: Entry,
    rules: IgnoreRules,
    compression: str,
    store: LocalStore,
    scratch: Path,
    progress: ProgressSink,
    span_size: int | None = DEFAULT_SPAN_SIZE,
    fmt: PackFormat = KIT_TAR,
) -> Descriptor:
    """Write one layer blob into the store; return its descriptor (digest and diffId filled in).

    With a ``span_size`` (the default) a tar layer gets a span index pinned by its annotations
    (kitfs/layers/spanindex.py); ``None`` writes the layer exactly as kit does, without one.
    """
    if entry.kind == "mcpserver":
        return mcpb.write_layer(context, entry, store, scratch)
    if fmt.raw:
        return write_raw_layer(
            context, entry, compression, fmt, store, scratch, progress, span_size
        )
    base = clean(entry.path)
    members = list(walk_layer(context, base, rules))
    total = sum(st.st_size for _, st in members if stat.S_ISREG(st.st_mode))
    if not members:
        log.warning("no files detected in %s layer with path %s", entry.kind, base)
    task = progress.task(f"pack {entry.kind} {base}", total)
    fd, tmp_name = tempfile.mkstemp(prefix="kitops_layer_", dir=scratch)
    tmp = Path(tmp_name)
    annotations = {media.MODELPACK_FILEPATH_ANNOTATION: base}
    try:
        with os.fdopen(fd, "wb") as raw:
            if span_size is None:
                blob_digest, blob_size, diff_id = _write_plain(
                    raw, members, context, compression, task.advance
                )
            else:
                blob_digest, blob_size, diff_id, pins = _write_spanned(
                    raw, members, context, compression, span_size, task.advance
                )
                annotations.update(pins)
            raw.flush()
            os.fsync(raw.fileno())
        desc = layer_descriptor(entry.kind, blob_digest, blob_size, annotations, compression, fmt)
        store.adopt_blob(tmp, desc.digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    entry.data["digest"] = desc.digest
    entry.data["diffId"] = diff_id
    return desc


Member = tuple[str, os.stat_result]


def _write_plain(
    raw: BinaryIO,
    members: list[Member],
    context: Path,
    compression: str,
    advance: Callable[[int], None],
) -> tuple[str, int, str]:
    """The layer as kit writes it: one tar, compressed as one stream."""
    blob = HashingWriter(raw)
    compressed = compressing_writer(blob, compression)  # type: ignore[arg-type]
    tar_out = HashingWriter(compressed)  # type: ignore[arg-type]
    writer = TarWriter(tar_out)  # type: ignore[arg-type]
    for rel, st in members:
        _add_member(writer, context, rel, st, advance)
    writer.close()
    if compressed is not blob:
        compressed.close()
    return blob.digest, blob.size, tar_out.digest


def _write_spanned(
    raw: BinaryIO,
    members: list[Member],
    context: Path,
    compression: str,
    span_size: int,
    advance: Callable[[int], None],
) -> tuple[str, int, str, dict[str, str]]:
    """The layer as independently verifiable spans, then its span index (inline or appended)."""
    spans = SpanWriter(raw, compression, span_size)
    writer = TarWriter(spans)  # type: ignore[arg-type]
    entries: list[TarEntry] = []
    for rel, st in members:
        is_dir = stat.S_ISDIR(st.st_mode)
        size = 0 if is_dir else st.st_size
        mode = stat.S_IMODE(st.st_mode)
        header = len(header_bytes(rel, is_dir=is_dir, mode=mode, size=size))
        spans.entry_starts(header + size + (-size % BLOCK))
        entries.append(
            TarEntry(clean_entry_name(rel), is_dir, mode, size, spans.position + header, 0)
        )
        _add_member(writer, context, rel, st, advance)
    writer.close()
    index = spans.finish(entries)
    pins = pin(index, spans, inline_allowed=True)
    return spans.blob_digest, spans.blob_size, spans.diff_id, pins


# kit packs prompts as code layers marked with a subtype annotation (local-storage.go).
_LAYER_KIND = {"prompt": "code"}


def layer_descriptor(
    kind: str,
    blob_digest: str,
    blob_size: int,
    annotations: dict[str, str],
    compression: str = "none",
    fmt: PackFormat = KIT_TAR,
) -> Descriptor:
    """The descriptor of a tar layer for a Kitfile entry of ``kind`` (prompts are code layers
    with kit's subtype annotation); ``annotations`` carry the file path and span-index pins."""
    return Descriptor(
        fmt.media_type(_LAYER_KIND.get(kind, kind), compression),
        blob_digest,
        blob_size,
        annotations={**annotations, **_subtype(kind)},
    )


def _subtype(kind: str) -> dict[str, str]:
    if kind == "prompt":
        return {media.LAYER_SUBTYPE_ANNOTATION: media.LAYER_SUBTYPE_PROMPT}
    return {}


def _add_member(
    writer: TarWriter, context: Path, rel: str, st: os.stat_result, advance: Callable[[int], None]
) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        writer.add_dir(rel, mode)
        return
    try:
        with open(context / rel, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size != st.st_size:
                raise PackError(f"{rel} changed while it was being packed")
            writer.add_file(rel, mode, size, _Counting(source, advance))  # type: ignore[arg-type]
    except OSError as exc:
        raise PackError(f"failed to open file for archiving: {rel}: {exc.strerror}") from None


class _Counting:
    def __init__(self, source: BinaryIO, advance: Callable[[int], None]) -> None:
        self._source = source
        self._advance = advance

    def read(self, size: int) -> bytes:
        data = self._source.read(size)
        self._advance(len(data))
        return data


def resolve_target(tag: str | None) -> Reference:
    """The reference to store under: ``-t`` (``latest`` when it has no tag), else untagged ``localhost/_``."""
    if not tag:
        return Reference("localhost", DEFAULT_REPOSITORY)
    ref = parse_reference(tag)
    if ref.digest:
        raise PackError(
            "--tag cannot name a digest: a ModelKit's digest is computed when it is packed"
        )
    if ref.tag is None:
        ref = Reference(ref.registry, ref.repository, DEFAULT_TAG, None, ref.extra_tags)
    return ref


def parent_layer_paths(store: LocalStore, kitfile: Kitfile, base_ref: str = "") -> list[str]:
    """Paths of the layers a model reference inherits (left out of ours), as kit's ResolveKitfile.

    The chain starts with the reference being packed (``base_ref``), so re-packing a tag that a
    parent points back to is a cycle; chains longer than ten references are refused.
    """
    model = kitfile.model
    if not model or not is_modelkit_reference(model.get("path", "")):
        return []
    target = model["path"]
    chain = [base_ref, target]
    paths: list[str] = []
    for _ in range(MAX_MODEL_REFERENCE_CHAIN):
        parent = _referenced_kitfile(store, target)
        paths += [e.path for e in parent.entries()]
        target = (parent.model or {}).get("path", "")
        if not is_modelkit_reference(target):
            return paths
        if target in chain:
            loop = "=>".join(chain[chain.index(target) :] + [target])
            raise PackError(f"found cycle in modelkit references: [{loop}]")
        chain.append(target)
    raise PackError(f"reached maximum number of model references: [{'=>'.join(chain)}]")


def _referenced_kitfile(store: LocalStore, target: str) -> Kitfile:
    try:
        _, desc = store.resolve(parse_reference(target))
        return store.load_kitfile(store.load_manifest(desc))
    except KitfsError as exc:
        raise PackError(f"failed to resolve referenced modelkit {target}: {exc}") from None


def pack(
    context_dir: str | os.PathLike[str],
    paths: Paths,
    *,
    kitfile_path: str | None = None,
    tag: str | None = None,
    compression: str = "none",
    progress: ProgressSink | None = None,
    span_size: int | None = DEFAULT_SPAN_SIZE,
    fmt: PackFormat = KIT_TAR,
) -> PackResult:
    """Pack ``context_dir`` into local storage and return the new ModelKit's digest and reference.

    ``fmt`` selects raw layers and the ModelPack format (kitfs.packformat)."""
    if compression not in media.COMPRESSIONS:
        raise PackError(
            f"invalid compression type {compression!r}: must be one of 'none', 'gzip', 'gzip-fastest', or 'zstd'"
        )
    fmt.check(compression)
    context = Path(context_dir).absolute()
    if not context.is_dir():
        raise PackError(f"context directory {context} does not exist or is not a directory")
    target = resolve_target(tag)
    for extra in target.extra_tags:
        if not is_valid_tag(extra):
            raise PackError(f"invalid tag {extra!r}")
    text, source = find_kitfile(context, kitfile_path)
    try:
        kitfile = Kitfile.from_yaml(text, source)
    except KitfileError as exc:
        raise PackError(str(exc)) from None
    entries = kitfile.entries()
    for entry in entries:
        check_entry_path(context, entry)
        fmt.check_entry(context, entry)
    try:
        return _pack_into(context, paths, kitfile, target, compression, progress, span_size, fmt)
    except OSError as exc:  # our own writes: storage or scratch space
        where = f"{exc.filename}: " if exc.filename else ""
        raise PackError(f"failed to write to local storage: {where}{exc.strerror}") from None


def _pack_into(
    context: Path,
    paths: Paths,
    kitfile: Kitfile,
    target: Reference,
    compression: str,
    progress: ProgressSink | None,
    span_size: int | None,
    fmt: PackFormat,
) -> PackResult:
    entries = kitfile.entries()
    store = LocalStore(paths.storage)
    store.ensure()
    extra_paths = parent_layer_paths(
        store, kitfile, display_repository(str(target.with_tag(target.tag)))
    )
    # kit's LayerPathsFromKitfile lists every dataset, remote ones too: their paths stay out of
    # other layers (pkg/lib/repo/util/kitfile.go).
    remote_paths = [str(d.get("path", "")) for d in kitfile.remote_datasets()]
    rules = IgnoreRules.from_context(
        context, [e.path for e in entries] + remote_paths + extra_paths
    )
    scratch = paths.cache / "pack"
    scratch.mkdir(parents=True, exist_ok=True)
    sink = progress or NullProgress()
    layers = [
        write_layer(context, e, rules, compression, store, scratch, sink, span_size, fmt)
        for e in entries
    ]
    for dataset in kitfile.remote_datasets():
        # kit checks an s3:// object exists before packing; kitfs has no S3 client and says so.
        log.warning(
            "dataset %s is remote (%s): kept in the Kitfile, not packed and not checked",
            dataset.get("name") or dataset.get("path", ""),
            dataset["remotePath"],
        )
    if not layers:
        log.warning("ModelKit contains no layers")
    return store_modelkit(store, kitfile, layers, target, fmt)


def store_modelkit(
    store: LocalStore,
    kitfile: Kitfile,
    layers: list[Descriptor],
    target: Reference,
    fmt: PackFormat = KIT_TAR,
) -> PackResult:
    """Write the config and manifest for layers already in ``store`` and tag it: the last step of
    pack, shared with import (kitfs.hub). ``kitfile``'s entries carry their digests and diffIds."""
    annotations = _manifest_annotations()
    created = annotations.get(CREATED_ANNOTATION)
    config_type, config = fmt.config(
        kitfile, datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z") if created else None
    )
    config_desc = Descriptor(config_type, store.put_blob(config), len(config))
    manifest = Manifest(
        config=config_desc,
        layers=tuple(layers),
        annotations=annotations | fmt.annotations(kitfile),
        media_type=media.OCI_MANIFEST,
        artifact_type=fmt.artifact_type(),
    )
    body = manifest.to_bytes()
    digest = store.put_blob(body)
    repo = store.repo_for(target)
    tags = [t for t in (target.tag, *target.extra_tags) if t]
    repo.add(manifest.descriptor(body), tags)
    return PackResult(digest, target, manifest, kitfile)


def _manifest_annotations() -> dict[str, str]:
    annotations = {media.CLI_VERSION_ANNOTATION: CLI_VERSION}
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            created = datetime.fromtimestamp(int(epoch), UTC)
        except ValueError:
            raise PackError(
                f"invalid SOURCE_DATE_EPOCH {epoch!r}: expected seconds since 1970"
            ) from None
        annotations[CREATED_ANNOTATION] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return annotations
