"""kit's newer verbs (diff, init, version) and kit's persistent global flags, through the CLI.

``kit diff`` is checked against the real kit v1.7.0 binary (``../shared/tools/kit``); ``kit init``
against current kit's generation rules (pkg/lib/kitfile/generate), which differ from v1.7's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, fails, kitfs, ok, saved_digest

from kitfs import __version__
from kitfs.kitinit import CODE, DATASET, DOCS, METADATA, MODEL, PROMPT, UNKNOWN, file_type

KIT = Path(__file__).resolve().parents[1].parent.parent / "shared" / "tools" / "kit"
if not KIT.exists():
    KIT = Path("/work/shared/tools/kit")
needs_kit = pytest.mark.skipif(not KIT.exists(), reason=f"kit v1.7.0 binary not found at {KIT}")


def run_kit(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    return subprocess.run(
        [str(KIT), "--config", str(home), *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )  # fmt: skip


def two_versions(tmp_path: Path, home: Path, ref: str) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "data").mkdir(parents=True)
    (ctx / "docs").mkdir()
    (ctx / "model.bin").write_bytes(b"w" * 3000)
    (ctx / "run.sh").write_text("echo 1\n")
    (ctx / "data" / "train.csv").write_text("a,b\n" * 100)
    (ctx / "docs" / "a.md").write_text("# a\n")
    (ctx / "Kitfile").write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: n\nmodel:\n  path: model.bin\n"
        "code:\n  - path: run.sh\ndatasets:\n  - path: data\ndocs:\n  - path: docs\n"
    )
    ok(cli(home, "pack", str(ctx), "-t", f"{ref}:1"))
    (ctx / "run.sh").write_text("echo 2\n")
    ok(cli(home, "pack", str(ctx), "-t", f"{ref}:2"))
    return ctx


@needs_kit
def test_diff_prints_what_kit_prints(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ref = "127.0.0.1:5999/org/diffme"  # a registry-qualified name, so kit v1.7 parses it too
    two_versions(tmp_path, home, ref)
    theirs = run_kit(home, "diff", f"{ref}:1", f"{ref}:2")
    assert theirs.returncode == 0, theirs.stderr
    ours = ok(cli(home, "diff", f"local://{ref}:1", f"{ref}:2"))
    # Current kit prints base types as mediatype.UserString() does ("model"); v1.7 capitalised
    # them ("Model"). Everything else is byte for byte.
    expected = theirs.stdout
    for word in ("Model", "Code", "Dataset", "Docs"):
        expected = expected.replace(
            f"\n{word}{' ' * (7 - len(word))} |", f"\n{word.lower()}{' ' * (7 - len(word))} |"
        )
    assert ours.stdout.replace(f"local://{ref}", ref) == expected
    assert "Unique Layers to ModelKit1 (127.0.0.1:5999/org/diffme:1)" in ours.stdout
    assert ours.stdout.count("code    | sha256:") == 2


@needs_kit
def test_diff_of_a_modelkit_with_itself_says_identical_as_kit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ref = "127.0.0.1:5999/org/same"
    two_versions(tmp_path, home, ref)
    theirs = run_kit(home, "diff", f"{ref}:1", f"{ref}:1")
    assert (
        ok(cli(home, "diff", f"{ref}:1", f"{ref}:1")).stdout
        == theirs.stdout
        == "ModelKits are identical\n"
    )


def test_diff_names_the_side_it_cannot_find(tmp_path: Path) -> None:
    home = tmp_path / "home"
    two_versions(tmp_path, home, "m")
    line = fails(cli(home, "diff", "m:1", "local://m:9"))
    assert line.startswith("kitfs: Failed to get manifest for ModelKit2: ")


def test_diff_reads_a_registry(tmp_path: Path, registry: object) -> None:
    home = tmp_path / "home"
    host = registry.host  # type: ignore[attr-defined]
    ref = f"{host}/kitfs-diff/m"
    two_versions(tmp_path, home, ref)
    ok(cli(home, "push", f"{ref}:1", "--plain-http"))
    out = ok(cli(home, "diff", f"remote://{ref}:1", f"local://{ref}:2", "--plain-http")).stdout
    assert out.startswith(f"Comparing:\n  ModelKit1: {ref}:1\n  ModelKit2: {ref}:2\n")


# -- init -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "filename", "expected"),
    [
        # pkg/lib/kitfile/generate/generate_test.go TestDetermineFileType; current kit classifies
        # prompt files as prompts (fileTypePrompt), where that table's older rows said code.
        ("prompt file without extension", "system.prompt", PROMPT),
        ("prompt file with .md extension", "chain.prompt.md", PROMPT),
        ("prompt file with .yaml extension", "my.prompt.yaml", PROMPT),
        ("prompt file with .txt extension", "instruction.prompt.txt", PROMPT),
        ("prompt file in subdirectory", "prompts/user.prompt", PROMPT),
        ("AGENTS.md file", "AGENTS.md", PROMPT),
        ("agents.md lowercase", "agents.md", PROMPT),
        ("SKILL.md file", "SKILL.md", PROMPT),
        ("skill.md lowercase", "skill.md", PROMPT),
        ("AGENTS.md in subdirectory", "docs/AGENTS.md", PROMPT),
        ("prompt without dot prefix (no leading dot)", "prompt.txt", METADATA),
        ("prompt with underscore", "my_prompt.md", DOCS),
        ("file containing prompt in name", "prompter.py", UNKNOWN),
        ("model file .gguf", "model.gguf", MODEL),
        ("dataset file .csv", "data.csv", DATASET),
        ("docs file .md", "README.md", DOCS),
        ("metadata file .json", "config.json", METADATA),
        ("unknown file .sh", "script.sh", UNKNOWN),
    ],
)
def test_file_types_as_kit_determines_them(name: str, filename: str, expected: int) -> None:
    assert file_type(filename) == expected, name
    assert expected != CODE


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_init_writes_current_kits_kitfile(tmp_path: Path) -> None:
    ctx = make_tree(
        tmp_path / "ctx",
        {
            "m.safetensors": "w" * 100,
            "config.json": "{}",
            "README.md": "# hi",
            "LICENSE": "Apache License\nVersion 2.0, January 2004\n",
            "data/x.csv": "a,b",
            "docs/a.md": "d",
            "src/main.py": "x",
            "run.sh": "s",
            "system.prompt.md": "p",
            ".DS_Store": "junk",
        },
    )
    result = ok(
        cli(tmp_path / "home", "init", str(ctx), "--name", "n", "--desc", "d", "--author", "me")
    )
    expected = """\
