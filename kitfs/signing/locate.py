"""Where cosign keeps the signatures of a manifest in a registry, and fetching them within bounds.

Two places (sigstore/cosign specs/SIGNATURE_SPEC.md and specs/BUNDLE_SPEC.md):

- the legacy tag ``sha256-<hex>.sig``: an OCI manifest whose layers are simple-signing payloads,
  each with its base64 signature in the ``dev.cosignproject.cosign/signature`` annotation;
- sigstore bundles v0.3 as OCI 1.1 referrers of the manifest, listed by the referrers API or, on
  a registry without it (Debian's docker-registry 2.8), by the index under the tag ``sha256-<hex>``.

Everything fetched is bounded (manifests by the client, payloads and bundles by MAX_SIGNATURE_BLOB
before any byte is read) and verified against its digest; a signature that cannot be read becomes
a ``Found`` with a ``problem``, so that the verifier can say why it was not accepted.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from kitfs.errors import DigestMismatchError, NotFoundError
from kitfs.oci.client import RegistryClient
from kitfs.oci.manifest import Descriptor, ManifestError
from kitfs.signing.bundle import BUNDLE_MEDIA_TYPES, BUNDLE_V03

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
MAX_SIGNATURE_BLOB = 1024 * 1024
MAX_SIGNATURES = 32  # signatures examined per place: enough for key rotation, bounded for hostility


@dataclass(frozen=True)
class Found:
    """One signature found in the registry: a legacy payload and signature, or a bundle; or why
    the signature that is there cannot be used (``problem``)."""

    where: str
    payload: bytes = b""
    signature: bytes = b""
    bundle: bytes = b""
    problem: str | None = None

    @property
    def is_bundle(self) -> bool:
        return bool(self.bundle)


def legacy_tag(digest: str) -> str:
    """``sha256-<hex>.sig``: the tag cosign 2.x stores a manifest's signatures under."""
    return f"{fallback_tag(digest)}.sig"


def fallback_tag(digest: str) -> str:
    """``sha256-<hex>``: the referrers tag schema's tag for a manifest's referrers."""
    return digest.replace(":", "-", 1)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ManifestError(f"{what} is not JSON") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return raw


async def _bounded_blob(client: RegistryClient, repository: str, desc: Descriptor) -> bytes:
    """A signature blob, refused before any byte is read when it claims to be too large."""
    if desc.size > MAX_SIGNATURE_BLOB:
        raise ManifestError(
            f"its blob declares {desc.size} bytes, more than the {MAX_SIGNATURE_BLOB} a signature may have"
        )
    try:
        return await client.fetch_blob(repository, desc.digest, desc.size)
    except NotFoundError:
        raise ManifestError(f"its blob {desc.digest} is missing from the registry") from None
    except DigestMismatchError as exc:
        raise ManifestError(f"its blob does not match its digest ({exc})") from None


async def _legacy_layer(client: RegistryClient, repository: str, raw: Any, where: str) -> Found:
    try:
        desc = Descriptor.from_dict(raw, where)
        if desc.media_type != SIMPLE_SIGNING:
            raise ManifestError(f"its media type is {desc.media_type!r}, not {SIMPLE_SIGNING}")
        encoded = desc.annotations.get(SIGNATURE_ANNOTATION)
        if not encoded:
            raise ManifestError(f"it has no {SIGNATURE_ANNOTATION} annotation")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ManifestError(f"its {SIGNATURE_ANNOTATION} annotation is not base64") from None
        payload = await _bounded_blob(client, repository, desc)
    except ManifestError as exc:
        return Found(where, problem=str(exc))
    return Found(where, payload=payload, signature=signature)


async def legacy_signatures(client: RegistryClient, repository: str, digest: str) -> list[Found]:
    """The signatures under the ``.sig`` tag (none when the tag does not exist)."""
    tag = legacy_tag(digest)
    try:
        body, _media_type, _ = await client.get_manifest(repository, tag)
    except NotFoundError:
        return []
    where = f"tag {tag}"
    try:
        layers = _json_object(body, f"the manifest of {where}").get("layers")
        if not isinstance(layers, list) or not layers:
            raise ManifestError(f"the manifest of {where} has no signature layers")
    except ManifestError as exc:
        return [Found(where, problem=str(exc))]
    return [
        await _legacy_layer(client, repository, layer, f"{where} layer {i}")
        for i, layer in enumerate(layers[:MAX_SIGNATURES])
    ]


async def _referrer_index(
    client: RegistryClient, repository: str, digest: str
) -> tuple[bytes, str] | None:
    listed = await client.list_referrers(repository, digest, BUNDLE_V03)
    if listed is not None:
        return listed, "the referrers API"
    tag = fallback_tag(digest)
    try:
        body, _media_type, _ = await client.get_manifest(repository, tag)
    except NotFoundError:
        return None
    return body, f"referrers tag {tag}"


async def _bundle_referrer(
    client: RegistryClient, repository: str, desc: Descriptor, where: str
) -> Found:
    try:
        body, _media_type, _ = await client.get_manifest(repository, desc.digest)
        layers = _json_object(body, "its manifest").get("layers")
        if not isinstance(layers, list):
            raise ManifestError("its manifest has no layers")
        described = [Descriptor.from_dict(layer, "a bundle layer") for layer in layers]
        bundles = [d for d in described if d.media_type in BUNDLE_MEDIA_TYPES]
        if not bundles:
            raise ManifestError(f"its manifest has no {BUNDLE_V03} layer")
        data = await _bounded_blob(client, repository, bundles[0])
    except (ManifestError, NotFoundError) as exc:
        return Found(where, problem=str(exc))
    return Found(where, bundle=data)


async def bundle_signatures(client: RegistryClient, repository: str, digest: str) -> list[Found]:
    """The sigstore bundles that refer to ``digest`` (none when nothing refers to it)."""
    located = await _referrer_index(client, repository, digest)
    if located is None:
        return []
    body, source = located
    try:
        manifests = _json_object(body, f"the index from {source}").get("manifests") or []
        if not isinstance(manifests, list):
            raise ManifestError(f"the index from {source} has no manifest list")
        listed = [Descriptor.from_dict(m, f"an entry of {source}") for m in manifests]
    except ManifestError as exc:
        return [Found(source, problem=str(exc))]
    # cosign 2.5 lists its bundles in the fallback index with the artifactType of their empty
    # config (go-containerregistry takes config.mediaType): look into those too.
    bundles = [d for d in listed if d.artifact_type in (*BUNDLE_MEDIA_TYPES, EMPTY_CONFIG, None)]
    return [
        await _bundle_referrer(client, repository, d, f"bundle referrer {d.digest} via {source}")
        for d in bundles[:MAX_SIGNATURES]
    ]
