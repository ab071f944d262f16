"""Checks on restarts dockerd or swarm make by themselves, with no plugin asked: a
container's restart policy, a service's restart condition, and what follows when such a
container mounts host paths."""

from __future__ import annotations

from typing import Iterator

from authz.decoding.checks.registry import (HOST_CONFIG, RESOURCES, STORED_HOST_CONFIG,
                                            TASK_TEMPLATE, check, inside)
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, get_obj, get_str

RESTART_POLICY = fact_kind("restart-policy", "always, unless-stopped, on-failure: dockerd restarts "
                           "the container itself")
AUTO_RESTART = fact_kind("auto-restart", "the restart policy of a container that also mounts host paths")


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG, RESOURCES), reports=(RESTART_POLICY,), rank=100)
def check_restart_policy(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--restart``: dockerd restarts the container itself (and at its own start), without
    asking any plugin, and mounts its host paths again by name (see ``auto_restart_facts``)."""
    policy = get_obj(hc, "RestartPolicy", where)
    name = get_str(policy, "Name", inside(where, "RestartPolicy"))
    if name not in ("", "no"):
        yield Fact("restart-policy", name, inside(where, "RestartPolicy.Name"))


@check(reads=(TASK_TEMPLATE,), reports=(RESTART_POLICY,), rank=30)
def check_service_restart(task: GoObject | None, where: str) -> Iterator[Fact]:
    """A service's ``RestartPolicy.Condition``: ``any`` when none is given."""
    # Swarm restarts a task's container by itself (condition "any" when none is given),
    # and its task containers never pass through the plugin.
    restart = get_obj(task, "RestartPolicy", where)
    condition = get_str(restart, "Condition", inside(where, "RestartPolicy")) or "any"
    if condition != "none":
        yield Fact("restart-policy", condition, inside(where, "RestartPolicy.Condition"))


def auto_restart_facts(facts: list[Fact]) -> list[Fact]:
    """A container that dockerd restarts by itself and that mounts host paths: a path
    swapped for a symlink between two starts would be mounted with no plugin asked. Derived
    once every fact of the request (and of dockerd's state) is known."""
    policies = [f for f in facts if f.kind == "restart-policy"]
    paths = [f for f in facts if f.kind == "host-path"]
    if not policies or not paths:
        return []
    return [Fact("auto-restart", p.value, p.where, f"with host path {paths[0].value}")
            for p in policies]
