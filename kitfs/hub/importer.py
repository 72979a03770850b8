"""``kitfs import REPOSITORY``: kit v1.7.0's flags and defaults, then the Hub API or git.

Order of kit's ``complete`` and ``getImporter`` (pkg/cmd/kitimport/cmd.go): the tag (``-t``, else
``org/repo:latest`` from the repository, lower-cased), the tool (``--tool``, else detected from the
repository, kitfs.hub.source), then the Kitfile: ``-f`` (``-`` reads standard input), else one the
repository carries (git), else one generated from the listing as kit generates it (kitfs.kitinit),
with the repository's name and owner in its package section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from kitfs.config import Paths
from kitfs.errors import UsageError
from kitfs.hub.errors import HubError
from kitfs.hub.gitimport import DEFAULT_REF
from kitfs.hub.hfapi import HubConfig, hub_config
from kitfs.hub.kitfiles import edit_dir, interactive, load_kitfile, offer_edit
from kitfs.hub.source import (
    TOOLS,
    default_tag,
    detect_tool,
    extract_repo,
    git_url,
    on_endpoint,
    package_for,
)
from kitfs.pack import PackResult, resolve_target
from kitfs.progress import ProgressSink
from kitfs.reference import Reference


@dataclass(frozen=True)
class ImportOptions:
    """The command line of ``kitfs import``."""

    repository: str
    ref: str = DEFAULT_REF
    tag: str | None = None
    token: str | None = None
    kitfile: str | None = None
    tool: str | None = None
    concurrency: int = 5


def run_import(
    options: ImportOptions, paths: Paths, progress: ProgressSink, say: Callable[[str], None]
) -> PackResult:
    """Import ``options.repository`` into local storage; return what was stored."""
    config = hub_config(options.token)
    named = on_endpoint(options.repository, config.endpoint)
    tag = options.tag or default_tag(named)
    if not options.tag:
        say(f"Using tag {tag}. Use flag --tag to override")
    target = _target(tag)
    if options.tool is not None and options.tool not in TOOLS:
        raise UsageError(f"invalid value for --tool flag. Valid options are: {', '.join(TOOLS)}")
    if options.concurrency < 1:
        raise UsageError(
            f"invalid argument for concurrency ({options.concurrency}): must be at least 1"
        )
    tool = options.tool or detect_tool(options.repository, config.host)
    if tool == "git":
        from kitfs.hub.gitimport import import_git

        url = git_url(options.repository, config.endpoint)
        result = import_git(
            url, options.ref, git_token(url, config), options.kitfile, tag, paths, progress,
            say, options.repository,
        )  # fmt: skip
        say(f"Model is packed as {tag}")
        return result
    return _import_hf(options, named, tag, target, config, paths, progress, say)


def git_token(url: str, config: HubConfig) -> str | None:
    """``--token`` for any git host (kit's rule); the Hub's token (HF_TOKEN, the token file) only
    for a clone from the Hub itself, never sent to another host."""
    if config.token_source == "--token":
        return config.token
    same_host = urlsplit(url).hostname == config.host if "://" in url else False
    return config.token if same_host else None


def _target(tag: str) -> Reference:
    try:
        return resolve_target(tag)
    except Exception as exc:  # a bad -t: kit's "invalid argument" line
        raise UsageError(f"invalid argument: tag '{tag}' is invalid: {exc}") from None


def _import_hf(
    options: ImportOptions,
    named: str,
    tag: str,
    target: Reference,
    config: HubConfig,
    paths: Paths,
    progress: ProgressSink,
    say: Callable[[str], None],
) -> PackResult:
    from kitfs.hub.hfimport import HubImport, import_listing, list_files

    try:
        repo = extract_repo(named)
    except HubError as exc:
        raise HubError(f"could not process URL {options.repository}: {exc}") from None
    job = HubImport(repo, options.ref, config, options.concurrency, target)
    listing = list_files(job)
    if options.kitfile is not None:
        kitfile = load_kitfile(options.kitfile)
    else:
        from kitfs.kitinit import generate

        kitfile = generate(listing.tree, package_for(repo))
        say(f"Generated Kitfile:\n\n{kitfile.to_yaml()}")
        if interactive():
            kitfile = offer_edit(
                kitfile,
                lambda: edit_dir(paths.cache),
                lambda path: f"kitfs import {options.repository} -t {tag} -f {path}",
            )
    say(f"Packing model to {tag}")
    result = import_listing(job, listing, kitfile, paths, progress, say)
    say(f"Model is packed as {tag}")
    return result