manifestVersion: 1.0.0
package:
  name: "n"
  description: d
  authors: [me]
model:
  name: m
  path: m.safetensors
  license: Apache-2.0
  parts:
    - path: config.json
code:
  - path: src/
  - path: run.sh
datasets:
  - path: data/
docs:
  - path: LICENSE
    description: License file
  - path: README.md
    description: Readme file
  - path: docs/
prompts:
  - path: system.prompt.md
"""
    assert (ctx / "Kitfile").read_text() == expected
    assert result.stdout == f"Generated Kitfile:\n\n{expected}Saved to path '{ctx / 'Kitfile'}'\n"
    ok(cli(tmp_path / "home", "pack", str(ctx)))  # what init writes, pack accepts


def test_init_makes_a_skill_directory_one_prompt(tmp_path: Path) -> None:
    ctx = make_tree(
        tmp_path / "skill",
        {
            "SKILL.md": "---\nname: pdf-tools\ndescription: Work with PDFs\nlicense: MIT\n---\nbody\n",
            "run.py": "x",
        },
    )
    ok(cli(tmp_path / "home", "init", str(ctx)))
    assert (ctx / "Kitfile").read_text() == (
        "manifestVersion: 1.0.0\npackage:\n  name: pdf-tools\n  description: Work with PDFs\n"
        "  license: MIT\nprompts:\n  - name: pdf-tools\n    path: .\n    description: Work with PDFs\n"
    )


def test_init_puts_many_unknown_files_in_one_code_layer_and_splits_model_parts(
    tmp_path: Path,
) -> None:
    files = {f"s{i}.sh": "x" for i in range(6)}
    files |= {"big.gguf": "w" * 1000, "lora.gguf": "w" * 10, "extra.gguf": "w" * 10}
    ctx = make_tree(tmp_path / "ctx", files)
    ok(cli(tmp_path / "home", "init", str(ctx)))
    assert (ctx / "Kitfile").read_text() == (
        "manifestVersion: 1.0.0\nmodel:\n  name: big\n  path: big.gguf\n  parts:\n"
        "    - path: extra.gguf\n    - path: lora.gguf\ncode:\n  - path: .\n"
    )


def test_init_refuses_to_replace_a_kitfile_without_force(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path / "ctx", {"Kitfile": "keep me", "a.csv": "x"})
    line = fails(cli(tmp_path / "home", "init", str(ctx)))
    assert line == f"kitfs: Kitfile already exists at {ctx / 'Kitfile'}. Use '--force' to overwrite"
    assert (ctx / "Kitfile").read_text() == "keep me"
    ok(cli(tmp_path / "home", "init", str(ctx), "-f"))
    assert (ctx / "Kitfile").read_text() == "manifestVersion: 1.0.0\ndatasets:\n  - path: a.csv\n"


@needs_kit
def test_init_matches_kit_where_v1_7_and_current_kit_agree(tmp_path: Path) -> None:
    """Top-level files of known types: v1.7 and current kit generate the same Kitfile."""
    files = {"m.safetensors": "w", "config.json": "{}", "README.md": "r", "t.csv": "a"}
    theirs = make_tree(tmp_path / "theirs", files)
    ours = make_tree(tmp_path / "ours", files)
    assert (
        run_kit(tmp_path / "kh", "init", str(theirs), "--name", "x", "--desc", "y").returncode == 0
    )
    ok(cli(tmp_path / "home", "init", str(ours), "--name", "x", "--desc", "y"))
    assert (ours / "Kitfile").read_text() == (theirs / "Kitfile").read_text()


# -- version and global flags -----------------------------------------------------------------


def test_version_has_kits_shape(tmp_path: Path) -> None:
    lines = ok(cli(tmp_path, "version")).stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "Version",
        "Commit",
        "Built",
        "Python version",
    ]
    assert lines[0] == f"Version: {__version__}"


def test_global_flags_are_accepted_after_the_verb(tmp_path: Path) -> None:
    """Each global flag given after the verb does what it does before it."""
    ctx = make_tree(
        tmp_path / "ctx", {"Kitfile": "manifestVersion: 1.0.0\ncode:\n  - path: a\n", "a": "x"}
    )
    home, other = tmp_path / "home", tmp_path / "other-home"
    packed = ok(kitfs(home, "pack", str(ctx), "--progress", "none", "-v", "--config", str(other),
                      "-t", "g:1"))  # fmt: skip
    digest = saved_digest(packed)
    # --config after the verb chose the home: the ModelKit is in the other one, not in HOME.
    rows = [line.split() for line in ok(kitfs(other, "list")).stdout.splitlines()[1:]]
    assert [(row[0], row[1], row[-1]) for row in rows] == [("g", "1", digest)]
    assert ok(kitfs(home, "list")).stdout.splitlines()[1:] == []
    assert digest in ok(cli(tmp_path / "x", "list", "--config", str(other))).stdout
    # --progress after the verb: none shows no progress line, plain does.
    assert "pack code a:" not in packed.stderr
    plain = ok(kitfs(home, "pack", str(ctx), "-t", "g:2", "--config", str(other), "--progress",
                     "plain"))  # fmt: skip
    assert "pack code a: 100% (1/1 bytes)" in plain.stderr
    # -v after the verb: INFO logs (unpack notes a Kitfile it finds already there).
    ok(kitfs(other, "unpack", "g:1", "-d", str(tmp_path / "first")))
    quiet, loud = tmp_path / "quiet", tmp_path / "loud"
    for out in (quiet, loud):
        out.mkdir()
        shutil.copy(tmp_path / "first" / "Kitfile", out / "Kitfile")
    assert "found existing" not in ok(kitfs(other, "unpack", "g:1", "-d", str(quiet))).stderr
    verbose = ok(kitfs(other, "unpack", "g:1", "-d", str(loud), "-v"))
    assert f"INFO kitfs.unpack: found existing Kitfile at {loud / 'Kitfile'}" in verbose.stderr
    # --debug after the verb: a failure shows its traceback; without it, one line.
    assert kitfs(other, "inspect", "nope:1").stderr.splitlines() == [
        "kitfs: ModelKit nope:1 not found in local storage"
    ]
    debug = kitfs(other, "inspect", "nope:1", "--debug", "--config", str(other))
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ERROR kitfs: command failed" in debug.stderr


@needs_kit
def test_kit_v1_7_lists_unpacks_and_pushes_what_kitfs_packs(
    tmp_path: Path, registry: object
) -> None:
    home = tmp_path / "home"
    host = registry.host  # type: ignore[attr-defined]
    ref = f"{host}/kitfs-compat/m"
    ctx = two_versions(tmp_path, home, ref)
    listed = run_kit(home, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{ref}" in listed.stdout and " 1 " in listed.stdout
    out = tmp_path / "kit-out"
    unpacked = run_kit(home, "unpack", f"{ref}:2", "-d", str(out))
    assert unpacked.returncode == 0, unpacked.stderr
    for rel in ("model.bin", "run.sh", "data/train.csv", "docs/a.md"):
        assert (out / rel).read_bytes() == (ctx / rel).read_bytes()
    pushed = run_kit(home, "push", f"{ref}:2", "--plain-http")
    assert pushed.returncode == 0, pushed.stderr
    theirs = ok(cli(tmp_path / "fresh", "inspect", f"{ref}:2", "--remote", "--plain-http")).stdout
    assert theirs == ok(cli(home, "inspect", f"{ref}:2")).stdout


# -- upstream Kitfile generation cases (testing/testdata/kitfile-generation/*.yaml) -----------
# Each case: the files to create, then the Kitfile kit generates with --name/--desc. Paths of
# directory entries end in "/" as current kit writes them (unixWithTrailingSlash);
# test_prompt-handling.yaml's stored copy predates that and SKILL.md skills (a root SKILL.md now
# makes the whole directory one skill: TestGenerateKitfile_RootSkillMD), so its SKILL.md row is
# left out and its directories carry the slash.
GENERATION: dict[str, tuple[list[str], dict[str, Any]]] = {
    "test_type-detect.yaml": (
        ["a-model.gguf", "b-model.safetensors", "c-model.pkl", "d-model.pb", "a-dataset.tar",
         "b-dataset.csv", "c-dataset.zip", "a-docs.md", "b-docs.adoc", "c-docs.pdf", "README.md",
         "LICENSE", "test.sh", "bootstrap.sh", "main.sh", "common.sh", "utility.sh", "shared.sh"],
        {
            "model": {"path": "a-model.gguf", "parts": [{"path": "b-model.safetensors"}, {"path": "c-model.pkl"}, {"path": "d-model.pb"}]},
            "datasets": [{"path": "a-dataset.tar"}, {"path": "b-dataset.csv"}, {"path": "c-dataset.zip"}],
            "docs": [{"path": "LICENSE", "description": "License file"}, {"path": "README.md", "description": "Readme file"},
                     {"path": "a-docs.md"}, {"path": "b-docs.adoc"}, {"path": "c-docs.pdf"}],
            "code": [{"path": "."}],
        },
    ),
    "test_directory-handling.yaml": (
        ["src/test-file.sh", "pkg/test-file.sh", "lib/test-file.sh", "build/test-file.sh",
         "docs/documentation-file", "model-contents/my-model1.gguf", "model-contents/my-model2.gguf",
         "model-contents/z-metadata.json", "dataset-contents/dataset-001.zip",
         "dataset-contents/dataset-002.zip", "dataset-contents/dataset-003.zip",
         "dataset-contents/z-metadata.json", "my-files/doc1.md", "my-files/doc2.md", "my-files/new.pdf",
         "mixed-contents/documentation.md", "mixed-contents/dataset.csv", "mixed-contents/meta.json"],
        {
            "model": {"path": "model-contents/my-model1.gguf", "parts": [{"path": "model-contents/my-model2.gguf"}, {"path": "model-contents/z-metadata.json"}]},
            "datasets": [{"path": "dataset-contents/"}],
            "docs": [{"path": "docs/"}, {"path": "my-files/"}],
            "code": [{"path": "build/"}, {"path": "lib/"}, {"path": "mixed-contents/"}, {"path": "pkg/"}, {"path": "src/"}],
        },
    ),
    "test_prompt-handling.yaml": (
        ["AGENTS.md", "CLAUDE.md", "my.prompt.md", "test.prompt.pdf", "suffix.prompt",
         "prompts-dir/my.prompt.one", "prompts-dir/my.prompt.two", "mixed-prompts/my.prompt.mixed",
         "mixed-prompts/notes.md", "mixed-prompts/template.html", "prompt.md", "notes.md", "README.md"],
        {
            "prompts": [{"path": "AGENTS.md"}, {"path": "CLAUDE.md"}, {"path": "my.prompt.md"}, {"path": "suffix.prompt"},
                        {"path": "test.prompt.pdf"}, {"path": "prompts-dir/"}],
            "docs": [{"path": "README.md", "description": "Readme file"}, {"path": "notes.md"}, {"path": "prompt.md"}],
            "code": [{"path": "mixed-prompts/"}],
        },
    ),
    "test_mcp-server-detection.yaml": (
        ["filesystem.mcpb", "postgres.mcpb", "servers/extra.mcpb", "README.md"],
        {
            "docs": [{"path": "README.md", "description": "Readme file"}],
            "mcpServers": [{"name": "filesystem", "path": "filesystem.mcpb"}, {"name": "postgres", "path": "postgres.mcpb"},
                           {"name": "servers/extra", "path": "servers/extra.mcpb"}],
        },
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(GENERATION))
def test_upstream_kitfile_generation_case(tmp_path: Path, case: str) -> None:
    import yaml

    files, sections = GENERATION[case]
    ctx = make_tree(tmp_path / "ctx", {f: "test file contents\n" for f in files})
    ok(cli(tmp_path / "home", "init", str(ctx), "--name", case, "--desc", "upstream case"))
    generated = yaml.safe_load((ctx / "Kitfile").read_text())
    assert generated == {
        "manifestVersion": "1.0.0",
        "package": {"name": case, "description": "upstream case"},
        **sections,
    }


# -- upstream compare-manifest cases (testing/testdata/compare-manifest, TestCompareManifests) --


def _manifest(paths: list[str]) -> object:
    from kitfs.oci.manifest import Descriptor, Manifest

    code_raw = "application/vnd.kitops.modelkit.code.v1.raw"
    layers = [
        Descriptor("application/vnd.kitops.modelkit.model.v1.tar", "sha256:layer1", 123456789),
        Descriptor("application/vnd.kitops.modelkit.code.v1.tar", "sha256:layer2", 23456),
        *(Descriptor(code_raw, "sha256:layer4", 0, {"org.cncf.model.filepath": p}) for p in paths),
    ]
    config = Descriptor("application/vnd.kitops.modelkit.config.v1+json", "sha256:configA", 409)
    return Manifest(config, tuple(layers), {"ml.kitops.modelkit.cli-version": "0.2.5-29dbdc4"})


def _digests_and_paths(layers: list[object]) -> list[tuple[str, str]]:
    return sorted((d.digest, d.annotations.get("org.cncf.model.filepath", "")) for d in layers)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("case", "a", "b", "shared", "only_a", "only_b"),
    [
        (
            "duplicate-layer-moved.json (manifestF vs manifestG)",
            ["pkg_a/__init__.py", "pkg_b/__init__.py"],
            ["pkg_b/__init__.py", "pkg_c/__init__.py"],
            [("sha256:layer1", ""), ("sha256:layer2", ""), ("sha256:layer4", "pkg_b/__init__.py")],
            [("sha256:layer4", "pkg_a/__init__.py")],
            [("sha256:layer4", "pkg_c/__init__.py")],
        ),
        (
            "duplicate-layer-both.json (manifestF vs manifestF)",
            ["pkg_a/__init__.py", "pkg_b/__init__.py"],
            ["pkg_a/__init__.py", "pkg_b/__init__.py"],
            [("sha256:layer1", ""), ("sha256:layer2", ""), ("sha256:layer4", "pkg_a/__init__.py"), ("sha256:layer4", "pkg_b/__init__.py")],
            [],
            [],
        ),
    ],
)  # fmt: skip
def test_upstream_compare_manifest_case(
    case: str,
    a: list[str],
    b: list[str],
    shared: list[tuple[str, str]],
    only_a: list[tuple[str, str]],
    only_b: list[tuple[str, str]],
) -> None:
    from kitfs.diff import compare

    result = compare(_manifest(a), _manifest(b))  # type: ignore[arg-type]
    assert (result.same_config, result.annotations_match) == (True, True), case
    assert _digests_and_paths(result.shared) == shared  # type: ignore[arg-type]
    assert _digests_and_paths(result.only_a) == only_a  # type: ignore[arg-type]
    assert _digests_and_paths(result.only_b) == only_b  # type: ignore[arg-type]


def _verbs() -> dict[str, list[str]]:
    """Every verb with placeholder values for its required positional arguments."""
    from kitfs.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, verb in sub.choices.items():
        out[name] = _placeholders(verb)
    return out


def _placeholders(verb: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a parser's required arguments; a verb with subcommands (``cache``)
    gets its first subcommand and that one's."""
    nested = [a for a in verb._actions if isinstance(a, argparse._SubParsersAction)]
    if nested:
        first, parser = next(iter(nested[0].choices.items()))
        return [first, *_placeholders(parser)]
    args = [a for a in verb._actions if not a.option_strings and a.nargs is None]
    required = [a for a in verb._actions if a.option_strings and a.required]
    return ["x" for _ in args] + [v for a in required for v in (a.option_strings[0], "x")]


@pytest.mark.parametrize("verb", sorted(_verbs()))
def test_every_verb_takes_the_global_flags_after_it(verb: str) -> None:
    from kitfs.cli import build_parser

    positional = _verbs()[verb]
    args = build_parser().parse_args(
        [verb, *positional, "--config", "/h", "--progress", "none", "-v", "--debug"]
    )
    assert (args.config, args.progress, args.verbose, args.debug) == ("/h", "none", 1, True)
    before = build_parser().parse_args(["--config", "/h", "--progress", "plain", verb, *positional])
    assert (before.config, before.progress) == ("/h", "plain")  # the verb does not reset them
