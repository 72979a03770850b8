"""Turn ``Bench.results`` into one markdown table per figure, plus the list of places kitfs loses."""

from __future__ import annotations

from figures import (
    COLD,
    HOT,
    KIT_PULL_UNPACK,
    KIT_PULL_UNPACK_MODEL,
    LOCAL_DIR,
    LOCAL_FILE,
    MOUNT,
    PULL_ONLY,
    PULL_UNPACK,
    PULL_UNPACK_MODEL,
    RATARMOUNT,
    REREAD,
    UNPACK_FILTER,
    UNPACK_KITFILE,
    WARM,
    WARM_REMOUNT,
    WARM_SAME,
)
from harness import Bench, Measurement
from report import MIB, Table, mib, ratio, seconds

# Why kitfs is slower than an alternative, and what would fix it, by (figure, method). They describe
# the v1 mount (kitfs/fs/layerstore.py): a layer's first use fetches the whole blob, verifies it,
# writes its uncompressed tar into the cache and indexes it; reads are pread on that tar through a
# pyfuse3/trio daemon.
WHY = {
    ("1", UNPACK_KITFILE): (
        "both fetch only the manifest and the config; the mount also starts a daemon (a Python "
        "interpreter importing pyfuse3, trio and httpx) and a FUSE session, which costs more than "
        "the download itself. Fix: a faster daemon start (lazy imports, or a pre-forked helper)."
    ),
    ("1", PULL_ONLY): (
        "the ModelKit is so small (a --small run) that downloading all of it takes less than "
        "starting the daemon. Fix: a faster daemon start (see the unpack --filter kitfile row)."
    ),
    ("2", UNPACK_FILTER): (
        "both fetch exactly the one layer and verify it; unpack streams it to disk in one process, "
        "while the mount first starts its daemon (a Python interpreter that imports pyfuse3, trio "
        "and httpx, then a FUSE session: the `mount` part of the detail column), fetches the layer "
        "into its cache when the file is first looked up (`first stat`), and only then serves the "
        "read through FUSE. Fix: a faster daemon start (each verb already imports only what it "
        "needs; the daemon still imports trio and pyfuse3 after the fork)."
    ),
    ("2", PULL_UNPACK): (
        "the ModelKit is small enough that fetching all of it costs less than the mount's fixed "
        "costs. Fix: a faster daemon start."
    ),
    ("2", KIT_PULL_UNPACK): "kit is a Go binary with no daemon to start; see the row above.",
    ("3", PULL_UNPACK_MODEL): (
        "both verify the layer and write it once (the mount to its cache, unpack to the target), "
        "but the mount then passes every byte through FUSE and the Python daemon. Fix: serve "
        "cached bytes without the daemon in the data path (FUSE passthrough)."
    ),
    ("3", KIT_PULL_UNPACK_MODEL): (
        "kit is a Go binary that neither syncs what it pulls nor hashes what it unpacks (see the "
        "cold path section), while the mount verifies every span before serving it and passes "
        "every byte through FUSE and the Python daemon."
    ),
    ("6", RATARMOUNT): (
        "cold, ratarmount reads a blob that is already on the local disk, where kitfs first "
        "downloads it from the registry, verifies it, and decompresses the whole layer into its "
        "cache (hashing the tar against the diffId) before the first stat returns; warm, both "
        "serve from local files and the gap is the mount start of two Python daemons. Fix: index "
        "gzip layers with seek points (as ratarmount and indexed_gzip do) and fetch and inflate "
        "only the ranges that are read, instead of whole layers."
    ),
}
FUSE_COST = (
    "kitfs opens files with keep_cache, so a re-read on the same mount comes from the kernel's page "
    "cache near local speed (the re-read row); a new mount starts with an empty page cache for its "
    "files, and every read then travels kernel → /dev/fuse → the Python daemon (a trio task and a "
    "pread of the cached tar) → back, where the local file is one page-cache copy. kitfs widens the "
    "mount's readahead window to 1 MiB after FUSE INIT (the default 128 KiB split a 1 MiB `dd` "
    "read into eight requests), which cut a 256 MiB sequential read from a new mount by about a "
    "quarter. Fix for the rest: FUSE passthrough (Linux 6.9+: hand the cached tar's descriptor to "
    "the kernel so reads never reach the daemon)."
)
LS_COST = (
    "attributes and entries are cached by the kernel (timeouts of a day) and kitfs answers "
    "getxattr/listxattr with ENOSYS, so the kernel stops asking for extended attributes after the "
    "first `ls -l`; what remains is one round-trip to the Python daemon per directory opened and "
    "per readdir batch, and per entry on a new mount until the kernel has looked it up. Fix: cache "
    "directory listings in the kernel (FOPEN_CACHE_DIR) and answer readdirplus with attributes."
)
RANDOM_COST = (
    "on a new mount each block's first read reaches the Python daemon (one trio task and one pread "
    "of the cached tar per FUSE request), which all 16 readers share on 2 cores that the readers "
    "need too; the local file is served by the kernel alone. Once the blocks are in the page cache "
    "(the hot row) the daemon is out of the path. Fix: FUSE passthrough, or more pread worker "
    "threads in the daemon."
)


