"""A time budget for one decision: every lookup a decision makes (dockerd, registries)
takes its timeout from what is left, so that no decision waits more than a few seconds
(dockerd has no timeout for the plugin)."""

from __future__ import annotations

import time
from typing import Callable


class DeadlineExceeded(Exception):
    pass


class Deadline:
    """The time one decision may still spend."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.total = seconds
        self.end = clock() + seconds

    def remaining(self) -> float:
        return self.end - self._clock()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def bound(self, seconds: float, what: str) -> float:
        left = self.remaining()
        if left <= 0.01:
            raise DeadlineExceeded(f"decision deadline ({self.total:g}s) reached before {what}")
        return min(seconds, left)
