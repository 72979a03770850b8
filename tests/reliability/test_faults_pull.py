"""Registry faults during ``pull`` and ``unpack`` (from a registry), through the fault proxy.

For every fault: what is transient is retried (a bounded number of times, honouring Retry-After up to
a cap), what is not gives one clear error, nothing unverified is stored or written, and the same
command succeeds once the fault clears, without any cleanup in between.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from faultproxy import (
    Fault,
    FaultProxy,
    Response,
    always,
    flip,
    for_digest,
    invalid_json,
    manifest_get,
    media_type,
    once,
    other_blob,
    refuse,
    reset_midway,
    stall,
    status,
    truncate,
)
from registry import RegistryServer

from kitfs.errors import (
    DigestMismatchError,
    KitfsError,
    NotFoundError,
    RegistryError,
    TransientError,
)
from kitfs.oci.client import RegistryOptions
from kitfs.oci.manifest import ManifestError
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

from .helpers import (
    FAST,
    Kit,
    assert_blobs_verified,
    do_pull,
    do_unpack,
    files_in,
    fresh_home,
    make_kit,
    storage_state,
)

VERBS = ("pull", "unpack")


@pytest.fixture(scope="module")
def kit(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("kit")
    return make_kit(base / "home", base / "ctx", registry.host, "reliability/faults")


def run_verb(verb: str, home: Path, ref: str, out: Path, options: RegistryOptions = FAST) -> None:
    if verb == "pull":
        do_pull(home, ref, options)
    else:
        do_unpack(home, ref, out, options)


def check_success(verb: str, kit: Kit, home: Path, out: Path, host: str) -> None:
    """The verb's result holds exactly the ModelKit's bytes."""
    if verb == "pull":
        assert_blobs_verified(home / "storage")
        for layer in kit.layers():
            assert (home / "storage" / "blobs" / "sha256" / layer.hex).is_file()
        _, desc = LocalStore(home / "storage").resolve(parse(kit.ref(host)))
        assert desc.digest == kit.digest
    else:
        got = files_in(out)
        for rel, data in kit.files.items():
            assert got[rel] == data, rel


def check_nothing_kept(
    verb: str, home: Path, out: Path, before: dict[str, bytes], refused: str | None = None
) -> None:
    """After a failure: local storage gained no ModelKit and no unverified blob; an unpack target
    holds nothing; scratch space holds at most the partial downloads a later pull resumes (of
    other blobs, cut short when this one failed), never the refused blob's."""
    assert_blobs_verified(home / "storage")
    if verb == "pull":
        after = storage_state(home)
        gained = {k for k in after if not k.startswith("blobs/")} ^ {
            k for k in before if not k.startswith("blobs/")
        }
        changed = {k for k in after if not k.startswith("blobs/") and after[k] != before.get(k)}
        assert not gained and not changed, f"storage changed: {gained | changed}"
    else:
        assert files_in(out) == {}
    leftovers = [p for p in (home / "cache").rglob("*") if p.is_file()]
    resumable = [
        p
        for p in leftovers
        if verb == "pull"
        and p.parent == home / "cache" / "pull" / "partial"
        and re.fullmatch(r"\.[0-9a-f]{64}\.partial", p.name)
    ]
    assert [p for p in leftovers if p not in resumable] == [], leftovers
    if refused is not None:
        assert f".{refused.split(':')[1]}.partial" not in {p.name for p in resumable}


def layer_get(kit: Kit) -> Callable[..., bool]:
    return for_digest(kit.biggest_layer().digest)


# -- transient faults: retried, then the command succeeds --------------------------------------

