"""Verbs that talk to registries: push, pull, login, logout."""

from __future__ import annotations

import argparse
import getpass
import sys

from kitfs.cli import signing
from kitfs.cli.common import (
    add_network_flags,
    info,
    paths,
    print_json,
    registry_options,
    show_progress,
)
from kitfs.errors import InvalidReferenceError, UsageError
from kitfs.progress import progress_for
from kitfs.reference import DEFAULT_TAG, parse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("push", help="upload a ModelKit from local storage to a registry")
    p.add_argument(
        "source", metavar="SOURCE", help="the ModelKit in local storage (registry/repo:tag)"
    )
    p.add_argument(
        "destination",
        nargs="?",
        metavar="DESTINATION",
        help="where to push (default: SOURCE itself)",
    )
    add_network_flags(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_push)

    p = subparsers.add_parser("pull", help="download a ModelKit from a registry into local storage")
    p.add_argument("reference", metavar="REF")
    add_network_flags(p)
    signing.add_policy_flags(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_pull)

    p = subparsers.add_parser(
        "login", help="store credentials for a registry (checked against it first)"
    )
    p.add_argument("registry", metavar="REGISTRY")
    p.add_argument("-u", "--username", required=True)
    p.add_argument(
        "-p", "--password", help="the password (prefer --password-stdin: this shows in ps)"
    )
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add_network_flags(p)
    p.set_defaults(func=_cmd_login)

    p = subparsers.add_parser("logout", help="forget the stored credentials for a registry")
    p.add_argument("registry", metavar="REGISTRY")
    p.set_defaults(func=_cmd_logout)


def _cmd_push(args: argparse.Namespace) -> int:
    from kitfs import remote

    source = parse(args.source, default_tag=DEFAULT_TAG)
    dest = parse(args.destination, default_tag=DEFAULT_TAG) if args.destination else source
    if dest.is_local:
        raise UsageError(f"cannot push to {dest}: name a registry (host[:port]/repository:tag)")
    if dest.digest:
        raise UsageError("the destination of a push takes a tag, not a digest")
    with progress_for(show_progress(args)) as sink:
        digest = remote.push(source, dest, paths(args), registry_options(args), sink)
    if args.json:
        print_json(
            {
                "digest": digest,
                "destination": str(dest),
                "tags": [t for t in (dest.tag, *dest.extra_tags) if t],
            }
        )
    else:
        print(f"Pushed {digest}")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from kitfs import remote

    ref = parse(args.reference, default_tag=DEFAULT_TAG)
    if ref.is_local:
        raise UsageError(f"cannot pull {ref}: name a registry (host[:port]/repository:tag)")
    if ref.extra_tags:
        raise UsageError("can not pull multiple tags")
    with progress_for(show_progress(args)) as sink:
        digest = remote.pull(ref, paths(args), registry_options(args), sink, signing.enforcer(args))
    if args.json:
        print_json({"digest": digest, "reference": str(ref)})
    else:
        print(f"Pulled {digest}")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin cannot be used together")
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        raise UsageError("no password given: use --password-stdin (or -p)")
    if not password:
        raise UsageError("the password is empty")
    return password


def _registry_host(text: str) -> str:
    """The REGISTRY of ``login``: ``host[:port]`` as a reference names it (kit refuses anything
    else too; a scheme or a path would otherwise become a confusing network error)."""
    try:
        named = parse(f"{text}/x").registry
    except InvalidReferenceError:
        named = None
    if named != text:
        raise UsageError(
            f"invalid registry {text!r}: give host[:port] without a scheme or path "
            "(use --plain-http for a registry on HTTP)"
        )
    return text


def _cmd_login(args: argparse.Namespace) -> int:
    import trio

    from kitfs.oci.auth import CredentialStore, StaticCredentials
    from kitfs.oci.client import RegistryClient

    _registry_host(args.registry)
    password = _read_password(args)
    store = CredentialStore.for_paths(paths(args), use_docker=False)

    async def check() -> None:
        trial = StaticCredentials(args.username, password)
        async with RegistryClient(args.registry, registry_options(args), trial) as client:
            await client.ping()

    trio.run(check)
    store.login(args.registry, args.username, password)
    info("Log in successful")
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    from kitfs.oci.auth import CredentialStore

    store = CredentialStore.for_paths(paths(args), use_docker=False)
    if not store.logout(args.registry):
        raise UsageError(f"not logged in to {args.registry}")
    info(f"Successfully logged out from {args.registry}")
    return 0
