"""kit's offer to edit a generated Kitfile before an import packs it (promptToEditKitfile),
with a real editor command (a shell script standing in for $EDITOR)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitfs.hub.errors import HubError
from kitfs.hub.kitfiles import load_kitfile, offer_edit
from kitfs.kitfile import Kitfile

GENERATED = Kitfile.from_yaml(
    "manifestVersion: 1.0.0\npackage:\n  name: tiny\nmodel:\n  path: m.gguf\n"
)


def hint(path: Path) -> str:
    return f"kitfs import org/tiny -t tiny:latest -f {path}"


def _remember(made: list[Path], path: Path) -> Path:
    made.append(path)
    return path


def _made(path: Path) -> Path:
    path.mkdir()
    return path


def test_no_means_the_generated_kitfile(tmp_path: Path) -> None:
    made: list[Path] = []
    kitfile = offer_edit(GENERATED, lambda: _remember(made, tmp_path), hint, ask=lambda _: "N")
    assert kitfile is GENERATED and not made


def test_the_editor_changes_what_is_packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i "s/name: tiny/name: edited/" "$1"\n')
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    work = tmp_path / "edit"
    kitfile = offer_edit(GENERATED, lambda: _made(work), hint, ask=lambda _: "yes")
    assert kitfile.package["name"] == "edited"
    assert not work.exists()


def test_an_invalid_edit_is_refused_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\necho "model: [" >> "$1"\n')
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    work = tmp_path / "edit"
    with pytest.raises(HubError, match="is invalid"):
        offer_edit(GENERATED, lambda: _made(work), hint, ask=lambda _: "y")
    assert (work / "Kitfile").exists()


def test_without_an_editor_the_kitfile_is_kept_with_the_command_to_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    work = tmp_path / "edit"
    with pytest.raises(HubError) as raised:
        offer_edit(GENERATED, lambda: _made(work), hint, ask=lambda _: "y")
    assert f"-f {work / 'Kitfile'}" in str(raised.value)
    assert load_kitfile(str(work / "Kitfile")).package["name"] == "tiny"
