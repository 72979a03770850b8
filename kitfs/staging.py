"""One pass for ``unpack``: each layer is read once, and its files land only after everything passed.

A layer's blob (a file, or a download's bytes as they arrive, kitfs.layers.pipe) is hashed,
decompressed, hashed again (the diffId) and run through the strict tar reader in one pass, and each
regular file's data is written, as the reader reaches it, into a hidden staging directory inside the
target (``.kitfs-unpack-<pid>-<random>``, so that the final rename never crosses a file system). Staged
files have numbers, not names: nothing from the layer is used as a path until the layer passed.

Only when every selected layer has passed (digests, diffIds, entry checks, conflicts with what the
target holds and between layers) are the files renamed to their paths, each through
:func:`kitfs.unpack` 's symlink-refusing parent check. A failure at any point removes the staging
directory: the target is as it was (a crash leaves the hidden directory, which the next unpack into
the same target removes once its process is gone).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from kitfs.errors import KitfsError
from kitfs.layers.codec import inflate_limit
from kitfs.layers.raw import raw_entry, raw_mode, scan_raw
from kitfs.layers.scan import ScanResult, check_blob, check_diff_id, scan_layer
from kitfs.layers.spanindex import trailing_allowance
from kitfs.layers.tarindex import TarEntry, TarReader
from kitfs.oci.manifest import Descriptor
from kitfs.storage.cache import process_gone

PREFIX = ".kitfs-unpack-"
Advance = Callable[[int], None]


class StagingError(KitfsError):
    """A staged file cannot be written (disk full, permissions)."""


@dataclass
class StagedLayer:
    """A verified layer whose regular files wait in the staging directory, by entry number."""

    result: ScanResult
    entries: list[TarEntry]
    files: dict[int, Path] = field(default_factory=dict)


class Staging:
    """The hidden directory in ``root`` where one unpack's files wait; removed by :meth:`close`."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{PREFIX}*"):  # left by an unpack that was killed
            owner = stale.name[len(PREFIX) :].partition("-")[0]
            if owner.isdigit() and process_gone(int(owner)) and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        self.dir = root / f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        self.dir.mkdir(mode=0o700)
        self._numbers = itertools.count(1)  # one next() at a time, from every staging thread

    def new_file(self, mode: int) -> tuple[Path, int]:
        """A new staged file (created with ``mode``, so the umask applies) and its fd."""
        path = self.dir / str(next(self._numbers))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
        except OSError as exc:
            raise StagingError(f"cannot write in {self.dir.parent}: {exc.strerror}") from None
        return path, fd

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stage_layer(
    source: Path | BinaryIO,
    desc: Descriptor,
    compression: str,
    diff_id: str | None,
    staging: Staging,
    *,
    raw: bool = False,
    verified: bool = False,
    advance: Advance | None = None,
) -> StagedLayer:
    """Verify a layer and stage its files in one pass (``verified``: the caller checks the blob's
    digest itself, as a download does). Raises the digest, diffId or content error that the
    layer fails with; staged files of a failed layer stay in ``staging`` until it is closed."""
    limit = inflate_limit(desc.size, compression)
    what = f"layer {desc.digest[:19]}"
    tick = advance or (lambda _n: None)
    if raw:
        staged_path, fd = staging.new_file(raw_mode(desc))
        os.close(fd)
        result = scan_raw(
            desc,
            source,
            compression,
            staged_path,
            limit=limit,
            what=what,
            verified=verified,
            durable=False,
            advance=tick,
        )
        entry = raw_entry(desc, result.tar_size)
        layer = StagedLayer(result, [entry], {0: staged_path})
    else:
        files: dict[int, Path] = {}
        count = [0]

        def extract(reader: TarReader, entry: TarEntry) -> None:
            index = count[0]
            count[0] += 1
            if entry.is_dir or entry.name == ".":
                return
            path, fd = staging.new_file(entry.mode)
            files[index] = path
            with os.fdopen(fd, "wb") as out:

                def sink(data: bytes) -> None:
                    out.write(data)
                    tick(len(data))

                try:
                    reader.read_data(entry, sink)
                except OSError as exc:
                    raise StagingError(
                        f"cannot write in {staging.dir.parent}: {exc.strerror}"
                    ) from None

        result = scan_layer(
            source,
            compression,
            None,
            limit=limit,
            what=what,
            expected_digest=desc.digest,
            verified=verified,
            trailing=trailing_allowance(desc.annotations, desc.size),
            extract=extract,
        )
        layer = StagedLayer(result, list(result.entries), files)
    check_blob(desc, result)
    check_diff_id(diff_id, desc, result)
    return layer


def commit_file(staged: Path, target: Path) -> None:
    """Move a staged file to its (already checked) path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
