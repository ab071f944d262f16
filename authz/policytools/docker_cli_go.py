"""How Go and the docker CLI's helper libraries read and write values, for
``docker_cli``: strconv, time.ParseDuration, go-units sizes, encoding/csv (one record),
encoding/json's encoder, net/url's path and query escaping, path.Clean, net.ParseIP.

Each function refuses (``CliError``) what the real parser would refuse, and also what it
does not model exactly: a value is never guessed.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Any

from authz.policytools.docker_cli_errors import CliError

_INT_RE = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")


def parse_bool(flag: str, text: str) -> bool:
    """strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise CliError(f"invalid argument {text!r} for {flag}: strconv.ParseBool: "
                   f"parsing {text!r}: invalid syntax")


def parse_int(flag: str, text: str, bits: int = 64, unsigned: bool = False, base0: bool = True) -> int:
    """strconv.ParseInt/ParseUint (pflag uses base 0: ``0x10``, ``010`` octal, ``0b1``).
    Underscores (accepted by Go with base 0) are refused as not modelled."""
    if base0:
        if not _INT_RE.match(text):
            raise CliError(f"invalid argument {text!r} for {flag}: not an integer the CLI reads")
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        low = digits.lower()
        if low.startswith("0x"):
            value = int(digits[2:], 16)
        elif low.startswith("0o"):
            value = int(digits[2:], 8)
        elif low.startswith("0b"):
            value = int(digits[2:], 2)
        elif digits.startswith("0") and len(digits) > 1:
            value = int(digits[1:], 8)
        else:
            value = int(digits, 10)
        value *= sign
    else:
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise CliError(f"invalid argument {text!r} for {flag}: not an integer")
        value = int(text, 10)
    if unsigned:
        if text.startswith(("-", "+")) or not 0 <= value < 2 ** bits:
            raise CliError(f"invalid argument {text!r} for {flag}: out of range")
    elif not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise CliError(f"invalid argument {text!r} for {flag}: out of range")
    return value


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(flag: str, text: str) -> int:
    """time.ParseDuration, in nanoseconds."""
    rest, sign = text, 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise CliError(f"invalid argument {text!r} for {flag}: time: invalid duration")
    total = 0
    while rest:
        match = _DURATION_PART.match(rest)
        if not match or match.group(1) in ("", "."):
            raise CliError(f"invalid argument {text!r} for {flag}: time: invalid duration")
        number, unit = match.groups()
        whole, _, frac = number.partition(".")
        scale = _DURATION_UNITS[unit]
        total += int(whole or "0") * scale
        if frac:  # Go adds the fraction truncated to nanoseconds
            total += int(frac) * scale // (10 ** len(frac))
        rest = rest[match.end():]
    if total >= 2 ** 63:
        raise CliError(f"invalid argument {text!r} for {flag}: time: invalid duration")
    return sign * total


_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)*) ?([kKmMgGtTpP])?[iI]?[bB]?\Z")


def ram_in_bytes(flag: str, text: str) -> int:
    """go-units RAMInBytes (binary multiples; ``1.5g``; truncated to an integer)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise CliError(f"invalid argument {text!r} for {flag}: invalid size: {text!r}")
    number = match.group(1)
    if number.count(".") > 1:  # the regex allows 1.2.3, strconv.ParseFloat does not
        raise CliError(f"invalid argument {text!r} for {flag}: invalid syntax")
    size = float(number)
    unit = (match.group(2) or "").lower()
    if unit:
        size *= float(1024 ** ("kmgtp".index(unit) + 1))
    if size >= 2 ** 63:
        raise CliError(f"invalid argument {text!r} for {flag}: size out of range")
    return int(size)


def csv_record(flag: str, text: str) -> list[str]:
    """encoding/csv's first record of ``text`` (``,`` separated, ``"`` quoting, ``""``
    inside quotes). A newline, a bare quote in an unquoted field or an unterminated quote
    is refused (Go reads only the first record, or fails)."""
    if "\n" in text or "\r" in text:
        raise CliError(f"{flag} {text!r}: a newline in a CSV value is not modelled")
    fields: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            i += 1
            out = []
            while True:
                j = text.find('"', i)
                if j < 0:
                    raise CliError(f"{flag} {text!r}: extraneous or missing \" in quoted-field")
                out.append(text[i:j])
                if text[j + 1:j + 2] == '"':
                    out.append('"')
                    i = j + 2
                    continue
                i = j + 1
                break
            if i < n and text[i] != ",":
                raise CliError(f"{flag} {text!r}: extraneous or missing \" in quoted-field")
            fields.append("".join(out))
        else:
            j = text.find(",", i)
            j = n if j < 0 else j
            field = text[i:j]
            if '"' in field:
                raise CliError(f"{flag} {text!r}: bare \" in non-quoted-field")
            fields.append(field)
            i = j
        if i >= n:
            return fields
        i += 1  # the comma
        if i == n:
            fields.append("")
            return fields


def parse_ip(text: str) -> str | None:
    """net.ParseIP(text).String(), or None when Go would not parse it."""
    if "%" in text or not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if isinstance(address, ipaddress.IPv6Address) and ":" in text and "." in text:
        # Go prints an embedded IPv4 tail the RFC 5952 way; Python does not always.
        raise CliError(f"IPv6 address with an IPv4 tail {text!r} is not modelled")
    return str(address)


# ------------------------------------------------------------------ encoding/json

class GoMap(dict):
    """A Go map: encoding/json writes its keys sorted. A plain dict is a struct (its
    fields in insertion order, which must be the struct's declaration order)."""


def _encode_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise CliError("a value that is not valid UTF-8 is not modelled")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, dict):
        keys = sorted(value) if isinstance(value, GoMap) else list(value)
        out.append("{")
        for index, key in enumerate(keys):
            if index:
                out.append(",")
            out.append(_encode_string(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def go_json(value: Any) -> bytes:
    """json.NewEncoder(w).Encode(value): compact, HTML-escaped, newline-terminated."""
    out: list[str] = []
    _encode(value, out)
    return ("".join(out) + "\n").encode("utf-8")


# ------------------------------------------------------------------ net/url, path

_PATH_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~$&+,/:;=@")
_QUERY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")


def _escape(text: str, safe: frozenset[str], space_plus: bool) -> str:
    out = []
    for byte in text.encode("utf-8", "strict"):
        ch = chr(byte)
        if ch in safe:
            out.append(ch)
        elif ch == " " and space_plus:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def query_encode(values: dict[str, str]) -> str:
    """url.Values.Encode() for single values: keys sorted, QueryEscape'd."""
    return "&".join(f"{_escape(k, _QUERY_SAFE, True)}={_escape(v, _QUERY_SAFE, True)}"
                    for k, v in sorted(values.items()))


def api_uri(version: str, path: str, query: dict[str, str] | None = None) -> str:
    """The client's getAPIPath: path.Join("/v"+version, path), escaped as url.URL.String()."""
    joined = posixpath.normpath("/v" + version + "/" + path.lstrip("/"))
    if joined.startswith("//"):
        joined = joined[1:]
    if path.endswith("/") and joined != "/":
        pass  # path.Join drops the trailing slash too
    uri = _escape(joined, _PATH_SAFE, False)
    if query:
        uri += "?" + query_encode(query)
    return uri
