"""Verify that a manifest digest carries a cosign signature by one of some public keys.

A signature counts only when its cryptographic signature verifies with a given key *and* what it
signs names this very digest (a legacy payload's ``docker-manifest-digest``, a bundle statement's
subject). When none counts, the error says the most telling reason: a valid signature of another
digest (copied here), signatures by other keys (or altered payloads), malformed signatures, none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from kitfs.oci.client import RegistryClient
from kitfs.signing import SignatureError, bundle, payload
from kitfs.signing.keys import PublicKey
from kitfs.signing.locate import Found, bundle_signatures, legacy_signatures, legacy_tag


@dataclass(frozen=True)
class Verified:
    """A signature that verified: which digest, by which key, found where."""

    digest: str
    key: PublicKey
    where: str
    kind: str


@dataclass
class _Verdicts:
    """What the signatures that did not verify were wrong with."""

    other_digest: list[tuple[Found, str]] = field(default_factory=list)
    wrong_key: list[Found] = field(default_factory=list)
    malformed: list[Found] = field(default_factory=list)


def _check_legacy(
    found: Found, digest: str, keys: Sequence[PublicKey], verdicts: _Verdicts
) -> Verified | None:
    key = next((k for k in keys if k.verify(found.signature, found.payload)), None)
    if key is None:
        verdicts.wrong_key.append(found)
        return None
    try:
        claims = payload.parse(found.payload)
    except payload.PayloadError as exc:
        verdicts.malformed.append(Found(found.where, problem=str(exc)))
        return None
    if claims.digest != digest:
        verdicts.other_digest.append((found, claims.digest))
        return None
    return Verified(digest, key, found.where, "cosign signature")


def _check_bundle(
    found: Found, digest: str, keys: Sequence[PublicKey], verdicts: _Verdicts
) -> Verified | None:
    try:
        checked = bundle.check(found.bundle, keys)
    except bundle.BundleError as exc:
        verdicts.malformed.append(Found(found.where, problem=str(exc)))
        return None
    if checked.key is None:
        verdicts.wrong_key.append(found)
        return None
    if digest not in checked.digests:
        verdicts.other_digest.append((found, ", ".join(checked.digests) or "nothing"))
        return None
    return Verified(digest, checked.key, found.where, "sigstore bundle")


def judge(
    signatures: Sequence[Found], name: str, digest: str, keys: Sequence[PublicKey]
) -> Verified:
    """The first signature that verifies for ``digest``, else a SignatureError saying why not."""
    verdicts = _Verdicts()
    for found in signatures:
        if found.problem is not None:
            verdicts.malformed.append(found)
            continue
        check = _check_bundle if found.is_bundle else _check_legacy
        verified = check(found, digest, keys, verdicts)
        if verified is not None:
            return verified
    raise SignatureError(_why(verdicts, f"{name}@{digest}", digest, keys))


def _why(verdicts: _Verdicts, subject: str, digest: str, keys: Sequence[PublicKey]) -> str:
    names = ", ".join(k.name for k in keys)
    if verdicts.other_digest:
        found, other = verdicts.other_digest[0]
        return (
            f"{subject}: the signature at {found.where} is for another digest ({other}), "
            "not this one: refusing it"
        )
    if verdicts.wrong_key:
        count = len(verdicts.wrong_key)
        return (
            f"{subject}: {count} signature{'s' if count > 1 else ''} found, none verifies with "
            f"{names} (signed with another key, or the signed payload was altered)"
        )
    if verdicts.malformed:
        found = verdicts.malformed[0]
        return f"{subject}: malformed signature at {found.where}: {found.problem}"
    return (
        f"{subject}: no signature found (no tag {legacy_tag(digest)}, "
        "no sigstore bundle referring to it)"
    )


async def verify_digest(
    client: RegistryClient,
    repository: str,
    digest: str,
    keys: Sequence[PublicKey],
) -> Verified:
    """Find the signatures of ``repository@digest`` in ``client``'s registry and judge them."""
    if not keys:
        raise SignatureError("no public key to verify signatures with")
    name = f"{client.registry}/{repository}"
    legacy = await legacy_signatures(client, repository, digest)
    if legacy:  # the common case (cosign 2.x): no need to look for bundles when one verifies
        with contextlib.suppress(SignatureError):
            return judge(legacy, name, digest, keys)
    bundles = await bundle_signatures(client, repository, digest)
    return judge([*legacy, *bundles], name, digest, keys)
