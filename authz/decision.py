"""From a decoded request to a decision: policy violations, request-level refusals and
image trust, all gathered so that a deny lists every reason at once."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from authz.decoding import Decoded, RequestRefused, Target, decode
from authz.decoding.routes import READ_METHODS, match_route, normalize_image
from authz.decoding.uri import parse_target
from authz.decoding.errors import refused_json
from authz.moby.gojson import InvalidJSON
from authz.decoding.facts import Fact
from authz.decoding.canonical import path_budget
from authz.decoding.checks import auto_restart_facts
from authz.decoding.live import LiveState
from authz.policy.engine import Exemption, Policy, Violation
from authz.policy.floor import SYSTEM_FLOOR, ProtectedPath, floor_violations, protected as floor_paths_of
from authz.protocol import REQUEST_PHASE, AuthzRequest

ANONYMOUS = "anonymous"
LOOKUP_SLOT_SECONDS = 1.0

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


class TrustChecker(Protocol):
    def check_pull(self, reference: str): ...
    def check_run(self, reference: str): ...
    def check_service(self, reference: str): ...


@dataclass
class Decision:
    id: str
    phase: str
    allow: bool
    endpoint: str = "invalid"
    target: Target | None = None
    violations: list[Violation] = field(default_factory=list)
    audits: list[Violation] = field(default_factory=list)
    exemptions: list[Exemption] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    duration_ms: float = 0.0

    def message(self, revision: str) -> str:
        if self.allow:
            return ""
        count = len(self.violations)
        head = (f"pyauthz denied {self.endpoint} (decision {self.id}, policy {revision[:12]}): "
                f"{count} violation{'s' if count != 1 else ''}")
        lines = [head]
        for v in self.violations:
            lines.append(f"[{v.rule}] found {v.found}. {v.message} Fix: {v.fix}")
        return "\n".join(lines)


def new_decision_id() -> str:
    return os.urandom(8).hex()


def refusal(exc: RequestRefused) -> Violation:
    return Violation(exc.rule, exc.found, _REFUSAL_MESSAGES.get(exc.rule, ""), exc.fix)


def subject_of(call: AuthzRequest) -> str:
    return call.user or ANONYMOUS


def decide_request(call: AuthzRequest, policy: Policy, trust: TrustChecker | None,
                   live: LiveState | None = None,
                   lookup_slots: threading.BoundedSemaphore | None = None,
                   protected: tuple[ProtectedPath, ...] = SYSTEM_FLOOR) -> Decision:
    started = time.perf_counter()
    decision = Decision(id=new_decision_id(), phase=REQUEST_PHASE, allow=False)
    try:
        with path_budget():
            try:
                _decide(decision, call, policy, trust, live, lookup_slots, protected)
            except InvalidJSON as exc:
                raise refused_json(exc) from None
    except RequestRefused as exc:
        decision.violations = [refusal(exc)]
        if decision.target is None:
            decision.target, decision.endpoint = _route_of(call)
    decision.allow = not decision.violations
    decision.duration_ms = (time.perf_counter() - started) * 1000
    return decision


def _decide(decision: Decision, call: AuthzRequest, policy: Policy, trust: TrustChecker | None,
            live: LiveState | None, lookup_slots: threading.BoundedSemaphore | None,
            protected: tuple[ProtectedPath, ...]) -> None:
    """Decode, take a lookup slot when dockerd's state is needed, evaluate."""
    target, decoded = decode(call)
    decision.target = target
    decision.endpoint = decoded.endpoint
    if lookup_slots is None or not _needs_lookups(decoded, trust, live):
        _evaluate(decision, decoded, subject_of(call), policy, trust, live, protected)
        return
    # dockerd sends the plugin's own reads back through this plugin: hold at most a quarter
    # of the threads in decisions that wait on them.
    if not lookup_slots.acquire(timeout=LOOKUP_SLOT_SECONDS):
        raise RequestRefused("request-state", "the plugin is busy with other decisions "
                             "that wait on dockerd or a registry",
                             "Retry; if it persists, raise pyauthz serve --threads.")
    try:
        _evaluate(decision, decoded, subject_of(call), policy, trust, live, protected)
    finally:
        lookup_slots.release()


