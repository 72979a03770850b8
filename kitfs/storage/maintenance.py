"""What ``kitfs cache ls|prune|info|clear`` do to the mount cache and to kit's cache directory.

Safe while mounts run: a layer tar is removed only under the same exclusive, non-waiting ``flock``
that eviction takes (``BlobCache.remove_tar``), so a tar an open file reads, in any process, stays;
temp files of live processes stay; a mount that needs a removed layer, manifest or index again
fetches and verifies it again. kit's cache (``$KITOPS_HOME/cache``) holds scratch directories of
running pulls and unpacks (``cache/KIND/PID``): those of live processes stay too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kitfs.errors import UsageError
from kitfs.storage.cache import BlobCache, process_gone
from kitfs.storage.tagrecords import TagRecords

log = logging.getLogger(__name__)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` in seconds."""
    match = _DURATION_RE.match(text.lower())
    if not match:
        raise UsageError(f"invalid duration {text!r}: use a number and s, m, h, d or w (e.g. 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class CachedLayer:
    digest: str  # the digest of the uncompressed tar (the layer's diffId)
    size: int
    last_used: float
    in_use: bool
    layers: tuple[str, ...] = ()  # the layer blob digests indexed to this tar


@dataclass(frozen=True)
class CachedModelKit:
    reference: str
    digest: str
    resolved_at: float
    manifest_cached: bool


@dataclass(frozen=True)
class Listing:
    layers: list[CachedLayer]
    modelkits: list[CachedModelKit]
    small_blobs: int
    small_bytes: int


@dataclass
class Pruned:
    layers: int = 0
    bytes: int = 0
    in_use: list[str] = field(default_factory=list)
    small_blobs: int = 0
    records: int = 0


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file()]


def _in_use(path: Path) -> bool:
    """Whether an open file holds the tar (its shared flock blocks an exclusive one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _index_map(cache: BlobCache) -> dict[str, list[str]]:
    """diffId -> the layer blob digests whose cached index names it."""
    found: dict[str, list[str]] = {}
    for path in _files(cache.indexes):
        record = cache.read_record(f"sha256:{path.name}")
        if record is not None:
            found.setdefault(record.diff_id, []).append(record.digest)
    return found


def listing(cache: BlobCache) -> Listing:
    """The layers, ModelKits (recorded tags) and small blobs in the cache."""
    indexed = _index_map(cache)
    layers = []
    for path in _files(cache.tars):
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            digest = f"sha256:{path.name}"
            layers.append(
                CachedLayer(
                    digest,
                    st.st_size,
                    st.st_mtime,
                    _in_use(path),
                    tuple(d for d in indexed.get(digest, []) if d != digest),
                )
            )
    layers.sort(key=lambda layer: -layer.last_used)
    blobs = _files(cache.blobs)
    present = {p.name for p in blobs}
    kits = [
        CachedModelKit(name, digest, when, digest.partition(":")[2] in present)
        for name, digest, when in TagRecords(cache.root).entries()
    ]
    return Listing(layers, kits, len(blobs), sum(_size(p) for p in blobs))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def prune(cache: BlobCache, *, older_than: float | None = None, everything: bool = False) -> Pruned:
    """Remove layers (with their indexes), manifests, configs and tag records not used for
    ``older_than`` seconds, or all of them with ``everything``; what is in use stays. Without
    either, only leftovers: temp files of processes that are gone, indexes of vanished tars."""
    cutoff = time.time() - older_than if older_than is not None else None

    def stale(path: Path) -> bool:
        if everything:
            return True
        if cutoff is None:
            return False
        try:
            return path.stat().st_mtime < cutoff
        except FileNotFoundError:
            return False

    result = Pruned()
    cache.ensure()  # drops temp files of crashed processes
    indexed = _index_map(cache)
    for path in _files(cache.tars):
        if not stale(path):
            continue
        digest = f"sha256:{path.name}"
        size = cache.remove_tar(digest)
        if size == 0 and path.exists():
            result.in_use.append(digest)
            continue
        result.layers += 1
        result.bytes += size
        for layer in indexed.get(digest, []):
            _unlink(cache.indexes / layer.partition(":")[2])
    for path in _files(cache.indexes):
        record = cache.read_record(f"sha256:{path.name}")
        orphan = record is None or not cache.tar_path(record.diff_id).exists()
        if orphan and (everything or stale(path) or record is None):
            _unlink(path)
    for path in _files(cache.blobs):
        if stale(path):
            result.small_blobs += int(_unlink(path))
    result.records += _prune_records(TagRecords(cache.root).root, stale)
    return result


def _prune_records(root: Path, stale: Callable[[Path], bool]) -> int:
    removed = 0
    if not root.is_dir():
        return removed
    for path in sorted(root.rglob("@tags/*")):
        if not path.name.startswith(".") and stale(path):
            removed += int(_unlink(path))
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only the empty ones go
    return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


# -- kit's cache directory ($KITOPS_HOME/cache) ---------------------------------------------------


def tree_size(path: Path) -> int:
    """Apparent size of a file or directory tree, directories included (as ``du -sb``; kit's
    ``cache info`` counts the same way)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    total = st.st_size
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def kit_cache_entries(kit_cache: Path) -> list[tuple[str, int]]:
    """(name, size) of each top-level entry of kit's cache directory, sorted by name."""
    if not kit_cache.is_dir():
        return []
    return [(p.name, tree_size(p)) for p in sorted(kit_cache.iterdir(), key=lambda p: p.name)]


def clear_kit_cache(kit_cache: Path) -> int:
    """Empty kit's cache directory as ``kit cache clear`` does, keeping the scratch directories
    (``KIND/PID``) of processes that still run; returns bytes removed."""
    freed = 0
    if not kit_cache.is_dir():
        return freed
    for entry in kit_cache.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            live = [
                p for p in entry.iterdir() if p.name.isdigit() and not process_gone(int(p.name))
            ]
            if live:
                for child in entry.iterdir():
                    if child not in live:
                        freed += _remove(child)
                continue
        freed += _remove(entry)
    return freed


def _remove(path: Path) -> int:
    size = tree_size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return size


def format_size(size: int) -> str:
    """kit's size format: ``100 B``, ``8.8 KiB``, ``2.8 MiB`` (one decimal, rounded down)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{int(value * 10) / 10:.1f} {unit}"
    raise AssertionError("unreachable")
