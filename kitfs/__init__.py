"""kitfs: mount KitOps ModelKits as lazy, verified, read-only filesystems."""

from __future__ import annotations

__version__ = "0.1.0"

# The Python API (kitfs.api), loaded on first use: ``import kitfs`` (as the CLI does) stays light.
_API = frozenset({"ModelKit", "open_modelkit", "mounted", "fuse_available"})


def __getattr__(name: str) -> object:
    if name in _API:
        from kitfs import api

        return getattr(api, name)
    raise AttributeError(f"module 'kitfs' has no attribute {name!r}")
