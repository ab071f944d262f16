"""Request decoding: the one place that knows the Docker API and what each call means.

``decode(call, lookups)`` turns dockerd's AuthZReq into a ``DecodedRequest``: the canonical
endpoint and every fact the policy is asked about, dockerd's state included (read within
the decision's ``Lookups``), or raises ``RequestRefused`` (carrying the target and endpoint
found so far) when the request cannot be read exactly as dockerd will act on it.

The stages, each in its own module: ``uri`` (the target, as Go's net/url and mux read it)
→ ``routes`` (the route table, in mux order) → ``decoders/`` (one function per endpoint
whose content matters, running the ``checks`` registry) → ``state`` (what dockerd's state
adds) → the ``DecodedRequest`` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.decoding import checks
from authz.decoding.canonical import path_budget
from authz.decoding.errors import RequestRefused, refused_json
from authz.decoding.facts import Fact
from authz.decoding.findings import Body, Findings
from authz.decoding.lookups import Lookups
from authz.decoding.routes import (READ_METHODS, decode_route, endpoint_of, match_route,
                                   state_changes)
from authz.decoding.state import DockerState, read_state
from authz.decoding.uri import Target, parse_target
from authz.moby.gojson import InvalidJSON
from authz.protocol import AuthzRequest

__all__ = ["DecodedRequest", "Fact", "Lookups", "RequestRefused", "Target", "decode",
           "read_request", "route_of", "state_changes"]

# Go's ParseForm reads these bodies into the values handlers read as query parameters
# (r.FormValue also reads multipart forms); dockerd never forwards them to the plugin.
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


@dataclass
class DecodedRequest:
    """Every fact about one request, as the policy is asked about it."""

    target: Target
    endpoint: str
    facts: list[Fact]
    # The acted-on containers' stored configuration (and what follows from it), never how
    # this request names them: judged as at create (decision.py).
    stored: list[Fact] = field(default_factory=list)
    image: str = ""          # what the policy's images: patterns are matched against
    # Image trust: ("pull" | "run" | "service", reference), in the order to check them.
    trust_checks: list[tuple[str, str]] = field(default_factory=list)
    # dockerd's own roots, when the request names host paths: (path, what).
    daemon_paths: list[tuple[str, str]] = field(default_factory=list)


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


def _refuse_forms(call: AuthzRequest, target: Target) -> None:
    """A form body is read by dockerd as query values the plugin never sees."""
    if target.method in READ_METHODS:
        return
    content_type = call.headers.get("Content-Type", "")
    if not content_type.isascii():
        # Go lower-cases with Unicode rules that differ from Python's (U+0130 is "i"
        # to Go): a type we cannot read exactly as dockerd does may hide a form.
        raise RequestRefused("request-form-body", "the Content-Type header is not ASCII",
                             "Send a standard ASCII Content-Type.")
    kind = media_type(content_type)
    if kind in _FORM_TYPES:
        raise RequestRefused(
            "request-form-body",
            f"a {kind} body on {target.method} {target.path[:200]}: dockerd merges it "
            "into the query values, and does not show it to the plugin",
            "Send parameters in the URI query (and JSON bodies as application/json).",
        )


def route_of(call: AuthzRequest) -> tuple[Target | None, str]:
    """The target and endpoint name (for the log), or (None, "invalid") when the URI
    itself cannot be read."""
    try:
        target = parse_target(call.method, call.uri)
    except RequestRefused:
        return None, "invalid"
    route, _ = match_route(target.method, target.path)
    return target, endpoint_of(target.method, route)


def read_request(call: AuthzRequest) -> tuple[Target, Findings]:
    """What the request itself says (no dockerd state): its target and findings."""
    try:
        target = parse_target(call.method, call.uri)
        _refuse_forms(call, target)
        route, params = match_route(target.method, target.path)
        return target, decode_route(target, Body(call.body, _maybe_hidden_body(call)),
                                    route, params)
    except InvalidJSON as exc:
        raise refused_json(exc) from None


def decode(call: AuthzRequest, lookups: Lookups) -> DecodedRequest:
    """Every fact about ``call``, dockerd's state included; path resolution and reads are
    bounded per decision (``canonical.path_budget``, ``lookups``)."""
    target, endpoint = None, "invalid"
    try:
        with path_budget():
            target = parse_target(call.method, call.uri)
            route, params = match_route(target.method, target.path)
            endpoint = endpoint_of(target.method, route)
            _refuse_forms(call, target)
            findings = decode_route(target, Body(call.body, _maybe_hidden_body(call)),
                                    route, params)
            endpoint = findings.endpoint
            return _with_state(target, findings, lookups)
    except InvalidJSON as exc:
        refused = refused_json(exc)
    except RequestRefused as exc:
        refused = exc
    refused.target, refused.endpoint = target, endpoint
    raise refused


def _with_state(target: Target, findings: Findings, lookups: Lookups) -> DecodedRequest:
    """The findings completed with what dockerd's state adds."""
    facts, image = list(findings.facts), findings.image
    stored: list[Fact] = []
    started_images: list[str] = []
    daemon_paths: list[tuple[str, str]] = []
    if lookups.docker is not None:
        state = read_state(findings, lookups)
        facts += state.facts
        stored = state.stored
        image = image or state.image
        started_images = state.started_images
        if any(f.kind == "host-path" for f in facts):
            daemon_paths = DockerState(lookups).daemon_paths()
    elif findings.plugin_settings:
        raise RequestRefused("request-state", "plugin settings are resolved against the "
                             "plugin's config in dockerd, and the plugin reads no dockerd state "
                             "(--docker-host '')", "Run pyauthz with --docker-host.")
    else:
        # The image's default user cannot be read: who the container runs as is unknown.
        facts += [Fact("user.root", "unknown", defaults.where, "the image's default user is "
                       "not read (pyauthz reads no dockerd state: --docker-host '')")
                  for defaults in findings.image_defaults if defaults.user]
    derived = checks.auto_restart_facts(facts)
    facts += derived
    trust = [("pull", ref) for ref in findings.pulls]
    trust += [("run", ref) for ref in findings.runs]
    trust += [("service", ref) for ref in findings.services]
    trust += [("run", image_id) for image_id in started_images]
    return DecodedRequest(target, findings.endpoint, facts,
                          [f for f in stored + derived if f.where.startswith("container.")],
                          image, trust, daemon_paths)
