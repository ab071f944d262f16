"""Why a request is refused before any policy is asked."""

from __future__ import annotations

from authz.moby.gojson import InvalidJSON


class RequestRefused(Exception):
    """The request cannot be read exactly as dockerd will read it: deny it.

    ``rule`` is a built-in rule id (``request-*``); these are not policy choices and no
    exception in a policy lifts them.
    """

    def __init__(self, rule: str, found: str, fix: str):
        super().__init__(f"[{rule}] {found}")
        self.rule = rule
        self.found = found
        self.fix = fix
        # What decoding had found when it refused (for the decision and the log).
        self.target = None
        self.endpoint = "invalid"


def refused_json(exc: InvalidJSON) -> RequestRefused:
    """A body (or stored config) Go would not read the same way, as a refusal."""
    rule = "request-ambiguous" if exc.ambiguous else "request-body-invalid"
    return RequestRefused(rule, exc.found, exc.fix)