def _route_of(call: AuthzRequest) -> tuple[Target | None, str]:
    """The target and endpoint name for the log, or (None, "invalid") when the URI itself
    cannot be read."""
    try:
        target = parse_target(call.method, call.uri)
    except RequestRefused:
        return None, "invalid"
    route, _ = match_route(target.method, target.path)
    if route is not None:
        return target, route.endpoint
    return target, "unknown.read" if target.method in READ_METHODS else "unknown.write"


def _needs_lookups(decoded: Decoded, trust: TrustChecker | None, live: LiveState | None) -> bool:
    if trust is not None and (decoded.pulls or decoded.runs or decoded.services):
        return True
    return live is not None and (decoded.needs_state()
                                 or any(f.kind == "host-path" for f in decoded.facts))


# Objects one decision may read through dockerd (each read also comes back through this
# plugin). Real requests name a handful; each name is read once.
MAX_LOOKUPS = 32


def _first(pairs: list[tuple]) -> list[tuple]:
    """Each name once (the first place it was found)."""
    seen: dict = {}
    for pair in pairs:
        seen.setdefault(pair[0], pair)
    return list(seen.values())


def _bound_lookups(decoded: Decoded) -> None:
    """Read each object once, and refuse a request that would read more than MAX_LOOKUPS."""
    decoded.starts = list(dict.fromkeys(decoded.starts))
    decoded.acts_on = [n for n in dict.fromkeys(decoded.acts_on) if n not in decoded.starts]
    decoded.execs = list(dict.fromkeys(decoded.execs))
    decoded.plugins = list(dict.fromkeys(decoded.plugins))
    decoded.volumes = _first(decoded.volumes)
    decoded.volumes_from = _first(decoded.volumes_from)
    decoded.network_targets = _first(decoded.network_targets)
    decoded.network_configs = _first(decoded.network_configs)
    count = sum(len(x) for x in (decoded.starts, decoded.acts_on, decoded.execs, decoded.plugins,
                                 decoded.volumes, decoded.volumes_from, decoded.network_targets,
                                 decoded.network_configs))
    if count > MAX_LOOKUPS:
        raise RequestRefused("request-body-invalid",
                             f"deciding would read {count} objects through dockerd (named "
                             f"volumes, --volumes-from, networks...); at most {MAX_LOOKUPS}",
                             "Split the request, or name fewer volumes and networks.")


def _as_at_create(policy: Policy, subject: str, endpoint: str, image: str, stored: list[Fact],
                  evaluation) -> tuple[list[Violation], list[Exemption]]:
    """A start (exec, attach, cp) judges the container's stored configuration with the
    policy in force now; an exception that lifts a rule for that configuration at create
    (scoped to container.create) lifts it there too, or `docker run` would create a
    container it can never start or attach to."""
    violations, exemptions = list(evaluation.violations), list(evaluation.exemptions)
    if not stored or endpoint == "container.create":
        return violations, exemptions
    # Only what an exception lifts at create is lifted: a rule scoped to exec or attach (that
    # does not apply at create at all) still denies.
    at_create = policy.evaluate(subject, "container.create", image, stored)
    lifted = {(e.rule, e.found): e for e in at_create.exemptions}
    from_store = {f.describe() for f in stored}
    kept = [v for v in violations if v.found not in from_store or (v.rule, v.found) not in lifted]
    exemptions += [lifted[(v.rule, v.found)] for v in violations
                   if v.found in from_store and (v.rule, v.found) in lifted]
    return kept, exemptions


def floor_paths(found: list[tuple[str, str]]) -> tuple[ProtectedPath, ...]:
    return tuple(p for path, why in found for p in floor_paths_of([path], why))


