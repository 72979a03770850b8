"""A process's CPU time from /proc/PID/stat, for the daemon's CPU-seconds per GiB served.

utime and stime in /proc/PID/stat (fields 14 and 15) cover the whole thread group, live and exited
threads alike, so a data plane that moves work to threads is counted in full.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of ``pid`` (all its threads) in seconds; None when it is gone or unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state): utime and stime, fields 14 and 15, are fields[11] and fields[12]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
