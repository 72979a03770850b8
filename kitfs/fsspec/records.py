"""What the ``kit`` file system hands between its loop and its callers: entries and open files.
(A module without trio, so that importing the file system stays light.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kitfs.fs.layerstore import OpenLayer


@dataclass(frozen=True)
class Entry:
    """A file or directory of a ModelKit, as ``stat`` on the mount would show it."""

    path: str  # relative to the ModelKit's root, "" for the root
    is_dir: bool
    size: int
    mode: int  # permission bits
    mtime_ns: int


@dataclass
class Handle:
    """An open regular file: bytes in memory (the Kitfile), or a stretch of an open layer."""

    path: str
    size: int
    content: bytes | None = None
    layer: OpenLayer | None = None
    offset: int = 0
