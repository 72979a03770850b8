"""The ``kitfs`` command line: argument parsing, output and exit codes.

Each verb group lives in its own module with a ``register(subparsers)`` function; a verb's handler
takes the parsed arguments and returns an exit code. Logic that a library caller would need lives in
the modules below ``kitfs.cli``, never here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kitfs import __version__
from kitfs.cli import cache, csi, index, local, mount, registry, signing, verbs
from kitfs.cli import hub as hub_cli
from kitfs.errors import KitfsError

log = logging.getLogger("kitfs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kitfs",
        description="Mount KitOps ModelKits as read-only filesystems; kit-compatible verbs around the mount.",
    )
    parser.add_argument("--version", action="version", version=f"kitfs {__version__}")
    add_global_flags(parser, {"config": None, "debug": False, "verbose": 0, "progress": "auto"})
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    local.register(subparsers)
    registry.register(subparsers)
    mount.register(subparsers)
    cache.register(subparsers)
    index.register(subparsers)
    signing.register(subparsers)
    verbs.register(subparsers)
    hub_cli.register(subparsers)
    csi.register(subparsers)
    for verb in subparsers.choices.values():
        _add_persistent_flags(verb)
    return parser


def _add_persistent_flags(parser: argparse.ArgumentParser) -> None:
    """kit's global flags are persistent (cobra): accepted after a verb, and after a verb's own
    subcommand (``kitfs cache info --config DIR``), too. There they default to "not given", so a
    flag before the verb is not reset by the verb's parser."""
    add_global_flags(parser, None)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                _add_persistent_flags(nested)


def add_global_flags(parser: argparse.ArgumentParser, defaults: dict[str, object] | None) -> None:
    """``--config``, ``--debug``, ``-v`` and ``--progress`` on ``parser``; ``defaults`` None means
    argparse.SUPPRESS (a verb's parser). Options a verb defines itself are left to it."""

    def default(name: str) -> object:
        return argparse.SUPPRESS if defaults is None else defaults[name]

    def add(*flags: str, **kwargs: object) -> None:
        if not any(flag in parser._option_string_actions for flag in flags):
            parser.add_argument(*flags, **kwargs)  # type: ignore[arg-type]

    add(
        "--config",
        metavar="DIR",
        default=default("config"),
        help="kit's configuration directory (default: $KITOPS_HOME, else $XDG_DATA_HOME/kitops, else ~/.local/share/kitops)",
    )
    add(
        "--debug",
        action="store_true",
        default=default("debug"),
        help="show debug logs and tracebacks",
    )
    add(
        "-v",
        "--verbose",
        action="count",
        default=default("verbose"),
        help="more log output (repeatable)",
    )
    add(
        "--progress",
        choices=("auto", "plain", "none", "fancy"),
        default=default("progress"),
        help="progress display: bars on a terminal (auto, or kit's fancy), log lines (plain) or nothing",
    )


def _configure_logging(args: argparse.Namespace) -> None:
    level = (
        logging.DEBUG
        if args.debug or args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING
    )
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        try:
            return int(args.func(args) or 0)
        except BaseExceptionGroup as group:  # concurrent work (trio nurseries) fails as a group
            chief = _chief(group)
            if chief is group:
                raise
            raise chief from group
    except KitfsError as exc:
        if args.debug:
            log.exception("command failed")
        print(f"kitfs: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kitfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as exc:  # a bug: one line for the user, the traceback with --debug
        if args.debug:
            raise
        print(
            f"kitfs: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            file=sys.stderr,
        )
        return 70


def _chief(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that speaks for a group: an interruption first, then the first kitfs error;
    otherwise the group itself (a bug, reported as an internal error)."""
    for kind in (KeyboardInterrupt, KitfsError):
        matched, _ = group.split(kind)
        if matched is not None:
            first: BaseException = matched
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return first
    return group


def entry() -> None:
    sys.exit(main())
