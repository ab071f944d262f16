"""dockerd's authorization plugin wire protocol.

dockerd calls ``POST /AuthZPlugin.AuthZReq`` before a request's handler runs and
``POST /AuthZPlugin.AuthZRes`` after it, with a JSON body whose keys are spelled exactly
as below; any of them may be absent. It sends no Content-Type. The answer is
``{"Allow": bool, "Msg": str, "Err": str}`` with HTTP 200; dockerd ignores ``Err`` when
the status is 200, so every failure here is answered as a deny.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from authz.identity import Identity, IdentityError, from_certificates

IMPLEMENTS = {"Implements": ["authz"]}

REQUEST_PHASE = "request"
RESPONSE_PHASE = "response"


class ProtocolError(ValueError):
    """The call from dockerd could not be read."""


class Headers(Mapping[str, str]):
    """A read-only header map looked up case-insensitively (dockerd sends Go's canonical
    names, ``Content-Type``; a crafted or future sender may not)."""

    __slots__ = ("_raw", "_index")

    def __init__(self, raw: Mapping[str, Any] | None):
        self._raw = raw or {}
        self._index: dict[str, tuple[str, str]] | None = None  # made when first read

    @property
    def _items(self) -> dict[str, tuple[str, str]]:
        if self._index is None:
            items: dict[str, tuple[str, str]] = {}
            for key, value in self._raw.items():
                if not isinstance(key, str):
                    continue
                if isinstance(value, list):  # tolerate a multi-valued form
                    value = value[0] if value else ""
                items[key.lower()] = (key, value if isinstance(value, str) else str(value))
            self._index = items
        return self._index

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self):
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class AuthzRequest:
    """One call from dockerd, either phase. ``body`` is None when dockerd forwarded none."""

    phase: str
    user: str = ""
    auth_method: str = ""
    method: str = ""
    uri: str = ""
    body: bytes | None = None
    headers: Headers = field(default_factory=lambda: Headers(None))
    response_status: int | None = None
    response_body: bytes | None = None
    response_headers: Headers = field(default_factory=lambda: Headers(None))
    # Who is asking, read from RequestPeerCertificates (authz/identity.py); None only for a
    # call that could not be read.
    identity: Identity | None = None


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is not a string")
    return value


def _base64(doc: Mapping[str, Any], key: str) -> bytes | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{key} is not valid base64: {exc}") from None


def _headers(doc: Mapping[str, Any], key: str) -> Headers:
    value = doc.get(key)
    if value is None:
        return Headers(None)
    if not isinstance(value, dict):
        raise ProtocolError(f"{key} is not an object")
    return Headers(value)


# dockerd forwards every certificate the TLS client presented (the leaf and whatever chain it
# sent along). A client sends a few; more, or larger, is refused rather than parsed.
MAX_PEER_CERTIFICATES = 8
MAX_CERTIFICATE_DER_BYTES = 16 * 1024
_PEM_BEGIN, _PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


def _pem_certificate(index: int, pem: bytes) -> bytes:
    """The DER of one certificate as moby's PeerCertificate.MarshalJSON writes it: Go's
    pem.EncodeToMemory of one CERTIFICATE block, no headers."""
    try:
        lines = pem.decode("ascii").strip("\n").split("\n")
    except UnicodeDecodeError:
        raise ProtocolError(f"RequestPeerCertificates[{index}] is not PEM") from None
    if len(lines) < 3 or lines[0] != _PEM_BEGIN or lines[-1] != _PEM_END:
        raise ProtocolError(f"RequestPeerCertificates[{index}] is not one PEM CERTIFICATE block")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"RequestPeerCertificates[{index}] has invalid PEM base64") from None
    if not der or len(der) > MAX_CERTIFICATE_DER_BYTES:
        raise ProtocolError(f"RequestPeerCertificates[{index}] is empty or larger than "
                            f"{MAX_CERTIFICATE_DER_BYTES} bytes")
    return der


class _IdentityMemo:
    """Identities by the certificates that carry them: a TLS client sends the same ones on
    every call (and each call twice). Bounded; keyed by a digest, not the certificates."""

    LIMIT = 256

    def __init__(self) -> None:
        self._known: dict[bytes, Identity] = {}
        self._lock = threading.Lock()

    def identity(self, items: list[str]) -> Identity:
        hasher = hashlib.sha256()
        for item in items:  # length-prefixed: no two lists of strings hash the same input
            data = item.encode("utf-8", "surrogatepass")
            hasher.update(len(data).to_bytes(8, "big") + data)
        digest = hasher.digest()
        found = self._known.get(digest)
        if found is not None:
            return found
        ders = []
        for index, item in enumerate(items):
            try:
                pem = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError(f"RequestPeerCertificates[{index}] is not base64") from None
            ders.append(_pem_certificate(index, pem))
        try:
            found = from_certificates(ders)
        except IdentityError as exc:
            raise ProtocolError(str(exc)) from None
        with self._lock:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            self._known[digest] = found
        return found


_IDENTITIES = _IdentityMemo()


def _identity(doc: Mapping[str, Any], user: str) -> Identity:
    """The caller, from the leaf of RequestPeerCertificates (JSON strings: base64 of PEM).
    No certificate is ``anonymous``, whatever ``User`` says; with one, ``User`` must be the
    leaf's CN as Go reads it (the last CN attribute)."""
    value = doc.get("RequestPeerCertificates")
    if value is None or value == []:
        return Identity.anonymous()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError("RequestPeerCertificates is not a list of strings")
    if len(value) > MAX_PEER_CERTIFICATES:
        raise ProtocolError(f"more than {MAX_PEER_CERTIFICATES} peer certificates")
    if any(len(item) > MAX_CERTIFICATE_DER_BYTES * 2 for item in value):
        raise ProtocolError(f"a peer certificate is larger than {MAX_CERTIFICATE_DER_BYTES} bytes")
    identity = _IDENTITIES.identity(value)
    if identity.name != user:
        raise ProtocolError("User is not the client certificate's CN")
    return identity


