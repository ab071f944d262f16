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

import json
import sys
from pathlib import Path
from typing import Iterable

import click

from authz.decoding import vocabulary
from authz.plugin import served_revision
from authz.policy.engine import Policy
from authz.policy.rules import PolicyError
from authz.policytools.replay_decide import CHANGE_CLASSES, NEWLY_DENIED, replay_line
from authz.policytools.replay_log import MAX_LINE_BYTES, LineError, read_lines
from authz.policytools.replay_report import Report, render_text

EXIT_UNCHANGED, EXIT_CHANGED, EXIT_UNREADABLE = 0, 1, 2


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
        if event is None and "phase" in line:  # a decision line without its "event"
            report.problem(where, 'a decision line ("phase") without "event": "decision"')
        else:
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

# --------------------------------------------------------------------------- the command

@click.command("replay")
@click.option("--policy", "policy_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The candidate policy directory (rules.yaml, model.conf).")
@click.argument("logfiles", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--decisions", is_flag=True,
              help="With --json (required): every replayed decision, recorded and predicted.")
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
    if decisions and not as_json:
        raise click.UsageError("--decisions lists every replayed decision in the JSON "
                               "document: give --json too")
    try:
        policy = Policy.load(policy_dir)
        policy.revision = served_revision(policy)
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
