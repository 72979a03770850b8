"""``kitfs import`` from the Hugging Face Hub, against tests/hfhub.py: a loopback stand-in speaking
the Hub's tree and resolve endpoints (the real huggingface.co cannot be reached from the tests)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import KITFS, cli, fails, make_tree, ok, payload, snapshot
from hfhub import Hub, Repo, git_blob_sha1, serve_hub

from kitfs.storage.local import LocalStore

REPO = "acme/tiny-llm"
FILES: dict[str, bytes] = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "README.md": b"# tiny-llm\nA model for tests.\n",
    "config.json": b'{"hidden_size": 64}\n',
    "model.safetensors": payload(3 << 20, "weights"),
    "onnx/model.onnx": payload(300_000, "onnx"),
    "tokenizer/tokenizer.json": b'{"vocab": {"a": 1}}\n',
    "tokenizer/special_tokens_map.json": b"{}\n",
    "scripts/run.py": b"print('hello')\n",
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    """The stand-in Hub with one public repository; HF_ENDPOINT points at it, no token around."""
    state = Hub(repos={REPO: Repo({"main": dict(FILES), "v1": {"README.md": b"old\n"}})})
    with serve_hub(state) as running:
        monkeypatch.setenv("HF_ENDPOINT", running.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        yield running


def kitfile_of(home: Path, ref: str) -> dict[str, object]:
    return yaml.safe_load(ok(cli(home, "info", ref)).stdout)  # type: ignore[no-any-return]


def unpacked(home: Path, ref: str, dest: Path) -> dict[str, bytes]:
    ok(cli(home, "unpack", ref, "-d", str(dest)))
    return {
        str(p.relative_to(dest)): p.read_bytes()
        for p in dest.rglob("*")
        if p.is_file() and p.name != "Kitfile"
    }


def test_import_nested_repository_matches_pack_of_the_same_files(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    home = tmp_path / "home"
    result = ok(cli(home, "import", REPO))
    assert "Using tag acme/tiny-llm:latest" in result.stdout
    assert "Generated Kitfile:" in result.stdout
    kitfile = kitfile_of(home, "acme/tiny-llm:latest")
    # kit's GenerateKitfile for this listing: the largest weights are the model, the other weights
    # and top-level metadata its parts; README a doc; a directory of metadata and one of code are
    # code layers; the package is named after the repository and its owner.
    assert kitfile["package"] == {"name": "tiny-llm", "authors": ["acme"]}
    assert kitfile["model"]["path"] == "model.safetensors"  # type: ignore[index]
    assert {p["path"] for p in kitfile["model"]["parts"]} == {"onnx/model.onnx", "config.json"}  # type: ignore[index]
    assert kitfile["docs"] == [{"path": "README.md", "description": "Readme file"}]
    assert {c["path"] for c in kitfile["code"]} == {"scripts/", "tokenizer/"}  # type: ignore[union-attr, attr-defined]

    files = unpacked(home, "acme/tiny-llm:latest", tmp_path / "out")
    assert files == {k: v for k, v in FILES.items() if k != ".gitattributes"}
    # Every file was fetched once; the LFS ones through the CDN, without the Hub's Authorization.
    for path in files:
        assert hub.bytes_sent(path) == len(FILES[path]), path
    weights = hub.file_requests("model.safetensors")
    assert [r.server for r in weights] == ["hub", "cdn"] and weights[0].sent == 0

    # The same files packed by `kitfs pack` (kit's 0644/0755 modes) with the same Kitfile give
    # the same ModelKit, byte for byte: same layers, span indexes, config and manifest.
    ctx = tmp_path / "ctx"
    make_tree(ctx, {k: v for k, v in FILES.items() if k != ".gitattributes"})
    for made in ctx.rglob("*"):
        made.chmod(0o755 if made.is_dir() else 0o644)
    (tmp_path / "Kitfile").write_text(yaml.safe_dump(kitfile, sort_keys=False))
    ok(cli(tmp_path / "home2", "pack", str(ctx), "-f", str(tmp_path / "Kitfile"), "-t", "x/y:1"))
    ours = json.loads(ok(cli(home, "inspect", "acme/tiny-llm:latest")).stdout)
    theirs = json.loads(ok(cli(tmp_path / "home2", "inspect", "x/y:1")).stdout)
    assert ours["manifest"] == theirs["manifest"]
    assert ours["digest"] == theirs["digest"]
    assert not (home / "cache" / "kitfs-import").exists() or not any(
        (home / "cache" / "kitfs-import").iterdir()
    )


def test_kitfile_flag_limits_what_is_downloaded(hub: Hub, tmp_path: Path) -> None:
    kitfile = tmp_path / "Kitfile"
    kitfile.write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: tok\n"
        "model:\n  path: onnx/model.onnx\ncode:\n  - path: tokenizer\n"
    )
    home = tmp_path / "home"
    ok(cli(home, "import", REPO, "-f", str(kitfile), "-t", "tok:v1"))
    fetched = {r.path.split("/resolve/main/")[-1] for r in hub.resolve_requests()}
    assert fetched == {
        "onnx/model.onnx",
        "tokenizer/tokenizer.json",
        "tokenizer/special_tokens_map.json",
    }
    assert hub.bytes_sent("model.safetensors") == 0
    assert set(unpacked(home, "tok:v1", tmp_path / "out")) == fetched


def test_a_file_that_does_not_match_its_sha256_is_refused_and_nothing_is_stored(
    hub: Hub, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    ok(cli(home, "import", REPO, "--ref", "v1", "-t", "keep:1"))  # something already stored
    before = snapshot(home / "storage")
    hub.corrupt.add("model.safetensors")
    line = fails(cli(home, "import", REPO))
    assert "model.safetensors does not match the sha256" in line
    assert "nothing was stored" in line
    assert snapshot(home / "storage") == before
    # Once the Hub serves the right bytes, the import goes through and fetches that file again.
    hub.corrupt.clear()
    sent = hub.bytes_sent("model.safetensors")
    ok(cli(home, "import", REPO))
    assert hub.bytes_sent("model.safetensors") - sent == len(FILES["model.safetensors"])


def test_a_regular_file_is_checked_against_its_git_blob_oid(hub: Hub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    hub.corrupt.add("config.json")
    line = fails(cli(home, "import", REPO))
    assert "config.json does not match the git blob sha1" in line
    assert (
        not (home / "storage" / "index.json").exists()
        or not LocalStore(home / "storage").list_modelkits()
    )


def test_gated_repository_without_a_token_names_the_options(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.repos[REPO].token = "hf_secret"
    line = fails(cli(tmp_path / "home", "import", REPO))
    assert "gated or private" in line and "--token" in line and "HF_TOKEN" in line
    assert str(tmp_path / "hf-home" / "token") in line
    line = fails(cli(tmp_path / "home", "import", REPO, "--token", "hf_wrong"))
    assert "refused the token from --token" in line


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_token_is_sent_as_bearer(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    hub.repos[REPO].token = "hf_secret"
    kitfile = tmp_path / "onnx.Kitfile"
    kitfile.write_text("manifestVersion: 1.0.0\nmodel:\n  path: onnx/model.onnx\n")
    args = ["import", REPO, "-f", str(kitfile)]
    if source == "flag":
        args += ["--token", "hf_secret"]
    elif source == "env":
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
    else:
        (tmp_path / "hf-home").mkdir()
        (tmp_path / "hf-home" / "token").write_text("hf_secret\n")
    ok(cli(tmp_path / "home", *args))
    hub_requests = [r for r in hub.requests if r.server == "hub"]
    assert hub_requests and all(
        r.headers["authorization"] == "Bearer hf_secret" for r in hub_requests
    )
    # The LFS file came from the CDN (another origin), which never saw the token.
    cdn_requests = [r for r in hub.requests if r.server == "cdn"]
    assert [r.path for r in cdn_requests] == ["onnx/model.onnx"]
    assert "authorization" not in cdn_requests[0].headers


def _readme_only(tmp_path: Path) -> Path:
    kitfile = tmp_path / "readme.Kitfile"
    kitfile.write_text("manifestVersion: 1.0.0\ndocs:\n  - path: README.md\n")
    return kitfile


def test_unknown_revision_is_one_line(hub: Hub, tmp_path: Path) -> None:
    line = fails(cli(tmp_path / "home", "import", REPO, "--ref", "nope"))
    assert line == f"kitfs: reference 'nope' not found in {REPO} at {hub.endpoint}"


def test_interrupted_import_resumes_without_fetching_bytes_again(hub: Hub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    size = len(FILES["model.safetensors"])
    hub.cut_after["model.safetensors"] = 700_000  # every attempt breaks off after 700 kB
    line = fails(cli(home, "import", REPO, "--concurrency", "2"))
    assert "model.safetensors failed after 4 attempts" in line
    first = hub.bytes_sent("model.safetensors")
    assert 0 < first < size
    assert not LocalStore(home / "storage").list_modelkits()
    hub.cut_after.clear()
    ok(cli(home, "import", REPO))
    # Across both runs every byte of the weights crossed the wire exactly once: the second run
    # (and each retry of the first) asked for the rest with Range.
    assert hub.bytes_sent("model.safetensors") == size
    ranges = [r.headers.get("range") for r in hub.file_requests("model.safetensors") if r.sent]
    assert ranges == [None, *(f"bytes={n * 700_000}-" for n in range(1, 5))]
    assert (
        unpacked(home, "acme/tiny-llm:latest", tmp_path / "out")["model.safetensors"]
        == FILES["model.safetensors"]
    )
    for path in ("config.json", "README.md", "onnx/model.onnx"):
        assert hub.bytes_sent(path) == len(FILES[path]), path


def test_mirror_from_hf_endpoint_with_a_path_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    mirror = Hub(repos={REPO: Repo({"main": dict(FILES)})}, prefix="/hf-mirror")
    with serve_hub(mirror):
        monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint + "/")
        # A URL on the mirror's host is recognised as a Hub repository, like huggingface.co URLs.
        home = tmp_path / "home"
        result = ok(cli(home, "import", f"{mirror.endpoint}/{REPO}"))
        assert "Using tag acme/tiny-llm:latest" in result.stdout
    hub_paths = [r.path for r in mirror.requests if r.server == "hub"]
    assert hub_paths and all(p.startswith("/hf-mirror/") for p in hub_paths)
    assert f"/hf-mirror/api/models/{REPO}/tree/main" in hub_paths
    assert f"/hf-mirror/api/models/{REPO}/tree/main/onnx" in hub_paths


def test_imported_files_have_kits_modes(hub: Hub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(cli(home, "import", REPO, "-f", str(_readme_only(tmp_path)), "-t", "m:1"))
    out = tmp_path / "out"
    ok(cli(home, "unpack", "m:1", "-d", str(out)))
    assert stat.S_IMODE(os.stat(out / "README.md").st_mode) & 0o777 in (0o644, 0o600)


def test_bad_arguments_are_one_line(hub: Hub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert "use flag --tag" in fails(cli(home, "import", "too/many/segments"))
    assert "must be at least 1" in fails(cli(home, "import", REPO, "--concurrency", "0"), 2)
    kitfile = tmp_path / "Kitfile"
    kitfile.write_text("manifestVersion: 1.0.0\nmodel:\n  path: missing.bin\n")
    assert "does not exist in acme/tiny-llm" in fails(cli(home, "import", REPO, "-f", str(kitfile)))


def test_progress_shows_bytes_files_and_rate(hub: Hub, tmp_path: Path) -> None:
    result = ok(cli(tmp_path / "home", "--progress", "plain", "import", REPO))
    total = sum(len(v) for k, v in FILES.items() if k != ".gitattributes")
    assert re.search(
        rf"import {REPO}: [0-7]/7 files: 100% \({total}/{total} bytes\)", result.stderr
    )
    assert re.search(rf"Imported 7 files, {total} bytes in [\d.]+s \([\d.]+ MiB/s\)", result.stdout)


def test_ctrl_c_keeps_what_arrived_and_the_next_run_continues(hub: Hub, tmp_path: Path) -> None:
    """A real process interrupted with SIGINT while the CDN hangs mid-file."""
    home = tmp_path / "home"
    size = len(FILES["model.safetensors"])
    hub.stall_after["model.safetensors"] = 1_000_000
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    process = subprocess.Popen(
        [KITFS, "--config", str(home), "import", REPO],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert hub.stalled.wait(30), "the import never reached the weights"
        time.sleep(0.5)  # let the received bytes reach the layer file
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stderr == "kitfs: interrupted\n"
    assert not LocalStore(home / "storage").list_modelkits()
    hub.stall_after.clear()
    hub.release.set()
    before = hub.bytes_sent("model.safetensors")
    ok(cli(home, "import", REPO))
    resumed = [r for r in hub.file_requests("model.safetensors") if r.server == "cdn"][-1]
    start = int(resumed.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1_000_000
    assert hub.bytes_sent("model.safetensors") - before == size - start
    out = unpacked(home, "acme/tiny-llm:latest", tmp_path / "out")
    assert out["model.safetensors"] == FILES["model.safetensors"]


def _valid(path: str, data: bytes) -> dict[str, object]:
    return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{**_valid("../escape", b"x"), "path": "../escape"}], "listed '../escape' inside '.': refused"),
        ([_valid("nested/file.json", b"{}")], "listed 'nested/file.json' inside '.': refused"),
        ([{**_valid("a.json", b"{}"), "oid": "not-a-sha1"}], "gave a.json no valid git oid"),
        ([{**_valid("a.json", b"{}"), "size": -1}], "gave a.json no valid size"),
        ([{**_valid("w.safetensors", b"w"), "lfs": {"oid": "zz", "size": 1}}], "LFS metadata that does not hold together"),
        ([{"type": "symlink", "path": "link"}], "unknown type in repository tree: symlink"),
        ({"not": "a list"}, "not a JSON list"),
    ],
)  # fmt: skip
def test_hostile_listing_is_refused_before_any_download(
    hub: Hub, tmp_path: Path, items: object, message: str
) -> None:
    hub.raw_trees[""] = items
    line = fails(cli(tmp_path / "home", "import", REPO))
    assert message in line
    assert not hub.resolve_requests()


def test_a_file_longer_than_listed_is_refused(hub: Hub, tmp_path: Path) -> None:
    data = FILES["config.json"]
    hub.raw_trees[""] = [{**_valid("config.json", data), "size": len(data) - 5}]
    line = fails(cli(tmp_path / "home", "import", REPO, "-t", "m:1"))
    assert f"the server sends {len(data)} bytes, the Hub API lists {len(data) - 5}" in line
    assert not (tmp_path / "home" / "storage" / "blobs" / "sha256").exists() or not any(
        (tmp_path / "home" / "storage" / "blobs" / "sha256").iterdir()
    )


def test_a_server_that_ignores_range_restarts_the_file_and_its_layer(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The seal follows the download; when the file starts over, so does the layer's seal."""
    monkeypatch.setattr("kitfs.hub.fetch.BACKOFF", 0.01)
    size = len(FILES["model.safetensors"])
    hub.cut_after["model.safetensors"] = 2_000_000
    hub.cut_times["model.safetensors"] = 1
    hub.ignore_range = True
    home = tmp_path / "home"
    with caplog.at_level(logging.INFO, logger="kitfs.hub"):
        ok(cli(home, "import", REPO, "-t", "m:1"))
    assert "the server ignored Range; starting the file again" in caplog.text
    assert hub.bytes_sent("model.safetensors") == 2_000_000 + size
    ranges = [r.headers.get("range") for r in hub.file_requests("model.safetensors") if r.sent]
    assert ranges == [None, "bytes=2000000-"]
    assert (
        unpacked(home, "m:1", tmp_path / "out")["model.safetensors"] == FILES["model.safetensors"]
    )


