"""cosign's tag-based signature format, verified offline against trusted keys.

For manifest digest ``sha256:<hex>`` the signatures are the layers of the OCI manifest
tagged ``sha256-<hex>.sig`` in the same repository. Each layer:

- media type ``application/vnd.dev.cosign.simplesigning.v1+json``;
- blob = the payload ``{"critical": {"identity": {"docker-reference": R},
  "image": {"docker-manifest-digest": D}, "type": "cosign container image signature"},
  "optional": ...}``;
- annotation ``dev.cosignproject.cosign/signature`` = base64 signature over the blob bytes.

Order of checks for each layer: the signature over the bytes exactly as fetched, then the
blob digest, and only then is the payload parsed; it must name digest D and an identity the
rule accepts. One valid layer is enough.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Callable

from authz.moby.gojson import get_obj, get_str, loads
from authz.trust.keys import TrustedKey
from authz.trust.policy import Identity
from authz.trust.registry import RegistryError, RegistryNotFound

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
MAX_SIGNATURE_LAYERS = 32
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SIGNATURE_B64 = 16 * 1024


@dataclass(frozen=True)
class SignatureOutcome:
    """What a signature manifest's layers showed: a valid signature, or why none is."""
    ok: bool
    key: TrustedKey | None = None
    identity: str | None = None       # the signed docker-reference
    found: str = ""                   # one line: what was found
    reasons: tuple[str, ...] = ()     # per layer
    untrusted_only: bool = False      # signatures exist, none by a trusted key


def verify_layers(sig_manifest: dict, fetch_blob: Callable[[str, int], bytes], digest: str,
                  repository: str, keys: tuple[TrustedKey, ...], identity: Identity
                  ) -> SignatureOutcome:
    """Check the layers of a cosign signature manifest for ``digest`` in ``repository``.

    ``fetch_blob(digest, limit)`` returns a blob's bytes (RegistryError on failure).
    Registry *unreachable* and deadline errors propagate; everything else is a reason.
    """
    layers = sig_manifest.get("layers") if isinstance(sig_manifest, dict) else None
    if not isinstance(layers, list) or not layers:
        return SignatureOutcome(False, found="the signature manifest has no layers")
    reasons: list[str] = []
    untrusted = 0
    candidates = 0
    for i, layer in enumerate(layers[:MAX_SIGNATURE_LAYERS], start=1):
        why = _check_layer(i, layer, fetch_blob, digest, repository, keys, identity)
        if isinstance(why, SignatureOutcome):
            return why
        kind, text = why
        if kind != "skip":
            candidates += 1
        if kind == "untrusted":
            untrusted += 1
        reasons.append(f"layer {i}: {text}")
    if len(layers) > MAX_SIGNATURE_LAYERS:
        reasons.append(f"{len(layers) - MAX_SIGNATURE_LAYERS} more layers not checked")
    count = len(layers)
    summary = (f"{count} signature layer{'s' if count != 1 else ''}, none valid: "
               + "; ".join(reasons))
    return SignatureOutcome(False, found=summary, reasons=tuple(reasons),
                            untrusted_only=candidates > 0 and untrusted == candidates)


LayerVerdict = tuple[str, str]   # ("skip" | "bad" | "untrusted", why): a layer that is no signature


@dataclass(frozen=True)
class SignedLayer:
    """A layer that claims to be a cosign signature: the signature and its payload's digest."""
    signature: bytes
    payload_digest: str


