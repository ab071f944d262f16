"""``pyauthz policy explain``: why a docker command (or a raw API request) is allowed or
denied, call by call: the canonical endpoint, every fact with where it came from, every rule
each fact was put to and what decided it (the rule, an exception, the rule's own ``except``
value), the decision, and the exact message the docker user would read.

The decision is the plugin's own (``authz.plugin.Plugin.decide``), made offline as
``pyauthz policy test`` makes it (no dockerd unless ``--state`` gives its objects, and
without it a note names the objects a live plugin would have read; no image trust); the
facts are decoding's (``authz.decoding.decode``), and the rules' answers the policy's
(``Policy.explain_fact``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from authz.decision import Decision
from authz.decoding import Lookups, RequestRefused, decode
from authz.policy.engine import Policy
from authz.policytools.cases import (CERTIFICATE_KEYS, CaseError, raw_request, read_state)
from authz.policytools.casestate import CaseState
from authz.plugin import served_revision
from authz.policytools.casetest import CallError, calls_of, plugin_for, serve_floor
from authz.policy.yamlfile import StrictYaml
from authz.protocol import AuthzRequest


@dataclasses.dataclass
class Explained:
    label: str
    call: AuthzRequest
    decision: Decision
    facts: list = dataclasses.field(default_factory=list)
    stored: frozenset = frozenset()
    refused: RequestRefused | None = None
    image: str = ""
    # Without --state: the objects a live plugin would have read through dockerd, as
    # (kind, name): ("container", "web")...
    unread: list = dataclasses.field(default_factory=list)


class _Unread(CaseState):
    """A dockerd that has nothing and notes every object decoding asks it for: which stored
    state a live plugin would have read for a call explained without ``--state``."""

    def __init__(self):
        super().__init__({})
        self.reads: list[tuple[str, str]] = []

    def _note(self, kind: str, name: str) -> None:
        if (kind, name) not in self.reads:
            self.reads.append((kind, name))

    def inspect_container(self, name, deadline=None):
        self._note("container", name)

    def inspect_exec(self, exec_id, deadline=None):
        self._note("exec", exec_id)

    def inspect_plugin(self, name, deadline=None):
        self._note("plugin", name)

    def inspect_network(self, name, deadline=None):
        self._note("network", name)

    def inspect_volume(self, name, deadline=None):
        self._note("volume", name)

    def inspect_image(self, ref, deadline=None):
        self._note("image", ref)


def unread_state(call: AuthzRequest, seconds: float) -> list[tuple[str, str]]:
    """The dockerd objects a live plugin reads to decide ``call`` (none given offline)."""
    probe = _Unread()
    try:
        with Lookups(probe, None, seconds) as lookups:
            decode(call, lookups)
    except Exception:  # noqa: BLE001 - only the reads made until then matter here
        pass
    return probe.reads


def _who(call: AuthzRequest) -> str:
    identity = getattr(call, "identity", None)
    if identity is None:
        return call.user or "anonymous"
    fields = ", ".join(f"{kind}={'|'.join(values)}" for kind, values in identity.fields)
    return f"{identity.name}" + (f" (certificate: {fields})" if identity.certificate else
                                 " (no certificate)")


def explain_call(policy: Policy, label: str, call: AuthzRequest, state=None,
                 floor=None) -> Explained:
    """One call: the plugin's decision, and decoding's facts for it."""
    plugin = plugin_for(policy, state, floor)
    out = Explained(label, call, plugin.decide(call))
    if state is None:
        out.unread = unread_state(call, plugin.seconds)
    try:
        with Lookups(plugin.docker, plugin.slots, plugin.seconds) as lookups:
            request = decode(call, lookups)
    except RequestRefused as exc:
        out.refused = exc
        return out
    out.facts = list(request.facts)
    out.stored = frozenset(request.stored)
    out.image = request.image
    return out


def _fact_line(fact, stored: bool) -> str:
    origin = "dockerd's stored state: " if stored else ""
    detail = f" ({fact.detail})" if fact.detail else ""
    return f"    {fact.kind}={fact.value}\n        from {origin}{fact.where}{detail}"


# What a live plugin learns from each kind of object it reads through dockerd.
_UNREAD = {
    "container": "its target fact (rule target-by-id: a container named by id) and the "
                 "re-check of its stored configuration (judged again as at create)",
    "exec": "the exec's own privileges and user, and its container's stored configuration",
    "image": "the image's default user (user.root) and exposed ports (-P)",
    "plugin": "the plugin's privileges and settings",
    "volume": "the volume's driver and options",
    "network": "the network's driver and options",
}


def _unread_note(unread: list[tuple[str, str]]) -> list[str]:
    objects = ", ".join(f"{kind} {name!r}" for kind, name in unread)
    lines = [f"  note: no --state was given, so dockerd's stored state was not read: {objects}.",
             "    A live plugin reads it through dockerd; here these did not apply:"]
    lines += [f"    - {kind} {name!r}: {_UNREAD[kind]}" for kind, name in unread]
    lines.append("    Give --state FILE with the objects as `docker inspect` shows them "
                 "(the format of a test case's state:) to decide as the plugin would.")
    return lines


def _outcome(effect: str, by: str) -> str:
    return {"deny": "matched: deny", "audit": "matched: audit (logged, not denied)",
            "exception": f"lifted by exception {by}",
            "at-create": f"lifted by exception {by}, which lifts it at container.create: a "
                         "stored fact is judged as at create (decision.py)",
            "except": f"left alone by the rule's except value {by!r}"}[effect]


def _lifted_at_create(policy: Policy, identity, endpoint: str, item: "Explained",
                      fact) -> dict[str, str]:
    """Rule id → the exception that lifts it for ``fact`` at container.create: a start's,
    exec's or attach's stored fact is lifted where the container's create was (as
    ``authz.decision`` decides), so the rule's line says so rather than "deny"."""
    if endpoint == "container.create" or fact not in item.stored:
        return {}
    return {rule.id: by for rule, effect, by in
            policy.explain_fact(identity, "container.create", item.image, fact)
            if effect == "exception"}