def test_a_success_drops_the_scratch_state_of_an_older_attempt(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kitfs.hub.fetch.BACKOFF", 0.01)
    home = tmp_path / "home"
    scratch = home / "cache" / "kitfs-import"
    hub.cut_after["model.safetensors"] = 100_000
    fails(cli(home, "import", REPO))
    assert len(list(scratch.iterdir())) == 1  # kept for a resume
    hub.cut_after.clear()
    hub.repos[REPO].revisions["main"]["model.safetensors"] = payload(3 << 20, "new weights")
    ok(cli(home, "import", REPO))  # main moved on: another plan, and the old one is superseded
    assert list(scratch.iterdir()) == []


def test_listing_pages_are_followed(hub: Hub, tmp_path: Path) -> None:
    hub.page_size = 2
    home = tmp_path / "home"
    ok(cli(home, "import", REPO))
    root = [
        r
        for r in hub.requests
        if r.path.startswith(f"/api/models/{REPO}/tree/main") and r.path.count("/") == 6
    ]
    assert len(root) == 4  # 7 items at the top (3 directories, 4 files), 2 a page
    files = unpacked(home, "acme/tiny-llm:latest", tmp_path / "out")
    assert files == {k: v for k, v in FILES.items() if k != ".gitattributes"}


def test_a_listed_file_the_hub_cannot_serve_is_one_line(hub: Hub, tmp_path: Path) -> None:
    hub.raw_trees[""] = [_valid("ghost.json", b"{}")]
    line = fails(cli(tmp_path / "home", "import", REPO))
    assert line == f"kitfs: ghost.json is listed but not found in {REPO} at main"
