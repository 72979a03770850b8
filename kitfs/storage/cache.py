"""The content-addressed cache behind mounts: verified layer tars, their indexes, small blobs.

Layout under the cache directory (``$XDG_CACHE_HOME/kitfs`` unless ``--cache-dir``)::

    tars/sha256/<hex>      an uncompressed layer tar, named by its digest (the layer's diffId)
    index/sha256/<hex>     the entry index of a layer, named by the layer's (compressed) digest
    blobs/sha256/<hex>     small blobs (configs, span indexes)
    spans/sha256/<hex>     the uncompressed bytes of one verified span of a layer, named by the
                           digest of the span as stored in the blob (kitfs/layers/spanindex.py)
    locks/<hex>            one lock file per digest: a process fetching it holds it exclusively
    tmp/                   downloads in flight
    logs/                  mount daemon logs

The cache is private by default: its directories are ``0700`` and its files ``0600`` (a mount is
private to its user, and so must be the bytes behind it); an existing cache with wider directories is
tightened. A *shared* cache (``--shared-cache``, ``-o shared_cache``, ``$KITFS_SHARED_CACHE=1``: a
node cache behind ``-o allow_other`` mounts) is ``0755``/``0644``: readable by every user, written by
its owner.

Files appear only by an atomic rename after verification, so a reader never sees a partial file.
Several mount processes share the cache: fetches of one digest are serialised by ``flock`` on its
lock file, and a tar an open file is reading is held with a shared ``flock`` that eviction (which
takes an exclusive one, without waiting) respects. Eviction removes the least recently used tars and
spans (their mtime is bumped on each use) until the cache fits in its size bound.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitfs.atomic import write_atomic
from kitfs.errors import DigestMismatchError, StorageError
from kitfs.layers.tarindex import TarEntry
from kitfs.oci.manifest import sha256_digest

log = logging.getLogger(__name__)

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
INDEX_VERSION = 1
ENV_SHARED = "KITFS_SHARED_CACHE"
PRIVATE_MODES = (0o700, 0o600)  # directories, files
SHARED_MODES = (0o755, 0o644)
STALE_TEMP_SECONDS = 24 * 3600


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest; StorageError for anything else (it names files)."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or not _HEX_RE.match(hexpart):
        raise StorageError(f"unsupported digest {digest!r} (sha256 expected)")
    return hexpart


@dataclass(frozen=True)
class LayerRecord:
    """What the cache knows about a layer blob: the digest of its uncompressed tar and its entries."""

    digest: str
    diff_id: str
    entries: tuple[TarEntry, ...]


class PinnedTar:
    """An open, shared-locked cached tar: eviction leaves it alone until ``close``."""

    def __init__(self, fd: int, path: Path, size: int) -> None:
        self.fd = fd
        self.path = path
        self.size = size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def shared_from_env() -> bool:
    """Whether ``$KITFS_SHARED_CACHE`` asks for a shared cache (1, true, yes)."""
    return os.environ.get(ENV_SHARED, "").strip().lower() in ("1", "true", "yes", "on")


def _writer_gone(name: str) -> bool:
    """Whether the process named in a temp file's name (``[.]NAME.PID.NS...``) has exited."""
    parts = name.lstrip(".").split(".")
    return len(parts) >= 3 and parts[1].isdigit() and process_gone(int(parts[1]))


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped yet counts as exited): its temp
    files are nobody's any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] == "Z"
    except (OSError, IndexError):
        return False