TRANSIENT = {
    "refused": refuse(),
    "reset-midway": reset_midway(300_000),
    "cut-midway": Fault(cut_after=300_000),
    "stall-past-timeout": stall(30, after=200_000),
    "http-500": status(500),
    "http-502": status(502),
    "http-503": status(503),
    "http-429": status(429),
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_layer_fault_is_retried(
    verb: str, name: str, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault_proxy.add_rule(once(layer_get(kit), TRANSIENT[name], times=2))
    options = replace(FAST, timeout=2.0)
    started = time.monotonic()
    run_verb(verb, tmp_path / "home", kit.ref(fault_proxy.host), tmp_path / "out", options)
    assert time.monotonic() - started < 12  # a stall costs one client timeout, not 30 s
    check_success(verb, kit, tmp_path / "home", tmp_path / "out", fault_proxy.host)
    gets = fault_proxy.matching("GET", kit.biggest_layer().digest)
    assert len(gets) == 3  # two faults, then the answer that worked
    if name in ("reset-midway", "cut-midway", "stall-past-timeout"):
        assert gets[1].headers.get("range", "").startswith("bytes=")  # resumed, not restarted


@pytest.mark.parametrize("verb", VERBS)
def test_transient_manifest_fault_is_retried(
    verb: str, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault_proxy.add_rule(once(manifest_get, status(502), times=1))
    fault_proxy.add_rule(once(manifest_get, refuse(), times=1))
    run_verb(verb, tmp_path / "home", kit.ref(fault_proxy.host), tmp_path / "out")
    check_success(verb, kit, tmp_path / "home", tmp_path / "out", fault_proxy.host)
    # Both faults fired: a 502, a refused connection, then the answer that worked.
    assert len(fault_proxy.matching("GET", "/manifests/")) >= 3


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(
    code: int, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault_proxy.add_rule(once(layer_get(kit), status(code, retry_after="1"), times=2))
    started = time.monotonic()
    do_pull(
        tmp_path / "home", kit.ref(fault_proxy.host), RegistryOptions(plain_http=True, backoff=0.01)
    )
    waited = time.monotonic() - started
    assert 2.0 <= waited < 10, waited  # two answers asked for 1 s each; our own backoff is 0.01 s
    gets = fault_proxy.matching("GET", kit.biggest_layer().digest)
    assert gets[2].index > gets[1].index > gets[0].index


def test_retry_after_is_capped(kit: Kit, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    """A registry asking to come back in an hour does not wedge the command: the wait is capped."""
    fault_proxy.add_rule(once(layer_get(kit), status(429, retry_after="3600"), times=1))
    options = RegistryOptions(plain_http=True, backoff=0.01, backoff_cap=1.0)
    started = time.monotonic()
    do_pull(tmp_path / "home", kit.ref(fault_proxy.host), options)
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("verb", VERBS)
def test_persistent_5xx_gives_up_after_bounded_retries(
    verb: str, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    home, out = fresh_home(tmp_path), tmp_path / "out"
    before = storage_state(home)
    fault_proxy.add_rule(always(layer_get(kit), status(503, retry_after="0")))
    with pytest.raises(TransientError, match=r"HTTP 503 .*\(gave up after 4 attempts\)"):
        run_verb(verb, home, kit.ref(fault_proxy.host), out)
    assert len(fault_proxy.matching("GET", kit.biggest_layer().digest)) == FAST.retries
    check_nothing_kept(verb, home, out, before)
    fault_proxy.clear()
    run_verb(verb, home, kit.ref(fault_proxy.host), out)
    check_success(verb, kit, home, out, fault_proxy.host)


@pytest.mark.parametrize("verb", VERBS)
def test_unreachable_registry_is_a_clear_error(
    verb: str, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    home, out = fresh_home(tmp_path), tmp_path / "out"
    before = storage_state(home)
    fault_proxy.refuse_connections()
    with pytest.raises(TransientError) as caught:
        run_verb(verb, home, kit.ref(fault_proxy.host), out)
    assert str(caught.value) == f"registry {fault_proxy.host} is unreachable: connection refused"
    check_nothing_kept(verb, home, out, before)
    fault_proxy.refuse_connections(False)
    run_verb(verb, home, kit.ref(fault_proxy.host), out)
    check_success(verb, kit, home, out, fault_proxy.host)


def test_stall_on_every_attempt_gives_up(kit: Kit, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    """A registry that accepts and then never answers costs (retries x timeout), then an error."""
    fault_proxy.add_rule(always(layer_get(kit), stall(60)))
    options = RegistryOptions(plain_http=True, retries=2, backoff=0.01, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        do_pull(tmp_path / "home", kit.ref(fault_proxy.host), options)
    assert time.monotonic() - started < 10


# -- permanent faults: one clear error, nothing kept, and a retry after the fault clears works ----


def _permanent(kit: Kit) -> dict[str, tuple[Fault, type[KitfsError], str]]:
    layer = kit.biggest_layer()
    other = min(kit.layers(), key=lambda d: d.size)
    return {
        "flipped-byte": (flip(777_777), DigestMismatchError, "failed verification"),
        "truncated": (truncate(1000), DigestMismatchError, f"1000 bytes instead of {layer.size}"),
        "other-blob": (
            other_blob(kit.repository, other.digest),
            DigestMismatchError,
            f"expected {layer.digest}",
        ),
        "not-found": (status(404, body=b""), NotFoundError, f"blob {layer.digest} in"),
    }


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("name", ["flipped-byte", "truncated", "other-blob", "not-found"])
def test_bad_layer_bytes_are_refused_and_a_retry_succeeds(
    verb: str, name: str, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    home, out = fresh_home(tmp_path), tmp_path / "out"
    before = storage_state(home)
    fault, error, message = _permanent(kit)[name]
    fault_proxy.add_rule(always(layer_get(kit), fault))
    with pytest.raises(error, match=message):
        run_verb(verb, home, kit.ref(fault_proxy.host), out)
    check_nothing_kept(verb, home, out, before, refused=kit.biggest_layer().digest)
    assert not (home / "storage" / "blobs" / "sha256" / kit.biggest_layer().hex).exists()
    fault_proxy.clear()
    run_verb(verb, home, kit.ref(fault_proxy.host), out)
    check_success(verb, kit, home, out, fault_proxy.host)


MANIFEST_FAULTS = {
    "invalid-json": (invalid_json(), ManifestError, "is not valid JSON"),
    "html-page": (
        Fault(respond=Response(200, {"Content-Type": "text/html"}, b"<html>please log in</html>")),
        RegistryError,
        r"is not an OCI manifest \(media type text/html\)",
    ),
    "flipped-byte": (flip(40), DigestMismatchError, "failed verification"),
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("name", sorted(MANIFEST_FAULTS))
def test_bad_manifest_is_refused_and_a_retry_succeeds(
    verb: str, name: str, kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    home, out = fresh_home(tmp_path), tmp_path / "out"
    before = storage_state(home)
    fault, error, message = MANIFEST_FAULTS[name]
    fault_proxy.add_rule(always(manifest_get, fault))
    with pytest.raises(error, match=message):
        run_verb(verb, home, kit.ref(fault_proxy.host), out)
    check_nothing_kept(verb, home, out, before)
    assert fault_proxy.matching("GET", "/blobs/") == []  # nothing fetched on a bad manifest's word
    fault_proxy.clear()
    run_verb(verb, home, kit.ref(fault_proxy.host), out)
    check_success(verb, kit, home, out, fault_proxy.host)


def test_manifest_with_a_wrong_content_type_is_judged_by_its_body(
    kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Some registries label manifests text/plain: the body's own mediaType decides, and the
    digest check still holds it to the tag's Docker-Content-Digest."""
    fault_proxy.add_rule(always(manifest_get, media_type("text/plain")))
    assert do_pull(tmp_path / "home", kit.ref(fault_proxy.host)) == kit.digest


def test_manifest_that_is_an_index_is_refused(
    kit: Kit, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault_proxy.add_rule(
        always(manifest_get, media_type("application/vnd.oci.image.index.v1+json"))
    )
    with pytest.raises(ManifestError, match="image index, not a ModelKit"):
        do_pull(tmp_path / "home", kit.ref(fault_proxy.host))
