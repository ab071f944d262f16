"""What one decision may spend on reads of dockerd and registries: one deadline for all of
them, and a lookup slot taken on first use; within the decision, each object of dockerd is
read at most once (``authz.moby.reads``).

dockerd sends the plugin's own reads back through the plugin (each is an ordinary API call),
so a decision that waits on dockerd holds a thread another thread must answer. At most a
quarter of the threads may hold a slot; a decision that finds none within a second is
refused, never left waiting (dockerd has no timeout for the plugin).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from authz.decoding.errors import RequestRefused
from authz.moby.reads import DecisionReads

SLOT_WAIT_SECONDS = 1.0
# All of one decision's reads (dockerd, registries) share this budget unless the trust
# policy sets another (timeouts.decision in trust.yaml).
DECISION_SECONDS = 4.0


class Lookups:
    """One decision's reads: the dockerd client (None: the plugin reads no dockerd state),
    the deadline they share, which remembers dockerd's answers for this decision only
    (``reads``: read each object through it), and the lookup slot they hold."""

    def __init__(self, docker, slots: threading.BoundedSemaphore | None = None,
                 seconds: float = DECISION_SECONDS, clock: Callable[[], float] = time.monotonic,
                 recall=None):
        self.docker = docker
        self.deadline = DecisionReads(docker, seconds, clock, recall)
        self._slots = slots
        self._held = False

    @property
    def reads(self) -> DecisionReads:
        """dockerd's inspect answers, each object read at most once in this decision."""
        return self.deadline

    def use(self) -> DecisionReads:
        """The deadline (and the decision's reads), after taking a lookup slot if this
        decision holds none yet."""
        if self._slots is not None and not self._held:
            wait = min(SLOT_WAIT_SECONDS, max(0.0, self.deadline.remaining()))
            if not self._slots.acquire(timeout=wait):
                raise RequestRefused("request-state", "the plugin is busy with other decisions "
                                     "that wait on dockerd or a registry",
                                     "Retry; if it persists, raise pyauthz serve --threads.")
            self._held = True
        return self.deadline

    def close(self) -> None:
        """Give the slot back (at the end of the decision)."""
        if self._held:
            self._held = False
            self._slots.release()

    def __enter__(self) -> "Lookups":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
