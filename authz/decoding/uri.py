"""The request target as dockerd's router sees it.

dockerd (Go ``net/http`` + gorilla/mux) percent-decodes the path, routes on the decoded
path, accepts an optional ``/vX.Y`` prefix (``[0-9.]+``, compared numerically), and
redirects instead of serving a path that ``path.Clean`` would change. Query values are
read through Go's ``url.ParseQuery``: ``&``-separated, ``+`` is a space, a pair with a
``;`` or a bad escape is an error. Anything we cannot read exactly as Go does is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.decoding.errors import RequestRefused

# The API version dockerd 20.10 assumes when the path carries none.
DEFAULT_API_VERSION = "1.41"

_VERSION_PREFIX = re.compile(r"^/v([0-9.]+)(/.*)$", re.DOTALL)
_HEX = "0123456789abcdefABCDEF"


def go_unescape(text: str, *, query: bool) -> str:
    """Go's ``url.unescape``: strict ``%XX``; in a query ``+`` means a space."""
    if "%" not in text and not (query and "+" in text):
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise ValueError(f"invalid escape {text[i:i + 3]!r}")
            out.append(int(pair, 16))
            i += 3
            continue
        if c == "+" and query:
            out.append(0x20)
        else:
            out += c.encode("utf-8", "surrogatepass")
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("escapes decode to invalid UTF-8") from None


def go_clean(path: str) -> str:
    """gorilla/mux ``cleanPath``: Go's ``path.Clean`` keeping a trailing slash."""
    if path == "":
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


MAX_QUERY_PARAMS = 1024


class Query:
    """Query values in Go's ``url.Values`` order: ``get`` returns the first value, as
    ``r.Form.Get`` does."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, list[str]]):
        self._values = values

    @classmethod
    def parse(cls, raw: str) -> "Query":
        if raw.count("&") >= MAX_QUERY_PARAMS:
            # Real calls carry a handful (filters travel as one JSON value): refuse before
            # any work, so that a 1 MiB request line costs nothing.
            raise RequestRefused("request-uri", f"more than {MAX_QUERY_PARAMS} query parameters",
                                 "Send fewer query parameters.")
        values: dict[str, list[str]] = {}
        for pair in raw.split("&"):
            if pair == "":
                continue
            key, _, value = pair.partition("=")
            shown = key[:40]  # never the value: it may hold a secret (build args, URLs)
            if ";" in pair:
                # Go 1.17+: an error; dockerd's ParseForm then fails the request, but a
                # handler that reads r.URL.Query() just drops the pair. Refuse both ways.
                raise RequestRefused("request-uri", f"query parameter {shown!r} contains ';'",
                                     "Separate query parameters with '&' only.")
            try:
                key = go_unescape(key, query=True)
                value = go_unescape(value, query=True)
            except ValueError:
                raise RequestRefused("request-uri", f"query parameter {shown!r} has an invalid "
                                     "percent-escape or is not UTF-8",
                                     "Percent-encode query values correctly.") from None
            values.setdefault(key, []).append(value)
        return cls(values)

    def get(self, key: str, default: str = "") -> str:
        found = self._values.get(key)
        return found[0] if found else default

    def getall(self, key: str) -> list[str]:
        return list(self._values.get(key, ()))

    def __contains__(self, key: str) -> bool:
        return key in self._values


def version_compare(a: str, b: str) -> int:
    """moby's ``api/types/versions.compare``: dot-separated, numeric, missing or
    unparsable parts count as 0."""
    if a == b:
        return 0
    left, right = a.split("."), b.split(".")
    for i in range(max(len(left), len(right))):
        x = _atoi(left[i]) if i < len(left) else 0
        y = _atoi(right[i]) if i < len(right) else 0
        if x != y:
            return 1 if x > y else -1
    return 0


def _atoi(part: str) -> int:
    # Go's strconv.Atoi: optional sign, ASCII digits; anything else is an error -> 0.
    body = part[1:] if part[:1] in "+-" else part
    if body and body.isascii() and body.isdigit():
        return int(part)
    return 0


@dataclass(frozen=True)
class Target:
    method: str
    path: str               # decoded, without the version prefix: what routes match
    version: str            # the API version the request asked for (or the default)
    explicit_version: bool
    query: Query
    raw_uri: str

    def version_below(self, version: str) -> bool:
        return version_compare(self.version, version) < 0


def parse_target(method: str, raw_uri: str) -> Target:
    """Canonicalize ``RequestMethod`` + ``RequestUri`` or refuse the request."""
    if not method or not method.isascii() or not method.isalpha() or not method.isupper():
        raise RequestRefused("request-uri", f"method {method!r} is not a plain HTTP method",
                             "Send a standard HTTP method.")
    if not raw_uri.startswith("/"):
        raise RequestRefused("request-uri", f"request target {raw_uri[:200]!r} is not origin-form",
                             "Send the path only (no scheme or host, no '*').")
    if "#" in raw_uri:
        raise RequestRefused("request-uri", "request target contains a fragment ('#')",
                             "Remove the '#fragment' from the URI.")
    raw_path, _, raw_query = raw_uri.partition("?")
    try:
        path = go_unescape(raw_path, query=False)
    except ValueError as exc:
        raise RequestRefused("request-uri", f"path {raw_path[:200]!r}: {exc}",
                             "Percent-encode the path correctly.") from None
    if "\x00" in path:
        raise RequestRefused("request-uri", "path contains a NUL byte", "Remove it.")
    if go_clean(path) != path:
        # gorilla/mux answers such a path with a redirect, so no handler runs; a
        # caller that sends one is probing for a mismatch.
        raise RequestRefused("request-uri", f"path {path[:200]!r} is not canonical",
                             f"Use {go_clean(path)[:200]!r}.")
    version, explicit = DEFAULT_API_VERSION, False
    match = _VERSION_PREFIX.match(path)
    if match:
        version, path, explicit = match.group(1), match.group(2), True
        if len(version) > 16:
            raise RequestRefused("request-uri", f"API version {version[:20]!r}... is too long",
                                 "Send a version like v1.41.")
    return Target(method=method, path=path, version=version, explicit_version=explicit,
                  query=Query.parse(raw_query), raw_uri=raw_uri)
