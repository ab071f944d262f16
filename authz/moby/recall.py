"""dockerd's answers remembered across decisions and workers, while no call could have changed them.

A ``docker run`` is judged three times against the same objects: the create reads its image,
the attach and the start read the new container, the start's image trust reads the image
again by id; the next ``docker run`` reads the same image again. Each read goes through
dockerd, which sends it through the plugin again (two more plugin calls while the decision
waits): most of what the plugin added to a ``docker run``. ``Recall`` keeps such answers,
and gives one back only while it is still what dockerd would answer:

- **Only what changes through the API alone.** A container in state ``created`` (it has
  never run, so nothing but an API call can change or remove it: a running one can exit and
  be auto-removed unseen), by the exact name or full id it was read by (never by what could
  be an id prefix: a new container can make a prefix ambiguous; nor by a legacy link's
  alias, "web/db"); an image by the exact name it was read by and by its full id. Never "no
  such object", never an error.
- **Forgotten at every call that could change it**, in its request phase (after its
  decision: dockerd acts only on the answer) and again in its response phase (after dockerd
  acted), as decoding classifies the call (``authz.decoding.routes.state_changes``): a call
  on one container forgets what was read of the container with that full id or that name (a
  kept answer is forgotten by a change to its id or to its name); one that names a container
  by what could be an id prefix, renames, removes or is not known forgets every container;
  any call that may change images forgets every image. A call that could not be read
  forgets everything; so does dockerd activating the plugin (it restarted).
- **Not kept while a change to it is under way**: from a change's allowed request phase to
  its response phase, nothing it may change is kept (dockerd may act on it after the read;
  and if its response phase never comes, because another authorization plugin after this one
  refused it or a worker died, nothing it may change is kept again until dockerd restarts).
- **Nothing at all** where dockerd changes state without an API call that has a response
  phase: once a BuildKit session (``/session``, ``/grpc``: long-lived, hijacked) or a swarm
  call has been seen, and on a swarm node (dockerd's ``GET /info``, read at most once a
  minute, when there is an answer to use); nor after a change that could not be counted.
- **Briefly**: ``TTL_SECONDS`` at most, in ``SLOTS`` slots of ``SLOT_BYTES`` (a larger answer
  is not kept).

Everything lives in one anonymous shared mapping made at import, in the serving master, so
that every gunicorn worker forked from it sees the same answers and the same changes (a
``docker run``'s calls reach different workers). Its lock is never waited on for long: a
worker killed while holding it must not stop the others, so a lock not had within
``LOCK_WAIT`` is a miss, and a change that could not be counted turns remembering off for
good.

What is judged is then dockerd's state as it was at most a few seconds before, and only if no
call that could change it has been made since: the staleness that remains is the window every
read of dockerd has (dockerd acts after the decision), widened to the moment a change dockerd
made is reported by its response phase.
"""

from __future__ import annotations

import mmap
import multiprocessing
import re
import struct
import threading
import time
import zlib
from typing import Any, Callable

import orjson

TTL_SECONDS = 5.0
SLOTS = 128
SLOT_BYTES = 64 * 1024
CONTAINER_COUNTERS = 1024
SWARM_INFO_SECONDS = 60.0
MAX_READS_AHEAD = 4
READ_AHEAD_SECONDS = 2.0
LOCK_WAIT = 0.5
_FULL_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")
_MAYBE_PREFIX = re.compile(r"^[0-9a-f]{1,63}$")

# The mapping: counters, flags, per-container counters, slot headers, slot data.
_Q = struct.Struct("q")
_SEQ, _LAST_CONTAINERS, _LAST_IMAGES, _OFF, _UNSEEN, _OPEN_CONTAINERS, _OPEN_IMAGES, \
    _ACTIVATIONS = (i * 8 for i in range(8))
_PER_CONTAINER = 64                               # the last change of each (hashed) container
_OPEN_PER_CONTAINER = _PER_CONTAINER + 8 * CONTAINER_COUNTERS  # its changes under way
_HEADER = struct.Struct("qqqqqqq")  # used, stamp, at (ns), length, read ahead until (ns),
#                                       the counters of its id and of its name (+1; 0: none)
_KEY_LEN = struct.Struct("H")


