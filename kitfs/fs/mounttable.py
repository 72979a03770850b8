"""The kernel's mount table (``/proc/self/mountinfo``): which mount is at a path, its type and its
backing device (used to check mountpoints, to unmount, and to widen a mount's readahead)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    fstype: str
    source: str
    device: str = ""  # major:minor, the name of the mount's backing device info in /sys/class/bdi


def _unescape(field_text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def mounts() -> Iterator[MountInfo]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            if "-" not in fields:
                continue
            dash = fields.index("-")
            if len(fields) < dash + 3 or len(fields) < 5:
                continue
            yield MountInfo(
                _unescape(fields[4]), fields[dash + 1], _unescape(fields[dash + 2]), fields[2]
            )


def find_mount(path: Path) -> MountInfo | None:
    """The mount whose mountpoint is ``path`` (the last one, if several are stacked)."""
    target = os.path.realpath(path)
    found = None
    for info in mounts():
        if info.mountpoint == target:
            found = info
    return found
