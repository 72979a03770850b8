"""``--verify-key`` and policies on ``pull``, ``unpack`` and ``mount``: refused before a layer byte is
fetched, written or served, with one line; repository mounts check each tag when it is resolved."""

from __future__ import annotations

import errno
import inspect
import json
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from helpers import cli, fails, ok
from reliability.helpers import Kit, Mounts, fresh_home, is_mounted, run_kitfs, storage_state

from kitfs.fs.source import Source
from kitfs.fs.verified import VerifiedSource
from kitfs.signing.locate import legacy_tag

from .conftest import SMALL_FILES
from .helpers import PASSWORD


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    monkeypatch.delenv("KITFS_POLICY", raising=False)


def sign(kit: Kit, key: Path, home: Path) -> None:
    ok(cli(home, "sign", kit.ref(), "--key", str(key), "--plain-http"))


def layer_requests(proxy: FaultProxy, kit: Kit) -> list[str]:
    layers = {d.digest for d in kit.layers()}
    return [r.path for r in proxy.requests if any(r.path.endswith(d) for d in layers)]


def test_pull_refuses_unsigned_before_fetching_or_writing(
    make,
    key_dir: Path,
    tmp_path: Path,
    fault_proxy: FaultProxy,  # type: ignore[no-untyped-def]
) -> None:
    kit = make()
    home = fresh_home(tmp_path)
    before = storage_state(home)
    ref = f"{fault_proxy.host}/{kit.repository}:{kit.tag}"
    line = fails(cli(home, "pull", ref, "--plain-http", "--verify-key", str(key_dir / "good.pub")))
    assert line.endswith(
        "no signature found (no tag "
        + legacy_tag(kit.digest)
        + ", no sigstore bundle referring to it)"
    )
    assert storage_state(home) == before  # no blob, no manifest, no tag
    assert layer_requests(fault_proxy, kit) == []


