"""Reading ``policies/trust.yaml`` into a ``TrustPolicy``, one small function per section:
version, keys, default, rules, exceptions, registries, credentials_file, timeouts, cache.

The file is validated strictly when it is loaded: unknown keys, wrong types, duplicate keys
or patterns, merge keys, unreadable key files are errors that name ``file:line``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from pathlib import Path

from authz.ownership import NotTrusted, read_verified
from authz.moby.reference import (
    DEFAULT_DOMAIN,
    DOMAIN_RE,
    LEGACY_DEFAULT_DOMAINS,
    InvalidReference,
    parse_repository,
)
from authz.trust.credentials import load_credentials
from authz.trust.keys import KeyFileError, TrustedKey, load_public_key
from authz.trust.policy import (
    ACCEPT,
    ACTIONS,
    POLICY_FILE,
    SIGNATURE,
    CacheSettings,
    Identity,
    Pattern,
    RegistrySettings,
    Requirement,
    Timeouts,
    TrustPolicy,
    TrustPolicyError,
    parse_pattern,
)
from authz.trust.trustyaml import Section, TrustYaml

TOP_KEYS = {"version", "keys", "default", "rules", "exceptions", "registries",
            "credentials_file", "timeouts", "cache"}
KEY_FIELDS = {"name", "file", "pem", "fingerprint"}
DEFAULT_FIELDS = {"require", "keys", "identity", "reason"}
RULE_FIELDS = DEFAULT_FIELDS | {"pattern"}
EXCEPTION_FIELDS = {"pattern", "reason"}
REGISTRY_FIELDS = {"insecure", "ca_file"}
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Keys = dict[str, TrustedKey]   # by name, in the file's order


def load_policy(policy_dir: Path) -> TrustPolicy:
    """Read ``policy_dir/trust.yaml`` and the files it names; TrustPolicyError on any problem."""
    path = Path(policy_dir).absolute() / POLICY_FILE
    reader = TrustYaml(path)
    document = reader.load()
    if document is None:
        raise reader.fail(None, "empty file: expected at least `version: 1`")
    top = reader.section(document, reader.root_line, "trust.yaml", TOP_KEYS, {"version"})
    _check_version(top)
    keys = _read_keys(top)
    default = _read_default(top, keys)
    rules = _read_rules(top, keys)
    exceptions = _read_exceptions(top)
    credentials_file, credentials = _read_credentials_file(top)
    registries = _read_registries(top)
    return TrustPolicy(
        path=path, keys=tuple(keys.values()), keys_line=_key_line(top, "keys"),
        exceptions_line=_key_line(top, "exceptions"), default=default,
        rules=_most_specific_first(rules + exceptions), registries=registries,
        credentials_file=credentials_file, credentials=credentials, timeouts=_read_timeouts(top),
        cache=_read_cache(top), keys_empty=not keys, exceptions_empty=not exceptions,
        files=tuple(dict.fromkeys(reader.files)), digests=tuple(reader.digests))


def _resolve(base: Path, value: str) -> Path:
    """A path from trust.yaml: relative ones are relative to its directory."""
    path = Path(value)
    return path if path.is_absolute() else (base / path)


_PINNED: dict[bytes, str] = {}  # a CA bundle's bytes → its sealed in-memory file, per process


def pinned_bundle(pem: bytes) -> str:
    """A path that reads ``pem`` and nothing else, ever: a sealed memfd (``/proc/self/fd/N``,
    inherited by the workers forked after the load), one per distinct bundle. requests and
    OpenSSL open it by path at each connection; no file on disk is read again."""
    found = _PINNED.get(pem)
    if found is not None:
        return found
    fd = os.memfd_create("pyauthz-ca-file", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(pem)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW
                | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    path = f"/proc/self/fd/{fd}"
    _PINNED[pem] = path
    return path


def _read_named(section: Section, field: str, what: str, path: Path) -> bytes:
    """A file trust.yaml names (a key, a CA bundle, registry logins) decides what is trusted
    as much as trust.yaml does: read once, through a path no one but root could change
    (authz.ownership: every directory, symlink and the file itself), and only these bytes
    are used afterwards; refused otherwise, wherever it is."""
    visited: list[str] = []
    try:
        data = read_verified(str(path), visited=visited)
        section.reader.files += [str(path), *visited]
        base = section.reader.path.parent  # named relative to it when inside: the revision
        named = os.path.relpath(path, base) if path.is_relative_to(base) else str(path)
        section.reader.digests.append((named, hashlib.sha256(data).hexdigest()))
        return data
    except NotTrusted as exc:
        raise section.fail_value(field, f"{what}: {path} can be rewritten by others than "
                                        f"root ({exc}); make it and the directories above "
                                        f"it root's, and not writable by every user") from None
    except (OSError, ValueError) as exc:
        raise section.fail_value(field, f"{what}: cannot read {path}: "
                                        f"{getattr(exc, 'strerror', None) or exc}") from None


def _key_line(top: Section, key: str) -> int | None:
    """The line of a top-level key (where fixes say to add to it), or None."""
    return top.position(key).key if key in top else None


# --------------------------------------------------------------------------- version

def _check_version(top: Section) -> None:
    """``version: 1``."""
    version = top.value("version")
    if version != 1 or isinstance(version, bool):
        raise top.fail_value("version", "version must be 1")


# --------------------------------------------------------------------------- keys

def _read_keys(top: Section) -> Keys:
    """``keys:``: the trusted public keys, by name."""
    keys: Keys = {}
    if "keys" not in top:
        return keys
    for item, line in top.items("keys", "keys"):
        key = _read_key(top.reader.section(item, line, "a key", KEY_FIELDS, {"name"}), keys)
        keys[key.name] = key
    return keys


def _read_key(entry: Section, known: Keys) -> TrustedKey:
    """One entry of ``keys:``: a name and a PEM public key (``file`` or ``pem``), maybe pinned
    by ``fingerprint``."""
    name = entry.string("name", "key name")
    if not KEY_NAME_RE.match(name):
        raise entry.fail_value("name", f"key name {name!r}: letters, digits, . _ - only")
    if name in known:
        raise entry.fail_value("name", f"duplicate key name {name!r}")
    if ("file" in entry) == ("pem" in entry):
        raise entry.fail(f"key {name!r}: give exactly one of `file` (a PEM file, relative "
                         f"to {entry.reader.path.parent}) or `pem` (the PEM text)")
    field = "file" if "file" in entry else "pem"
    pem, source = _key_pem(entry, name)
    try:
        key = load_public_key(pem, name, source)
    except KeyFileError as exc:
        raise entry.fail_value(field, f"key {name!r}: {exc}") from None
    if "fingerprint" in entry:
        pinned = entry.string("fingerprint", "fingerprint").lower()
        if pinned != key.fingerprint:
            raise entry.fail_value("fingerprint", f"key {name!r}: fingerprint of {source} is "
                                                  f"{key.fingerprint}, not {pinned}")
    if any(k.fingerprint == key.fingerprint for k in known.values()):
        raise entry.fail_value(field, f"key {name!r} is the same key as another entry")
    return key


def _key_pem(entry: Section, name: str) -> tuple[bytes, str]:
    """The key's PEM bytes and where they come from (the key file, or trust.yaml:line)."""
    if "file" in entry:
        key_path = _resolve(entry.reader.path.parent, entry.string("file", "file"))
        return _read_named(entry, "file", f"key {name!r}", key_path), str(key_path)
    return (entry.string("pem", "pem").encode(),
            f"{entry.reader.path}:{entry.position('pem').value}")


