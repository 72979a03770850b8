"""Security defaults of the verbs: credentials files are private, TLS is verified unless the user
says otherwise, and no password or token reaches a log line or an error message (not even with
--debug). The mount's defaults (read-only, private unless allow_other) are in
test_faults_mount.py.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import KITFS
from registry import RegistryServer
from tokenserver import TokenServer

from kitfs.oci.client import RegistryOptions

from .helpers import Kit, Mounts, is_mounted, make_kit, run_kitfs

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
    auth_registry: RegistryServer,
    registry: RegistryServer,
    repo_name: str,
    tmp_path: Path,
    unreachable_host: str,
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
    proxy = f"http://alice:{wrong}@{unreachable_host}"
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


# -- the mount ----------------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's own temporary directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kitfs-shared-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def kit(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("seckit")
    return make_kit(base / "home", base / "ctx", registry.host, "reliability/security")


def test_mount_is_read_only(kit: Kit, mounts: Mounts) -> None:
    mnt = mounts.mount(kit.ref())
    options = next(
        line for line in Path("/proc/self/mounts").read_text().splitlines() if f" {mnt} " in line
    )
    assert "ro" in options.split()[3].split(",")
    weights = mnt / "model" / "model" / "weights.bin"
    for action in (
        lambda: os.open(weights, os.O_WRONLY),
        lambda: os.open(weights, os.O_RDONLY | os.O_TRUNC),
        lambda: os.truncate(weights, 0),
        lambda: os.open(mnt / "model" / "new", os.O_WRONLY | os.O_CREAT),
        lambda: os.mkdir(mnt / "model" / "dir"),
        lambda: os.unlink(weights),
        lambda: os.rename(weights, mnt / "model" / "w2"),
        lambda: os.symlink("/etc/passwd", mnt / "model" / "link"),
        lambda: os.chmod(weights, 0o777),
        lambda: os.utime(weights, (0, 0)),
        lambda: os.setxattr(weights, "user.x", b"1"),
    ):
        with pytest.raises(OSError) as caught:
            action()
        assert caught.value.errno == errno.EROFS
    assert weights.read_bytes() == kit.files["model/weights.bin"]


def test_mount_is_private_unless_allow_other(kit: Kit, mounts: Mounts, shared_dir: Path) -> None:
    private = mounts.mount(kit.ref(), shared_dir / "private")
    shared = mounts.mount(kit.ref(), shared_dir / "shared", "-o", "allow_other")
    assert os.listdir(private) == os.listdir(shared)  # the owner sees both
    denied = as_nobody("ls", str(private))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    denied = as_nobody("cat", str(private / "Kitfile"))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    listed = as_nobody("ls", str(shared))
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == sorted(os.listdir(shared))
    read = as_nobody("cat", str(shared / "Kitfile"))
    assert read.returncode == 0 and read.stdout == (shared / "Kitfile").read_text()
    # allow_other shares the tree, not more: files keep their modes, and writes stay refused.
    write = as_nobody("touch", str(shared / "model" / "x"))
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write


def test_mount_verifies_tls_by_default(
    tls_registry: RegistryServer, kit: Kit, mounts: Mounts, repo_name: str
) -> None:
    assert tls_registry.ca_pem is not None
    ref = f"{tls_registry.host}/{repo_name}:v1"
    pushed = run_kitfs(kit.home, "push", kit.ref(), ref, "--ca-file", str(tls_registry.ca_pem))
    assert pushed.returncode == 0, pushed.stderr
    mnt, result = mounts.try_mount(ref, "refused", plain_http=False)
    assert result.returncode != 0
    assert "TLS certificate verification failed" in result.stderr
    assert not is_mounted(mnt)
    mnt, result = mounts.try_mount(
        ref, "trusted", "--ca-file", str(tls_registry.ca_pem), plain_http=False
    )
    assert result.returncode == 0, result.stderr
    assert (mnt / "Kitfile").read_bytes()


def test_mount_debug_log_holds_no_secrets(
    auth_registry: RegistryServer, kit: Kit, mounts: Mounts, repo_name: str
) -> None:
    host = auth_registry.host
    ref = f"{host}/{repo_name}:v1"
    for home in (kit.home, mounts.home):
        login = run_kitfs(home, "login", host, "-u", "alice", "-p", "s3cret", PLAIN)
        assert login.returncode == 0, login.stderr
    try:
        assert run_kitfs(kit.home, "push", kit.ref(), ref, PLAIN).returncode == 0
    finally:
        run_kitfs(kit.home, "logout", host)
    mnt = mounts.mount(ref, "mnt", "--debug")
    assert (mnt / "model" / "model" / "weights.bin").read_bytes() == kit.files["model/weights.bin"]
    log = mounts.log(mnt)
    assert "DEBUG" in log and "GET" in log
    assert_clean(log, basic_secrets("alice", "s3cret"))
