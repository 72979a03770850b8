"""The Python API for scripts and notebooks: open a ModelKit by reference, or mount it.

``open_modelkit(ref)`` gives a :class:`ModelKit`: its parsed Kitfile, its files (the mount's tree,
sections layout unless ``layout="unpack"``), and file objects read lazily through the mount's
verified layer store and cache, without FUSE (kitfs.fsspec). ``mounted(ref)`` mounts it through
FUSE where this process may, and unmounts on exit. Options are the ``kit`` file system's storage
options (kitfs.fsspec.options), which are the mount's flags by their ``-o`` names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from kitfs.errors import KitfsError
from kitfs.fsspec.errors import as_python_error
from kitfs.fsspec.file import KitFile
from kitfs.fsspec.filesystem import KitFileSystem
from kitfs.fsspec.options import resolve_options
from kitfs.fsspec.records import Entry
from kitfs.kitfile import Kitfile

__all__ = ["Entry", "ModelKit", "fuse_available", "mounted", "open_modelkit"]

MOUNT_TIMEOUT = 300.0


class ModelKit:
    """One ModelKit, resolved (and its signatures checked, when a policy asks) on opening. Paths
    are relative to its root, as in a mount: ``Kitfile``, ``datasets/train.csv``."""

    def __init__(self, reference: str, **options: Any) -> None:
        self.reference = reference
        self.fs = KitFileSystem(skip_instance_cache=True, **options)
        self._client = self.fs.client
        try:
            self._session = self._client.session(reference)
        except BaseException:
            self._client.close()  # stop the loop it started: nothing is left running
            raise

    @property
    def digest(self) -> str:
        """The manifest digest every byte read here is verified against."""
        return self._session.digest

    @property
    def kitfile(self) -> Kitfile:
        """The Kitfile, parsed (from the ModelKit's config)."""
        return self._session.kitfile

    def stat(self, path: str = "") -> Entry:
        """The file or directory at ``path``; FileNotFoundError when there is none."""
        return self._client.stat(self.reference, path)

    def listdir(self, path: str = "") -> list[Entry]:
        """A directory's entries, sorted by name."""
        return self._client.listdir(self.reference, path)

    def walk(self, path: str = "") -> Iterator[Entry]:
        """Every entry below ``path``, depth first, directories before their contents."""
        for entry in self.listdir(path):
            yield entry
            if entry.is_dir:
                yield from self.walk(entry.path)

    def files(self, path: str = "") -> list[Entry]:
        """Every regular file below ``path``."""
        return [entry for entry in self.walk(path) if not entry.is_dir]

    def open(self, path: str) -> KitFile:
        """A binary file object (seekable, thread-safe, read-ahead for sequential reads)."""
        session, handle = self._client.open(self.reference, path)
        return KitFile(self.fs, f"{self.reference}/{path}", self._client, session, handle)

    def read_bytes(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of a file (all of it by default), verified."""
        if end is None:
            end = self.stat(path).size
        if end <= start:
            return b""
        return self._client.read_range(self.reference, path, start, end)

    def close(self) -> None:
        """Close the ModelKit's layers and its background loop (the cache is kept)."""
        self._client.close()

    def __enter__(self) -> ModelKit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelKit({self.reference!r}, digest={self.digest!r})"


def open_modelkit(reference: str, **options: Any) -> ModelKit:
    """Open a ModelKit by reference (``[registry/]repository:tag``, ``...@sha256:...``,
    ``oci:PATH:TAG``); use it as a context manager to close it."""
    return ModelKit(reference, **options)


def fuse_available() -> bool:
    """Whether this process may mount through FUSE (``/dev/fuse`` opens, fusermount3 exists)."""
    if shutil.which("fusermount3") is None:
        return False
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def mounted(
    reference: str, mountpoint: str | os.PathLike[str] | None = None, **options: Any
) -> Iterator[Path]:
    """Mount ``reference`` through FUSE (at ``mountpoint``, else a new temporary directory),
    yield the mount's path, and unmount on exit (lazily if a file is still open there). Where
    FUSE is not available, OSError says so: :func:`open_modelkit` needs no FUSE."""
    try:
        resolve_options(options)  # refuse unknown or malformed options before mounting
    except KitfsError as exc:
        raise as_python_error(exc) from exc
    if not fuse_available():
        raise OSError(
            f"cannot mount {reference}: FUSE is not available to this process (/dev/fuse cannot "
            "be opened or fusermount3 is missing); kitfs.open_modelkit() reads it without FUSE"
        )
    made = None if mountpoint is not None else tempfile.mkdtemp(prefix="kitfs-mount-")
    target = Path(mountpoint if mountpoint is not None else str(made)).absolute()
    try:
        _mount(reference, target, options)
        try:
            yield target
        finally:
            _unmount(target)
    finally:
        if made is not None:
            with contextlib.suppress(OSError):
                os.rmdir(made)


def _mount_option_list(options: dict[str, Any]) -> list[str]:
    """The options as ``kitfs mount -o`` items (the names are the same)."""
    items = []
    for name, value in options.items():
        if value is None or (value is False and name == "plain_http"):
            continue
        if value is True and name == "plain_http":
            items.append(name)
        else:
            text = str(value).lower() if isinstance(value, bool) else os.fspath(value)
            if "," in text:
                raise ValueError(f"option {name}={text!r}: a mount option cannot hold a comma")
            items.append(f"{name}={text}")
    return items


def _mount(reference: str, target: Path, options: dict[str, Any]) -> None:
    """``kitfs mount`` in a child process: forking this one (which may run threads, such as the
    kit file system's loop) is not safe, so the CLI forks its daemon from a fresh interpreter."""
    argv = [
        sys.executable,
        "-c",
        "import sys; from kitfs.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    argv += ["--progress", "none", "mount", reference, str(target)]
    for item in _mount_option_list(options):
        argv += ["-o", item]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=MOUNT_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        message = (
            done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "kitfs mount failed"
        )
        raise OSError(message.removeprefix("kitfs: "))


def _unmount(target: Path) -> None:
    from kitfs.fs.mount import unmount

    try:
        unmount(target)
    except KitfsError:
        try:
            unmount(target, lazy=True)
        except KitfsError as exc:
            raise as_python_error(exc) from exc
