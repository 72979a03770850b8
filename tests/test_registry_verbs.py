"""End-to-end tests of the registry verbs (push, pull, login, logout and the remote forms of info,
inspect, list, unpack and remove) through the real ``kitfs`` command against real registries.

Every command runs as a subprocess with ``--config HOME`` (or ``$KITOPS_HOME``) pointing into the
test's temporary directory, and with ``HOME``/``DOCKER_CONFIG`` there too so that no real docker or
kit configuration is read. Registries, the token server and the fault proxy come from
``tests/conftest.py``; skopeo serves as an independent OCI client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import shutil
import stat
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from faultproxy import Fault, FaultProxy, ProxyRequest, Response, blob_get, once
from helpers import payload
from registry import RegistryServer

KITFS = str(Path(sys.executable).parent / "kitfs")
SKOPEO = shutil.which("skopeo")
PLAIN = "--plain-http"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MODEL_SIZE = 1_500_000  # big enough that a download cut halfway leaves real bytes to resume from

# -- the ModelKit under test ---------------------------------------------------------------------

KITFILE = """\
manifestVersion: 1.0.0
package:
  name: registry-e2e
  version: 1.0.0
  authors: [Registry Tester]
model:
  name: tiny
  path: model
  framework: none
datasets:
  - name: train
    path: data/train
  - name: test
    path: data/test
code:
  - path: src
docs:
  - path: docs
"""


CONTEXT_FILES: dict[str, bytes] = {
    "model/weights.bin": payload(MODEL_SIZE, "weights"),
    "model/config.json": b'{"hidden": 8}\n',
    "data/train/part-0.csv": b"x,y\n1,2\n3,4\n",
    "data/train/part-1.csv": b"x,y\n5,6\n",
    "data/test/test.csv": b"x,y\n7,8\n",
    "src/main.py": b"print('hello')\n",
    "src/pkg/util.py": b"VALUE = 1\n",
    "docs/README.md": b"# registry e2e\n",
}


def write_context(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "Kitfile").write_text(KITFILE)
    return root


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every regular file below ``root`` except the Kitfile, by relative path."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and path.name != "Kitfile":
            out[path.relative_to(root).as_posix()] = sha256_hex(path.read_bytes())
    return out


EXPECTED_HASHES = {rel: sha256_hex(data) for rel, data in CONTEXT_FILES.items()}

# -- running the CLI -------------------------------------------------------------------------------


def user_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A minimal environment whose HOME, DOCKER_CONFIG and XDG dirs all live under ``tmp``."""
    user = tmp / "user"
    (user / "docker").mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(user),
        "DOCKER_CONFIG": str(user / "docker"),
        "XDG_DATA_HOME": str(user / "data"),
        "XDG_CACHE_HOME": str(user / "cache"),
        "XDG_RUNTIME_DIR": str(user),
        "LC_ALL": "C.UTF-8",
    }
    env.update(extra)
    return env


