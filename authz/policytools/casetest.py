"""``pyauthz policy test``: run the cases kept beside a policy through the plugin's own
decision path (``authz.plugin.Plugin.decide``), offline, and report them as a table and as
JUnit XML.

Offline means: no dockerd (a case's ``state:`` stands in for the objects the plugin would
read through it; without it, starts, execs, attaches and ``docker cp`` carry no stored
configuration and no ``target`` fact), and no image trust (trust.yaml is not consulted:
signatures need registries). The floor is the one ``pyauthz serve`` has with this policy
directory: the built-in system paths and pyauthz's own files, host paths resolved on this
machine.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from authz.decision import Decision
from authz.plugin import (Plugin, PluginConfig, load_trust, own_paths, served_revision,
                          trust_paths)
from authz.policy.engine import Policy
from authz.policy.floor import SYSTEM_FLOOR
from authz.policytools.cases import Case, RawRequest, with_identity
from authz.policytools.casestate import CaseState
from authz.protocol import AuthzRequest
from authz.serve import DEFAULT_SOCKET


class _Quiet:
    """A decision logger that drops what it is given (decide() does not log; handle() does)."""

    def info(self, event, **fields) -> None:
        pass


class CallError(ValueError):
    """A request that cannot be made: a CLI line the translation does not know."""


def cli_calls(argv: list[str], api_version: str, user: str) -> list[tuple[str, AuthzRequest]]:
    """The API calls the docker CLI makes for ``argv`` (without "docker"), as dockerd hands
    them to the plugin: ``(label, call)`` in the order the CLI makes them."""
    try:
        from authz.policytools import docker_cli
    except ImportError:
        raise CallError("this pyauthz cannot translate docker CLI lines yet "
                        "(authz/policytools/docker_cli.py); give the request raw") from None
    try:
        calls = docker_cli.api_calls(["docker", *argv], api_version=api_version)
        return [(c.label, docker_cli.to_authz_request(c, user=user)) for c in calls]
    except docker_cli.CliError as exc:
        raise CallError(f"cannot translate the CLI line: {exc}") from None


def calls_of(docker: tuple[str, ...] | list[str], request: RawRequest | None,
             api_version: str = "1.41", user: str = "",
             certificate: dict | None = None) -> list[tuple[str, AuthzRequest]]:
    """The calls a CLI line or a raw request stands for, made by ``user`` (with these
    certificate fields)."""
    calls = ([(request.label, request.call(user))] if request is not None
             else cli_calls(list(docker), api_version, user))
    try:
        return [(label, with_identity(call, user, certificate)) for label, call in calls]
    except ValueError as exc:  # IdentityError too
        raise CallError(f"the caller cannot be made: {exc}") from None


def serve_floor(policy_dir: Path):
    """The floor ``pyauthz serve --policy DIR`` decides with (its defaults otherwise)."""
    config = PluginConfig(policy_dir=Path(policy_dir), socket_path=DEFAULT_SOCKET)
    try:  # the files image trust is loaded from: serve protects them too
        trust = load_trust(Path(policy_dir), None)
    except Exception:  # noqa: BLE001 - serve would refuse this trust.yaml; lint says why
        trust = None
    return SYSTEM_FLOOR + own_paths(config) + trust_paths(trust)


def plugin_for(policy: Policy, state: dict | None = None, floor=None) -> Plugin:
    """The plugin as a case runs it: no image trust; dockerd only as the case states it."""
    docker = CaseState(state) if state else None
    return Plugin(policy, None, docker, floor=floor if floor is not None else SYSTEM_FLOOR,
                  logger=_Quiet(), threads=4)


@dataclass
class Result:
    case: Case
    passed: bool = False
    label: str = ""
    endpoint: str = ""
    outcome: str = ""
    rules: frozenset[str] = frozenset()
    audits: frozenset[str] = frozenset()
    exceptions: frozenset[str] = frozenset()
    message: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def expected(self) -> str:
        return _show(self.case.expect, self.case.rules)

    @property
    def actual(self) -> str:
        return _show(self.outcome, self.rules) if self.outcome else "-"


def _show(outcome: str, rules: frozenset[str]) -> str:
    return f"{outcome} [{', '.join(sorted(rules))}]" if rules else outcome


def _pick(case: Case, decided: list[tuple[str, Decision]]) -> tuple[str, list[Decision]]:
    """The call the expectation is about: the one named by ``call:``; else the first
    denied one (where the command stops); else every call (all allowed)."""
    if case.call:
        chosen = [(label, d) for label, d in decided if label == case.call]
        if not chosen:
            labels = ", ".join(label for label, _ in decided) or "none"
            raise CallError(f"the command makes no call {case.call!r} (it makes: {labels})")
        return chosen[0][0], [chosen[0][1]]
    for label, decision in decided:
        if not decision.allow:
            return label, [decision]
    return "+".join(label for label, _ in decided), [d for _, d in decided]


def run_case(policy: Policy, case: Case, floor=None) -> Result:
    """Decide every call of the case (in the CLI's order) and compare with its expectation."""
    result = Result(case)
    try:
        calls = calls_of(case.docker, case.request, case.api_version, case.user,
                         case.certificate)
        plugin = plugin_for(policy, case.state, floor)
        decided = [(label, plugin.decide(call)) for label, call in calls]
        if not decided:
            raise CallError("the command makes no API call")
        result.label, decisions = _pick(case, decided)
    except CallError as exc:
        result.problems.append(str(exc))
        return result
    result.endpoint = ", ".join(dict.fromkeys(d.endpoint for d in decisions))
    result.outcome = "allow" if all(d.allow for d in decisions) else "deny"
    result.rules = frozenset(v.rule for d in decisions for v in d.violations)
    result.audits = frozenset(v.rule for d in decisions for v in d.audits)
    result.exceptions = frozenset(e.exception for d in decisions for e in d.exceptions_applied)
    result.message = "\n".join(d.message(policy.revision) for d in decisions if not d.allow)
    result.problems += _compare(case, result)
    result.passed = not result.problems
    return result


def _compare(case: Case, result: Result) -> list[str]:
    problems = []
    if result.outcome != case.expect or result.rules != case.rules:
        problems.append(f"expected {result.expected}, got {result.actual}")
    for key, want, got in (("audits", case.audits, result.audits),
                           ("exceptions", case.exceptions, result.exceptions)):
        if want is not None and want != got:
            problems.append(f"expected {key} [{', '.join(sorted(want))}], got "
                            f"[{', '.join(sorted(got))}]")
    return problems


def run_cases(policy: Policy, cases: list[Case], floor=None) -> list[Result]:
    return [run_case(policy, case, floor) for case in cases]


def table(results: list[Result]) -> str:
    """One row per case: result, case, the call decided, expected and actual rule ids;
    under a failing row, why (and the message the docker user would read)."""
    rows = [("RESULT", "CASE", "CALL", "EXPECTED", "ACTUAL")]
    notes: dict[int, list[str]] = {}
    for r in results:
        call = (f"every call: {r.label.replace('+', ', ')}" if "+" in r.label
                else f"{r.label} {r.endpoint}".strip() or "-")
        rows.append(("PASS" if r.passed else "FAIL", r.case.name, call, r.expected, r.actual))
        if not r.passed:
            notes[len(rows) - 1] = [f"{r.case.where}: {p}" for p in r.problems] + [
                "  " + line for line in r.message.splitlines()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = []
    for i, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4])
        out += ["    " + note for note in notes.get(i, [])]
    failed = sum(not r.passed for r in results)
    out.append(f"{len(results) - failed} passed, {failed} failed, {len(results)} cases")
    return "\n".join(line.rstrip() for line in out)


