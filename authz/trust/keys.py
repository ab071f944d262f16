"""Trusted public keys: PEM ``PUBLIC KEY`` files, fingerprints, signature checks.

cosign's key-based signatures are, per key type (sigstore's ``signature.LoadVerifier``
defaults): ECDSA (P-256; P-384/P-521 accepted) with SHA-256 over the payload, DER-encoded;
RSA PKCS#1 v1.5 with SHA-256; Ed25519 over the payload itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

_EC_CURVES = {"secp256r1": "ECDSA-P256", "secp384r1": "ECDSA-P384", "secp521r1": "ECDSA-P521"}
MIN_RSA_BITS = 2048
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeyFileError(ValueError):
    """A key file that cannot be used."""


def fingerprint(public_key: PublicKey) -> str:
    """``sha256:`` + hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class TrustedKey:
    """A public key trust.yaml trusts, by name."""
    name: str
    kind: str            # "ECDSA-P256", "RSA-3072", "Ed25519"
    fingerprint: str
    source: str          # "keys/team.pub" or "trust.yaml:12" (inline)
    public_key: object = field(repr=False, compare=False)

    @property
    def short(self) -> str:
        """``name (sha256:9f2c6d0e1a7b…)`` for messages."""
        return f"{self.name} ({self.fingerprint[:19]}…)"

    def verify(self, signature: bytes, payload: bytes) -> bool:
        """True when ``signature`` is this key's signature over exactly ``payload``."""
        key = self.public_key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, payload)
            else:  # pragma: no cover - load_public_key rejects other types
                return False
        except (InvalidSignature, ValueError):
            return False
        return True


def load_public_key(pem: bytes, name: str, source: str) -> TrustedKey:
    """Parse one PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo); refuse private keys and odd types."""
    text = pem.decode("ascii", errors="replace")
    if "PRIVATE KEY" in text:
        raise KeyFileError(f"{source}: is a PRIVATE key; trust.yaml takes the public key "
                        f"(cosign.pub, not cosign.key)")
    if text.count("-----BEGIN ") != 1 or "-----BEGIN PUBLIC KEY-----" not in text:
        raise KeyFileError(f"{source}: expected exactly one PEM block '-----BEGIN PUBLIC KEY-----'")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: not a valid PEM public key ({exc})") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        kind = _EC_CURVES.get(key.curve.name)
        if kind is None:
            raise KeyFileError(f"{source}: ECDSA curve {key.curve.name} is not supported "
                            f"(use P-256, as `cosign generate-key-pair` does)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"{source}: RSA key of {key.key_size} bits is too small "
                            f"(at least {MIN_RSA_BITS})")
        kind = f"RSA-{key.key_size}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        kind = "Ed25519"
    else:
        raise KeyFileError(f"{source}: unsupported key type {type(key).__name__} "
                        f"(ECDSA P-256, RSA or Ed25519)")
    return TrustedKey(name=name, kind=kind, fingerprint=fingerprint(key), source=source,
                      public_key=key)
