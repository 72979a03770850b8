"""Layers under construction, resumable: one preallocated tar file per layer and a journal.

The scratch directory is named by the plan's key (repository, revision, every file's digest and
place), under ``$KITOPS_HOME/cache/kitfs-import`` (kit empties its own ``cache/import`` after every
import). Each layer file holds its tar headers from the start; downloads write file bytes at their
offsets. The journal records how many bytes of each file are on disk, and is written only after the
layer files were synced, so it never claims more than is there. An interrupted import that runs again
continues every file from where the journal says it stopped (an HTTP Range request); the bytes it
kept are verified with the rest when the layer is sealed. A lock keeps two imports of the same plan
from writing the same files.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from kitfs.atomic import write_atomic
from kitfs.hub.errors import HubError, Stopped
from kitfs.hub.plan import ImportPlan, LayerPlan, Member

log = logging.getLogger(__name__)

SCRATCH_SUBDIR = "kitfs-import"
# Record progress at most this often: syncing the layer files costs the disk a flush.
CHECKPOINT_SECONDS = 10.0
JOURNAL = "journal.json"
ORIGIN = "origin"


class Restarted(Exception):
    """A file being read started again from its first byte."""


def file_key(layer: LayerPlan, member: Member) -> str:
    return f"{layer.number}:{member.name}"


class Scratch:
    """The scratch directory of one plan: layer files, the journal, the lock."""

    def __init__(self, root: Path, plan: ImportPlan) -> None:
        self.root = root
        self.plan = plan
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._generation: dict[str, int] = {}  # bumped when a file starts again from byte 0
        self._last_checkpoint = time.monotonic()
        self._lock_handle: object = None
        self.done: dict[str, int] = {}

    @classmethod
    def open(cls, cache: Path, plan: ImportPlan, key: str, origin: str) -> Scratch:
        """Create or reopen the scratch directory for ``plan``; take its lock. ``origin`` names
        the endpoint, repository and revision, so that a later success can drop what it replaced."""
        scratch = cls(cache / SCRATCH_SUBDIR / key, plan)
        try:
            scratch.root.mkdir(parents=True, exist_ok=True)
            scratch._take_lock()
            write_atomic(scratch.root / ORIGIN, origin.encode())
            scratch._load_journal()
            for layer in plan.layers:
                scratch._prepare(layer)
        except OSError as exc:
            scratch.release()
            where = f"{exc.filename}: " if exc.filename else ""
            raise HubError(
                f"cannot prepare the import's scratch space: {where}{exc.strerror}"
            ) from None
        return scratch

    def _take_lock(self) -> None:
        handle = open(self.root / ".lock", "a")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise HubError(
                f"another kitfs import of the same repository is running (lock {self.root / '.lock'})"
            ) from None
        self._lock_handle = handle

    def release(self) -> None:
        handle = self._lock_handle
        if handle is not None:
            handle.close()  # type: ignore[attr-defined]
            self._lock_handle = None

    def _load_journal(self) -> None:
        try:
            raw = json.loads((self.root / JOURNAL).read_bytes())
        except (OSError, ValueError):
            return
        sizes = {file_key(ly, m): m.size for ly, m in self.plan.files()}
        if isinstance(raw, dict):
            for key, value in raw.items():
                if key in sizes and isinstance(value, int) and 0 <= value <= sizes[key]:
                    self.done[key] = value

    def layer_path(self, layer: LayerPlan) -> Path:
        return self.root / f"layer-{layer.number}.tar"

    def _prepare(self, layer: LayerPlan) -> None:
        """The layer file at its full size (space reserved up front), every header in place."""
        fd = os.open(self.layer_path(layer), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size > layer.tar_size:  # a span index a failed run appended when sealing
                os.ftruncate(fd, layer.tar_size)
            elif size < layer.tar_size:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, layer.tar_size)
                for member in layer.files():
                    self.done.pop(file_key(layer, member), None)
            try:
                os.posix_fallocate(fd, 0, layer.tar_size)
            except OSError as exc:  # not every filesystem can reserve space; a full one says so
                if exc.errno == errno.ENOSPC:
                    raise HubError(
                        f"not enough space in {self.root} for the layers "
                        f"({sum(ly.tar_size for ly in self.plan.layers)} bytes)"
                    ) from None
            for member in layer.members:
                os.pwrite(fd, member.header, member.header_offset)
        finally:
            os.close(fd)

    # -- progress -------------------------------------------------------------------------------

    def advance(self, key: str, amount: int) -> None:
        """``amount`` more bytes of a file are written; checkpoint now and then."""
        with self._lock:
            self.done[key] = self.done.get(key, 0) + amount
            self._changed.notify_all()
            now = time.monotonic()
            due = now - self._last_checkpoint >= CHECKPOINT_SECONDS
            if due:
                self._last_checkpoint = now
        if due:
            self.checkpoint()

    def restart(self, key: str) -> None:
        """A file starts again from its first byte (a server ignored Range, a digest failed)."""
        with self._lock:
            self.done[key] = 0
            self._generation[key] = self._generation.get(key, 0) + 1
            self._changed.notify_all()

    def generation(self, key: str) -> int:
        with self._lock:
            return self._generation.get(key, 0)

    def wait_for(self, key: str, beyond: int, generation: int, stop: threading.Event) -> int:
        """How many bytes of a file are on disk, once there are more than ``beyond``. Raises
        Restarted when the file started again since ``generation`` (what was read of it is stale),
        Stopped when the import is stopping."""
        with self._changed:
            while True:
                if self._generation.get(key, 0) != generation:
                    raise Restarted(key)
                have = self.done.get(key, 0)
                if have > beyond:
                    return have
                if stop.is_set():
                    raise Stopped("stopped")
                self._changed.wait(0.5)

    def checkpoint(self) -> None:
        """Sync the layer files, then record what is on disk."""
        with self._lock:
            snapshot = dict(self.done)
        try:
            for layer in self.plan.layers:
                try:
                    fd = os.open(self.layer_path(layer), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:  # already moved into local storage
                    continue
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            write_atomic(self.root / JOURNAL, json.dumps(snapshot, sort_keys=True).encode())
        except OSError as exc:
            log.warning("could not record the import's progress: %s", exc.strerror)

    def remove(self) -> None:
        """Drop this scratch directory, and those of earlier attempts at the same origin (the
        revision moved on since: their bytes will never be resumed), unless another import holds
        them."""
        origin = self._read_origin(self.root)
        self.release()
        shutil.rmtree(self.root, ignore_errors=True)
        for sibling in self.root.parent.iterdir():
            if sibling.is_dir() and origin and self._read_origin(sibling) == origin:
                _remove_unless_locked(sibling)

    @staticmethod
    def _read_origin(root: Path) -> str:
        try:
            return (root / ORIGIN).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return ""


def _remove_unless_locked(root: Path) -> None:
    try:
        with open(root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(root, ignore_errors=True)
    except OSError:
        return
