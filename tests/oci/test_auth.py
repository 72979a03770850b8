"""Credentials and the challenge flow against real registries: basic auth, TLS and bearer tokens."""

from __future__ import annotations

import base64
import json
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trustme
from registry import RegistryServer
from tokenserver import TokenServer

from kitfs.errors import AuthError, NotFoundError, RegistryError, UsageError
from kitfs.oci import media
from kitfs.oci.auth import CredentialSource, CredentialStore, StaticCredentials, parse_challenges
from kitfs.oci.client import RegistryClient, RegistryOptions
from kitfs.oci.manifest import Descriptor, sha256_digest

T = TypeVar("T")
CONFIG = b'{"manifestVersion":"1.0.0","package":{"name":"auth-test"}}'


def isolated_store(tmp_path: Path) -> CredentialStore:
    """A store that reads nothing of the real user's kit or docker configuration."""
    return CredentialStore(
        tmp_path / "kitops" / "credentials.json", docker_config=tmp_path / "no-docker.json"
    )


def run(
    host: str,
    body: Callable[[RegistryClient], Awaitable[T]],
    store: CredentialSource | None,
    options: RegistryOptions | None = None,
) -> T:
    async def main() -> T:
        opts = options or RegistryOptions(plain_http=True, retries=2, backoff=0.01)
        async with RegistryClient(host, opts, store) as client:
            return await body(client)

    return trio.run(main)


async def push_and_pull(client: RegistryClient, repo: str, tmp_path: Path) -> bytes:
    """Upload a blob and a manifest, then read the manifest back."""
    source = tmp_path / "config.json"
    source.write_bytes(CONFIG)
    config = Descriptor(media.KIT_CONFIG, sha256_digest(CONFIG), len(CONFIG))
    await client.upload_blob(repo, config, source)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": config.to_dict(),
            "layers": [],
        }
    ).encode()
    await client.put_manifest(repo, "v1", manifest, media.OCI_MANIFEST)
    assert await client.fetch_blob(repo, config.digest, config.size) == CONFIG
    body, _, _ = await client.get_manifest(repo, "v1")
    assert body == manifest
    return body


# --- the credential store ------------------------------------------------------------------------


def test_login_writes_a_private_file_and_logout_removes_the_entry(tmp_path: Path) -> None:
    store = isolated_store(tmp_path)
    store.login("127.0.0.1:5000", "alice", "s3cret")
    store.login("registry.example.com", "bob", "pa:ss")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    raw = json.loads(store.path.read_text())
    assert base64.b64decode(raw["auths"]["127.0.0.1:5000"]["auth"]) == b"alice:s3cret"
    assert store.get("127.0.0.1:5000") == ("alice", "s3cret")
    assert store.get("registry.example.com") == ("bob", "pa:ss")
    assert store.logout("127.0.0.1:5000") is True
    assert store.logout("127.0.0.1:5000") is False
    assert store.get("127.0.0.1:5000") is None
    assert store.get("registry.example.com") == ("bob", "pa:ss")
    assert [p.name for p in store.path.parent.iterdir()] == ["credentials.json"]


def test_docker_config_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker = tmp_path / "docker"
    docker.mkdir()
    entry = base64.b64encode(b"carol:from-docker").decode()
    (docker / "config.json").write_text(
        json.dumps(
            {"auths": {"https://10.0.0.1:5000": {"auth": entry}, "kit.example": {"auth": entry}}}
        )
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    store = CredentialStore(tmp_path / "kitops" / "credentials.json")
    assert store.get("10.0.0.1:5000") == ("carol", "from-docker")
    store.login("kit.example", "dave", "from-kit")
    assert store.get("kit.example") == ("dave", "from-kit")
    assert store.get("elsewhere.example") is None


def write_helper(bin_dir: Path, name: str, known: dict[str, tuple[str, str]]) -> Path:
    """A stand-in for a docker credential helper (mocking that external program is acceptable here:
    the protocol is stdin server URL in, JSON {"Username", "Secret"} out, as docker-credential-helpers do)."""
    log = bin_dir / f"{name}.log"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        f"""#!{sys.executable}
import json, sys
known = {json.dumps({k: list(v) for k, v in known.items()})}
server = sys.stdin.read().strip()
with open({str(log)!r}, "a") as log:
    log.write(sys.argv[1] + " " + server + "\\n")
if server not in known:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = known[server]
print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
"""
    )
    script.chmod(0o755)
    return log


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    one = write_helper(bin_dir, "kitfsone", {"10.0.0.1:5000": ("erin", "helper-secret")})
    write_helper(bin_dir, "kitfsstore", {"store.example": ("frank", "store-secret")})
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"credHelpers": {"10.0.0.1:5000": "kitfsone"}, "credsStore": "kitfsstore"})
    )
    store = CredentialStore(tmp_path / "credentials.json", docker_config=config)
    assert store.get("10.0.0.1:5000") == ("erin", "helper-secret")
    assert store.get("store.example") == ("frank", "store-secret")
    assert store.get("unknown.example") is None
    assert one.read_text() == "get 10.0.0.1:5000\n"


