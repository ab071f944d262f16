"""Facts that depend on dockerd's current state, looked up over its API.

Some requests name things whose meaning is in dockerd, not in the request:

- ``POST /containers/{id}/start`` (and restart) runs a container created earlier. Its stored
  HostConfig is checked again exactly as at create: bind sources are resolved anew (a
  symlink swapped since the create is seen) and containers created before this policy, or by
  another route, are caught. Its image id goes to image trust.
- ``--volumes-from NAME`` takes over another container's mounts, and a named volume mounts
  what its options said when it was created.
- A swarm service may name the host network by id or id prefix, not only as ``host``.

Every lookup is a read through dockerd (and so through this plugin, served by another
thread), bounded in time; a lookup that fails refuses the request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from authz.decoding import checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.decoding.gojson import GoObject, loads
from authz.dockerd import DockerClient, DockerError
from authz.deadline import Deadline, DeadlineExceeded

# All of one decision's lookups share this budget (dockerd waits on the plugin without a
# timeout of its own).
LOOKUP_SECONDS = 3.0


@dataclass(frozen=True)
class StartedContainer:
    facts: list[Fact]
    image_id: str
    image: str          # the image name it was created from (Config.Image)


_FULL_ID = re.compile(r"[0-9a-f]{64}")


def _target_fact(name: str, info: dict) -> Fact:
    """How a start names its container. dockerd looks the name up again after the plugin
    decides (full id, then exact name, then id prefix): only a full id cannot be made to
    point at another container in between (by a rename, or a create with that name)."""
    if _FULL_ID.fullmatch(name) and info.get("Id") == name:
        value = "id"
    elif info.get("Name") == "/" + name:
        value = "name"
    else:
        value = "prefix"
    return Fact("start-target", value, "path", f"{name[:100]!r} is container {str(info.get('Id'))[:12]}")


def _unique(facts: list[Fact]) -> list[Fact]:
    seen: set[tuple[str, str]] = set()
    out = []
    for fact in facts:
        if (fact.kind, fact.value) not in seen:
            seen.add((fact.kind, fact.value))
            out.append(fact)
    return out


def _unavailable(what: str, exc: Exception) -> RequestRefused:
    return RequestRefused(
        "request-state",
        f"{what} could not be read from dockerd: {exc}",
        "Retry; check that dockerd answers and that the policy allows the plugin's reads "
        "(GET /containers/*/json, /networks/*, /volumes/*).",
    )


class LiveState:
    """dockerd's state as one decision sees it: every lookup shares one deadline."""

    def __init__(self, docker: DockerClient, deadline: Deadline | None = None):
        self.docker = docker
        self.deadline = deadline

    def for_decision(self) -> "LiveState":
        return LiveState(self.docker, self._budget())

    def _budget(self) -> Deadline:
        return self.deadline or Deadline(LOOKUP_SECONDS)

    def _container(self, name: str) -> tuple[dict, GoObject] | None:
        """The container's inspect JSON and its stored HostConfig (read like a request's)."""
        try:
            info = self.docker.inspect_container(name, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"container {name[:100]!r}", exc) from None
        if info is None:
            return None  # dockerd refuses the request itself
        stored = info.get("HostConfig")
        return info, loads(json.dumps(stored if isinstance(stored, dict) else {}).encode())

    def started_container(self, name: str) -> StartedContainer:
        """The facts of starting container ``name``: how the request names it, its stored
        HostConfig, and the mounts dockerd will make (including those of --volumes-from and
        of named volumes, whose options are looked up)."""
        found = self._container(name)
        if found is None:
            # dockerd answers 404 now, but a container may take the name before it looks.
            return StartedContainer([Fact("start-target", "missing", "path",
                                          f"no container {name[:100]!r}")], "", "")
        info, doc = found
        facts = [_target_fact(name, info)]
        # dockerd stores its own defaults; the cgroup namespace default is "host" on cgroup v1
        # hosts (or by daemon configuration), so a stored "host" says nothing about what was
        # asked: the cgroup namespace is judged at create only.
        facts += [f for f in checks.run_checks(checks.HOST_CONFIG_CHECKS, doc, "container.HostConfig")
                  if f.kind != "namespace.cgroup"]
        facts += self._mount_facts(info.get("Mounts"))
        config = info.get("Config")
        image = config.get("Image") if isinstance(config, dict) else None
        return StartedContainer(_unique(facts), info["Image"], image if isinstance(image, str) else "")

    def _mount_facts(self, mounts) -> list[Fact]:
        """The container's mounts as dockerd lists them: bind sources resolved anew, local
        volumes by their options."""
        facts: list[Fact] = []
        for i, mount in enumerate(mounts if isinstance(mounts, list) else []):
            if not isinstance(mount, dict):
                continue
            at = f"container.Mounts[{i}]"
            kind, source = mount.get("Type"), mount.get("Source")
            if kind == "bind" and isinstance(source, str) and source:
                facts += checks.host_path_facts("host-path", source, at)
                propagation = mount.get("Propagation")
                if propagation in ("shared", "rshared"):
                    facts.append(Fact("mount-propagation", propagation, at))
            elif kind == "volume" and isinstance(mount.get("Name"), str):
                facts += self.volume_facts(mount["Name"], at)
        return facts

    def volume_facts(self, name: str, where: str) -> list[Fact]:
        """A named volume: what its ``local`` driver options mount (set when it was created,
        perhaps before this policy)."""
        try:
            info = self.docker.inspect_volume(name, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"volume {name[:100]!r}", exc) from None
        if info is None:
            return []  # dockerd creates it, plain, at the create
        options = info.get("Options")
        driver = info.get("Driver")
        return [Fact(f.kind, f.value, f.where, f"volume {name!r}") for f in checks.local_volume_facts(
            driver if isinstance(driver, str) else "", options if isinstance(options, dict) else {},
            where)]

    def volumes_from_facts(self, name: str, where: str) -> list[Fact]:
        """``--volumes-from NAME`` takes over NAME's mounts: its binds and volumes count as
        this container's (checked with the policy in force now)."""
        found = self._container(name)
        if found is None:
            return []
        facts = checks.run_checks((checks.check_binds, checks.check_mounts), found[1], where)
        return [Fact(f.kind, f.value, f.where, f"from {name!r}") for f in facts]

    def network_facts(self, target: str, where: str) -> list[Fact]:
        try:
            info = self.docker.inspect_network(target, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"network {target[:100]!r}", exc) from None
        if info is None:
            return []  # dockerd refuses a service on a network it does not have
        if info.get("Driver") == "host" or info.get("Name") == "host":
            return [Fact("namespace.network", "host", where, f"{target!r} is the host network")]
        return []
