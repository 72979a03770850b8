"""Helpers shared by the verb modules: paths, network flags, JSON output, terminal detection."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kitfs.config import Paths
from kitfs.errors import UsageError


def paths(args: argparse.Namespace) -> Paths:
    return Paths.resolve(getattr(args, "config", None))


def add_network_flags(
    parser: argparse.ArgumentParser, client_tls: tuple[str, str] = ("--cert", "--key")
) -> None:
    """kit's network flags (pkg/cmd/options/network.go), plus a CA bundle option; ``client_tls``
    names the client certificate and key flags (``sign``/``verify`` keep ``--key`` for cosign's)."""
    group = parser.add_argument_group("network")
    group.add_argument("--plain-http", action="store_true", help="use plain HTTP instead of HTTPS")
    group.add_argument(
        "--tls-verify",
        default="true",
        type=_parse_bool,
        metavar="BOOL",
        help="verify the registry's TLS certificate (default true)",
    )
    group.add_argument(
        "--ca-file", "--tls-cert", dest="ca_file", metavar="PEM", help="extra CA bundle to trust"
    )
    group.add_argument(
        client_tls[0], dest="cert", metavar="PEM", help="client certificate for mutual TLS"
    )
    group.add_argument(client_tls[1], dest="key", metavar="PEM", help="client key for mutual TLS")
    group.add_argument(
        "--concurrency",
        type=int,
        default=5,
        metavar="N",
        help="parallel blob transfers (default 5)",
    )
    group.add_argument("--proxy", metavar="URL", help="HTTP(S) proxy for registry traffic")
    add_transfer_flags(group)
    group.add_argument(
        "--registries-conf",
        metavar="FILE",
        help="mirrors and registry settings, containers-registries.conf(5) format (default "
        "$KITFS_REGISTRIES_CONF, else ~/.config/kitfs/registries.conf, else /etc/kitfs/registries.conf)",
    )


def add_transfer_flags(group: Any) -> None:
    """How slow a registry may be before a transfer is given up (kitfs.oci.deadline)."""
    group.add_argument(
        "--min-rate",
        metavar="RATE",
        help="give up a transfer that averages less than RATE bytes/s over --rate-window "
        "(retried once; e.g. 1KiB, the default; 0 turns it off; $KITFS_MIN_RATE)",
    )
    group.add_argument(
        "--rate-window",
        metavar="SECONDS",
        help="the window the minimum rate is measured over (default 20; $KITFS_RATE_WINDOW)",
    )
    group.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        help="give up a transfer after this long without a byte, and an answer that takes "
        "longer to start (default 60; $KITFS_IDLE_TIMEOUT)",
    )


def add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """The mount cache's flags, for verbs that read through it (unpack, info, prefetch)."""
    group = parser.add_argument_group("cache")
    group.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the mount cache (default $KITFS_CACHE, else $XDG_CACHE_HOME/kitfs)",
    )
    group.add_argument(
        "--refresh",
        choices=("auto", "always", "never"),
        default="auto",
        help="ask the registry what a tag names: auto (default; on failure use the digest it "
        "last resolved to), always (no fallback), never (the cache only)",
    )


def cache_policy(args: argparse.Namespace) -> Any:
    """CachePolicy from the cache flags."""
    from kitfs.config import check_refresh, kitfs_cache_dir
    from kitfs.offline import CachePolicy

    return CachePolicy(kitfs_cache_dir(args.cache_dir), check_refresh(args.refresh))


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def registry_options(args: argparse.Namespace) -> Any:
    """RegistryOptions from the network flags."""
    from kitfs.oci.deadline import transfer_settings
    from kitfs.oci.options import RegistryOptions

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    return RegistryOptions(
        plain_http=args.plain_http,
        tls_verify=args.tls_verify,
        ca_file=args.ca_file,
        cert=args.cert,
        key=args.key,
        proxy=args.proxy,
        concurrency=args.concurrency,
        registries_conf=getattr(args, "registries_conf", None),
        **transfer_settings(
            getattr(args, "min_rate", None),
            getattr(args, "rate_window", None),
            getattr(args, "idle_timeout", None),
        ),
    )


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def show_progress(args: argparse.Namespace) -> str:
    """The progress mode for ``kitfs.progress.progress_for``: ``--progress plain`` or ``none`` as
    asked; with ``auto``, bars on a terminal and nothing elsewhere."""
    mode = getattr(args, "progress", "auto")
    if mode in ("none", "plain"):
        return str(mode)
    return "bars" if sys.stderr.isatty() else "none"


def info(message: str) -> None:
    """A status line for people: on stderr, so stdout stays clean for data."""
    print(message, file=sys.stderr)