def junit(results: list[Result], policy_dir: Path) -> ET.ElementTree:
    """JUnit XML: a testsuite per case file, a testcase per case."""
    root = ET.Element("testsuites", name=f"pyauthz policy test {policy_dir}")
    by_file: dict[Path, list[Result]] = {}
    for r in results:
        by_file.setdefault(r.case.file, []).append(r)
    for path, group in by_file.items():
        failures = sum(not r.passed for r in group)
        suite = ET.SubElement(root, "testsuite", name=path.name, tests=str(len(group)),
                              failures=str(failures), errors="0", skipped="0")
        for r in group:
            case = ET.SubElement(suite, "testcase", name=r.case.name,
                                 classname=f"policy.{path.stem}", file=str(path),
                                 line=str(r.case.line))
            ET.SubElement(case, "system-out").text = (
                f"{r.case.command}\ncall: {r.label} {r.endpoint}\nexpected: {r.expected}\n"
                f"actual: {r.actual}\n{r.message}")
            if not r.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(r.problems))
                failure.text = "\n".join(r.problems + [r.message])
    total = len(results)
    root.set("tests", str(total))
    root.set("failures", str(sum(not r.passed for r in results)))
    root.set("errors", "0")
    ET.indent(root)
    return ET.ElementTree(root)


