"""The raw URI as the decision log holds it: without the secrets a query may carry."""

from __future__ import annotations

import re
from urllib.parse import quote

from authz.decoding.uri import go_unescape

# Query parameters whose values may hold secrets (compared after decoding the key, the way
# dockerd reads it: "build%61rgs" is "buildargs").
_SECRET_QUERY_KEYS = frozenset({"buildargs", "authconfig", "registryauth", "x-registry-auth"})
# userinfo in a URL value: /build?remote=https://user:token@host/repo.git
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def _redact_url(value: str) -> str:
    """A URL given as a value (``fromSrc=``, ``remote=``) as scheme://host/path only: its
    userinfo, query and fragment may carry credentials (a pre-signed object-store URL's
    signature, a git host's ``private_token``)."""
    scheme, _, rest = value.partition("://")
    authority, slash, path = rest.partition("/")
    path, q, _ = path.partition("?")
    path, h, _ = path.partition("#")
    host = authority.rsplit("@", 1)[-1] if "@" in authority else authority
    host, aq, _ = host.partition("?")
    host, ah, _ = host.partition("#")
    out = f"{scheme}://" + ("[redacted]@" if "@" in authority else "") + host
    if slash and not (aq or ah):
        out += "/" + path
    if q or h or aq or ah:
        out += "?[redacted]"
    return out


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
        elif "://" in value:
            parts.append(f"{raw_key}={quote(_redact_url(value), safe=':/@[]')}")
        elif _USERINFO.match(value):
            cleaned = _USERINFO.sub(r"\1[redacted]@", value)
            parts.append(f"{raw_key}={quote(cleaned, safe=':/@[]')}")
        else:
            parts.append(pair)
    return f"{path}?{'&'.join(parts)}"