def kitfs(
    home: Path | None, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``kitfs [--config home] args...`` with an environment confined to the test."""
    if env is None:
        assert home is not None, "without --config, pass an env that sets KITOPS_HOME"
        env = user_env(home.parent)
    argv = [KITFS, *(["--config", str(home)] if home else []), *args]
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        argv,
        **stdin,  # type: ignore[call-overload]
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def kitfs_together(
    *calls: tuple[Path, tuple[str, ...]],
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent ``kitfs(home, *args)`` calls at the same time (they mostly wait)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: kitfs(call[0], *call[1]), calls))


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def fails(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 1) -> str:
    """Assert a failure with exit ``code``, one line on stderr containing ``fragments``, and no
    traceback; return that line."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def last_digest(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    for line in result.stdout.splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    raise AssertionError(f"no {prefix!r} line in {result.stdout!r}")


# -- reading local storage -------------------------------------------------------------------------


def blob_path(home: Path, digest: str) -> Path:
    return home / "storage" / "blobs" / "sha256" / digest.removeprefix("sha256:")


def read_blob(home: Path, digest: str) -> bytes:
    return blob_path(home, digest).read_bytes()


def repo_key(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def local_tags(home: Path, repository: str) -> dict[str, Any]:
    path = home / "storage" / f"{repo_key(repository)}-tags.json"
    return json.loads(path.read_bytes()) if path.exists() else {}


def assert_nothing_stored(home: Path, repository: str, *absent_blobs: str) -> None:
    """No manifest for ``repository``, no listed blob, and every blob present holds what its
    name says (verified blobs may stay for the next pull to reuse)."""
    storage = home / "storage"
    assert not (storage / f"{repo_key(repository)}-index.json").exists()
    assert not (storage / f"{repo_key(repository)}-tags.json").exists()
    index = storage / "index.json"
    if index.exists():
        assert json.loads(index.read_bytes()).get("manifests") in (None, [])
    for digest in absent_blobs:
        assert not blob_path(home, digest).exists(), f"{digest} was stored"
    blobs = storage / "blobs" / "sha256"
    for path in blobs.iterdir() if blobs.exists() else []:
        assert path.name == sha256_hex(path.read_bytes()), f"blob {path.name} has wrong content"
    leftovers = [p for p in home.rglob("*") if p.is_file() and p.name.endswith(".partial")]
    assert leftovers == []
    assert [p for p in (home / "cache").rglob("*") if p.is_file()] == []


# -- a packed ModelKit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Packed:
    """A ModelKit in a source home: its local reference, manifest digest and bytes, and config."""

    home: Path
    ref: str
    digest: str
    compression: str

    @property
    def manifest_bytes(self) -> bytes:
        return read_blob(self.home, self.digest)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_bytes)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(read_blob(self.home, self.manifest["config"]["digest"]))

    def layer_digest(self, section: str, name: str | None = None) -> str:
        entry = self.config[section]
        if isinstance(entry, list):
            entry = next(e for e in entry if name in (e.get("name"), e.get("path")))
        return str(entry["digest"])

    @property
    def blob_digests(self) -> set[str]:
        manifest = self.manifest
        return {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


@pytest.fixture(scope="module")
def context_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_context(tmp_path_factory.mktemp("context"), CONTEXT_FILES)


@pytest.fixture(scope="module")
def source_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("source") / "kithome"


@pytest.fixture(scope="module", params=["none", "gzip"])
def packed(request: pytest.FixtureRequest, context_dir: Path, source_home: Path) -> Packed:
    """The test ModelKit packed locally as ``src:<compression>``."""
    compression = request.param
    ref = f"src:{compression}"
    result = ok(
        kitfs(source_home, "pack", str(context_dir), "-t", ref, "--compression", compression)
    )
    return Packed(source_home, ref, last_digest(result, "Model saved:"), compression)


@pytest.fixture(scope="module")
def gz(context_dir: Path, source_home: Path) -> Packed:
    """The gzip ModelKit alone, for tests that need one ModelKit rather than both."""
    ref = "src:gzip"
    known = local_tags(source_home, "localhost/src").get("gzip")  # packed[gzip] made it already
    if known:
        return Packed(source_home, ref, known["digest"], "gzip")
    result = ok(kitfs(source_home, "pack", str(context_dir), "-t", ref, "--compression", "gzip"))
    return Packed(source_home, ref, last_digest(result, "Model saved:"), "gzip")


def home_with(packed: Packed, home: Path) -> Path:
    """A new home whose local storage already holds ``packed`` (a copy of the source's)."""
    shutil.copytree(packed.home / "storage", home / "storage")
    return home


@pytest.fixture(scope="module")
def shared(gz: Packed, registry: RegistryServer) -> str:
    """``gz`` pushed once as ``<repository>:1`` for tests that only read it; the repository."""
    repository = f"kitfs-e2e/{uuid.uuid4().hex[:12]}"
    push(gz, f"{registry.host}/{repository}:1", PLAIN)
    return repository


def push(packed: Packed, dest: str, *flags: str) -> str:
    return last_digest(ok(kitfs(packed.home, "push", packed.ref, dest, *flags)), "Pushed")


def blob_gets(proxy: FaultProxy) -> list[str]:
    """The digests of the blobs fetched through ``proxy``, sorted."""
    return sorted(r.path.rsplit("/", 1)[-1] for r in proxy.requests if blob_get(r))


# -- push, pull, unpack ----------------------------------------------------------------------------


def test_push_pull_unpack_round_trip(
    packed: Packed, context_dir: Path, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """push from one home, pull into a fresh $KITOPS_HOME, unpack: same files, same digests."""
    ref = f"{registry.host}/{repo_name}:1"
    sender = tmp_path / "sender"
    compression = packed.compression
    saved = ok(kitfs(sender, "pack", str(context_dir), "-t", ref, "--compression", compression))
    sent = Packed(sender, ref, last_digest(saved, "Model saved:"), compression)
    pushed = ok(kitfs(sender, "push", ref, PLAIN))
    assert last_digest(pushed, "Pushed") == sent.digest

    fresh = tmp_path / "fresh"
    env = user_env(tmp_path, KITOPS_HOME=str(fresh))
    pulled = ok(kitfs(None, "pull", ref, PLAIN, env=env))
    assert last_digest(pulled, "Pulled") == sent.digest
    assert read_blob(fresh, sent.digest) == sent.manifest_bytes
    for digest in sent.blob_digests:
        assert read_blob(fresh, digest) == read_blob(sender, digest)
    assert local_tags(fresh, f"{registry.host}/{repo_name}")["1"]["digest"] == sent.digest

    listing = ok(kitfs(None, "list", env=env)).stdout
    row = next(line for line in listing.splitlines() if repo_name in line).split()
    assert row[:2] == [f"{registry.host}/{repo_name}", "1"] and row[-1] == sent.digest

    out = tmp_path / "out"
    ok(kitfs(None, "unpack", ref, "-d", str(out), env=env))
    assert file_hashes(out) == EXPECTED_HASHES
    assert "registry-e2e" in (out / "Kitfile").read_text()
    for result in (pushed, pulled):
        assert "\x1b" not in result.stderr and "\r" not in result.stderr  # no bars off a TTY


def test_push_local_source_to_destination_with_extra_tags(
    gz: Packed, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """``push m:1 reg/org/m:latest`` and ``push m:1 reg/repo:a,b``; ``list REG/REPO`` shows tags."""
    base = f"{registry.host}/{repo_name}"
    assert push(gz, f"{base}:latest", PLAIN) == gz.digest
    assert push(gz, f"{base}:a,b", PLAIN) == gz.digest

    home = tmp_path / "viewer"
    listing = ok(kitfs(home, "list", base, PLAIN)).stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "MAINTAINER", "NAME", "SIZE", "DIGEST"]
    rows = {line.split()[1]: line.split() for line in listing[1:]}
    assert set(rows) == {"latest", "a", "b"}
    for cells in rows.values():
        assert cells[0] == repo_name and cells[-1] == gz.digest and "registry-e2e" in cells
    as_json = json.loads(ok(kitfs(home, "list", base, "--format", "json", PLAIN)).stdout)
    assert sorted(tag for row in as_json for tag in row["tags"]) == ["a", "b", "latest"]
    assert last_digest(ok(kitfs(home, "pull", f"{base}:b", PLAIN)), "Pulled") == gz.digest


def test_push_refuses_local_destination_and_missing_source(gz: Packed, tmp_path: Path) -> None:
    fails(kitfs(gz.home, "push", gz.ref), "name a registry", code=2)
    fails(kitfs(tmp_path / "empty", "push", "127.0.0.1:9/org/m:1", PLAIN), "not found")


def test_pull_skips_blobs_already_present(
    gz: Packed,
    registry: RegistryServer,
    fault_proxy: FaultProxy,
    repo_name: str,
    tmp_path: Path,
) -> None:
    """A second ModelKit that shares all but one layer costs that layer and its config only."""
    changed = write_context(
        tmp_path / "changed", {**CONTEXT_FILES, "data/test/test.csv": b"x,y\n9,9\n"}
    )
    packed = ok(kitfs(gz.home, "pack", str(changed), "-t", "src:changed", "--compression", "gzip"))
    v2 = Packed(gz.home, "src:changed", last_digest(packed, "Model saved:"), "gzip")
    push(gz, f"{registry.host}/{repo_name}:1", PLAIN)
    push(v2, f"{registry.host}/{repo_name}:2", PLAIN)

    home = tmp_path / "home"
    via_proxy = f"{fault_proxy.host}/{repo_name}"
    assert last_digest(ok(kitfs(home, "pull", f"{via_proxy}:1", PLAIN)), "Pulled") == gz.digest
    assert blob_gets(fault_proxy) == sorted(gz.blob_digests)

    fault_proxy.clear()
    assert last_digest(ok(kitfs(home, "pull", f"{via_proxy}:2", PLAIN)), "Pulled") == v2.digest
    changed_layer = v2.layer_digest("datasets", "test")
    assert blob_gets(fault_proxy) == sorted([v2.manifest["config"]["digest"], changed_layer])
    assert v2.blob_digests - gz.blob_digests == {v2.manifest["config"]["digest"], changed_layer}


def test_remote_info_inspect_and_unpack_of_one_dataset(
    gz: Packed, shared: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    ref = f"{fault_proxy.host}/{shared}:1"
    home = tmp_path / "viewer"

    remote_info, local_info, remote_inspect = kitfs_together(
        (home, ("info", "--remote", ref, PLAIN)),
        (gz.home, ("info", gz.ref)),
        (home, ("inspect", "--remote", ref, PLAIN)),
    )
    assert ok(remote_info).stdout == ok(local_info).stdout
    assert "name: registry-e2e" in remote_info.stdout and "digest" not in remote_info.stdout

    inspected = json.loads(ok(remote_inspect).stdout)
    assert inspected["digest"] == gz.digest
    assert inspected["manifest"] == gz.manifest
    assert inspected["kitfile"] == gz.config  # as the local inspect shows it

    out = tmp_path / "out"
    fault_proxy.clear()
    ok(kitfs(home, "unpack", ref, "--filter", "datasets:train", "-d", str(out), PLAIN))
    assert file_hashes(out) == {
        rel: digest for rel, digest in EXPECTED_HASHES.items() if rel.startswith("data/train/")
    }
    train = gz.layer_digest("datasets", "train")
    # only the selected layer: the config comes from the mount cache, where info --remote kept it
    assert blob_gets(fault_proxy) == [train]
    assert_nothing_stored(home, f"{fault_proxy.host}/{shared}")

    everything = tmp_path / "all"
    ok(kitfs(home, "unpack", ref, "-d", str(everything), PLAIN))
    assert file_hashes(everything) == EXPECTED_HASHES


def test_remove_remote(
    gz: Packed, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    ref = f"{registry.host}/{repo_name}:1"
    push(gz, ref, PLAIN)
    home = tmp_path / "home"
    removed = ok(kitfs(home, "remove", "--remote", ref, PLAIN))
    assert gz.digest in removed.stdout
    fails(kitfs(home, "info", "--remote", ref, PLAIN), f"registry {registry.host}", "not found")


# -- skopeo as an independent OCI client ----------------------------------------------------------


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_skopeo_reads_and_copies_a_pushed_modelkit(
    packed: Packed, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """skopeo sees the exact manifest bytes we pushed and copies the ModelKit to an OCI layout and
    back unchanged (``--preserve-digests`` makes it fail rather than rewrite anything)."""
    assert SKOPEO is not None
    env = user_env(tmp_path)
    src = f"docker://{registry.host}/{repo_name}:1"
    push(packed, f"{registry.host}/{repo_name}:1", PLAIN)

    def skopeo(*args: str) -> bytes:
        result = subprocess.run(
            [SKOPEO, "--insecure-policy", *args], capture_output=True, env=env, timeout=60
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout

    assert skopeo("inspect", "--raw", "--tls-verify=false", src) == packed.manifest_bytes
    layout = tmp_path / "layout"
    skopeo("copy", "-q", "--preserve-digests", "--src-tls-verify=false", src, f"oci:{layout}:t1")
    assert json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"] == (
        packed.digest
    )
    copy = f"{registry.host}/{repo_name}-copy:t1"
    skopeo(
        "copy",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{layout}:t1",
        f"docker://{copy}",
    )

    home = tmp_path / "home"
    assert last_digest(ok(kitfs(home, "pull", copy, PLAIN)), "Pulled") == packed.digest
    out = tmp_path / "out"
    ok(kitfs(home, "unpack", copy, "-d", str(out)))
    assert file_hashes(out) == EXPECTED_HASHES


# -- basic auth ------------------------------------------------------------------------------------


def credentials(home: Path) -> dict[str, Any]:
    path = home / "credentials.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_login_push_pull_logout_with_basic_auth(
    gz: Packed, auth_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    host = auth_registry.host
    ref = f"{host}/{repo_name}:1"
    sender = tmp_path / "sender"

    wrong, scheme = kitfs_together(
        (sender, ("login", host, "-u", "alice", "-p", "wrong", PLAIN)),
        (sender, ("login", f"http://{host}", "-u", "alice", "-p", "s3cret")),
    )
    fails(wrong, f"registry {host}", "refused the credentials")
    fails(scheme, "invalid registry", "without a scheme", code=2)  # refused before any traffic
    assert not (sender / "credentials.json").exists()

    ok(kitfs(sender, "login", host, "-u", "alice", "--password-stdin", PLAIN, input="s3cret\n"))
    path = sender / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(credentials(sender)["auths"][host]["auth"]) == b"alice:s3cret"
    home_with(gz, sender)
    assert last_digest(ok(kitfs(sender, "push", gz.ref, ref, PLAIN)), "Pushed") == gz.digest

    receiver = tmp_path / "receiver"
    fails(kitfs(receiver, "pull", ref, PLAIN), f"registry {host}", "kitfs login")
    assert_nothing_stored(receiver, f"{host}/{repo_name}")
    ok(kitfs(receiver, "login", host, "-u", "alice", "-p", "s3cret", PLAIN))
    assert last_digest(ok(kitfs(receiver, "pull", ref, PLAIN)), "Pulled") == gz.digest

    logout = ok(kitfs(receiver, "logout", host))
    assert host in logout.stderr + logout.stdout
    assert host not in credentials(receiver).get("auths", {})
    fails(kitfs(receiver, "info", "--remote", ref, PLAIN), f"registry {host}", "kitfs login")

    # A stale password in credentials.json is reported as refused, naming the registry.
    stale = base64.b64encode(b"alice:stale").decode()
    (receiver / "credentials.json").write_text(json.dumps({"auths": {host: {"auth": stale}}}))
    fails(kitfs(receiver, "pull", ref, PLAIN), f"registry {host}", "refused the credentials")

    # docker's config.json is read when kit's credentials file has nothing for the registry.
    other = tmp_path / "other"
    env = user_env(tmp_path / "docker-user")
    good = base64.b64encode(b"alice:s3cret").decode()
    docker = Path(env["DOCKER_CONFIG"]) / "config.json"
    docker.write_text(json.dumps({"auths": {f"http://{host}": {"auth": good}}}))
    pulled = ok(kitfs(other, "pull", ref, PLAIN, env=env))
    assert last_digest(pulled, "Pulled") == gz.digest


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_is_verified_by_default(
    gz: Packed, tls_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    host = tls_registry.host
    ref = f"{host}/{repo_name}:1"
    assert tls_registry.ca_pem is not None
    ca = str(tls_registry.ca_pem)
    stranger = tmp_path / "stranger.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))

    default, untrusted = kitfs_together(
        (gz.home, ("push", gz.ref, ref)),
        (gz.home, ("push", gz.ref, ref, "--ca-file", str(stranger))),
    )
    for result in (default, untrusted):
        fails(result, f"registry {host}", "TLS certificate verification failed")
    assert push(gz, ref, "--ca-file", ca) == gz.digest

    home = tmp_path / "home"
    fails(kitfs(home, "pull", ref), f"registry {host}", "TLS certificate verification failed")
    assert_nothing_stored(home, f"{host}/{repo_name}")
    assert last_digest(ok(kitfs(home, "pull", ref, "--tls-cert", ca)), "Pulled") == gz.digest
    insecure = tmp_path / "insecure"
    pulled = ok(kitfs(insecure, "pull", ref, "--tls-verify=false"))
    assert last_digest(pulled, "Pulled") == gz.digest


def test_mutual_tls_with_client_certificate(
    gz: Packed, registry_factory: Any, tls_ca: trustme.CA, repo_name: str
) -> None:
    server: RegistryServer = registry_factory(tls_ca=tls_ca, client_certs=True)
    ref = f"{server.host}/{repo_name}:1"
    ca = str(server.ca_pem)
    client = str(server.extra["client_pem"])
    fails(kitfs(gz.home, "push", gz.ref, ref, "--ca-file", ca), f"registry {server.host}", "--cert")
    assert push(gz, ref, "--ca-file", ca, "--cert", client, "--key", client) == gz.digest


# -- bearer tokens ---------------------------------------------------------------------------------


def test_bearer_token_auth(
    gz: Packed, token_registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    host = token_registry.host
    tokens = token_registry.extra["token_server"]
    ref = f"{host}/{repo_name}:1"
    home = tmp_path / "home"

    wrong = kitfs(home, "login", host, "-u", "alice", "--password-stdin", PLAIN, input="nope\n")
    fails(wrong, f"registry {host}", "refused the credentials")
    assert credentials(home) == {}
    fails(kitfs(gz.home, "push", gz.ref, ref, PLAIN), f"registry {host}", "kitfs login")

    ok(kitfs(home, "login", host, "-u", "alice", "--password-stdin", PLAIN, input="s3cret"))
    home_with(gz, home)
    tokens.requests.clear()
    assert last_digest(ok(kitfs(home, "push", gz.ref, ref, PLAIN)), "Pushed") == gz.digest
    granted = {scope for r in tokens.requests if r.user == "alice" for scope in r.scopes}
    assert f"repository:{repo_name}:pull,push" in granted

    fresh = tmp_path / "fresh"
    fails(kitfs(fresh, "pull", ref, PLAIN), f"registry {host}", "kitfs login")
    assert_nothing_stored(fresh, f"{host}/{repo_name}")
    shutil.copy(home / "credentials.json", fresh / "credentials.json")
    out = tmp_path / "out"
    ok(kitfs(fresh, "unpack", ref, "-d", str(out), PLAIN))  # straight from the registry
    assert file_hashes(out) == EXPECTED_HASHES
    assert last_digest(ok(kitfs(fresh, "pull", ref, PLAIN)), "Pulled") == gz.digest


# -- faults ----------------------------------------------------------------------------------------


def test_cut_download_resumes_and_verifies(
    gz: Packed, shared: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    model = gz.layer_digest("model")
    size = next(layer["size"] for layer in gz.manifest["layers"] if layer["digest"] == model)
    half = size // 2

    def model_get(request: ProxyRequest) -> bool:
        return blob_get(request) and request.path.endswith(model)

    fault_proxy.add_rule(once(model_get, Fault(cut_after=half)))
    home = tmp_path / "home"
    ref = f"{fault_proxy.host}/{shared}:1"
    assert last_digest(ok(kitfs(home, "pull", ref, PLAIN)), "Pulled") == gz.digest

    gets = [r for r in fault_proxy.requests if model_get(r)]
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={half}-"  # every byte before the cut was kept
    assert read_blob(home, model) == read_blob(gz.home, model)
    out = tmp_path / "out"
    ok(kitfs(home, "unpack", ref, "-d", str(out)))
    assert file_hashes(out) == EXPECTED_HASHES


def test_corrupted_blob_is_rejected_and_nothing_stored(
    gz: Packed, shared: str, registry: RegistryServer, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    model = gz.layer_digest("model")
    fault_proxy.add_rule(
        lambda r: Fault(corrupt_at=1000) if blob_get(r) and r.path.endswith(model) else None
    )
    home = tmp_path / "home"
    ref = f"{fault_proxy.host}/{shared}:1"
    fails(kitfs(home, "pull", ref, PLAIN), model, "failed verification")
    assert_nothing_stored(home, f"{fault_proxy.host}/{shared}", model)

    out = tmp_path / "out"
    fails(kitfs(home, "unpack", ref, "-d", str(out), PLAIN), model, "failed verification")
    assert not out.exists() or list(out.rglob("*")) == []
    assert_nothing_stored(home, f"{fault_proxy.host}/{shared}", model)

    # push verifies local blobs too: a damaged one is never uploaded under its digest.
    damaged = tmp_path / "damaged"
    shutil.copytree(gz.home, damaged)
    blob = blob_path(damaged, model)
    blob.write_bytes(b"\0" + blob.read_bytes()[1:])
    dest = f"{registry.host}/{shared}-damaged:1"
    fails(kitfs(damaged, "push", gz.ref, dest, PLAIN), model, "failed verification")
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        assert client.head(f"/v2/{shared}-damaged/blobs/{model}").status_code == 404
        assert client.head(f"/v2/{shared}-damaged/manifests/1").status_code == 404


def test_push_streams_a_large_layer_once_and_refuses_a_damaged_one(
    registry: RegistryServer, fault_proxy: FaultProxy, repo_name: str, tmp_path: Path
) -> None:
    """A 12 MiB layer goes in one streamed PUT, hashed as it is read. Damaged in local storage, the
    push fails with one line, its upload is cut short and cancelled and the registry has neither
    the blob nor the manifest; the intact ModelKit then pushes with the same blob bytes."""
    context = tmp_path / "ctx"
    (context / "model").mkdir(parents=True)
    (context / "model" / "weights.bin").write_bytes(payload(12 * 1024 * 1024, "large"))
    (context / "Kitfile").write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: large\nmodel:\n  name: w\n  path: model\n"
    )
    home = tmp_path / "home"
    ref = f"{fault_proxy.host}/{repo_name}:1"
    digest = last_digest(ok(kitfs(home, "pack", str(context), "-t", ref)), "Model saved:")
    manifest = json.loads(read_blob(home, digest))
    layer = manifest["layers"][0]["digest"]
    damaged = tmp_path / "damaged"
    shutil.copytree(home, damaged)
    blob = blob_path(damaged, layer)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    fails(kitfs(damaged, "push", ref, PLAIN), layer, "failed verification")
    assert len(fault_proxy.matching("DELETE", "/blobs/uploads/")) == 1
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        assert client.head(f"/v2/{repo_name}/blobs/{layer}").status_code == 404
        assert client.head(f"/v2/{repo_name}/manifests/1").status_code == 404

    fault_proxy.requests.clear()
    assert last_digest(ok(kitfs(home, "push", ref, PLAIN)), "Pushed") == digest
    layer_size = manifest["layers"][0]["size"]
    puts = [r.headers["content-length"] for r in fault_proxy.matching("PUT", "/blobs/uploads/")]
    assert str(layer_size) in puts and fault_proxy.matching("PATCH") == []
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        pushed = client.get(f"/v2/{repo_name}/blobs/{layer}").content
    assert pushed == read_blob(home, layer)


# -- errors ----------------------------------------------------------------------------------------


def _upload(registry: RegistryServer, repository: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + sha256_hex(data)
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        location = client.post(f"/v2/{repository}/blobs/uploads/").headers["location"]
        sep = "&" if "?" in location else "?"
        done = client.put(f"{location}{sep}digest={digest}", content=data)
        assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def _put_manifest(
    registry: RegistryServer, repository: str, tag: str, body: dict[str, Any], media_type: str
) -> None:
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        done = client.put(
            f"/v2/{repository}/manifests/{tag}",
            content=json.dumps(body).encode(),
            headers={"Content-Type": media_type},
        )
        assert done.status_code == 201, done.text


def test_non_modelkit_manifests_are_refused(
    gz: Packed, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """A docker image, an OCI image and an OCI index next to a ModelKit in one repository."""
    base = f"{registry.host}/{repo_name}"
    push(gz, f"{base}:1", PLAIN)
    config = _upload(registry, repo_name, b'{"architecture":"amd64","os":"linux","rootfs":{}}')
    layer = _upload(registry, repo_name, b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    docker_config = "application/vnd.docker.container.image.v1+json"
    docker = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": docker_config, **config},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", **layer}],
    }
    _put_manifest(registry, repo_name, "docker", docker, DOCKER_MANIFEST)
    image_config = "application/vnd.oci.image.config.v1+json"
    image = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": image_config, **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    _put_manifest(registry, repo_name, "image", image, OCI_MANIFEST)
    kit = {"mediaType": OCI_MANIFEST, "digest": gz.digest, "size": len(gz.manifest_bytes)}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [kit]}
    _put_manifest(registry, repo_name, "index", index, OCI_INDEX)

    home = tmp_path / "home"
    out = tmp_path / "out"
    pull, info, unpack, listing = kitfs_together(
        (home, ("pull", f"{base}:docker", PLAIN)),
        (home, ("info", "--remote", f"{base}:image", PLAIN)),
        (home, ("unpack", f"{base}:index", "-d", str(out), PLAIN)),
        (home, ("list", base, PLAIN)),
    )
    fails(pull, f"{base}:docker", "is not a ModelKit", docker_config)
    fails(info, f"{base}:image", "is not a ModelKit", image_config)
    fails(unpack, f"{base}:index", "is an image index, not a ModelKit")
    assert_nothing_stored(home, base)
    assert not out.exists() or list(out.iterdir()) == []
    rows = ok(listing).stdout.splitlines()[1:]  # a remote listing skips what is not a ModelKit
    assert [line.split()[1] for line in rows] == ["1"]


def test_non_oci_manifest_answer_is_refused(
    shared: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """A registry that answers a manifest request with something else (a login page, say)."""
    page = Response(200, {"Content-Type": "text/html"}, b"<html>please log in</html>")
    fault_proxy.add_rule(lambda r: Fault(respond=page) if "/manifests/" in r.path else None)
    home = tmp_path / "home"
    pull = kitfs(home, "pull", f"{fault_proxy.host}/{shared}:1", PLAIN)
    fails(pull, f"registry {fault_proxy.host}", "not an OCI manifest", "text/html")
    assert_nothing_stored(home, f"{fault_proxy.host}/{shared}")


def test_unknown_tag_repository_and_unreachable_registry(
    shared: str, registry: RegistryServer, tmp_path: Path, unreachable_host: str
) -> None:
    home = tmp_path / "home"
    out = tmp_path / "out"
    base = f"{registry.host}/{shared}"
    missing = f"{registry.host}/{shared}-missing"
    dead = unreachable_host
    tag, info, unpack, repo, listing, unreachable, tls = kitfs_together(
        (home, ("pull", f"{base}:nope", PLAIN)),
        (home, ("info", "--remote", f"{base}:nope", PLAIN)),
        (home, ("unpack", f"{base}:nope", "-d", str(out), PLAIN)),
        (home, ("pull", f"{missing}:1", PLAIN)),
        (home, ("list", missing, PLAIN)),
        (home, ("pull", f"{dead}/{shared}:1", PLAIN)),  # retried with backoff before giving up
        (home, ("pull", f"{base}:1")),
    )
    for result in (tag, info, unpack):
        fails(result, f"registry {registry.host}", f"{shared}:nope", "not found")
    fails(repo, f"registry {registry.host}", "not found")
    fails(listing, f"registry {registry.host}", "not found")
    fails(unreachable, f"registry {dead} is unreachable")
    fails(tls, f"registry {registry.host}", "does not speak TLS")
    assert_nothing_stored(home, base)
    assert_nothing_stored(home, f"{dead}/{shared}")
    assert not out.exists() or list(out.iterdir()) == []


# -- network flags and progress --------------------------------------------------------------------

NETWORK_FLAGS = ("--plain-http", "--tls-verify", "--cert", "--key", "--concurrency", "--proxy")


@pytest.fixture(scope="module")
def tls_shared(gz: Packed, tls_registry: RegistryServer) -> str:
    """``gz`` pushed once to the TLS registry as ``<repository>:1``; the repository."""
    repository = f"kitfs-e2e/{uuid.uuid4().hex[:12]}"
    push(gz, f"{tls_registry.host}/{repository}:1", "--ca-file", str(tls_registry.ca_pem))
    return repository


def _verb_args(verb: str, host: str, repository: str, work: Path) -> tuple[str, ...]:
    """The arguments of ``verb`` against ``host/repository`` (its tag 1; ``push`` writes the tag
    ``pushed``; ``remove`` deletes ``repository-gone:1``: a manifest goes with all its tags)."""
    ref = f"{host}/{repository}:1"
    return {
        "push": ("push", "src:gzip", f"{host}/{repository}:pushed"),
        "pull": ("pull", ref),
        "login": ("login", host, "-u", "alice", "-p", "s3cret"),
        "info": ("info", "--remote", ref),
        "inspect": ("inspect", "--remote", ref),
        "list": ("list", f"{host}/{repository}"),
        "unpack": ("unpack", ref, "--filter", "datasets:test", "-d", str(work / "out")),
        "remove": ("remove", "--remote", f"{host}/{repository}-gone:1"),
        "mount": ("mount", ref, str(work / "mnt"), "--cache-dir", str(work / "cache")),
    }[verb]


def _check_verb(
    verb: str, result: subprocess.CompletedProcess[str], work: Path, gz: Packed
) -> None:
    """What ``verb`` must have done, beyond exiting 0."""
    ok(result)
    if verb in ("push", "pull"):
        assert last_digest(result, "Pushed" if verb == "push" else "Pulled") == gz.digest
    elif verb == "login":
        assert "Log in successful" in result.stdout + result.stderr
    elif verb == "info":
        assert "name: registry-e2e" in result.stdout
    elif verb == "inspect":
        assert json.loads(result.stdout)["digest"] == gz.digest
    elif verb == "list":
        assert gz.digest in result.stdout
    elif verb == "unpack":
        assert (work / "out" / "data" / "test" / "test.csv").read_bytes() == b"x,y\n7,8\n"
    elif verb == "remove":
        assert gz.digest in result.stdout
    elif verb == "mount":
        assert (work / "mnt" / "datasets" / "data" / "test" / "test.csv").read_bytes() == (
            b"x,y\n7,8\n"
        )


@pytest.mark.parametrize(
    "verb", ["push", "pull", "login", "info", "inspect", "list", "unpack", "remove", "mount"]
)
def test_network_flags_on_every_registry_verb(
    verb: str,
    gz: Packed,
    shared: str,
    tls_shared: str,
    registry: RegistryServer,
    tls_registry: RegistryServer,
    fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    """Each registry verb takes the network flags and acts on them: --ca-file lets it trust a TLS
    registry whose throw-away CA nothing else trusts (test_tls_is_verified_by_default shows the
    refusal without it); --plain-http, --proxy and --concurrency reach a plain registry through
    an HTTP proxy, which sees every request."""
    from kitfs.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    sub = commands.choices[verb]  # type: ignore[index]
    flags = {flag: action for action in sub._actions for flag in action.option_strings}
    for flag in (*NETWORK_FLAGS, "--ca-file", "--tls-cert"):
        assert flag in flags, f"{verb} lacks {flag}"
    assert flags["--tls-verify"].default in ("true", True)
    assert flags["--concurrency"].default == 5
    assert flags["--plain-http"].default is False
    assert flags["--proxy"].default is None and flags["--ca-file"].default is None
    if verb == "mount" and not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")

    ca = str(tls_registry.ca_pem)
    if verb == "remove":
        push(gz, f"{tls_registry.host}/{tls_shared}-gone:1", "--ca-file", ca)
        push(gz, f"{registry.host}/{shared}-gone:1", PLAIN)
    by_tls, by_proxy = tmp_path / "tls", tmp_path / "proxied"
    for work in (by_tls, by_proxy):
        work.mkdir()
        if verb == "mount":
            (work / "mnt").mkdir()
    homes = (gz.home, gz.home) if verb == "push" else (by_tls / "home", by_proxy / "home")
    tls_args = _verb_args(verb, tls_registry.host, tls_shared, by_tls)
    proxied_args = _verb_args(verb, registry.host, shared, by_proxy)
    try:
        trusted, proxied = kitfs_together(
            (homes[0], (*tls_args, "--ca-file", ca)),
            (homes[1], (*proxied_args, PLAIN, "--proxy", fault_proxy.url, "--concurrency", "2")),
        )
        _check_verb(verb, trusted, by_tls, gz)
        _check_verb(verb, proxied, by_proxy, gz)
        assert fault_proxy.requests
        assert all(r.path.startswith(f"http://{registry.host}/v2/") for r in fault_proxy.requests)
    finally:
        if verb == "mount":
            from kitfs.fs.mount import find_mount

            for work in (by_tls, by_proxy):
                for _ in range(3):  # every mount there, should a bug have stacked two
                    if find_mount(work / "mnt") is not None:
                        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], check=False)


def test_proxy_and_concurrency_flags(
    gz: Packed, shared: str, registry: RegistryServer, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """--proxy sends registry traffic through an HTTP proxy (the fault proxy forwards absolute-form
    requests to the registry); --concurrency must be positive."""
    ref = f"{registry.host}/{shared}:1"
    home = tmp_path / "home"
    fails(kitfs(home, "pull", ref, PLAIN, "--concurrency", "0"), "--concurrency", code=2)
    ok(kitfs(home, "pull", ref, PLAIN, "--concurrency", "1", "--proxy", fault_proxy.url))
    assert blob_gets(fault_proxy) == sorted(gz.blob_digests)
    assert all(r.path.startswith(f"http://{registry.host}/v2/") for r in fault_proxy.requests)


def _run_on_tty(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run with stderr on a pseudo-terminal; return the exit code and what the terminal got."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal, env=env
        )
    finally:
        os.close(terminal)
    chunks = []
    try:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(controller)
        code = process.wait(timeout=60)
    return code, b"".join(chunks)


def test_progress_bars_only_on_a_terminal(
    gz: Packed, shared: str, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    env = {**user_env(tmp_path), "TERM": "xterm-256color", "COLUMNS": "100"}
    dest = f"{registry.host}/{repo_name}:1"
    code, shown = _run_on_tty([KITFS, "--config", str(gz.home), "push", gz.ref, dest, PLAIN], env)
    assert code == 0, shown
    assert b"\x1b[" in shown and b"push" in shown  # rich drew (and then removed) a live bar
    home = tmp_path / "home"
    pull = [KITFS, "--config", str(home), "pull", f"{registry.host}/{shared}:1", PLAIN]
    code, shown = _run_on_tty(pull, env)
    assert code == 0, shown
    assert b"\x1b[" in shown and b"pull" in shown
    quiet = [KITFS, "--config", str(home), "--progress", "none", "pull", dest, PLAIN]
    code, shown = _run_on_tty(quiet, env)
    assert code == 0 and b"\x1b[" not in shown, shown

    # Off a terminal, --progress plain logs lines instead of drawing bars.
    logged = ok(kitfs(tmp_path / "logged", "--progress", "plain", "pull", dest, PLAIN, env=env))
    assert "\x1b" not in logged.stderr and "\r" not in logged.stderr
    total = sum(d["size"] for d in [gz.manifest["config"], *gz.manifest["layers"]])
    assert f"{registry.host}/{repo_name}:1: 100% ({total}/{total} bytes)" in logged.stderr
