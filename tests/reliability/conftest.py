"""Fixtures of the reliability suite: mounts that are always unmounted, whatever the test did."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import Mounts


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    manager = Mounts(tmp_path)
    try:
        yield manager
    finally:
        manager.cleanup()
