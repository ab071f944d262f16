"""Read a JSON body the way dockerd's Go ``encoding/json`` decodes it into a struct.

- A struct field matches a key case-insensitively, with Go's folding: ASCII letters fold,
  and U+017F (long s) folds to ``s``, U+212A (Kelvin sign) to ``k``. Nothing else folds.
- When a struct field is given twice (``Privileged`` and ``privileged``), Go keeps the last
  for a scalar but merges objects and maps; rather than re-create that, such a body is
  refused as ambiguous: no real client sends one.
- Map keys (``Labels``, ``Sysctls``, driver options) are exact; the last duplicate wins, as
  in Go and as in ``dict``.
- ``null`` leaves a field at its zero value.
- A value of the wrong type is refused (dockerd would fail the request anyway).
- ``NaN``/``Infinity``, invalid UTF-8 and trailing data are refused.
"""

from __future__ import annotations

import functools
import json
from typing import Any


# The most entries the plugin reads from one list or map (Binds, Mounts, Sysctls, CapAdd...).
# Real requests have a handful; thousands are only a way to make the plugin slow, and dockerd
# waits for the plugin without a timeout.
MAX_ITEMS = 256
# The most ':' a body may hold (each object member has one; strings may hold more): a bound
# on the objects a decision builds, whatever the size of the body.
MAX_MEMBERS = 50_000

class InvalidJSON(ValueError):
    """Go would not read this JSON the same way (or it is too large to read): ``found`` says
    what, ``fix`` how to send it. ``ambiguous`` when a struct field is given twice."""

    def __init__(self, found: str, fix: str, *, ambiguous: bool = False):
        super().__init__(found)
        self.found = found
        self.fix = fix
        self.ambiguous = ambiguous


_FOLD = {i: i + 32 for i in range(ord("A"), ord("Z") + 1)}
_FOLD[0x017F] = ord("s")  # LATIN SMALL LETTER LONG S
_FOLD[0x212A] = ord("k")  # KELVIN SIGN


@functools.lru_cache(maxsize=4096)
def _go_fold_cached(key: str) -> str:
    return key.translate(_FOLD)


def go_fold(key: str) -> str:
    """The form under which Go's decoder matches a key to an (ASCII) field name. Field names
    are short: only short keys are memoized (a request's keys are its own to choose)."""
    return _go_fold_cached(key) if len(key) <= 64 else key.translate(_FOLD)


# Struct field names the plugin asks for, folded (they are the plugin's own constants).
_FIELD_NAMES: dict[str, str] = {}


class GoObject:
    """A JSON object, kept as its ordered (key, value) pairs."""

    __slots__ = ("pairs", "_index", "_twice")

    def __init__(self, pairs: list[tuple[str, Any]]):
        self.pairs = pairs
        self._index: dict[str, tuple[str, Any]] | None = None
        self._twice: dict[str, list[tuple[str, Any]]] | None = None  # keys given twice

    def _fields(self) -> dict[str, tuple[str, Any]]:
        """Folded key → its (key, value); made on the first lookup."""
        if self._index is None:
            # Go folds ASCII letters only (and the Kelvin and long-s signs, non-ASCII): an
            # ASCII key folds as str.lower() does.
            folded = [k.lower() if k.isascii() else k.translate(_FOLD) for k, _ in self.pairs]
            index = dict(zip(folded, self.pairs, strict=True))
            if len(index) != len(self.pairs):
                twice: dict[str, list[tuple[str, Any]]] = {}
                for key, pair in zip(folded, self.pairs, strict=True):
                    twice.setdefault(key, []).append(pair)
                self._twice = {k: v for k, v in twice.items() if len(v) > 1}
            self._index = index
        return self._index

    def field(self, name: str, where: str) -> Any:
        """The value of struct field ``name`` (None when absent or null)."""
        index = self._index if self._index is not None else self._fields()
        folded = _FIELD_NAMES.get(name)
        if folded is None:
            folded = go_fold(name)
            if len(_FIELD_NAMES) < 1024:  # the plugin's own field names, a few hundred
                _FIELD_NAMES[name] = folded
        found = index.get(folded)
        if found is None:
            return None
        if self._twice is not None and folded in self._twice:
            given = self._twice[folded]
            keys = ", ".join(repr(k) for k, _ in given)
            raise InvalidJSON(
                f"{_join(where, name)} is given {len(given)} times ({keys}); Go matches keys "
                "case-insensitively, so the plugin cannot know which one dockerd would use",
                f"Send {name!r} once.", ambiguous=True)
        return found[1]

    def as_map(self) -> dict[str, Any]:
        """As a Go ``map[string]T``: exact keys, the last duplicate wins."""
        return dict(self.pairs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(body: bytes) -> Any:
    """Parse a request body; raises InvalidJSON when Go would not read it the same."""
    if body.count(b":") > MAX_MEMBERS:
        # Every member of every object has a ':'; real bodies have hundreds. Parsing
        # millions costs the plugin seconds: refuse before building any of them.
        raise InvalidJSON(f"the JSON body has more than {MAX_MEMBERS} members",
                          "Send a smaller body.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJSON("the JSON body is not valid UTF-8",
                          "Send UTF-8 JSON.") from None
    try:
        return json.loads(text, object_pairs_hook=GoObject, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidJSON("the JSON body is nested too deeply",
                          "Send a plain JSON document.") from None
    except ValueError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}",
                          "Send one valid JSON document.") from None