def with_mode(policy: Policy, mode: str | None) -> Policy:
    """``policy`` deciding as if rules.yaml said ``mode:`` (None: as it says)."""
    if mode is None or getattr(policy.ruleset, "mode", None) == mode:
        return policy
    import dataclasses

    return Policy(policy.directory, dataclasses.replace(policy.ruleset, mode=mode),
                  policy.revision)


class LoadError(Exception):
    """The policy or a case file does not load: nothing was tested (exit 2)."""


def _load(policy_dir: Path, files: tuple[Path, ...], mode: str | None = None):
    from authz.policy.rules import PolicyError
    from authz.policytools.cases import CaseError, check_near_misses, load_cases

    try:
        policy = with_mode(Policy.load(policy_dir), mode)
        policy.revision = served_revision(policy)  # the messages name serve's revision
    except (PolicyError, OSError) as exc:
        raise LoadError(f"the policy does not load: {exc}") from None
    try:
        cases = load_cases(policy_dir, list(files) or None)
        check_near_misses(cases, (rule.id for rule in policy.ruleset.rules))
    except CaseError as exc:
        raise LoadError(str(exc)) from None
    return policy, cases


def junit_error(text: str, policy_dir: Path) -> ET.ElementTree:
    """JUnit XML for a run that tested nothing: one testcase with an ``<error>`` naming the
    problem (a CI job reading the file sees the run fail, not an empty or stale report)."""
    root = ET.Element("testsuites", name=f"pyauthz policy test {policy_dir}", tests="1",
                      failures="0", errors="1")
    suite = ET.SubElement(root, "testsuite", name="load", tests="1", failures="0",
                          errors="1", skipped="0")
    case = ET.SubElement(suite, "testcase", name="the policy and its cases load",
                         classname="policy.load")
    error = ET.SubElement(case, "error", message=text, type="load")
    error.text = text
    ET.indent(root)
    return ET.ElementTree(root)


def _fail(text: str) -> int:
    import click

    click.echo(f"pyauthz policy test: {text}", err=True)
    return 2


def _command():
    import click

    @click.command("test")
    @click.argument("policy_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
    @click.argument("files", nargs=-1, type=click.Path(dir_okay=False, exists=True,
                                                        path_type=Path))
    @click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Also write the results as JUnit XML to this file.")
    @click.option("--mode", type=click.Choice(["enforce", "audit"]), default=None,
                  help="Decide as if rules.yaml said this mode: (test the rules of a policy "
                       "rolled out with mode: audit as they will enforce).")
    def test_command(policy_dir: Path, files: tuple[Path, ...], junit_file: Path | None,
                     mode: str | None) -> None:
        """Run the test cases kept beside a policy (POLICY_DIR/tests/*.yaml, or FILES)
        through the plugin's decision path, offline. Exit 0: every case passed; 1: a case
        failed; 2: the policy or a case file does not load, or a near_miss names no rule
        of the policy (nothing was tested; --junit then writes one <error>)."""
        try:
            policy, cases = _load(policy_dir, files, mode)
        except LoadError as exc:
            if junit_file is not None:
                junit_error(str(exc), policy_dir).write(junit_file, encoding="utf-8",
                                                        xml_declaration=True)
            raise SystemExit(_fail(str(exc))) from None
        results = run_cases(policy, cases, serve_floor(policy_dir))
        click.echo(table(results))
        if junit_file is not None:
            junit(results, policy_dir).write(junit_file, encoding="utf-8", xml_declaration=True)
        raise SystemExit(0 if all(r.passed for r in results) else 1)

    return test_command


test_command = _command()
