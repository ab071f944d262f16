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
import fnmatch
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import yaml

from authz.decoding.routes import ENDPOINTS
from authz.policy import rules as rules_module
from authz.policy.engine import RULES_FILE, Policy, policy_revision, value_match
from authz.policy.rules import PolicyError, RuleSet
from authz.policy.yamlfile import LINE, LineLoader, StrictYaml
from authz.trust import policyfile
from authz.trust.policy import POLICY_FILE as TRUST_FILE, SIGNATURE, TrustPolicyError
from authz.trust.trustyaml import POSITIONS, Section, TrustYaml, _PositionLoader

ERROR, WARNING = "error", "warning"
EXPIRING_DAYS = 14
_GLOB = re.compile(r"[*?\[]")
_WHERE = re.compile(r"^(?P<file>[^\n]*?\.yaml):(?P<line>\d+): (?P<text>.*)$", re.S)


@dataclass(frozen=True)
class Finding:
    """One problem: ``severity`` error or warning, the ``check`` that found it."""

    severity: str
    check: str
    message: str
    file: str | None = None
    line: int | None = None

    def text(self) -> str:
        """``severity: file:line: message [check]`` (serve's own start-up warnings as
        ``check-policy`` always printed them)."""
        if self.check == "startup":
            return f"{self.severity}: {self.message}"
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        return f"{self.severity}: {where}{self.message} [{self.check}]"


@dataclass
class Report:
    directory: Path
    revision: str | None = None
    counts: dict[str, int] | None = None
    mode: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    def exit_code(self, strict: bool = False) -> int:
        return 1 if self.errors or (strict and self.warnings) else 0

    def add(self, finding: Finding) -> None:
        """Add ``finding``, unless it is one already reported (both passes meet the first)."""
        same = (finding.severity, finding.message, finding.file, finding.line)
        if not any((f.severity, f.message, f.file, f.line) == same for f in self.findings):
            self.findings.append(finding)

    def as_json(self, strict: bool = False) -> dict:
        return {"policy_dir": str(self.directory), "revision": self.revision,
                "loads": not self.errors, "mode": self.mode, "counts": self.counts,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "strict": strict, "exit": self.exit_code(strict),
                "findings": [asdict(f) for f in self.findings]}


def _error_finding(exc: Exception, check: str = "load") -> Finding:
    """A loader's error (``file:line: text``, or ``file: text``) as a finding."""
    text = str(exc)
    match = _WHERE.match(text)
    if match:
        return Finding(ERROR, check, match["text"], match["file"], int(match["line"]))
    head, sep, rest = text.partition(": ")
    if sep and head.endswith((".yaml", ".conf")) or sep and Path(head).is_absolute():
        return Finding(ERROR, check, rest, head)
    return Finding(ERROR, check, text)


# --------------------------------------------------------------------------- tolerant YAML

class _Tolerant:
    """A strict loader that reports every duplicate and merge key (``problems``) instead of
    stopping at the first, and goes on with what YAML itself would read (the last value)."""

    problems: list[tuple[int, str]]

    def construct_mapping(self, node, deep=False):
        kept: dict[Any, int] = {}   # key -> its index in ``values``
        values: list[tuple[Any, Any]] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append((line, "a merge key (<<): its values can be overridden "
                                            "silently; write the entries out"))
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                index = kept.get(key)
            except TypeError:  # an unhashable key: the loader's own checks refuse it
                values.append((key_node, value_node))
                continue
            if index is not None:
                first = values[index][0].start_mark.line + 1
                self.problems.append((line, f"duplicate key {key!r} (first at line {first}); "
                                            "YAML would keep the last one silently"))
                values[index] = (key_node, value_node)
                continue
            kept[key] = len(values)
            values.append((key_node, value_node))
        filtered = yaml.MappingNode(node.tag, values, node.start_mark, node.end_mark,
                                    flow_style=node.flow_style)
        return super().construct_mapping(filtered, deep=deep)


class _RulesLoader(_Tolerant, LineLoader):
    """rules.yaml, tolerantly; each mapping's key lines are kept aside (``positions``, by
    the mapping's ``__line__``: PyYAML hands out a copy of the mapping built here)."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        self.positions[mapping[LINE]] = {
            k: n.start_mark.line + 1 for n, _ in node.value
            if n.tag != "tag:yaml.org,2002:merge"
            and not isinstance(k := self.construct_object(n, deep=True), (list, dict))}
        return mapping


class _TrustLoader(_Tolerant, _PositionLoader):
    """trust.yaml, tolerantly, with trust.yaml's own key positions."""


