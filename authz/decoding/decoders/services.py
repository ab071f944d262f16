"""The swarm service decoder: a service spec runs containers on every node, with no
further call through this plugin, so everything a task will run with is judged here."""

from __future__ import annotations

from authz.decoding import checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.decoding.findings import Body, Findings
from authz.decoding.uri import Target
from authz.moby.gojson import GoObject, get_list, get_obj, get_str

# The fact kind this decoder reports itself (the checks it runs declare theirs).
fact_kind("service-rollback", "previous (rollback=previous), on-failure (UpdateConfig.FailureAction)")


def service(target: Target, body: Body, out: Findings) -> None:
    """Service create and update: rollbacks, the task template's checks, its networks."""
    doc = body.json(out.endpoint)
    # A rollback applies the service's stored previous spec, not this body: one made
    # before this policy, or under an exception, would run again.
    rollback = target.query.get("rollback")
    if rollback not in ("", "none"):
        out.facts.append(Fact("service-rollback", rollback[:100], "query rollback",
                              "swarm runs the service's previous spec, not this body"))
    update = get_obj(doc, "UpdateConfig")
    action = get_str(update, "FailureAction", "UpdateConfig")
    if action == "rollback":
        out.facts.append(Fact("service-rollback", "on-failure", "UpdateConfig.FailureAction",
                              "swarm runs the service's previous spec when an update fails"))
    task = get_obj(doc, "TaskTemplate")
    spec = get_obj(task, "ContainerSpec", "TaskTemplate")
    where = "TaskTemplate.ContainerSpec"
    out.facts += checks.run(checks.TASK_TEMPLATE, task, "TaskTemplate")
    if spec is not None:
        out.volumes += checks.named_volumes(spec, where)
        out.facts += checks.run(checks.CONTAINER_SPEC, spec, where)
        out.services.append(get_str(spec, "Image", where))
    _networks(task, doc, out)


def _networks(task: GoObject | None, doc: GoObject | None, out: Findings) -> None:
    """The task's and the service's networks: ``host`` is a fact, others are looked up."""
    for holder, at in ((task, "TaskTemplate"), (doc, "")):
        for i, network in enumerate(get_list(holder, "Networks", at) or ()):
            nw = f"{at}.Networks[{i}]" if at else f"Networks[{i}]"
            if not isinstance(network, GoObject):
                raise RequestRefused("request-body-invalid", f"{nw} is not an object",
                                     "Send Networks as objects with Target.")
            target = get_str(network, "Target", nw)
            if target.lower() == "host":
                out.facts.append(Fact("namespace.network", "host", f"{nw}.Target"))
            elif target:
                out.network_targets.append((target, f"{nw}.Target"))
