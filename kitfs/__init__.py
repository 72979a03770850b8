"""kitfs: mount KitOps ModelKits as lazy, verified, read-only filesystems."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: at run time these load on first use (below)
    from kitfs.api import ModelKit, fuse_available, mounted, open_modelkit

__all__ = ["ModelKit", "fuse_available", "mounted", "open_modelkit"]

__version__ = "0.1.0"

# The Python API (kitfs.api), loaded on first use: ``import kitfs`` (as the CLI does) stays light.
_API = frozenset({"ModelKit", "open_modelkit", "mounted", "fuse_available"})


def __getattr__(name: str) -> object:  # noqa: F811 (the TYPE_CHECKING names above)
    if name in _API:
        from kitfs import api

        return getattr(api, name)
    raise AttributeError(f"module 'kitfs' has no attribute {name!r}")
