"""The Kitfile an import packs with: ``-f`` (a file or standard input), read as kit's
readExistingKitfile does, and kit's offer to edit a generated one before packing
(pkg/cmd/kitimport/util.go promptToEditKitfile): only in an interactive session.

The Kitfile is written to a file of its own, the editor (``$EDITOR``, else ``nano``) opens it, and
what comes back is parsed and validated as ``-f`` would be. Without an editor the file is kept and
the one error line says how to finish by hand, as kit's warnings do.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from kitfs.errors import KitfileError, UsageError
from kitfs.hub.errors import HubError
from kitfs.kitfile import Kitfile


def interactive() -> bool:
    """kit's IsInteractiveSession: standard input and output are terminals."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def offer_edit(
    kitfile: Kitfile,
    workdir: Callable[[], Path],
    finish_hint: Callable[[Path], str],
    ask: Callable[[str], str] = input,
) -> Kitfile:
    """Ask whether to edit ``kitfile``; if so, edit it in ``workdir()/Kitfile`` and return the
    result. ``finish_hint`` gives the command that completes the import with an edited file;
    the file is kept when the edit fails, and removed once it parsed."""
    answer = ask("Would you like to edit Kitfile before packing? (y/N): ")
    if not answer.strip().lower().startswith("y"):
        return kitfile
    directory = workdir()
    path = directory / "Kitfile"
    path.write_text(kitfile.to_yaml(), encoding="utf-8")
    editor = _editor()
    if editor is None:
        raise HubError(
            f"no editor found ($EDITOR is not set and nano is not installed): edit {path} and run "
            f"`{finish_hint(path)}` to complete the import"
        )
    try:
        result = subprocess.run([*shlex.split(editor), str(path)], check=False)
    except OSError as exc:
        raise HubError(f"error running external editor {editor}: {exc.strerror}") from None
    if result.returncode != 0:
        raise HubError(f"error running external editor {editor}: exit status {result.returncode}")
    edited = load_kitfile(str(path))
    shutil.rmtree(directory, ignore_errors=True)
    return edited


def load_kitfile(source: str) -> Kitfile:
    """kit's readExistingKitfile (or standard input for ``-``): parsed and validated."""
    if source == "-":
        if sys.stdin.isatty():
            raise UsageError("no Kitfile piped on standard input (-f -)")
        text, name = sys.stdin.buffer.read(), "Kitfile from standard input"
    else:
        try:
            text, name = Path(source).read_bytes(), source
        except OSError as exc:
            raise HubError(f"failed to read Kitfile: {source}: {exc.strerror}") from None
    try:
        return Kitfile.from_yaml(text, name)
    except KitfileError as exc:
        raise HubError(f"kitfile ({name}) is invalid: {exc}") from None


def edit_dir(cache: Path) -> Path:
    """A new directory for editing a generated Kitfile, beside the import's scratch state."""
    from kitfs.hub.scratch import SCRATCH_SUBDIR

    base = cache / SCRATCH_SUBDIR
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="kitfile-", dir=base))


def _editor() -> str | None:
    return os.environ.get("EDITOR") or shutil.which("nano")