def _evaluate(decision: Decision, decoded: Decoded, subject: str, policy: Policy,
              trust: TrustChecker | None, live: LiveState | None,
              protected: tuple[ProtectedPath, ...]) -> None:
    facts, image, started_images = list(decoded.facts), decoded.image, []
    stored: list[Fact] = []   # the started containers' stored configuration
    if live is not None:
        _bound_lookups(decoded)
        live = live.for_decision()
        for name in decoded.starts:
            started = live.started_container(name)
            facts += started.facts
            stored += started.facts
            if started.image_id:
                image = image or normalize_image(started.image or started.image_id, default_tag=True)
                started_images.append(started.image_id)
        for name in decoded.acts_on:
            inside = live.started_container(name)
            facts += inside.facts
            stored += inside.facts
            if inside.image_id:  # image-scoped exceptions see the container's image
                image = image or normalize_image(inside.image or inside.image_id, default_tag=True)
        for exec_id in decoded.execs:
            found, inside = live.exec_facts(exec_id)
            facts += found
            stored += [f for f in found if f.where.startswith("container.")]
            if inside is not None and inside.image_id:
                image = image or normalize_image(inside.image or inside.image_id, default_tag=True)
        for name in decoded.plugins:
            facts += live.plugin_facts(name, decoded.endpoint, decoded.plugin_settings)
        for name, where in decoded.volumes:
            facts += live.volume_facts(name, where)
        for name, where in decoded.volumes_from:
            facts += live.volumes_from_facts(name, where)
        for target, where in decoded.network_targets:
            facts += live.network_facts(target, where)
        for name, driver, where in decoded.network_configs:
            facts += live.network_config_facts(name, driver, where)
        if any(f.kind == "host-path" for f in facts):
            protected = protected + floor_paths(live.daemon_paths())
    elif decoded.plugin_settings:
        raise RequestRefused("request-state", "plugin settings are resolved against the "
                             "plugin's config in dockerd, and the plugin reads no dockerd state "
                             "(--docker-host '')", "Run pyauthz with --docker-host.")
    derived = auto_restart_facts(facts)
    facts += derived
    # What the container was created with (and what follows from it), never how this
    # request names it: the target is judged for this request only.
    stored = [f for f in stored + derived if f.where.startswith("container.")]
    floor = floor_violations(decoded.endpoint, facts, protected)
    decision.violations += floor
    evaluation = policy.evaluate(subject, decoded.endpoint, image, facts)
    violations, exemptions = _as_at_create(policy, subject, decoded.endpoint, image, stored,
                                           evaluation)
    for violation in violations:
        (decision.violations if violation.effect == "deny" else decision.audits).append(violation)
    decision.exemptions = exemptions
    floored = {v.found for v in floor}
    decision.facts = [f for f in facts if f.describe() in floored
                      and f not in evaluation.matched_facts] + list(evaluation.matched_facts)
    decision.facts += [f for f in decoded.facts if f.kind == "image"]
    if trust is None:
        return
    checks = [(ref, trust.check_pull) for ref in decoded.pulls]
    checks += [(ref, trust.check_run) for ref in decoded.runs]
    checks += [(ref, trust.check_service) for ref in decoded.services]
    checks += [(image_id, trust.check_run) for image_id in started_images]
    for reference, check in checks:
        result = check(reference)
        decision.images.append(result.log_fields())
        if not result.allowed:
            found = f"image {result.reference}"
            if result.digest and result.digest not in result.reference:
                found += f" ({result.digest})"
            found += f": {result.found}"
            expected = f"Expected {result.expected}." if result.expected else ""
            decision.violations.append(Violation(
                result.rule, found,
                f"Only images signed by a trusted key may be pulled or run. {expected}".strip(),
                result.fix))


def decide_response(call: AuthzRequest) -> Decision:
    """The response phase records what happened to an allowed request. It cannot undo it
    (the container exists by now), so it allows; only an unreadable call is denied."""
    started = time.perf_counter()
    decision = Decision(id=new_decision_id(), phase=call.phase, allow=True)
    decision.target, decision.endpoint = _route_of(call)
    decision.duration_ms = (time.perf_counter() - started) * 1000
    return decision