def _tolerant_load(path: Path, loader_class, report: Report) -> tuple[Any, Any] | None:
    """The document and its loader, every duplicate or merge key reported; None when the
    file cannot be read or is not YAML (reported)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.add(Finding(ERROR, "load", f"cannot read: {exc}", str(path)))
        return None
    loader = loader_class(text)
    loader.problems, loader.positions = [], {}
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        report.add(Finding(ERROR, "yaml", f"not valid YAML: {problem}", str(path),
                           mark.line + 1 if mark is not None else None))
        return None
    finally:
        loader.dispose()
    for line, problem in loader.problems:
        report.add(Finding(ERROR, "yaml", problem, str(path), line))
    return document, loader


def _each(report: Report, check: Callable[[], Any], drop: Callable[[str], bool] = lambda _: False):
    """Run one of the loader's checks; its error becomes a finding (unless ``drop``)."""
    try:
        return check()
    except (PolicyError, TrustPolicyError) as exc:
        if not drop(str(exc)):
            report.add(_error_finding(exc))
        return None


# --------------------------------------------------------------------------- rules.yaml

def _rules_errors(path: Path, report: Report, today: dt.date) -> None:
    """rules.yaml's errors, entry by entry, with the loader's own checks."""
    loaded = _tolerant_load(path, _RulesLoader, report)
    if loaded is None:
        return
    doc, _ = loaded
    strict = StrictYaml(path, PolicyError)
    if not isinstance(doc, dict):
        report.add(_error_finding(strict.fail(None, "the file must be a mapping with 'rules:'")))
        return
    # The top level: unknown keys here; version and mode are single values, whose error
    # the first pass (load_rules itself) reports.
    _each(report, lambda: strict.keys(doc, {"version", "mode", "rules", "exceptions", "roles"},
                                      "the policy"))
    raw_rules = doc.get("rules") or []
    raw_exceptions = doc.get("exceptions") or []
    if not isinstance(raw_rules, list):
        report.add(_error_finding(strict.fail(doc[LINE], "'rules' must be a list")))
        raw_rules = []
    if not isinstance(raw_exceptions, list):
        report.add(_error_finding(strict.fail(doc[LINE], "'exceptions' must be a list")))
        raw_exceptions = []
    rules, broken_ids = [], set()
    for item in raw_rules:
        rule = _each(report, lambda item=item: rules_module._rule(path, item))
        if rule is not None:
            rules.append(rule)
        elif isinstance(item, dict) and isinstance(item.get("id"), str):
            broken_ids.add(item["id"])
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            report.add(_error_finding(strict.fail(rule.line, f"duplicate rule id {rule.id!r}")))
        seen.add(rule.id)
    by_id = {rule.id: rule for rule in rules}

    def names_a_broken_rule(text: str) -> bool:
        return any(f"no rule {rule_id!r}" in text for rule_id in broken_ids)

    exceptions = []
    for item in raw_exceptions:
        ex = _each(report, lambda item=item: rules_module._exception(path, item, by_id, today),
                   drop=names_a_broken_rule)
        if ex is not None:
            exceptions.append(ex)
    ex_seen: set[str] = set()
    for ex in exceptions:
        if ex.id in ex_seen or ex.id in seen:
            report.add(_error_finding(strict.fail(ex.line, f"duplicate id {ex.id!r}")))
        ex_seen.add(ex.id)
    raw_roles = doc.get("roles") or {}
    if not isinstance(raw_roles, dict):
        report.add(_error_finding(strict.fail(doc[LINE], "'roles' must map a role name to its "
                                                         "members")))
        return
    for role, members in raw_roles.items():
        if role != LINE and (not isinstance(members, list)
                             or not all(isinstance(m, str) for m in members)):
            report.add(_error_finding(strict.fail(raw_roles[LINE], f"role {role!r}: members must "
                                                                   "be a list of names")))
    roles = {str(role) for role in raw_roles if role != LINE}
    for ex in exceptions:
        for subject in ex.subjects:
            if subject.startswith("role:") and subject[5:] not in roles:
                report.add(Finding(ERROR, "load", f"exception {ex.id}: no role {subject[5:]!r} "
                                                  "under 'roles:'", str(path), ex.line))


# --------------------------------------------------------------------------- trust.yaml

