"""ModelKits for the Python data stack: the ``kit://`` fsspec file system (no FUSE needed).

``KitFileSystem`` is registered for the ``kit`` protocol by the ``fsspec.specs`` entry point; see
docs/python.md. Importing this package loads fsspec but neither trio nor pyfuse3.
"""

from __future__ import annotations

from kitfs.fsspec.filesystem import KitFileSystem
from kitfs.fsspec.url import KitPath, split_url

__all__ = ["KitFileSystem", "KitPath", "split_url"]
