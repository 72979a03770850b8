"""``kitfs index``: add span indexes to a ModelKit packed without them (kitfs/indexer.py)."""

from __future__ import annotations

import argparse

from kitfs.catalog import format_bytes
from kitfs.cli.common import (
    add_network_flags,
    info,
    paths,
    print_json,
    registry_options,
    show_progress,
)
from kitfs.cli.local import span_size_flag
from kitfs.errors import NotFoundError, UsageError
from kitfs.progress import progress_for
from kitfs.reference import DEFAULT_TAG, Reference, parse
from kitfs.storage.local import LocalStore

_HOW = {
    "kept": "already had a span index",
    "inline": "span index in the manifest, layer bytes unchanged",
    "appended": "span index appended to the layer (too large for the manifest)",
    "re-encoded": "re-encoded as independently readable spans with an appended index",
    "raw-whole": "compressed raw layer (or index too large): left as is, read whole and verified",
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "index",
        help="add span indexes to a ModelKit so that mounts read only what programs read",
    )
    p.add_argument(
        "reference", metavar="REF", help="the ModelKit (local, or pulled first from a registry)"
    )
    p.add_argument(
        "-t", "--tag", metavar="NEWREF", help="reference for the indexed ModelKit (default: REF)"
    )
    p.add_argument(
        "--push", action="store_true", help="push the indexed ModelKit to NEWREF's registry"
    )
    p.add_argument("--span-size", metavar="SIZE", default="4MiB", help="span size (default 4MiB)")
    add_network_flags(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_index, no_span_index=False)


def _stored(args: argparse.Namespace, ref: Reference) -> bool:
    """Whether local storage holds ``ref`` already (then it is indexed from there, not pulled)."""
    try:
        LocalStore(paths(args).storage).resolve(ref)
    except NotFoundError:
        return False
    return True


def _cmd_index(args: argparse.Namespace) -> int:
    from kitfs import remote
    from kitfs.indexer import index_modelkit

    ref = parse(args.reference, default_tag=DEFAULT_TAG)
    target = parse(args.tag, default_tag=DEFAULT_TAG) if args.tag else ref
    if target.digest or not target.tag:
        raise UsageError("name a tag for the indexed ModelKit: -t REPOSITORY:TAG")
    if args.push and target.is_local:
        raise UsageError(
            f"cannot push {target}: name a registry with -t host[:port]/repository:tag"
        )
    span_size = span_size_flag(args)
    assert span_size is not None
    with progress_for(show_progress(args)) as sink:
        if not ref.is_local and not _stored(args, ref):
            remote.pull(ref, paths(args), registry_options(args), sink)
        result = index_modelkit(paths(args), ref, target, span_size)
        if args.push:
            remote.push(target, target, paths(args), registry_options(args), sink)
    if args.json:
        print_json(
            {
                "digest": result.digest,
                "reference": str(target),
                "uploadBytes": result.upload_bytes,
                "layers": [
                    {
                        "before": c.before.digest,
                        "after": c.after.digest,
                        "how": c.how,
                        "uploadBytes": c.new_bytes,
                    }
                    for c in result.changes
                ],
            }
        )
        return 0
    for change in result.changes:
        info(f"layer {change.before.digest[:19]}: {_HOW[change.how]}")
    cost = format_bytes(result.upload_bytes)
    print(f"Indexed ModelKit saved: {result.digest}")
    if args.push:
        print(f"Pushed {result.digest} to {target} ({cost} of new layer bytes uploaded)")
    else:
        print(f"Pushing it uploads {cost} of new layer bytes plus the manifest and config")
    return 0
