"""``unpack`` reads each layer once: verified while its files are staged in a hidden directory of
the target (kitfs.staging), renamed into place only after every layer passed; from a registry the
staging runs as the bytes arrive (kitfs.onepass). Real pack, real registry, the fault proxy."""

from __future__ import annotations

import builtins
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from faultproxy import Fault, FaultProxy, blob_get
from helpers import WHOLE, cli, fails, files_under, kitfs, make_tree, manifest_json, ok

from kitfs.staging import PREFIX

KITFILE = """manifestVersion: 1.0.0
package:
  name: onepass
model:
  name: m
  path: model
datasets:
  - name: d
    path: data
code:
  - path: src
"""
FILES: dict[str, str | bytes] = {
    "model/weights.bin": os.urandom(3 << 20),
    "model/config.json": '{"a": 1}\n',
    "data/rows.csv": "x,y\n" + "1,2\n" * 50_000,
    "src/run.py": "print('hi')\n",
}


def _home(tmp_path: Path, compression: str) -> Path:
    home = tmp_path / "home"
    make_tree(tmp_path / "ctx", {**FILES, "Kitfile": KITFILE})
    ok(
        cli(
            home, "pack", str(tmp_path / "ctx"), "-t", "op:v1", "--compression", compression, *WHOLE
        )
    )
    return home


def _blobs(home: Path) -> list[Path]:
    tags = __import__("json").loads((home / "storage" / "bG9jYWxob3N0L29w-tags.json").read_bytes())
    manifest = manifest_json(home, tags["v1"]["digest"])
    return [
        home / "storage" / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
        for layer in manifest["layers"]
    ]


def _unpacked(out: Path) -> dict[str, bytes]:
    return {rel: (out / rel).read_bytes() for rel in files_under(out) if rel != "Kitfile"}


def _expected() -> dict[str, bytes]:
    return {k: v.encode() if isinstance(v, str) else v for k, v in FILES.items()}


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("weights", [3 << 20, 9 << 20])  # below and above the read-ahead size
def test_each_layer_blob_is_opened_once(
    tmp_path: Path, compression: str, weights: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {**FILES, "model/weights.bin": os.urandom(weights)}
    home = tmp_path / "home"
    make_tree(tmp_path / "ctx", {**files, "Kitfile": KITFILE})
    ok(
        cli(
            home, "pack", str(tmp_path / "ctx"), "-t", "op:v1", "--compression", compression, *WHOLE
        )
    )
    blobs = {str(blob) for blob in _blobs(home)}
    opened: Counter[str] = Counter()
    real_open = builtins.open

    def counting(file: object, *args: object, **kwargs: object) -> object:
        if str(file) in blobs:
            opened[Path(str(file)).name] += 1
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    # A spy on every open of this process (the bytes are still real): the verifying pass and
    # any extracting pass both open the blob, whichever function does it.
    monkeypatch.setattr(builtins, "open", counting)
    out = tmp_path / "out"
    ok(cli(home, "unpack", "op:v1", "-d", str(out)))
    monkeypatch.undo()
    expected = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    assert _unpacked(out) == expected
    assert opened == Counter({Path(blob).name: 1 for blob in blobs})
    assert not [p for p in os.listdir(out) if p.startswith(PREFIX)]


def test_a_bad_last_layer_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    home = _home(tmp_path, "gzip")
    last = _blobs(home)[-1]
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x01
    last.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = fails(cli(home, "unpack", "op:v1", "-d", str(out)))
    assert "failed verification" in line
    # The layers before it were staged, and are gone with the staging directory.
    assert sorted(os.listdir(out)) == ["keep.txt"]


def test_a_dead_unpacks_staging_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    home = _home(tmp_path, "none")
    out = tmp_path / "out"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / f"{PREFIX}{dead.pid}-0123456789ab"
    live = out / f"{PREFIX}{os.getppid()}-ba9876543210"
    for d in (stale, live):
        d.mkdir(parents=True)
        (d / "1").write_bytes(b"half")
    ok(cli(home, "unpack", "op:v1", "-d", str(out)))
    assert not stale.exists() and live.exists()
    assert _unpacked(out) == {**_expected(), f"{live.name}/1": b"half"}


def _gets(proxy: FaultProxy) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in proxy.requests if blob_get(r)]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_a_remote_unpack_stages_files_as_the_layers_arrive(
    tmp_path: Path, compression: str, fault_proxy: FaultProxy, repo_name: str
) -> None:
    home = _home(tmp_path, compression)
    ref = f"{fault_proxy.host}/{repo_name}:v1"
    ok(kitfs(home, "tag", "op:v1", ref))
    ok(kitfs(home, "push", ref, "--plain-http"))
    fault_proxy.requests.clear()
    out = tmp_path / "out"
    fresh = tmp_path / "fresh"
    result = ok(kitfs(fresh, "-v", "unpack", ref, "-d", str(out), "--plain-http"))
    assert _unpacked(out) == _expected()
    layers = ["sha256:" + blob.name for blob in _blobs(home)]
    fetched = [digest for digest in _gets(fault_proxy) if digest in layers]
    assert sorted(fetched) == sorted(layers)  # each layer fetched once, whole
    assert result.stderr.count("read in one pass as it arrived") == len(layers)
    assert not [p for p in os.listdir(out) if p.startswith(PREFIX)]
    scratch = fresh / "cache" / "unpack"
    assert not scratch.exists() or files_under(scratch) == set()


