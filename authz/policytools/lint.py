"""``pyauthz policy lint [DIR]`` (alias ``pyauthz check-policy``): every problem of a policy
directory, with ``file:line``, before it is deployed.

Two passes:

1. **As serve loads it.** ``Policy.load`` and ``authz.plugin.load_trust`` (no dockerd), exactly
   what ``pyauthz serve`` and a reload run. Lint fails if and only if this fails, and its error
   is always reported: lint never passes a policy serve refuses, nor the reverse.
2. **Every other error.** The loaders stop at their first error, so lint reads the files again
   with a tolerant copy of the strict YAML reader (every duplicate and merge key is reported,
   and reading goes on with YAML's own choice) and runs the loaders' own checks one entry at
   a time: each rule, exception and role of rules.yaml, each key, rule and exception of
   trust.yaml and each of its other sections. So lint reports the first error of every entry,
   not only the first of the file; a YAML syntax error still ends its file (nothing after it
   can be read).

Then, on a policy that loads, warnings: what serve prints at start (expired exceptions, image
trust's), and what lint alone knows for sure: ``mode: audit``, exceptions that expire soon,
that lift nothing (endpoints or values their rule never matches), rules that can never match
(an ``except`` of ``*``; an ``endpoint`` rule whose values its ``endpoints`` exclude), two
rules with one match, roles no exception or rule names, role names YAML 1.1 read as
booleans or numbers, trust keys no requirement uses, trust rules that change nothing (the
pattern they would fall back to already requires the same).

Exit status: 0 when the policy loads (warnings allowed), 1 on any error; ``--strict`` makes
a warning fail too (1).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path

import click

from authz.policy.engine import RULES_FILE, Policy, policy_revision
from authz.ownership import NotTrusted, as_served
from authz.policy.yamlfile import LINE
from authz.policytools.lint_report import ERROR, WARNING, Finding, Report, error_finding
from authz.policytools.lint_tolerant import RulesLoader, rules_errors, tolerant_load, trust_errors
from authz.policytools.lint_warnings import rules_warnings, trust_warnings
from authz.trust.policy import POLICY_FILE as TRUST_FILE

def lint(directory: Path, today: dt.date | None = None) -> Report:
    """Every finding for the policy directory ``directory``, its files judged as serve
    judges them (root's alone), whoever runs lint."""
    with as_served():
        return _lint(directory, today)


def _lint(directory: Path, today: dt.date | None) -> Report:
    from authz.plugin import TRUST_OFF, load_trust
    from authz.reload import OpenPolicy, refuse_open_policy, revision_in_force

    directory = Path(directory).absolute()  # one spelling: trust.yaml's errors use it too
    today = today or dt.date.today()
    report = Report(directory)
    unsafe_file = None
    try:
        report.revision = policy_revision(directory)
    except NotTrusted as exc:  # reported below, as serve refuses it
        unsafe_file = exc
    except OSError as exc:
        report.add(Finding(ERROR, "load", f"cannot read the directory: {exc}", str(directory)))
        return report
    # 1. As serve loads it (authoritative: lint fails exactly when this fails).
    policy = trust = None
    trust_failed = False
    try:
        policy = Policy.load(directory)
    except Exception as exc:  # noqa: BLE001 - any load failure is an error to report
        report.add(error_finding(exc))
    try:
        trust = load_trust(directory, None)
        if report.revision is not None:  # as serve names it: with the files trust.yaml names
            report.revision = revision_in_force(report.revision, trust)
    except Exception as exc:  # noqa: BLE001
        report.add(error_finding(exc))
        trust_failed = True
    try:  # serve and reload refuse a policy anyone could rewrite
        refuse_open_policy(directory)
        if unsafe_file is not None:  # a file reached through a path others can change
            raise OpenPolicy(f"{unsafe_file}: someone other than root could rewrite or "
                             "replace it; make it, every symlink leading to it and the "
                             "directories above them root's, not writable by every user")
    except OpenPolicy as exc:
        report.add(Finding(ERROR, "policy-writable", str(exc), str(directory)))
    # 2. Every other error, entry by entry.
    rules_path = directory / RULES_FILE
    role_lines: dict[str, int] = {}
    mode_line: int | None = None
    if policy is None and rules_path.is_file():
        rules_errors(rules_path, report, today)
    elif policy is not None:
        loaded = tolerant_load(rules_path, RulesLoader, report)
        if loaded is not None and isinstance(loaded[0], dict):
            doc, loader = loaded
            mode_line = loader.positions.get(doc[LINE], {}).get("mode")
            roles = doc.get("roles")
            if isinstance(roles, dict):
                lines = loader.positions.get(roles[LINE], {})
                role_lines = {str(k): v for k, v in lines.items()}
                for role, line in lines.items():
                    if not isinstance(role, str):
                        report.add(Finding(WARNING, "yaml-scalar",
                                           f"role name {role!r} was read from an unquoted "
                                           f"YAML 1.1 {type(role).__name__} (the role is "
                                           f"{str(role)!r}): quote it", str(rules_path), line))
    if trust_failed and (directory / TRUST_FILE).is_file():
        trust_errors(directory / TRUST_FILE, report)
    if report.errors:
        report.findings.sort(key=lambda f: (f.file or "", f.line or 0))
        return report
    # 3. Warnings, on a policy that loads.
    ruleset = policy.ruleset
    report.mode = ruleset.mode
    report.counts = {"rules": len(ruleset.rules), "exceptions": len(ruleset.exceptions),
                     "roles": len(ruleset.roles)}
    expired = {f"exception {ex.id} ({ruleset.path}:{ex.line}) expired" for ex in ruleset.exceptions}
    startup = [w for w in policy.warnings if not any(w.startswith(e) for e in expired)]
    for warning in startup:
        report.add(startup_finding("startup", warning, rules_path))
    if trust is not None:
        # Lint reads no dockerd; serve does (its --docker-host): not the policy's warning.
        for warning in trust.startup_warnings():
            if not warning.startswith("image trust: no docker host"):
                report.add(startup_finding("image-trust", warning, trust.policy.path))
    elif not trust_failed:  # serve says so at start and at each reload
        report.add(startup_finding("image-trust", TRUST_OFF, directory / "trust.yaml"))
    rules_warnings(ruleset, report, today, role_lines, mode_line)
    if trust is not None:
        trust_warnings(trust, report)
    return report


# Where serve's start-up warnings name their place: "FILE.yaml:LINE" or "FILE.yaml line LINE".
_PLACE = re.compile(r"(?P<file>[^\s`'(]+\.yaml)(?::| line )(?P<line>\d+)")


def startup_finding(check: str, warning: str, file: Path) -> Finding:
    """One of serve's start-up warnings (its text unchanged) as a finding of ``check``, at
    the ``file:line`` its text names (in ``file``), else at ``file`` alone."""
    place = _PLACE.search(warning)
    if place and Path(place["file"]) == Path(file):
        return Finding(WARNING, check, warning, str(file), int(place["line"]))
    return Finding(WARNING, check, warning, str(file))


def render_text(report: Report, strict: bool = False) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines): check-policy's header (revision; rules, exceptions,
    roles), then each finding, then a summary."""
    out = [f"{report.directory}: revision {report.revision}"]
    if report.counts is not None:
        c = report.counts
        out.append(f"  {c['rules']} rules, {c['exceptions']} exceptions, {c['roles']} roles")
    err = []
    for finding in report.findings:
        (err if finding.severity == ERROR else out).append("  " + finding.text())
    summary = (f"pyauthz policy lint: {len(report.errors)} error(s), {len(report.warnings)} "
               f"warning(s)")
    if report.errors:
        err.append(summary + ": the policy does not load (pyauthz serve and reload refuse it)")
    elif strict and report.warnings:
        err.append(summary + " (--strict: warnings fail)")
    else:
        out.append(summary)
    return out, err


@click.command("lint")
@click.argument("policy_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
                required=False)
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one object with every finding (for CI and editors).")
@click.option("--strict", is_flag=True, help="Warnings fail too (exit 1).")
def lint_command(policy_dir: Path | None, output: str, strict: bool) -> None:
    """Load a policy directory (rules.yaml, trust.yaml) as `pyauthz serve` does and report
    every problem with file:line, and warnings. Exit 0: it loads (warnings allowed unless
    --strict); 1: an error (serve would refuse it), or a warning with --strict."""
    from authz.cli import default_policy_dir

    report = lint(policy_dir or default_policy_dir())
    if output == "json":
        click.echo(json.dumps(report.as_json(strict), indent=2))
    else:
        out, err = render_text(report, strict)
        for line in out:
            click.echo(line)
        for line in err:
            click.echo(line, err=True)
    sys.exit(report.exit_code(strict))