def _cell(m: Measurement | None) -> str:
    if m is None:
        return "—"
    if m.error:
        return f"error: {m.error[:160]}"
    return seconds(m.seconds)


def _fetched(m: Measurement | None) -> str:
    return mib(m.fetched.total) if m is not None and m.fetched is not None and not m.error else "—"


def _ok(m: Measurement | None) -> bool:
    return m is not None and m.error is None and m.seconds is not None


def _base(b: Bench, figure: str, compression: str, state: str) -> float | None:
    m = b.get(figure, compression, MOUNT, state)
    return m.seconds if _ok(m) else None


def setup_table(b: Bench) -> Table:
    t = Table(
        "0",
        "building the workload (pack + push, not a comparison)",
        ["Compression", "ModelKit size (MiB)", "kitfs pack (s)", "kitfs push (s)"],
    )
    for c in b.compressions:
        info = b.layer_info.get(c, {})
        size = info.get("size")
        t.add(
            c,
            mib(size) if isinstance(size, int) else "—",
            _cell(b.get("setup", c, "kitfs pack", "-")),
            _cell(b.get("setup", c, "kitfs push", "-")),
        )
    return t


def figure1_table(b: Bench) -> Table:
    t = Table(
        "1",
        "from `kitfs mount` to a readable Kitfile",
        ["Compression", "Method", "State", "Time (s)", "vs kitfs mount", "Fetched (MiB)"],
    )
    for c in b.compressions:
        for method in (MOUNT, UNPACK_KITFILE, PULL_ONLY):
            for state in (COLD, WARM):
                m = b.get("1", c, method, state)
                if m is None:
                    continue
                t.add(
                    c,
                    method,
                    state,
                    _cell(m),
                    ratio(m.seconds if _ok(m) else None, _base(b, "1", c, state)),
                    _fetched(m),
                )
    t.notes.append(
        "Mount time is measured from launching `kitfs mount` to the first successful read of `MNT/Kitfile`; warm = unmount and mount again with the same cache."
    )
    t.notes.append(
        "`kitfs pull` is the cold pull of the whole ModelKit timed in figure 2: the time before a pulled Kitfile could be unpacked."
    )
    return t


def figure2_table(b: Bench) -> Table:
    name = b.workload.mid_name
    methods = (MOUNT, PULL_UNPACK, UNPACK_FILTER.format(name), KIT_PULL_UNPACK)
    t = Table(
        "2",
        f"read one {b.workload.sizes.mid_dataset_mib} MiB dataset file (`{b.workload.mid_path}`)",
        ["Compression", "Method", "State", "Time (s)", "vs kitfs mount", "Fetched (MiB)", "Detail"],
    )
    for c in b.compressions:
        for method in methods:
            for state in (COLD, WARM):
                m = b.get("2", c, method, state)
                if m is None:
                    continue
                t.add(
                    c,
                    method,
                    state,
                    _cell(m),
                    ratio(m.seconds if _ok(m) else None, _base(b, "2", c, state)),
                    _fetched(m),
                    _detail(m),
                )
    t.notes.append(
        "Every time runs from the first command to the last byte read (`dd bs=1M`); the mount time includes `kitfs mount`."
    )
    t.notes.append(
        "Detail: `mount` = `kitfs mount` until the Kitfile reads; `first stat` = looking the file up, which on a cold "
        "cache fetches, verifies, decompresses and indexes its whole layer (v1 fetches layers whole); `read` = the `dd`."
    )
    if not b.kit_available:
        t.notes.append(
            "`kit` is not installed on this machine (`kit version` failed), so its reference rows are left out."
        )
    return t