class BlobCache:
    """A cache directory; every method is blocking (call it from a worker thread under trio)."""

    def __init__(self, root: Path, max_size: int | None = None, shared: bool | None = None) -> None:
        self.root = root
        self.max_size = max_size
        self.shared = shared_from_env() if shared is None else shared
        self.dir_mode, self.file_mode = SHARED_MODES if self.shared else PRIVATE_MODES
        self.tars = root / "tars" / "sha256"
        self.indexes = root / "index" / "sha256"
        self.blobs = root / "blobs" / "sha256"
        self.spans = root / "spans" / "sha256"
        self.locks = root / "locks"
        self.tmp = root / "tmp"
        self.logs = root / "logs"

    def ensure(self) -> BlobCache:
        """Create the directories and drop temp files that crashed processes left behind."""
        found = self._existing()
        try:
            for directory in (
                self.tars,
                self.indexes,
                self.blobs,
                self.spans,
                self.locks,
                self.tmp,
                self.logs,
            ):
                self._make(directory)
        except OSError as exc:
            raise StorageError(
                f"cannot create the cache directory {self.root}: {exc.strerror}"
            ) from None
        self._set_modes(found)
        self._remove_stale_temps()
        return self

    def _make(self, directory: Path) -> None:
        """Create ``directory`` and the missing ones between it and the cache's root, each with
        the cache's mode from the start (``mkdir -p`` gives the ones between the default mode:
        another process ensuring the same new cache meanwhile took them for an older kitfs's and
        warned that it tightened them)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=self.dir_mode)
        inside = [directory, *directory.parents]
        for path in reversed(inside[: inside.index(self.root)]):
            path.mkdir(exist_ok=True, mode=self.dir_mode)

    def _existing(self) -> set[Path]:
        """The cache directory and its subdirectories as they are before ``ensure``."""
        try:
            return {self.root, *self.root.iterdir()}
        except OSError:
            return set()

    def _set_modes(self, found: set[Path]) -> None:
        """Give the cache's directories their mode: a private cache ``found`` wider (made by an
        older kitfs, or shared before) is tightened with a warning, or a warning says why it
        cannot be; what ``ensure`` just created is set quietly."""
        for directory in sorted({self.root, *self.root.iterdir()}):
            with contextlib.suppress(FileNotFoundError):
                st = directory.lstat()
                if not stat.S_ISDIR(st.st_mode) or (st.st_mode & 0o777) == self.dir_mode:
                    continue
                if not self.shared and not st.st_mode & 0o077:
                    continue  # narrower than ours already
                try:
                    os.chmod(directory, self.dir_mode)
                except OSError as exc:
                    log.warning(
                        "the cache directory %s is mode %o, not %o, and cannot be changed (%s)",
                        directory,
                        st.st_mode & 0o777,
                        self.dir_mode,
                        exc.strerror,
                    )
                    continue
                if not self.shared and directory in found:
                    log.warning("tightened the cache directory %s to mode 700", directory)

    def _remove_stale_temps(self) -> None:
        """Remove temp files older than a day, and at once those of processes that are gone
        (their names carry the writer's pid: ``temp_path``)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for directory in (self.tmp, self.tars, self.blobs):
            for path in directory.iterdir():
                if path.name.startswith(".") or directory is self.tmp:
                    with contextlib.suppress(OSError):
                        if path.stat().st_mtime < cutoff or _writer_gone(path.name):
                            path.unlink()

    def drop_partials(self, digest: str) -> None:
        """Remove partial downloads of ``digest`` among the tars (a crashed fetch leaves them);
        call it holding the digest's fetch lock, which every writer of them holds."""
        for path in self.tars.glob(f".{digest_hex(digest)}.*.partial"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                log.info("removed %s, left by an interrupted download", path.name)

    # -- small blobs --------------------------------------------------------------------------

    def read_blob(self, digest: str) -> bytes | None:
        """A cached small blob, checked against its digest (None when absent or damaged)."""
        path = self.blobs / digest_hex(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256_digest(data) != digest:
            log.warning("cached blob %s is damaged: removing it", digest)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return data

    def write_blob(self, digest: str, data: bytes) -> None:
        actual = sha256_digest(data)
        if actual != digest:
            raise DigestMismatchError(digest, actual)
        write_atomic(self.blobs / digest_hex(digest), data, self.file_mode)

    # -- layer indexes ------------------------------------------------------------------------

    def read_record(self, digest: str) -> LayerRecord | None:
        """The index of a layer (by its blob digest), written after the layer was verified."""
        path = self.indexes / digest_hex(digest)
        try:
            raw = json.loads(path.read_bytes())
            if raw.get("version") != INDEX_VERSION or raw.get("digest") != digest:
                return None
            entries = tuple(TarEntry(n, bool(d), m, s, o, t) for n, d, m, s, o, t in raw["entries"])
            diff_id = str(raw["diffId"])
            digest_hex(diff_id)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError, StorageError):
            log.warning("cached index of layer %s is unreadable: it will be rebuilt", digest)
            return None
        return LayerRecord(digest, diff_id, entries)

    def write_record(self, record: LayerRecord) -> None:
        body: dict[str, Any] = {
            "version": INDEX_VERSION,
            "digest": record.digest,
            "diffId": record.diff_id,
            "entries": [
                [e.name, int(e.is_dir), e.mode, e.size, e.offset, e.mtime] for e in record.entries
            ],
        }
        write_atomic(
            self.indexes / digest_hex(record.digest), json.dumps(body).encode(), self.file_mode
        )

    # -- layer tars ---------------------------------------------------------------------------

    def tar_path(self, diff_id: str) -> Path:
        return self.tars / digest_hex(diff_id)

    def temp_path(self, name: str) -> Path:
        """A path in the cache's temp directory (same file system as the tars, for rename)."""
        return self.tmp / f"{name}.{os.getpid()}.{time.monotonic_ns()}"

    def commit_tar(self, temp: Path, diff_id: str) -> Path:
        """Move a verified temp file into place as the tar ``diff_id``."""
        path = self.tar_path(diff_id)
        os.chmod(temp, self.file_mode)
        os.replace(temp, path)
        return path

    # -- spans --------------------------------------------------------------------------------

    def span_path(self, digest: str) -> Path:
        return self.spans / digest_hex(digest)

    def commit_span(self, temp: Path, digest: str) -> Path:
        """Move a verified span's bytes into place (only verified bytes ever get this name)."""
        path = self.span_path(digest)
        os.chmod(temp, self.file_mode)
        os.replace(temp, path)
        return path

    def pin(self, diff_id: str) -> PinnedTar | None:
        """Open a cached tar and hold it against eviction; None when it is not cached.

        The shared lock is taken, then the path checked again: an evictor that won the race has
        unlinked it by then, and we answer "not cached" rather than serve a file about to vanish.
        """
        path = self.tar_path(diff_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            opened = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_ino, current.st_dev) != (
                opened.st_ino,
                opened.st_dev,
            ):
                os.close(fd)
                return None
            with contextlib.suppress(OSError):
                os.utime(path)  # most recently used
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return PinnedTar(fd, path, opened.st_size)

    # -- fetch locks --------------------------------------------------------------------------

    @contextlib.contextmanager
    def try_fetch_lock(self, digest: str) -> Iterator[bool]:
        """Hold the exclusive fetch lock of ``digest`` if free; yields whether it was taken."""
        path = self.locks / digest_hex(digest)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- size bound ---------------------------------------------------------------------------

    def usage(self) -> int:
        """Bytes held by cached tars, spans and temp files."""
        total = 0
        for directory in (self.tars, self.spans, self.tmp):
            for path in directory.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    def make_room(self, incoming: int) -> int:
        """Evict least recently used tars until ``incoming`` more bytes fit; return bytes freed.

        Tars that an open file reads (shared-locked, in this or another process) are skipped, so
        the bound is a target: pinned layers may keep the cache above it.
        """
        if self.max_size is None:
            return 0
        with self._eviction_lock():
            excess = self.usage() + incoming - self.max_size
            if excess <= 0:
                return 0
            freed = 0
            for _mtime, path in self._tars_by_age():
                if freed >= excess:
                    break
                freed += self._evict(path)
            if freed < excess:
                log.info(
                    "cache %s stays %d bytes above its bound: the rest is in use",
                    self.root,
                    excess - freed,
                )
            return freed

    @contextlib.contextmanager
    def _eviction_lock(self) -> Iterator[None]:
        fd = os.open(self.locks / "evict", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _tars_by_age(self) -> list[tuple[float, Path]]:
        found = []
        for directory in (self.tars, self.spans):
            for path in directory.iterdir():
                if path.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    found.append((path.stat().st_mtime, path))
        return sorted(found)

    def _evict(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    log.debug("not evicting %s: an open file reads it", path.name)
                    return 0
                raise
            size = os.fstat(fd).st_size
            path.unlink()
            kind = "span" if path.parent == self.spans else "layer"
            log.info("evicted %s sha256:%s (%d bytes) from the cache", kind, path.name, size)
            return size
        except FileNotFoundError:
            return 0
        finally:
            os.close(fd)

    # -- removal on request (``kitfs cache prune``) ----------------------------------------------

    def remove_tar(self, diff_id: str) -> int:
        """Remove the tar ``diff_id`` unless an open file reads it (then 0), as eviction does."""
        with self._eviction_lock():
            return self._evict(self.tar_path(diff_id))
