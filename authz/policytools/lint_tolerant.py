"""Lint's second pass: every error of rules.yaml and trust.yaml, entry by entry.

The loaders stop at their first error; this reads the files again with a tolerant copy of
the strict YAML reader (every duplicate and merge key is reported, and reading goes on with
YAML's own choice) and runs the loaders' own checks one entry at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable

import yaml

from authz.policy import rules as rules_module
from authz.policy.rules import PolicyError
from authz.policy.yamlfile import LINE, LineLoader, StrictYaml
from authz.policytools.lint_report import ERROR, Finding, Report, error_finding
from authz.trust import policyfile
from authz.trust.policy import TrustPolicyError
from authz.trust.trustyaml import POSITIONS, Section, TrustYaml, _PositionLoader

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


class RulesLoader(_Tolerant, LineLoader):
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


def tolerant_load(path: Path, loader_class, report: Report) -> tuple[Any, Any] | None:
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
            report.add(error_finding(exc))
        return None


# --------------------------------------------------------------------------- rules.yaml

def rules_errors(path: Path, report: Report, today: dt.date) -> None:
    """rules.yaml's errors, entry by entry, with the loader's own checks."""
    loaded = tolerant_load(path, RulesLoader, report)
    if loaded is None:
        return
    doc, _ = loaded
    strict = StrictYaml(path, PolicyError)
    if not isinstance(doc, dict):
        report.add(error_finding(strict.fail(None, "the file must be a mapping with 'rules:'")))
        return
    # The top level: unknown keys here; version and mode are single values, whose error
    # the first pass (load_rules itself) reports.
    _each(report, lambda: strict.keys(doc, {"version", "mode", "rules", "exceptions", "roles"},
                                      "the policy"))
    raw_rules = doc.get("rules") or []
    raw_exceptions = doc.get("exceptions") or []
    if not isinstance(raw_rules, list):
        report.add(error_finding(strict.fail(doc[LINE], "'rules' must be a list")))
        raw_rules = []
    if not isinstance(raw_exceptions, list):
        report.add(error_finding(strict.fail(doc[LINE], "'exceptions' must be a list")))
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
            report.add(error_finding(strict.fail(rule.line, f"duplicate rule id {rule.id!r}")))
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
            report.add(error_finding(strict.fail(ex.line, f"duplicate id {ex.id!r}")))
        ex_seen.add(ex.id)
    raw_roles = doc.get("roles") or {}
    if not isinstance(raw_roles, dict):
        report.add(error_finding(strict.fail(doc[LINE], "'roles' must map a role name to its "
                                                         "members")))
        return
    for role, members in raw_roles.items():
        if role != LINE and (not isinstance(members, list)
                             or not all(isinstance(m, str) for m in members)):
            report.add(error_finding(strict.fail(raw_roles[LINE], f"role {role!r}: members must "
                                                                   "be a list of names")))
    roles = {str(role) for role in raw_roles if role != LINE}
    for ex in exceptions:
        for subject in ex.subjects:
            if subject.startswith("role:") and subject[5:] not in roles:
                report.add(Finding(ERROR, "load", f"exception {ex.id}: no role {subject[5:]!r} "
                                                  "under 'roles:'", str(path), ex.line))


# --------------------------------------------------------------------------- trust.yaml

def trust_errors(path: Path, report: Report) -> None:
    """trust.yaml's errors, section by section and entry by entry, with the loader's own
    functions (authz/trust/policyfile.py)."""
    loaded = tolerant_load(path, _TrustLoader, report)
    if loaded is None:
        return
    document, loader = loaded
    reader = TrustYaml(path)
    reader.root_line = loader.root_line
    if document is None:
        report.add(error_finding(reader.fail(None, "empty file: expected at least `version: 1`")))
        return
    if not isinstance(document, dict):
        report.add(error_finding(reader.fail(reader.root_line, "trust.yaml must be a mapping")))
        return
    # Unknown top-level keys, each; then every section as if they were not there.
    for key, position in document[POSITIONS].items():
        if key not in policyfile.TOP_KEYS:
            report.add(error_finding(reader.fail(
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
