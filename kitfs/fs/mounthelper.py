"""``mount.kitfs``: the helper mount(8) runs for ``mount -t fuse.kitfs REF DIR`` and fstab lines.

mount(8) calls ``/sbin/mount.<type> SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]`` (util-linux,
"External helpers" in mount(8)); install this entry point as ``/sbin/mount.fuse.kitfs`` (and
``/sbin/mount.kitfs`` for ``-t kitfs``). Options are those of ``kitfs mount -o`` plus every long flag
as ``key=value`` (``layout=unpack,cache_dir=/var/cache/kitfs,plain_http``); generic mount options
(``ro``, ``noauto``, ``_netdev``, ``x-systemd.*``) are ignored. Exit codes follow mount(8): 1 for a
wrong invocation, 32 for a failed mount.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kitfs.errors import KitfsError, UsageError
from kitfs.fs.mount import mount
from kitfs.fs.options import build_options, parse_option_list

EXIT_USAGE = 1
EXIT_FAILURE = 32


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mount.kitfs", description="mount(8) helper for kitfs: mount a ModelKit read-only"
    )
    parser.add_argument("source", metavar="REF")
    parser.add_argument("mountpoint", metavar="DIR")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    parser.add_argument("-s", dest="sloppy", action="store_true", help="ignore unknown options")
    parser.add_argument("-f", dest="fake", action="store_true", help="do everything but mount")
    parser.add_argument("-n", dest="no_mtab", action="store_true", help="(ignored: no mtab)")
    parser.add_argument("-v", dest="verbose", action="store_true", help="say what is done")
    parser.add_argument("-t", dest="type", metavar="TYPE", help="(ignored: fuse.kitfs)")
    parser.add_argument("-N", dest="namespace", metavar="NS", help="(not supported)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        if args.namespace:
            raise UsageError("mount namespaces (-N) are not supported")
        settings = parse_option_list(args.options, sloppy=args.sloppy)
        options = build_options(args.source, args.mountpoint, settings)
        if args.verbose:
            print(
                f"mount.kitfs: mounting {options.reference} at {options.mountpoint}",
                file=sys.stderr,
            )
        if args.fake:
            return 0
        return mount(options)
    except UsageError as exc:
        print(f"mount.kitfs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KitfsError as exc:
        print(f"mount.kitfs: {exc}", file=sys.stderr)
        return EXIT_FAILURE
