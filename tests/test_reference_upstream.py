"""kit's TestParseReference (pkg/lib/repo/util/reference_test.go), case by case."""

from __future__ import annotations

import pytest

from kitfs.errors import KitfsError
from kitfs.reference import parse

D = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
CASES = [
    ("testregistry.io/test-organization/test-repository:test-tag", "testregistry.io", "test-organization/test-repository", "test-tag", ()),
    ("testregistry.io/test-organization/test-repository:test-tag,extraTag1,extraTag2", "testregistry.io", "test-organization/test-repository", "test-tag", ("extraTag1", "extraTag2")),
    ("test-repository:test-tag,extraTag1,extraTag2", "localhost", "test-repository", "test-tag", ("extraTag1", "extraTag2")),
    ("localhost:5000/test-organization/test-repository:test-tag,extraTag1,extraTag2", "localhost:5000", "test-organization/test-repository", "test-tag", ("extraTag1", "extraTag2")),
    (D, "localhost", "_", D, ()),
    ("test-organization/test-repository:test-tag,extraTag1,extraTag2", "localhost", "test-organization/test-repository", "test-tag", ("extraTag1", "extraTag2")),
    ("a/b/c/d", "localhost", "a/b/c/d", "latest", ()),
    ("test.io/a/b/c/d", "test.io", "a/b/c/d", "latest", ()),
    (f"testrepo@{D}", "localhost", "testrepo", D, ()),
    (f"testrepo:ignoredtag@{D}", "localhost", "testrepo", D, ()),
    (f"testorg/testrepo@{D}", "localhost", "testorg/testrepo", D, ()),
    (f"testorg.com/testrepo@{D}", "testorg.com", "testrepo", D, ()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "registry", "repository", "reference", "extra"), CASES, ids=[c[0] for c in CASES]
)
def test_parse_reference(
    text: str, registry: str, repository: str, reference: str, extra: tuple[str, ...]
) -> None:
    ref = parse(text, default_tag="latest")
    assert (ref.registry, ref.repository, ref.reference, tuple(ref.extra_tags)) == (
        registry,
        repository,
        reference,
        extra,
    )


def test_parse_reference_refuses_empty() -> None:
    with pytest.raises(KitfsError):
        parse("")
