"""Image references, normalized as Docker's ``reference.ParseNormalizedNamed`` does.

``busybox`` -> ``docker.io/library/busybox:latest``; ``127.0.0.1:5000/team/app`` ->
``127.0.0.1:5000/team/app:latest``; a digest is kept (``name@sha256:...``). The first
path component is a registry host when it contains ``.`` or ``:`` or is ``localhost``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class InvalidReference(ValueError):
    pass


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    name, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise InvalidReference(f"invalid digest in {text!r}")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid tag in {text!r}")
    if not name:
        raise InvalidReference("empty image name")
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"
                   and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not path or path != path.lower():
        raise InvalidReference(f"invalid repository name in {text!r}")
    if tag is None and not digest and default_tag:
        tag = "latest"
    return Reference(domain, path, tag, digest or None)


def normalize_reference(text: str) -> str:
    """The normalized string, or the text unchanged when it is not a valid reference (an
    image id, or something dockerd will reject)."""
    try:
        return str(parse_reference(text))
    except InvalidReference:
        return text
