"""``kitfs import``: a Hugging Face or git repository into a ModelKit (kitfs.hub)."""

from __future__ import annotations

import argparse

from kitfs.cli.common import paths, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "import",
        help="import a Hugging Face or git repository as a ModelKit",
        description="Download a repository from Hugging Face (or any git repository) and store it "
        "as a ModelKit in local storage, every file verified. HF_ENDPOINT selects a Hub mirror; "
        "HF_TOKEN or the huggingface_hub token file is used when --token is not given.",
    )
    p.add_argument("repository", metavar="REPOSITORY", help="org/repo, or a repository URL")
    p.add_argument(
        "--ref",
        default="main",
        help="branch or tag to import (a commit too, from the Hub; default main)",
    )
    p.add_argument(
        "--token", help="token for the repository (default: $HF_TOKEN, then $HF_HOME/token)"
    )
    p.add_argument(
        "-t", "--tag", metavar="REF", help="tag for the ModelKit (default REPOSITORY:latest)"
    )
    p.add_argument(
        "-f", "--file", metavar="KITFILE", help="Kitfile to pack with ('-' reads standard input)"
    )
    p.add_argument(
        "--tool",
        choices=("git", "hf"),
        help="download with the Hub API or git (default: detect from REPOSITORY)",
    )
    p.add_argument(
        "--concurrency", type=int, default=5, metavar="N", help="simultaneous downloads (default 5)"
    )
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from kitfs.hub.importer import ImportOptions, run_import
    from kitfs.progress import progress_for

    options = ImportOptions(
        repository=args.repository,
        ref=args.ref,
        tag=args.tag,
        token=args.token,
        kitfile=args.file,
        tool=args.tool,
        concurrency=args.concurrency,
    )
    with progress_for(show_progress(args)) as sink:
        run_import(options, paths(args), sink, lambda line: print(line, flush=True))
    return 0
