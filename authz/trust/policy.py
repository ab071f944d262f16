"""The image trust policy (``policies/trust.yaml``, read by ``policyfile.py``): which images
need which signatures, and how to reach registries. The policy object is immutable once
loaded; SIGHUP reloads it with the rest.

Precedence, like containers-policy.json's scopes: the rule or exception whose pattern is
most specific wins -- ``host/a/b`` over ``host/a`` over ``host`` over ``*.domain`` over
``default``. A pattern names a registry host and optionally a repository namespace; it
covers that repository and everything below it (``host/team`` covers ``host/team`` and
``host/team/app``, not ``host/teamx``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from authz.moby.reference import (
    DEFAULT_DOMAIN,
    DOMAIN_RE,
    LEGACY_DEFAULT_DOMAINS,
    PATH_RE,
    InvalidReference,
    Reference,
    parse_reference,
)
from authz.trust.keys import TrustedKey

POLICY_FILE = "trust.yaml"

SIGNATURE, ACCEPT, REJECT = "signature", "accept", "reject"
ACTIONS = (SIGNATURE, ACCEPT, REJECT)


class TrustPolicyError(ValueError):
    """trust.yaml (or a file it names) is invalid; the message starts with ``file:line:``."""


# --------------------------------------------------------------------------- patterns

_WILDCARD_RE = re.compile(r"^\*\.([a-z0-9-]+(?:\.[a-z0-9-]+)*)$")


@dataclass(frozen=True)
class Pattern:
    """A rule's or exception's scope: a registry host (or ``*.domain``), maybe a namespace."""
    text: str
    host: str            # lower-case host[:port]; for a wildcard, the suffix after "*."
    path: str = ""       # "" for a whole registry
    wildcard: bool = False

    def matches(self, ref: Reference) -> bool:
        """Does ``ref`` lie in this scope (path components whole, hosts case-insensitive)?"""
        host = ref.domain.lower()
        if self.wildcard:
            return host.split(":", 1)[0].endswith("." + self.host)
        if host != self.host:
            return False
        return not self.path or ref.path == self.path or ref.path.startswith(self.path + "/")

    @property
    def specificity(self) -> tuple[int, int]:
        """Sort key: the most specific pattern wins (host/a/b > host/a > host > *.domain)."""
        if self.wildcard:
            return (1, self.host.count(".") + 1)
        return (2, self.path.count("/") + 1 if self.path else 0)


def parse_pattern(text: str) -> Pattern:
    """``host``, ``host/namespace[/repo]`` or ``*.domain``; raise ValueError with a hint."""
    if not isinstance(text, str) or not text:
        raise ValueError("a pattern is a non-empty string")
    if text.startswith("*."):
        wildcard = _WILDCARD_RE.match(text.lower())
        if not wildcard:
            raise ValueError(f"pattern {text!r}: a wildcard is only `*.domain` "
                             f"(every registry below domain), with no path")
        return Pattern(text=text, host=wildcard.group(1), wildcard=True)
    if "*" in text or "?" in text or "[" in text:
        raise ValueError(f"pattern {text!r}: patterns are not globs; `host/team` already covers "
                         f"every repository below team")
    host, _, path = text.partition("/")
    if "@" in text or ":" in path:
        raise ValueError(f"pattern {text!r}: name a registry or repository, without tag or digest")
    if not DOMAIN_RE.match(host) or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"pattern {text!r} must start with a registry host "
                         f"(e.g. docker.io/library/ubuntu, 127.0.0.1:5000/team)")
    if host.lower() in LEGACY_DEFAULT_DOMAINS:
        raise ValueError(f"pattern {text!r}: write Docker Hub as {DEFAULT_DOMAIN}")
    if path and not PATH_RE.match(path):
        raise ValueError(f"pattern {text!r}: invalid repository path {path!r} "
                         f"(lower-case components separated by /)")
    return Pattern(text=text, host=host.lower(), path=path)


# --------------------------------------------------------------------------- policy objects

@dataclass(frozen=True)
class Identity:
    """How the signed ``docker-reference`` must match: ``repository`` (the image's own
    repository) or ``exact`` (one fixed repository, e.g. where images are signed before
    being mirrored)."""
    exact: str | None = None

    def describe(self, repository: str) -> str:
        """The identity a signature for ``repository`` must name."""
        return self.exact if self.exact else repository

    def matches(self, signed: str, repository: str) -> bool:
        """Does the signed ``docker-reference`` fit an image in ``repository``?"""
        try:
            ref = parse_repository_lenient(signed)
        except InvalidReference:
            return False
        return ref.repository == (self.exact or repository)

    @property
    def key(self) -> str:
        """This identity as part of a cache key."""
        return f"exact:{self.exact}" if self.exact else "repository"


def parse_repository_lenient(text: str) -> Reference:
    """A signed identity: a repository, possibly with a tag/digest (which is ignored)."""
    ref = parse_reference(text)
    return Reference(ref.domain, ref.path)


@dataclass(frozen=True)
class Requirement:
    """What one rule, exception or the default asks of an image."""
    action: str
    origin: str                       # "rule" | "exception" | "default"
    source: str                       # "/etc/pyauthz/policies/trust.yaml:14"
    pattern: Pattern | None = None
    keys: tuple[TrustedKey, ...] = ()
    identity: Identity = Identity()
    reason: str | None = None

    @property
    def label(self) -> str:
        """``rule '127.0.0.1:5000/team' at /p/trust.yaml:14``: which rule decided."""
        what = f"{self.origin} {self.pattern.text!r}" if self.pattern else "default"
        return f"{what} at {self.source}"

    @property
    def cache_key(self) -> tuple:
        """What this requirement asks, as part of a cache key (action, identity, keys)."""
        return (self.action, self.identity.key, tuple(sorted(k.fingerprint for k in self.keys)))

    def keys_text(self) -> str:
        """The keys a signature may be by, for messages."""
        if not self.keys:
            return "no key"
        return ", ".join(k.short for k in self.keys)


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach one registry (``registries:`` in trust.yaml)."""
    host: str
    insecure: bool = False           # plain HTTP
    ca_file: Path | None = None      # PEM bundle to verify the registry's TLS certificate
    source: str = ""
    # What verifies it: ca_file's bytes as loaded, in a sealed in-memory file
    # (/proc/self/fd/N): never ca_file again, whatever becomes of it.
    ca_bundle: str | None = None


