"""Safe policy reloads: the master loads and validates, workers only ever get a good policy.

``pyauthz serve`` loads the policy directory in the gunicorn master (``PolicyHolder``); workers
are forked with it in memory and never read the directory themselves. SIGHUP (or
``pyauthz reload``) makes the master load the directory again *before* any worker is
replaced: a policy that does not load, or a directory that changes while it is read (an
editor's rename, a git checkout), leaves the running revision deciding. Each reload's outcome
is one log line and is written to a small state file beside the pid file, which
``pyauthz reload`` reads to report the revision in force.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.ownership import as_served, unsafe_ancestor
from authz.policy.engine import Policy, policy_revision

STATE_DIR = Path("/run/pyauthz")
SETTLE_SECONDS = 0.25
LOAD_ATTEMPTS = 3


@dataclass(frozen=True)
class Bundle:
    """One loaded policy directory: the rules and, when trust.yaml exists, image trust."""

    policy: Policy
    trust: Any
    docker: Any          # the dockerd client trust and state reads share (None: no reads)


class UnstablePolicy(Exception):
    """The policy directory changed while it was read."""


# A policy directory holds a handful of files; walking more would only slow a reload.
MAX_POLICY_ENTRIES = 10_000


class OpenPolicy(Exception):
    """Any local user could rewrite the policy root enforces."""


def refuse_open_policy(policy_dir: Path) -> None:
    """Refuse a policy someone other than root could rewrite (like sshd's StrictModes): a
    file or directory in it (symlinked ones followed) not root's or writable by every user,
    or a directory above it that is not root's or is writable by others without the sticky
    bit."""
    root = os.path.realpath(policy_dir)
    why = unsafe_ancestor(os.path.join(root, "x"))
    if why is not None:
        raise OpenPolicy(f"the policy {policy_dir} can be replaced by others: {why}")
    seen: set[tuple[int, int]] = set()
    count = 0

    def unreadable(exc: OSError) -> None:
        raise OpenPolicy(f"{exc.filename} cannot be checked: {exc.strerror or exc} (serve "
                         "checks every entry; run lint as root to see what it sees)")

    for directory, dirs, files in os.walk(root, followlinks=True, onerror=unreadable):
        for name in [""] + dirs + files:
            path = os.path.join(directory, name) if name else directory
            try:
                info = os.stat(path)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR) and \
                        os.path.islink(path):
                    # A symlink to nothing (or that loops): what it names can appear later.
                    fix = ("restore what it points to (without trust.yaml, image trust is "
                           "off)" if name == "trust.yaml" and directory == root
                           else "point it at the real file, or remove it")
                    try:
                        target = repr(os.readlink(path))
                    except OSError:
                        target = "changed meanwhile"
                    raise OpenPolicy(f"{path} is a symbolic link that leads nowhere ("
                                     f"{target}: {exc.strerror}): whoever can "
                                     f"create what it names could add to the policy; "
                                     f"{fix}") from None
                continue  # the loader reports what cannot be read
            count += 1
            if count > MAX_POLICY_ENTRIES:
                raise OpenPolicy(f"{policy_dir} holds more than {MAX_POLICY_ENTRIES} entries")
            if info.st_mode & 0o002:
                raise OpenPolicy(f"{path} is writable by every user (mode "
                                 f"{info.st_mode & 0o7777:04o}): anyone could rewrite the "
                                 "policy; chmod o-w it")
            if info.st_uid != 0:
                raise OpenPolicy(f"{path} belongs to uid {info.st_uid}, not root: its owner "
                                 "could rewrite the policy; chown root it")
        # Each directory once (a symlink loop ends here).
        keep = []
        for name in dirs:
            try:
                info = os.stat(os.path.join(directory, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                keep.append(name)
        dirs[:] = keep


def revision_in_force(directory_revision: str, trust) -> str:
    """The revision a decision names: the policy directory's, and when trust.yaml names
    files (keys, CA bundles, logins: maybe outside the directory, whose revision would not
    change with them), the bytes of those as read too. A key rewritten outside the policy
    changes the revision, as it changes what is trusted."""
    digests = getattr(getattr(trust, "policy", None), "digests", ())
    if not digests:
        return directory_revision
    digest = hashlib.sha256(directory_revision.encode() + b"\0")
    for _, sha in digests:  # in the order read: trust.yaml's bytes say which file is which
        digest.update(f"{sha}\0".encode())
    return digest.hexdigest()


def load_bundle(policy_dir: Path, docker_host: str | None,
                settle: float = SETTLE_SECONDS) -> Bundle:
    """Load the directory, and only if its contents stayed the same from before the read
    until ``settle`` seconds after it: a half-written directory is never served."""
    from authz.plugin import docker_client, load_trust

    with as_served():  # root's files alone, whoever runs this (serve as another user too)
        return _load_bundle(policy_dir, docker_host, settle, docker_client, load_trust)


def _load_bundle(policy_dir: Path, docker_host: str | None, settle: float, docker_client,
                 load_trust) -> Bundle:
    refuse_open_policy(policy_dir)
    docker = docker_client(docker_host)
    last = None
    for _ in range(LOAD_ATTEMPTS):
        before = policy_revision(policy_dir)
        policy = Policy.load(policy_dir)
        trust = load_trust(policy_dir, docker)
        time.sleep(settle)
        after = policy_revision(policy_dir)
        if before == after == policy.revision:
            policy.revision = revision_in_force(policy.revision, trust)
            return Bundle(policy, trust, docker)
        last = (before[:12], after[:12])
    raise UnstablePolicy(f"{policy_dir} changed while it was read (revisions {last[0]} and "
                         f"{last[1]}); finish writing it, then reload again")


def state_path(socket_path: str) -> Path:
    return STATE_DIR / (Path(socket_path).name.removesuffix(".sock") + ".state.json")


def pid_path(socket_path: str) -> Path:
    return STATE_DIR / (Path(socket_path).name.removesuffix(".sock") + ".pid")


class PolicyHolder:
    """The master's current policy, replaced only by one that loads."""

    def __init__(self, policy_dir: Path, docker_host: str | None, socket_path: str):
        # Absolute (reload may run elsewhere), never collapsed on paper: "link/.." is where
        # the kernel takes it, after the symlink.
        self.policy_dir = Path(policy_dir).absolute()
        self.docker_host = docker_host
        self.socket_path = socket_path
        self.bundle = load_bundle(policy_dir, docker_host, settle=0)
        self.reloads = 0
        self.failures = 0
        self.last_error = ""
        self.write_state()

    def reload(self) -> bool:
        """Load the directory again; keep the running policy when that fails."""
        self.reloads += 1
        try:
            bundle = load_bundle(self.policy_dir, self.docker_host)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the running policy
            self.failures += 1
            self.last_error = " ".join(str(exc).split())[:2000]
            print(f"pyauthz: reload failed, revision {self.bundle.policy.revision[:12]} keeps "
                  f"deciding: {self.last_error}", file=sys.stderr, flush=True)
            self.write_state()
            return False
        self.bundle = bundle
        self.last_error = ""
        print(f"pyauthz: reloaded {self.policy_dir}: revision {bundle.policy.revision[:12]}",
              file=sys.stderr, flush=True)
        if bundle.trust is None:  # as at start: a reload can turn it off (trust.yaml removed)
            from authz.plugin import TRUST_OFF

            print(f"pyauthz: warning: {TRUST_OFF}", file=sys.stderr, flush=True)
        self.write_state()
        return True

    def state(self) -> dict:
        return {"pid": os.getpid(), "started": process_identity(os.getpid()),
                "socket": os.path.abspath(self.socket_path),
                "policy_dir": str(self.policy_dir),
                "revision": self.bundle.policy.revision, "reloads": self.reloads,
                "failed_reloads": self.failures, "last_error": self.last_error,
                "time": time.time()}

    def write_state(self) -> None:
        """Best effort: the state file only informs ``pyauthz reload``."""
        from authz import metrics

        metrics.note_policy(self.state())  # the revision and reload results, for /metrics
        path = state_path(self.socket_path)
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state()))
            os.replace(tmp, path)
        except OSError as exc:
            print(f"pyauthz: cannot write {path}: {exc.strerror}", file=sys.stderr, flush=True)


def process_identity(pid: int) -> str | None:
    """Which process ``pid`` is, beyond its number (a pid is reused once its process exits):
    the boot and the time after boot it started (``/proc/PID/stat`` field 22, clock ticks), or
    None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        # The command name (field 2) is in parentheses and may hold anything: count from
        # the last ')'; field 3 is the first after it.
        start_ticks = int(stat_line[stat_line.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return f"{boot}:{start_ticks}"


def read_state(socket_path: str) -> dict | None:
    try:
        return json.loads(state_path(socket_path).read_text())
    except (OSError, ValueError):
        return None