def test_a_flipped_byte_in_a_remote_layer_writes_nothing(
    tmp_path: Path, fault_proxy: FaultProxy, repo_name: str
) -> None:
    home = _home(tmp_path, "gzip")
    ref = f"{fault_proxy.host}/{repo_name}:v1"
    ok(kitfs(home, "tag", "op:v1", ref))
    ok(kitfs(home, "push", ref, "--plain-http"))
    weights = _blobs(home)[0].name  # the model layer, the largest
    fault_proxy.add_rule(
        lambda r: Fault(corrupt_at=5000) if blob_get(r) and r.path.endswith(weights) else None
    )
    out = tmp_path / "out"
    line = fails(kitfs(tmp_path / "fresh", "unpack", ref, "-d", str(out), "--plain-http"))
    assert f"sha256:{weights}" in line and "failed verification" in line
    assert not out.exists() or os.listdir(out) == []


KIT = Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "kit"
if not KIT.exists():
    KIT = Path("/work/shared/tools/kit")


@pytest.mark.skipif(not KIT.exists(), reason=f"kit v1.7.0 binary not found at {KIT}")
def test_kit_unpacks_a_corrupted_blob_that_kitfs_refuses(tmp_path: Path) -> None:
    """What the benchmarks' unpack rows compare: kit v1.7.0 does not hash a layer it unpacks from
    its local storage, kitfs does (so its unpack costs at least one sha256 pass more)."""
    home = _home(tmp_path, "none")
    weights = _blobs(home)[0]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside model/weights.bin's data
    weights.write_bytes(bytes(data))
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    kit_out = tmp_path / "kit-out"
    done = subprocess.run(
        [str(KIT), "--config", str(home), "unpack", "op:v1", "-d", str(kit_out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (kit_out / "model" / "weights.bin").read_bytes() != FILES["model/weights.bin"]
    line = fails(cli(home, "unpack", "op:v1", "-d", str(tmp_path / "kitfs-out")))
    assert f"sha256:{weights.name} failed verification" in line


def test_a_large_local_blob_hashed_ahead_still_reports_corruption_first(tmp_path: Path) -> None:
    """Blobs of 8 MiB or more are read and hashed in a second thread (kitfs.layers.readahead):
    a byte flipped near the start breaks decompression first, yet the error is the digest's."""
    home = tmp_path / "home"
    make_tree(
        tmp_path / "ctx",
        {"Kitfile": KITFILE.split("datasets:")[0], "model/w.bin": os.urandom(9 << 20)},
    )
    ok(cli(home, "pack", str(tmp_path / "ctx"), "-t", "op:v1", "--compression", "gzip", *WHOLE))
    blob = _blobs(home)[0]
    data = bytearray(blob.read_bytes())
    data[40] ^= 0xFF
    blob.write_bytes(bytes(data))
    line = fails(cli(home, "unpack", "op:v1", "-d", str(tmp_path / "out")))
    assert line.startswith(f"kitfs: layer sha256:{blob.name} failed verification: expected ")
