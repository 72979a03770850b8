"""What ``pack --layer-format raw`` and ``pack --use-model-pack`` change in what pack writes.

As current kit (pkg/lib/filesystem/local-storage.go, raw.go): a raw layer is the entry's one
regular file itself (compressed for kit's format, never for ModelPack), annotated with its
``org.cncf.model.filepath`` and model-spec file metadata; a ModelPack has the model-spec artifact
type, layer media types and config (kitfs.modelpack), and keeps its Kitfile in the manifest
annotation ``ml.kitops.modelkit.kitfile``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from kitfs.errors import PackError
from kitfs.kitfile import Entry, Kitfile
from kitfs.layers.codec import compressing_writer
from kitfs.layers.hashing import CHUNK, HashingWriter
from kitfs.layers.ignore import clean
from kitfs.layers.spanindex import SpanWriter, pin
from kitfs.layers.tarindex import TarEntry, clean_entry_name
from kitfs.modelpack import file_metadata, model_config_json
from kitfs.oci import media
from kitfs.oci.manifest import Descriptor
from kitfs.progress import ProgressSink
from kitfs.storage.local import LocalStore


@dataclass(frozen=True)
class PackFormat:
    """How to write a ModelKit: kit's format or ModelPack's, tar or raw layers."""

    modelpack: bool = False
    layer_format: str = "tar"

    @property
    def raw(self) -> bool:
        return self.layer_format == "raw"

    def check(self, compression: str) -> None:
        """Refuse what kit refuses (SaveModelOptions.Validate, IsValidLayerFormat)."""
        if self.layer_format not in media.LAYER_FORMATS:
            raise PackError("invalid layer format: must be either 'tar' or 'raw'")
        if self.modelpack and self.raw and compression != "none":
            raise PackError("compression for raw layers is not supported for ModelPack")

    def media_type(self, kind: str, compression: str) -> str:
        return media.layer_media_type(kind, compression, modelpack=self.modelpack, raw=self.raw)

    def check_entry(self, context: Path, entry: Entry) -> None:
        """A raw layer holds one regular file: a directory or symlink is refused before anything
        is written (kit's saveContentLayerAsRaw lstats it: "file ... is not a regular file")."""
        if self.raw and not stat.S_ISREG(os.lstat(context / clean(entry.path or ".")).st_mode):
            raise PackError(
                f"{entry.kind} path {entry.path or '.'!r}: file is not a regular file "
                "(--layer-format raw stores one file per layer)"
            )

    def config(self, kitfile: Kitfile, created: datetime | None) -> tuple[str, bytes]:
        """The config media type and blob: the Kitfile's JSON, or the model-spec config."""
        if not self.modelpack:
            return media.KIT_CONFIG, kitfile.to_config_json()
        diff_ids = [str(e.data.get("diffId", "")) for e in kitfile.entries()]
        return media.MODELPACK_CONFIG, model_config_json(kitfile, diff_ids, created)

    def artifact_type(self) -> str:
        return media.MODELPACK_ARTIFACT if self.modelpack else media.KIT_ARTIFACT

    def annotations(self, kitfile: Kitfile) -> dict[str, str]:
        """Manifest annotations this format adds: a ModelPack keeps its Kitfile (with digests)."""
        if not self.modelpack:
            return {}
        return {media.KITFILE_ANNOTATION: kitfile.to_config_json().decode("utf-8")}


KIT_TAR = PackFormat()


def write_raw_layer(
    context: Path,
    entry: Entry,
    compression: str,
    fmt: PackFormat,
    store: LocalStore,
    scratch: Path,
    progress: ProgressSink,
    span_size: int | None = None,
) -> Descriptor:
    """Store one regular file as a layer blob (compressed if asked); fill in digest and diffId.

    With a ``span_size`` the file is written span by span (for gzip and zstd, one member or frame
    per span: still one stream of the file's bytes, as kit reads it) and its span index travels
    inline in the manifest, since nothing may follow the file inside the blob."""
    base = clean(entry.path)
    source = context / base
    fd, tmp_name = tempfile.mkstemp(prefix="kitops_layer_", dir=scratch)
    tmp = Path(tmp_name)
    try:
        source_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(source_fd, "rb") as handle, os.fdopen(fd, "wb") as raw:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise PackError(f"file {base} is not a regular file")
            task = progress.task(f"pack {entry.kind} {base}", st.st_size)
            annotations = {
                media.MODELPACK_FILEPATH_ANNOTATION: base,
                media.MODELPACK_FILE_METADATA_ANNOTATION: file_metadata(source.name, st),
            }
            if span_size is None:
                blob_digest, blob_size, diff_id, size = _write_raw(
                    raw, handle, compression, task.advance
                )
            else:
                spans = SpanWriter(raw, compression, span_size)
                while chunk := handle.read(CHUNK):
                    spans.write(chunk)
                    task.advance(len(chunk))
                size = spans.position
                entries = [
                    TarEntry(
                        clean_entry_name(base), False, stat.S_IMODE(st.st_mode) & 0o777, size, 0
                    )
                ]
                annotations.update(
                    pin(spans.finish(entries), spans, inline_allowed=True, inline_only=True)
                )
                blob_digest, blob_size, diff_id = spans.blob_digest, spans.blob_size, spans.diff_id
            if size != st.st_size:
                raise PackError(f"{base} changed while it was being packed")
            raw.flush()
            os.fsync(raw.fileno())
        desc = Descriptor(
            fmt.media_type(entry.kind, compression),
            blob_digest,
            blob_size,
            annotations=annotations,
        )
        store.adopt_blob(tmp, desc.digest)
    except OSError as exc:
        raise PackError(f"failed to save file {base}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    entry.data["digest"] = desc.digest
    entry.data["diffId"] = diff_id
    return desc


def _write_raw(
    raw: BinaryIO, handle: BinaryIO, compression: str, advance: Callable[[int], None]
) -> tuple[str, int, str, int]:
    """The file as kit writes a raw layer: its bytes, compressed as one stream if asked."""
    blob = HashingWriter(raw)
    compressed = compressing_writer(blob, compression)  # type: ignore[arg-type]
    plain = HashingWriter(compressed)  # type: ignore[arg-type]
    while chunk := handle.read(CHUNK):
        plain.write(chunk)
        advance(len(chunk))
    if compressed is not blob:
        compressed.close()
    return blob.digest, blob.size, plain.digest, plain.size
