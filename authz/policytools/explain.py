"""``pyauthz policy explain``: why a docker command (or a raw API request) is allowed or
denied, call by call: the canonical endpoint, every fact with where it came from, every rule
each fact was put to and what decided it (the rule, an exception, the rule's own ``except``
value), the decision, and the exact message the docker user would read.

The decision is the plugin's own (``authz.plugin.Plugin.decide``), made offline as
``pyauthz policy test`` makes it (no dockerd unless ``--state`` gives its objects; no image
trust); the facts are decoding's (``authz.decoding.decode``), and the rules' answers the
policy's (``Policy.explain_fact``).
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


def _outcome(effect: str, by: str) -> str:
    return {"deny": "matched: deny", "audit": "matched: audit (logged, not denied)",
            "exception": f"lifted by exception {by}",
            "except": f"left alone by the rule's except value {by!r}"}[effect]


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
            for rule, effect, by in policy.explain_fact(identity, decision.endpoint, item.image,
                                                        fact):
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
    return lines


def explain(policy: Policy, calls: list[tuple[str, AuthzRequest]], *, state=None, floor=None,
            only: str = "") -> tuple[list[str], bool]:
    """Every call of a command in order until the first deny (where the CLI stops), or only
    the call labelled ``only``; the lines and whether the command is allowed."""
    lines, allowed = [], True
    if only:
        calls = [(label, call) for label, call in calls if label == only]
        if not calls:
            raise CallError(f"the command makes no call {only!r}")
    for i, (label, call) in enumerate(calls):
        item = explain_call(policy, label, call, state, floor)
        lines += render(policy, item) + [""]
        if not item.decision.allow:
            allowed = False
            rest = [lbl for lbl, _ in calls[i + 1:]]
            if rest:
                lines.append(f"the command stops here: the CLI does not make {', '.join(rest)}")
            break
    lines.append(f"policy {policy.directory} (revision {policy.revision[:12]}): "
                 + ("allowed" if allowed else "denied"))
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
              help="Policy directory (default: the shipped policies/).")
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
