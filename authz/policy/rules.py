"""Reading ``rules.yaml``: the rules and exceptions a security team edits.

The format is documented in docs/policy.md. Loading is strict: an unknown key, a missing
message, an exception naming no rule... stops the load with the file and line, because a
policy that silently means something else than it says is worse than none.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.identity import IdentityError, parse_subject
from authz.policy.yamlfile import StrictYaml
from authz.decoding.routes import ENDPOINTS
from authz.decoding.facts import FACT_KINDS, value_problem

# Built-in rules that no policy can define, lift or weaken (authz/policy/floor.py).
FLOOR_RULES = frozenset({"host-path-protected", "authz-plugin-protected"})

_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
EFFECTS = ("deny", "audit")
# ``mode:`` of the whole rules.yaml: enforce (rules deny), or audit (every deny is logged as an
# audit violation and the request is allowed: a first roll-out). The floor rules and the
# ``request-*`` refusals are not policy and stay enforced (authz/decision.py).
MODES = ("enforce", "audit")


class PolicyError(ValueError):
    """The policy files are invalid; the message names the file and line."""


def _yaml(path: Path) -> StrictYaml:
    return StrictYaml(path, PolicyError, verified=True)


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str                 # deny | audit (logged, not enforced: for roll-outs)
    kinds: tuple[str, ...]      # fact kinds (globs)
    values: tuple[str, ...]     # value globs, or host paths when op == "path"
    op: str                     # glob | path
    except_values: tuple[str, ...]  # value globs (or roots, for ``outside:``) this rule leaves alone
    endpoints: tuple[str, ...]
    message: str
    fix: str
    reference: str
    line: int
    except_op: str = "glob"     # glob | under (``outside:`` roots)
    subjects: tuple[str, ...] = ("*",)  # the callers the rule applies to (authz/identity.py)


@dataclass(frozen=True)
class PolicyException:
    id: str
    rules: tuple[str, ...]
    subjects: tuple[str, ...]
    images: tuple[str, ...]
    endpoints: tuple[str, ...]
    values: tuple[str, ...]
    reason: str
    expires: dt.date | None
    line: int

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and today > self.expires


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    exceptions: tuple[PolicyException, ...]
    roles: dict[str, tuple[str, ...]]   # role -> members (subjects: names, fields, role:NAME)
    path: Path
    mode: str = "enforce"               # enforce | audit (MODES)


def _rule(path: Path, item: Any) -> Rule:
    if not isinstance(item, dict):
        raise _yaml(path).fail(None, "each entry of 'rules' must be a mapping")
    line = item["__line__"]
    _yaml(path).keys(item, {"id", "effect", "match", "message", "fix", "reference", "subjects"},
                     "a rule")
    rule_id = item.get("id")
    if (not isinstance(rule_id, str) or not _ID.match(rule_id) or rule_id.startswith("request-")
            or rule_id in FLOOR_RULES):
        raise _yaml(path).fail(line, f"rule id {rule_id!r} must be lowercase letters, digits, '-' or "
                                "'.', and neither start with 'request-' (reserved) nor be a built-in floor "
                                f"rule ({', '.join(sorted(FLOOR_RULES))})")
    effect = item.get("effect", "deny")
    if effect not in EFFECTS:
        raise _yaml(path).fail(line, f"rule {rule_id}: effect must be one of {', '.join(EFFECTS)}")
    match = item.get("match")
    if not isinstance(match, dict):
        raise _yaml(path).fail(line, f"rule {rule_id}: 'match' (a mapping) is required")
    _yaml(path).keys(match, {"fact", "values", "paths", "outside", "except", "endpoints"},
                "match")
    given = [k for k in ("values", "paths", "outside") if k in match]
    if len(given) > 1:
        raise _yaml(path).fail(match["__line__"],
                    f"rule {rule_id}: give one of 'values', 'paths' or 'outside', not "
                    + " and ".join(repr(k) for k in given))
    except_values = _yaml(path).strings(match, "except", default=[])
    except_op = "glob"
    if "paths" in match:
        values, op = _absolute(path, match, "paths", rule_id), "path"
    elif "outside" in match:
        if except_values:
            raise _yaml(path).fail(match["__line__"], f"rule {rule_id}: 'outside' lists the allowed "
                                                 "roots; it takes no 'except'")
        values, op = ("*",), "glob"
        except_values, except_op = _absolute(path, match, "outside", rule_id), "under"
    else:
        values, op = _yaml(path).strings(match, "values", default=["*"], required=True), "glob"
    kinds = _yaml(path).strings(match, "fact", required=True)
    _known(path, match["__line__"], f"rule {rule_id}: fact", kinds, FACT_KINDS)
    endpoints = _yaml(path).strings(match, "endpoints", default=["*"], required=True)
    _known(path, match["__line__"], f"rule {rule_id}: endpoint", endpoints, ENDPOINTS)
    if kinds == ("endpoint",):
        _known(path, match["__line__"], f"rule {rule_id}: endpoint", values + except_values, ENDPOINTS)
    _values_fit(path, match["__line__"], f"rule {rule_id}", kinds, values, op)
    _values_fit(path, match["__line__"], f"rule {rule_id}", kinds, except_values, except_op)
    return Rule(
        id=rule_id,
        effect=effect,
        kinds=kinds,
        values=values,
        op=op,
        except_values=except_values,
        endpoints=endpoints,
        message=_yaml(path).text(item, "message"),
        fix=_yaml(path).text(item, "fix"),
        reference=_yaml(path).text(item, "reference", required=False),
        line=line,
        except_op=except_op,
        subjects=_yaml(path).strings(item, "subjects", default=["*"], required=True),
    )


def _absolute(path: Path, match: dict, key: str, rule_id: str) -> tuple[str, ...]:
    values = _yaml(path).strings(match, key, required=True)
    for p in values:
        if not p.startswith("/") or (p != "/" and (p.endswith("/") or "//" in p
                                                   or "/./" in p + "/" or "/../" in p + "/")):
            raise _yaml(path).fail(match["__line__"], f"rule {rule_id}: {key} entry {p!r} is not "
                                                 "absolute and canonical")
    return values


def _values_fit(path: Path, line: int, what: str, kinds: tuple[str, ...],
                values: tuple[str, ...], op: str) -> None:
    """Every value can match a fact of one of the rule's kinds, as the decoder writes it
    (``CAP_SYS_ADMIN`` never would: the fact says ``SYS_ADMIN``)."""
    matched = [k for k in FACT_KINDS if any(fnmatch.fnmatchcase(k, p) for p in kinds)]
    for value in values:
        problems = [value_problem(kind, value, op) for kind in matched]
        if problems and all(problems):
            raise _yaml(path).fail(line, f"{what}: value {value!r} can never match: {problems[0]}")


def _known(path: Path, line: int, what: str, patterns: tuple[str, ...], known) -> None:
    """Every pattern names at least one known value: a misspelling would never match."""
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in known):
            raise _yaml(path).fail(line, f"{what} {pattern!r} matches nothing pyauthz reports "
                                    f"(known: {', '.join(sorted(known))})")


def _exception(path: Path, item: Any, rule_ids: dict[str, Rule], today: dt.date) -> PolicyException:
    if not isinstance(item, dict):
        raise _yaml(path).fail(None, "each entry of 'exceptions' must be a mapping")
    line = item["__line__"]
    _yaml(path).keys(item, {"id", "rules", "subjects", "images", "endpoints", "values",
                             "reason", "expires"}, "an exception")
    ex_id = item.get("id")
    if not isinstance(ex_id, str) or not _ID.match(ex_id):
        raise _yaml(path).fail(line, f"exception id {ex_id!r} must be lowercase letters, digits, '-' or '.'")
    rules = _yaml(path).strings(item, "rules", required=True)
    endpoints = _yaml(path).strings(item, "endpoints", default=["*"], required=True)
    _known(path, line, f"exception {ex_id}: endpoint", endpoints, ENDPOINTS)
    for rule_id in rules:
        if rule_id in rule_ids and rule_ids[rule_id].kinds != ("host-path",):
            _values_fit(path, line, f"exception {ex_id}", rule_ids[rule_id].kinds,
                        _yaml(path).strings(item, "values", default=["*"]), "glob")
        if rule_id not in rule_ids:
            raise _yaml(path).fail(line, f"exception {ex_id}: no rule {rule_id!r} (request-* checks "
                                    "and the floor rules "
                                    f"{', '.join(sorted(FLOOR_RULES))} "
                                    "cannot be lifted)")
    expires = item.get("expires")
    if expires is not None and not isinstance(expires, dt.date):
        raise _yaml(path).fail(line, f"exception {ex_id}: 'expires' must be a date (YYYY-MM-DD)")
    return PolicyException(
        id=ex_id,
        rules=rules,
        # Explicit on purpose: an exception for everyone must say subjects: ["*"].
        subjects=_yaml(path).strings(item, "subjects", required=True),
        images=_yaml(path).strings(item, "images", default=["*"], required=True),
        endpoints=endpoints,
        values=_yaml(path).strings(item, "values", default=["*"], required=True),
        reason=_yaml(path).text(item, "reason"),
        expires=expires,
        line=line,
    )


def load_rules(path: Path, today: dt.date | None = None) -> RuleSet:
    today = today or dt.date.today()
    doc = _yaml(path).load()
    if not isinstance(doc, dict):
        raise _yaml(path).fail(None, "the file must be a mapping with 'rules:'")
    _yaml(path).keys(doc, {"version", "mode", "rules", "exceptions", "roles"}, "the policy")
    if doc.get("version", 1) != 1:
        raise _yaml(path).fail(doc["__line__"], "unsupported version (this pyauthz reads version 1)")
    mode = doc.get("mode", "enforce")
    if not isinstance(mode, str) or mode not in MODES:
        raise _yaml(path).fail(doc["__line__"], f"mode must be one of {', '.join(MODES)} (audit: the "
                                                f"rules' denies are logged, not enforced), not {mode!r}")
    raw_rules = doc.get("rules") or []
    if not isinstance(raw_rules, list):
        raise _yaml(path).fail(doc["__line__"], "'rules' must be a list")
    rules = tuple(_rule(path, item) for item in raw_rules)
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise _yaml(path).fail(rule.line, f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    raw_exceptions = doc.get("exceptions") or []
    if not isinstance(raw_exceptions, list):
        raise _yaml(path).fail(doc["__line__"], "'exceptions' must be a list")
    by_id = {rule.id: rule for rule in rules}
    exceptions = tuple(_exception(path, item, by_id, today) for item in raw_exceptions)
    ex_seen: set[str] = set()
    for ex in exceptions:
        if ex.id in ex_seen or ex.id in seen:
            raise _yaml(path).fail(ex.line, f"duplicate id {ex.id!r}")
        ex_seen.add(ex.id)
    raw_roles = doc.get("roles") or {}
    if not isinstance(raw_roles, dict):
        raise _yaml(path).fail(doc["__line__"], "'roles' must map a role name to its members")
    roles: dict[str, tuple[str, ...]] = {}
    for role, members in raw_roles.items():
        if role == "__line__":
            continue
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise _yaml(path).fail(raw_roles["__line__"], f"role {role!r}: members must be a list of names")
        roles[str(role)] = tuple(members)
    _check_subjects(path, doc, rules, exceptions, roles)
    return RuleSet(rules=rules, exceptions=exceptions, roles=roles, path=path, mode=mode)


def _check_subjects(path: Path, doc: dict, rules: tuple[Rule, ...],
                    exceptions: tuple[PolicyException, ...],
                    roles: dict[str, tuple[str, ...]]) -> None:
    """Every subject and role member is one pyauthz can match (authz/identity.py), and every
    role it names exists."""
    def check(line: int, what: str, subject: str, in_role: bool = False) -> None:
        try:
            parsed = parse_subject(subject)
        except IdentityError as exc:
            raise _yaml(path).fail(line, f"{what}: {exc}") from None
        if in_role and parsed.kind == "*":
            raise _yaml(path).fail(line, f"{what}: '*' is not a member (everyone is everyone)")
        if parsed.kind == "role" and parsed.value not in roles:
            raise _yaml(path).fail(line, f"{what}: no role {parsed.value!r} under 'roles:'")

    for rule in rules:
        for subject in rule.subjects:
            check(rule.line, f"rule {rule.id}", subject)
    for ex in exceptions:
        for subject in ex.subjects:
            check(ex.line, f"exception {ex.id}", subject)
    raw_roles = doc.get("roles") or {}
    line = raw_roles.get("__line__", doc["__line__"]) if isinstance(raw_roles, dict) else None
    for role, members in roles.items():
        for member in members:
            check(line, f"role {role!r}", member, in_role=True)