def test_missing_credential_helper_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "kitfs-absent"}))
    store = CredentialStore(tmp_path / "credentials.json", docker_config=config)
    with pytest.raises(
        AuthError, match="credential helper docker-credential-kitfs-absent is not installed"
    ):
        store.get("10.0.0.1:5000")


def test_parse_challenges() -> None:
    parsed = parse_challenges(
        [
            'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
            'Basic realm="say \\"hi\\", please", Bearer realm=https://x/t',
        ]
    )
    assert [(c.scheme, c.params) for c in parsed] == [
        (
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "registry.example",
                "scope": "repository:a/b:pull,push",
            },
        ),
        ("basic", {"realm": 'say "hi", please'}),
        ("bearer", {"realm": "https://x/t"}),
    ]


# --- basic auth ----------------------------------------------------------------------------------


def test_basic_auth_with_login(
    auth_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    store = isolated_store(tmp_path)
    store.login(auth_registry.host, auth_registry.username, auth_registry.password)
    run(auth_registry.host, lambda c: push_and_pull(c, repo_name, tmp_path), store)


def test_basic_auth_through_a_credential_helper(
    auth_registry: RegistryServer, repo_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_helper(
        bin_dir, "kitfstest", {auth_registry.host: (auth_registry.username, auth_registry.password)}
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    config = tmp_path / "docker-config.json"
    config.write_text(json.dumps({"credHelpers": {auth_registry.host: "kitfstest"}}))
    store = CredentialStore(tmp_path / "credentials.json", docker_config=config)
    run(auth_registry.host, lambda c: push_and_pull(c, repo_name, tmp_path), store)


def test_basic_auth_wrong_password(
    auth_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    store = isolated_store(tmp_path)
    store.login(auth_registry.host, auth_registry.username, "wrong")
    with pytest.raises(AuthError) as caught:
        run(auth_registry.host, lambda c: c.get_manifest(repo_name, "v1"), store)
    host = auth_registry.host
    assert (
        str(caught.value)
        == f"registry {host} refused the credentials for {repo_name}: run `kitfs login {host}`"
    )
    assert "wrong" not in str(caught.value)


def test_basic_auth_without_credentials(
    auth_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    with pytest.raises(AuthError) as caught:
        run(auth_registry.host, lambda c: c.list_tags(repo_name), isolated_store(tmp_path))
    host = auth_registry.host
    assert (
        str(caught.value)
        == f"registry {host} requires authentication for {repo_name}: run `kitfs login {host}`"
    )


@pytest.mark.parametrize("fixture", ["auth_registry", "token_registry"])
def test_ping_checks_credentials(fixture: str, request: pytest.FixtureRequest) -> None:
    server: RegistryServer = request.getfixturevalue(fixture)
    run(server.host, lambda c: c.ping(), StaticCredentials("alice", "s3cret"))
    with pytest.raises(AuthError) as caught:
        run(server.host, lambda c: c.ping(), StaticCredentials("alice", "nope"))
    assert (
        str(caught.value)
        == f"registry {server.host} refused the credentials: run `kitfs login {server.host}`"
    )


# --- TLS -----------------------------------------------------------------------------------------


def test_tls_is_verified_by_default(tls_registry: RegistryServer, repo_name: str) -> None:
    with pytest.raises(RegistryError) as caught:
        run(
            tls_registry.host,
            lambda c: c.head_manifest(repo_name, "v1"),
            None,
            RegistryOptions(retries=2, backoff=0.01),
        )
    assert str(caught.value) == (
        f"registry {tls_registry.host}: TLS certificate verification failed (use --tls-verify=false or --ca-file)"
    )


def test_tls_verify_false_connects(tls_registry: RegistryServer, repo_name: str) -> None:
    options = RegistryOptions(tls_verify=False)
    assert run(tls_registry.host, lambda c: c.head_manifest(repo_name, "v1"), None, options) is None


def test_ca_file_is_trusted(tls_registry: RegistryServer, repo_name: str, tmp_path: Path) -> None:
    options = RegistryOptions(ca_file=str(tls_registry.ca_pem))
    run(tls_registry.host, lambda c: push_and_pull(c, repo_name, tmp_path), None, options)


def test_plain_http_against_tls_registry_is_explained(
    tls_registry: RegistryServer, repo_name: str
) -> None:
    options = RegistryOptions(plain_http=True, retries=1)
    with pytest.raises(RegistryError) as caught:
        run(tls_registry.host, lambda c: c.get_manifest(repo_name, "v1"), None, options)
    assert str(caught.value) == f"registry {tls_registry.host} serves HTTPS: drop --plain-http"


def test_tls_against_plain_registry_is_explained(registry: RegistryServer, repo_name: str) -> None:
    with pytest.raises(RegistryError) as caught:
        run(
            registry.host,
            lambda c: c.get_manifest(repo_name, "v1"),
            None,
            RegistryOptions(retries=1),
        )
    assert str(caught.value) == f"registry {registry.host} does not speak TLS (use --plain-http)"


def test_client_certificate(
    registry_factory: Callable[..., RegistryServer],
    tls_ca: trustme.CA,
    repo_name: str,
    tmp_path: Path,
) -> None:
    server = registry_factory(tls_ca=tls_ca, client_certs=True)
    without = RegistryOptions(ca_file=str(server.ca_pem), retries=1)
    with pytest.raises(RegistryError) as caught:
        run(server.host, lambda c: c.head_manifest(repo_name, "v1"), None, without)
    assert (
        str(caught.value)
        == f"registry {server.host} requires a TLS client certificate (use --cert and --key)"
    )
    with_cert = RegistryOptions(ca_file=str(server.ca_pem), cert=str(server.extra["client_pem"]))
    run(server.host, lambda c: push_and_pull(c, repo_name, tmp_path), None, with_cert)


def test_missing_ca_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot load --ca-file .*absent.pem"):
        RegistryClient("127.0.0.1:1", RegistryOptions(ca_file=str(tmp_path / "absent.pem")))


# --- bearer tokens -------------------------------------------------------------------------------


def token_server(server: RegistryServer) -> TokenServer:
    tokens = server.extra["token_server"]
    assert isinstance(tokens, TokenServer)
    tokens.requests.clear()
    return tokens


def test_bearer_token_flow(token_registry: RegistryServer, repo_name: str, tmp_path: Path) -> None:
    tokens = token_server(token_registry)
    store = isolated_store(tmp_path)
    store.login(token_registry.host, "alice", "s3cret")
    run(token_registry.host, lambda c: push_and_pull(c, repo_name, tmp_path), store)
    assert all(
        r.user == "alice" and r.authorized and r.service == "test-registry" for r in tokens.requests
    )
    scopes = [set(r.scopes) for r in tokens.requests]
    assert {f"repository:{repo_name}:pull,push"} in scopes
    # Tokens are cached per scope: one for pull, one for push, however many requests ran.
    assert len(tokens.requests) == 2


def test_bearer_token_in_access_token_field(
    token_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    tokens = token_server(token_registry)
    store = isolated_store(tmp_path)
    store.login(token_registry.host, "alice", "s3cret")
    tokens.token_field = "access_token"
    try:
        assert run(token_registry.host, lambda c: c.head_manifest(repo_name, "v1"), store) is None
    finally:
        tokens.token_field = "token"


def test_bearer_anonymous_is_told_to_log_in(
    token_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    tokens = token_server(token_registry)
    with pytest.raises(AuthError) as caught:
        run(token_registry.host, lambda c: c.list_tags(repo_name), isolated_store(tmp_path))
    host = token_registry.host
    assert (
        str(caught.value)
        == f"registry {host} requires authentication for {repo_name}: run `kitfs login {host}`"
    )
    assert [r.user for r in tokens.requests] == [None]


def test_bearer_wrong_password(
    token_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    tokens = token_server(token_registry)
    store = isolated_store(tmp_path)
    store.login(token_registry.host, "alice", "wrong")
    with pytest.raises(AuthError) as caught:
        run(token_registry.host, lambda c: c.list_tags(repo_name), store)
    host = token_registry.host
    assert (
        str(caught.value)
        == f"registry {host} refused the credentials for {repo_name}: run `kitfs login {host}`"
    )
    assert [r.authorized for r in tokens.requests] == [False]


def test_bearer_with_credentials_reaches_missing_repository(
    token_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    store = isolated_store(tmp_path)
    store.login(token_registry.host, "alice", "s3cret")
    with pytest.raises(NotFoundError, match=f"repository {repo_name} not found"):
        run(token_registry.host, lambda c: c.list_tags(repo_name), store)
