"""kitfs: mount KitOps ModelKits as lazy, verified, read-only filesystems."""

from __future__ import annotations

__version__ = "0.1.0"
