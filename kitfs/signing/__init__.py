"""cosign-compatible signatures for ModelKits: keys, payloads, bundles, verification, signing, policy.

Offline only: signatures are checked against public keys the caller names; no transparency log,
no Fulcio certificates, no keyless identities (see docs/signing.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kitfs.errors import KitfsError

POLICY_ENV = "KITFS_POLICY"


class SignatureError(KitfsError):
    """A ModelKit has no signature that a required key verifies (or its signatures are malformed)."""


class SigningKeyError(KitfsError):
    """A key file cannot be read, decrypted or used."""


def signatures_requested(
    verify_key: str | None, policy_file: str | None, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether ``--verify-key``, ``--policy`` or ``$KITFS_POLICY`` ask for signatures; checked
    before the verifier (and cryptography) is imported, so commands that need none do not pay."""
    env = os.environ if environ is None else environ
    return bool(verify_key or policy_file or env.get(POLICY_ENV))
