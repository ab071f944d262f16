"""From a decoded request to a decision: the floor, the policy and image trust, all
gathered so that a deny lists every reason at once.

This module only decides: what a request means (dockerd's state included) is decoding's
answer (``authz.decoding.DecodedRequest``), and serving, logging and failing closed are
the plugin's (``authz.plugin``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Protocol

from authz.deadline import Deadline
from authz.decoding import DecodedRequest, Fact, Target
from authz.identity import Identity
from authz.policy.engine import ExceptionApplied, Policy, Violation
from authz.policy.floor import ProtectedPath, floor_violations, protected as protected_paths

ANONYMOUS = "anonymous"

_REFUSAL_MESSAGES = {
    "request-uri": "The request target cannot be read exactly as dockerd routes it.",
    "request-body-missing": "The plugin must see this request's body to judge it, and dockerd "
                            "did not forward it.",
    "request-body-invalid": "The body cannot be read exactly as dockerd will decode it.",
    "request-ambiguous": "The body says the same thing twice; dockerd and the plugin could read "
                         "it differently.",
    "request-form-body": "dockerd reads form bodies as query values without showing them to the "
                         "plugin.",
    "protocol": "dockerd's call to the plugin could not be read.",
    "request-state": "Deciding needs dockerd's current state, and it could not be read.",
    "request-noncanonical": "dockerd hands this value to runc or the kernel unchanged, and it is "
                            "not in the one form the plugin can judge exactly.",
    "request-volume-option": "A local volume option the plugin does not know may name a host "
                             "path; only known options are allowed.",
    "request-driver-option": "A network driver option the plugin does not know may reach the "
                             "host's interfaces; only known options are allowed.",
    "internal-error": "The plugin failed while deciding; it denies rather than guess.",
}


class TrustResult(Protocol):
    allowed: bool

    def log_fields(self) -> dict: ...
    def violation(self) -> Violation: ...


class TrustChecker(Protocol):
    """Image trust (``authz.trust.ImageTrust``): each check within the given deadline."""

    def check_pull(self, reference: str, deadline: Deadline | None = None) -> TrustResult: ...
    def check_run(self, reference: str, deadline: Deadline | None = None) -> TrustResult: ...
    def check_service(self, reference: str, deadline: Deadline | None = None) -> TrustResult: ...


class Lookups(Protocol):
    """The decision's reads (``authz.decoding.Lookups``): use() takes the lookup slot."""

    def use(self) -> Deadline: ...


@dataclass
class Decision:
    id: str
    phase: str
    allow: bool
    endpoint: str = "invalid"
    target: Target | None = None
    violations: list[Violation] = field(default_factory=list)
    audits: list[Violation] = field(default_factory=list)
    exceptions_applied: list[ExceptionApplied] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    duration_ms: float = 0.0
    # What the policy was asked about (every fact, which are stored, the image), for the
    # log's replayable record (audit.py); None when the request was refused before.
    request: DecodedRequest | None = None
    # rules.yaml's ``mode:`` when the policy was consulted (None: refused before it). In
    # audit mode the rules' denies are in ``audits`` with effect "deny": the would-be denies.
    mode: str | None = None

    def refuse(self, rule: str, found: str, fix: str) -> None:
        """Deny for a built-in reason (``request-*``, ``protocol``, ``internal-error``), and
        nothing else: what the policy said before the refusal (a refusal can come after it,
        e.g. no lookup slot for image trust) was not the decision, and replay must keep the
        refusal as recorded (a line without the request's facts)."""
        self.violations = [Violation(rule, found, _REFUSAL_MESSAGES.get(rule, ""), fix)]
        self.audits, self.exceptions_applied, self.facts, self.images = [], [], [], []
        self.request = None
        self.allow = False

    def message(self, revision: str) -> str:
        """What the docker user reads: every violation's rule, what was found, the fix."""
        if self.allow:
            return ""
        count = len(self.violations)
        head = (f"pyauthz denied {self.endpoint} (decision {self.id}, policy {revision[:12]}): "
                f"{count} violation{'s' if count != 1 else ''}")
        lines = [head]
        for v in self.violations:
            lines.append(f"[{v.rule}] found {v.found}. {v.message} Fix: {v.fix}")
        return "\n".join(lines)