def _check_layer(i: int, layer: object, fetch_blob: Callable[[str, int], bytes], digest: str,
                 repository: str, keys: tuple[TrustedKey, ...], identity: Identity
                 ) -> SignatureOutcome | LayerVerdict:
    """Layer ``i``: a valid signature, or why it is not one."""
    signed = _signed_layer(layer)
    if not isinstance(signed, SignedLayer):
        return signed
    if not keys:
        return ("untrusted", "no trusted key to check it with")
    blob_digest = signed.payload_digest
    try:
        payload = fetch_blob(blob_digest, MAX_PAYLOAD_BYTES)
    except RegistryNotFound:
        return ("bad", f"payload blob {blob_digest[:19]}… is missing")
    except RegistryError as exc:
        if exc.unreachable:
            raise
        return ("bad", f"payload blob: {exc}")
    # 1. the signature over the bytes as fetched
    key = next((k for k in keys if k.verify(signed.signature, payload)), None)
    if key is None:
        return ("untrusted", "not signed by a trusted key (or the payload was altered)")
    # 2. the blob is the one the signature manifest names
    actual = "sha256:" + hashlib.sha256(payload).hexdigest()
    if not hmac.compare_digest(actual, blob_digest):
        return ("bad", f"payload bytes hash to {actual[:19]}…, not the layer digest "
                       f"{blob_digest[:19]}…")
    # 3. only now parse what was signed
    return _check_payload(i, payload, key, digest, repository, identity)


def _signed_layer(layer: object) -> SignedLayer | LayerVerdict:
    """The layer's signature and payload digest, or why it has none (nothing fetched yet)."""
    if not isinstance(layer, dict):
        return ("skip", "not an object")
    if layer.get("mediaType") != SIMPLESIGNING_MEDIA_TYPE:
        return ("skip", f"media type {str(layer.get('mediaType'))[:80]!r} is not a cosign "
                        f"simple-signing payload")
    annotations = layer.get("annotations")
    sig_b64 = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(sig_b64, str) or not sig_b64 or len(sig_b64) > MAX_SIGNATURE_B64:
        return ("bad", f"no {SIGNATURE_ANNOTATION} annotation (a keyless or bundle-only "
                       f"signature is not supported)")
    try:
        signature = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError):
        return ("bad", "the signature annotation is not base64")
    blob_digest = layer.get("digest")
    if not isinstance(blob_digest, str) or not blob_digest.startswith("sha256:") \
            or len(blob_digest) != 71:
        return ("bad", "the layer has no sha256 digest")
    size = layer.get("size")
    if isinstance(size, int) and size > MAX_PAYLOAD_BYTES:
        return ("bad", f"payload of {size} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    return SignedLayer(signature, blob_digest)


def _check_payload(i: int, payload: bytes, key: TrustedKey, digest: str, repository: str,
                   identity: Identity) -> SignatureOutcome | LayerVerdict:
    """The signed payload of layer ``i``: it must name ``digest`` and an accepted identity."""
    # with Go's rules, as cosign and containers/image read it: keys match case-insensitively,
    # and a payload that names a field twice is refused (Go would merge or override).
    try:
        data = loads(payload)
        critical = get_obj(data, "critical")
        kind = get_str(critical, "type", "critical")
        signed_digest = get_str(get_obj(critical, "image", "critical"),
                                "docker-manifest-digest", "critical.image")
        signed_ref = get_str(get_obj(critical, "identity", "critical"),
                             "docker-reference", "critical.identity")
        if critical is None:
            raise ValueError("no critical section")
    except (ValueError, AttributeError):  # InvalidJSON is a ValueError
        return ("bad", f"signed by {key.short} but the payload is not a cosign "
                       f"simple-signing payload (or names a field twice)")
    if kind != PAYLOAD_TYPE:
        return ("bad", f"signed by {key.short} but the payload type is {str(kind)[:60]!r}")
    if not isinstance(signed_digest, str) or not hmac.compare_digest(signed_digest, digest):
        return ("bad", f"signed by {key.short} for another image: digest "
                       f"{str(signed_digest)[:80]}")
    if not isinstance(signed_ref, str) or not identity.matches(signed_ref, repository):
        return ("bad", f"signed by {key.short} for identity {str(signed_ref)[:120]!r}, "
                       f"expected {identity.describe(repository)}")
    return SignatureOutcome(True, key=key, identity=signed_ref,
                            found=f"valid signature by {key.short} on {digest} "
                                  f"(layer {i}, identity {signed_ref})")