def render(policy: Policy, item: Explained) -> list[str]:
    """The explanation of one call, as lines."""
    call, decision = item.call, item.decision
    target = decision.target
    lines = [f"call {item.label}: {call.method} {call.uri}",
             f"  endpoint: {decision.endpoint}"
             + (f" (path {target.path}, API {target.version})" if target else ""),
             f"  subject: {_who(call)}"]
    if item.refused is not None:
        lines.append(f"  refused before any rule: [{item.refused.rule}] {item.refused.found}")
    else:
        lines.append(f"  facts ({len(item.facts)}):")
        lines += [_fact_line(f, f in item.stored) for f in item.facts]
        if item.image:
            lines.append(f"  image (what exceptions' images: match): {item.image}")
        lines.append("  rules:")
        identity = getattr(call, "identity", None) or call.user or "anonymous"
        before = len(lines)
        for fact in item.facts:
            at_create = _lifted_at_create(policy, identity, decision.endpoint, item, fact)
            for rule, effect, by in policy.explain_fact(identity, decision.endpoint, item.image,
                                                        fact):
                if effect in ("deny", "audit") and rule.id in at_create:
                    effect, by = "at-create", at_create[rule.id]
                if effect:
                    lines.append(f"    {rule.id}: {_outcome(effect, by)} on "
                                 f"{fact.kind}={fact.value}")
        floor = [v for v in decision.violations if v.rule in ("host-path-protected",
                                                               "authz-plugin-protected")]
        lines += [f"    {v.rule} (built-in floor, no exception lifts it): deny on {v.found}"
                  for v in floor]
        if len(lines) == before:
            lines.append("    (no rule matches these facts)")
    verdict = "allow" if decision.allow else f"deny ({len(decision.violations)} violations)"
    lines.append(f"  decision: {verdict}" + (f", policy mode {decision.mode}"
                                              if getattr(decision, "mode", None) else ""))
    for v in decision.violations:
        lines.append(f"    denies: [{v.rule}] {v.found}")
    for v in decision.audits:
        lines.append(f"    audit:  [{v.rule}] {v.found}")
    for e in decision.exceptions_applied:
        lines.append(f"    lifted: [{e.rule}] by exception {e.exception} on {e.found}")
    if not decision.allow:
        lines.append("  the docker user reads:")
        lines += ["    " + line for line in decision.message(policy.revision).splitlines()]
    if item.unread:
        lines += _unread_note(item.unread)
    return lines