# The decision ids' own generator: seeded from the OS, and again in every forked worker, so
# that no other code seeding ``random`` (or two workers forked from one master) repeats ids.
_IDS = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(16)))


def new_decision_id() -> str:
    """16 random hex digits, without a system call per decision."""
    return f"{_IDS.getrandbits(64):016x}"


def _as_at_create(policy: Policy, subject: Identity, request: DecodedRequest,
                  evaluation) -> tuple[list[Violation], list[ExceptionApplied]]:
    """A start (exec, attach, cp) judges the container's stored configuration with the
    policy in force now; an exception that lifts a rule for that configuration at create
    (scoped to container.create) lifts it there too, or `docker run` would create a
    container it can never start or attach to."""
    violations, applied = list(evaluation.violations), list(evaluation.exceptions_applied)
    if not request.stored or request.endpoint == "container.create":
        return violations, applied
    # Only what an exception lifts at create is lifted: a rule scoped to exec or attach (that
    # does not apply at create at all) still denies.
    at_create = policy.evaluate(subject, "container.create", request.image, request.stored)
    lifted = {(e.rule, e.found): e for e in at_create.exceptions_applied}
    from_store = {f.describe() for f in request.stored}
    kept = [v for v in violations if v.found not in from_store or (v.rule, v.found) not in lifted]
    applied += [lifted[(v.rule, v.found)] for v in violations
                if v.found in from_store and (v.rule, v.found) in lifted]
    return kept, applied


def _daemon_floor(found: list[tuple[str, str]]) -> tuple[ProtectedPath, ...]:
    """dockerd's own roots, as floor paths."""
    return tuple(p for path, why in found for p in protected_paths([path], why))


def decide(decision: Decision, request: DecodedRequest, subject: Identity, policy: Policy,
           trust: TrustChecker | None, lookups: Lookups,
           protected: tuple[ProtectedPath, ...]) -> None:
    """Fill ``decision`` for ``request``: floor violations first, then the policy's, then
    image trust's; ``decision.allow`` is whether none denies.

    In audit mode (rules.yaml ``mode: audit``) the rules' denies are logged as audit
    violations, keeping effect "deny", and do not deny, and so are image trust's (trust.yaml
    is part of the policy rolled out); the floor (not policy: what no policy may open, the
    plugin's own files among it) still denies, as do the ``request-*`` refusals."""
    decision.target, decision.endpoint = request.target, request.endpoint
    decision.request = request
    decision.mode = policy.ruleset.mode
    audit_mode = decision.mode == "audit"
    facts = request.facts
    floor = floor_violations(request.endpoint, facts,
                             protected + _daemon_floor(request.daemon_paths))
    decision.violations += floor
    evaluation = policy.evaluate(subject, request.endpoint, request.image, facts)
    violations, applied = _as_at_create(policy, subject, request, evaluation)
    for violation in violations:
        enforced = violation.effect == "deny" and not audit_mode
        (decision.violations if enforced else decision.audits).append(violation)
    decision.exceptions_applied = applied
    floored = {v.found for v in floor}
    decision.facts = [f for f in facts if f.describe() in floored
                      and f not in evaluation.matched_facts] + list(evaluation.matched_facts)
    decision.facts += [f for f in facts if f.kind == "image"]
    if trust is not None:
        _check_images(decision, request, trust, lookups)
    decision.allow = not decision.violations


def _check_images(decision: Decision, request: DecodedRequest, trust: TrustChecker,
                  lookups: Lookups) -> None:
    """Image trust for every image the request pulls or runs, within the decision's
    deadline (which carries the decision's reads of dockerd: an image decoding has read
    already is not read again)."""
    checks = {"pull": trust.check_pull, "run": trust.check_run, "service": trust.check_service}
    for kind, reference in request.trust_checks:
        result = checks[kind](reference, lookups.use())
        decision.images.append(result.log_fields())
        if not result.allowed:
            # In audit mode a would-be deny, logged with effect "deny" like the rules'.
            (decision.audits if decision.mode == "audit" else decision.violations).append(
                result.violation())
