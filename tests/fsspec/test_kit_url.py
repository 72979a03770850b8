"""How a kit:// URL splits into a reference and a path inside the ModelKit (kitfs.fsspec.url)."""

from __future__ import annotations

import pytest

from kitfs.errors import UsageError
from kitfs.fsspec.url import KitPath, split_url, strip_protocol

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("url", "reference", "path"),
    [
        (
            "kit://ghcr.io/acme/film:v1/datasets/train.csv",
            "ghcr.io/acme/film:v1",
            "datasets/train.csv",
        ),
        ("kit://127.0.0.1:5000/a/b/c:v1/model", "127.0.0.1:5000/a/b/c:v1", "model"),
        ("kit://localhost:5000/film:latest", "localhost:5000/film:latest", ""),
        ("kit://registry.local/film:v1/", "registry.local/film:v1", ""),
        (f"kit://ghcr.io/acme/film@{DIGEST}/Kitfile", f"ghcr.io/acme/film@{DIGEST}", "Kitfile"),
        ("kit://acme/film:v1/docs/a:b.md", "acme/film:v1", "docs/a:b.md"),  # local storage
        ("kit://film:v1/datasets//x.csv", "film:v1", "datasets/x.csv"),
        ("ghcr.io/acme/film:v1/code", "ghcr.io/acme/film:v1", "code"),  # fsspec's stripped form
        (f"kit://{DIGEST}/Kitfile", DIGEST, "Kitfile"),  # a bare digest: local storage
    ],
)
def test_the_reference_ends_at_the_first_tag_or_digest(url: str, reference: str, path: str) -> None:
    assert split_url(url) == KitPath(reference, path)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kit://ghcr.io/acme/film/datasets/train.csv", "names no tag or digest"),
        ("kit://", "names no ModelKit"),
        ("kit://ghcr.io/Acme/film:v1/x", "must be lowercase"),
        ("kit://ghcr.io/acme/film:v1,v2/x", "names one tag"),
        ("kit://ghcr.io/acme/film@sha256:12/x", "invalid digest"),
    ],
)
def test_urls_without_a_reference_are_refused(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        split_url(url)


def test_strip_protocol_keeps_the_reference_and_path() -> None:
    assert strip_protocol("kit://ghcr.io/a:v1/b/") == "ghcr.io/a:v1/b"
    assert KitPath("ghcr.io/a:v1", "b").join("c") == "ghcr.io/a:v1/b/c"
    assert KitPath("ghcr.io/a:v1", "").join("") == "ghcr.io/a:v1"
