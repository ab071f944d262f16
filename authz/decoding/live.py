"""Facts that depend on dockerd's current state, looked up over its API.

Some requests name things whose meaning is in dockerd, not in the request:

- ``POST /containers/{id}/start`` (and restart) runs a container created earlier. Its stored
  HostConfig is checked again exactly as at create: bind sources are resolved anew (a
  symlink swapped since the create is seen) and containers created before this policy, or by
  another route, are caught. Its image id goes to image trust.
- ``--volumes-from NAME`` takes over another container's mounts.
- A swarm service may name the host network by id or id prefix, not only as ``host``.

Every lookup is a read through dockerd (and so through this plugin, served by another
thread), bounded in time; a lookup that fails refuses the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from authz.decoding import checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.decoding.gojson import GoObject, loads
from authz.dockerd import DockerClient, DockerError
from authz.deadline import Deadline

LOOKUP_SECONDS = 3.0


@dataclass(frozen=True)
class StartedContainer:
    facts: list[Fact]
    image_id: str
    image: str          # the image name it was created from (Config.Image)


def _unavailable(what: str, exc: Exception) -> RequestRefused:
    return RequestRefused(
        "request-state",
        f"{what} could not be read from dockerd: {exc}",
        "Retry; check that dockerd answers and that the policy allows the plugin's reads "
        "(GET /containers/*/json, /networks/*).",
    )


class LiveState:
    def __init__(self, docker: DockerClient):
        self.docker = docker

    def _container(self, name: str) -> tuple[dict, GoObject] | None:
        """The container's inspect JSON and its stored HostConfig (read like a request's)."""
        try:
            info = self.docker.inspect_container(name, Deadline(LOOKUP_SECONDS))
        except DockerError as exc:
            raise _unavailable(f"container {name[:100]!r}", exc) from None
        if info is None:
            return None  # dockerd refuses the request itself
        stored = info.get("HostConfig")
        return info, loads(json.dumps(stored if isinstance(stored, dict) else {}).encode())

    def started_container(self, name: str) -> StartedContainer | None:
        found = self._container(name)
        if found is None:
            return None
        info, doc = found
        # dockerd stores its own defaults; the cgroup namespace default is "host" on cgroup v1
        # hosts (or by daemon configuration), so a stored "host" says nothing about what was
        # asked: the cgroup namespace is judged at create only.
        facts = [f for f in checks.run_checks(checks.HOST_CONFIG_CHECKS, doc, "container.HostConfig")
                 if f.kind != "namespace.cgroup"]
        config = info.get("Config")
        image = config.get("Image") if isinstance(config, dict) else None
        return StartedContainer(facts, info["Image"], image if isinstance(image, str) else "")

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
            info = self.docker.inspect_network(target, Deadline(LOOKUP_SECONDS))
        except DockerError as exc:
            raise _unavailable(f"network {target[:100]!r}", exc) from None
        if info is None:
            return []  # dockerd refuses a service on a network it does not have
        if info.get("Driver") == "host" or info.get("Name") == "host":
            return [Fact("namespace.network", "host", where, f"{target!r} is the host network")]
        return []