def figure3_table(b: Bench) -> Table:
    size = b.workload.sizes.model_mib * MIB
    t = Table(
        "3",
        f"read the whole {b.workload.sizes.model_mib} MiB model file sequentially",
        [
            "Compression",
            "Method",
            "State",
            "Time (s)",
            "MiB/s",
            "vs kitfs mount",
            "Fetched (MiB)",
            "Detail",
        ],
    )
    rows = [
        (c, method)
        for c in b.compressions
        for method in (MOUNT, PULL_UNPACK_MODEL, KIT_PULL_UNPACK_MODEL)
    ]
    rows.append(("-", LOCAL_FILE))
    for c, method in rows:
        for state in (COLD, REREAD, WARM):
            m = b.get("3", c, method, state)
            if m is None:
                continue
            base = None if c == "-" else _base(b, "3", c, state)
            rate = f"{size / MIB / m.seconds:.0f}" if _ok(m) and m.seconds else "—"
            t.add(
                c,
                method,
                state,
                _cell(m),
                rate,
                ratio(m.seconds if _ok(m) else None, base),
                _fetched(m),
                _detail(m),
            )
    t.notes.append(
        "Mount rows include `kitfs mount`; re-read = `dd` again on the same mount; warm = a new mount on the filled cache. "
        "`first stat` is the lookup of the file, which on a cold cache fetches, verifies and indexes the whole model layer."
    )
    for c in b.compressions:
        for state, local_state in ((WARM, WARM), (REREAD, WARM)):
            k, loc = b.get("3", c, MOUNT, state), b.get("3", "-", LOCAL_FILE, local_state)
            if _ok(k) and _ok(loc):
                assert k is not None and loc is not None
                t.notes.append(
                    f"Read alone (without `kitfs mount`), {c}, {state}: {seconds(_read_s(k))} s through the mount vs "
                    f"{seconds(loc.seconds)} s for the local file {local_state}: {ratio(_read_s(k), loc.seconds)}."
                )
    return t


def figure4_table(b: Bench) -> Table:
    t = Table(
        "4",
        f"`ls -lR` of the {b.workload.sizes.small_files}-file dataset",
        [
            "Compression",
            "Method",
            "State",
            "Time (s)",
            "vs local directory",
            "Fetched (MiB)",
            "Lines",
        ],
    )
    local = {s: b.get("4", "-", LOCAL_DIR, s) for s in (COLD, WARM)}
    for c in b.compressions:
        for state in (COLD, WARM_SAME, WARM_REMOUNT):
            m = b.get("4", c, MOUNT, state)
            if m is None:
                continue
            ref = local[COLD] if state == COLD else local[WARM]
            t.add(
                c,
                MOUNT,
                state,
                _cell(m),
                ratio(m.seconds if _ok(m) else None, ref.seconds if _ok(ref) else None),
                _fetched(m),
                _lines(m),
            )
    for state in (COLD, WARM):
        m = local[state]
        if m is not None:
            t.add("-", LOCAL_DIR, state, _cell(m), "1.00×" if _ok(m) else "—", "—", _lines(m))
    t.notes.append(
        "The cold mount row times `ls -lR` alone, on a mount whose Kitfile is already readable; it includes fetching and indexing the small-files layer. Ratios here are kitfs time / local time: above 1 means kitfs is slower."
    )
    return t


