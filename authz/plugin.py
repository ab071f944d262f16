"""The plugin without HTTP: dockerd's call in, the answer out, every decision logged.

``Plugin.handle(phase, raw)`` is the one fail-closed place: whatever goes wrong (a call that
cannot be read, a refused request, a bug, a decision log that cannot be written) is a deny
that says why, and nothing is ever answered as an allow by default. Flask only adapts it to
HTTP (``authz.app``); tests and the benchmark drive it directly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue

from authz import audit, metrics
from authz.deadline import Deadline
from authz.decision import Decision, decide, new_decision_id
from authz.decoding import Lookups, RequestRefused, decode, route_of, state_changes
from authz.decoding.lookups import DECISION_SECONDS
from authz.moby.client import DockerClient
from authz.moby.ids import is_full_id
from authz.moby.recall import MAX_READS_AHEAD, READ_AHEAD_SECONDS, Recall
from authz.identity import Identity
from authz.policy.engine import Policy
from authz.ownership import open_verified
from authz.policy.floor import SYSTEM_FLOOR, ProtectedPath, protected
from authz.reload import STATE_DIR
from authz.protocol import (REQUEST_PHASE, AuthzRequest, ProtocolError, answer,
                            parse_call)

log = logging.getLogger("pyauthz")


@dataclass
class PluginConfig:
    policy_dir: Path
    log_file: Path | None = None
    docker_host: str | None = "unix:///var/run/docker.sock"
    # Threads serving each worker. Decisions that wait on dockerd (whose reads come back
    # through this plugin) may hold at most a quarter of them (decoding/lookups.py).
    threads: int = 16
    # The socket the plugin serves (its directory is protected from binds, as are the
    # policy directory, the decision log's directory and dockerd's socket).
    socket_path: str | None = None


def own_paths(config: PluginConfig) -> tuple[ProtectedPath, ...]:
    """pyauthz's own files, which no bind may reach: a container that can write the
    policy, the log, the socket directory (to put its own socket there), or the code the
    plugin runs owns the plugin."""
    # The code it runs as root: this package and the Python environment it runs in.
    paths = [str(config.policy_dir.resolve()), os.path.dirname(os.path.abspath(__file__)),
             sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), str(STATE_DIR)]
    # Every directory Python imports from (site-packages, .pth additions, the directory
    # `python -m authz` was started in), existing or not. Not "/": no bind can write there
    # (the floor refuses binding "/"), and protecting it would refuse every host path.
    paths += [p for p in sys.path if p.startswith("/") and p != "/"]
    if config.log_file is not None:
        paths.append(str(config.log_file.resolve().parent))
    if config.socket_path:
        paths.append(os.path.dirname(os.path.abspath(config.socket_path)))
    if config.docker_host and config.docker_host.startswith("unix://"):
        paths.append(os.path.abspath(config.docker_host[len("unix://"):]))
    real = [os.path.realpath(p) for p in paths]
    return (protected(dict.fromkeys(paths + real), "pyauthz's own files, or dockerd's socket")
            + protected(_route(config.policy_dir), "on the way to pyauthz's policy directory",
                        inside_too=False))


def _route(directory: Path) -> list[str]:
    """Where the kernel goes to reach the policy directory as named: each symlink followed
    and each directory a ".." steps out of (authz.ownership), which a bind must not reach
    either: changing one would send the next reload elsewhere."""
    visited: list[str] = []
    try:
        os.close(open_verified(str(directory), directory=True, visited=visited))
    except OSError:
        pass  # such a policy does not load anyway
    return visited


def _canonical(path: str) -> str:
    """An absolute path in one spelling: no "//" prefix (POSIX keeps it), no "." or ".."."""
    return os.path.normpath("/" + os.path.abspath(path).lstrip("/"))


def trust_paths(trust) -> tuple[ProtectedPath, ...]:
    """The files image trust was loaded from (trust.yaml, keys, CA bundles, logins: as
    named, every symlink followed on the way, and where they are): a container that could
    write one (a bind of it, or of a directory holding it: the floor refuses whatever is,
    lies in or contains a protected path) would choose the keys images are checked against
    at the next reload, or read the registry logins. The entries themselves, not their
    directories: their siblings stay bindable."""
    if trust is None:
        return ()
    files = [_canonical(f) for f in getattr(trust.policy, "files", ())]
    paths = files + [os.path.realpath(f) for f in files]
    return protected(dict.fromkeys(paths), "a file image trust is loaded from, or on the way "
                                           "to one", inside_too=False)


def docker_client(docker_host: str | None) -> DockerClient | None:
    """The one dockerd client the plugin reads state and local images with."""
    return DockerClient(docker_host) if docker_host else None


TRUST_OFF = ("image trust is OFF: the policy directory has no trust.yaml, so no image "
             "signature is checked")


def served_revision(policy: Policy) -> str:
    """The revision serve names for ``policy`` (authz.reload.revision_in_force: with the
    bytes of the files its trust.yaml names), for the offline tools' messages; the
    directory's when trust.yaml does not load (serve would refuse it; lint says why)."""
    from authz.reload import revision_in_force

    try:
        return revision_in_force(policy.revision, load_trust(policy.directory, None))
    except Exception:  # noqa: BLE001 - the offline tools do not judge image trust
        return policy.revision


