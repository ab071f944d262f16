"""Lint's warnings on a policy that loads: what lint alone can tell for sure about
rules.yaml (audit mode, expiring exceptions, exceptions that lift nothing, rules that never
match or match what another matches, unused roles) and trust.yaml (unused keys, rules that
change nothing)."""

from __future__ import annotations

import datetime as dt
import fnmatch
import re

from authz.decoding.routes import ENDPOINTS
from authz.policy.matchers import value_match
from authz.policy.rules import RuleSet
from authz.policytools.lint_report import WARNING, Finding, Report
from authz.trust.policy import SIGNATURE

EXPIRING_DAYS = 14
_GLOB = re.compile(r"[*?\[]")

def _expanded(patterns, known) -> set[str]:
    """The known names a list of globs matches."""
    return {name for name in known if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def _literal(value: str) -> bool:
    return not _GLOB.search(value)


def rules_warnings(ruleset: RuleSet, report: Report, today: dt.date,
                    role_lines: dict[str, int], mode_line: int | None = None) -> None:
    """What lint can tell for sure about a rules.yaml that loads (``mode_line``: the line
    of its ``mode:`` key)."""
    path = str(ruleset.path)

    def warn(check: str, line: int | None, text: str) -> None:
        report.add(Finding(WARNING, check, text, path, line))

    if ruleset.mode == "audit":
        warn("mode-audit", mode_line,
             "mode: audit: the rules and image trust deny nothing; their denies are only logged "
             "(audit_violations with effect deny). Only the built-in floor and the request-* "
             "refusals still deny. Set mode: enforce after the roll-out.")
    by_id = {rule.id: rule for rule in ruleset.rules}
    matches: dict[tuple, str] = {}
    for rule in ruleset.rules:
        endpoints = _expanded(rule.endpoints, ENDPOINTS)
        if rule.except_op == "glob" and "*" in rule.except_values:
            warn("rule-never-matches", rule.line, f"rule {rule.id}: except: ['*'] leaves every "
                                                  "value alone; it never matches")
        elif rule.kinds == ("endpoint",) and rule.op == "glob":
            if not _reach(rule):
                warn("rule-never-matches", rule.line, f"rule {rule.id}: the endpoints its values "
                                                      "name are not among its `endpoints:`; it "
                                                      "never matches")
        elif rule.op == "glob" and rule.values and all(
                _literal(v) and any(value_match(v, e, rule.except_op) for e in rule.except_values)
                for v in rule.values):
            warn("rule-never-matches", rule.line, f"rule {rule.id}: every value it lists is also "
                                                  "under `except:`; it never matches")
        key = (rule.kinds, rule.values, rule.op, rule.except_values, rule.except_op,
               tuple(sorted(endpoints)), getattr(rule, "subjects", None))
        if key in matches:
            warn("rule-duplicate", rule.line, f"rule {rule.id} matches exactly what rule "
                                              f"{matches[key]} matches")
        else:
            matches[key] = rule.id
    for ex in ruleset.exceptions:
        if ex.expired(today):
            warn("exception-expired", ex.line, f"exception {ex.id} expired on {ex.expires}; it "
                                               "no longer applies: remove it")
        elif ex.expires is not None and (ex.expires - today).days < EXPIRING_DAYS:
            warn("exception-expiring", ex.line, f"exception {ex.id} expires on {ex.expires} (in "
                                                f"{(ex.expires - today).days + 1} days)")
        ex_endpoints = _expanded(ex.endpoints, ENDPOINTS)
        for rule_id in ex.rules:
            rule = by_id[rule_id]
            if not ex_endpoints & _reach(rule):
                warn("exception-lifts-nothing", ex.line, f"exception {ex.id}: rule {rule_id} "
                                                         "applies on none of its endpoints")
                continue
            dead = [v for v in ex.values if _literal(v) and not _lifts(rule, v)]
            if dead and len(dead) == len(ex.values):
                warn("exception-lifts-nothing", ex.line, f"exception {ex.id}: rule {rule_id} "
                                                         f"never matches its values "
                                                         f"({', '.join(dead)})")
    named = set()
    subjects = [s for holder in list(ruleset.exceptions) + list(ruleset.rules)
                for s in getattr(holder, "subjects", None) or ()]
    subjects += [member for members in ruleset.roles.values() for member in members]
    for subject in subjects:
        if subject.startswith("role:"):
            named.add(subject[5:])
    for role in ruleset.roles:
        if role not in named:
            warn("role-unused", role_lines.get(role), f"role {role}: no exception, rule or role "
                                                      f"names role:{role}")


def _reach(rule) -> set[str]:
    """The endpoints on which ``rule`` can match: its ``endpoints:``, and for a rule on the
    ``endpoint`` fact, only those its values name."""
    endpoints = _expanded(rule.endpoints, ENDPOINTS)
    if rule.kinds == ("endpoint",) and rule.op == "glob":
        endpoints &= _expanded(rule.values, ENDPOINTS) - _expanded(rule.except_values, ENDPOINTS)
    return endpoints


def _lifts(rule, value: str) -> bool:
    """Whether ``rule`` can match a fact whose value is ``value`` (a literal)."""
    if rule.except_values and any(value_match(value, e, rule.except_op)
                                  for e in rule.except_values):
        return False
    return any(value_match(value, v, rule.op) for v in rule.values)


def _source(text: str) -> tuple[str | None, int | None]:
    """``file:line`` of a trust requirement's source."""
    match = re.match(r"^(.*\.yaml):(\d+)$", text or "")
    return (match[1], int(match[2])) if match else (None, None)


def _covers(outer, inner) -> bool:
    """Whether trust pattern ``outer`` covers every image ``inner`` covers."""
    if outer.wildcard:
        host = inner.host.split(":", 1)[0]
        return host.endswith("." + outer.host)
    if inner.wildcard or outer.host != inner.host:
        return False
    return not outer.path or inner.path == outer.path or inner.path.startswith(outer.path + "/")


def _same(a, b) -> bool:
    """Whether two trust requirements ask the same of an image (action, keys, identity)."""
    return a.cache_key == b.cache_key


def trust_warnings(trust, report: Report) -> None:
    """What lint can tell for sure about a trust.yaml that loads."""
    policy = trust.policy
    path = str(policy.path)
    used = set()
    for req in (policy.default, *policy.rules):
        if req.action == SIGNATURE:
            used |= {k.fingerprint for k in req.keys}
    for key in policy.keys:
        if key.fingerprint not in used:
            report.add(Finding(WARNING, "trust-key-unused", f"key {key.name}: no rule or default "
                                                            "trusts it", path, policy.keys_line))
    for req in policy.rules:
        fallback = next((other for other in policy.rules
                         if other is not req and _covers(other.pattern, req.pattern)),
                        policy.default)
        if _same(req, fallback):
            file, line = _source(req.source)
            report.add(Finding(WARNING, "trust-rule-redundant",
                               f"{req.origin} {req.pattern.text!r} changes nothing: without it "
                               f"{fallback.label} requires the same", file or path, line))
