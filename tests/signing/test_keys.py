"""cosign key files: generated, read, refused when truncated, damaged or opened with a wrong password."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from helpers import cli, fails, ok

from kitfs.signing import SigningKeyError
from kitfs.signing.keys import (
    PRIVATE_PEM_TYPE,
    load_private_key,
    load_public_key,
    pem_blocks,
    pem_encode,
    public_pem,
)

from .helpers import PASSWORD, cosign, write_key_pair

# Any registry will do: a key that cannot be used is refused before the network is touched.
NOWHERE = "127.0.0.1:9/acme/model:v1"


def test_generate_key_pair_writes_cosign_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    result = ok(cli(tmp_path / "home", "generate-key-pair"))
    assert result.stderr.splitlines() == [
        "Private key written to cosign.key",
        "Public key written to cosign.pub",
    ]
    private, public = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith(f"-----BEGIN {PRIVATE_PEM_TYPE}-----\n")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    key = load_private_key(private, PASSWORD.encode())
    assert public_pem(key.key.public_key()) == public.read_bytes()
    envelope = json.loads(pem_blocks(private.read_bytes())[0][1])
    assert envelope["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert envelope["cipher"]["name"] == "nacl/secretbox"

    before = private.read_bytes()
    line = fails(cli(tmp_path / "home", "generate-key-pair"), 2)
    assert line == "kitfs: cosign.key already exists: remove it or pass --force"
    assert private.read_bytes() == before


def test_wrong_password_is_refused_in_one_line(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "not the password")
    line = fails(cli(tmp_path, "sign", NOWHERE, "--key", str(key_dir / "good.key")))
    assert (
        line
        == f"kitfs: {key_dir / 'good.key'}: wrong password (COSIGN_PASSWORD) or damaged key file"
    )


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_private_key_is_refused(
    key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: float
) -> None:
    data = (key_dir / "good.key").read_bytes()
    truncated = tmp_path / "truncated.key"
    truncated.write_bytes(data[: int(len(data) * keep)])
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    line = fails(cli(tmp_path, "sign", NOWHERE, "--key", str(truncated)))
    assert "not a cosign private key (truncated?)" in line


def test_damaged_ciphertext_is_refused(key_dir: Path, tmp_path: Path) -> None:
    kind, der = pem_blocks((key_dir / "good.key").read_bytes())[0]
    envelope = json.loads(der)
    sealed = bytearray(base64.b64decode(envelope["ciphertext"]))
    sealed[-1] ^= 1
    envelope["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    damaged = tmp_path / "damaged.key"
    damaged.write_bytes(pem_encode(kind, json.dumps(envelope).encode()))
    with pytest.raises(SigningKeyError, match="wrong password .* or damaged key file"):
        load_private_key(damaged, PASSWORD.encode())


def test_hostile_kdf_parameters_are_refused_before_deriving(key_dir: Path, tmp_path: Path) -> None:
    kind, der = pem_blocks((key_dir / "good.key").read_bytes())[0]
    envelope = json.loads(der)
    envelope["kdf"]["params"]["N"] = 1 << 30  # 1 TiB of scrypt memory
    hostile = tmp_path / "hostile.key"
    hostile.write_bytes(pem_encode(kind, json.dumps(envelope).encode()))
    with pytest.raises(SigningKeyError, match="unacceptable scrypt parameters N=1073741824"):
        load_private_key(hostile, PASSWORD.encode())


def test_older_cosign_pem_type_is_read(key_dir: Path, tmp_path: Path) -> None:
    older = tmp_path / "older.key"
    older.write_bytes(
        (key_dir / "good.key").read_bytes().replace(b"SIGSTORE PRIVATE", b"COSIGN PRIVATE")
    )
    assert b"ENCRYPTED COSIGN PRIVATE KEY" in older.read_bytes()
    key = load_private_key(older, PASSWORD.encode())
    assert public_pem(key.key.public_key()) == (key_dir / "good.pub").read_bytes()


def test_truncated_public_key_is_refused(key_dir: Path, tmp_path: Path) -> None:
    lines = (key_dir / "good.pub").read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.pub"
    cut.write_bytes(lines[0] + lines[1][:20] + lines[-1])
    line = fails(cli(tmp_path, "verify", NOWHERE, "--key", str(cut)))
    assert line == f"kitfs: {cut}: the public key does not parse (truncated or damaged)"
    headless = tmp_path / "headless.pub"
    headless.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(SigningKeyError, match="does not parse"):
        load_public_key(headless)
    with pytest.raises(SigningKeyError, match="holds no PEM 'PUBLIC KEY' block"):
        load_public_key(key_dir / "good.key")


def test_cosign_and_kitfs_read_each_others_keys(
    cosign_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    made = cosign("generate-key-pair")
    assert made.returncode == 0, made.stderr
    theirs = load_private_key(tmp_path / "cosign.key", PASSWORD.encode())
    assert public_pem(theirs.key.public_key()) == (tmp_path / "cosign.pub").read_bytes()

    ours = write_key_pair(tmp_path / "ours")
    shown = cosign("public-key", "--key", str(ours))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.encode() == ours.with_suffix(".pub").read_bytes()
    wrong = cosign("public-key", "--key", str(ours), password="wrong")
    assert wrong.returncode != 0