def _key(kind: str, name: str) -> bytes:
    """A slot's key: any string, lone surrogates included, is one key of its own."""
    return f"{kind}:{name}".encode("utf-8", "surrogatepass")


def _counter_of(name: str) -> int:
    """The per-container counter of a full id or a name (without its leading "/": dockerd
    finds "/web" and "web" alike)."""
    return zlib.crc32(name.removeprefix("/").encode("utf-8", "surrogatepass")) % CONTAINER_COUNTERS


class Shared:
    """The mapping every worker shares, and its lock (see the module's docstring)."""

    def __init__(self, slots: int = SLOTS, slot_bytes: int = SLOT_BYTES) -> None:
        self.slots, self.slot_bytes = slots, slot_bytes
        self.headers_at = _OPEN_PER_CONTAINER + 8 * CONTAINER_COUNTERS
        self.data_at = self.headers_at + _HEADER.size * slots
        self.mem = mmap.mmap(-1, self.data_at + slots * slot_bytes)  # MAP_SHARED, anonymous
        self.lock = multiprocessing.Lock()

    def get(self, offset: int) -> int:
        return _Q.unpack_from(self.mem, offset)[0]

    def put(self, offset: int, value: int) -> None:
        _Q.pack_into(self.mem, offset, value)

    def locked(self) -> bool:
        """The lock, unless remembering is off or the lock is not had within LOCK_WAIT (a
        worker died holding it): then remembering is off for good, in every worker, and
        nothing waits on the lock again."""
        if self.get(_OFF):
            return False
        if self.lock.acquire(timeout=LOCK_WAIT):
            return True
        self.put(_OFF, 1)
        return False

    def header(self, slot: int) -> tuple[int, ...]:
        return _HEADER.unpack_from(self.mem, self.headers_at + slot * _HEADER.size)

    def set_header(self, slot: int, *fields: int) -> None:
        _HEADER.pack_into(self.mem, self.headers_at + slot * _HEADER.size, *fields)

    def key_at(self, slot: int) -> bytes:
        at = self.data_at + slot * self.slot_bytes
        (n,) = _KEY_LEN.unpack_from(self.mem, at)
        return self.mem[at + 2:at + 2 + n]


SHARED = Shared()


