"""Re-deciding a logged request with a candidate policy: the decision as replay compares
it (``Outcome``), recorded beside predicted (``Replayed``), and the class of change."""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.decision import Decision, decide
from authz.policy.engine import Policy, Violation
from authz.policy.floor import AUTHZ_PLUGIN_RULE, HOST_PATH_RULE
from authz.policytools.replay_log import (RecordedTrust, list_field, rebuild_request, rule_id,
                                          subject_of, text_field)

FLOOR_RULES = frozenset({HOST_PATH_RULE, AUTHZ_PLUGIN_RULE})

NEWLY_DENIED = "newly_denied"
NEWLY_ALLOWED = "newly_allowed"
RULES_CHANGED = "rules_changed"
AUDITS_CHANGED = "audits_changed"
CHANGE_CLASSES = (NEWLY_DENIED, NEWLY_ALLOWED, RULES_CHANGED, AUDITS_CHANGED)


@dataclass(frozen=True)
class Outcome:
    """A decision as replay compares it: the answer, the rule ids that deny, the audit
    matches and the exceptions that lifted a rule."""

    allow: bool
    rules: tuple[str, ...]
    audits: tuple[str, ...] = ()
    exemptions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def recorded(cls, line: dict) -> "Outcome":
        return cls(bool(line.get("allow")),
                   tuple(rule_id(v) for v in list_field(line, "violations")),
                   tuple(rule_id(v) for v in list_field(line, "audit_violations")),
                   tuple((text_field(e, "exception"), text_field(e, "rule"))
                         for e in list_field(line, "exemptions")))

    @classmethod
    def of(cls, decision: Decision) -> "Outcome":
        return cls(decision.allow, tuple(v.rule for v in decision.violations),
                   tuple(v.rule for v in decision.audits),
                   tuple((e.exception, e.rule) for e in decision.exceptions_applied))

    def as_json(self) -> dict:
        return {"allow": self.allow, "rules": list(self.rules), "audits": list(self.audits),
                "exemptions": [list(e) for e in self.exemptions]}


@dataclass
class Replayed:
    """One request-phase decision: as recorded, and as the candidate would decide it
    (the same when it was kept as recorded)."""

    line: dict
    recorded: Outcome
    predicted: Outcome
    subject: str
    kept: bool = False          # refused before the policy: kept as recorded
    found: dict[str, list[str]] = field(default_factory=dict)  # rule -> what it found

    @property
    def change(self) -> str | None:
        before, after = self.recorded, self.predicted
        if before.allow and not after.allow:
            return NEWLY_DENIED
        if after.allow and not before.allow:
            return NEWLY_ALLOWED
        if set(before.rules) != set(after.rules):
            return RULES_CHANGED
        if set(before.audits) != set(after.audits):
            return AUDITS_CHANGED
        return None

    def found_for(self, rule: str, change: str | None) -> list[str]:
        """What ``rule`` found: in the candidate's decision, or for a rule that no longer
        matches (newly allowed, ``-rule``) in the recorded one."""
        if change == NEWLY_ALLOWED or rule.startswith("-"):
            return [v.get("found", "") for key in ("violations", "audit_violations")
                    for v in self.line.get(key) or () if isinstance(v, dict)
                    and v.get("rule") == rule.lstrip("-")]
        return self.found.get(rule.lstrip("+"), [])

    def changed_rules(self) -> list[str]:
        """The rules a change is filed under: for a newly denied decision the rules that
        deny it now, for a newly allowed one those that denied it, else +added / -removed."""
        before, after = self.recorded, self.predicted
        change = self.change
        if change == NEWLY_DENIED:
            return sorted(set(after.rules))
        if change == NEWLY_ALLOWED:
            return sorted(set(before.rules))
        old, new = ((before.rules, after.rules) if change == RULES_CHANGED
                    else (before.audits, after.audits))
        return ([f"+{r}" for r in sorted(set(new) - set(old))]
                + [f"-{r}" for r in sorted(set(old) - set(new))])


class _NoLookups:
    """Replay reads nothing from dockerd: what it read then is in the facts."""

    def use(self):
        return None


def replay_line(line: dict, policy: Policy) -> Replayed:
    """The candidate's decision on one request-phase line (LineError when it cannot be
    replayed as written)."""
    recorded = Outcome.recorded(line)
    subject, name = subject_of(line)
    if "all_facts" not in line:
        # Refused before the policy was consulted (request-*, protocol, internal-error).
        return Replayed(line, recorded, recorded, name, kept=True)
    request = rebuild_request(line)
    images = list_field(line, "images")
    floor = [Violation(rule_id(v), text_field(v, "found"), "", "",
                       text_field(v, "reference", ""), text_field(v, "effect", "deny"))
             for v in list_field(line, "violations") if rule_id(v) in FLOOR_RULES]
    decision = Decision(id=text_field(line, "decision_id", ""), phase="request", allow=False)
    decision.violations = list(floor)
    trust = RecordedTrust(images) if images else None
    decide(decision, request, subject, policy, trust, _NoLookups(), ())
    # The floor as recorded: what decide() found again (authz-plugin-protected needs no
    # host paths) is dropped, so that it is neither lost nor counted twice.
    decision.violations = floor + [v for v in decision.violations[len(floor):]
                                   if v.rule not in FLOOR_RULES]
    decision.allow = not decision.violations
    found: dict[str, list[str]] = {}
    for v in decision.violations + decision.audits:
        found.setdefault(v.rule, []).append(v.found)
    return Replayed(line, recorded, Outcome.of(decision), name, found=found)
