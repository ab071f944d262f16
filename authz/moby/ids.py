"""dockerd's object ids: 64 lower-case hex digits (``stringid.GenerateRandomID``, and an
image's config digest without ``sha256:``). dockerd also finds an object by any unique
prefix of its id (``stringid``/``truncindex``), which is why a full id is the only name
that cannot come to mean another object."""

from __future__ import annotations

import re

FULL_ID_RE = re.compile(r"[0-9a-f]{64}")
ID_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}")


def is_full_id(text: str) -> bool:
    """64 lower-case hex digits: an object's whole id."""
    return FULL_ID_RE.fullmatch(text) is not None


def is_id_prefix(text: str) -> bool:
    """1 to 64 lower-case hex digits: what dockerd may read as an id prefix."""
    return ID_PREFIX_RE.fullmatch(text) is not None
