"""Security defaults of the verbs: credentials files are private, TLS is verified unless the user
says otherwise, and no password or token reaches a log line or an error message (not even with
--debug). The mount's defaults (read-only, private unless allow_other) are in
test_faults_mount.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import KITFS
from registry import RegistryServer, free_port
from tokenserver import TokenServer

from kitfs.oci.client import RegistryOptions

from .helpers import make_kit, run_kitfs

PLAIN = "--plain-http"


def run_with_umask(
    home: Path, umask: int, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    return subprocess.run(
        [KITFS, "--config", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        preexec_fn=lambda: os.umask(umask),  # noqa: PLW1509 (the point of the test)
    )


def test_credentials_file_is_private_whatever_the_umask(
    auth_registry: RegistryServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    result = run_with_umask(
        home,
        0,
        "login",
        auth_registry.host,
        "-u",
        "alice",
        "--password-stdin",
        PLAIN,
        stdin="s3cret\n",
    )
    assert result.returncode == 0, result.stderr
    credentials = home / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) & 0o077 == 0  # the home it created is private too


def test_rewriting_a_readable_credentials_file_makes_it_private(
    auth_registry: RegistryServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    credentials = home / "credentials.json"
    credentials.write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}}}))
    credentials.chmod(0o644)
    result = run_with_umask(
        home, 0o022, "login", auth_registry.host, "-u", "alice", "-p", "s3cret", PLAIN
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert "other.example" in credentials.read_text()  # other logins are kept
    logout = run_with_umask(home, 0, "logout", auth_registry.host)
    assert logout.returncode == 0
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def test_tls_is_verified_by_default(
    tls_registry: RegistryServer, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    assert RegistryOptions().tls_verify and not RegistryOptions().plain_http
    home = tmp_path / "home"
    ref = f"{tls_registry.host}/{repo_name}:v1"
    for args in (
        ("pull", ref),
        ("info", "--remote", ref),
        ("unpack", ref, "-d", str(tmp_path / "o")),
    ):
        result = run_kitfs(home, *args)
        assert result.returncode == 1
        assert "TLS certificate verification failed (use --tls-verify=false or --ca-file)" in (
            result.stderr
        ), result.stderr
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []
    assert not (home / "credentials.json").exists()


# -- secrets in output ------------------------------------------------------------------------


def assert_clean(output: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in output, f"a secret ({secret[:6]}...) appears in the output"


def basic_secrets(user: str, password: str) -> list[str]:
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def test_basic_auth_secrets_never_appear_with_debug(
    auth_registry: RegistryServer, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    host = auth_registry.host
    home = tmp_path / "home"
    wrong = "wr0ng-Pa55word"
    secrets = basic_secrets("alice", "s3cret") + basic_secrets("alice", wrong)
    outputs = []

    def kitfs(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        result = run_with_umask(home, 0o077, "--debug", *args, stdin=stdin)
        outputs.append(result.stdout + result.stderr)
        return result

    assert kitfs("login", host, "-u", "alice", "-p", wrong, PLAIN).returncode != 0
    assert (
        kitfs("login", host, "-u", "alice", "--password-stdin", PLAIN, stdin="s3cret").returncode
        == 0
    )
    kit = make_kit(home, tmp_path / "ctx", registry.host, repo_name)
    ref = f"{host}/{repo_name}:v1"
    assert kitfs("push", kit.ref(), ref, PLAIN).returncode == 0
    assert kitfs("pull", ref, PLAIN).returncode == 0
    assert kitfs("unpack", ref, "-d", str(tmp_path / "out"), PLAIN).returncode == 0
    assert kitfs("info", "--remote", ref, PLAIN).returncode == 0
    assert kitfs("pull", f"{host}/{repo_name}:missing", PLAIN).returncode == 1
    # A stored password that the registry refuses: the error names the registry, not the secret.
    stale = base64.b64encode(f"alice:{wrong}".encode()).decode()
    (home / "credentials.json").write_text(json.dumps({"auths": {host: {"auth": stale}}}))
    refused = kitfs("pull", ref, PLAIN)
    assert refused.returncode == 1 and "refused the credentials" in refused.stderr
    # Credentials in a proxy URL stay out of connection errors.
    proxy = f"http://alice:{wrong}@127.0.0.1:{free_port()}"
    assert kitfs("pull", ref, PLAIN, "--proxy", proxy).returncode == 1
    assert any("DEBUG" in output for output in outputs)  # debug logging was really on
    for output in outputs:
        assert_clean(output, secrets)


@pytest.fixture
def issued_tokens(token_registry: RegistryServer) -> Iterator[list[str]]:
    """Every token the token server hands out during the test."""
    server: TokenServer = token_registry.extra["token_server"]
    issued: list[str] = []
    original = server.issue

    def issue(user: str | None, scopes: list[str]) -> str:
        token = original(user, scopes)
        issued.append(token)
        return token

    server.issue = issue  # type: ignore[method-assign]
    try:
        yield issued
    finally:
        server.issue = original  # type: ignore[method-assign]


def test_bearer_tokens_never_appear_with_debug(
    token_registry: RegistryServer,
    registry: RegistryServer,
    issued_tokens: list[str],
    repo_name: str,
    tmp_path: Path,
) -> None:
    host = token_registry.host
    home = tmp_path / "home"
    outputs = []

    def kitfs(*args: str) -> subprocess.CompletedProcess[str]:
        result = run_kitfs(home, "--debug", *args)
        outputs.append(result.stdout + result.stderr)
        return result

    assert kitfs("login", host, "-u", "alice", "-p", "s3cret", PLAIN).returncode == 0
    kit = make_kit(home, tmp_path / "ctx", registry.host, repo_name)
    ref = f"{host}/{repo_name}:v1"
    assert kitfs("push", kit.ref(), ref, PLAIN).returncode == 0
    assert kitfs("pull", ref, PLAIN).returncode == 0
    assert kitfs("info", "--remote", ref, PLAIN).returncode == 0
    assert kitfs("login", host, "-u", "alice", "-p", "n0t-it", PLAIN).returncode == 1
    assert issued_tokens, "the token server issued no token: the test checks nothing"
    secrets = basic_secrets("alice", "s3cret") + basic_secrets("alice", "n0t-it")
    secrets += issued_tokens + [token.rsplit(".", 1)[1] for token in issued_tokens]
    for output in outputs:
        assert_clean(output, secrets)
