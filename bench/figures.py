"""The measurements behind figures 1-7. Each function records into ``Bench.results``; report.py
turns them into tables. Cold = fresh kitfs cache and home + dropped page cache; warm = same cache
again (a new mount unless the state says otherwise) with the page cache left as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness import Bench, Measurement
from mounts import KitfsMount, RatarMount
from tools import (
    KIT,
    RssSampler,
    Timer,
    dd_read,
    find_in_mount,
    ls_lr,
    percentile,
    random_block_reads,
    run,
)

MOUNT = "kitfs mount"
UNPACK_KITFILE = "kitfs unpack --filter kitfile"
PULL_ONLY = "kitfs pull (whole ModelKit)"
PULL_UNPACK = "kitfs pull + unpack (whole)"
UNPACK_FILTER = "kitfs unpack --filter datasets:{}"
KIT_PULL_UNPACK = "kit pull + kit unpack (whole)"
PULL_UNPACK_MODEL = "kitfs pull + unpack --model"
KIT_PULL_UNPACK_MODEL = "kit pull + kit unpack --model"
LOCAL_FILE = "local file"
LOCAL_DIR = "local directory"
RATARMOUNT = "ratarmount on the local blob"

COLD, WARM = "cold", "warm"
REREAD = "re-read, same mount"
WARM_SAME = "warm, same mount"
WARM_REMOUNT = "warm, remount"
HOT = "hot (page cache)"

T = TypeVar("T")


# ---- setup ----------------------------------------------------------------------------------------


def pack_and_push(b: Bench, compression: str) -> None:
    """``kitfs pack`` the context with ``compression`` and ``kitfs push`` it; record both times."""
    ref = b.ref(compression)
    context = str(b.workload.context)
    b.record(
        ("setup", compression, "kitfs pack", "-"),
        lambda: _timed(
            lambda: b.kitfs(b.pack_home, "pack", context, "-t", ref, "--compression", compression)
        ),
    )
    b.record(
        ("setup", compression, "kitfs push", "-"),
        lambda: _timed(lambda: b.kitfs(b.pack_home, "push", ref, "--plain-http")),
    )
    inspect = json.loads(b.kitfs(b.pack_home, "inspect", ref))
    layers = inspect["manifest"]["layers"]
    b.layer_info[compression] = {
        "size": sum(layer["size"] for layer in layers) + inspect["manifest"]["config"]["size"],
        "kitfile": inspect["kitfile"],
    }


def _timed(action: Callable[[], object]) -> float:
    with Timer() as t:
        action()
    return t.seconds


# ---- figure 1: mount to readable Kitfile ----------------------------------------------------------


def figure1(b: Bench, compression: str) -> None:
    mount = b.mount(compression, b.scratch("f1-cache"))
    try:
        b.record(("1", compression, MOUNT, COLD), lambda: _cold_mount(b, mount), b.repeat)
        b.record(("1", compression, MOUNT, WARM), lambda: _warm_mount(mount), b.repeat)
    finally:
        mount.stop()
    home = b.scratch("f1-home")
    for state in (COLD, WARM):
        b.record(
            ("1", compression, UNPACK_KITFILE, state),
            lambda s=state: _unpack_kitfile(b, compression, home, s),
            b.repeat,
        )
    b.remove(mount.cache, mount.home, home)


def _cold_mount(b: Bench, mount: KitfsMount) -> float:
    mount.reset()
    b.cold()
    return mount.start()


def _warm_mount(mount: KitfsMount) -> float:
    mount.stop()
    return mount.start()


def _cold_then(b: Bench, step: Callable[[], T]) -> T:
    b.cold()
    return step()


def _unpack_kitfile(b: Bench, compression: str, home: Path, state: str) -> float:
    target = b.scratch("f1-unpack")
    if state == COLD:
        b.cold()
    with Timer() as t:
        b.kitfs(
            home,
            "unpack",
            b.ref(compression),
            "-d",
            str(target),
            "--filter",
            "kitfile",
            "--plain-http",
        )
        (target / "Kitfile").read_bytes()
    b.remove(target)
    return t.seconds


# ---- figure 2: one 50 MiB dataset file ------------------------------------------------------------


def figure2(b: Bench, compression: str, mount: bool = True) -> None:
    w = b.workload
    if mount:
        kit = b.mount(compression, b.scratch("f2-cache"))
        try:
            for state in (COLD, WARM):
                b.record(
                    ("2", compression, MOUNT, state),
                    lambda s=state: _mount_and_read(b, kit, s, "datasets", w.mid_path),
                    b.repeat,
                )
        finally:
            kit.stop()
        b.remove(kit.cache, kit.home)
    _pull_unpack(b, "2", compression, PULL_UNPACK, [], w.mid_path)
    home = b.scratch("f2-home")
    method = UNPACK_FILTER.format(w.mid_name)
    for state in (COLD, WARM):
        b.record(
            ("2", compression, method, state),
            lambda s=state: _unpack_read(
                b, compression, home, s, ["--filter", f"datasets:{w.mid_name}"], w.mid_path
            ),
            b.repeat,
        )
    b.remove(home)
    if b.kit_available:
        _kit_pull_unpack(b, "2", compression, KIT_PULL_UNPACK, [], w.mid_path)


def _mount_and_read(b: Bench, mount: KitfsMount, state: str, section: str, rel: str) -> Measurement:
    """Seconds from ``kitfs mount`` to having read ``rel`` whole (cold: on an emptied cache).

    Extras: the mount's start, the first stat of the file (which fetches and indexes its layer on
    a cold cache), the read itself, and the daemon's peak RSS.
    """
    if state == COLD:
        mount.reset()
        b.cold()
    else:
        mount.stop()
    with Timer() as t:
        mounted = mount.start()
        with RssSampler(mount.pid) as rss:
            with Timer() as first:
                path = find_in_mount(mount.mountpoint, section, rel)
            read = dd_read(path)
    extra = {"mount_s": mounted, "stat_s": first.seconds, "read_s": read}
    return Measurement(seconds=t.seconds, extra=rss.into(extra))


def _pull_unpack(
    b: Bench, figure: str, compression: str, method: str, unpack_args: list[str], rel: str
) -> None:
    """``kitfs pull`` into an empty home, ``kitfs unpack`` it, read ``rel`` from disk; cold then warm."""
    home = b.scratch(f"f{figure}-pull-home")
    ref = b.ref(compression)
    for state in (COLD, WARM):

        def step(state: str = state) -> Measurement:
            target = b.scratch(f"f{figure}-unpack")
            if state == COLD:
                b.cold()
            with Timer() as total:
                with Timer() as pull:
                    b.kitfs(home, "pull", ref, "--plain-http")
                with Timer() as unpack:
                    b.kitfs(home, "unpack", ref, "-d", str(target), *unpack_args)
                dd_read(target / rel)
            b.remove(target)
            return Measurement(
                seconds=total.seconds, extra={"pull_s": pull.seconds, "unpack_s": unpack.seconds}
            )

        m = b.record((figure, compression, method, state), step)
        if figure == "2" and state == COLD and m.seconds is not None:
            b.results[("1", compression, PULL_ONLY, state)] = Measurement(
                seconds=m.extra["pull_s"], fetched=m.fetched
            )
    b.remove(home)


def _unpack_read(
    b: Bench, compression: str, home: Path, state: str, unpack_args: list[str], rel: str
) -> float:
    target = b.scratch("f2-unpack")
    if state == COLD:
        b.cold()
    with Timer() as t:
        b.kitfs(home, "unpack", b.ref(compression), "-d", str(target), "--plain-http", *unpack_args)
        dd_read(target / rel)
    b.remove(target)
    return t.seconds


def _kit_pull_unpack(
    b: Bench, figure: str, compression: str, method: str, unpack_args: list[str], rel: str
) -> None:
    """The real ``kit`` binary as the reference: ``kit pull`` + ``kit unpack``, cold then warm."""
    home = b.scratch(f"f{figure}-kit-home")
    env = {"KITOPS_HOME": str(home)}
    ref = b.ref(compression)
    for state in (COLD, WARM):

        def step(state: str = state) -> float:
            target = b.scratch(f"f{figure}-kit-unpack")
            if state == COLD:
                b.cold()
            with Timer() as t:
                run([KIT, "pull", ref, "--plain-http"], env=env)
                run([KIT, "unpack", ref, "-d", str(target), *unpack_args], env=env)
                dd_read(target / rel)
            b.remove(target)
            return t.seconds

        b.record((figure, compression, method, state), step)
    b.remove(home)


# ---- figure 3: the whole model file, sequentially -------------------------------------------------


def figure3(b: Bench, compression: str, mount: bool = True) -> Path:
    """Returns the kitfs cache it filled, for figure 5 (the caller removes it)."""
    w = b.workload
    cache = b.scratch("f3-cache")
    if mount:
        _mount_model(b, compression, cache)
    _pull_unpack(b, "3", compression, PULL_UNPACK_MODEL, ["--model"], w.model_path)
    if b.kit_available:
        _kit_pull_unpack(b, "3", compression, KIT_PULL_UNPACK_MODEL, ["--model"], w.model_path)
    if compression == b.compressions[0]:
        local = w.local(w.model_path)
        b.record(("3", "-", LOCAL_FILE, COLD), lambda: _cold_then(b, lambda: dd_read(local)))
        dd_read(local)
        b.record(("3", "-", LOCAL_FILE, WARM), lambda: dd_read(local), b.repeat)
    return cache


def _mount_model(b: Bench, compression: str, cache: Path) -> None:
    rel = b.workload.model_path
    mount = b.mount(compression, cache)
    try:
        b.record(
            ("3", compression, MOUNT, COLD), lambda: _mount_and_read(b, mount, COLD, "model", rel)
        )
        b.record(("3", compression, MOUNT, REREAD), lambda: _reread(mount, rel), b.repeat)
        b.record(
            ("3", compression, MOUNT, WARM),
            lambda: _mount_and_read(b, mount, WARM, "model", rel),
            b.repeat,
        )
    finally:
        mount.stop()


def _reread(mount: KitfsMount, rel: str) -> Measurement:
    with RssSampler(mount.pid) as rss:
        seconds = dd_read(find_in_mount(mount.mountpoint, "model", rel))
    return Measurement(seconds=seconds, extra=rss.into({"read_s": seconds}))


# ---- figure 4: ls -lR of the small-files dataset --------------------------------------------------


def figure4(b: Bench, compression: str) -> None:
    w = b.workload
    mount = b.mount(compression, b.scratch("f4-cache"))

    def listing() -> Measurement:
        return _ls(find_in_mount(mount.mountpoint, "datasets", w.small_dir))

    def cold() -> Measurement:
        _cold_mount(b, mount)
        return listing()

    def remount() -> Measurement:
        _warm_mount(mount)
        return listing()

    try:
        b.record(("4", compression, MOUNT, COLD), cold, b.repeat)
        b.record(("4", compression, MOUNT, WARM_SAME), listing, b.repeat)
        b.record(("4", compression, MOUNT, WARM_REMOUNT), remount, b.repeat)
    finally:
        mount.stop()
    b.remove(mount.cache, mount.home)
    if compression == b.compressions[0]:
        local = w.local(w.small_dir)
        b.record(("4", "-", LOCAL_DIR, COLD), lambda: _cold_then(b, lambda: _ls(local)), b.repeat)
        b.record(("4", "-", LOCAL_DIR, WARM), lambda: _ls(local), b.repeat)


def _ls(path: Path) -> Measurement:
    seconds, lines = ls_lr(path)
    return Measurement(seconds=seconds, extra={"lines": lines})


# ---- figure 5: 16 concurrent random 1 MiB readers, warm -------------------------------------------


def figure5(b: Bench, compression: str, cache: Path) -> None:
    """Random reads on a new mount over the cache figure 3 filled (every first touch of a block goes
    to the daemon), then again after a full read (the kernel's page cache serves them: keep_cache)."""
    w = b.workload
    mount = b.mount(compression, cache, home=cache.parent / f"{cache.name}-home")
    try:
        mount.start()
        model = find_in_mount(mount.mountpoint, "model", w.model_path)
        b.record(("5", compression, MOUNT, WARM), lambda: _random_reads(b, model, mount.pid))
        dd_read(model)
        b.record(("5", compression, MOUNT, HOT), lambda: _random_reads(b, model, mount.pid))
    finally:
        mount.stop()
    if compression == b.compressions[0]:
        local = w.local(w.model_path)
        dd_read(local)
        b.record(("5", "-", LOCAL_FILE, HOT), lambda: _random_reads(b, local, None))


def _random_reads(b: Bench, path: Path, pid: int | None) -> Measurement:
    with RssSampler(pid) as rss:
        wall, latencies = random_block_reads(path, b.readers, b.random_reads)
    extra = {
        "mib_per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "reads": float(len(latencies)),
    }
    return Measurement(seconds=wall, extra=rss.into(extra))


# ---- figure 6: ratarmount on the same gzip layer blob ---------------------------------------------


def figure6(b: Bench) -> None:
    w = b.workload
    blob = _dataset_blob(b, "gzip", w.big_name)
    index = b.scratch("f6-ratar-index") / "index.sqlite"
    ratar = RatarMount(blob, b.scratch("f6-ratar-mnt"), index)
    try:
        for state in (COLD, WARM):
            b.record(
                ("6", "gzip", RATARMOUNT, state),
                lambda s=state: _ratar_list_read(b, ratar, s, w.big_path),
                b.repeat,
            )
    finally:
        ratar.stop()
    mount = b.mount("gzip", b.scratch("f6-cache"))
    try:
        for state in (COLD, WARM):
            b.record(
                ("6", "gzip", MOUNT, state),
                lambda s=state: _kitfs_list_read(b, mount, s, w.big_path),
                b.repeat,
            )
    finally:
        mount.stop()
    b.remove(mount.cache, mount.home)


def _dataset_blob(b: Bench, compression: str, name: str) -> Path:
    kitfile = b.layer_info[compression]["kitfile"]
    for dataset in kitfile.get("datasets", []):  # type: ignore[attr-defined]
        if dataset["name"] == name:
            algorithm, hexdigest = dataset["digest"].split(":", 1)
            return b.pack_home / "storage" / "blobs" / algorithm / hexdigest
    raise RuntimeError(f"no dataset {name!r} in the {compression} ModelKit")


def _ratar_list_read(b: Bench, ratar: RatarMount, state: str, rel: str) -> Measurement:
    ratar.stop()
    if state == COLD:
        ratar.index.unlink(missing_ok=True)
        b.cold()
    with Timer() as listing:
        ratar.start()
        run(["ls", "-lR", str(ratar.mountpoint)])
    with RssSampler(ratar.pid) as rss:
        read = dd_read(ratar.mountpoint / rel)
    extra = {"list_s": listing.seconds, "read_s": read}
    return Measurement(seconds=listing.seconds + read, extra=rss.into(extra))


def _kitfs_list_read(b: Bench, mount: KitfsMount, state: str, rel: str) -> Measurement:
    if state == COLD:
        mount.reset()
        b.cold()
    else:
        mount.stop()
    with Timer() as listing:
        mount.start()
        path = find_in_mount(mount.mountpoint, "datasets", rel)
        run(["ls", "-l", str(path)])
    with RssSampler(mount.pid) as rss:
        read = dd_read(path)
    extra = {"list_s": listing.seconds, "read_s": read}
    return Measurement(seconds=listing.seconds + read, extra=rss.into(extra))
