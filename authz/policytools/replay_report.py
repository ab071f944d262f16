"""Replay's report: what it found in the log files, changes grouped by (rule, subject,
endpoint, image) with examples, its summary and JSON, and the text report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from authz.decoding import vocabulary
from authz.policytools.replay_decide import (AUDITS_CHANGED, CHANGE_CLASSES, NEWLY_ALLOWED,
                                             NEWLY_DENIED, RULES_CHANGED, Replayed)

_TITLES = {NEWLY_DENIED: "Newly denied", NEWLY_ALLOWED: "Newly allowed",
           RULES_CHANGED: "Still denied, by other rules",
           AUDITS_CHANGED: "Same answer, other audit matches"}

# Unreadable lines listed in the report (all are counted).
MAX_LISTED_PROBLEMS = 20


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
    if report.other_events:
        out.append(f"  {report.other_events} line(s) of other events (not decisions) were "
                   "skipped")
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
