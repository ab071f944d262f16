"""``pyauthz policy replay --policy CANDIDATE LOGFILE...``: what a candidate policy would
have decided on past traffic.

Every request-phase line of the decision log records the facts the policy was asked about
(``all_facts``, each marked ``stored`` when it comes from an acted-on container's stored
configuration), the image ``images:`` patterns were matched against (``policy_image``), the
caller, the image trust results and the fact vocabulary (docs/decision-log.md). Replay
rebuilds the ``DecodedRequest`` from them and calls the real decision code
(``authz.decision.decide``) with the candidate policy, so what it predicts is what the
candidate would have answered, as exactly as the log records the request:

- rules.yaml is evaluated anew (and "as at create" for stored facts);
- the floor (``host-path-protected``, ``authz-plugin-protected``), the ``request-*``,
  ``protocol`` and ``internal-error`` refusals and image trust (trust.yaml) are kept as
  recorded: a candidate rules.yaml cannot change them, and they depend on the host, the
  registry and dockerd's state at the time;
- a line of another fact vocabulary (``fact_vocabulary``, ``authz.decoding.vocabulary``) is
  not replayed (``--any-vocabulary`` replays it anyway, and says so), nor one whose facts
  were cut (``all_facts_omitted``); they are counted and reported, as are lines that cannot
  be read.

Exit codes: 0 nothing that ``--fail-on`` names changes; 1 something does (default
``--fail-on denied``: a decision would be newly denied; ``any``: any change; ``never``);
2 input that cannot be read (a log file, the candidate policy), no decision line that could
be replayed at all, or with ``--strict`` any line that was not replayed.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import click

from authz.decision import ANONYMOUS, Decision, decide
from authz.decoding import DecodedRequest, Fact
from authz.decoding import vocabulary
from authz.policy.engine import Policy, Violation
from authz.policy.floor import AUTHZ_PLUGIN_RULE, HOST_PATH_RULE
from authz.policy.rules import PolicyError

EXIT_UNCHANGED, EXIT_CHANGED, EXIT_UNREADABLE = 0, 1, 2

FLOOR_RULES = frozenset({HOST_PATH_RULE, AUTHZ_PLUGIN_RULE})

NEWLY_DENIED = "newly_denied"
NEWLY_ALLOWED = "newly_allowed"
RULES_CHANGED = "rules_changed"
AUDITS_CHANGED = "audits_changed"
CHANGE_CLASSES = (NEWLY_DENIED, NEWLY_ALLOWED, RULES_CHANGED, AUDITS_CHANGED)
_TITLES = {NEWLY_DENIED: "Newly denied", NEWLY_ALLOWED: "Newly allowed",
           RULES_CHANGED: "Still denied, by other rules",
           AUDITS_CHANGED: "Same answer, other audit matches"}

# A line longer than this is not read (the plugin writes none near it: all_facts is capped
# at 256 KiB, the URI at 2 KiB).
MAX_LINE_BYTES = 4 * 1024 * 1024
# Unreadable lines listed in the report (all are counted).
MAX_LISTED_PROBLEMS = 20


class LineError(ValueError):
    """A decision line that cannot be replayed as written."""


# --------------------------------------------------------------------------- one line

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
                   tuple(_rule(v) for v in _list(line, "violations")),
                   tuple(_rule(v) for v in _list(line, "audit_violations")),
                   tuple((_text(e, "exception"), _text(e, "rule"))
                         for e in _list(line, "exemptions")))

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


def _list(line: dict, key: str) -> list:
    value = line.get(key, [])
    if not isinstance(value, list):
        raise LineError(f"{key} is not a list")
    return value


def _text(obj: Any, key: str, default: str | None = None) -> str:
    value = obj.get(key, default) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        raise LineError(f"{key!r} is missing or not a string")
    return value


def _rule(violation: Any) -> str:
    return _text(violation, "rule")


def rebuild_request(line: dict) -> DecodedRequest:
    """The DecodedRequest the line's decision was made on (no target: deciding does not
    read it; no dockerd roots: the floor is kept as recorded)."""
    facts: list[Fact] = []
    stored: list[Fact] = []
    for entry in _list(line, "all_facts"):
        fact = Fact(_text(entry, "kind"), _text(entry, "value"), _text(entry, "where"),
                    _text(entry, "detail", ""))
        facts.append(fact)
        if entry.get("stored") is True:
            stored.append(fact)
    checks = [("run", _text(image, "image", "")) for image in _list(line, "images")]
    return DecodedRequest(None, _text(line, "endpoint"), facts, stored,  # type: ignore[arg-type]
                          _text(line, "policy_image", ""), checks, [])


class RecordedTrust:
    """Image trust as it answered then: the line's ``images`` results, in order (a
    candidate rules.yaml does not change them; trust.yaml is not replayed)."""

    def __init__(self, images: list):
        from authz.trust.result import TrustResult

        self._results = []
        for image in images:
            if not isinstance(image, dict) or not isinstance(image.get("trust_allowed"), bool):
                raise LineError("an images entry without trust_allowed")
            self._results.append(TrustResult(
                image["trust_allowed"], _text(image, "trust_rule"), _text(image, "image", ""),
                image.get("image_digest"), image.get("key_fingerprint"),
                _text(image, "trust_found", ""), "", expected=_text(image, "trust_expected", ""),
                key_name=image.get("key_name"), policy=image.get("trust_policy"),
                image_id=image.get("image_id"), cached=bool(image.get("trust_cached"))))
        self._next = 0

    def _take(self, reference: str, deadline=None):
        result = self._results[self._next]
        self._next += 1
        return result

    check_pull = check_run = check_service = _take


class _NoLookups:
    """Replay reads nothing from dockerd: what it read then is in the facts."""

    def use(self):
        return None


def _decide_takes_identity() -> bool:
    """Whether the running decide() takes an ``authz.identity.Identity`` subject (certificate
    identities, issue 9 item 7) rather than the user string."""
    return "Identity" in str(decide.__annotations__.get("subject", ""))


def subject_of(line: dict) -> tuple[Any, str]:
    """The subject to decide with, exactly as the live decision had it, and its name for
    the report. With certificate identities, the line's ``identity`` (``Identity.from_log``);
    a line from before they were logged knows only the user (its certificate's CN), which
    ``Identity.named`` rebuilds without the certificate's other fields. Without them, the
    user string (``anonymous`` on the unix socket), as the plugin passes it."""
    user = line.get("user") or ANONYMOUS
    if not isinstance(user, str):
        raise LineError("user is not a string")
    if not _decide_takes_identity():
        return user, user
    from authz.identity import Identity, IdentityError

    logged = line.get("identity")
    try:
        identity = (Identity.from_log(logged) if logged is not None
                    else Identity.named(user) if line.get("user") else Identity.anonymous())
    except IdentityError as exc:
        raise LineError(f"identity: {exc}") from None
    return identity, identity.name


def replay_line(line: dict, policy: Policy) -> Replayed:
    """The candidate's decision on one request-phase line (LineError when it cannot be
    replayed as written)."""
    recorded = Outcome.recorded(line)
    subject, name = subject_of(line)
    if "all_facts" not in line:
        # Refused before the policy was consulted (request-*, protocol, internal-error).
        return Replayed(line, recorded, recorded, name, kept=True)
    request = rebuild_request(line)
    images = _list(line, "images")
    floor = [Violation(_rule(v), _text(v, "found"), "", "", _text(v, "reference", ""),
                       _text(v, "effect", "deny"))
             for v in _list(line, "violations") if _rule(v) in FLOOR_RULES]
    decision = Decision(id=_text(line, "decision_id", ""), phase="request", allow=False)
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


# --------------------------------------------------------------------------- many lines

@dataclass
class Report:
    """Everything replay found in the log files."""

    policy_dir: str
    revision: str
    vocabulary: str
    any_vocabulary: bool = False
    files: list[str] = field(default_factory=list)
    lines: int = 0
    response_lines: int = 0
    voided: list[str] = field(default_factory=list)      # decision-void: answered deny
    other_events: int = 0
    decisions: list[Replayed] = field(default_factory=list)
    other_vocabulary: Counter = field(default_factory=Counter)  # version -> lines
    replayed_other_vocabulary: int = 0
    incomplete: int = 0
    unreadable: int = 0
    problems: list[str] = field(default_factory=list)    # the first few, with file:line

    def problem(self, where: str, why: str) -> None:
        self.unreadable += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(f"{where}: {why}")

    @property
    def not_replayed(self) -> int:
        skipped_vocabulary = 0 if self.any_vocabulary else sum(self.other_vocabulary.values())
        return skipped_vocabulary + self.incomplete + self.unreadable

    def changes(self, change: str) -> list[Replayed]:
        return [d for d in self.decisions if d.change == change]

    def groups(self, change: str, examples: int) -> list[dict]:
        """Changes of one class by (rule, subject, endpoint, image): count and examples."""
        groups: dict[tuple, dict] = {}
        for d in self.changes(change):
            endpoint = d.line.get("endpoint") or "?"
            image = d.line.get("policy_image") or "-"
            for rule in d.changed_rules():
                key = (rule, d.subject, endpoint, image)
                group = groups.setdefault(key, {"rule": rule, "subject": d.subject,
                                                "endpoint": endpoint, "image": image,
                                                "count": 0, "examples": []})
                group["count"] += 1
                if len(group["examples"]) < examples:
                    group["examples"].append({
                        "decision_id": d.line.get("decision_id"), "time": d.line.get("time"),
                        "found": d.found_for(rule, change)[:3]})
        return sorted(groups.values(), key=lambda g: (-g["count"], g["rule"], g["subject"],
                                                      g["endpoint"], g["image"]))

    def summary(self) -> dict:
        counts = Counter(d.change for d in self.decisions)
        return {
            "lines": self.lines,
            "request_decisions": len(self.decisions) + self.not_replayed,
            "replayed": sum(1 for d in self.decisions if not d.kept),
            "kept_as_recorded": sum(1 for d in self.decisions if d.kept),
            "unchanged": counts[None],
            **{change: counts[change] for change in CHANGE_CLASSES},
            "not_replayed": {
                "other_vocabulary": dict(self.other_vocabulary) if not self.any_vocabulary
                else {},
                "incomplete": self.incomplete,
                "unreadable": self.unreadable,
            },
            "replayed_other_vocabulary": self.replayed_other_vocabulary,
            "response_lines": self.response_lines,
            "voided": len(self.voided),
            "other_events": self.other_events,
        }

    def as_json(self, examples: int, decisions: bool = False) -> dict:
        out: dict[str, Any] = {
            "policy": self.policy_dir, "policy_revision": self.revision,
            "fact_vocabulary": self.vocabulary, "files": self.files,
            "summary": self.summary(),
            "changes": {change: self.groups(change, examples) for change in CHANGE_CLASSES},
            "problems": self.problems,
        }
        if decisions:
            out["decisions"] = [{
                "decision_id": d.line.get("decision_id"), "time": d.line.get("time"),
                "endpoint": d.line.get("endpoint"), "subject": d.subject, "kept": d.kept,
                "recorded": d.recorded.as_json(), "predicted": d.predicted.as_json(),
                "change": d.change} for d in self.decisions]
        return out


def _open(path: str) -> io.BufferedIOBase:
    if path == "-":
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a log file (gzip when it ends in .gz; ``-``: stdin); OSError
    when it cannot be read."""
    stream = _open(path)
    try:
        for number, raw in enumerate(stream, 1):
            yield number, raw
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def replay(paths: Iterable[str], policy: Policy, *, any_vocabulary: bool = False) -> Report:
    """Replay every request-phase decision of the log files against ``policy``; OSError
    when a file cannot be read."""
    current = vocabulary.current()
    report = Report(str(policy.directory), policy.revision, current, any_vocabulary)
    for path in paths:
        report.files.append(path)
        for number, raw in read_lines(path):
            report.lines += 1
            _replay_raw(report, f"{path}:{number}", raw, policy, current)
    return report


