"""``kitfs prefetch`` and ``kitfs cache ls|prune|info|clear``: warming and tending the mount cache."""

from __future__ import annotations

import argparse
import datetime
import sys

from kitfs.cli.common import (
    add_network_flags,
    info,
    paths,
    print_json,
    registry_options,
    show_progress,
)
from kitfs.config import kitfs_cache_dir
from kitfs.progress import progress_for
from kitfs.storage import maintenance
from kitfs.storage.cache import BlobCache


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_prefetch(subparsers)
    p = subparsers.add_parser(
        "cache",
        help="list, prune, measure or clear the mount cache (and kit's cache directory)",
        description="Tend the mount cache (--cache-dir, $KITFS_CACHE, $XDG_CACHE_HOME/kitfs) and "
        "kit's cache directory ($KITOPS_HOME/cache). Safe while mounts run: what they read stays.",
    )
    verbs = p.add_subparsers(dest="cache_command", metavar="COMMAND")
    verbs.required = True
    ls = verbs.add_parser("ls", help="list cached layers and the ModelKits whose tags are recorded")
    _cache_dir_flag(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_cmd_ls)
    prune = verbs.add_parser(
        "prune", help="remove cached layers, manifests and tag records (never those in use)"
    )
    _cache_dir_flag(prune)
    which = prune.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="everything not in use")
    which.add_argument(
        "--older-than", metavar="DURATION", help="what was not used for DURATION (30m, 12h, 7d, 2w)"
    )
    prune.add_argument("--json", action="store_true", help="print JSON")
    prune.set_defaults(func=_cmd_prune)
    show = verbs.add_parser(
        "info", help="disk usage of kit's cache directory (as `kit cache info`) and the mount cache"
    )
    _cache_dir_flag(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_cmd_info)
    clear = verbs.add_parser(
        "clear", help="empty kit's cache directory and the mount cache (what is in use stays)"
    )
    _cache_dir_flag(clear)
    clear.set_defaults(func=_cmd_clear)


def _cache_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the mount cache (default $KITFS_CACHE, else $XDG_CACHE_HOME/kitfs)",
    )


def _cache(args: argparse.Namespace, size: int | None = None) -> BlobCache:
    return BlobCache(kitfs_cache_dir(args.cache_dir), size).ensure()


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


# -- prefetch -----------------------------------------------------------------------------


def _register_prefetch(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "prefetch",
        help="fill the mount cache with a ModelKit's layers, without mounting",
        description="Fetch, verify, decompress and index a ModelKit's layers into the mount cache "
        "exactly as a mount would, so that later mounts (on this node) read without the network.",
    )
    p.add_argument(
        "reference", metavar="REF", help="[registry/]repository:tag|@digest, or oci:PATH[:TAG]"
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="TYPE[,TYPE][:NAME,...]",
        help="only these layers: model, datasets, code, docs, optionally by name or path (repeatable)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the mount cache (default $KITFS_CACHE, else $XDG_CACHE_HOME/kitfs)",
    )
    p.add_argument("--cache-size", metavar="SIZE", help="keep the cache under SIZE (e.g. 50G)")
    p.add_argument(
        "--refresh",
        choices=("auto", "always", "never"),
        default="auto",
        help="as for mount: ask for the tag (auto: fall back to the cached digest), always, never",
    )
    add_network_flags(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_prefetch)


def _cmd_prefetch(args: argparse.Namespace) -> int:
    import trio

    from kitfs.config import check_refresh
    from kitfs.fs.options import parse_size
    from kitfs.fs.prefetch import prefetch
    from kitfs.unpack import Filter

    cache = _cache(args, parse_size(args.cache_size) if args.cache_size else None)
    filters = [Filter.parse(text) for text in args.filter]
    with progress_for(show_progress(args)) as sink:
        done = trio.run(
            lambda: prefetch(
                args.reference,
                paths(args),
                cache,
                registry_options(args),
                refresh=check_refresh(args.refresh),
                filters=filters,
                progress=sink,
            )
        )
    for warning in done.warnings:
        info(f"kitfs: warning: {warning}")
    if args.json:
        print_json(
            {
                "reference": done.name,
                "digest": done.digest,
                "layers": done.layers,
                "bytes": done.bytes,
                "fetched": done.fetched,
                "cache": str(cache.root),
            }
        )
    else:
        info(
            f"Prefetched {done.layers} layers ({maintenance.format_size(done.bytes)}, "
            f"{done.fetched} fetched) of {done.name} into {cache.root}"
        )
    return 0


