"""``kitfs csi``: the Kubernetes CSI node plugin (docs/csi.md).

Only argparse is imported here; the handler imports the plugin (grpc, the spawner), so other verbs
do not pay for them.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from kitfs.cli.common import add_network_flags
from kitfs.errors import UsageError

DEFAULT_STATE_DIR = "/var/lib/kitfs-csi"
DEFAULT_KEYS_DIR = "/etc/kitfs/keys"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "csi",
        help="serve ModelKits to Kubernetes pods as CSI volumes (a node plugin)",
        description=(
            "A CSI v1 node plugin (Identity and Node services, gRPC on a unix socket): each "
            "published volume is a lazy, verified, read-only kitfs mount of the ModelKit its "
            "'reference' attribute names. Deployment: deploy/kubernetes/, docs/csi.md."
        ),
    )
    p.add_argument(
        "--endpoint",
        default=os.environ.get("CSI_ENDPOINT"),
        help="the socket to listen on, unix:///csi/csi.sock (default $CSI_ENDPOINT)",
    )
    p.add_argument(
        "--node-id",
        default=os.environ.get("NODE_ID"),
        help="this node's name, as NodeGetInfo reports it (default $NODE_ID)",
    )
    p.add_argument(
        "--driver-name",
        default="kitfs.kitops.dev",
        help="the CSI driver name (default kitfs.kitops.dev)",
    )
    p.add_argument(
        "--state-dir",
        default=os.environ.get("KITFS_CSI_STATE", DEFAULT_STATE_DIR),
        help=f"volume records and credentials, mode 0700 (default $KITFS_CSI_STATE, else {DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the node's layer cache, shared by every volume (default $KITFS_CACHE, else $XDG_CACHE_HOME/kitfs)",
    )
    p.add_argument(
        "--cache-size",
        metavar="SIZE",
        help="keep the node's cache under SIZE (e.g. 200G; default: no bound)",
    )
    p.add_argument(
        "--keys-dir",
        default=DEFAULT_KEYS_DIR,
        help=f"where the public keys and policies volumes name (verifyKey, policy) live (default {DEFAULT_KEYS_DIR})",
    )
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="a signature policy every volume of the node must pass (default $KITFS_POLICY)",
    )
    p.add_argument(
        "--repair-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often to look for volumes whose daemon died and mount them again (default 30)",
    )
    add_network_flags(p)
    p.set_defaults(func=_cmd_csi)


def _cmd_csi(args: argparse.Namespace) -> int:
    from kitfs.config import kitfs_cache_dir
    from kitfs.csi.plugin import PluginConfig, run
    from kitfs.csi.spec import NodeSettings
    from kitfs.fs.options import parse_size
    from kitfs.signing import POLICY_ENV

    if not args.endpoint:
        raise UsageError("kitfs csi needs --endpoint (or $CSI_ENDPOINT), e.g. unix:///csi/csi.sock")
    if not args.node_id:
        raise UsageError("kitfs csi needs --node-id (or $NODE_ID), the node's name")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("kitfs.csi").setLevel(logging.INFO)  # a plugin says what it does
    policy = args.policy or os.environ.get(POLICY_ENV) or None
    network = {
        "plain_http": args.plain_http,
        "tls_verify": args.tls_verify,
        "ca_file": args.ca_file,
        "cert": args.cert,
        "key": args.key,
        "proxy": args.proxy,
        "concurrency": args.concurrency,
        "registries_conf": args.registries_conf,
    }
    node = NodeSettings(
        cache_dir=kitfs_cache_dir(args.cache_dir),
        cache_size=parse_size(args.cache_size) if args.cache_size else None,
        keys_dir=Path(args.keys_dir).absolute(),
        config_home=getattr(args, "config", None),
        node_policy=str(Path(policy).absolute()) if policy else None,
        network={k: v for k, v in network.items() if v is not None},
    )
    config = PluginConfig(
        endpoint=args.endpoint,
        node_id=args.node_id,
        driver_name=args.driver_name,
        state_dir=Path(args.state_dir).absolute(),
        node=node,
        repair_interval=args.repair_interval,
    )
    return run(config)