def _replay_raw(report: Report, where: str, raw: bytes, policy: Policy, current: str) -> None:
    if not raw.strip():
        report.lines -= 1
        return
    if len(raw) > MAX_LINE_BYTES:
        report.problem(where, f"a line of {len(raw)} bytes")
        return
    try:
        line = json.loads(raw)
    except ValueError as exc:
        report.problem(where, f"not JSON ({exc})")
        return
    if not isinstance(line, dict):
        report.problem(where, "not a JSON object")
        return
    event = line.get("event")
    if event == "decision-void":
        report.voided.append(str(line.get("decision_id")))
        return
    if event != "decision":
        report.other_events += 1
        return
    if line.get("phase") == "response":
        report.response_lines += 1
        return
    if line.get("phase") != "request":
        report.problem(where, f"phase {str(line.get('phase'))[:40]!r}")
        return
    version = line.get("fact_vocabulary")
    if version != current:
        report.other_vocabulary[str(version) if version else "none"] += 1
        if not report.any_vocabulary:
            return
        report.replayed_other_vocabulary += 1
    if line.get("all_facts_omitted"):
        report.incomplete += 1
        return
    try:
        report.decisions.append(replay_line(line, policy))
    except (LineError, KeyError, TypeError, IndexError) as exc:
        report.problem(where, f"cannot be replayed ({type(exc).__name__}: {exc})")


