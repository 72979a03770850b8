"""``kitfs mount`` and ``kitfs umount``: a ModelKit as a read-only directory tree."""

from __future__ import annotations

import argparse
import sys

from kitfs.cli.common import add_network_flags
from kitfs.cli.signing import add_policy_flags
from kitfs.fs.mount import mount, unmount
from kitfs.fs.options import build_options, parse_option_list
from kitfs.fs.tree import LAYOUTS


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_mount(subparsers)
    _register_umount(subparsers)


def _register_mount(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "mount",
        help="mount a ModelKit as a read-only directory tree",
        description=(
            "Mount a ModelKit (from a registry, from local storage, or from an OCI layout directory "
            "oci:PATH[:TAG]) as a read-only directory tree. Only the manifest and config are fetched "
            "to mount; a layer is fetched, verified and cached when a file in it is first needed. "
            "A reference without a tag or digest mounts the repository: one directory per tag."
        ),
    )
    p.add_argument(
        "reference", metavar="REF", help="[registry/]repository[:tag|@digest], or oci:PATH[:TAG]"
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    p.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, logging to stderr"
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="sections",
        help="sections: Kitfile, model/, datasets/, code/, docs/ (default); unpack: one tree as `kit unpack` writes it",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the layer cache (default $KITFS_CACHE, else $XDG_CACHE_HOME/kitfs)",
    )
    p.add_argument(
        "--cache-size",
        metavar="SIZE",
        help="evict least recently used layers to keep the cache under SIZE (e.g. 50G; default: no bound)",
    )
    p.add_argument(
        "--shared-cache",
        action="store_true",
        help="a node cache other users may read: directories 0755, files 0644 (default: private, "
        "0700/0600; $KITFS_SHARED_CACHE=1)",
    )
    p.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        help="the longest one file system request may wait (a fetch that cannot finish): it then "
        "fails with ETIMEDOUT and a later read tries again (default 300; $KITFS_REQUEST_TIMEOUT)",
    )
    p.add_argument(
        "--span-memory",
        metavar="SIZE",
        help="verified spans kept in memory for readers, so a loader is answered without reading "
        "them back from the cache (default 192M; 0: none; given back after 30 s unused)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log every request (to the log file)",
    )
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="mount options: allow_other (let other users read), nonempty, and the long flags as key=value",
    )
    p.add_argument(
        "--refresh",
        choices=("auto", "always", "never"),
        default="auto",
        help="ask the registry what a tag names: auto (default; when it cannot answer, use the "
        "digest the tag last resolved to, from the cache), always (no fallback), never (the cache only)",
    )
    add_network_flags(p)
    add_policy_flags(p)
    p.set_defaults(func=_cmd_mount)


def _cmd_mount(args: argparse.Namespace) -> int:
    settings: dict[str, object] = {
        "layout": args.layout,
        "cache_dir": args.cache_dir,
        "cache_size": args.cache_size,
        "foreground": args.foreground,
        "debug": bool(getattr(args, "debug", False)),
        "config": getattr(args, "config", None),
        "plain_http": args.plain_http,
        "tls_verify": args.tls_verify,
        "ca_file": args.ca_file,
        "cert": args.cert,
        "key": args.key,
        "proxy": args.proxy,
        "concurrency": args.concurrency,
        "verify_key": args.verify_key,
        "policy": args.policy,
        "refresh": args.refresh,
        "registries_conf": args.registries_conf,
        "min_rate": args.min_rate,
        "rate_window": args.rate_window,
        "idle_timeout": args.idle_timeout,
        "request_timeout": args.request_timeout,
        "span_memory": args.span_memory,
        "shared_cache": args.shared_cache,
    }
    settings.update({k: v for k, v in parse_option_list(args.options).items()})
    foreground = bool(settings["foreground"])
    settings["progress"] = (
        foreground and getattr(args, "progress", "auto") != "none" and sys.stderr.isatty()
    )
    return mount(build_options(args.reference, args.mountpoint, settings))


def _register_umount(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "umount",
        help="unmount a kitfs mount",
        description="Unmount a kitfs mount (as `fusermount3 -u` does); its daemon then exits.",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument(
        "-z",
        "--lazy",
        action="store_true",
        help="detach now even if files are open; finish when they close",
    )
    p.set_defaults(func=_cmd_umount)


def _cmd_umount(args: argparse.Namespace) -> int:
    unmount(args.mountpoint, lazy=args.lazy)
    return 0