def _trust_errors(path: Path, report: Report) -> None:
    """trust.yaml's errors, section by section and entry by entry, with the loader's own
    functions (authz/trust/policyfile.py)."""
    loaded = _tolerant_load(path, _TrustLoader, report)
    if loaded is None:
        return
    document, loader = loaded
    reader = TrustYaml(path)
    reader.root_line = loader.root_line
    if document is None:
        report.add(_error_finding(reader.fail(None, "empty file: expected at least `version: 1`")))
        return
    if not isinstance(document, dict):
        report.add(_error_finding(reader.fail(reader.root_line, "trust.yaml must be a mapping")))
        return
    # Unknown top-level keys, each; then every section as if they were not there.
    for key, position in document[POSITIONS].items():
        if key not in policyfile.TOP_KEYS:
            report.add(_error_finding(reader.fail(
                position.key, f"trust.yaml: unknown key {key!r} (allowed: "
                              f"{', '.join(sorted(policyfile.TOP_KEYS))})")))
    known = {k: v for k, v in document.items() if k in policyfile.TOP_KEYS or k == LINE}
    known[POSITIONS] = {k: v for k, v in document[POSITIONS].items() if k in policyfile.TOP_KEYS}
    top = _each(report, lambda: reader.section(known, reader.root_line, "trust.yaml",
                                               policyfile.TOP_KEYS, {"version"}))
    if top is None:
        top = Section(reader, known, "trust.yaml")
    if "version" in top:
        _each(report, lambda: policyfile._check_version(top))
    keys: dict = {}
    broken_keys: set[str] = set()
    if "keys" in top:
        for item, line in _each(report, lambda: top.items("keys", "keys")) or []:
            key = _each(report, lambda item=item, line=line: policyfile._read_key(
                reader.section(item, line, "a key", policyfile.KEY_FIELDS, {"name"}), keys))
            if key is not None:
                keys[key.name] = key
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                broken_keys.add(item["name"])

    def names_a_broken_key(text: str) -> bool:
        return any(f"unknown key {name!r}" in text for name in broken_keys)

    if "default" in top:
        _each(report, lambda: policyfile._read_default(top, keys), drop=names_a_broken_key)
    requirements = []
    for section, fields, required in (("rules", policyfile.RULE_FIELDS, {"pattern", "require"}),
                                      ("exceptions", policyfile.EXCEPTION_FIELDS,
                                       policyfile.EXCEPTION_FIELDS)):
        if section not in top:
            continue
        what = section[:-1]
        for item, line in _each(report, lambda section=section: top.items(section, section)) or []:
            requirement = _each(report, lambda item=item, line=line, what=what, fields=fields,
                                required=required: policyfile._read_requirement(
                                    reader.section(item, line, what, fields, required),
                                    keys if what == "rule" else {}),
                                drop=names_a_broken_key)
            if requirement is not None:
                requirements.append(requirement)
    _each(report, lambda: policyfile._most_specific_first(requirements))
    for read in (policyfile._read_registries, policyfile._read_credentials_file,
                 policyfile._read_timeouts, policyfile._read_cache):
        _each(report, lambda read=read: read(top))


# --------------------------------------------------------------------------- warnings

def _expanded(patterns, known) -> set[str]:
    """The known names a list of globs matches."""
    return {name for name in known if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def _literal(value: str) -> bool:
    return not _GLOB.search(value)


def _rules_warnings(ruleset: RuleSet, report: Report, today: dt.date,
                    role_lines: dict[str, int]) -> None:
    """What lint can tell for sure about a rules.yaml that loads."""
    path = str(ruleset.path)

    def warn(check: str, line: int | None, text: str) -> None:
        report.add(Finding(WARNING, check, text, path, line))

    if ruleset.mode == "audit":
        warn("mode-audit", None, "mode: audit: the rules deny nothing; every deny is only logged "
                                 "(audit_violations). The built-in floor, the request-* refusals "
                                 "and image trust still deny. Set mode: enforce after the roll-out.")
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


def _trust_warnings(trust, report: Report) -> None:
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


# --------------------------------------------------------------------------- the run

def lint(directory: Path, today: dt.date | None = None) -> Report:
    """Every finding for the policy directory ``directory``."""
    from authz.plugin import load_trust

    directory = Path(directory)
    today = today or dt.date.today()
    report = Report(directory)
    try:
        report.revision = policy_revision(directory)
    except OSError as exc:
        report.add(Finding(ERROR, "load", f"cannot read the directory: {exc}", str(directory)))
        return report
    # 1. As serve loads it (authoritative: lint fails exactly when this fails).
    policy = trust = None
    trust_failed = False
    try:
        policy = Policy.load(directory)
    except Exception as exc:  # noqa: BLE001 - any load failure is an error to report
        report.add(_error_finding(exc))
    try:
        trust = load_trust(directory, None)
    except Exception as exc:  # noqa: BLE001
        report.add(_error_finding(exc))
        trust_failed = True
    # 2. Every other error, entry by entry.
    rules_path = directory / RULES_FILE
    role_lines: dict[str, int] = {}
    if policy is None and rules_path.is_file():
        _rules_errors(rules_path, report, today)
    elif policy is not None:
        loaded = _tolerant_load(rules_path, _RulesLoader, report)
        if loaded is not None and isinstance(loaded[0], dict):
            doc, loader = loaded
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
        _trust_errors(directory / TRUST_FILE, report)
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
        report.add(Finding(WARNING, "startup", warning, str(rules_path)))
    if trust is not None:
        # Lint reads no dockerd; serve does (its --docker-host): not the policy's warning.
        for warning in trust.startup_warnings():
            if not warning.startswith("image trust: no docker host"):
                report.add(Finding(WARNING, "startup", warning, str(trust.policy.path)))
    _rules_warnings(ruleset, report, today, role_lines)
    if trust is not None:
        _trust_warnings(trust, report)
    return report


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