# -- cache verbs --------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    found = maintenance.listing(_cache(args))
    if args.json:
        print_json(
            {
                "modelkits": [
                    {
                        "reference": k.reference,
                        "digest": k.digest,
                        "resolvedAt": _when(k.resolved_at),
                        "manifestCached": k.manifest_cached,
                    }
                    for k in found.modelkits
                ],
                "layers": [
                    {
                        "digest": layer.digest,
                        "size": layer.size,
                        "lastUsed": _when(layer.last_used),
                        "inUse": layer.in_use,
                        "blobs": list(layer.layers),
                    }
                    for layer in found.layers
                ],
            }
        )
        return 0
    out = sys.stdout
    out.write(f"{'REFERENCE':<60} {'DIGEST':<71} RESOLVED\n")
    for kit in found.modelkits:
        mark = "" if kit.manifest_cached else " (manifest not cached)"
        out.write(f"{kit.reference:<60} {kit.digest:<71} {_when(kit.resolved_at)}{mark}\n")
    out.write(f"\n{'LAYER (uncompressed digest)':<71} {'SIZE':>10}  LAST USED             IN USE\n")
    for layer in found.layers:
        out.write(
            f"{layer.digest:<71} {maintenance.format_size(layer.size):>10}  "
            f"{_when(layer.last_used)}  {'yes' if layer.in_use else 'no'}\n"
        )
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    older = maintenance.parse_duration(args.older_than) if args.older_than else None
    result = maintenance.prune(_cache(args), older_than=older, everything=args.all)
    if args.json:
        print_json(
            {
                "layers": result.layers,
                "bytes": result.bytes,
                "inUse": result.in_use,
                "smallBlobs": result.small_blobs,
                "tagRecords": result.records,
            }
        )
        return 0
    kept = f"; {len(result.in_use)} in use kept" if result.in_use else ""
    info(
        f"Removed {result.layers} layers ({maintenance.format_size(result.bytes)}), "
        f"{result.small_blobs} manifests and configs, {result.records} tag records{kept}"
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    kit_cache = paths(args).cache
    entries = maintenance.kit_cache_entries(kit_cache)
    cache = _cache(args)
    mount_total = maintenance.tree_size(cache.root)
    if args.json:
        print_json(
            {
                "kitCache": {
                    "path": str(kit_cache),
                    "size": sum(size for _, size in entries),
                    "entries": {name: size for name, size in entries},
                },
                "mountCache": {
                    "path": str(cache.root),
                    "size": mount_total,
                    "layers": maintenance.tree_size(cache.tars),
                },
            }
        )
        return 0
    # kit's own lines first, byte for byte (pkg/cmd/cache): then the mount cache.
    if not entries:
        print("Cache is currently empty")
    else:
        print(
            f"Total size of cache directory: {maintenance.format_size(sum(s for _, s in entries))}"
        )
        print("Cache contents:")
        width = max(len(f"./{name}") for name, _ in entries) + 4
        for name, size in entries:
            print(f"  {f'./{name}':<{width}}{maintenance.format_size(size)}")
    print(
        f"Mount cache {cache.root}: {maintenance.format_size(mount_total)} "
        f"(layers {maintenance.format_size(maintenance.tree_size(cache.tars))})"
    )
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    maintenance.clear_kit_cache(paths(args).cache)
    result = maintenance.prune(_cache(args), everything=True)
    if result.in_use:
        info(f"kept {len(result.in_use)} layers that running mounts are reading")
    return 0
