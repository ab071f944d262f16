"""What ``pyauthz policy lint`` reports: a finding (error or warning, with ``file:line``)
and the report of a whole policy directory, with its JSON form."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

ERROR, WARNING = "error", "warning"
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
        """``severity: file:line: message [check]``; ``file: message [check]`` when no line
        is known; ``message [check]`` when no file is."""
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        return f"{self.severity}: {where}{self.message} [{self.check}]"


@dataclass
class Report:
    """Every finding for one policy directory, and what lint read of it."""

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


def error_finding(exc: Exception, check: str = "load") -> Finding:
    """A loader's error (``file:line: text``, or ``file: text``) as a finding."""
    text = str(exc)
    match = _WHERE.match(text)
    if match:
        return Finding(ERROR, check, match["text"], match["file"], int(match["line"]))
    head, sep, rest = text.partition(": ")
    if sep and head.endswith((".yaml", ".conf")) or sep and Path(head).is_absolute():
        return Finding(ERROR, check, rest, head)
    return Finding(ERROR, check, text)