def explain(policy: Policy, calls: list[tuple[str, AuthzRequest]], *, state=None, floor=None,
            only: str = "") -> tuple[list[str], bool]:
    """Every call of a command in order until the first deny (where the CLI stops), or only
    the call labelled ``only``; the lines and whether the command is allowed."""
    lines, allowed, unread = [], True, False
    if only:
        calls = [(label, call) for label, call in calls if label == only]
        if not calls:
            raise CallError(f"the command makes no call {only!r}")
    for i, (label, call) in enumerate(calls):
        item = explain_call(policy, label, call, state, floor)
        lines += render(policy, item) + [""]
        unread = unread or bool(item.unread)
        if not item.decision.allow:
            allowed = False
            rest = [lbl for lbl, _ in calls[i + 1:]]
            if rest:
                lines.append(f"the command stops here: the CLI does not make {', '.join(rest)}")
            break
    lines.append(f"policy {policy.directory} (revision {policy.revision[:12]}): "
                 + ("allowed" if allowed else "denied")
                 + (" without dockerd's stored state (see the note above; --state gives it)"
                    if unread and allowed else ""))
    return lines, allowed


def _certificate(values: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in CERTIFICATE_KEYS or not value:
            raise click.BadParameter(f"{item!r}: FIELD=VALUE with FIELD one of "
                                     f"{', '.join(CERTIFICATE_KEYS)}", param_hint="--cert")
        out.setdefault(key, []).append(value)
    return {k: tuple(v) for k, v in out.items()}


def _read(path: Path):
    reader = StrictYaml(path, CaseError)
    return reader, reader.load()


@click.command("explain")
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, exists=True,
                                                         path_type=Path),
              help="Policy directory (default: the one pyauthz serve uses without --policy).")
@click.option("--user", default="", help="The caller's TLS certificate CN (default: anonymous, "
                                         "the unix socket).")
@click.option("--cert", "cert", multiple=True, metavar="FIELD=VALUE",
              help="A certificate field of the caller: o=, ou=, san=dns:NAME, issuer=DN.")
@click.option("--request", "request_file", type=click.Path(dir_okay=False, exists=True,
                                                           path_type=Path),
              help="A raw request (JSON or YAML: method, uri, headers, body; or dockerd's "
                   "AuthZReq call) instead of a docker command line.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False, exists=True,
                                                       path_type=Path),
              help="dockerd's objects (containers, execs, volumes, networks, plugins, images) as a "
                   "case's state: gives them.")
@click.option("--call", "only", default="", help="Explain only the call with this label "
                                                 "(create, start...).")
@click.option("--api-version", default="1.41", show_default=True)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def explain_command(policy_dir, user, cert, request_file, state_file, only, api_version, argv):
    """Explain the decision on a docker command (after --) or a raw request (--request):
    endpoint, facts and where they came from, each rule and what decided it, the decision,
    the message. Exit 0: allowed; 1: denied; 2: nothing to explain (bad input)."""
    from authz.cli import default_policy_dir

    if bool(argv) == bool(request_file):
        raise click.UsageError("give a docker command after -- or --request FILE")
    try:
        policy = Policy.load(policy_dir or default_policy_dir())
        policy.revision = served_revision(policy)  # as the docker user would read it
        request, state = None, None
        if request_file:
            reader, doc = _read(request_file)
            request = raw_request(doc, reader)
        if state_file:
            reader, doc = _read(state_file)
            state = read_state(reader, {"state": doc}, None)
        calls = calls_of(tuple(a for a in argv if a) if argv[:1] != ("docker",) else argv[1:],
                         request, api_version, user, _certificate(cert))
        lines, allowed = explain(policy, calls, state=state,
                                 floor=serve_floor(policy.directory), only=only)
    except (CaseError, CallError, ValueError) as exc:
        click.echo(f"pyauthz policy explain: {exc}", err=True)
        sys.exit(2)
    click.echo("\n".join(lines))
    sys.exit(0 if allowed else 1)
