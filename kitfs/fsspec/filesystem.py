"""``KitFileSystem``: ModelKits as an fsspec file system, ``kit://[REGISTRY/]REPO:TAG/PATH``.

Registered for the ``kit`` protocol through the ``fsspec.specs`` entry point, so that
``fsspec.open``, ``pandas.read_csv`` and ``pyarrow`` open ``kit://`` URLs once kitfs is installed.
Paths are those of the mount (kitfs.fs.tree) for the layout the ``layout`` option names; bytes come
through the mount's verified layer store and cache (kitfs.fsspec.session). How a URL splits into
the reference and the path: kitfs.fsspec.url. Nothing here imports trio or pyfuse3: the trio loop
starts on the first call that needs it, and FUSE is never needed.
"""

from __future__ import annotations

import errno
from typing import Any

from fsspec.spec import AbstractFileSystem

from kitfs.errors import KitfsError
from kitfs.fsspec.client import Client
from kitfs.fsspec.errors import as_python_error
from kitfs.fsspec.file import KitFile
from kitfs.fsspec.options import OPTION_NAMES, resolve_options
from kitfs.fsspec.records import Entry
from kitfs.fsspec.url import PROTOCOL, KitPath, split_url, strip_protocol


class KitFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Read-only, lazy, verified access to ModelKits (see the module docstring and
    docs/python.md). Storage options: kitfs.fsspec.options."""

    protocol = PROTOCOL
    root_marker = ""
    cachable = True

    def __init__(self, **storage_options: Any) -> None:
        try:
            options = resolve_options(storage_options)
        except KitfsError as exc:
            raise as_python_error(exc) from exc
        fsspec_options = {k: v for k, v in storage_options.items() if k not in OPTION_NAMES}
        super().__init__(**fsspec_options)
        self.options = options
        self.client = Client(options)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return strip_protocol(str(path))

    @staticmethod
    def _split(path: str) -> KitPath:
        try:
            return split_url(path)
        except KitfsError as exc:
            raise as_python_error(exc) from exc

    def _details(self, where: KitPath, entry: Entry) -> dict[str, Any]:
        return {
            "name": where.reference + (f"/{entry.path}" if entry.path else ""),
            "size": entry.size,
            "type": "directory" if entry.is_dir else "file",
            "mode": entry.mode,
            "mtime": entry.mtime_ns / 1e9,
        }

    # -- listing -------------------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        where = self._split(self._strip_protocol(path))
        try:
            entries = self.client.listdir(where.reference, where.path)
        except NotADirectoryError:
            entries = [self.client.stat(where.reference, where.path)]
        details = [self._details(where, entry) for entry in entries]
        return details if detail else [d["name"] for d in details]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        where = self._split(self._strip_protocol(path))
        return self._details(where, self.client.stat(where.reference, where.path))

    def ukey(self, path: str) -> str:
        """A key that changes when the bytes would: the manifest digest and the path."""
        where = self._split(self._strip_protocol(path))
        return f"{self.client.session(where.reference).digest}/{where.path}"

    def modified(self, path: str) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.info(path)["mtime"], tz=datetime.UTC)

    # -- reading -------------------------------------------------------------------------------

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Any = None,
        **kwargs: Any,
    ) -> KitFile:
        if mode != "rb":
            raise PermissionError(
                errno.EROFS, f"ModelKits are read-only: cannot open with {mode!r}"
            )
        where = self._split(self._strip_protocol(path))
        session, handle = self.client.open(where.reference, where.path)
        return KitFile(self, where.join(""), self.client, session, handle)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        where = self._split(self._strip_protocol(path))
        if start is None and end is None:
            first, last = 0, None
        else:
            size = self.client.stat(where.reference, where.path).size
            first = _position(start, size, 0)
            last = _position(end, size, size)
        if last is None:
            last = self.client.stat(where.reference, where.path).size
        if last <= first:
            return b""
        return self.client.read_range(where.reference, where.path, first, last)

    # -- read-only -----------------------------------------------------------------------------

    def _refuse(self, path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, f"ModelKits are read-only: {path}")

    mkdir = makedirs = rm_file = rm = rmdir = touch = mv = cp_file = pipe_file = _refuse

    def close(self) -> None:
        """Close every open ModelKit and stop the background loop (the cache is kept)."""
        self.client.close()


def _position(value: int | None, size: int, default: int) -> int:
    """fsspec's start/end: None is the default, a negative value counts from the end."""
    if value is None:
        return default
    if value < 0:
        return max(0, size + value)
    return min(value, size)