def exit_code(report: Report, fail_on: str, strict: bool) -> int:
    if not report.decisions or (strict and report.not_replayed):
        return EXIT_UNREADABLE
    if fail_on == "never":
        return EXIT_UNCHANGED
    classes = (NEWLY_DENIED,) if fail_on == "denied" else CHANGE_CLASSES
    return EXIT_CHANGED if any(d.change in classes for d in report.decisions) else EXIT_UNCHANGED


# --------------------------------------------------------------------------- text

def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def render_text(report: Report, examples: int) -> str:
    s = report.summary()
    out = [f"pyauthz policy replay: {report.policy_dir} (revision {report.revision[:12]}), "
           f"{vocabulary.describe(report.vocabulary)}",
           f"  {s['lines']} lines in {len(report.files)} file(s); {s['request_decisions']} "
           f"request decisions: {s['replayed']} replayed, {s['kept_as_recorded']} kept as "
           "recorded (refused before the policy)",
           f"  unchanged {s['unchanged']}, newly denied {s[NEWLY_DENIED]}, newly allowed "
           f"{s[NEWLY_ALLOWED]}, denied by other rules {s[RULES_CHANGED]}, other audit "
           f"matches {s[AUDITS_CHANGED]}"]
    skipped = s["not_replayed"]
    if report.not_replayed:
        out.append(f"  NOT REPLAYED: {report.not_replayed} request line(s)")
    for version, count in sorted(skipped["other_vocabulary"].items()):
        out.append(f"  WARNING: {count} line(s) of another fact vocabulary ({version}; this "
                   f"code speaks {report.vocabulary}) were not replayed; --any-vocabulary "
                   "replays them, inexactly")
    if report.replayed_other_vocabulary:
        out.append(f"  WARNING: {report.replayed_other_vocabulary} line(s) of another fact "
                   f"vocabulary ({', '.join(sorted(report.other_vocabulary))}) replayed "
                   "anyway (--any-vocabulary): facts this code would report may be missing")
    if skipped["incomplete"]:
        out.append(f"  {skipped['incomplete']} line(s) whose facts were cut at the log's "
                   "size bound (all_facts_omitted) were not replayed")
    if skipped["unreadable"]:
        out.append(f"  {skipped['unreadable']} line(s) could not be read:")
        out += [f"    {p}" for p in report.problems]
    if report.voided:
        out.append(f"  {len(report.voided)} decision(s) were answered deny because their line "
                   "was written late (decision-void); replayed as their line records them")
    for change in CHANGE_CLASSES:
        groups = report.groups(change, examples)
        if not groups:
            continue
        out.append("")
        out.append(f"{_TITLES[change]} ({s[change]} decision{'s' if s[change] != 1 else ''})")
        rows = [["rule", "subject", "endpoint", "image", "count", "examples"]]
        for g in groups:
            shown = ", ".join(f"{e['decision_id']} {e['time'] or ''}".strip()
                              for e in g["examples"])
            rows.append([g["rule"], g["subject"], g["endpoint"], g["image"], str(g["count"]),
                         shown])
        out += _table(rows)
    return "\n".join(out)


