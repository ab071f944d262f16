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
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

IMPLEMENTS = {"Implements": ["authz"]}

REQUEST_PHASE = "request"
RESPONSE_PHASE = "response"


class ProtocolError(ValueError):
    """The call from dockerd could not be read."""


class Headers(Mapping[str, str]):
    """A read-only header map looked up case-insensitively (dockerd sends Go's canonical
    names, ``Content-Type``; a crafted or future sender may not)."""

    __slots__ = ("_items",)

    def __init__(self, raw: Mapping[str, Any] | None):
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in (raw or {}).items():
            if not isinstance(key, str):
                continue
            if isinstance(value, list):  # tolerate a multi-valued form
                value = value[0] if value else ""
            self._items[key.lower()] = (key, value if isinstance(value, str) else str(value))

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


def parse_call(raw: bytes, phase: str) -> AuthzRequest:
    """Read dockerd's JSON call. Raises ProtocolError on anything unreadable."""
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the call is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the call is not a JSON object")
    status = doc.get("ResponseStatusCode")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise ProtocolError("ResponseStatusCode is not an integer")
    request_phase = phase == REQUEST_PHASE
    return AuthzRequest(
        phase=phase,
        user=_text(doc, "User"),
        auth_method=_text(doc, "UserAuthNMethod"),
        method=_text(doc, "RequestMethod"),
        uri=_text(doc, "RequestUri"),
        # The response phase only records the outcome: bodies are not read there.
        body=_base64(doc, "RequestBody") if request_phase else None,
        headers=_headers(doc, "RequestHeaders"),
        response_status=status,
        response_body=None if request_phase else _base64(doc, "ResponseBody"),
        response_headers=_headers(doc, "ResponseHeaders"),
    )


def answer(allow: bool, msg: str = "") -> dict[str, Any]:
    """The reply dockerd reads. ``Err`` stays empty: dockerd ignores it with HTTP 200."""
    return {"Allow": bool(allow), "Msg": msg, "Err": ""}
