"""What a NodePublishVolume request asks for, checked and turned into kitfs mount settings.

Pure functions over plain values (no grpc, no filesystem beyond the keys directory), so every rule
is tested without a plugin. A volume is described by its attributes (``volumeAttributes`` of an
inline volume or a PersistentVolume's ``csi`` source); the node's settings (registry options, the
shared cache, the node-wide signature policy) come from the plugin's flags and cannot be widened by
an attribute: a pod author chooses what to mount and may ask for more verification, never less.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kitfs.config import REFRESH_MODES
from kitfs.csi.errors import CsiError
from kitfs.errors import KitfsError
from kitfs.fs.options import GENERIC_OPTIONS, parse_size
from kitfs.fs.tree import LAYOUTS
from kitfs.reference import parse

# Attributes a volume may set (camelCase, as Kubernetes volume attributes are spelled).
ATTRIBUTES = ("reference", "layout", "verifyKey", "policy", "refresh", "cacheSize")
# Attributes the kubelet adds itself (podInfoOnMount, ephemeral volumes): accepted, not used.
KUBELET_PREFIX = "csi.storage.k8s.io/"
WRITABLE_FLAGS = frozenset({"rw"})

# csi.v1 VolumeCapability.AccessMode.Mode values that promise no writer.
READER_ONLY_MODES = frozenset({2, 3})  # SINGLE_NODE_READER_ONLY, MULTI_NODE_READER_ONLY
MODE_NAMES = {
    0: "UNKNOWN",
    1: "SINGLE_NODE_WRITER",
    2: "SINGLE_NODE_READER_ONLY",
    3: "MULTI_NODE_READER_ONLY",
    4: "MULTI_NODE_SINGLE_WRITER",
    5: "MULTI_NODE_MULTI_WRITER",
    6: "SINGLE_NODE_SINGLE_WRITER",
    7: "SINGLE_NODE_MULTI_WRITER",
}


@dataclass(frozen=True)
class Capability:
    """A request's VolumeCapability: ``access_type`` is "mount", "block" or "" (unset)."""

    access_type: str
    mode: int
    mount_flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PublishRequest:
    """The fields of a NodePublishVolumeRequest kitfs uses (``secrets`` is never logged)."""

    volume_id: str
    target_path: str
    capability: Capability | None
    readonly: bool
    attributes: Mapping[str, str]
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    staging_target_path: str = ""


@dataclass(frozen=True)
class NodeSettings:
    """What the plugin's flags fix for every volume of the node."""

    cache_dir: Path
    cache_size: int | None = None
    keys_dir: Path = Path("/etc/kitfs/keys")
    config_home: str | None = None
    node_policy: str | None = None  # --policy or $KITFS_POLICY: every volume passes it
    network: Mapping[str, object] = field(default_factory=dict)  # build_options' network keys


@dataclass(frozen=True)
class VolumeSpec:
    """A checked request: the mount's settings (for ``build_options``) and its fingerprint."""

    volume_id: str
    target: Path
    reference: str
    settings: Mapping[str, object]
    fingerprint: str


def check_request(request: PublishRequest, node: NodeSettings) -> VolumeSpec:
    """The volume ``request`` asks for, or a CsiError naming what is wrong with it."""
    if not request.volume_id:
        raise CsiError("INVALID_ARGUMENT", "volume_id is missing")
    target = _target(request.target_path)
    _check_capability(request.capability, request.readonly)
    attributes = _own_attributes(request.attributes)
    reference = _reference(attributes.get("reference", ""))
    settings = _settings(attributes, node)
    return VolumeSpec(
        volume_id=request.volume_id,
        target=target,
        reference=reference,
        settings=settings,
        fingerprint=fingerprint(request),
    )