class Recall:
    """dockerd's answers, shared by the workers (``shared``: made before they fork)."""

    def __init__(self, shared: Shared = SHARED, ttl: float = TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.shared = shared
        self.ttl = ttl
        self.clock = clock
        # (until, inactive, dockerd's activation it was read in): this worker's
        self._swarm_checked: tuple[float, bool, int] | None = None
        self._ahead = threading.BoundedSemaphore(MAX_READS_AHEAD)
        self._ahead_here: dict[bytes, threading.Event] = {}  # this worker's reads ahead

    # ---- what was true before a read, and what is kept ----

    def stamp(self) -> int | None:
        """Take before a read: an answer is kept with the count of changes then (None: not
        known, nothing is kept)."""
        s = self.shared
        if s.get(_OFF) or not s.locked():
            return None
        try:
            return s.get(_SEQ)
        finally:
            s.lock.release()

    def keep(self, kind: str, name: str, answer: Any, stamp: int | None) -> None:
        """Remember ``answer`` (read under ``stamp``) if it can only change through the API."""
        if not isinstance(answer, dict) or stamp is None:
            return
        counters = (0, 0)
        if kind == "container":
            state, container_id = answer.get("State"), answer.get("Id")
            container_name = answer.get("Name")
            if not (isinstance(state, dict) and state.get("Status") == "created"
                    and state.get("Running") is False and isinstance(container_id, str)
                    and _FULL_ID.match(container_id) and isinstance(container_name, str)
                    and container_name) or _MAYBE_PREFIX.match(name) \
                    or "/" in name.removeprefix("/"):
                return  # never by what could be an id prefix, or a link's alias
            keys = [name]
            counters = (_counter_of(container_id) + 1, _counter_of(container_name) + 1)
        elif kind == "image":
            image_id = answer.get("Id")
            if not isinstance(image_id, str) or not _FULL_IMAGE_ID.match(image_id):
                return
            keys = list(dict.fromkeys((name, image_id)))  # as asked, and by its id
        else:
            return
        try:
            data = orjson.dumps(answer)
        except (orjson.JSONEncodeError, TypeError):
            return
        for key in keys:
            self._store(_key(kind, key), data, stamp, counters)

    def _store(self, key: bytes, data: bytes, stamp: int, counters: tuple[int, int]) -> None:
        s = self.shared
        if 2 + len(key) + len(data) > s.slot_bytes or not s.locked():
            return
        try:
            # A change to it under way (allowed, not yet answered): dockerd may act on it
            # after this read, and its response phase may never come.
            if counters[0]:
                if s.get(_OPEN_CONTAINERS) > 0 or any(
                        s.get(_OPEN_PER_CONTAINER + 8 * (c - 1)) > 0 for c in counters):
                    return
            elif s.get(_OPEN_IMAGES) > 0:
                return
            slot = zlib.crc32(key) % s.slots
            at = s.data_at + slot * s.slot_bytes
            ahead = s.header(slot)[4] if s.key_at(slot) == key else 0  # before overwriting
            _KEY_LEN.pack_into(s.mem, at, len(key))
            s.mem[at + 2:at + 2 + len(key) + len(data)] = key + data
            s.set_header(slot, 1, stamp, int(self.clock() * 1e9), len(data), ahead, *counters)
        finally:
            s.lock.release()

    def lookup(self, kind: str, name: str, docker: Any, deadline: Any) -> dict | None:
        """The remembered answer for ``kind`` ``name``, or None (read it)."""
        data = self._fetch(_key(kind, name), kind)
        if data is None or not self._allowed(docker, deadline):
            return None
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return answer if isinstance(answer, dict) else None

    def _fetch(self, key: bytes, kind: str) -> bytes | None:
        s = self.shared
        if s.get(_OFF) or s.get(_UNSEEN) or not s.locked():
            return None
        try:
            slot = zlib.crc32(key) % s.slots
            used, stamp, at_ns, length, _, *counters = s.header(slot)
            if not used or s.key_at(slot) != key:
                return None
            if self.clock() - at_ns / 1e9 > self.ttl:
                return None
            last = s.get(_LAST_CONTAINERS if kind == "container" else _LAST_IMAGES)
            if last > stamp:
                return None
            if any(c and s.get(_PER_CONTAINER + 8 * (c - 1)) > stamp for c in counters):
                return None
            begin = s.data_at + slot * s.slot_bytes + 2 + len(key)
            return s.mem[begin:begin + length]
        finally:
            s.lock.release()

    # ---- what changes ----

    def changed(self, containers: bool, container_id: str | None, images: bool,
                unseen: bool = False, *, opens: bool = False, closes: bool = False) -> None:
        """A call was decided or answered that may change every container (``containers``),
        the one container ``container_id``, and/or every image; ``unseen``: dockerd may go
        on changing state without a call the plugin sees. ``opens``: its request phase was
        allowed, dockerd is about to act; ``closes``: its response phase, dockerd has acted.
        While a change is under way (opened, not yet closed) nothing it may change is kept:
        a call whose response phase never comes (another authorization plugin after this one
        refused it, a worker died) ends keeping what it may change until dockerd restarts."""
        s = self.shared
        if unseen:
            s.put(_UNSEEN, 1)
        if not (containers or container_id or images) or s.get(_OFF):
            return
        if not s.locked():
            s.put(_OFF, 1)  # a change that was not counted: remember nothing from now on
            return
        try:
            seq = s.get(_SEQ) + 1
            s.put(_SEQ, seq)
            if containers:
                s.put(_LAST_CONTAINERS, seq)
            if container_id:
                s.put(_PER_CONTAINER + 8 * _counter_of(container_id), seq)
            if images:
                s.put(_LAST_IMAGES, seq)
            step = 1 if opens else -1 if closes else 0
            if step:
                opened = [_OPEN_CONTAINERS] if containers else []
                opened += [_OPEN_PER_CONTAINER + 8 * _counter_of(container_id)] \
                    if container_id else []
                opened += [_OPEN_IMAGES] if images else []
                for offset in opened:
                    s.put(offset, max(0, s.get(offset) + step))
        finally:
            s.lock.release()

    def turn_off(self) -> None:
        """Remember nothing from now on, in every worker."""
        self.shared.put(_OFF, 1)

    def forget_all(self) -> None:
        """dockerd (re)activated the plugin: nothing read before counts, no change of its
        previous run is under way, and every worker asks again whether it is a swarm node."""
        s = self.shared
        self.changed(True, None, True)
        if s.locked():
            try:
                s.put(_OPEN_CONTAINERS, 0)
                s.put(_OPEN_IMAGES, 0)
                s.mem[_OPEN_PER_CONTAINER:_OPEN_PER_CONTAINER + 8 * CONTAINER_COUNTERS] = \
                    bytes(8 * CONTAINER_COUNTERS)
                s.put(_ACTIVATIONS, s.get(_ACTIVATIONS) + 1)
            finally:
                s.lock.release()
        else:
            s.put(_OFF, 1)

    # ---- reads ahead: a container just created, read while its client sends the next call ----

    def reading_ahead(self, kind: str, name: str) -> bool:
        """Mark a read ahead of ``kind`` ``name`` as in flight (for every worker); False: not
        now (too many in flight in this worker, or the lock was not had)."""
        if not self._ahead.acquire(blocking=False):
            return False
        key = _key(kind, name)
        if key in self._ahead_here or not self._mark_ahead(key, self.clock() + READ_AHEAD_SECONDS):
            self._ahead.release()
            return False
        self._ahead_here[key] = threading.Event()
        return True

    def read_ahead_done(self, kind: str, name: str) -> None:
        key = _key(kind, name)
        self._mark_ahead(key, 0.0)
        event = self._ahead_here.pop(key, None)
        if event is not None:
            event.set()
        self._ahead.release()

    def _mark_ahead(self, key: bytes, until: float) -> bool:
        s = self.shared
        if s.get(_OFF) or not s.locked():
            return False
        try:
            slot = zlib.crc32(key) % s.slots
            header = list(s.header(slot))
            if s.key_at(slot) != key:
                if not until:
                    return True  # the slot was taken since: nothing of ours to clear
                at = s.data_at + slot * s.slot_bytes
                _KEY_LEN.pack_into(s.mem, at, len(key))
                s.mem[at + 2:at + 2 + len(key)] = key
                header = [0] * 7
            header[4] = int(until * 1e9) if until else 0
            s.set_header(slot, *header)
            return True
        finally:
            s.lock.release()

    def wait_for_read_ahead(self, kind: str, name: str, seconds: float) -> None:
        """Wait (at most ``seconds``) while a read ahead of ``kind`` ``name`` is in flight in
        any worker."""
        key, s = _key(kind, name), self.shared
        here = self._ahead_here.get(key)
        if here is not None:  # this worker's own: no polling
            here.wait(max(0.0, seconds))
            return
        if s.get(_OFF) or s.get(_UNSEEN):
            return
        give_up = self.clock() + max(0.0, seconds)
        while self.clock() < give_up:
            if not s.locked():
                return
            try:
                slot = zlib.crc32(key) % s.slots
                in_flight = s.key_at(slot) == key and s.header(slot)[4] > self.clock() * 1e9
            finally:
                s.lock.release()
            if not in_flight:
                return
            time.sleep(0.0002)

    def _allowed(self, docker: Any, deadline: Any) -> bool:
        """Answers are used only from a dockerd known not to be a swarm node (swarm creates,
        removes and pulls for its tasks without API calls)."""
        now, activation = self.clock(), self.shared.get(_ACTIVATIONS)
        checked = self._swarm_checked
        if checked is not None and checked[0] > now and checked[2] == activation:
            return checked[1]
        try:
            info = docker.info(deadline)
        except Exception:  # noqa: BLE001 - not known: read the object instead
            return False
        swarm = info.get("Swarm") if isinstance(info, dict) else None
        inactive = isinstance(swarm, dict) and swarm.get("LocalNodeState") == "inactive"
        self._swarm_checked = (now + SWARM_INFO_SECONDS, inactive, activation)
        return inactive
