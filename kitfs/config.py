"""Where kitfs keeps things: kit's home directory and the mount cache, resolved in one place.

Order: command-line flags, then the environment (``KITOPS_HOME``, ``KITFS_CACHE``, XDG variables),
then defaults. kit's own rule (pkg/lib/constants/consts.go): ``$XDG_DATA_HOME/kitops``, else
``~/.local/share/kitops``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kitfs.errors import UsageError

STORAGE_SUBDIR = "storage"
CACHE_SUBDIR = "cache"
CREDENTIALS_FILE = "credentials.json"

# When to ask the registry what a tag names (``--refresh``); kitfs.offline acts on it.
Refresh = Literal["auto", "always", "never"]
REFRESH_MODES: tuple[Refresh, ...] = ("auto", "always", "never")


def kitops_home(override: str | os.PathLike[str] | None = None) -> Path:
    """kit's configuration directory: ``--config``, ``$KITOPS_HOME``, then the XDG default."""
    if override:
        return Path(override).expanduser().absolute()
    env = os.environ.get("KITOPS_HOME")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "kitops"
    return Path.home() / ".local" / "share" / "kitops"


def kitfs_cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The mount cache: ``--cache-dir``, ``$KITFS_CACHE``, ``$XDG_CACHE_HOME/kitfs``, ``~/.cache/kitfs``."""
    if override:
        return Path(override).expanduser().absolute()
    env = os.environ.get("KITFS_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "kitfs"
    return Path.home() / ".cache" / "kitfs"


@dataclass(frozen=True)
class Paths:
    """The resolved locations a command works with."""

    home: Path

    @property
    def storage(self) -> Path:
        return self.home / STORAGE_SUBDIR

    @property
    def cache(self) -> Path:
        return self.home / CACHE_SUBDIR

    @property
    def credentials(self) -> Path:
        return self.home / CREDENTIALS_FILE

    @classmethod
    def resolve(cls, override: str | os.PathLike[str] | None = None) -> Paths:
        return cls(kitops_home(override))


def check_refresh(value: str) -> Refresh:
    if value not in REFRESH_MODES:
        raise UsageError(f"--refresh must be one of {', '.join(REFRESH_MODES)}, not {value!r}")
    return value  # type: ignore[return-value]
