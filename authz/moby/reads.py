"""One decision's reads of dockerd: each object read at most once, within one deadline.

A decision can need the same object twice: a create without ``-u`` reads its image for the
user it runs as (decoding's state), and image trust reads that image again to judge it; a
container can be both started and named by ``--volumes-from``. Each read is a round trip
through dockerd, which sends it through the plugin again. ``DecisionReads`` is the
decision's deadline (a ``Deadline``: every read of dockerd and of the registries takes its
timeout from what is left) that also remembers what dockerd answered to each inspect, keyed
by the kind of object and the exact name asked for: the object, "no such object", or the
``DockerError`` (raised again: a read that failed still fails).

It lives for one decision and is then dropped: dockerd's state changes between decisions (a
re-tag, a rename, a removed container), so the next decision reads again, unless ``recall``
(``authz.moby.recall``) still holds an answer no call since could have changed. Image trust is
given it as the decision's deadline, as before, and reads the local image through it when
it reads the same dockerd (trust never imports decoding).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from authz.deadline import Deadline
from authz.moby.client import DockerError
from authz.moby.recall import Recall

# A decision waits at most this long for a read ahead of the object it needs (recall.py).
READ_AHEAD_WAIT = 1.0


class DecisionReads(Deadline):
    """The decision's deadline, and dockerd's inspect answers it has had (``docker``: the
    dockerd client, whose ``inspect_*`` methods it reads through; None: no dockerd)."""

    def __init__(self, docker: Any, seconds: float, clock: Callable[[], float] = time.monotonic,
                 recall: Recall | None = None):
        super().__init__(seconds, clock)
        self.docker = docker
        # Answers kept across decisions while no call could have changed them (recall.py).
        self.recall = recall if docker is not None else None
        # (kind, exact name) -> the inspect JSON, None (no such object) or the DockerError.
        # Image trust may read on its pool thread while the decision waits for it: one
        # reader at a time, except after the decision gave up on a check (then a second
        # read of an object is possible, and harmless: the decision is a deny already).
        self._answers: dict[tuple[str, str], dict | None | DockerError] = {}

    def reads_from(self, docker: Any) -> bool:
        """Whether this decision reads the dockerd that ``docker`` is (the same client)."""
        return docker is not None and docker is self.docker

    def inspect_image(self, ref: str, deadline: Deadline | None = None) -> dict | None:
        return self._once("image", ref, deadline)

    def inspect_container(self, name: str, deadline: Deadline | None = None) -> dict | None:
        return self._once("container", name, deadline)

    def inspect_network(self, name: str, deadline: Deadline | None = None) -> dict | None:
        return self._once("network", name, deadline)

    def inspect_volume(self, name: str, deadline: Deadline | None = None) -> dict | None:
        return self._once("volume", name, deadline)

    def inspect_exec(self, exec_id: str, deadline: Deadline | None = None) -> dict | None:
        return self._once("exec", exec_id, deadline)

    def inspect_plugin(self, name: str, deadline: Deadline | None = None) -> dict | None:
        return self._once("plugin", name, deadline)

    def _once(self, kind: str, name: str, deadline: Deadline | None) -> dict | None:
        """dockerd's answer for ``kind`` ``name``, read on first use within ``deadline`` (this
        decision's by default). A deadline reached before the read is not an answer: it is
        raised and not remembered."""
        key = (kind, name)
        if key not in self._answers:
            recall, answer = self.recall, None
            if recall is not None:
                answer = recall.lookup(kind, name, self.docker, deadline or self)
                if answer is None:  # a read of it ahead in flight? (a container just created)
                    recall.wait_for_read_ahead(kind, name, min(READ_AHEAD_WAIT, self.remaining()))
                    answer = recall.lookup(kind, name, self.docker, deadline or self)
            if answer is None:
                stamp = recall.stamp() if recall is not None else None
                try:
                    answer = getattr(self.docker, f"inspect_{kind}")(name, deadline or self)
                except DockerError as exc:
                    answer = exc
                if recall is not None:
                    recall.keep(kind, name, answer, stamp)
            self._answers[key] = answer
        answer = self._answers[key]
        if isinstance(answer, DockerError):
            raise answer
        return answer
