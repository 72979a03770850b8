"""The mount daemon's body: resolve the reference, mount, report readiness, serve until unmounted.

It runs in the process that serves the mount (the forked daemon, or ``kitfs mount -f``); kitfs.fs.mount
imports it only there, so the command that forks loads no trio, pyfuse3 or registry code and returns
as soon as the daemon reports the mount ready.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pyfuse3
import trio

from kitfs.errors import MountError
from kitfs.fs.layerstore import LayerStore
from kitfs.fs.mounttable import find_mount
from kitfs.fs.operations import KitfsOperations
from kitfs.fs.options import MountOptions, Notify, fuse_options
from kitfs.fs.source import Source
from kitfs.fs.sourcechoice import open_source
from kitfs.fs.tree import MountTree
from kitfs.progress import ProgressSink, progress_for
from kitfs.storage.cache import BlobCache

log = logging.getLogger(__name__)


async def build_tree(source: Source, layout: str) -> MountTree:
    """Resolve the reference (manifest and config; no layer) into the tree to mount."""
    now = time.time_ns()
    uid, gid = os.getuid(), os.getgid()
    if source.target is None:
        tree = MountTree.for_repository(layout, now, uid=uid, gid=gid)
        tree.set_tags(await source.list_tags())
        return tree
    kit = await source.resolve(source.target)
    log.info("mounting %s (%s)", kit.name, kit.digest)
    return MountTree.for_modelkit(
        kit.manifest, kit.kitfile, layout, kit.created_ns or now, uid=uid, gid=gid
    )


async def serve(
    options: MountOptions, cache: BlobCache, progress: ProgressSink, notify: Notify
) -> None:
    """Resolve, mount, tell ``notify("ready")``, and serve until unmounted or signalled."""
    source = open_source(options.reference, options.paths, cache, options.registry, options.refresh)
    if options.signatures is not None:
        from kitfs.fs.verified import VerifiedSource
        from kitfs.signing.enforce import Enforcer

        source = VerifiedSource(source, Enforcer(options.signatures))
    async with source:
        tree = await build_tree(source, options.layout)
        warnings = list(getattr(source, "warnings", ()))
        layers = LayerStore(
            source,
            cache,
            progress=progress,
            concurrency=options.registry.concurrency,
            span_memory=options.span_memory,
        )
        log.info("span memory: up to %d bytes", options.span_memory)
        operations = KitfsOperations(tree, layers, source, options.request_timeout)
        try:
            pyfuse3.init(operations, str(options.mountpoint), fuse_options(options))
        except RuntimeError as exc:
            from kitfs.fs.fusecheck import explain

            message = explain(options.mountpoint, str(exc), allow_other=options.allow_other)
            raise MountError(message) from None
        log.info("serving %s at %s (pid %d)", options.reference, options.mountpoint, os.getpid())
        try:
            notify("".join(["ready", *(f"\nwarning {w}" for w in warnings)]))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signals, operations)
                nursery.start_soon(_widen_readahead_after_init, options.mountpoint)
                layers.attach(nursery)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            operations.close()
            pyfuse3.close(unmount=True)
        log.info("unmounted %s", options.mountpoint)


READAHEAD_KB = 1024


def set_readahead(mountpoint: Path, kb: int = READAHEAD_KB) -> bool:
    """Widen the kernel's readahead window for this mount (FUSE's default is 128 KiB), so that
    sequential reads reach the daemon in 1 MiB requests. Best effort: it needs root."""
    info = find_mount(mountpoint)
    if info is None or not info.device:
        return False
    knob = Path(f"/sys/class/bdi/{info.device}/read_ahead_kb")
    try:
        knob.write_text(f"{kb}\n")
        return knob.read_text().strip() == str(kb)
    except OSError as exc:
        log.debug("could not widen readahead of %s: %s", mountpoint, exc)
        return False


async def _widen_readahead_after_init(mountpoint: Path) -> None:
    """The kernel sets the mount's readahead when it gets the FUSE INIT reply, which the main loop
    sends first; widen it just after that (a few tries, then give up quietly)."""
    for _ in range(20):
        await trio.sleep(0.05)
        if await trio.to_thread.run_sync(set_readahead, mountpoint):
            log.debug("readahead of %s set to %d KiB", mountpoint, READAHEAD_KB)
            return


async def _stop_on_signals(operations: KitfsOperations) -> None:
    """Stop serving on a signal: requests in flight (a fetch that hangs) are cancelled with EIO,
    so that the FUSE loop ends now rather than when they would."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as received:
        async for signum in received:
            log.info("received %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            operations.bounds.abort()
            return


def run(options: MountOptions, notify: Notify) -> None:
    """Serve a mount in this process (the foreground mode, and the daemon's body)."""
    cache = BlobCache(options.cache_dir, options.cache_size, options.shared_cache or None).ensure()
    with progress_for(options.progress) as sink:
        trio.run(serve, options, cache, sink, notify)
