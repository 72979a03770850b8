"""Sign a manifest in a registry as ``cosign sign --key KEY --tlog-upload=false`` (cosign 2.5) does.

cosign stores the signature under the tag ``sha256-<hex>.sig`` as an OCI image manifest built by
go-containerregistry: a config that lists each payload as a layer (zero-time history entries), and
one ``simplesigning`` layer per signature, appended to the signatures already there. We write the
same bytes (Go field order: mediaType, size, digest, annotations), so ``cosign verify`` reads them.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitfs.errors import NotFoundError
from kitfs.oci import media
from kitfs.oci.client import RegistryClient
from kitfs.oci.manifest import Descriptor, ManifestError, sha256_digest
from kitfs.signing import SignatureError, payload
from kitfs.signing.keys import PrivateKey
from kitfs.signing.locate import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, legacy_tag

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class Signed:
    """What ``sign`` wrote: the signed digest, the signature tag and its manifest's digest."""

    digest: str
    tag: str
    manifest_digest: str


def _go_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _descriptor(
    media_type: str, data_digest: str, size: int, annotations: Mapping[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "size": size, "digest": data_digest}
    if annotations:
        out["annotations"] = dict(sorted(annotations.items()))
    return out


def config_bytes(layer_digests: list[str]) -> bytes:
    """The config go-containerregistry writes for an image of these payload layers."""
    return _go_json(
        {
            "architecture": "",
            "created": ZERO_TIME,
            "history": [{"created": ZERO_TIME} for _ in layer_digests],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": layer_digests},
            "config": {},
        }
    )


def signature_manifest(layers: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    """(config, manifest) bytes of a signature image with these layer descriptors."""
    config = config_bytes([str(layer["digest"]) for layer in layers])
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, sha256_digest(config), len(config), {}),
        "layers": layers,
    }
    return config, _go_json(manifest)


def _layer_key(layer: dict[str, Any]) -> tuple[str, str]:
    annotations = layer.get("annotations") or {}
    return str(layer.get("digest")), str(annotations.get(SIGNATURE_ANNOTATION))


async def _existing_layers(
    client: RegistryClient, repository: str, tag: str
) -> list[dict[str, Any]]:
    """The signature layers already under ``tag`` (cosign appends to them); none when absent."""
    try:
        body, _media_type, _ = await client.get_manifest(repository, tag)
    except NotFoundError:
        return []
    try:
        layers = json.loads(body).get("layers") or []
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        raise SignatureError(
            f"the existing signature tag {tag} does not hold a manifest: refusing to overwrite it"
        ) from None
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise SignatureError(f"the existing signature tag {tag} has malformed layers")
    return [x for x in layers if x.get("mediaType") == SIMPLE_SIGNING]


async def _upload(client: RegistryClient, repository: str, data: bytes, media_type: str) -> None:
    desc = Descriptor(media_type, sha256_digest(data), len(data))
    with tempfile.TemporaryDirectory(prefix="kitfs-sign-") as scratch:
        path = Path(scratch) / desc.hex
        path.write_bytes(data)
        await client.upload_blob(repository, desc, path)


async def sign_digest(
    client: RegistryClient,
    repository: str,
    reference: str,
    key: PrivateKey,
    annotations: Mapping[str, str] | None = None,
) -> Signed:
    """Sign the manifest ``reference`` (a tag or digest) names and store the signature."""
    body, _media_type, digest = await client.get_manifest(repository, reference)
    if sha256_digest(body) != digest:
        raise ManifestError(f"{repository}@{digest}: only sha256 manifests can be signed")
    identity = f"{client.registry}/{repository}"
    signed_payload = payload.build(digest, identity, dict(annotations or {}))
    signature = base64.b64encode(key.sign(signed_payload)).decode()
    layer = _descriptor(
        SIMPLE_SIGNING,
        sha256_digest(signed_payload),
        len(signed_payload),
        {SIGNATURE_ANNOTATION: signature},
    )
    tag = legacy_tag(digest)
    layers = await _existing_layers(client, repository, tag)
    if _layer_key(layer) not in {_layer_key(x) for x in layers}:
        layers.append(layer)
    config, manifest = signature_manifest(layers)
    await _upload(client, repository, signed_payload, SIMPLE_SIGNING)
    await _upload(client, repository, config, OCI_CONFIG)
    stored = await client.put_manifest(repository, tag, manifest, media.OCI_MANIFEST)
    return Signed(digest, tag, stored)
