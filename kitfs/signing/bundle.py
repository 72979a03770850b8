"""Sigstore bundles (v0.3) as cosign 3 attaches them to an image: read and check one with a key.

A bundle holds either a DSSE envelope (cosign's image signature: an in-toto statement of predicate
type ``https://sigstore.dev/cosign/sign/v1`` whose subject is the manifest digest, signed over the
DSSE pre-authentication encoding) or a message signature (a signature over bytes whose SHA-256 the
bundle states). Transparency-log entries, timestamps and certificates in ``verificationMaterial``
are not checked: kitfs verifies offline, against the keys it is given.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kitfs.signing.keys import PublicKey

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES = (BUNDLE_V03, "application/vnd.dev.sigstore.bundle+json;version=0.3")
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


class BundleError(ValueError):
    """A bundle is not a sigstore bundle v0.3 we can check."""


@dataclass(frozen=True)
class BundleCheck:
    """What checking a bundle with some keys found: the key whose signature verifies (None: none
    did) and the manifest digests that verified signature vouches for."""

    key: PublicKey | None
    digests: tuple[str, ...] = ()


def _b64(raw: Any, what: str) -> bytes:
    if not isinstance(raw, str):
        raise BundleError(f"{what} is missing")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise BundleError(f"{what} is not base64") from None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def parse(data: bytes) -> dict[str, Any]:
    """The bundle's JSON, checked for its media type and for exactly one kind of content."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BundleError("the bundle is not JSON") from None
    if not isinstance(raw, dict):
        raise BundleError("the bundle is not a JSON object")
    if raw.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise BundleError(f"the bundle media type {raw.get('mediaType')!r} is not {BUNDLE_V03}")
    if ("dsseEnvelope" in raw) == ("messageSignature" in raw):
        raise BundleError("the bundle holds neither a DSSE envelope nor a message signature")
    return raw


def _statement_digests(payload: bytes) -> tuple[str, ...]:
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BundleError("the signed statement is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") not in STATEMENT_TYPES:
        raise BundleError("the signed payload is not an in-toto statement")
    if statement.get("predicateType") != SIGN_PREDICATE:
        raise BundleError(
            f"the bundle is an attestation ({statement.get('predicateType')!r}), not a signature"
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise BundleError("the signed statement has no subject")
    digests = []
    for subject in subjects:
        value = subject.get("digest", {}).get("sha256") if isinstance(subject, dict) else None
        if isinstance(value, str):
            digests.append(f"sha256:{value}")
    return tuple(digests)


def _check_dsse(envelope: Any, keys: Sequence[PublicKey]) -> BundleCheck:
    if not isinstance(envelope, dict):
        raise BundleError("the DSSE envelope is not a JSON object")
    payload_type = envelope.get("payloadType")
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise BundleError(f"the DSSE payload type {payload_type!r} is not {INTOTO_PAYLOAD_TYPE}")
    payload = _b64(envelope.get("payload"), "the DSSE payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise BundleError("the DSSE envelope has no signatures")
    message = pae(payload_type, payload)
    for entry in signatures:
        signature = _b64(entry.get("sig") if isinstance(entry, dict) else None, "a DSSE signature")
        for key in keys:
            if key.verify(signature, message):
                return BundleCheck(key, _statement_digests(payload))
    return BundleCheck(None)


def _check_message(signed: Any, keys: Sequence[PublicKey]) -> BundleCheck:
    if not isinstance(signed, dict):
        raise BundleError("the message signature is not a JSON object")
    message_digest = signed.get("messageDigest")
    if not isinstance(message_digest, dict) or message_digest.get("algorithm") != "SHA2_256":
        raise BundleError("the message signature has no SHA2_256 message digest")
    sha256 = _b64(message_digest.get("digest"), "the message digest")
    if len(sha256) != 32:
        raise BundleError("the message digest is not 32 bytes")
    signature = _b64(signed.get("signature"), "the message signature")
    for key in keys:
        if key.verify_digest(signature, sha256):
            return BundleCheck(key, (f"sha256:{sha256.hex()}",))
    return BundleCheck(None)


def check(data: bytes, keys: Sequence[PublicKey]) -> BundleCheck:
    """Which of ``keys`` signed this bundle, and for which manifest digests (BundleError when the
    bundle is malformed, or verified but not an image signature)."""
    raw = parse(data)
    if "dsseEnvelope" in raw:
        return _check_dsse(raw["dsseEnvelope"], keys)
    return _check_message(raw["messageSignature"], keys)
