"""ImageTrust: the decisions the pipeline asks for -- may this image be pulled, may it run.

- ``check_pull(ref)``: ``POST /images/create?fromImage=...``; ``check_service(ref)``:
  service create/update. The registry path (``remote.py``): resolve a tag to a digest at
  the registry and require a valid signature on that digest.
- ``check_run(ref)``: container create and start. The local path (``local.py``): the
  local image dockerd resolves the reference to must be a signed registry manifest.

Every check ends within the decision's deadline: the caller's (what is left of its budget),
or else its own of the policy's ``timeouts.decision`` (4 s by default). Registry and dockerd
calls are bounded by it, and every check that asks a registry runs on a small pool so that
the caller's wait is bounded even if a socket misbehaves (a run check the policy or the
cache decides is judged on the caller's thread: it only reads dockerd, as decoding does).
Anything unexpected denies.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from authz.deadline import Deadline, DeadlineExceeded
from authz.moby.client import DockerClient
from authz.trust.cache import TTLCache
from authz.trust.credentials import credentials_mode_warning
from authz.trust.local import LocalImageTrust, NeedsRegistry
from authz.trust.policy import ACCEPT, TrustPolicy
from authz.trust.policyfile import load_policy
from authz.trust.registry import RegistryClient
from authz.trust.remote import RegistryTrust, Verified
from authz.trust.result import TrustResult, display_reference

log = logging.getLogger(__name__)

POOL_WORKERS = 32
POOL_GRACE_SECONDS = 0.25   # how much longer than the deadline the caller waits for the pool


class ImageTrust:
    """Image trust for one loaded trust.yaml: the checks, bounded, on a small pool."""

    def __init__(self, policy: TrustPolicy, docker: DockerClient | None, *,
                 credentials: dict | None = None, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.docker = docker
        if credentials is None:
            credentials = policy.credentials  # read once, when trust.yaml was loaded
        cache: TTLCache[Verified] = TTLCache(policy.cache.ttl_seconds, policy.cache.max_entries,
                                             clock=clock)
        self._remote = RegistryTrust(
            policy, RegistryClient(policy.registry, credentials, policy.timeouts), cache)
        self._local = LocalImageTrust(policy, docker, self._remote, cache)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_pid: int | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def load(cls, policy_dir: Path, docker: DockerClient | None) -> ImageTrust:
        """Read ``policy_dir/trust.yaml`` (and the key/CA/credentials files it names) for a
        plugin reading dockerd with ``docker`` (None: no dockerd); raises TrustPolicyError
        with ``file:line`` on any problem."""
        return cls(load_policy(Path(policy_dir)), docker)

    @property
    def decision_seconds(self) -> float:
        """The policy's ``timeouts.decision``: the budget a decision with trust checks needs."""
        return self.policy.timeouts.decision

    # ------------------------------------------------------------------ startup
    def startup_warnings(self) -> list[str]:
        """What an operator should know when the plugin starts with this policy."""
        policy = self.policy
        out = []
        if not policy.keys:
            out.append(f"image trust: no trusted key configured: every image will be denied "
                       f"(except the exceptions); add a key under {policy.where_keys}")
        for req in policy.rules:
            if req.action == ACCEPT:
                out.append(f"image trust: {req.label} accepts unsigned images: {req.reason}")
        for host, settings in sorted(policy.registries.items()):
            if settings.insecure:
                out.append(f"image trust: registry {host} is reached over plain HTTP "
                           f"(insecure: true at {settings.source})")
        if policy.credentials_file:
            warning = credentials_mode_warning(policy.credentials_file)
            if warning:
                out.append(f"image trust: {warning}")
        if self.docker is None:
            out.append("image trust: no docker host: container create is denied for every "
                       "image that needs a signature")
        return out

    # ------------------------------------------------------------------ the checks
    def check_pull(self, reference: str, deadline: Deadline | None = None) -> TrustResult:
        """``POST /images/create?fromImage=`` (tag or digest joined); a bare name pulls
        every tag and is only allowed where no signature is required."""
        return self._bounded(reference, deadline,
                             lambda left: self._remote.check(reference, left, all_tags=True))

    def check_service(self, reference: str, deadline: Deadline | None = None) -> TrustResult:
        """Service create/update: the image nodes will pull (bare name = ``:latest``)."""
        return self._bounded(reference, deadline,
                             lambda left: self._remote.check(reference, left, all_tags=False))

    def check_run(self, reference: str, deadline: Deadline | None = None) -> TrustResult:
        """Container create (or start): verify the local image dockerd resolves
        ``reference`` to (the create's ``Image`` string exactly, or an image id). With the
        decision's reads as ``deadline`` (``authz.moby.reads.DecisionReads``), an image the
        decision has read already is not read again.

        Judged on the calling thread while no registry must be asked (the policy decides by
        name, or the signature was verified within the cache's TTL: dockerd is read through
        the decision's reads, bounded by its deadline, as decoding reads it); else the whole
        check is made again on the pool."""
        if deadline is None:
            deadline = Deadline(self.policy.timeouts.decision)
        try:
            return _guarded(reference, lambda: self._local.check(reference, deadline, offline=True))
        except NeedsRegistry:
            return self._bounded(reference, deadline,
                                 lambda left: self._local.check(reference, left))

    # ------------------------------------------------------------------ bounding
    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The pool, made anew in a forked worker (threads do not survive a fork)."""
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=POOL_WORKERS, thread_name_prefix="pyauthz-trust")
                self._pool_pid = os.getpid()
            return self._pool

    def _bounded(self, reference: str, deadline: Deadline | None,
                 check: Callable[[Deadline], TrustResult]) -> TrustResult:
        """Run ``check`` on the pool within ``deadline`` (or a new one); deny on anything else."""
        if deadline is None:
            deadline = Deadline(self.policy.timeouts.decision)

        future = self._executor().submit(_guarded, reference, lambda: check(deadline))
        try:
            return future.result(timeout=max(deadline.remaining(), 0.0) + POOL_GRACE_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return _error(reference, f"no decision within the {deadline.total:g}s deadline")


def _guarded(reference: str, check: Callable[[], TrustResult]) -> TrustResult:
    """The check's result; a deadline reached or an exception (but ``NeedsRegistry``, which
    the caller handles) is a denial."""
    try:
        return check()
    except NeedsRegistry:
        raise
    except DeadlineExceeded as exc:
        return _error(reference, str(exc))
    except Exception as exc:
        log.exception("image trust check failed")
        return _error(reference, f"internal error ({type(exc).__name__}: {exc})")


def _error(reference: str, why: str) -> TrustResult:
    """Denied: the check did not finish (deadline, internal error)."""
    return TrustResult.error(display_reference(reference), found=why,
                             fix="retry; if it persists, check that the registry and dockerd "
                                 "answer quickly (see timeouts: in trust.yaml)")