def from_parsed(value: Any) -> Any:
    """A value already parsed from JSON (dicts), as ``loads`` would give it (GoObjects, in
    the same order): for dockerd's own answers, without writing them out and reading them
    back."""
    if isinstance(value, dict):
        return GoObject([(k, from_parsed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return [from_parsed(v) for v in value]
    return value


def _too_many(where: str, name: str, count: int) -> InvalidJSON:
    return InvalidJSON(f"{_join(where, name)} has {count} entries (the plugin reads at most "
                       f"{MAX_ITEMS})", f"Send at most {MAX_ITEMS} entries.")


def _wrong_type(where: str, name: str, expected: str, value: Any) -> InvalidJSON:
    return InvalidJSON(
        f"{_join(where, name)} is {type(value).__name__}, expected {expected}",
        f"Send {name} as {expected}.",
    )


def get_obj(obj: GoObject | None, name: str, where: str = "") -> GoObject | None:
    if obj is None:
        return None
    value = obj.field(name, where)
    if value is None or isinstance(value, GoObject):
        return value
    raise _wrong_type(where, name, "an object", value)


def get_str(obj: GoObject | None, name: str, where: str = "") -> str:
    if obj is None:
        return ""
    value = obj.field(name, where)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise _wrong_type(where, name, "a string", value)


def get_bool(obj: GoObject | None, name: str, where: str = "") -> bool:
    if obj is None:
        return False
    value = obj.field(name, where)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise _wrong_type(where, name, "a boolean", value)


def get_list(obj: GoObject | None, name: str, where: str = "") -> list[Any] | None:
    """A Go slice: None when absent or null (nil), else the list (possibly empty)."""
    if obj is None:
        return None
    value = obj.field(name, where)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong_type(where, name, "an array", value)
    if len(value) > MAX_ITEMS:
        raise _too_many(where, name, len(value))
    return value


def get_strings(obj: GoObject | None, name: str, where: str = "", *,
                strslice: bool = False) -> list[str] | None:
    """A ``[]string``; with ``strslice`` also a single string (moby's ``StrSlice``)."""
    if obj is None:
        return None
    value = obj.field(name, where)
    if value is None:
        return None
    if strslice and isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _wrong_type(where, name, "an array of strings", value)
    if len(value) > MAX_ITEMS:
        raise _too_many(where, name, len(value))
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _wrong_type(where, f"{name}[{i}]", "a string", item)
    return value


def get_map(obj: GoObject | None, name: str, where: str = "") -> dict[str, Any]:
    if obj is None:
        return {}
    value = obj.field(name, where)
    if value is None:
        return {}
    if isinstance(value, GoObject):
        if len(value.pairs) > MAX_ITEMS:
            raise _too_many(where, name, len(value.pairs))
        return value.as_map()
    raise _wrong_type(where, name, "an object", value)
