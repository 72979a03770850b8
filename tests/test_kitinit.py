"""Skills in ``kitfs init``: kit's pkg/lib/kitfile/generate/skill_test.go, case by case."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import cli, make_tree, ok

from kitfs.kitinit import skill_frontmatter


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("valid frontmatter", "---\nname: pdf-tools\ndescription: PDF processing\nlicense: Apache-2.0\n---\n# Skill body",
         {"name": "pdf-tools", "description": "PDF processing", "license": "Apache-2.0"}),
        ("partial frontmatter - name only", "---\nname: my-skill\n---\n# Body", {"name": "my-skill"}),
        ("no frontmatter", "# Just a markdown file\nNo frontmatter here.", None),
        ("empty frontmatter", "---\n---\n# Body", None),
        ("malformed YAML", "---\nname: [invalid yaml\n---\n# Body", None),
        ("no closing delimiter", "---\nname: test\n# No closing delimiter", None),
        ("triple dashes in YAML value", "---\nname: my-skill\ndescription: Use --- to separate sections\n---\n# Body",
         {"name": "my-skill", "description": "Use --- to separate sections"}),
        ("CRLF line endings", "---\r\nname: crlf-skill\r\ndescription: Windows style\r\n---\r\n# Body",
         {"name": "crlf-skill", "description": "Windows style"}),
        ("dashes in value prefix not treated as delimiter", "---\nname: test\nother: ---value\n---\n# Body", {"name": "test"}),
    ],
)  # fmt: skip
def test_parse_skill_frontmatter(
    tmp_path: Path, name: str, content: str, expected: dict[str, str] | None
) -> None:
    """TestParseSkillFrontmatter."""
    path = tmp_path / "SKILL.md"
    path.write_bytes(content.encode())
    assert skill_frontmatter(path) == expected, name


def generated(tmp_path: Path, files: dict[str, str], *flags: str) -> dict[str, object]:
    ctx = tmp_path / "ctx"
    make_tree(ctx, files)
    ok(cli(tmp_path / "home", "init", str(ctx), *flags))
    return yaml.safe_load((ctx / "Kitfile").read_text())  # type: ignore[no-any-return]


def test_root_skill_md(tmp_path: Path) -> None:
    """TestGenerateKitfile_RootSkillMD: the whole directory is one prompt, nothing else."""
    kitfile = generated(
        tmp_path,
        {
            "SKILL.md": "---\nname: root-skill\ndescription: Root level skill\nlicense: MIT\n---\n# Body",
            "scripts/run.py": "print('hi')",
        },
    )
    assert kitfile == {
        "manifestVersion": "1.0.0",
        "package": {"name": "root-skill", "description": "Root level skill", "license": "MIT"},
        "prompts": [{"name": "root-skill", "path": ".", "description": "Root level skill"}],
    }


def test_subdir_skill_md(tmp_path: Path) -> None:
    """TestGenerateKitfile_SubdirSkillMD."""
    kitfile = generated(
        tmp_path,
        {
            "pdf-tools/SKILL.md": "---\nname: pdf-tools\ndescription: PDF processing\nlicense: Apache-2.0\n---\n# Body",
            "pdf-tools/scripts/run.py": "",
        },
    )
    assert kitfile["prompts"] == [
        {"name": "pdf-tools", "path": "pdf-tools", "description": "PDF processing"}
    ]
    assert kitfile["package"] == {
        "name": "pdf-tools",
        "description": "PDF processing",
        "license": "Apache-2.0",
    }


def test_user_overrides_frontmatter(tmp_path: Path) -> None:
    """TestGenerateKitfile_UserOverridesFrontmatter: --name/--desc win, the license comes along."""
    kitfile = generated(
        tmp_path,
        {"SKILL.md": "---\nname: skill-name\ndescription: skill desc\nlicense: MIT\n---\n# Body"},
        "--name",
        "user-name",
        "--desc",
        "user desc",
    )
    assert kitfile["package"] == {"name": "user-name", "description": "user desc", "license": "MIT"}


def test_multi_skill(tmp_path: Path) -> None:
    """TestGenerateKitfile_MultiSkill: two skills name no package; the first one's license does."""
    files = {
        f"{n}/SKILL.md": f"---\nname: {n}\ndescription: {d}\nlicense: Apache-2.0\n---\n# Body"
        for n, d in (("docx", "Word processing"), ("xlsx", "Spreadsheet processing"))
    }
    kitfile = generated(tmp_path, files)
    assert [p["name"] for p in kitfile["prompts"]] == ["docx", "xlsx"]  # type: ignore[attr-defined,index]
    assert kitfile["package"] == {"license": "Apache-2.0"}


def test_multi_skill_mixed_dirs(tmp_path: Path) -> None:
    """TestGenerateKitfile_MultiSkillMixedDirs: with other content, the skill names no package."""
    kitfile = generated(
        tmp_path,
        {"my-skill/SKILL.md": "---\nname: my-skill\n---\n# Body", "docs/guide.md": "# Guide"},
    )
    assert kitfile["prompts"] == [{"name": "my-skill", "path": "my-skill"}]
    assert kitfile["docs"] == [{"path": "docs/"}]
    assert "package" not in kitfile


def test_root_skill_overrides_subdir(tmp_path: Path) -> None:
    """TestGenerateKitfile_RootSkillOverridesSubdir."""
    kitfile = generated(
        tmp_path,
        {"SKILL.md": "---\nname: root\n---\n# Root", "sub/SKILL.md": "---\nname: sub\n---\n# Sub"},
    )
    assert kitfile["prompts"] == [{"name": "root", "path": "."}]
