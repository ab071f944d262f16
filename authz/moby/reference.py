"""Image references, parsed and normalized the way dockerd does (distribution/reference).

``127.0.0.1:5000/team/app:1`` -> domain ``127.0.0.1:5000``, path ``team/app``, tag ``1``.
``busybox`` -> ``docker.io/library/busybox`` (``:latest`` only where dockerd adds it).

The first path component is a registry host when it contains ``.`` or ``:``, is
``localhost`` or has an upper-case letter; ``index.docker.io`` is ``docker.io``; a Docker
Hub name without a namespace is in ``library/``. A 64-hex string is never a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from authz.moby.ids import is_full_id

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAINS = ("index.docker.io", "registry-1.docker.io")
OFFICIAL_REPO_PREFIX = "library"
# Where Docker Hub's registry API answers (``docker.io`` itself only redirects).
DOCKER_HUB_API_HOST = "registry-1.docker.io"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
TAG_RE = re.compile(rf"^{_TAG}$")
DIGEST_RE = re.compile(rf"^{_DIGEST}$")
SHA256_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_MAX = 255


class InvalidReference(ValueError):
    """Not a valid image reference."""


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """``domain/path``: what signatures name and where they are stored."""
        return f"{self.domain}/{self.path}"

    @property
    def name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def with_default_tag(self) -> "Reference":
        """dockerd's TagNameOnly: a bare name means ``:latest``."""
        return replace(self, tag="latest") if self.name_only else self

    def favor_digest(self) -> "Reference":
        """A reference with both tag and digest acts by digest (dockerd drops the tag)."""
        return replace(self, tag=None) if self.digest else self

    def with_digest(self, digest: str) -> "Reference":
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def api_host(self) -> str:
        """Host:port to send registry API calls to."""
        return DOCKER_HUB_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain


def split_docker_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i == -1 or (not any(c in first for c in ".:") and first != "localhost"
                   and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[i + 1:]
    if domain in LEGACY_DEFAULT_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPO_PREFIX}/{remainder}"
    return domain, remainder


def parse_reference(text: str) -> Reference:
    """ParseNormalizedNamed: a name, with optional ``:tag`` and ``@digest``; no default tag."""
    if not isinstance(text, str) or not text:
        raise InvalidReference("empty image reference")
    if is_full_id(text):
        raise InvalidReference(f"{text!r} is an image id, not a repository name")
    domain, remainder = split_docker_domain(text)
    # digest first (it may contain ':'), then a tag after the last '/'
    digest = None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid digest in {text!r}")
    tag = None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not TAG_RE.match(tag):
            raise InvalidReference(f"invalid tag in {text!r}")
    if remainder.lower() != remainder:
        raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
    if not DOMAIN_RE.match(domain):
        raise InvalidReference(f"invalid registry host in {text!r}")
    if not PATH_RE.match(remainder):
        raise InvalidReference(f"invalid repository name in {text!r}")
    if len(domain) + 1 + len(remainder) > NAME_MAX:
        raise InvalidReference(f"repository name in {text!r} is longer than {NAME_MAX} characters")
    return Reference(domain=domain, path=remainder, tag=tag, digest=digest)


def parse_repository(text: str) -> Reference:
    """A repository name without tag or digest (a signature identity, a pattern's name)."""
    ref = parse_reference(text)
    if not ref.name_only:
        raise InvalidReference(f"{text!r} names a tag or digest; a repository name is expected")
    return ref


def is_image_id(text: str) -> bool:
    """``sha256:<64 hex>`` or 64 hex: dockerd reads these as image ids, never as names."""
    return is_full_id(text) or bool(DIGEST_RE.match(text))


def pull_reference(from_image: str, tag: str = "") -> Reference:
    """The reference ``POST /images/create?fromImage=F&tag=T`` pulls, as dockerd builds it.

    A trailing ``:`` is dropped; ``tag`` may be a digest (then it replaces any tag or digest
    in F) or a tag (then it replaces F's tag; a digest in F still wins). The result may be
    name-only: dockerd then pulls *every* tag of the repository.
    """
    ref = parse_reference(from_image.removesuffix(":"))
    if tag:
        if DIGEST_RE.match(tag):
            ref = Reference(ref.domain, ref.path, None, tag)
        elif TAG_RE.match(tag):
            ref = Reference(ref.domain, ref.path, tag, ref.digest)
        else:
            raise InvalidReference(f"invalid tag {tag!r}")
    return ref


def manifest_tag_for_signature(digest: str) -> str:
    """cosign's tag for the signatures of ``sha256:<hex>``: ``sha256-<hex>.sig``."""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}.sig"