def figure5_table(b: Bench) -> Table:
    t = Table(
        "5",
        f"{b.readers} concurrent readers of random 1 MiB blocks of the model file, warm",
        [
            "Compression",
            "Reader",
            "State",
            "Reads",
            "Throughput (MiB/s)",
            "p50 (ms)",
            "p99 (ms)",
            "Local throughput / this",
        ],
    )
    local = b.get("5", "-", LOCAL_FILE, HOT)
    rows = [(c, MOUNT, s) for c in b.compressions for s in (WARM, HOT)] + [("-", LOCAL_FILE, HOT)]
    for c, method, state in rows:
        m = b.get("5", c, method, state)
        if m is None:
            continue
        if not _ok(m):
            t.add(c, method, state, "—", _cell(m), "—", "—", "—")
            continue
        assert m is not None
        x = m.extra
        rel = ratio(local.extra["mib_per_s"], x["mib_per_s"]) if _ok(local) and local else "—"
        t.add(
            c,
            method,
            state,
            f"{x['reads']:.0f}",
            f"{x['mib_per_s']:.0f}",
            f"{x['p50_ms']:.2f}",
            f"{x['p99_ms']:.2f}",
            rel,
        )
    t.notes.append(
        "warm = a new mount on the kitfs cache that figure 3 filled: each block's first read goes through "
        "FUSE to the daemon (pread on the cached tar). hot = the same mount after one full `dd` of the file: "
        "kitfs opens files with keep_cache, so the kernel's page cache serves the reads, as it does for the "
        "local file (read once before, so also in the page cache)."
    )
    t.notes.append(
        "Readers are threads of the benchmark process (os.pread on one descriptor each); the same harness "
        "reads the local file, so its overhead is on both sides of the ratio."
    )
    return t


def figure6_table(b: Bench, skipped: str | None) -> Table:
    big = b.workload.sizes.big_dataset_mib
    t = Table(
        "6",
        f"the same gzip layer (the {big} MiB dataset): ratarmount vs kitfs",
        [
            "Method",
            "State",
            "Mount + list (s)",
            f"Read {big} MiB (s)",
            "Total (s)",
            "vs kitfs mount",
            "Fetched (MiB)",
        ],
    )
    if skipped:
        t.add("ratarmount", "—", f"skipped: {skipped}", "—", "—", "—", "—")
        return t
    for method in (RATARMOUNT, MOUNT):
        for state in (COLD, WARM):
            m = b.get("6", "gzip", method, state)
            if m is None:
                continue
            if not _ok(m):
                t.add(method, state, _cell(m), "—", "—", "—", "—")
                continue
            t.add(
                method,
                state,
                seconds(m.extra["list_s"]),
                seconds(m.extra["read_s"]),
                seconds(m.seconds),
                ratio(m.seconds, _base(b, "6", "gzip", state)),
                _fetched(m) if method == MOUNT else "0 (local file)",
            )
    t.notes.append(
        "ratarmount mounts the gzip blob straight from the packing machine's local storage (`--index-file` in a scratch directory, removed for the cold run: cold includes building its index); its list is `ls -lR` of its whole mount (the layer holds one file)."
    )
    t.notes.append(
        "kitfs mounts the ModelKit from the registry; its list is `ls -l` of the dataset file. Cold = empty kitfs cache, so it includes the download of the layer; warm = a new mount on the filled cache."
    )
    return t


def figure7_table(b: Bench) -> Table:
    t = Table(
        "7",
        "peak memory (RSS) of the FUSE daemon",
        ["Figure", "Compression", "Daemon", "Step", "Peak RSS (MiB)"],
    )
    for (figure, c, method, state), m in b.results.items():
        if figure in ("3", "5", "6") and m.extra.get("rss_mib") and method in (MOUNT, RATARMOUNT):
            t.add(
                figure,
                c,
                "ratarmount" if method == RATARMOUNT else "kitfs",
                state,
                f"{m.extra['rss_mib']:.0f}",
            )
    t.notes.append(
        "Sampled every 50 ms from /proc/PID/status (VmRSS) and the process's VmHWM at the end of the step; each step runs on its own mount, so VmHWM covers that mount's life."
    )
    return t


