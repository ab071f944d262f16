"""dockerd's answers remembered across decisions, while no call could have changed them.

A ``docker run`` is judged three times against the same objects: the create reads its image,
the attach and the start read the new container, the start's image trust reads the image
again by id; the next ``docker run`` reads the same image again. Each read goes through
dockerd, which sends it through the plugin again (two more plugin calls while the decision
waits): most of what the plugin added to a ``docker run``. ``Recall`` keeps such answers,
and gives one back only while it is still what dockerd would answer:

- **Only what changes through the API alone.** A container in state ``created`` (it has
  never run, so nothing but an API call can change or remove it: a running one can exit and
  be auto-removed unseen), by the exact name it was read by; an image by the exact name it
  was read by and by its full id (``sha256:`` and 64 hex digits). Never "no such object",
  never an error.
- **Forgotten at every call that could change it** (``Generations``, shared by all of the
  plugin's workers): every state-changing call of the API, in its request phase (after its
  decision: dockerd acts only after the answer) and again in its response phase (after
  dockerd acted), as decoding classifies it (``authz.decoding.routes.state_changes``); a call
  that could not be read, or is not known, changes everything; dockerd activating the plugin
  (it restarted) forgets everything.
- **Nothing at all** where dockerd changes state without an API call that has a response
  phase: once a BuildKit session (``/session``, ``/grpc``: long-lived, hijacked) or a swarm
  call has been seen, and on a swarm node (dockerd's ``GET /info``, read at most once a
  minute, when there is an answer to use); nor after a change that could not be counted.
- **Briefly**: ``TTL_SECONDS`` at most, ``MAX_ENTRIES`` per kind.

What is judged is then dockerd's state as it was at most a few seconds before, and only if no
call that could change it has been made since: the staleness that remains is the window every
read of dockerd has (dockerd acts after the decision), widened to the moment a change dockerd
made is reported by its response phase.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

TTL_SECONDS = 5.0
MAX_ENTRIES = 512
SWARM_INFO_SECONDS = 60.0
MAX_READS_AHEAD = 4
READ_AHEAD_SECONDS = 2.0
_FULL_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_KIND_INDEX = {"container": 0, "image": 1}
_CONTAINERS, _IMAGES = 0, 1
_OFF, _VOLATILE = 0, 1


class Generations:
    """Counters of state-changing calls, in memory shared with every worker forked after it
    was made (the serving master makes it at import, before gunicorn forks). Its lock is
    never waited on for long: a worker killed while holding it must not stop the others, so
    a lock not had within ``LOCK_WAIT`` means "not known" (nothing is remembered), and a
    change that could not be counted turns remembering off in every worker for good."""

    LOCK_WAIT = 0.5

    def __init__(self) -> None:
        self._counts = multiprocessing.Array("q", 2, lock=True)
        self._flags = multiprocessing.RawArray("q", 2)  # [off, images volatile]: set, never cleared

    def snapshot(self) -> tuple[int, int] | None:
        """(containers, images), or None: nothing may be remembered or used."""
        if self._flags[_OFF]:
            return None
        lock = self._counts.get_lock()
        if not lock.acquire(timeout=self.LOCK_WAIT):
            return None
        try:
            return self._counts[_CONTAINERS], self._counts[_IMAGES]
        finally:
            lock.release()

    def bump(self, containers: bool, images: bool) -> None:
        if not (containers or images) or self._flags[_OFF]:
            return
        lock = self._counts.get_lock()
        if not lock.acquire(timeout=self.LOCK_WAIT):
            self._flags[_OFF] = 1  # a change that was not counted: remember nothing from now on
            return
        try:
            if containers:
                self._counts[_CONTAINERS] += 1
            if images:
                self._counts[_IMAGES] += 1
        finally:
            lock.release()

    def mark_unseen_changes(self) -> None:
        """dockerd may now change state without a call the plugin sees: remember nothing."""
        self._flags[_VOLATILE] = 1

    def unseen_changes(self) -> bool:
        return bool(self._flags[_VOLATILE])


GENERATIONS = Generations()


@dataclass(frozen=True)
class Stamp:
    """When a read began: the generations then (None: not known), and the clock."""
    generations: tuple[int, int] | None
    at: float


class Recall:
    """One worker's remembered answers (``generations``: shared with the other workers)."""

    def __init__(self, generations: Generations = GENERATIONS, ttl: float = TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.generations = generations
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, OrderedDict[str, tuple[Stamp, dict]]] = {
            "container": OrderedDict(), "image": OrderedDict()}
        self._swarm_checked: tuple[float, bool] | None = None  # (until, inactive)
        self._reading: dict[tuple[str, str], threading.Event] = {}  # reads ahead in flight

    def reading_ahead(self, kind: str, name: str) -> threading.Event | None:
        """Mark a read ahead of ``kind`` ``name`` (a container just created) as in flight:
        a decision that needs it waits for it instead of reading again. None: one already is."""
        with self._lock:
            if (kind, name) in self._reading or len(self._reading) >= MAX_READS_AHEAD:
                return None
            event = self._reading[(kind, name)] = threading.Event()
            return event

    def read_ahead_done(self, kind: str, name: str, event: threading.Event) -> None:
        with self._lock:
            if self._reading.get((kind, name)) is event:
                del self._reading[(kind, name)]
        event.set()

    def wait_for_read_ahead(self, kind: str, name: str, seconds: float) -> None:
        """Wait (at most ``seconds``) for a read ahead of ``kind`` ``name`` in flight."""
        with self._lock:
            event = self._reading.get((kind, name))
        if event is not None and seconds > 0:
            event.wait(seconds)

    def stamp(self) -> Stamp:
        """Take before a read: an answer is kept with what was true when it was asked for."""
        return Stamp(self.generations.snapshot(), self.clock())

    def lookup(self, kind: str, name: str, docker: Any, deadline: Any) -> dict | None:
        """The remembered answer for ``kind`` ``name``, or None (read it)."""
        with self._lock:
            found = self._entries.get(kind, {}).get(name)
        if found is None or not self._allowed(docker, deadline):
            return None
        stamp, answer = found
        now = self.generations.snapshot()
        if now is None or stamp.generations is None or now[_KIND_INDEX[kind]] != \
                stamp.generations[_KIND_INDEX[kind]] or self.clock() - stamp.at > self.ttl:
            return None
        return answer

    def keep(self, kind: str, name: str, answer: Any, stamp: Stamp) -> None:
        """Remember ``answer`` (read under ``stamp``) if it can only change through the API."""
        if not isinstance(answer, dict) or stamp.generations is None:
            return
        if kind == "container":
            state = answer.get("State")
            if not (isinstance(state, dict) and state.get("Status") == "created"
                    and state.get("Running") is False):
                return
            key = name
            keys = [name]
        elif kind == "image":
            image_id = answer.get("Id")
            if not isinstance(image_id, str) or not _FULL_IMAGE_ID.match(image_id):
                return
            keys = list(dict.fromkeys((name, image_id)))  # as asked, and by its id
        else:
            return
        with self._lock:
            entries = self._entries[kind]
            for key in keys:
                entries.pop(key, None)
                entries[key] = (stamp, answer)
            while len(entries) > MAX_ENTRIES:
                entries.popitem(last=False)

    def changed(self, containers: bool, images: bool, unseen: bool = False) -> None:
        """A call that may change containers and/or images was decided or answered
        (``unseen``: and dockerd may go on changing state without a call the plugin sees)."""
        if unseen:
            self.generations.mark_unseen_changes()
        self.generations.bump(containers, images)

    def forget_all(self) -> None:
        """dockerd (re)activated the plugin: nothing read before counts."""
        self.generations.bump(True, True)
        with self._lock:
            for entries in self._entries.values():
                entries.clear()
            self._swarm_checked = None

    def _allowed(self, docker: Any, deadline: Any) -> bool:
        """Answers are used only from a dockerd known not to be a swarm node (swarm creates,
        removes and pulls for its tasks without API calls), and only while no call after
        which dockerd changes state unseen has been made."""
        if self.generations.unseen_changes():
            return False
        now = self.clock()
        checked = self._swarm_checked
        if checked is not None and checked[0] > now:
            return checked[1]
        try:
            info = docker.info(deadline)
        except Exception:  # noqa: BLE001 - not known: read the object instead
            return False
        swarm = info.get("Swarm") if isinstance(info, dict) else None
        inactive = isinstance(swarm, dict) and swarm.get("LocalNodeState") == "inactive"
        self._swarm_checked = (now + SWARM_INFO_SECONDS, inactive)
        return inactive
