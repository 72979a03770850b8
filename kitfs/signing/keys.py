"""cosign's key files: ``PUBLIC KEY`` PEM (PKIX) and the encrypted private key PEM.

``cosign generate-key-pair`` writes the private key as PEM type ``ENCRYPTED SIGSTORE PRIVATE KEY``
(older releases: ``ENCRYPTED COSIGN PRIVATE KEY``) holding JSON from go-securesystemslib's
``encrypted`` package: an scrypt KDF (N, r, p, salt) and a nacl secretbox (XSalsa20-Poly1305) of the
PKCS#8 DER key. Signatures follow cosign's defaults (sigstore ``signature.LoadSignerVerifier`` with
SHA-256): ECDSA and RSA PKCS#1 v1.5 over the SHA-256 of the message, Ed25519 over the message itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from kitfs.signing import SigningKeyError

PRIVATE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
LEGACY_PRIVATE_PEM_TYPES = ("ENCRYPTED COSIGN PRIVATE KEY",)
PUBLIC_PEM_TYPE = "PUBLIC KEY"
MAX_KEY_FILE = 64 * 1024
# cosign's parameters (go-securesystemslib encrypted.Encrypt via sigstore cryptoutils).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 65536, 8, 1
SALT_SIZE = 32
# A key file is input too: its KDF parameters may not make us spend more than this much memory.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024  # 4x what cosign's own keys take

VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class PublicKey:
    """A verification key and the name to show for it (its file)."""

    name: str
    key: VerifyingKey

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message`` (cosign's hashing)."""
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:
                self.key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def verify_digest(self, signature: bytes, sha256: bytes) -> bool:
        """Whether ``signature`` signs a message whose SHA-256 is ``sha256`` (Ed25519 cannot)."""
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, sha256, ec.ECDSA(Prehashed(hashes.SHA256())))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, sha256, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
            else:
                return False
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    """A signing key from a cosign key file."""

    name: str
    key: SigningKey

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return self.key.sign(message)

    def public(self) -> PublicKey:
        return PublicKey(self.name, self.key.public_key())


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise SigningKeyError(f"{what} {path} is larger than {MAX_KEY_FILE} bytes: not a key file")
    return data


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """The (type, DER bytes) of each complete PEM block in ``data``."""
    blocks: list[tuple[str, bytes]] = []
    lines = data.decode("ascii", "replace").splitlines()
    kind: str | None = None
    body: list[str] = []
    for line in (raw.strip() for raw in lines):
        if kind is None:
            if line.startswith("-----BEGIN ") and line.endswith("-----"):
                kind, body = line[len("-----BEGIN ") : -5], []
        elif line == f"-----END {kind}-----":
            try:
                blocks.append((kind, base64.b64decode("".join(body), validate=True)))
            except binascii.Error:
                return blocks
            kind = None
        elif ":" not in line:  # RFC 1421 headers are not used by cosign
            body.append(line)
    return blocks