def test_pull_of_a_signed_modelkit_stores_it(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    sign(kit, key_dir / "good.key", tmp_path)
    home = tmp_path / "fresh"
    result = ok(
        cli(home, "pull", kit.ref(), "--plain-http", "--verify-key", str(key_dir / "good.pub"))
    )
    assert result.stdout == f"Pulled {kit.digest}\n"
    listed = ok(cli(home, "list", "--format", "json")).stdout
    assert kit.digest in listed


def test_unpack_refuses_wrong_key_and_writes_nothing(make, key_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    sign(kit, key_dir / "other.key", tmp_path)
    target = tmp_path / "out"
    line = fails(
        cli(
            tmp_path / "h",
            "unpack",
            kit.ref(),
            "-d",
            str(target),
            "--plain-http",
            "--verify-key",
            str(key_dir / "good.pub"),
        )
    )
    assert "none verifies with" in line
    assert not target.exists()
    ok(
        cli(
            tmp_path / "h",
            "unpack",
            kit.ref(),
            "-d",
            str(target),
            "--plain-http",
            "--verify-key",
            str(key_dir / "other.pub"),
        )
    )
    assert (target / "model" / "weights.bin").read_bytes() == SMALL_FILES["model/weights.bin"]


def test_unpack_from_local_storage_checks_the_registrys_signatures(
    make, key_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    home = tmp_path / "h"
    ok(cli(home, "pull", kit.ref(), "--plain-http"))  # stored, unverified
    target = tmp_path / "out"
    args = (
        "unpack",
        kit.ref(),
        "-d",
        str(target),
        "--plain-http",
        "--verify-key",
        str(key_dir / "good.pub"),
    )
    assert "no signature found" in fails(cli(home, *args))
    assert not target.exists()
    sign(kit, key_dir / "good.key", tmp_path)
    ok(cli(home, *args))
    assert (target / "data" / "train.csv").read_bytes() == SMALL_FILES["data/train.csv"]


def test_unpack_of_a_local_only_modelkit_cannot_be_verified(key_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "h"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Kitfile").write_text("manifestVersion: 1.0.0\npackage:\n  name: l\n")
    ok(cli(home, "pack", str(tmp_path / "ctx"), "-t", "local/model:v1"))
    line = fails(
        cli(
            home,
            "unpack",
            "local/model:v1",
            "-d",
            str(tmp_path / "out"),
            "--verify-key",
            str(key_dir / "good.pub"),
        )
    )
    assert line.endswith("signatures can only be checked for a ModelKit in a registry")
    assert not (tmp_path / "out").exists()


def test_policy_from_the_environment(
    make, key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    signed, unsigned = make("v1"), make("v2", seed="x")
    sign(signed, key_dir / "good.key", tmp_path)
    policy = tmp_path / "policy.json"
    scope = f"{signed.registry}/{signed.repository}"
    policy.write_text(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        scope: [{"type": "sigstoreSigned", "keyPath": str(key_dir / "good.pub")}]
                    }
                },
            }
        )
    )
    monkeypatch.setenv("KITFS_POLICY", str(policy))
    home = tmp_path / "h"
    ok(cli(home, "pull", signed.ref(), "--plain-http"))
    assert "no signature found" in fails(cli(home, "pull", unsigned.ref(), "--plain-http"))
    elsewhere = make("v1", repository=f"other/{signed.repository}").ref()
    line = fails(cli(home, "pull", elsewhere, "--plain-http"))
    assert line.endswith(f"policy {policy} rejects scope default")
    accept = tmp_path / "accept.json"
    accept.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    ok(cli(home, "pull", unsigned.ref(), "--plain-http", "--policy", str(accept)))


def test_unreadable_policy_is_one_line(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    (tmp_path / "p.json").write_text(
        '{"default": [{"type": "sigstoreSigned", "keyPath": "gone.pub"}]}'
    )
    line = fails(
        cli(tmp_path, "pull", kit.ref(), "--plain-http", "--policy", str(tmp_path / "p.json")), 2
    )
    assert (
        line
        == f"kitfs: policy {tmp_path / 'p.json'}: default[0]: cannot read public key {tmp_path / 'gone.pub'}: No such file or directory"
    )


# -- mounts ------------------------------------------------------------------------------------


def test_mount_refuses_unsigned_before_mounting(
    make,
    key_dir: Path,
    mounts: Mounts,
    fault_proxy: FaultProxy,  # type: ignore[no-untyped-def]
) -> None:
    kit = make()
    ref = f"{fault_proxy.host}/{kit.repository}:{kit.tag}"
    mountpoint, result = mounts.try_mount(ref, "mnt", "--verify-key", str(key_dir / "good.pub"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kitfs: {fault_proxy.host}/{kit.repository}@{kit.digest}: no signature found "
        f"(no tag {legacy_tag(kit.digest)}, no sigstore bundle referring to it)"
    ]
    assert not is_mounted(mountpoint)
    assert list(mountpoint.iterdir()) == []
    assert layer_requests(fault_proxy, kit) == []


def test_mount_serves_a_signed_modelkit(
    make, key_dir: Path, tmp_path: Path, mounts: Mounts
) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    sign(kit, key_dir / "good.key", tmp_path)
    mountpoint = mounts.mount(kit.ref(), "mnt", "--verify-key", str(key_dir / "good.pub"))
    assert (mountpoint / "model" / "model" / "weights.bin").read_bytes() == SMALL_FILES[
        "model/weights.bin"
    ]
    assert f"verified {kit.registry}/{kit.repository}@{kit.digest}" in mounts.log(mountpoint)


def test_repository_mount_checks_each_tag_when_resolved(
    make, key_dir: Path, tmp_path: Path, mounts: Mounts
) -> None:  # type: ignore[no-untyped-def]
    signed, unsigned = make("v1"), make("v2", seed="x")
    sign(signed, key_dir / "good.key", tmp_path)
    repo = f"{signed.registry}/{signed.repository}"
    mountpoint = mounts.mount(repo, "mnt", "--verify-key", str(key_dir / "good.pub"))
    assert (mountpoint / "v1" / "model" / "model" / "weights.bin").read_bytes() == SMALL_FILES[
        "model/weights.bin"
    ]
    with pytest.raises(OSError) as refused:
        (mountpoint / "v2" / "Kitfile").read_bytes()
    assert refused.value.errno == errno.EIO
    assert f"{repo}@{unsigned.digest}: no signature found" in mounts.log(mountpoint)
    sign(unsigned, key_dir / "good.key", tmp_path)  # the tag is checked again at the next access
    expected = unsigned.files["model/weights.bin"]
    assert (mountpoint / "v2" / "model" / "model" / "weights.bin").read_bytes() == expected


def test_mount_option_verify_key(make, key_dir: Path, tmp_path: Path, mounts: Mounts) -> None:  # type: ignore[no-untyped-def]
    kit = make()
    mountpoint, result = mounts.try_mount(
        kit.ref(), "mnt", "-o", f"verify_key={key_dir / 'good.pub'}"
    )
    assert result.returncode == 1 and "no signature found" in result.stderr
    assert not is_mounted(mountpoint)


def test_mount_of_local_storage_with_a_policy_is_refused(
    key_dir: Path, tmp_path: Path, mounts: Mounts
) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Kitfile").write_text("manifestVersion: 1.0.0\npackage:\n  name: l\n")
    ok(cli(mounts.home, "pack", str(tmp_path / "ctx"), "-t", "local/model:v1"))
    mountpoint, result = mounts.try_mount(
        "local/model:v1", "mnt", "--verify-key", str(key_dir / "good.pub")
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "signatures can only be checked for a ModelKit in a registry"
    )
    assert not is_mounted(mountpoint)


def test_verified_source_wraps_every_source_method() -> None:
    # A Source method VerifiedSource does not forward would silently use the base class's: keep
    # the wrapper complete when Source grows (the fetch path is being rewritten).
    methods = {
        name
        for name, _ in inspect.getmembers(Source, inspect.isfunction)
        if not name.startswith("__")
    }
    forwarded = {name for name in methods if name in VerifiedSource.__dict__}
    assert methods - forwarded == set()


def test_verify_key_file_missing_is_one_line(tmp_path: Path) -> None:
    result = run_kitfs(
        tmp_path, "pull", "127.0.0.1:9/a/b:v1", "--verify-key", str(tmp_path / "none.pub")
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == f"kitfs: --verify-key: cannot read public key {tmp_path / 'none.pub'}: No such file or directory\n"
    )