# --------------------------------------------------------------------------- the command

@click.command("replay")
@click.option("--policy", "policy_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The candidate policy directory (rules.yaml, model.conf).")
@click.argument("logfiles", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--decisions", is_flag=True,
              help="With --json: every replayed decision, recorded and predicted.")
@click.option("--examples", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Examples (decision id, time) per group.")
@click.option("--fail-on", type=click.Choice(["denied", "any", "never"]), default="denied",
              show_default=True,
              help="Exit 1 when a decision would be newly denied (denied), on any change "
                   "(any), or never.")
@click.option("--any-vocabulary", is_flag=True,
              help="Replay lines of another fact vocabulary too (inexact; reported).")
@click.option("--strict", is_flag=True,
              help="Exit 2 when any request line was not replayed (other vocabulary, cut "
                   "facts, unreadable).")
def replay_command(policy_dir: Path, logfiles: tuple[str, ...], as_json: bool,
                   decisions: bool, examples: int, fail_on: str, any_vocabulary: bool,
                   strict: bool) -> None:
    """Replay past decision-log lines (LOGFILE..., .gz or - for stdin) against a candidate
    policy and report what would change: newly denied, newly allowed, denied by other rules.
    Exit 0: nothing --fail-on names changes; 1: something does; 2: unreadable input, or
    nothing to replay."""
    try:
        policy = Policy.load(policy_dir)
    except (PolicyError, OSError) as exc:
        click.echo(f"pyauthz policy replay: cannot load the policy {policy_dir}: {exc}",
                   err=True)
        sys.exit(EXIT_UNREADABLE)
    try:
        report = replay(logfiles, policy, any_vocabulary=any_vocabulary)
    except OSError as exc:
        click.echo(f"pyauthz policy replay: cannot read {exc.filename or ''}: "
                   f"{exc.strerror or exc}", err=True)
        sys.exit(EXIT_UNREADABLE)
    if as_json:
        click.echo(json.dumps(report.as_json(examples, decisions), indent=2))
    else:
        click.echo(render_text(report, examples))
    code = exit_code(report, fail_on, strict)
    if report.not_replayed or report.replayed_other_vocabulary:
        click.echo(f"pyauthz policy replay: WARNING: {report.not_replayed} request line(s) not "
                   f"replayed, {report.replayed_other_vocabulary} replayed from another fact "
                   "vocabulary (see the report)", err=True)
    if not report.decisions:
        click.echo("pyauthz policy replay: no request decision could be replayed", err=True)
    sys.exit(code)
