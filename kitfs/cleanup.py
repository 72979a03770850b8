"""A failed command leaves no trace it created: the directories it made for its output go again.

``kitfs unpack -d out/model`` creates ``out/model`` (and ``out``) before it knows whether the
ModelKit can be unpacked; when it then fails, those directories are removed again if they are
still empty (a directory that holds anything, or existed before, is left alone).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def missing_dirs(target: Path) -> list[Path]:
    """``target`` and its ancestors that do not exist yet, deepest first."""
    missing: list[Path] = []
    path = Path(os.path.abspath(target))
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


@contextlib.contextmanager
def removed_on_failure(target: Path) -> Iterator[None]:
    """Run a command that writes below ``target``; if it fails, remove the directories it
    created on the way to ``target`` that are empty."""
    created = missing_dirs(target)
    try:
        yield
    except BaseException:
        for path in created:
            try:
                os.rmdir(path)
            except OSError:  # not empty, not a directory, or gone: leave the rest as it is
                break
        raise
