"""Facts: what a request asks dockerd to do, in the policy's vocabulary.

A fact is a ``kind`` (``privileged``, ``capability``, ``host-path``...), a normalized
``value`` that rules match, and ``where`` in the request it was found, for the message
and the log.

Fact kinds are a closed list, ``FACT_KINDS``. Each kind is declared once, with what its
value is, beside the code that reports it (``fact_kind``): the risk checks of ``checks/``
name the kinds they report in their registration (``checks/registry.py``), the decoders
declare the kinds they report directly, and ``checks/elsewhere.py`` those that only the
route table and dockerd's state reads report. The list is complete once ``authz.decoding``
is imported (it imports the checks and, through the route table, every decoder). The
policy loader refuses a rule whose ``fact:`` names no kind of it; docs/policy.md's fact
table is tested against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str
    value: str
    where: str
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.where}: {self.kind}={self.value}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True, slots=True)
class Kind:
    """A fact kind and what its value is, as docs/policy.md tells a policy's author."""

    name: str
    values: str


class RegistryError(RuntimeError):
    """The declared fact kinds or the registered checks contradict each other (at import)."""


_KIND_NAME = re.compile(r"^[a-z][a-z0-9]*([.-][a-z0-9]+)*$")
_KINDS: dict[str, str] = {}
# Every fact kind the decoder reports, and what its value is. A rule whose ``fact:`` names
# no kind here would never fire: the policy loader refuses it (docs/policy.md lists them).
FACT_KINDS: Mapping[str, str] = MappingProxyType(_KINDS)


def fact_kind(name: str, values: str) -> Kind:
    """Declare the fact kind ``name``; declaring it again must describe it the same way."""
    if not _KIND_NAME.match(name) or not values:
        raise RegistryError(f"fact kind {name!r}: a lower-case name and a description, please")
    known = _KINDS.setdefault(name, values)
    if known != values:
        raise RegistryError(f"fact kind {name!r} is described two ways: {known!r} and {values!r}")
    return Kind(name, values)


def known_kind(kind: str) -> bool:
    """Whether ``kind`` is a declared fact kind."""
    return kind in _KINDS


_NAMESPACE_VALUES = ("host", "container")
_TARGET_VALUES = ("id", "name", "prefix", "missing")
# The kinds of issue 9 whose values are a closed set.
_FIXED_VALUES = {"user.root": ("true", "false", "unknown"), "readonly-rootfs": ("true", "false"),
                 "no-new-privileges": ("true", "false"), "memory-limit": ("set", "unset"),
                 "pids-limit": ("set", "unset"), "port.publish-all": ("true",)}


def value_problem(kind: str, pattern: str, op: str = "glob") -> str | None:
    """Why a rule's value pattern can never match a ``kind`` fact as the decoder writes it
    (a policy that silently never fires), or None."""
    import fnmatch

    if pattern == "*" or op != "glob":
        return None
    if kind == "host-path":
        return "host paths are matched with `paths:` (overlap) or `outside:` (roots), not values"
    if kind == "capability":
        if pattern.upper().startswith("CAP_"):
            return "capabilities are written without CAP_ (SYS_ADMIN)"
        if pattern != pattern.upper():
            return "capabilities are written in upper case (SYS_ADMIN)"
    fixed = {"privileged": ("true",), "target": _TARGET_VALUES}.get(kind) or _FIXED_VALUES.get(kind)
    if kind.startswith("namespace."):
        fixed = _NAMESPACE_VALUES
    if fixed is not None and not any(fnmatch.fnmatchcase(v, pattern) for v in fixed):
        return f"{kind} values are {', '.join(fixed)}"
    if kind == "seccomp" and not (pattern == "unconfined" or pattern.startswith("custom:")):
        return "seccomp values are unconfined or custom:sha256:DIGEST"
    return None
