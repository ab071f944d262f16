"""The version of the fact vocabulary: which fact kinds exist and what their values are.

A decision-log line records the facts a decision was made on; ``pyauthz policy replay``
can only replay them exactly with code that speaks the same vocabulary (a kind added since
would be missing from old lines, a kind renamed would never match). Every line carries
``fact_vocabulary``, ``current()``:

- ``SEMANTICS``, a number bumped by hand when a decoder changes what a fact's value means or
  which facts it reports for the same request without the registry changing (a path
  normalized differently, a check that now reports a kind on another source);
- a short sha256 of the fact-kind registry (``authz.decoding.facts.FACT_KINDS``: each
  kind's name and description), which changes by itself when a kind is added, removed,
  renamed or described differently.

Written ``"<SEMANTICS>.<12 hex digits>"`` (``"1.3f9c0a7e5b1d"``); ``describe()`` says it in
words. Replay compares the whole string: a line of another vocabulary is not replayed unless
asked (``--any-vocabulary``), and is always counted and reported.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import authz.decoding  # noqa: F401 - completes FACT_KINDS (it imports every decoder)
from authz.decoding.facts import FACT_KINDS

# Bump when the meaning of fact values changes without the registry changing.
SEMANTICS = 1


def registry_digest(kinds: Mapping[str, str]) -> str:
    """12 hex digits of sha256 over the kinds' names and descriptions, in name order."""
    digest = hashlib.sha256()
    for name in sorted(kinds):
        digest.update(name.encode() + b"\0" + kinds[name].encode() + b"\n")
    return digest.hexdigest()[:12]


def version_of(kinds: Mapping[str, str], semantics: int = SEMANTICS) -> str:
    """The vocabulary version for ``kinds``: ``"<semantics>.<registry digest>"``."""
    return f"{semantics}.{registry_digest(kinds)}"


_cached: tuple[int, str] = (-1, "")


def current() -> str:
    """The running code's vocabulary version (recomputed only when a kind is declared)."""
    global _cached
    count, version = _cached
    if count != len(FACT_KINDS):
        count, version = len(FACT_KINDS), version_of(FACT_KINDS)
        _cached = (count, version)
    return version


def describe(version: str | None = None) -> str:
    """A version in words, for reports (the running code's when none is given)."""
    version = version or current()
    semantics, _, digest = version.partition(".")
    count = f", {len(FACT_KINDS)} fact kinds" if version == current() else ""
    return f"fact vocabulary {semantics} (registry {digest or '?'}{count})"
