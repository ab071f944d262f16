"""Request decoding: the one place that knows the Docker API.

``decode(call)`` turns dockerd's AuthZReq into a ``Decoded``: the canonical endpoint and
the facts the policy is asked about, or raises ``RequestRefused`` when the request cannot
be read exactly as dockerd will act on it.
"""

from __future__ import annotations

from authz.decoding.findings import Body, Findings as Decoded
from authz.decoding.routes import READ_METHODS, decode_route as decode_target
from authz.decoding.errors import RequestRefused, refused_json
from authz.moby.gojson import InvalidJSON
from authz.decoding.facts import Fact
from authz.decoding.uri import Target, parse_target
from authz.protocol import AuthzRequest

__all__ = ["Decoded", "Fact", "RequestRefused", "Target", "decode", "media_type"]

# Go's ParseForm reads these bodies into the values handlers read as query parameters
# (r.FormValue also reads multipart forms); dockerd never forwards them to the plugin.
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value as Go's ``mime.ParseMediaType`` yields it."""
    return content_type.split(";", 1)[0].strip().lower()


def _maybe_hidden_body(call: AuthzRequest) -> bool:
    """Whether a body may exist that dockerd did not forward. Go drops Content-Length (and
    Transfer-Encoding) from chunked requests, and the plugin sees only the last of repeated
    headers while dockerd acts on the first: so a missing Content-Length with a
    Content-Type, or any non-zero length, may hide a body."""
    if call.body:
        return False
    length = call.headers.get("Content-Length")
    if length is None:
        return "Content-Type" in call.headers
    return length.strip() != "0"


def decode(call: AuthzRequest) -> tuple[Target, Decoded]:
    try:
        return _decode(call)
    except InvalidJSON as exc:
        raise refused_json(exc) from None


def _decode(call: AuthzRequest) -> tuple[Target, Decoded]:
    target = parse_target(call.method, call.uri)
    if target.method not in READ_METHODS:
        content_type = call.headers.get("Content-Type", "")
        if not content_type.isascii():
            # Go lower-cases with Unicode rules that differ from Python's (U+0130 is "i"
            # to Go): a type we cannot read exactly as dockerd does may hide a form.
            raise RequestRefused("request-form-body",
                                 "the Content-Type header is not ASCII",
                                 "Send a standard ASCII Content-Type.")
        kind = media_type(content_type)
        if kind in _FORM_TYPES:
            raise RequestRefused(
                "request-form-body",
                f"a {kind} body on {target.method} {target.path[:200]}: dockerd merges it "
                "into the query values, and does not show it to the plugin",
                "Send parameters in the URI query (and JSON bodies as application/json).",
            )
    body = Body(call.body, _maybe_hidden_body(call))
    return target, decode_target(target, body)