# --------------------------------------------------------------------------- default, rules, exceptions

def _read_default(top: Section, keys: Keys) -> Requirement:
    """``default:``; without one, a signature by any trusted key."""
    if "default" not in top:
        return Requirement(action=SIGNATURE, origin="default",
                           source=f"{top.reader.path} (no `default:`, so require: signature)",
                           keys=tuple(keys.values()))
    return _read_requirement(top.section("default", "default", DEFAULT_FIELDS, {"require"}), keys)


def _read_rules(top: Section, keys: Keys) -> list[Requirement]:
    """``rules:``: a pattern and what it requires."""
    if "rules" not in top:
        return []
    return [_read_requirement(top.reader.section(item, line, "rule", RULE_FIELDS,
                                                 {"pattern", "require"}), keys)
            for item, line in top.items("rules", "rules")]


def _read_exceptions(top: Section) -> list[Requirement]:
    """``exceptions:``: patterns accepted unsigned, each with a reason."""
    if "exceptions" not in top:
        return []
    return [_read_requirement(top.reader.section(item, line, "exception", EXCEPTION_FIELDS,
                                                 EXCEPTION_FIELDS), {})
            for item, line in top.items("exceptions", "exceptions")]


def _read_requirement(entry: Section, keys: Keys) -> Requirement:
    """A default, rule or exception (``entry.what`` says which)."""
    origin = entry.what
    pattern = _read_pattern(entry) if "pattern" in entry else None
    action = ACCEPT if origin == "exception" else _read_action(entry)
    reason = entry.string("reason", "reason") if "reason" in entry else None
    if action == ACCEPT and not reason:
        raise entry.fail(f"{origin}: accepting unsigned images needs a `reason`")
    chosen = _read_rule_keys(entry, action, keys)
    identity = _read_identity(entry, action)
    return Requirement(action=action, origin=origin, source=entry.where, pattern=pattern,
                       keys=chosen if action == SIGNATURE else (), identity=identity,
                       reason=reason)


