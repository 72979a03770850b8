"""Import any git repository: a shallow clone at ``--ref`` with git and git-lfs, then pack.

As kit v1.7.0 (pkg/lib/git/clone.go, pkg/cmd/kitimport/gitimport.go): ``git clone --depth 1``
(``--branch REF`` unless REF is kit's default ``main``) with LFS smudging off, then ``git lfs pull``,
which fetches every LFS object and checks it against its sha256 before checking it out. A token is
given to git through a credential helper in the environment, never on a command line. The clone's
git metadata (``.git``, ``.gitattributes``, ``.gitignore``) is removed, a Kitfile in the repository
is used if there is one, and the working tree is packed by ``kitfs pack``. The clone lives in the
import's scratch space and is removed afterwards, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from kitfs.config import Paths
from kitfs.hub.errors import HubError
from kitfs.hub.kitfiles import edit_dir, interactive, offer_edit
from kitfs.hub.scratch import SCRATCH_SUBDIR
from kitfs.hub.source import package_for
from kitfs.kitfile import DEFAULT_NAMES
from kitfs.kitinit import generate, list_directory
from kitfs.pack import PackResult, pack
from kitfs.progress import ProgressSink

DEFAULT_REF = "main"  # kit's git.DefaultGitRef
GIT_METADATA = (".git", ".gitattributes", ".gitignore")


def import_git(
    url: str,
    ref: str,
    token: str | None,
    kitfile_path: str | None,
    tag: str,
    paths: Paths,
    progress: ProgressSink,
    say: Callable[[str], None],
    repository: str,
) -> PackResult:
    """Clone ``url`` at ``ref``, choose or generate the Kitfile, pack into local storage."""
    _check_tools()
    scratch = paths.cache / SCRATCH_SUBDIR
    scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="git-", dir=scratch))
    try:
        clone = workdir / "repo"
        say(f"Cloning repository {url}")
        _clone(url, ref, clone, token)
        _clean_git_metadata(clone)
        if kitfile_path is None and not any((clone / n).is_file() for n in DEFAULT_NAMES):
            kitfile = generate(list_directory(clone), package_for(repository))
            say(f"Generated Kitfile:\n\n{kitfile.to_yaml()}")
            if interactive():
                kitfile = offer_edit(
                    kitfile,
                    lambda: edit_dir(paths.cache),
                    lambda path: f"kitfs import {repository} --tool git -t {tag} -f {path}",
                )
            (clone / "Kitfile").write_text(kitfile.to_yaml(), encoding="utf-8")
        say(f"Packing model to {tag}")
        return pack(clone, paths, kitfile_path=kitfile_path, tag=tag, progress=progress)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_tools() -> None:
    for command, name in ((["git", "version"], "git"), (["git", "lfs", "version"], "git-lfs")):
        try:
            subprocess.run(command, capture_output=True, check=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            raise HubError(f"{name} is not installed (Debian: apt install git git-lfs)") from None


def _git_env(token: str | None) -> dict[str, str]:
    """kit's clone environment: a credential helper answering the token, else no prompts."""
    env = dict(os.environ)
    if token:
        env.update(
            KIT_IMPORT_TOKEN=token,
            GIT_CONFIG_COUNT="2",
            GIT_CONFIG_KEY_0="credential.username",
            GIT_CONFIG_VALUE_0="token",
            GIT_CONFIG_KEY_1="credential.helper",
            GIT_CONFIG_VALUE_1='!f() { test "$1" = get && echo "password=${KIT_IMPORT_TOKEN}"; }; f',
        )
    else:
        env.update(GIT_ASKPASS="true", GIT_TERMINAL_PROMPT="0")
    return env


def _clone(url: str, ref: str, dest: Path, token: str | None) -> None:
    env = _git_env(token)
    command = ["git", "clone", "--depth", "1"]
    if ref != DEFAULT_REF:
        command += ["--branch", ref, "-c", "advice.detachedHead=false"]
    _run([*command, "--", url, str(dest)], {**env, "GIT_LFS_SKIP_SMUDGE": "1"}, None, "cloning")
    _run(["git", "lfs", "pull"], env, dest, "downloading LFS files")


def _run(command: list[str], env: dict[str, str], cwd: Path | None, doing: str) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise HubError(f"error {doing} repository: {exc.strerror}") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise HubError(f"error {doing} repository: {reason}")


def _clean_git_metadata(root: Path) -> None:
    """kit's CleanGitMetadata: ``.git`` at the top, ``.gitattributes``/``.gitignore`` anywhere."""
    shutil.rmtree(root / ".git", ignore_errors=True)
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name in (".gitattributes", ".gitignore"):
                os.unlink(os.path.join(dirpath, name))
