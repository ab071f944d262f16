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


# Every fact kind the decoder reports, and what its value is. A rule whose ``fact:`` names
# no kind here would never fire: the policy loader refuses it (docs/policy.md lists them).
FACT_KINDS: dict[str, str] = {
    "endpoint": "the canonical endpoint (container.create, image.pull, unknown.write...)",
    "privileged": "true: --privileged on create, start (API < 1.24), exec",
    "namespace.network": "host, or container (joins another container's)",
    "namespace.pid": "host, or container",
    "namespace.ipc": "host, or container",
    "namespace.uts": "host, or container",
    "namespace.userns": "host, or container",
    "namespace.cgroup": "host, or container",
    "capability": "upper case without CAP_: SYS_ADMIN, ALL",
    "device": "a host device path, cgroup-rule:RULE, request:DRIVER",
    "host-path": "a host path as the kernel opens it, and its symlink-resolved form",
    "volume-type": "the filesystem type of a local volume that mounts something of the host",
    "log-socket": "a host unix socket a log driver writes the container's output to",
    "log-driver": "a log driver that is not built into dockerd (a plugin)",
    "network-driver": "a network driver (or ipam:NAME) that is not built into dockerd (a plugin)",
    "host-interface": "a host interface a network takes over or attaches to (bridge name, parent)",
    "service-runtime": "a swarm service runtime other than container (plugin)",
    "service-rollback": "previous (rollback=previous), on-failure (UpdateConfig.FailureAction)",
    "cgroup-parent": "the cgroup a container is put under (--cgroup-parent)",
    "volume-driver": "a volume driver other than local (a plugin decides what is mounted)",
    "mount-propagation": "shared, rshared, slave, rslave",
    "mount-type": "a --mount type dockerd does not know",
    "seccomp": "unconfined, or custom:sha256:DIGEST",
    "apparmor": "unconfined, or the profile name",
    "selinux": "disable, type:T, level:L...",
    "masked-paths": "reduced, unconfined",
    "sysctl": "the name, '.'-separated",
    "plugin.privilege": "network=host, mount=/, capabilities=CAP_SYS_ADMIN, unknown",
    "plugin.remote": "the plugin image installed or upgraded to",
    "plugin.interface": "an interface the target plugin implements: docker.authz/1.0...",
    "target": "id, name, prefix, missing: how a request names the container or plugin it acts on",
    "image.write": "the reference an image is written under",
    "restart-policy": "always, unless-stopped, on-failure: dockerd restarts the container itself",
    "auto-restart": "the restart policy of a container that also mounts host paths",
    "checkpoint": "create, restore, remove, list: CRIU checkpoints (experimental dockerd)",
    "image": "the normalized reference a request runs or pulls",
}


def known_kind(kind: str) -> bool:
    return kind in FACT_KINDS


_NAMESPACE_VALUES = ("host", "container")
_TARGET_VALUES = ("id", "name", "prefix", "missing")


def value_problem(kind: str, pattern: str, op: str = "glob") -> str | None:
    """Why a rule's value pattern can never match a ``kind`` fact as the decoder writes it
    (a policy that silently never fires), or None."""
    import fnmatch

    if pattern == "*" or op != "glob":
        return None
    if kind == "host-path":
        return "host paths are matched with `paths:` (overlap) or `outside:` (roots), not values"
    if kind == "capability":
        if pattern.upper().startswith("CAP_"):
            return "capabilities are written without CAP_ (SYS_ADMIN)"
        if pattern != pattern.upper():
            return "capabilities are written in upper case (SYS_ADMIN)"
    fixed = {"privileged": ("true",), "target": _TARGET_VALUES}.get(kind)
    if kind.startswith("namespace."):
        fixed = _NAMESPACE_VALUES
    if fixed is not None and not any(fnmatch.fnmatchcase(v, pattern) for v in fixed):
        return f"{kind} values are {', '.join(fixed)}"
    if kind == "seccomp" and not (pattern == "unconfined" or pattern.startswith("custom:")):
        return "seccomp values are unconfined or custom:sha256:DIGEST"
    return None
