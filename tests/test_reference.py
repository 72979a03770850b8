"""References parse as kit's ParseReference does (pkg/lib/repo/util/reference.go)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import fails, kitfs

from kitfs.errors import InvalidReferenceError
from kitfs.kitfile import is_modelkit_reference
from kitfs.reference import Reference, is_digest, is_valid_tag, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "extra"),
    [
        ("repo", "localhost", "repo", None, None, ()),
        ("repo:v1", "localhost", "repo", "v1", None, ()),
        ("org/repo:tag", "localhost", "org/repo", "tag", None, ()),
        ("org/sub/repo", "localhost", "org/sub/repo", None, None, ()),
        ("reg.io:5000/org/repo:tag", "reg.io:5000", "org/repo", "tag", None, ()),
        ("reg.io/repo", "reg.io", "repo", None, None, ()),
        ("localhost:5000/repo:1.0", "localhost:5000", "repo", "1.0", None, ()),
        ("127.0.0.1:5000/a/b:x", "127.0.0.1:5000", "a/b", "x", None, ()),
        ("[::1]:5000/repo:v", "[::1]:5000", "repo", "v", None, ()),
        # kit: a first component without '.' or ':' is part of the repository, even "localhost".
        ("localhost/foo:v1", "localhost", "localhost/foo", "v1", None, ()),
        (f"repo@{DIGEST}", "localhost", "repo", None, DIGEST, ()),
        (f"reg.io/org/repo@{DIGEST}", "reg.io", "org/repo", None, DIGEST, ()),
        ("repo:a,b,c", "localhost", "repo", "a", None, ("b", "c")),
        ("my-repo_1.x:V_1.0-rc", "localhost", "my-repo_1.x", "V_1.0-rc", None, ()),
    ],
)
def test_parse_forms(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    extra: tuple[str, ...],
) -> None:
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.extra_tags) == (
        registry,
        repository,
        tag,
        digest,
        extra,
    )
    assert ref.name == f"{registry}/{repository}"


def test_bare_digest_is_the_default_local_repository() -> None:
    ref = parse(DIGEST)
    assert ref == Reference("localhost", "_", None, DIGEST)
    assert ref.is_local
    assert ref.reference == DIGEST
    assert str(ref) == f"localhost/_@{DIGEST}"


def test_digest_wins_over_tag_when_both_are_given() -> None:
    ref = parse(f"repo:v1@{DIGEST}")
    assert (ref.tag, ref.digest, ref.reference) == ("v1", DIGEST, DIGEST)


def test_default_tag_only_fills_a_missing_reference() -> None:
    assert parse("repo", default_tag="latest").tag == "latest"
    assert parse("repo:v2", default_tag="latest").tag == "v2"
    assert parse(f"repo@{DIGEST}", default_tag="latest").tag is None
    assert parse("repo").reference is None


def test_string_forms() -> None:
    assert str(parse("org/repo:v1")) == "localhost/org/repo:v1"
    assert str(parse("reg.io:5000/repo")) == "reg.io:5000/repo"
    assert str(parse(f"reg.io/repo@{DIGEST}")) == f"reg.io/repo@{DIGEST}"
    assert parse("reg.io/repo:v").with_tag("w") == Reference("reg.io", "repo", "w")
    assert not parse("reg.io/repo").is_local


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Repo:v1", "invalid reference 'Repo:v1': repository (Repo) name must be lowercase"),
        (
            "reg.io/Org/repo",
            "invalid reference 'reg.io/Org/repo': repository (Org/repo) name must be lowercase",
        ),
        ("", "empty reference"),
        ("repo:", "invalid tag '' in reference 'repo:'"),
        ("repo:bad tag", "invalid tag 'bad tag' in reference 'repo:bad tag'"),
        ("repo:.v1", "invalid tag '.v1' in reference 'repo:.v1'"),
        ("repo:" + "t" * 129, f"invalid tag '{'t' * 129}' in reference 'repo:{'t' * 129}'"),
        ("repo:v1,bad tag", "invalid tag 'bad tag' in reference 'repo:v1,bad tag'"),
        ("repo@sha256:abc", "invalid digest 'sha256:abc' in reference 'repo@sha256:abc'"),
        ("reg.io/", "missing repository in reference 'reg.io/'"),
        (
            "-repo",
            "invalid repository '-repo' in reference '-repo': use lowercase letters, digits and "
            "separators (. _ -), starting and ending with a letter or digit",
        ),
        (
            "repo-:v1",
            "invalid repository 'repo-' in reference 'repo-:v1': use lowercase letters, digits and "
            "separators (. _ -), starting and ending with a letter or digit",
        ),
        (
            "a//b",
            "invalid repository 'a//b' in reference 'a//b': use lowercase letters, digits and "
            "separators (. _ -), starting and ending with a letter or digit",
        ),
        (
            "bad_host.io:x/repo",
            "invalid registry 'bad_host.io:x' in reference 'bad_host.io:x/repo'",
        ),
    ],
)
def test_invalid_references_are_refused_with_a_message(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as caught:
        parse(text)
    assert str(caught.value) == message


def test_tag_and_digest_syntax() -> None:
    assert is_valid_tag("a" * 128)
    assert not is_valid_tag("a" * 129)
    assert is_valid_tag("_x")
    assert not is_valid_tag("-x")
    assert is_digest(DIGEST)
    assert not is_digest(DIGEST.upper())
    assert not is_digest("sha256:" + "a" * 63)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("model:v1", True),
        ("org/model:v1", True),
        (f"reg.io/x@{DIGEST}", True),
        ("models/weights", False),
        ("./model.bin", False),
        ("Model:v1", False),
    ],
)
def test_model_path_may_name_another_modelkit(path: str, expected: bool) -> None:
    assert is_modelkit_reference(path) is expected


def test_cli_prints_the_reference_error_without_traceback(tmp_path: Path) -> None:
    line = fails(kitfs(tmp_path / "home", "info", "Repo:v1"))
    assert line == "kitfs: invalid reference 'Repo:v1': repository (Repo) name must be lowercase"