def _read_pattern(entry: Section) -> Pattern:
    """``pattern:``: a registry host, maybe with a namespace, or ``*.domain``."""
    text = entry.string("pattern", "pattern")
    try:
        return parse_pattern(text)
    except ValueError as exc:
        raise entry.fail_value("pattern", str(exc)) from None


def _read_action(entry: Section) -> str:
    """``require:``: signature, accept or reject."""
    action = entry.string("require", "require")
    if action not in ACTIONS:
        raise entry.fail_value("require", f"require must be one of {', '.join(ACTIONS)}, "
                                          f"not {action!r}")
    return action


def _read_rule_keys(entry: Section, action: str, keys: Keys) -> tuple[TrustedKey, ...]:
    """``keys:`` of a rule: the names of the keys it trusts (all keys when left out)."""
    if "keys" not in entry:
        return tuple(keys.values())
    if action != SIGNATURE:
        raise entry.fail_key("keys", f"{entry.what}: `keys` only applies to require: signature")
    names = entry.items("keys", "keys")
    if not names:
        raise entry.fail_value("keys", f"{entry.what}: `keys` lists no key; omit it to mean "
                                       f"every key")
    chosen = []
    for value, line in names:
        name = entry.reader.string(value, line, "key name")
        if name not in keys:
            raise entry.reader.fail(line, f"unknown key {name!r}; keys are defined under "
                                          f"{entry.reader.path.name}'s top-level `keys:`")
        chosen.append(keys[name])
    return tuple(chosen)


def _read_identity(entry: Section, action: str) -> Identity:
    """``identity:``: ``repository`` (the default) or ``{exact: REGISTRY/REPO}``."""
    if "identity" not in entry:
        return Identity()
    if action != SIGNATURE:
        raise entry.fail_key("identity", f"{entry.what}: `identity` only applies to require: "
                                         f"signature")
    if not isinstance(entry.value("identity"), (dict, list)):
        if entry.value("identity") != "repository":
            raise entry.fail_value("identity", "identity must be `repository` or "
                                               "`{exact: REGISTRY/REPO}`")
        return Identity()
    exact = entry.section("identity", "identity", {"exact"}, {"exact"})
    text = exact.string("exact", "identity.exact")
    try:
        return Identity(exact=parse_repository(text).repository)
    except InvalidReference as exc:
        raise exact.fail_value("exact", f"identity.exact: {exc}") from None


def _most_specific_first(requirements: list[Requirement]) -> tuple[Requirement, ...]:
    """Rules and exceptions, most specific pattern first; a pattern may be used once."""
    seen: dict[tuple[bool, str, str], str] = {}
    for req in requirements:
        scope = (req.pattern.wildcard, req.pattern.host, req.pattern.path)
        if scope in seen:
            raise TrustPolicyError(f"{req.source}: pattern {req.pattern.text!r} is already used "
                                   f"at {seen[scope]}")
        seen[scope] = req.source
    return tuple(sorted(requirements, key=lambda r: r.pattern.specificity, reverse=True))


