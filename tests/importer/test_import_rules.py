"""kit's rules for ``kit import``, case by case: the repository argument (pkg/cmd/kitimport
util_test.go TestExtractRepoFromURL, cmd.go getImporter) and Kitfile generation from a Hub listing
(kit's testing/testdata/kitfile-generation cases, listed through tests/hfhub.py, the loopback
stand-in for the Hub, since huggingface.co cannot be reached from the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hfhub import Hub, Repo, serve_hub
from test_verbs import GENERATION

from kitfs.hub.errors import HubError
from kitfs.hub.hfapi import hub_config
from kitfs.hub.hfimport import HubImport, list_files
from kitfs.hub.source import default_tag, detect_tool, extract_repo, git_url
from kitfs.kitinit import generate, list_directory
from kitfs.pack import resolve_target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("organization/repository", "organization/repository"),
        ("https://example.com/org/repo", "org/repo"),
        ("https://huggingface.co/org/repo", "org/repo"),
        ("https://github.com/org/repo", "org/repo"),
        ("organization/repository.with-dots.and_CAPS", "organization/repository.with-dots.and_CAPS"),
        ("https://huggingface.co/org/trailing-slash/", "org/trailing-slash"),
        ("https://github.com/org/repo.git", "org/repo.git"),
        (":///invalidURL", "failed to parse url"),
        ("too/many/path/segments", "could not extract organization and repository from"),
        ("https://github.com/kitops-ml/github.com/kitops-ml/kitops/tree/main", "could not extract organization and repository from"),
    ],
)  # fmt: skip
def test_extract_repo_from_url(raw: str, expected: str) -> None:
    """TestExtractRepoFromURL."""
    if "/" in expected and " " not in expected:
        assert extract_repo(raw) == expected
    else:
        with pytest.raises(HubError, match=expected):
            extract_repo(raw)


def test_default_tag_is_lower_case_latest() -> None:
    assert (
        default_tag("https://huggingface.co/HuggingFaceTB/SmolLM-135M")
        == "huggingfacetb/smollm-135m:latest"
    )
    assert resolve_target(default_tag("Org/Repo")).tag == "latest"


@pytest.mark.parametrize(
    ("raw", "tool"),
    [
        ("org/repo", "hf"),  # no host: kit asks the Hub
        ("https://huggingface.co/org/repo", "hf"),
        ("https://hf.mirror.example/org/repo", "hf"),  # the HF_ENDPOINT host (kitfs)
        ("https://github.com/org/repo", "git"),
        ("file:///srv/git/org/repo.git", "git"),  # kit would ask the Hub (no host)
        ("git@github.com:org/repo.git", "git"),  # kit cannot parse it
    ],
)
def test_tool_detection(raw: str, tool: str) -> None:
    assert detect_tool(raw, "hf.mirror.example") == tool


def test_git_url_puts_bare_names_on_the_hub() -> None:
    assert git_url("org/repo", "https://huggingface.co") == "https://huggingface.co/org/repo"
    for url in ("file:///srv/r.git", "git@host:org/r.git", "/srv/r.git", "https://x/org/r"):
        assert git_url(url, "https://huggingface.co") == url


@pytest.mark.parametrize("case", sorted(GENERATION))
def test_generated_kitfile_from_a_hub_listing_matches_kits_case(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream generation cases, listed by the Hub instead of read from a directory: the same
    Kitfile as ``kitfs init`` of the same files (tests/test_verbs.py checks that one)."""
    files, sections = GENERATION[case]
    contents = {f: b"test file contents\n" for f in files}
    hub = Hub(repos={"org/case": Repo({"main": contents})})
    with serve_hub(hub):
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        job = HubImport("org/case", "main", hub_config(None), 1, resolve_target("x:1"))
        listing = list_files(job)
    package = {"name": case, "description": "upstream case"}
    assert yaml.safe_load(generate(listing.tree, dict(package)).to_yaml()) == {
        "manifestVersion": "1.0.0",
        "package": package,
        **sections,
    }
    for rel, data in contents.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    from_dir = generate(list_directory(tmp_path), dict(package))
    assert generate(listing.tree, dict(package)).to_yaml() == from_dir.to_yaml()


def test_git_gets_the_hub_token_only_for_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    from kitfs.hub.importer import git_token

    monkeypatch.setenv("HF_ENDPOINT", "https://hf.mirror.example")
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    config = hub_config(None)
    assert git_token("https://hf.mirror.example/org/repo", config) == "hf_env"
    assert git_token("https://github.com/org/repo", config) is None
    assert git_token("file:///srv/repo.git", config) is None
    assert git_token("https://github.com/org/repo", hub_config("t")) == "t"  # --token: kit's rule