def _read_s(m: Measurement) -> float | None:
    """The read alone, without the mount's start (steps that did not mount: their whole time)."""
    return m.extra.get("read_s", m.seconds)


def _detail(m: Measurement | None) -> str:
    if not _ok(m):
        return ""
    assert m is not None
    parts = []
    labels = (
        ("mount_s", "mount"),
        ("stat_s", "first stat"),
        ("pull_s", "pull"),
        ("unpack_s", "unpack"),
        ("read_s", "read"),
    )
    for key, label in labels:
        if key in m.extra:
            parts.append(f"{label} {seconds(m.extra[key])} s")
    if "runs" in m.extra:
        parts.append(f"median of {m.extra['runs']:.0f} (spread {seconds(m.extra['spread_s'])} s)")
    if "rss_mib" in m.extra:
        parts.append(f"RSS {m.extra['rss_mib']:.0f} MiB")
    return ", ".join(parts)


def _lines(m: Measurement | None) -> str:
    return f"{m.extra['lines']:.0f}" if _ok(m) and m and "lines" in m.extra else "—"


def _why_key(figure: str, method: str) -> tuple[str, str]:
    return (
        figure,
        UNPACK_FILTER if method.startswith("kitfs unpack --filter datasets") else method,
    )


def losses(b: Bench) -> list[str]:
    """Every place this run's kitfs mount was slower than the alternative, grouped by cause: one
    line per (figure, alternative) listing the cases, with why and what would fix it."""
    groups: dict[str, tuple[list[str], str]] = {}

    def add(title: str, case: str, why: str) -> None:
        groups.setdefault(title, ([], why))[0].append(case)

    for (figure, c, method, state), m in b.results.items():
        why = WHY.get(_why_key(figure, method))
        base = _base(b, figure, c, state)
        if why is None or not _ok(m) or base is None or m.seconds is None or m.seconds >= base:
            continue
        noise = " (within this run's noise)" if base / m.seconds < 1.05 else ""
        add(
            f"Figure {figure}: {method} beats the mount",
            f"{c} {state}: {seconds(m.seconds)} s vs {seconds(base)} s, {ratio(base, m.seconds)}{noise}",
            why,
        )
    for c in b.compressions:
        k, loc = b.get("3", c, MOUNT, WARM), b.get("3", "-", LOCAL_FILE, WARM)
        if _ok(k) and _ok(loc):
            assert k is not None and loc is not None
            kr = _read_s(k)
            if kr is not None and loc.seconds is not None and kr > loc.seconds:
                add(
                    "Figure 3: a warm read through a new mount vs `dd` of a local file in the page cache (read alone)",
                    f"{c}: {seconds(kr)} s vs {seconds(loc.seconds)} s, {ratio(kr, loc.seconds)}",
                    FUSE_COST,
                )
        ls, lsl = b.get("4", c, MOUNT, WARM_REMOUNT), b.get("4", "-", LOCAL_DIR, WARM)
        if _ok(ls) and _ok(lsl):
            assert ls is not None and lsl is not None and ls.seconds and lsl.seconds
            if ls.seconds > lsl.seconds:
                add(
                    "Figure 4: `ls -lR` on a warm remount vs the local directory",
                    f"{c}: {seconds(ls.seconds)} s vs {seconds(lsl.seconds)} s, {ratio(ls.seconds, lsl.seconds)}",
                    LS_COST,
                )
        r, rl = b.get("5", c, MOUNT, WARM), b.get("5", "-", LOCAL_FILE, HOT)
        if _ok(r) and _ok(rl):
            assert r is not None and rl is not None
            if r.extra["mib_per_s"] < rl.extra["mib_per_s"]:
                add(
                    "Figure 5: random 1 MiB reads on a new mount vs the local file in the page cache",
                    f"{c}: {r.extra['mib_per_s']:.0f} vs {rl.extra['mib_per_s']:.0f} MiB/s",
                    RANDOM_COST,
                )
    return [
        f"**{title}** ({'; '.join(cases)}). Why: {why}" for title, (cases, why) in groups.items()
    ]