# --------------------------------------------------------------------------- registries

def _read_registries(top: Section) -> dict[str, RegistrySettings]:
    """``registries:``: per registry host, plain HTTP or a CA bundle."""
    registries: dict[str, RegistrySettings] = {}
    if "registries" not in top:
        return registries
    reader = top.reader
    for name, value, position in top.entries("registries", "a mapping of registry host to "
                                                           "settings"):
        host = reader.string(name, position.key, "registry host").lower()
        if host in LEGACY_DEFAULT_DOMAINS:
            raise reader.fail(position.key, f"write Docker Hub as {DEFAULT_DOMAIN}")
        if not DOMAIN_RE.match(host) or "/" in host:
            raise reader.fail(position.key, f"{host!r} is not a registry host[:port]")
        if host in registries:
            raise reader.fail(position.key, f"registry {host!r} is listed twice")
        settings = reader.section(value, position.value, f"registry {host!r}", REGISTRY_FIELDS)
        registries[host] = _read_registry(settings, host, f"{reader.path}:{position.key}")
    return registries


def _read_registry(settings: Section, host: str, source: str) -> RegistrySettings:
    """One registry's settings: ``insecure`` (plain HTTP) or ``ca_file``."""
    insecure = settings.boolean("insecure", "insecure") if "insecure" in settings else False
    ca_file = None
    if "ca_file" in settings:
        if insecure:
            raise settings.fail_value("ca_file", f"registry {host!r}: ca_file and insecure: "
                                                 f"true exclude each other (insecure means "
                                                 f"plain HTTP)")
        ca_file = _resolve(settings.reader.path.parent, settings.string("ca_file", "ca_file"))
        pem = _read_named(settings, "ca_file", f"registry {host!r}: ca_file", ca_file)
        return RegistrySettings(host=host, insecure=insecure, ca_file=ca_file, source=source,
                                ca_bundle=pinned_bundle(pem))
    return RegistrySettings(host=host, insecure=insecure, ca_file=ca_file, source=source)


# --------------------------------------------------------------------------- credentials, limits

def _read_credentials_file(top: Section) -> tuple[Path | None, dict]:
    """``credentials_file:``: registry logins, read and checked now (never echoed); the
    logins used are these, never the file read again."""
    if "credentials_file" not in top or top.value("credentials_file") is None:
        return None, {}
    path = _resolve(top.reader.path.parent, top.string("credentials_file", "credentials_file"))
    raw = _read_named(top, "credentials_file", "credentials_file", path)
    try:
        return path, load_credentials(path, raw)
    except TrustPolicyError as exc:
        raise top.fail_value("credentials_file", str(exc)) from None


def _optional_number(section: Section, key: str, lo: float, hi: float,
                     default: float) -> float:
    """The number under ``key`` (from ``lo`` to ``hi``), or ``default``."""
    if key not in section:
        return default
    return section.number(key, f"{section.what}.{key}", lo, hi)


def _read_timeouts(top: Section) -> Timeouts:
    """``timeouts:``: per registry connect and read, and per decision (seconds)."""
    if "timeouts" not in top:
        return Timeouts()
    section = top.section("timeouts", "timeouts", {"connect", "read", "decision"})
    defaults = Timeouts()
    return Timeouts(connect=_optional_number(section, "connect", 0.05, 10, defaults.connect),
                    read=_optional_number(section, "read", 0.05, 10, defaults.read),
                    decision=_optional_number(section, "decision", 0.1, 10, defaults.decision))


def _read_cache(top: Section) -> CacheSettings:
    """``cache:``: how long, and how many, verified signatures are remembered."""
    if "cache" not in top:
        return CacheSettings()
    section = top.section("cache", "cache", {"ttl_seconds", "max_entries"})
    defaults = CacheSettings()
    return CacheSettings(
        ttl_seconds=_optional_number(section, "ttl_seconds", 0, 3600, defaults.ttl_seconds),
        max_entries=int(_optional_number(section, "max_entries", 1, 1_000_000,
                                         defaults.max_entries)))