def fingerprint(request: PublishRequest) -> str:
    """What makes two publishes of one target "the same" (the spec's P: all but the secrets)."""
    capability = request.capability
    data = {
        "volume_id": request.volume_id,
        "attributes": dict(sorted(request.attributes.items())),
        "readonly": request.readonly,
        "access_type": capability.access_type if capability else "",
        "mode": capability.mode if capability else 0,
        "mount_flags": sorted(capability.mount_flags) if capability else [],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _target(path: str) -> Path:
    if not path:
        raise CsiError("INVALID_ARGUMENT", "target_path is missing")
    if not os.path.isabs(path):
        raise CsiError("INVALID_ARGUMENT", f"target_path {path!r} is not an absolute path")
    return Path(os.path.normpath(path))


def _check_capability(capability: Capability | None, readonly: bool) -> None:
    """A filesystem volume that nobody writes to: block volumes and writers are refused."""
    if capability is None:
        raise CsiError("INVALID_ARGUMENT", "volume_capability is missing")
    if capability.access_type == "block":
        raise CsiError(
            "INVALID_ARGUMENT",
            "kitfs volumes are filesystems: block access (volumeMode: Block) is not supported",
        )
    if capability.access_type != "mount":
        raise CsiError("INVALID_ARGUMENT", "volume_capability has no access type (mount)")
    if capability.mode == 0:
        raise CsiError("INVALID_ARGUMENT", "volume_capability has no access mode")
    writable_flags = WRITABLE_FLAGS & set(capability.mount_flags)
    if writable_flags or not (readonly or capability.mode in READER_ONLY_MODES):
        asked = "mount option rw" if writable_flags else MODE_NAMES.get(capability.mode, "?")
        raise CsiError(
            "FAILED_PRECONDITION",
            f"kitfs volumes are read-only, but a writable volume was asked for ({asked}): set "
            "readOnly: true on the pod's volume (or accessModes: [ReadOnlyMany] on the PV)",
        )
    unknown = [f for f in capability.mount_flags if f not in GENERIC_OPTIONS]
    if unknown:
        raise CsiError(
            "INVALID_ARGUMENT",
            f"unsupported mount options {', '.join(unknown)}: kitfs takes its options as volume "
            f"attributes ({', '.join(ATTRIBUTES)})",
        )


def _own_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    own = {k: v for k, v in attributes.items() if not k.startswith(KUBELET_PREFIX)}
    unknown = sorted(set(own) - set(ATTRIBUTES))
    if unknown:
        raise CsiError(
            "INVALID_ARGUMENT",
            f"unknown volume attribute {', '.join(unknown)} (kitfs takes {', '.join(ATTRIBUTES)})",
        )
    return own


def _reference(text: str) -> str:
    text = text.strip()
    if not text:
        raise CsiError(
            "INVALID_ARGUMENT",
            'volume attribute "reference" is missing: name the ModelKit, e.g. '
            "registry.example.com/acme/model:1.0",
        )
    if text.startswith("oci:"):
        raise CsiError(
            "INVALID_ARGUMENT",
            f"reference {text!r}: OCI layout paths on the node cannot be mounted into pods; "
            "push the ModelKit to a registry",
        )
    try:
        parse(text)
    except KitfsError as exc:
        raise CsiError("INVALID_ARGUMENT", f'volume attribute "reference": {exc}') from None
    return text


def _settings(attributes: Mapping[str, str], node: NodeSettings) -> dict[str, object]:
    layout = attributes.get("layout", "sections")
    if layout not in LAYOUTS:
        raise CsiError("INVALID_ARGUMENT", f"layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    refresh = attributes.get("refresh", "auto")
    if refresh not in REFRESH_MODES:
        raise CsiError(
            "INVALID_ARGUMENT", f"refresh {refresh!r}: use one of {', '.join(REFRESH_MODES)}"
        )
    settings: dict[str, object] = {
        **node.network,
        "layout": layout,
        "refresh": refresh,
        "cache_dir": str(node.cache_dir),
        "cache_size": _cache_size(attributes.get("cacheSize"), node.cache_size),
        "config": node.config_home,
        "allow_other": True,  # the pod's processes run as any user
        "verify_key": _key_file(attributes, "verifyKey", node.keys_dir),
        "policy": _volume_policy(attributes, node),
    }
    return {k: v for k, v in settings.items() if v is not None}


def _cache_size(text: str | None, node_bound: int | None) -> str | None:
    """A volume may keep the shared cache smaller than the node's bound, never larger."""
    if text is None:
        return str(node_bound) if node_bound else None
    try:
        size = parse_size(text)
    except KitfsError as exc:
        raise CsiError("INVALID_ARGUMENT", f"cacheSize: {exc}") from None
    if size is None or (node_bound is not None and size > node_bound):
        return str(node_bound) if node_bound else None
    return str(size)


def _key_file(attributes: Mapping[str, str], name: str, keys_dir: Path) -> str | None:
    """A file named by an attribute, looked up in the plugin's keys directory only: a pod author
    names a key or policy the node operator installed, never a path on the node."""
    value = attributes.get(name)
    if value is None:
        return None
    if not value or "/" in value or value in (".", ".."):
        raise CsiError(
            "INVALID_ARGUMENT",
            f"{name} {value!r}: name a file in the plugin's keys directory {keys_dir} (no path)",
        )
    path = keys_dir / value
    if not path.is_file():
        raise CsiError("INVALID_ARGUMENT", f"{name} {value!r}: there is no such file in {keys_dir}")
    return str(path)


def _volume_policy(attributes: Mapping[str, str], node: NodeSettings) -> str | None:
    volume_policy = _key_file(attributes, "policy", node.keys_dir)
    if volume_policy and node.node_policy:
        raise CsiError(
            "INVALID_ARGUMENT",
            "policy: this node enforces its own signature policy, which a volume cannot replace "
            "(use verifyKey to require a signature on top of it)",
        )
    return volume_policy or node.node_policy
