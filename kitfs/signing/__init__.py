"""cosign-compatible signatures for ModelKits: keys, payloads, bundles, verification, signing, policy.

Offline only: signatures are checked against public keys the caller names; no transparency log,
no Fulcio certificates, no keyless identities (see docs/signing.md).
"""

from __future__ import annotations

from kitfs.errors import KitfsError


class SignatureError(KitfsError):
    """A ModelKit has no signature that a required key verifies (or its signatures are malformed)."""


class SigningKeyError(KitfsError):
    """A key file cannot be read, decrypted or used."""
