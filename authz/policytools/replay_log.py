"""Reading the decision log for replay: its lines (gzip, stdin), the fields of a
request-phase line, and what they rebuild: the request as decoded, the subject, and image
trust as it answered then."""

from __future__ import annotations

import gzip
import io
import sys
from typing import Any, Iterator

from authz.decision import ANONYMOUS, decide
from authz.decoding import DecodedRequest, Fact

# A line longer than this is not read (the plugin writes none near it: all_facts is capped
# at 256 KiB, the URI at 2 KiB).
MAX_LINE_BYTES = 4 * 1024 * 1024


class LineError(ValueError):
    """A decision line that cannot be replayed as written."""


def list_field(line: dict, key: str) -> list:
    """The line's list ``key`` (empty when absent; LineError when not a list)."""
    value = line.get(key, [])
    if not isinstance(value, list):
        raise LineError(f"{key} is not a list")
    return value


def text_field(obj: Any, key: str, default: str | None = None) -> str:
    """The string ``key`` of ``obj`` (LineError when missing or not a string)."""
    value = obj.get(key, default) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        raise LineError(f"{key!r} is missing or not a string")
    return value


def rule_id(violation: Any) -> str:
    """The rule id of a logged violation."""
    return text_field(violation, "rule")


def rebuild_request(line: dict) -> DecodedRequest:
    """The DecodedRequest the line's decision was made on (no target: deciding does not
    read it; no dockerd roots: the floor is kept as recorded)."""
    facts: list[Fact] = []
    stored: list[Fact] = []
    for entry in list_field(line, "all_facts"):
        fact = Fact(text_field(entry, "kind"), text_field(entry, "value"),
                    text_field(entry, "where"), text_field(entry, "detail", ""))
        facts.append(fact)
        if entry.get("stored") is True:
            stored.append(fact)
    checks = [("run", text_field(image, "image", "")) for image in list_field(line, "images")]
    return DecodedRequest(None, text_field(line, "endpoint"), facts, stored,  # type: ignore[arg-type]
                          text_field(line, "policy_image", ""), checks, [])


class RecordedTrust:
    """Image trust as it answered then: the line's ``images`` results, in order (a
    candidate rules.yaml does not change them; trust.yaml is not replayed)."""

    def __init__(self, images: list):
        from authz.trust.result import TrustResult

        self._results = []
        for image in images:
            if not isinstance(image, dict) or not isinstance(image.get("trust_allowed"), bool):
                raise LineError("an images entry without trust_allowed")
            self._results.append(TrustResult(
                image["trust_allowed"], text_field(image, "trust_rule"),
                text_field(image, "image", ""), image.get("image_digest"),
                image.get("key_fingerprint"), text_field(image, "trust_found", ""), "",
                expected=text_field(image, "trust_expected", ""),
                key_name=image.get("key_name"), policy=image.get("trust_policy"),
                image_id=image.get("image_id"), cached=bool(image.get("trust_cached"))))
        self._next = 0

    def _take(self, reference: str, deadline=None):
        result = self._results[self._next]
        self._next += 1
        return result

    check_pull = check_run = check_service = _take


def _decide_takes_identity() -> bool:
    """Whether the running decide() takes an ``authz.identity.Identity`` subject (certificate
    identities, issue 9 item 7) rather than the user string."""
    return "Identity" in str(decide.__annotations__.get("subject", ""))


def subject_of(line: dict) -> tuple[Any, str]:
    """The subject to decide with, exactly as the live decision had it, and its name for
    the report. With certificate identities, the line's ``identity`` (``Identity.from_log``);
    a line from before they were logged knows only the user (its certificate's CN), which
    ``Identity.named`` rebuilds without the certificate's other fields. Without them, the
    user string (``anonymous`` on the unix socket), as the plugin passes it."""
    user = line.get("user") or ANONYMOUS
    if not isinstance(user, str):
        raise LineError("user is not a string")
    if not _decide_takes_identity():
        return user, user
    from authz.identity import Identity, IdentityError

    logged = line.get("identity")
    try:
        identity = (Identity.from_log(logged) if logged is not None
                    else Identity.named(user) if line.get("user") else Identity.anonymous())
    except IdentityError as exc:
        raise LineError(f"identity: {exc}") from None
    return identity, identity.name


def _open(path: str) -> io.BufferedIOBase:
    """A log file's bytes: stdin for ``-``, gunzipped when it ends in .gz."""
    if path == "-":
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a log file (gzip when it ends in .gz; ``-``: stdin); OSError
    when it cannot be read."""
    stream = _open(path)
    try:
        for number, raw in enumerate(stream, 1):
            yield number, raw
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
