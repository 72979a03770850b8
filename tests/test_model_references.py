"""Model references: a Kitfile whose model path names another ModelKit (kit's modelkit-refs tests)."""

from __future__ import annotations

from pathlib import Path

from helpers import cli, fails, files_under, make_tree, ok


def _pack(
    home: Path, root: Path, name: str, kitfile: str, files: dict[str, str | bytes], tag: str
) -> None:
    context = root / name
    make_tree(context, {"Kitfile": kitfile, **files})
    ok(cli(home, "pack", str(context), "-t", tag))


def test_unpack_brings_the_parents_model_layers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _pack(
        home,
        tmp_path,
        "base",
        "manifestVersion: 1.0.0\nmodel:\n  name: base\n  path: my-model\n",
        {"my-model/weights.bin": b"base weights"},
        "chain:base",
    )
    _pack(
        home,
        tmp_path,
        "tuned",
        "manifestVersion: 1.0.0\nmodel:\n  name: tuned\n  path: chain:base\n  parts:\n"
        "    - name: adapter\n      path: adapter.bin\n",
        {"adapter.bin": b"adapter", "my-model/ignored.bin": b"belongs to nobody"},
        "chain:tuned",
    )
    out = tmp_path / "out"
    ok(cli(home, "unpack", "chain:tuned", "-d", str(out)))
    assert files_under(out) == {"Kitfile", "adapter.bin", "my-model/weights.bin"}
    assert (out / "my-model" / "weights.bin").read_bytes() == b"base weights"
    assert "path: chain:base" in (out / "Kitfile").read_text()


def test_parent_is_skipped_when_the_filter_leaves_the_model_out(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _pack(
        home,
        tmp_path,
        "base",
        "manifestVersion: 1.0.0\nmodel:\n  path: m\n",
        {"m/w": b"w"},
        "c:base",
    )
    _pack(
        home,
        tmp_path,
        "child",
        "manifestVersion: 1.0.0\nmodel:\n  path: c:base\ndatasets:\n  - name: d\n    path: d.csv\n",
        {"d.csv": b"a,b\n"},
        "c:child",
    )
    out = tmp_path / "out"
    ok(cli(home, "unpack", "c:child", "-d", str(out), "--filter", "datasets"))
    assert files_under(out) == {"d.csv"}


def test_packing_a_reference_loop_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _pack(
        home,
        tmp_path,
        "one",
        "manifestVersion: 1.0.0\nmodel:\n  path: f.txt\n",
        {"f.txt": "1"},
        "loop:one",
    )
    _pack(
        home, tmp_path, "two", "manifestVersion: 1.0.0\nmodel:\n  path: loop:one\n", {}, "loop:two"
    )
    context = tmp_path / "three"
    make_tree(context, {"Kitfile": "manifestVersion: 1.0.0\nmodel:\n  path: loop:two\n"})
    message = fails(cli(home, "pack", str(context), "-t", "loop:one"))
    assert "cycle in modelkit references" in message.lower()
