"""The benchmark's shared state: registry, workload, references, scratch space and the results."""

from __future__ import annotations

import json
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mounts import KitfsMount
from registry import Fetched, Registry
from tools import CommandFailed, drop_page_cache, fresh_dir, kitfs
from workload import Workload

T = TypeVar("T")


@dataclass
class Measurement:
    """One timed step: seconds (None on error), registry bytes, and figure-specific extras."""

    seconds: float | None = None
    fetched: Fetched | None = None
    error: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Bench:
    """Everything the figures share. ``results[(figure, compression, method, state)]``."""

    work: Path
    registry: Registry
    workload: Workload
    compressions: list[str]
    page_cache_droppable: bool
    kit_available: bool
    random_reads: int
    readers: int
    repeat: int
    pack_home: Path = field(init=False)
    results: dict[tuple[str, str, str, str], Measurement] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    layer_info: dict[str, dict[str, object]] = field(default_factory=dict)
    _counter: int = 0

    def __post_init__(self) -> None:
        self.pack_home = self.work / "pack-home"

    def ref(self, compression: str) -> str:
        return f"{self.registry.host}/bench/kitfs-bench:{compression}"

    def scratch(self, name: str) -> Path:
        """A new empty directory for one step (homes, caches, unpack targets, mountpoints)."""
        self._counter += 1
        return fresh_dir(self.work / "scratch" / f"{self._counter:03d}-{name}")

    def cold(self) -> None:
        """Empty the page cache (callers also use a fresh kitfs cache and home)."""
        drop_page_cache()

    def mount(self, compression: str, cache: Path, home: Path | None = None) -> KitfsMount:
        home = home or cache.parent / f"{cache.name}-home"
        home.mkdir(parents=True, exist_ok=True)
        return KitfsMount(home, self.ref(compression), self.scratch("mnt"), cache, [])

    def kitfs(self, home: Path, *args: str) -> str:
        return kitfs(home, *args)

    def record(
        self,
        key: tuple[str, str, str, str],
        step: Callable[[], float | Measurement],
        repeat: int = 1,
    ) -> Measurement:
        """Run ``step`` (returns seconds or a Measurement) ``repeat`` times, counting registry bytes
        for each run; store the run with the median time (``runs`` and ``spread_s`` in extra)."""
        runs: list[Measurement] = []
        for _ in range(max(1, repeat)):
            measurement = self._once(key, step)
            runs.append(measurement)
            if measurement.error:
                break
        if runs[-1].error:
            chosen = runs[-1]
        else:
            ordered = sorted(runs, key=lambda m: m.seconds or 0.0)
            chosen = ordered[(len(ordered) - 1) // 2]
            if len(runs) > 1:
                chosen.extra["runs"] = float(len(runs))
                chosen.extra["spread_s"] = (ordered[-1].seconds or 0.0) - (
                    ordered[0].seconds or 0.0
                )
        self.results[key] = chosen
        _print_result(key, chosen)
        return chosen

    def _once(
        self, key: tuple[str, str, str, str], step: Callable[[], float | Measurement]
    ) -> Measurement:
        mark = self.registry.mark()
        try:
            value = step()
            measurement = value if isinstance(value, Measurement) else Measurement(seconds=value)
        except (CommandFailed, OSError, RuntimeError) as exc:
            measurement = Measurement(error=_one_line(exc))
            self.errors.append(f"figure {key[0]}, {key[1]}, {key[2]} ({key[3]}): {_one_line(exc)}")
            traceback.print_exc()
        if measurement.fetched is None:
            measurement.fetched = self.registry.fetched_since(mark)
        return measurement

    def get(self, figure: str, compression: str, method: str, state: str) -> Measurement | None:
        return self.results.get((figure, compression, method, state))

    def remove(self, *paths: Path) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    def save_json(self, path: Path) -> None:
        rows = [
            {
                "figure": k[0],
                "compression": k[1],
                "method": k[2],
                "state": k[3],
                "seconds": m.seconds,
                "fetched_bytes": m.fetched.total if m.fetched else None,
                "error": m.error,
                **m.extra,
            }
            for k, m in self.results.items()
        ]
        path.write_text(json.dumps(rows, indent=1))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " | ") or type(exc).__name__
    return text[:400]


def _print_result(key: tuple[str, str, str, str], m: Measurement) -> None:
    figure, compression, method, state = key
    if m.error:
        what = f"ERROR {m.error}"
    else:
        fetched = f", fetched {m.fetched.total / 1048576:.1f} MiB" if m.fetched else ""
        extra = "".join(f", {k}={v:.3g}" for k, v in m.extra.items())
        what = f"{m.seconds:.3f}s{fetched}{extra}" if m.seconds is not None else extra
    print(f"  [fig {figure}] {compression:5} {method} ({state}): {what}", flush=True)