def pem_encode(kind: str, der: bytes) -> bytes:
    """PEM as Go's ``pem.Encode`` writes it (64-character lines)."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return ("\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"]) + "\n").encode()


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """A ``PUBLIC KEY`` PEM file such as ``cosign generate-key-pair`` writes (cosign.pub)."""
    file = Path(path)
    return parse_public_key(_read(file, "public key"), str(file))


def parse_public_key(data: bytes, name: str) -> PublicKey:
    """A public key from PEM text; ``name`` says where it came from in messages."""
    blocks = [der for kind, der in pem_blocks(data) if kind == PUBLIC_PEM_TYPE]
    if not blocks and f"-----BEGIN {PUBLIC_PEM_TYPE}-----".encode() in data:
        raise SigningKeyError(f"{name}: the public key does not parse (truncated or damaged)")
    if not blocks:
        raise SigningKeyError(f"{name} holds no PEM 'PUBLIC KEY' block: not a cosign public key")
    try:
        key = serialization.load_der_public_key(blocks[0])
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(
            f"{name}: the public key does not parse (truncated or damaged)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise SigningKeyError(f"{name}: unsupported key type {type(key).__name__}")
    return PublicKey(name, key)


def _field(raw: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(raw, dict) or name not in raw:
            raise KeyError(name)
        raw = raw[name]
    return raw


def _b64(raw: Any) -> bytes:
    if not isinstance(raw, str):
        raise ValueError("not a string")
    return base64.b64decode(raw, validate=True)


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    memory = 128 * n * r * p + 1024 * 1024
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or memory > MAX_SCRYPT_MEMORY:
        raise ValueError(f"unacceptable scrypt parameters N={n} r={r} p={p}")
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=memory, dklen=32)


def decrypt_private_key(data: bytes, password: bytes, name: str) -> bytes:
    """The PKCS#8 DER inside a cosign encrypted key PEM (a SigningKeyError on a wrong password)."""
    blocks = [
        der
        for kind, der in pem_blocks(data)
        if kind in (PRIVATE_PEM_TYPE, *LEGACY_PRIVATE_PEM_TYPES)
    ]
    if not blocks:
        raise SigningKeyError(
            f"{name} holds no complete '{PRIVATE_PEM_TYPE}' PEM block: not a cosign private key (truncated?)"
        )
    try:
        envelope = json.loads(blocks[0])
        if _field(envelope, "kdf", "name") != "scrypt":
            raise ValueError(f"unsupported KDF {_field(envelope, 'kdf', 'name')!r}")
        if _field(envelope, "cipher", "name") != "nacl/secretbox":
            raise ValueError(f"unsupported cipher {_field(envelope, 'cipher', 'name')!r}")
        params = [int(_field(envelope, "kdf", "params", k)) for k in ("N", "r", "p")]
        salt = _b64(_field(envelope, "kdf", "salt"))
        nonce = _b64(_field(envelope, "cipher", "nonce"))
        ciphertext = _b64(_field(envelope, "ciphertext"))
        if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
            raise ValueError("the nonce has the wrong size")
        key = _derive(password, salt, *params)
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        raise SigningKeyError(f"{name}: the encrypted key is malformed ({exc})") from None
    try:
        return nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise SigningKeyError(
            f"{name}: wrong password (COSIGN_PASSWORD) or damaged key file"
        ) from None


def load_private_key(path: str | os.PathLike[str], password: bytes) -> PrivateKey:
    """A cosign private key file (cosign.key), decrypted with ``password``."""
    file = Path(path)
    der = decrypt_private_key(_read(file, "private key"), password, str(file))
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{file}: the decrypted key is not a PKCS#8 private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise SigningKeyError(f"{file}: unsupported key type {type(key).__name__}")
    return PrivateKey(str(file), key)


def _go_json(value: Any) -> bytes:
    """Compact JSON as Go's ``json.Marshal`` writes it for these records (ASCII, no spaces)."""
    return json.dumps(value, separators=(",", ":")).encode()


def encrypt_private_key(der: bytes, password: bytes, *, scrypt_n: int = SCRYPT_N) -> bytes:
    """``der`` (PKCS#8) as the encrypted PEM ``cosign generate-key-pair`` writes (a smaller
    ``scrypt_n`` makes cheaper keys, for tests: readers take N from the file)."""
    salt = os.urandom(SALT_SIZE)
    nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    key = _derive(password, salt, scrypt_n, SCRYPT_R, SCRYPT_P)
    sealed = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
    envelope = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return pem_encode(PRIVATE_PEM_TYPE, _go_json(envelope))


def public_pem(key: VerifyingKey) -> bytes:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem_encode(PUBLIC_PEM_TYPE, der)


def generate_key_pair(password: bytes, *, scrypt_n: int = SCRYPT_N) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key pair as (cosign.key, cosign.pub) file contents, as cosign makes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return encrypt_private_key(der, password, scrypt_n=scrypt_n), public_pem(key.public_key())
