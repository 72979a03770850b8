"""The storage options of the ``kit`` file system: what ``kitfs mount``'s flags carry, by the same
names as its ``-o`` options, resolved by the mount's own code (kitfs.fs.options.build_options), so a
``kit://`` URL and a mount of the same reference with the same settings read the same bytes from
the same cache under the same rules.

``config`` (kit's home), ``cache_dir``, ``cache_size`` (``10G``, bytes, ``none``), ``plain_http``,
``tls_verify``, ``ca_file``, ``cert``, ``key``, ``proxy``, ``concurrency``, ``registries_conf``,
``verify_key``, ``policy`` (else ``$KITFS_POLICY``), ``refresh`` (auto, always, never) and
``layout`` (sections, unpack).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kitfs.config import Paths, Refresh
from kitfs.errors import UsageError
from kitfs.fs.options import build_options
from kitfs.oci.options import RegistryOptions

if TYPE_CHECKING:
    from kitfs.signing.policy import Policy

OPTION_NAMES = (
    "config",
    "cache_dir",
    "cache_size",
    "plain_http",
    "tls_verify",
    "ca_file",
    "cert",
    "key",
    "proxy",
    "concurrency",
    "registries_conf",
    "verify_key",
    "policy",
    "refresh",
    "layout",
)
# fsspec's own instance and listing-cache keywords: AbstractFileSystem takes these.
FSSPEC_NAMES = ("use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache")


@dataclass(frozen=True)
class KitOptions:
    """Resolved storage options (flags, then environment, then defaults, as for a mount)."""

    layout: str
    cache_dir: Path
    cache_size: int | None
    paths: Paths
    registry: RegistryOptions
    signatures: Policy | None
    refresh: Refresh


def resolve_options(settings: Mapping[str, object]) -> KitOptions:
    """KitOptions from storage options; an unknown name is refused with the list of known ones
    (a misspelt ``verify_key`` silently ignored would read unsigned bytes)."""
    unknown = sorted(set(settings) - set(OPTION_NAMES) - set(FSSPEC_NAMES))
    if unknown:
        raise UsageError(
            f"unknown kit storage option {', '.join(map(repr, unknown))} "
            f"(kitfs takes {', '.join(OPTION_NAMES)})"
        )
    ours = {k: v for k, v in settings.items() if k in OPTION_NAMES and v is not None}
    mount = build_options("", "/", ours)
    return KitOptions(
        layout=mount.layout,
        cache_dir=mount.cache_dir,
        cache_size=mount.cache_size,
        paths=mount.paths,
        registry=mount.registry,
        signatures=mount.signatures,
        refresh=mount.refresh,
    )
