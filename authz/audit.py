"""The decision log: one JSON line per decision, for auditors.

Written with structlog to stdout or to a file opened for appending without buffering, so
that each line is a single write(2) and lines from several worker processes never
interleave. It never holds a secret: no request body, no Env values, no credentials; the
build arguments in a /build URI are redacted.
"""

from __future__ import annotations

import json
import re
import sys
from urllib.parse import quote
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from authz.decision import Decision
from authz.decoding.uri import go_unescape
from authz.protocol import AuthzRequest

# Query parameters whose values may hold secrets (compared after decoding the key, the way
# dockerd reads it: "build%61rgs" is "buildargs").
_SECRET_QUERY_KEYS = frozenset({"buildargs", "authconfig", "registryauth", "x-registry-auth"})
# userinfo in a URL value: /build?remote=https://user:token@host/repo.git
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def _serialize(event: dict[str, Any], **kwargs: Any) -> bytes:
    # ensure_ascii: a lone surrogate from a request must not make the line unwritable.
    return json.dumps(event, separators=(",", ":"), default=str, ensure_ascii=True).encode()


def make_logger(log_file: Path | None) -> Any:
    stream: BinaryIO
    if log_file is None:
        stream = sys.stdout.buffer
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_file, "ab", buffering=0)  # noqa: SIM115 - lives as long as the app
    return structlog.wrap_logger(
        structlog.BytesLogger(stream),
        processors=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        cache_logger_on_first_use=True,
    )


def redact_uri(uri: str) -> str:
    """The raw URI for the log, without secrets: values of secret-bearing parameters and
    credentials in URL values are replaced; an undecodable pair is dropped to its key."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = []
    for pair in query.split("&"):
        raw_key, eq, raw_value = pair.partition("=")
        try:
            key = go_unescape(raw_key, query=True)
            value = go_unescape(raw_value, query=True)
        except ValueError:
            parts.append(f"{raw_key[:40]}=[undecodable]" if eq else raw_key[:40])
            continue
        if not eq:
            parts.append(raw_key)
        elif key.lower() in _SECRET_QUERY_KEYS:
            parts.append(f"{raw_key}=[redacted]")
        elif _USERINFO.match(value):
            cleaned = _USERINFO.sub(r"\1[redacted]@", value)
            parts.append(f"{raw_key}={quote(cleaned, safe=':/@[]')}")
        else:
            parts.append(pair)
    return f"{path}?{'&'.join(parts)}"


def decision_event(call: AuthzRequest, decision: Decision, revision: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "decision_id": decision.id,
        "phase": decision.phase,
        "user": call.user or None,
        "auth_method": call.auth_method or None,
        "method": call.method,
        "endpoint": decision.endpoint,
        "path": decision.target.path if decision.target else None,
        "api_version": decision.target.version if decision.target else None,
        "uri": redact_uri(call.uri)[:2048],
        "allow": decision.allow,
        "facts": [{"kind": f.kind, "value": f.value, "where": f.where} for f in decision.facts],
        "violations": [v.as_log() for v in decision.violations],
        "policy_revision": revision,
        "duration_ms": round(decision.duration_ms, 3),
    }
    if decision.audits:
        event["audit_violations"] = [v.as_log() for v in decision.audits]
    if decision.exemptions:
        event["exemptions"] = [e.as_log() for e in decision.exemptions]
    if decision.images:
        event["images"] = decision.images
    if call.response_status is not None:
        event["status"] = call.response_status
    return event
