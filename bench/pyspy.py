"""py-spy on the FUSE daemon while a step runs, and a summary of where its samples went.

``Recording`` attaches ``py-spy record --pid PID`` (installed into the venv by the bench extra) for the
length of a ``with`` block and stops it with SIGINT, which makes py-spy write its output. The raw
format (collapsed stacks, one ``frame;frame;... count`` line per distinct stack; speedscope,
inferno-flamegraph and flamegraph.pl read it) is summarised here: the functions holding the most
samples themselves (self) and under them (total), and the samples per thread.
"""

from __future__ import annotations

import collections
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PY_SPY = str(Path(sys.executable).parent / "py-spy")
THREAD_FRAME = re.compile(r"^(thread|process) \(")
LINE_NUMBER = re.compile(r":\d+\)$")
# Leaves where a thread waits rather than works (py-spy's idle test does not see these waits): a
# trio worker thread blocked on its next job, the trio loop in epoll_wait, Python-level waits.
WAITING = frozenset(
    {
        "WorkerThread._work (trio/_core/_thread_cache.py)",
        "EpollIOManager.get_events (trio/_core/_io_epoll.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Queue.get (queue.py)",
        "SimpleQueue.get (queue.py)",
    }
)


def available() -> str | None:
    """None if py-spy runs, else why not."""
    if not Path(PY_SPY).exists():
        return f"py-spy is not installed at {PY_SPY} (pip install -e '.[bench]')"
    done = subprocess.run([PY_SPY, "--version"], capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else f"`py-spy --version` failed: {done.stderr.strip()}"


@contextlib.contextmanager
def recording(pid: int, output: Path, fmt: str, native: bool) -> Iterator[Path]:
    """Sample ``pid`` (every thread) into ``output`` in format ``fmt`` (raw or flamegraph) while the
    block runs; py-spy's own messages go to ``output`` + ``.log``."""
    cmd = [PY_SPY, "record", "--pid", str(pid), "--threads", "--format", fmt, "-o", str(output)]
    cmd += ["--rate", "200"]
    if native:
        cmd.append("--native")
    with open(f"{output}.log", "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)  # py-spy attaches before the step starts
        yield output
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass(frozen=True)
class Summary:
    """Sample counts from a raw py-spy profile: per function (self and total) and per thread."""

    samples: int
    waiting: int
    self_counts: list[tuple[str, int]]
    total_counts: list[tuple[str, int]]
    threads: list[tuple[str, int]]

    def markdown(self, top: int = 15) -> list[str]:
        lines = [
            f"{self.samples} samples of the daemon's threads at work (200 per second per thread; "
            f"{self.waiting} more where a thread waited for work: trio's idle worker threads, its "
            "loop in epoll_wait, Python-level waits, left out below)."
        ]
        for title, counts in (
            ("Self (the function itself was running)", self.self_counts),
            ("Total (the function or what it called)", self.total_counts),
            ("Per thread", self.threads),
        ):
            lines += ["", f"{title}:", "", "| samples | share | function |", "|---|---|---|"]
            lines += [
                f"| {n} | {n / max(1, self.samples):.0%} | `{name}` |" for name, n in counts[:top]
            ]
        return lines


def summarise(raw: Path) -> Summary:
    """Count a raw (collapsed stacks) profile by function, ignoring line numbers; the samples
    whose leaf is a wait (WAITING) are counted apart."""
    waiting = 0
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "?"
        while frames and THREAD_FRAME.match(frames[0]):
            thread = frames.pop(0)
        if not frames:
            continue
        names = [LINE_NUMBER.sub(")", frame) for frame in frames]
        if names[-1] in WAITING:
            waiting += count
            continue
        samples += count
        threads[thread] += count
        self_counts[names[-1]] += count
        for name in set(names):
            total_counts[name] += count
    return Summary(
        samples,
        waiting,
        self_counts.most_common(),
        total_counts.most_common(),
        threads.most_common(),
    )
