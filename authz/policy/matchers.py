"""How a rule's values, subjects and images match a fact: the functions Casbin's matcher
calls (policies/model.conf: ``valueMatch``, ``subjectMatch``, ``imageMatch``), and the host
path overlap the built-in floor shares."""

from __future__ import annotations

import fnmatch
import posixpath
import re

def path_overlaps(path: str, protected: str) -> bool:
    """True when binding ``path`` exposes ``protected`` or lies inside it: equal, an
    ancestor (``/`` and ``/var`` expose ``/var/run/docker.sock``) or a descendant."""
    path = posixpath.normpath(path) if path.startswith("/") else path
    if path == protected:
        return True
    p = path.rstrip("/") + "/"
    q = protected.rstrip("/") + "/"
    return q.startswith(p) or p.startswith(q)


def path_under(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or lies inside it (both canonical and absolute)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def value_match(value: str, pattern: str, op: str) -> bool:
    if op == "path":
        return value.startswith("/") and path_overlaps(value, pattern)
    if op == "under":
        return value.startswith("/") and path_under(value, pattern)
    return pattern == "*" or fnmatch.fnmatchcase(value, pattern)


def subject_match(subjects: frozenset[str], pattern: str) -> bool:
    """A line's subject (as written in rules.yaml) against the subjects the caller is."""
    return pattern == "*" or pattern in subjects


def image_match(image: str, pattern: str) -> bool:
    """``*`` any image (also none); ``**`` crosses ``/``; ``*`` elsewhere stays in one
    path component: ``127.0.0.1:5000/team/*`` matches ``127.0.0.1:5000/team/app:1``."""
    if pattern == "*":
        return True
    return _image_regex(pattern).match(image) is not None


_IMAGE_PATTERNS: dict[str, object] = {}


def _image_regex(pattern: str):
    compiled = _IMAGE_PATTERNS.get(pattern)
    if compiled is None:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        compiled = re.compile(out + r"\Z")
        _IMAGE_PATTERNS[pattern] = compiled
    return compiled