def load_trust(policy_dir: Path, docker: DockerClient | None):
    """Image trust, when the policy directory has a trust policy."""
    if not os.path.lexists(policy_dir / "trust.yaml"):
        # Only no entry at all means no image trust: a trust.yaml that is a dangling
        # symlink, or cannot be read, is an error (a load refused), never trust turned off.
        return None
    from authz.trust import ImageTrust

    return ImageTrust.load(policy_dir, docker)


class Plugin:
    """One worker's plugin: the policy, image trust and dockerd client it decides with."""

    def __init__(self, policy: Policy, trust=None, docker=None, *,
                 floor: tuple[ProtectedPath, ...] = SYSTEM_FLOOR, logger=None,
                 threads: int = 16):
        self.policy = policy
        self.trust = trust
        self.docker = docker
        self.floor = floor
        self.logger = logger if logger is not None else audit.make_logger(None)
        self.slots = threading.BoundedSemaphore(max(1, threads // 4))
        # Reads ahead take at most half the lookup slots (none with fewer than two): the
        # decisions that wait on dockerd always find the other half.
        self._ahead_limit = min(MAX_READS_AHEAD, max(1, threads // 4) // 2)
        self._ahead_slots = threading.BoundedSemaphore(max(1, self._ahead_limit))
        self.seconds = getattr(trust, "decision_seconds", None) or DECISION_SECONDS
        # dockerd's answers kept across decisions while no call could change them.
        self.recall = Recall()
        self._to_read: SimpleQueue[str] = SimpleQueue()  # containers to read ahead
        # The read-ahead threads (made when needed, at most one per read ahead in flight),
        # and how many of them wait for work.
        self._readers: list[threading.Thread] = []
        self._readers_idle = 0
        self._readers_lock = threading.Lock()

    @classmethod
    def build(cls, config: PluginConfig, bundle=None) -> "Plugin":
        """The plugin for ``config``, deciding with ``bundle`` (a ``reload.Bundle`` the
        serving master loaded and validated), or with the policy directory loaded here."""
        if bundle is not None:
            policy, trust, docker = bundle.policy, bundle.trust, bundle.docker
        else:  # in-process (the bench, tests): read as the offline tools read, by whoever
            # runs it; serve always passes the bundle its master loaded (load_bundle).
            from authz.reload import revision_in_force

            docker = docker_client(config.docker_host)
            policy, trust = Policy.load(config.policy_dir), load_trust(config.policy_dir, docker)
            policy.revision = revision_in_force(policy.revision, trust)
        return cls(policy, trust, docker,
                   floor=SYSTEM_FLOOR + own_paths(config) + trust_paths(trust),
                   logger=audit.make_logger(config.log_file), threads=config.threads)

    def warnings(self) -> list[str]:
        """What an operator should know at start."""
        out = list(self.policy.warnings)
        if self.policy.ruleset.mode == "audit":
            out.insert(0, "policy in AUDIT MODE (rules.yaml mode: audit): its rules and image "
                          "trust deny nothing, every would-be deny is only logged under "
                          "audit_violations; the built-in floor and request-* refusals still "
                          "deny")
        if self.docker is None:
            out.append("no docker host: container starts are not re-checked against their "
                       "stored configuration, nor service networks named by id")
        if self.trust is not None:
            out += self.trust.startup_warnings()
        else:
            out.append(TRUST_OFF)
        return out

    def handle(self, phase: str, raw: bytes) -> dict:
        """dockerd's call (the raw body of AuthZReq or AuthZRes) → the answer to send."""
        started = time.perf_counter()
        try:
            call = parse_call(raw, phase)
        except ProtocolError as exc:
            call = AuthzRequest(phase=phase)
            decision = Decision(id=new_decision_id(), phase=phase, allow=False)
            decision.refuse("protocol", str(exc), "Report this to the pyauthz maintainers.")
        else:
            decision = self.decide(call)
        revision = self.policy.revision
        refused = None
        try:
            self.logger.info("decision", **audit.decision_event(call, decision, revision))
        except audit.LogUnavailable as exc:
            # A decision that cannot be logged is not made: auditors must see every one.
            # (The sink reports the cause itself, at most every 10 s.)
            refused = answer(False, f"pyauthz: the decision log cannot be written ({exc}); denying")
        except Exception:  # noqa: BLE001 - whatever the fault, the decision is not made
            log.error("cannot write the decision log:\n%s", traceback.format_exc())
            refused = answer(False, "pyauthz: the decision log cannot be written; denying")
        self._note_changes(call, decision, allowed=decision.allow and refused is None)
        metrics.decided(decision, started, logged=refused is None)
        return refused or answer(decision.allow, decision.message(revision))

    def _note_changes(self, call: AuthzRequest, decision: Decision, allowed: bool) -> None:
        """Before dockerd has the answer (and so before it can act on the call): what the
        call may change of dockerd's state is no longer remembered (authz/moby/recall.py).
        A response phase closes the change its allowed request phase opened; one that
        cannot be read (dockerd resends a failed call with an empty body) closes nothing.
        If this fails, nothing is remembered from then on."""
        try:
            changes = state_changes(decision.endpoint, decision.target)
            self.recall.changed(*changes, opens=call.phase == REQUEST_PHASE and allowed,
                                closes=call.phase != REQUEST_PHASE and decision.target is not None)
            if decision.endpoint == "container.create" and call.response_status == 201:
                self._read_ahead(call.response_body)
        except Exception:  # noqa: BLE001 - never a reason to answer otherwise; only to forget
            log.error("cannot record what the call changes; remembering nothing from now "
                      "on:\n%s", traceback.format_exc())
            self.recall.turn_off()

    def _read_ahead(self, response_body: bytes | None) -> None:
        """A container was just created: read it now, while the client sends its attach and
        start (whose decisions need it), in the background; at most half the lookup slots at
        a time, and only with a free one (decisions that wait on dockerd come first)."""
        try:
            container_id = json.loads(response_body or b"{}").get("Id")
        except (ValueError, AttributeError, RecursionError):
            return
        if self.docker is None or not isinstance(container_id, str) or \
                not is_full_id(container_id):
            return
        if self._ahead_limit < 1 or not self._ahead_slots.acquire(blocking=False):
            return
        if not self.slots.acquire(blocking=False):
            self._ahead_slots.release()
            return
        try:
            marked = self.recall.reading_ahead("container", container_id)
        except BaseException:
            self._release_ahead()
            raise
        if not marked:
            self._release_ahead()
            return
        try:
            self._reader_for_one()
        except BaseException:  # noqa: BLE001 - no thread to be had: decisions read it themselves
            try:
                self.recall.read_ahead_done("container", container_id)
            finally:
                self._release_ahead()
            return
        self._to_read.put(container_id)

    def _release_ahead(self) -> None:
        self.slots.release()
        self._ahead_slots.release()

    def _reader_for_one(self) -> None:
        """A read-ahead thread free for one more container: one that waits, or a new one
        (at most MAX_READS_AHEAD, the most ever in flight: reads ahead run side by side)."""
        with self._readers_lock:
            self._readers = [t for t in self._readers if t.is_alive()]
            self._readers_idle = min(self._readers_idle, len(self._readers))
            if self._readers_idle > 0 or len(self._readers) >= MAX_READS_AHEAD:
                self._readers_idle -= 1 if self._readers_idle > 0 else 0
                return
            thread = threading.Thread(target=self._read_containers,
                                      name="pyauthz-read-ahead", daemon=True)
            thread.start()
            self._readers.append(thread)

    def _read_containers(self) -> None:
        """A read-ahead thread: one container after another, each holding the slot it was
        given."""
        while True:
            container_id = self._to_read.get()
            try:
                stamp = self.recall.stamp()
                answer = self.docker.inspect_container(container_id,
                                                       Deadline(READ_AHEAD_SECONDS))
                self.recall.keep("container", container_id, answer, stamp)
            except Exception:  # noqa: BLE001 - it only saves time; decisions read again
                pass
            finally:
                with self._readers_lock:  # counted free before a new read ahead can come
                    self._readers_idle += 1
                try:
                    self.recall.read_ahead_done("container", container_id)
                finally:
                    self._release_ahead()

    def decide(self, call: AuthzRequest) -> Decision:
        """The decision on one call; never raises (a failure is a deny that says why)."""
        started = time.perf_counter()
        decision = Decision(id=new_decision_id(), phase=call.phase, allow=False,
                            mode=self.policy.ruleset.mode)
        try:
            if call.phase == REQUEST_PHASE:
                self._decide_request(call, decision)
            else:
                # The response phase records what happened to an allowed request. It cannot
                # undo it (the container exists by now), so it allows.
                decision.target, decision.endpoint = route_of(call)
                decision.allow = True
        except RequestRefused as exc:
            if decision.target is None:  # refused while decoding: what it had found
                decision.target, decision.endpoint = exc.target, exc.endpoint
            decision.refuse(exc.rule, exc.found, exc.fix)
        except Exception as exc:  # noqa: BLE001 - fail closed, whatever it was
            decision = Decision(id=decision.id, phase=call.phase, allow=False,
                                mode=self.policy.ruleset.mode)
            decision.refuse("internal-error", f"{type(exc).__name__}: {str(exc)[:300]}",
                            "Report the decision id to the pyauthz maintainers.")
            log.error("decision %s failed:\n%s", decision.id, traceback.format_exc())
        decision.duration_ms = (time.perf_counter() - started) * 1000
        return decision

    def _decide_request(self, call: AuthzRequest, decision: Decision) -> None:
        """Decode (dockerd's state included), then decide, under one set of lookups."""
        with Lookups(self.docker, self.slots, self.seconds, recall=self.recall) as lookups:
            request = decode(call, lookups)
            # Who is asking: read from the client certificate (protocol.py), never from
            # User alone; no certificate is anonymous.
            decide(decision, request, call.identity or Identity.anonymous(), self.policy,
                   self.trust, lookups, self.floor)
