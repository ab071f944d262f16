"""``policies/trust.yaml``: which images need which signatures, and how to reach registries.

The file is validated strictly when it is loaded: unknown keys, wrong types, duplicate keys
or patterns, unreadable key files are errors that name ``file:line`` (from YAML's node
marks). The policy object is immutable once loaded; SIGHUP reloads it with the rest.

Precedence, like containers-policy.json's scopes: the rule or exception whose pattern is
most specific wins -- ``host/a/b`` over ``host/a`` over ``host`` over ``*.domain`` over
``default``. A pattern names a registry host and optionally a repository namespace; it
covers that repository and everything below it (``host/team`` covers ``host/team`` and
``host/team/app``, not ``host/teamx``).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from authz.trust.keys import KeyFileError, TrustedKey, load_public_key
from authz.moby.reference import (
    DEFAULT_DOMAIN,
    DOMAIN_RE,
    LEGACY_DEFAULT_DOMAINS,
    PATH_RE,
    InvalidReference,
    Reference,
    parse_reference,
    parse_repository,
)

POLICY_FILE = "trust.yaml"

SIGNATURE, ACCEPT, REJECT = "signature", "accept", "reject"
ACTIONS = (SIGNATURE, ACCEPT, REJECT)


class TrustPolicyError(ValueError):
    """trust.yaml (or a file it names) is invalid; the message starts with ``file:line:``."""


# --------------------------------------------------------------------------- patterns

_WILDCARD_RE = re.compile(r"^\*\.([a-z0-9-]+(?:\.[a-z0-9-]+)*)$")


@dataclass(frozen=True)
class Pattern:
    text: str
    host: str            # lower-case host[:port]; for a wildcard, the suffix after "*."
    path: str = ""       # "" for a whole registry
    wildcard: bool = False

    def matches(self, ref: Reference) -> bool:
        host = ref.domain.lower()
        if self.wildcard:
            return host.split(":", 1)[0].endswith("." + self.host)
        if host != self.host:
            return False
        return not self.path or ref.path == self.path or ref.path.startswith(self.path + "/")

    @property
    def specificity(self) -> tuple[int, int]:
        if self.wildcard:
            return (1, self.host.count(".") + 1)
        return (2, self.path.count("/") + 1 if self.path else 0)


def parse_pattern(text: str) -> Pattern:
    """``host``, ``host/namespace[/repo]`` or ``*.domain``; raise ValueError with a hint."""
    if not isinstance(text, str) or not text:
        raise ValueError("a pattern is a non-empty string")
    if text.startswith("*."):
        m = _WILDCARD_RE.match(text.lower())
        if not m:
            raise ValueError(f"pattern {text!r}: a wildcard is only `*.domain` "
                             f"(every registry below domain), with no path")
        return Pattern(text=text, host=m.group(1), wildcard=True)
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
        return self.exact if self.exact else repository

    def matches(self, signed: str, repository: str) -> bool:
        try:
            ref = parse_repository_lenient(signed)
        except InvalidReference:
            return False
        return ref.repository == (self.exact or repository)

    @property
    def key(self) -> str:
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
        what = f"{self.origin} {self.pattern.text!r}" if self.pattern else "default"
        return f"{what} at {self.source}"

    @property
    def cache_key(self) -> tuple:
        return (self.action, self.identity.key, tuple(sorted(k.fingerprint for k in self.keys)))

    def keys_text(self) -> str:
        if not self.keys:
            return "no key"
        return ", ".join(k.short for k in self.keys)


@dataclass(frozen=True)
class RegistrySettings:
    host: str
    insecure: bool = False           # plain HTTP
    ca_file: Path | None = None      # PEM bundle to verify the registry's TLS certificate
    source: str = ""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 2.0
    read: float = 2.0
    decision: float = 4.0


@dataclass(frozen=True)
class CacheSettings:
    ttl_seconds: float = 600.0
    max_entries: int = 4096


@dataclass(frozen=True)
class TrustPolicy:
    path: Path
    keys: tuple[TrustedKey, ...]
    keys_line: int | None
    exceptions_line: int | None
    default: Requirement
    rules: tuple[Requirement, ...]          # rules and exceptions, most specific first
    registries: dict = field(default_factory=dict)
    credentials_file: Path | None = None
    timeouts: Timeouts = Timeouts()
    cache: CacheSettings = CacheSettings()
    keys_empty: bool = True
    exceptions_empty: bool = True

    def requirement_for(self, ref: Reference) -> Requirement:
        for req in self.rules:
            if req.pattern is not None and req.pattern.matches(ref):
                return req
        return self.default

    def registry(self, host: str) -> RegistrySettings:
        host = host.lower()
        return self.registries.get(host) or RegistrySettings(host=host)

    @property
    def where_keys(self) -> str:
        if self.keys_line is None:
            return f"a new top-level `keys:` list in {self.path}"
        empty = " (replace its `[]` with the list)" if self.keys_empty else ""
        return f"`keys:` in {self.path} line {self.keys_line}{empty}"

    @property
    def where_exceptions(self) -> str:
        if self.exceptions_line is None:
            return f"a new top-level `exceptions:` list in {self.path}"
        empty = " (replace its `[]` with the list)" if self.exceptions_empty else ""
        return f"`exceptions:` in {self.path} line {self.exceptions_line}{empty}"


# --------------------------------------------------------------------------- YAML with lines

class _Doc:
    """Walks composed YAML nodes so that every error can name file:line."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self._loader = yaml.SafeLoader(text)
        try:
            self.root = self._loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise TrustPolicyError(f"{path}{line}: not valid YAML: {problem}") from None

    def close(self) -> None:
        self._loader.dispose()

    def where(self, node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}" if node is not None else str(self.path)

    def line(self, node) -> int:
        return node.start_mark.line + 1

    def fail(self, node, msg: str):
        raise TrustPolicyError(f"{self.where(node)}: {msg}")

    def mapping(self, node, what: str, allowed: set[str], required: set[str] = frozenset()):
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                self.fail(knode, f"{what}: keys must be plain strings")
            key = knode.value
            if key in out:
                self.fail(knode, f"{what}: duplicate key {key!r}")
            if key not in allowed:
                self.fail(knode, f"{what}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
            out[key] = (knode, vnode)
        for key in sorted(required - out.keys()):
            self.fail(node, f"{what}: missing required key {key!r}")
        return out

    def scalar(self, node):
        if not isinstance(node, yaml.ScalarNode):
            return node
        return self._loader.construct_object(node)

    def string(self, node, what: str, allow_empty: bool = False) -> str:
        value = self.scalar(node)
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            self.fail(node, f"{what} must be a non-empty string")
        return value

    def boolean(self, node, what: str) -> bool:
        value = self.scalar(node)
        if not isinstance(value, bool):
            self.fail(node, f"{what} must be true or false")
        return value

    def number(self, node, what: str, lo: float, hi: float) -> float:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            self.fail(node, f"{what} must be a number between {lo} and {hi}")
        return float(value)

    def sequence(self, node, what: str) -> list:
        if isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a list")
        return list(node.value)


# --------------------------------------------------------------------------- loading

_TOP_KEYS = {"version", "keys", "default", "rules", "exceptions", "registries",
             "credentials_file", "timeouts", "cache"}


def load_policy(policy_dir: Path) -> TrustPolicy:
    path = Path(policy_dir).absolute() / POLICY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrustPolicyError(f"{path}: missing (the image trust policy; the shipped "
                               f"policies/{POLICY_FILE} denies every unsigned image)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustPolicyError(f"{path}: cannot read: {exc}") from None
    doc = _Doc(path, text)
    try:
        return _build(doc, path)
    finally:
        doc.close()


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (base / p)


def _build(doc: _Doc, path: Path) -> TrustPolicy:
    if doc.root is None:
        doc.fail(None, "empty file: expected at least `version: 1`")
    top = doc.mapping(doc.root, "trust.yaml", _TOP_KEYS, {"version"})
    base = path.parent

    knode, vnode = top["version"]
    if doc.scalar(vnode) != 1 or isinstance(doc.scalar(vnode), bool):
        doc.fail(vnode, "version must be 1")

    # keys
    keys: list[TrustedKey] = []
    by_name: dict[str, TrustedKey] = {}
    if "keys" in top:
        keys_knode, keys_vnode = top["keys"]
        keys_line = doc.line(keys_knode)
        for item in doc.sequence(keys_vnode, "keys"):
            m = doc.mapping(item, "a key", {"name", "file", "pem", "fingerprint"}, {"name"})
            name = doc.string(m["name"][1], "key name")
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
                doc.fail(m["name"][1], f"key name {name!r}: letters, digits, . _ - only")
            if name in by_name:
                doc.fail(m["name"][1], f"duplicate key name {name!r}")
            if ("file" in m) == ("pem" in m):
                doc.fail(item, f"key {name!r}: give exactly one of `file` (a PEM file, relative "
                               f"to {path.parent}) or `pem` (the PEM text)")
            if "file" in m:
                fnode = m["file"][1]
                kpath = _resolve(base, doc.string(fnode, "file"))
                try:
                    pem = kpath.read_bytes()
                except OSError as exc:
                    doc.fail(fnode, f"key {name!r}: cannot read {kpath}: {exc.strerror or exc}")
                source = str(kpath)
                at = fnode
            else:
                at = m["pem"][1]
                pem = doc.string(at, "pem").encode()
                source = doc.where(at)
            try:
                key = load_public_key(pem, name, source)
            except KeyFileError as exc:
                doc.fail(at, f"key {name!r}: {exc}")
            if "fingerprint" in m:
                fnode = m["fingerprint"][1]
                expected = doc.string(fnode, "fingerprint").lower()
                if expected != key.fingerprint:
                    doc.fail(fnode, f"key {name!r}: fingerprint of {source} is {key.fingerprint}, "
                                    f"not {expected}")
            if any(k.fingerprint == key.fingerprint for k in keys):
                doc.fail(at, f"key {name!r} is the same key as another entry")
            keys.append(key)
            by_name[name] = key
    else:
        keys_line = None

    def requirement(node, origin: str, allowed: set[str], required: set[str]) -> Requirement:
        m = doc.mapping(node, origin, allowed, required)
        pattern = None
        if "pattern" in m:
            pnode = m["pattern"][1]
            try:
                pattern = parse_pattern(doc.string(pnode, "pattern"))
            except ValueError as exc:
                doc.fail(pnode, str(exc))
        if origin == "exception":
            action = ACCEPT
        else:
            anode = m["require"][1]
            action = doc.string(anode, "require")
            if action not in ACTIONS:
                doc.fail(anode, f"require must be one of {', '.join(ACTIONS)}, not {action!r}")
        reason = doc.string(m["reason"][1], "reason") if "reason" in m else None
        if action == ACCEPT and not reason:
            doc.fail(node, f"{origin}: accepting unsigned images needs a `reason`")
        req_keys: tuple[TrustedKey, ...] = tuple(keys)
        if "keys" in m:
            if action != SIGNATURE:
                doc.fail(m["keys"][0], f"{origin}: `keys` only applies to require: signature")
            names = doc.sequence(m["keys"][1], "keys")
            if not names:
                doc.fail(m["keys"][1], f"{origin}: `keys` lists no key; omit it to mean every key")
            chosen = []
            for n in names:
                kname = doc.string(n, "key name")
                if kname not in by_name:
                    doc.fail(n, f"unknown key {kname!r}; keys are defined under {path.name}'s "
                                f"top-level `keys:`")
                chosen.append(by_name[kname])
            req_keys = tuple(chosen)
        identity = Identity()
        if "identity" in m:
            if action != SIGNATURE:
                doc.fail(m["identity"][0], f"{origin}: `identity` only applies to require: signature")
            inode = m["identity"][1]
            if isinstance(inode, yaml.ScalarNode):
                if doc.scalar(inode) != "repository":
                    doc.fail(inode, "identity must be `repository` or `{exact: REGISTRY/REPO}`")
            else:
                im = doc.mapping(inode, "identity", {"exact"}, {"exact"})
                enode = im["exact"][1]
                try:
                    exact = parse_repository(doc.string(enode, "identity.exact"))
                except InvalidReference as exc:
                    doc.fail(enode, f"identity.exact: {exc}")
                identity = Identity(exact=exact.repository)
        if action != SIGNATURE:
            req_keys = ()
        return Requirement(action=action, origin=origin, source=doc.where(node), pattern=pattern,
                           keys=req_keys, identity=identity, reason=reason)

    # default
    if "default" in top:
        default = requirement(top["default"][1], "default",
                              {"require", "keys", "identity", "reason"}, {"require"})
    else:
        default = Requirement(action=SIGNATURE, origin="default",
                              source=f"{path} (no `default:`, so require: signature)",
                              keys=tuple(keys))

    rules: list[Requirement] = []
    seen: dict[str, str] = {}
    if "rules" in top:
        for item in doc.sequence(top["rules"][1], "rules"):
            req = requirement(item, "rule", {"pattern", "require", "keys", "identity", "reason"},
                              {"pattern", "require"})
            rules.append(req)
    exceptions_line = doc.line(top["exceptions"][0]) if "exceptions" in top else None
    n_exceptions = 0
    if "exceptions" in top:
        for item in doc.sequence(top["exceptions"][1], "exceptions"):
            rules.append(requirement(item, "exception", {"pattern", "reason"},
                                     {"pattern", "reason"}))
            n_exceptions += 1
    for req in rules:
        norm = (req.pattern.wildcard, req.pattern.host, req.pattern.path)
        key = repr(norm)
        if key in seen:
            raise TrustPolicyError(f"{req.source}: pattern {req.pattern.text!r} is already used "
                                   f"at {seen[key]}")
        seen[key] = req.source
    rules.sort(key=lambda r: r.pattern.specificity, reverse=True)

    # registries
    registries: dict[str, RegistrySettings] = {}
    if "registries" in top:
        rnode = top["registries"][1]
        if isinstance(rnode, yaml.ScalarNode) and doc.scalar(rnode) is None:
            rnode = yaml.MappingNode("tag:yaml.org,2002:map", [], rnode.start_mark, rnode.end_mark)
        if not isinstance(rnode, yaml.MappingNode):
            doc.fail(rnode, "registries must be a mapping of registry host to settings")
        for hnode, snode in rnode.value:
            host = doc.string(hnode, "registry host").lower()
            if host in LEGACY_DEFAULT_DOMAINS:
                doc.fail(hnode, f"write Docker Hub as {DEFAULT_DOMAIN}")
            if not DOMAIN_RE.match(host) or "/" in host:
                doc.fail(hnode, f"{host!r} is not a registry host[:port]")
            if host in registries:
                doc.fail(hnode, f"registry {host!r} is listed twice")
            s = doc.mapping(snode, f"registry {host!r}", {"insecure", "ca_file"})
            insecure = doc.boolean(s["insecure"][1], "insecure") if "insecure" in s else False
            ca_file = None
            if "ca_file" in s:
                cnode = s["ca_file"][1]
                if insecure:
                    doc.fail(cnode, f"registry {host!r}: ca_file and insecure: true exclude "
                                    f"each other (insecure means plain HTTP)")
                ca_file = _resolve(base, doc.string(cnode, "ca_file"))
                if not ca_file.is_file():
                    doc.fail(cnode, f"registry {host!r}: ca_file {ca_file} is not a readable file")
            registries[host] = RegistrySettings(host=host, insecure=insecure, ca_file=ca_file,
                                                source=doc.where(hnode))

    credentials_file = None
    if "credentials_file" in top:
        cnode = top["credentials_file"][1]
        if doc.scalar(cnode) is not None:
            credentials_file = _resolve(base, doc.string(cnode, "credentials_file"))
            try:
                load_credentials(credentials_file)
            except TrustPolicyError as exc:
                doc.fail(cnode, str(exc))

    timeouts = Timeouts()
    if "timeouts" in top:
        t = doc.mapping(top["timeouts"][1], "timeouts", {"connect", "read", "decision"})
        timeouts = Timeouts(
            connect=doc.number(t["connect"][1], "timeouts.connect", 0.05, 10) if "connect" in t else 2.0,
            read=doc.number(t["read"][1], "timeouts.read", 0.05, 10) if "read" in t else 2.0,
            decision=doc.number(t["decision"][1], "timeouts.decision", 0.1, 10) if "decision" in t else 4.0,
        )
    cache = CacheSettings()
    if "cache" in top:
        c = doc.mapping(top["cache"][1], "cache", {"ttl_seconds", "max_entries"})
        cache = CacheSettings(
            ttl_seconds=doc.number(c["ttl_seconds"][1], "cache.ttl_seconds", 0, 3600)
            if "ttl_seconds" in c else 600.0,
            max_entries=int(doc.number(c["max_entries"][1], "cache.max_entries", 1, 1_000_000))
            if "max_entries" in c else 4096,
        )

    return TrustPolicy(path=path, keys=tuple(keys), keys_line=keys_line,
                       exceptions_line=exceptions_line, default=default, rules=tuple(rules),
                       registries=registries, credentials_file=credentials_file,
                       timeouts=timeouts, cache=cache, keys_empty=not keys,
                       exceptions_empty=n_exceptions == 0)


# --------------------------------------------------------------------------- credentials

class Credential:
    """A registry login. Never printed: ``repr`` hides it."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: str):
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return "Credential(<redacted>)"

    __str__ = __repr__


def _cred_host(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/x`` -> ``h:5000``."""
    host = re.sub(r"^[a-z]+://", "", key.strip(), flags=re.I).split("/", 1)[0].lower()
    return DEFAULT_DOMAIN if host in LEGACY_DEFAULT_DOMAINS else host


def load_credentials(path: Path) -> dict[str, Credential]:
    """Read a docker ``config.json``-style file: ``{"auths": {HOST: {"auth": b64(user:pw)}}}``
    (or ``username``/``password``). Error messages never contain the file's content."""
    import base64
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrustPolicyError(f"credentials_file {path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise TrustPolicyError(f"credentials_file {path}: not valid JSON") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise TrustPolicyError(f"credentials_file {path}: expected an object with `auths`")
    out: dict[str, Credential] = {}
    for key, entry in auths.items():
        host = _cred_host(str(key))
        if not isinstance(entry, dict):
            raise TrustPolicyError(f"credentials_file {path}: entry for {host} is not an object")
        user = entry.get("username")
        pw = entry.get("password")
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise TrustPolicyError(f"credentials_file {path}: `auth` of {host} is not "
                                       f"base64 of user:password") from None
        if not isinstance(user, str) or not isinstance(pw, str) or not user:
            raise TrustPolicyError(f"credentials_file {path}: entry for {host} has no "
                                   f"username/password (`auth` or `username`+`password`; "
                                   f"identity tokens are not supported)")
        out[host] = Credential(user, pw)
    return out


def credentials_mode_warning(path: Path) -> str | None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"credentials_file {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
    return None
