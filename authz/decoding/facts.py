"""Facts: what a request asks dockerd to do, in the policy's vocabulary.

A fact is a ``kind`` (``privileged``, ``capability``, ``host-path``...), a normalized
``value`` that rules match, and ``where`` in the request it was found, for the message
and the log. Kinds and their values are listed in docs/policy.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str
    value: str
    where: str
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.where}: {self.kind}={self.value}"
        return f"{text} ({self.detail})" if self.detail else text
