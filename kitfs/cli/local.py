"""Verbs on kit's local storage: pack, unpack, info, inspect, list, tag, remove."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kitfs import catalog
from kitfs.cli import signing
from kitfs.cli.common import (
    add_cache_flags,
    add_network_flags,
    cache_policy,
    info,
    paths,
    print_json,
    registry_options,
    show_progress,
)
from kitfs.errors import UsageError
from kitfs.kitfile import go_json
from kitfs.progress import progress_for
from kitfs.reference import DEFAULT_TAG, Reference, parse
from kitfs.storage.local import LocalStore, display_repository

if TYPE_CHECKING:  # the verbs' own modules load when the verb runs
    from kitfs.unpack import Filter


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_pack(subparsers)
    _register_unpack(subparsers)
    _register_info(subparsers)
    _register_inspect(subparsers)
    _register_list(subparsers)
    _register_tag(subparsers)
    _register_remove(subparsers)


def _store(args: argparse.Namespace) -> LocalStore:
    return LocalStore(paths(args).storage)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")


# -- pack -----------------------------------------------------------------------------------


def _register_pack(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("pack", help="pack a directory into a ModelKit in local storage")
    p.add_argument(
        "directory", metavar="DIR", help="the context directory (Kitfile paths are relative to it)"
    )
    p.add_argument(
        "-f", "--file", metavar="KITFILE", help="the Kitfile to use ('-' reads standard input)"
    )
    p.add_argument("-t", "--tag", metavar="REF[,TAG...]", help="reference to tag the ModelKit with")
    p.add_argument(
        "--compression",
        default="none",
        choices=("none", "gzip", "gzip-fastest", "zstd"),
        help="layer compression (default none, as kit)",
    )
    p.add_argument(
        "--span-size",
        metavar="SIZE",
        default="4MiB",
        help="span size of the layers' span indexes, for verified partial reads (default 4MiB)",
    )
    p.add_argument(
        "--no-span-index",
        action="store_true",
        help="write layers exactly as kit does, without a span index (mounts then fetch whole layers)",
    )
    p.add_argument(
        "--layer-format",
        default="tar",
        choices=("tar", "raw"),
        help="tar (default) or raw: each layer is its one regular file itself, as kit",
    )
    p.add_argument(
        "--use-model-pack",
        action="store_true",
        help="write a CNCF ModelPack (model-spec media types and config) instead of a kit ModelKit",
    )
    _json_flag(p)
    p.set_defaults(func=_cmd_pack)


def span_size_flag(args: argparse.Namespace) -> int | None:
    """The span size ``--span-size``/``--no-span-index`` ask for (None: no span index)."""
    from kitfs.layers.spanindex import MAX_SPAN_SIZE, MIN_SPAN_SIZE

    if args.no_span_index:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", args.span_size, re.IGNORECASE)
    if match is None:
        raise UsageError(f"invalid --span-size {args.span_size!r}: use e.g. 4MiB, 1M or 65536")
    size = int(match.group(1)) * 1024 ** " KMG".index(match.group(2).upper() or " ")
    if not MIN_SPAN_SIZE <= size <= MAX_SPAN_SIZE:
        raise UsageError(
            f"--span-size must be between {MIN_SPAN_SIZE >> 10} KiB and {MAX_SPAN_SIZE >> 20} MiB"
        )
    return size


def _cmd_pack(args: argparse.Namespace) -> int:
    from kitfs.pack import pack
    from kitfs.packformat import PackFormat

    with progress_for(show_progress(args)) as sink:
        result = pack(
            args.directory,
            paths(args),
            kitfile_path=args.file,
            tag=args.tag,
            compression=args.compression,
            progress=sink,
            span_size=span_size_flag(args),
            fmt=PackFormat(modelpack=args.use_model_pack, layer_format=args.layer_format),
        )
    if args.json:
        ref = result.reference
        print_json(
            {
                "digest": result.digest,
                "repository": display_repository(ref.name) or None,
                "tags": [t for t in (ref.tag, *ref.extra_tags) if t],
                "layers": [layer.to_dict() for layer in result.manifest.layers],
            }
        )
    else:
        from kitfs.diff import user_media_type

        for layer in result.manifest.layers:  # kit's per-layer lines, as status on stderr
            info(f"Saved {user_media_type(layer.media_type)} layer: {layer.digest}")
        print(f"Model saved: {result.digest}")
    return 0


# -- unpack ---------------------------------------------------------------------------------


def _register_unpack(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("unpack", help="write a ModelKit's contents to a directory")
    p.add_argument("reference", metavar="REF")
    p.add_argument(
        "-d", "--dir", default=".", help="target directory (created if missing; default .)"
    )
    p.add_argument("-o", "--overwrite", action="store_true", help="overwrite existing files")
    p.add_argument(
        "-i", "--ignore-existing", action="store_true", help="skip files that already exist"
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="TYPE[,TYPE][:NAME,...]",
        help="what to unpack: kitfile, model, datasets, code, prompts, docs, mcpservers, optionally by name or path (repeatable)",
    )
    for kind in ("kitfile", "model", "code", "datasets", "docs"):
        p.add_argument(
            f"--{kind}", action="store_true", help=f"unpack only {kind} (same as --filter={kind})"
        )
    add_network_flags(p)
    signing.add_policy_flags(p)
    add_cache_flags(p)
    _json_flag(p)
    p.set_defaults(func=_cmd_unpack)


def _filters(args: argparse.Namespace) -> list[Filter]:
    from kitfs.unpack import Filter

    legacy = tuple(k for k in ("kitfile", "model", "code", "datasets", "docs") if getattr(args, k))
    if legacy:
        return [Filter(legacy)]
    return [Filter.parse(text) for text in args.filter]


def _cmd_unpack(args: argparse.Namespace) -> int:
    from kitfs.unpack import UnpackOptions

    ref = parse(args.reference, default_tag=DEFAULT_TAG)
    if ref.extra_tags:
        raise UsageError("can not unpack multiple tags")
    options = UnpackOptions(
        target=Path(args.dir),
        filters=_filters(args),
        overwrite=args.overwrite,
        ignore_existing=args.ignore_existing,
        notify=info,
    )
    if args.overwrite and args.ignore_existing:
        raise UsageError("-o/--overwrite and -i/--ignore-existing cannot be used together")
    from kitfs import remote
    from kitfs.cleanup import removed_on_failure

    with removed_on_failure(options.target), progress_for(show_progress(args)) as sink:
        counts = remote.unpack_reference(
            ref,
            paths(args),
            registry_options(args),
            options,
            sink,
            gate=signing.enforcer(args),
            cached=cache_policy(args),
        )
    if args.json:
        print_json({"directory": str(options.target.resolve()), **counts})
    else:
        info(f"Unpacked {counts['layers']} layers ({counts['files']} files) to {options.target}")
    return 0


# -- info / inspect -------------------------------------------------------------------------


def _register_info(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("info", help="show a ModelKit's Kitfile")
    p.add_argument("reference", metavar="REF")
    p.add_argument(
        "-r", "--remote", action="store_true", help="read from the registry, not local storage"
    )
    add_network_flags(p)
    add_cache_flags(p)
    _json_flag(p)
    p.set_defaults(func=_cmd_info)


def _register_inspect(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "inspect", help="show a ModelKit's digest, Kitfile and manifest as JSON"
    )
    p.add_argument("reference", metavar="REF")
    p.add_argument(
        "-r", "--remote", action="store_true", help="read from the registry, not local storage"
    )
    add_network_flags(p)
    p.set_defaults(func=_cmd_inspect)


def _parse_single(text: str) -> Reference:
    ref = parse(text)
    if ref.extra_tags:
        raise UsageError(
            f"invalid reference format: extra tags are not supported: {', '.join(ref.extra_tags)}"
        )
    if not ref.reference:
        raise UsageError(f"missing tag or digest from ModelKit reference '{text}'")
    return ref


def _load(args: argparse.Namespace) -> tuple[str, Any, Any]:
    ref = _parse_single(args.reference)
    if args.remote:
        if ref.is_local:
            raise UsageError(
                f"can not check remote: {display_repository(str(ref))} does not contain registry"
            )
        from kitfs import remote

        cached = cache_policy(args) if hasattr(args, "refresh") else None
        return remote.fetch_modelkit(ref, paths(args), registry_options(args), cached)
    store = _store(args)
    _, desc = store.resolve(ref)
    manifest = store.load_manifest(desc)
    return desc.digest, manifest, store.load_kitfile(manifest)


def _cmd_info(args: argparse.Namespace) -> int:
    _, _, kitfile = _load(args)
    if args.json:
        print_json(json.loads(kitfile.without_layer_info().to_config_json()))
    else:
        sys.stdout.write(kitfile.to_yaml())
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    digest, manifest, kitfile = _load(args)
    print(go_json(catalog.inspect_view(digest, manifest, kitfile), indent=2))
    return 0


# -- list -----------------------------------------------------------------------------------


def _register_list(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "list", help="list ModelKits in local storage, or the tags of a remote repository"
    )
    p.add_argument(
        "repository",
        nargs="?",
        metavar="REPOSITORY",
        help="registry/repository[:tag] to list remotely",
    )
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    add_network_flags(p)
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.repository:
        ref = parse(args.repository)
        if ref.extra_tags:
            raise UsageError("repository cannot reference multiple tags")
        if ref.is_local:
            rows = catalog.local_rows(_store(args), ref.name)
            if ref.tag:
                rows = [r for r in rows if ref.tag in r.tags]
        else:
            from kitfs import remote

            rows = remote.list_remote(ref, paths(args), registry_options(args))
    else:
        rows = catalog.local_rows(_store(args))
    if args.format == "json":  # Go's json.MarshalIndent, as kit prints it
        print(go_json([row.to_json() for row in rows], indent=2))
    else:
        sys.stdout.write(catalog.format_table(rows))
    return 0


# -- tag / remove ---------------------------------------------------------------------------


def _register_tag(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("tag", help="give a ModelKit in local storage another reference")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("target", metavar="TARGET")
    p.set_defaults(func=_cmd_tag)


def _cmd_tag(args: argparse.Namespace) -> int:
    source, target = parse(args.source), parse(args.target)
    catalog.tag(_store(args), source, target)
    info(f"Modelkit {source} tagged as {target}")
    return 0


def _register_remove(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "remove", aliases=["rm"], help="remove ModelKits from local storage (or a registry)"
    )
    p.add_argument("reference", nargs="?", metavar="REF")
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove the ModelKit and every tag that refers to it",
    )
    p.add_argument(
        "-a", "--all", action="store_true", help="remove all untagged ModelKits (with --force: all)"
    )
    p.add_argument(
        "-r", "--remote", action="store_true", help="remove the ModelKit from its registry"
    )
    add_network_flags(p)
    _json_flag(p)
    p.set_defaults(func=_cmd_remove)


def _cmd_remove(args: argparse.Namespace) -> int:
    if args.all and args.reference:
        raise UsageError("modelkit should not be specified when --all flag is used")
    if not args.all and not args.reference:
        raise UsageError("modelkit is required for remove unless --all is specified")
    if args.all and args.remote:
        raise UsageError("cannot use --all with --remote")
    store = _store(args)
    if args.all:
        removed = catalog.remove_all(store, force=args.force)
    elif args.remote:
        from kitfs import remote

        removed = remote.remove_remote(parse(args.reference), paths(args), registry_options(args))
    else:
        removed = catalog.remove(store, parse(args.reference), force=args.force)
    if args.json:
        print_json(
            [
                {"reference": r.reference, "digest": r.digest, "untagged": r.untagged_only}
                for r in removed
            ]
        )
    elif args.all:  # kit: "Untagged repo:tag" for each tag, then "Removed repo@digest"
        for r in removed:
            for untagged in r.untagged:
                print(f"Untagged {untagged}")
            print(f"Removed {r.reference}")
    else:
        for r in removed:
            print(f"Removed {r.reference} (digest {r.digest})")
    return 0