@dataclass(frozen=True)
class Timeouts:
    """Seconds: per registry connect and read, and for a whole decision."""
    connect: float = 2.0
    read: float = 2.0
    decision: float = 4.0


@dataclass(frozen=True)
class CacheSettings:
    """How long, and how many, verified signatures are remembered."""
    ttl_seconds: float = 600.0
    max_entries: int = 4096


@dataclass(frozen=True)
class TrustPolicy:
    """trust.yaml as loaded: keys, the default, rules and exceptions, registries, limits."""
    path: Path
    keys: tuple[TrustedKey, ...]
    keys_line: int | None
    exceptions_line: int | None
    default: Requirement
    rules: tuple[Requirement, ...]          # rules and exceptions, most specific first
    registries: dict = field(default_factory=dict)
    credentials_file: Path | None = None
    credentials: dict = field(default_factory=dict, repr=False)  # parsed once, at load
    timeouts: Timeouts = Timeouts()
    cache: CacheSettings = CacheSettings()
    keys_empty: bool = True
    exceptions_empty: bool = True
    # Every file read for it (trust.yaml, keys, CA bundles, logins), as named and where
    # symlinks led: no bind may reach them (authz.plugin.trust_paths).
    files: tuple[str, ...] = ()
    # (path, sha256) of each file trust.yaml names, as read: part of the revision in force.
    digests: tuple[tuple[str, str], ...] = ()

    def requirement_for(self, ref: Reference) -> Requirement:
        """The most specific rule or exception covering ``ref``, else the default."""
        for req in self.rules:
            if req.pattern is not None and req.pattern.matches(ref):
                return req
        return self.default

    def registry(self, host: str) -> RegistrySettings:
        """The settings for ``host`` (plain defaults when trust.yaml names none)."""
        host = host.lower()
        return self.registries.get(host) or RegistrySettings(host=host)

    @property
    def where_keys(self) -> str:
        """Where in trust.yaml a trusted key is added, for fixes."""
        if self.keys_line is None:
            return f"a new top-level `keys:` list in {self.path}"
        empty = " (replace its `[]` with the list)" if self.keys_empty else ""
        return f"`keys:` in {self.path} line {self.keys_line}{empty}"

    @property
    def where_exceptions(self) -> str:
        """Where in trust.yaml an exception is added, for fixes."""
        if self.exceptions_line is None:
            return f"a new top-level `exceptions:` list in {self.path}"
        empty = " (replace its `[]` with the list)" if self.exceptions_empty else ""
        return f"`exceptions:` in {self.path} line {self.exceptions_line}{empty}"
