"""The decision log: one JSON line per decision, for auditors.

Rendered with structlog and written by one writer thread per process (``LogSink``) to stdout
or to a file opened for appending: each line is one write(2), a decision waits for its line
at most ``WRITE_TIMEOUT`` (then it is a deny, never a hang), a partial line is cut off, a
rotated file is followed. It never holds a secret: no request body, no Env values, no
credentials; the build arguments in a /build URI are redacted.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import queue
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

from authz import __version__ as PLUGIN_VERSION
from authz.decision import Decision
from authz.decoding import vocabulary
from authz.protocol import AuthzRequest
from authz.redact import redact_uri



def _serialize(event: dict[str, Any], **kwargs: Any) -> bytes:
    """One JSON line's bytes: orjson (UTF-8, a few µs), or, for what orjson refuses (a lone
    surrogate from a request's JSON, an integer beyond 64 bits), the standard library's
    ASCII-only encoding, so that no value ever makes a line unwritable."""
    try:
        return orjson.dumps(event, default=str)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(_finite(event), separators=(",", ":"), default=str,
                          ensure_ascii=True).encode()


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite as null, as orjson writes it (the
    standard library would write a bare NaN, which is not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# A decision waits at most this long for its log line to be written; then it is a deny.
WRITE_TIMEOUT = 2.0
QUEUE_LIMIT = 4096


class LogUnavailable(Exception):
    """The decision log could not take the line in time (blocked sink, full disk...)."""


class _Pending:
    __slots__ = ("line", "done", "error", "cancelled", "picked")

    def __init__(self, line: bytes):
        self.line, self.done, self.error = line, threading.Event(), None
        self.cancelled = self.picked = False


# Filesystems whose writes do not wait on anything but this host's own disk: a line is
# written by the deciding thread itself (a few microseconds). Anything else (stdout, a pipe,
# NFS, FUSE) goes through the writer thread, so that a sink that stops makes decisions deny
# within the bound instead of hanging.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay",
                               "zfs", "f2fs", "jfs", "bcachefs"})


def filesystem_of(path: str) -> str:
    """The filesystem type of the mount that holds ``path`` (from /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                        len(point) >= len(best):
                    best, fstype = point, right.split()[0]
    except OSError:
        return ""
    return fstype


class LogSink:
    """Where decision lines go: a file (opened O_APPEND, created 0600, reopened when it is
    rotated or removed) or stdout. A file on a local filesystem is written by the deciding
    thread under a lock; anything else by one writer thread per process, so that a sink that
    stops reading makes decisions wait at most ``WRITE_TIMEOUT`` and then deny, never hang.
    A line that is written only in part is cut off again (a file), so that it never tears
    the next one."""

    def __init__(self, path: Path | None, timeout: float = WRITE_TIMEOUT, fd: int | None = None):
        self.path = path
        self.timeout = timeout
        # (fd, a regular file, its inode, its device), as opened: one stat(2) per line, not three
        self._opened: tuple[int, bool, int, int] | None = None
        if fd is not None:
            self._fd = fd
        else:
            self._fd = self._open() if path is not None else sys.stdout.fileno()
        self._lock = threading.Lock()
        self._direct = fd is None and path is not None and self._local(self._fd)
        self._queue: queue.Queue[_Pending] = queue.Queue(QUEUE_LIMIT)
        self._writer = threading.Thread(target=self._run, name="pyauthz-log", daemon=True)
        self._writer.start()
        self._last_complaint = 0.0

    def _open(self) -> int:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK for the open only: a FIFO with no reader fails (ENXIO) instead of
        # blocking the writer for good; writes then block, bounded by the decision's wait.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o600)
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o007:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o770)  # never world-readable
        self._opened = (fd, stat.S_ISREG(st.st_mode), st.st_ino, st.st_dev)
        return fd

    def _local(self, fd: int) -> bool:
        return (stat.S_ISREG(os.fstat(fd).st_mode) and self.path is not None
                and filesystem_of(str(self.path)) in LOCAL_FILESYSTEMS)

    def write(self, line: bytes) -> None:
        """Write one line, or raise LogUnavailable within the timeout."""
        if self._direct:
            if not self._lock.acquire(timeout=self.timeout):
                raise LogUnavailable(f"the decision log took more than {self.timeout:g}s")
            try:
                old = self._fd
                self._follow_rotation()
                if self._fd == old or self._local(self._fd):
                    self._write(line, rotated=True)
                    return
                self._direct = False  # rotated onto something that may block: hand off
            except OSError as exc:
                error = f"cannot write the decision log: {exc.strerror or exc}"
                self._complain(error)
                raise LogUnavailable(error) from None
            finally:
                self._lock.release()
        item = _Pending(line)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise LogUnavailable("the decision log is not keeping up") from None
        if not item.done.wait(self.timeout):
            item.cancelled = True  # the writer drops it: this decision is answered deny
            if item.picked:
                # The writer is already writing it (to a sink that stalled): when it lands,
                # this line follows it and says the decision was answered deny after all.
                self._void(item.line)
            raise LogUnavailable(f"the decision log took more than {self.timeout:g}s")
        if item.error is not None:
            raise LogUnavailable(item.error)

    def _void(self, line: bytes) -> None:
        try:
            decision_id = json.loads(line).get("decision_id")
        except (ValueError, AttributeError):
            decision_id = None
        void = json.dumps({"event": "decision-void", "decision_id": decision_id, "allow": False,
                           "reason": f"its line took more than {self.timeout:g}s to write; "
                                     "the call was answered deny"}).encode() + b"\n"
        try:
            self._queue.put_nowait(_Pending(void))
        except queue.Full:
            pass

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item.cancelled:
                continue
            item.picked = True
            try:
                self._write(item.line)
            except OSError as exc:
                item.error = f"cannot write the decision log: {exc.strerror or exc}"
                self._complain(item.error)
            item.done.set()

    def _write(self, line: bytes, rotated: bool = False) -> None:
        if self.path is not None and not rotated:
            self._follow_rotation()
        fd = self._fd
        opened = self._opened
        regular = opened[1] if opened is not None and opened[0] == fd \
            else stat.S_ISREG(os.fstat(fd).st_mode)
        if not regular:
            done = 0
            while done < len(line):
                done += os.write(fd, line[done:])
            return
        # Every worker appends to the same file: under the lock, the end before this line is
        # where a partial line is cut back to, and no other worker's line can be after it.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            done = 0
            try:
                while done < len(line):
                    done += os.write(fd, line[done:])
            except OSError:
                if done:
                    os.ftruncate(fd, start)  # no torn line for the next one to follow
                raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _follow_rotation(self) -> None:
        """logrotate (create) renames the file and makes a new one: follow the path."""
        try:
            current = os.stat(self.path)
            opened = self._opened
            if opened is not None and opened[0] == self._fd:
                mine = opened[2:]
            else:
                st = os.fstat(self._fd)
                mine = (st.st_ino, st.st_dev)
            if (current.st_ino, current.st_dev) == mine:
                return
        except FileNotFoundError:
            pass
        old, self._fd = self._fd, self._open()
        os.close(old)

    def _complain(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_complaint > 10:
            self._last_complaint = now
            print(f"pyauthz: {text}; denying until it can be written", file=sys.stderr, flush=True)


class _SinkLogger:
    """structlog's end of the chain: one rendered line to the sink. (Not structlog's
    BytesLogger, whose lock would make each waiting decision queue behind a blocked one.)"""

    def __init__(self, sink: LogSink):
        self.sink = sink

    def msg(self, message: bytes) -> None:
        self.sink.write(message + b"\n")

    info = msg


_second = (-1, "")


def _utc_now() -> str:
    """The time as ISO 8601 UTC to the microsecond, ``2026-11-30T03:01:02.123456Z`` (the
    date and time made once a second)."""
    global _second
    now = time.time_ns() // 1000
    sec, micro = divmod(now, 1_000_000)
    cached = _second  # one read: another thread may replace it meanwhile
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{micro:06d}Z"


def _stamp(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the line's ``time``."""
    event["time"] = _utc_now()
    return event


def make_logger(log_file: Path | None) -> Any:
    sink = LogSink(log_file)
    return structlog.wrap_logger(
        _SinkLogger(sink),
        processors=[
            _stamp,
            structlog.processors.JSONRenderer(serializer=_serialize),
        ],
        cache_logger_on_first_use=True,
    )


# The replayable record of one decision (``all_facts``) is bounded: a request with hundreds of
# binds logs them all, but past this many bytes of facts the rest are counted, not written
# (``all_facts_omitted``), and replay reports the line as incomplete instead of guessing.
ALL_FACTS_BYTES = 256 * 1024
_FACT_OVERHEAD = 64  # the keys, quotes and commas of one logged fact, and "stored":true


def _logged_fact(fact, stored: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": fact.kind, "value": fact.value, "where": fact.where}
    if fact.detail:
        entry["detail"] = fact.detail
    if stored:
        entry["stored"] = True
    return entry


def decided_on(decision: Decision) -> dict[str, Any]:
    """What the policy was asked about, as ``pyauthz policy replay`` reads it back: every
    fact (``stored``: from the acted-on containers' stored configuration, re-judged as at
    create) and the image ``images:`` patterns were matched against. Empty when the request
    was refused before the policy was consulted."""
    request = decision.request
    if request is None:
        return {}
    stored = {id(f) for f in request.stored}
    entries = [_logged_fact(f, id(f) in stored) for f in request.facts]
    out: dict[str, Any] = {"all_facts": entries, "policy_image": request.image}
    # JSON with ensure_ascii writes a character in at most 12 bytes (a surrogate pair).
    rough = sum(len(f.kind) + len(f.value) + len(f.where) + len(f.detail) + _FACT_OVERHEAD
                for f in request.facts)
    if rough * 12 > ALL_FACTS_BYTES and len(_serialize(entries)) > ALL_FACTS_BYTES:
        used, kept = 0, 0
        for entry in entries:
            used += len(_serialize(entry)) + 1
            if used > ALL_FACTS_BYTES:
                break
            kept += 1
        if kept < len(entries):
            out["all_facts"] = entries[:kept]
            out["all_facts_omitted"] = len(entries) - kept
    return out


def decision_event(call: AuthzRequest, decision: Decision, revision: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "decision_id": decision.id,
        "phase": decision.phase,
        "user": call.user or None,
        "auth_method": call.auth_method or None,
        # Who the policy judged (authz/identity.py; Identity.from_log reads it back): the
        # certificate's name and fields, or anonymous; null for a call that could not be read.
        "identity": call.identity.as_log() if call.identity is not None else None,
        "method": call.method,
        "endpoint": decision.endpoint,
        "path": decision.target.path if decision.target else None,
        "api_version": decision.target.version if decision.target else None,
        "uri": redact_uri(call.uri)[:2048],
        "allow": decision.allow,
        "facts": [{"kind": f.kind, "value": f.value, "where": f.where} for f in decision.facts],
        "violations": [v.as_log() for v in decision.violations],
        "policy_revision": revision,
        "plugin_version": PLUGIN_VERSION,  # the pyauthz-docker release that decided
        # enforce | audit (rules.yaml mode:); null on a call that could not be read
        "mode": decision.mode,
        "duration_ms": round(decision.duration_ms, 3),
    }
    event["fact_vocabulary"] = vocabulary.current()
    event.update(decided_on(decision))
    if decision.audits:
        event["audit_violations"] = [v.as_log() for v in decision.audits]
    if decision.exceptions_applied:  # published as "exemptions" (docs/decision-log.md)
        event["exemptions"] = [e.as_log() for e in decision.exceptions_applied]
    if decision.images:
        event["images"] = decision.images
    if call.response_status is not None:
        event["status"] = call.response_status
    return event
