"""cosign-compatible signing verbs: ``verify``, ``sign``, ``generate-key-pair``; and the
``--verify-key``/``--policy`` flags that ``mount``, ``pull`` and ``unpack`` enforce."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kitfs.cli.common import add_network_flags, info, paths, registry_options
from kitfs.errors import UsageError
from kitfs.reference import DEFAULT_TAG, Reference, parse
from kitfs.signing import POLICY_ENV, SigningKeyError, signatures_requested

if TYPE_CHECKING:  # the signing modules (and cryptography, trio, httpx) load only when used
    from kitfs.oci.client import RegistryClient
    from kitfs.signing.enforce import Enforcer

PASSWORD_ENV = "COSIGN_PASSWORD"
# sign and verify keep --key for the signing key, as cosign does; mutual TLS uses cosign's names.
CLIENT_TLS_FLAGS = ("--registry-client-cert", "--registry-client-key")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "verify",
        help="check that a ModelKit in a registry carries a cosign signature by a key",
        description=(
            "Verify a cosign signature of a ModelKit's manifest digest with a public key, offline "
            "(no transparency log): the legacy sha256-<hex>.sig tag and sigstore bundle v0.3 "
            "referrers (referrers API or the sha256-<hex> tag) are both checked."
        ),
    )
    p.add_argument("reference", metavar="REF", help="registry/repository[:tag|@digest]")
    p.add_argument("--key", dest="signing_key", required=True, metavar="PUB", help="public key PEM")
    add_network_flags(p, CLIENT_TLS_FLAGS)
    p.set_defaults(func=_cmd_verify)

    p = subparsers.add_parser(
        "sign",
        help="sign a ModelKit in a registry as `cosign sign --key` does",
        description=(
            "Sign a ModelKit's manifest digest with a cosign private key and push the signature "
            "to the sha256-<hex>.sig tag, as cosign 2.5 does by default without a transparency "
            f"log. The key's password comes from ${PASSWORD_ENV} (or a prompt on a terminal)."
        ),
    )
    p.add_argument("reference", metavar="REF", help="registry/repository[:tag|@digest]")
    p.add_argument(
        "--key", dest="signing_key", required=True, metavar="KEY", help="cosign private key"
    )
    p.add_argument(
        "-a",
        "--annotations",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra claim in the signed payload (repeatable)",
    )
    add_network_flags(p, CLIENT_TLS_FLAGS)
    p.set_defaults(func=_cmd_sign)

    p = subparsers.add_parser(
        "generate-key-pair",
        help="write cosign.key and cosign.pub as `cosign generate-key-pair` does",
        description=f"Make an ECDSA P-256 key pair; the private key is encrypted with ${PASSWORD_ENV}.",
    )
    p.add_argument(
        "--output-key-prefix",
        default="cosign",
        metavar="PREFIX",
        help="write PREFIX.key and PREFIX.pub (default cosign)",
    )
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=_cmd_generate)


def add_policy_flags(parser: argparse.ArgumentParser) -> None:
    """``--verify-key`` and ``--policy`` for the verbs that serve or write a ModelKit."""
    group = parser.add_argument_group("signatures")
    group.add_argument(
        "--verify-key",
        metavar="PUB",
        help="refuse the ModelKit unless a cosign signature by this public key verifies",
    )
    group.add_argument(
        "--policy",
        metavar="FILE",
        help=f"signature policy (containers-policy.json style; default ${POLICY_ENV})",
    )


def enforcer(args: argparse.Namespace) -> Enforcer | None:
    """The Enforcer the flags (and ``$KITFS_POLICY``) ask for; None when nothing is required."""
    verify_key, policy_file = getattr(args, "verify_key", None), getattr(args, "policy", None)
    if not signatures_requested(verify_key, policy_file):
        return None
    from kitfs.signing.enforce import Enforcer
    from kitfs.signing.policy import resolve_policy

    policy = resolve_policy(verify_key, policy_file)
    return Enforcer(policy) if policy else None


def _registry_ref(text: str) -> Reference:
    ref = parse(text, default_tag=DEFAULT_TAG)
    if ref.is_local:
        raise UsageError(
            f"{ref} names local storage: signatures live in a registry (host[:port]/repository)"
        )
    if ref.extra_tags:
        raise UsageError("name one tag or digest")
    return ref


def _client(ref: Reference, args: argparse.Namespace) -> RegistryClient:
    from kitfs.oci.auth import CredentialStore
    from kitfs.oci.client import RegistryClient

    return RegistryClient(
        ref.registry, registry_options(args), CredentialStore.for_paths(paths(args))
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    import trio

    from kitfs.signing.keys import load_public_key
    from kitfs.signing.verify import verify_digest

    ref = _registry_ref(args.reference)
    key = load_public_key(args.signing_key)

    async def run() -> str:
        async with _client(ref, args) as client:
            _body, _media_type, digest = await client.get_manifest(
                ref.repository, ref.reference or DEFAULT_TAG
            )
            verified = await verify_digest(client, ref.repository, digest, [key])
        return f"Verified {verified.digest}: {verified.kind} by {key.name} ({verified.where})"

    print(trio.run(run))
    return 0


def _password(confirm: bool = False) -> bytes:
    """The key password: ``$COSIGN_PASSWORD`` (empty allowed, as cosign), else a prompt."""
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV].encode()
    if not sys.stdin.isatty():
        raise UsageError(f"set {PASSWORD_ENV} to the key's password (no terminal to ask on)")
    first = getpass.getpass("Enter password for private key: ")
    if confirm and getpass.getpass("Enter password for private key again: ") != first:
        raise UsageError("the passwords do not match")
    return first.encode()


def _annotations(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, has_value, value = item.partition("=")
        if not has_value or not name:
            raise UsageError(f"annotation {item!r} is not KEY=VALUE")
        out[name] = value
    return out


def _cmd_sign(args: argparse.Namespace) -> int:
    import trio

    from kitfs.signing.keys import load_private_key
    from kitfs.signing.sign import sign_digest

    ref = _registry_ref(args.reference)
    annotations = _annotations(args.annotations)
    key = load_private_key(args.signing_key, _password())

    async def run() -> str:
        async with _client(ref, args) as client:
            signed = await sign_digest(
                client, ref.repository, ref.reference or DEFAULT_TAG, key, annotations
            )
        return f"Signed {signed.digest} (signature pushed to {ref.name}:{signed.tag})"

    print(trio.run(run))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from kitfs.atomic import write_atomic
    from kitfs.signing.keys import generate_key_pair

    private_path = Path(f"{args.output_key_prefix}.key")
    public_path = Path(f"{args.output_key_prefix}.pub")
    if not args.force:
        for path in (private_path, public_path):
            if path.exists():
                raise UsageError(f"{path} already exists: remove it or pass --force")
    private_pem, public_pem = generate_key_pair(_password(confirm=True))
    try:
        write_atomic(private_path, private_pem, 0o600)
        write_atomic(public_path, public_pem, 0o644)
    except OSError as exc:
        raise SigningKeyError(f"cannot write the key pair: {exc.strerror}") from None
    info(f"Private key written to {private_path}")
    info(f"Public key written to {public_path}")
    return 0
