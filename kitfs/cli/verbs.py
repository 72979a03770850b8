"""kit's newer verbs: diff, init, version."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

from kitfs import __version__
from kitfs.cli.common import add_network_flags, paths, registry_options
from kitfs.errors import KitfsError, NotFoundError, UsageError
from kitfs.oci.manifest import Manifest
from kitfs.reference import Reference, parse
from kitfs.storage.local import LocalStore


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("diff", help="compare two ModelKits' configs and layers")
    p.add_argument("first", metavar="REF1", help="local://REF, remote://REF, or REF (local first)")
    p.add_argument("second", metavar="REF2")
    add_network_flags(p)
    p.set_defaults(func=_cmd_diff)

    p = subparsers.add_parser("init", help="write a Kitfile for the contents of a directory")
    p.add_argument("directory", metavar="DIR", nargs="?", default=".")
    p.add_argument("--name", default="", help="name for the ModelKit")
    p.add_argument("--desc", default="", help="description for the ModelKit")
    p.add_argument("--author", default="", help="author for the ModelKit")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing Kitfile")
    p.add_argument("-o", "--output", metavar="PATH", help="where to write (default DIR/Kitfile)")
    p.set_defaults(func=_cmd_init)

    p = subparsers.add_parser("version", help="show version information")
    p.set_defaults(func=_cmd_version)


# -- diff -------------------------------------------------------------------------------------


def _cmd_diff(args: argparse.Namespace) -> int:
    from kitfs import diff

    sides = []
    for which, arg in (("ModelKit1", args.first), ("ModelKit2", args.second)):
        where, text = diff.split_prefix(arg)
        try:
            ref = parse(text)
        except KitfsError as exc:
            raise UsageError(
                f"Invalid arguments: failed to parse reference for {arg}: {exc}"
            ) from None
        if not ref.reference or ref.extra_tags:
            raise UsageError(f"Invalid arguments: {arg} needs exactly one tag or digest")
        try:
            digest, manifest = _manifest(args, ref, where)
        except KitfsError as exc:
            raise type(exc)(f"Failed to get manifest for {which}: {exc}") from None
        sides.append((str(ref), digest, manifest))
    (name_a, digest_a, a), (name_b, digest_b, b) = sides
    sys.stdout.write(diff.report(name_a, name_b, digest_a, digest_b, a, b))
    return 0


def _manifest(args: argparse.Namespace, ref: Reference, where: str | None) -> tuple[str, Manifest]:
    """kit's getManifest: local storage, the registry, or local first then the registry."""
    if where != "remote":
        try:
            store = LocalStore(paths(args).storage)
            _, desc = store.resolve(ref)
            return desc.digest, store.load_manifest(desc)
        except NotFoundError:
            if where == "local" or ref.is_local:
                raise
    from kitfs import remote

    digest, manifest, _ = remote.fetch_modelkit(ref, paths(args), registry_options(args))
    return digest, manifest


# -- init -------------------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from kitfs.kitinit import init_directory

    directory = Path(args.directory).expanduser()
    name, desc, author = args.name, args.desc, args.author
    if sys.stdin.isatty():  # kit prompts for what was not given, in an interactive session
        name = name or input("Enter a name for the ModelKit: ")
        desc = desc or input("Enter a short description for the ModelKit: ")
        author = author or input("Enter an author for the ModelKit: ")
    package: dict[str, Any] = {}
    if name or desc:
        package = {"name": name, "description": desc}
    if author:
        package["authors"] = [author]
    output = Path(args.output) if args.output else None
    target, text = init_directory(directory, output=output, package=package, force=args.force)
    sys.stdout.write(f"Generated Kitfile:\n\n{text}")
    print(f"Saved to path '{target}'")
    return 0


# -- version ----------------------------------------------------------------------------------


def _cmd_version(args: argparse.Namespace) -> int:
    """kit's shape (Version, Commit, Built, then the toolchain), with Python for Go."""
    print(
        f"Version: {__version__}\nCommit: {_commit()}\nBuilt: unknown\n"
        f"Python version: {platform.python_version()}"
    )
    return 0


def _commit() -> str:
    """The git commit of the source tree kitfs runs from, when it runs from one."""
    here = Path(__file__).resolve().parents[2]
    head = here / ".git"
    try:
        if head.is_file():  # a worktree: "gitdir: PATH"
            head = Path(head.read_text().split(":", 1)[1].strip())
        ref = (head / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            name = ref[5:]
            loose = head / name
            if not loose.exists():
                common = head / "commondir"
                base = (head / common.read_text().strip()) if common.exists() else head
                loose = base / name
                if not loose.exists():
                    packed = (base / "packed-refs").read_text().splitlines()
                    return next(line.split()[0] for line in packed if line.endswith(" " + name))
            return loose.read_text().strip()
        return ref
    except (OSError, IndexError, StopIteration):
        return "unknown"