# The largest call dockerd sends: a request body under 1 MiB (4 MiB from dockerd 29.3.1) and
# a response body of at most 64 KiB, base64-encoded, with their headers and the client's
# certificates. Anything larger is refused unread (its memory is never taken).
MAX_CALL_BYTES = 16 * 1024 * 1024


def parse_call(raw: bytes, phase: str) -> AuthzRequest:
    """Read dockerd's JSON call. Raises ProtocolError on anything unreadable."""
    if len(raw) > MAX_CALL_BYTES:
        raise ProtocolError(f"the call is larger than {MAX_CALL_BYTES} bytes (dockerd sends "
                            "at most a few MiB)")
    try:
        # orjson first (strict RFC 8259, several times faster); whatever it refuses is read
        # by the standard library, which decides (and words) what is and is not JSON here.
        doc = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"the call is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the call is not a JSON object")
    status = doc.get("ResponseStatusCode")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise ProtocolError("ResponseStatusCode is not an integer")
    request_phase = phase == REQUEST_PHASE
    user = _text(doc, "User")
    return AuthzRequest(
        phase=phase,
        user=user,
        auth_method=_text(doc, "UserAuthNMethod"),
        method=_text(doc, "RequestMethod"),
        uri=_text(doc, "RequestUri"),
        # The response phase only records the outcome: bodies are not read there.
        body=_base64(doc, "RequestBody") if request_phase else None,
        headers=_headers(doc, "RequestHeaders"),
        response_status=status,
        response_body=None if request_phase else _base64(doc, "ResponseBody"),
        response_headers=_headers(doc, "ResponseHeaders"),
        identity=_identity(doc, user),
    )


def answer(allow: bool, msg: str = "") -> dict[str, Any]:
    """The reply dockerd reads. ``Err`` stays empty: dockerd ignores it with HTTP 200."""
    return {"Allow": bool(allow), "Msg": msg, "Err": ""}
