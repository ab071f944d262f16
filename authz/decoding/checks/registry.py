"""The check registry: every risk check, the sources it reads and the fact kinds it reports
(after kubernetes' pod-security-admission ``policy/registry.go``, which refuses an
inconsistent set of checks).

A check is one small function ``(obj, where) -> facts``, registered beside its definition::

    @check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(CAPABILITY,), rank=30)
    def check_capabilities(hc: GoObject | None, where: str) -> Iterator[Fact]:
        ...

``reads`` names the sources below: whether a check covers container update, swarm services
or the re-check of a stored configuration at start is said there, and nowhere else.
``reports`` names the fact kinds it may report (declared with ``facts.fact_kind``).
``rank`` orders the facts of one source: a message lists violations in fact order and a
stored configuration keeps the first fact of each kind and value, so the order is behaviour
(ranks go by tens; a new check usually takes the next free one).

Decoders and dockerd's state reads run every check of a source with ``run(source, obj,
where)``. ``obj`` is a Go JSON object, or None for an absent one (Go's zero value: a check
reads it as empty).

The registry refuses at import: two checks with one name, a check that reads no source or an
unknown one, two checks of one source with one rank, a check that reports no kind or a kind
not declared (and ``fact_kind`` refuses a kind described two ways).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from authz.decoding.facts import FACT_KINDS, Fact, Kind, RegistryError
from authz.moby.gojson import GoObject

HOST_CONFIG = "HostConfig"
STORED_HOST_CONFIG = "stored HostConfig"
CONFIG = "Config"
STORED_CONFIG = "stored Config"
VOLUMES_FROM = "volumes-from"
RESOURCES = "Resources"
CONTAINER_SPEC = "ContainerSpec"
TASK_TEMPLATE = "TaskTemplate"
TASK_DEFAULTS = "TaskDefaults"

# Where checks read: each source is one Go object of a request, or of dockerd's state.
SOURCES: dict[str, str] = {
    HOST_CONFIG: "container create's HostConfig (the inner one, or the top level without one), "
                 "also the body of a container start before API 1.24",
    STORED_HOST_CONFIG: "a container's HostConfig as dockerd stored it, checked again when a "
                        "request starts it or acts inside it (start, restart, exec, attach, "
                        "archive, checkpoint create, update with a restart policy): state.py",
    CONFIG: "container create's Config: the top level of its body (User, Image, Labels, "
            "ExposedPorts)",
    STORED_CONFIG: "a container's Config as dockerd stored it, with its image's defaults merged "
                   "in (the User it runs as), checked again with its stored HostConfig: state.py",
    VOLUMES_FROM: "the stored HostConfig of a container whose mounts a create takes over "
                  "(--volumes-from): state.py",
    RESOURCES: "container update's body: Resources and RestartPolicy",
    CONTAINER_SPEC: "a swarm service's TaskTemplate.ContainerSpec",
    TASK_TEMPLATE: "a swarm service's TaskTemplate",
    TASK_DEFAULTS: "swarm update's TaskDefaults (what every service's tasks default to)",
}

CheckFunction = Callable[[GoObject | None, str], Iterable[Fact]]
F = TypeVar("F", bound=CheckFunction)


@dataclass(frozen=True)
class Check:
    """One registered risk check: its function, the sources it reads, the kinds it reports."""

    name: str
    function: CheckFunction
    reads: tuple[str, ...]
    reports: tuple[Kind, ...]
    rank: int


_CHECKS: dict[str, Check] = {}
_BY_SOURCE: dict[str, tuple[Check, ...]] = {source: () for source in SOURCES}


def check(*, reads: Iterable[str], reports: Iterable[Kind], rank: int) -> Callable[[F], F]:
    """Register the decorated function as a risk check (see the module's docstring)."""

    def register(function: F) -> F:
        _register(Check(function.__name__, function, tuple(reads), tuple(reports), rank))
        return function

    return register


def _register(new: Check) -> None:
    """Add ``new`` to the registry, or raise RegistryError if the set would be inconsistent."""
    problem = _problem(new)
    if problem is not None:
        raise RegistryError(f"check {new.name}: {problem}")
    _CHECKS[new.name] = new
    for source in new.reads:
        _BY_SOURCE[source] = tuple(sorted(_BY_SOURCE[source] + (new,), key=lambda c: c.rank))


def _problem(new: Check) -> str | None:
    """What makes ``new`` inconsistent with the registered checks, or None."""
    if new.name in _CHECKS:
        return "a check of this name is registered already"
    if not new.reads or len(set(new.reads)) != len(new.reads):
        return f"reads {new.reads!r}: name each source once"
    unknown = [source for source in new.reads if source not in SOURCES]
    if unknown:
        return f"reads {unknown[0]!r}, which is no source (known: {', '.join(SOURCES)})"
    if not new.reports:
        return "reports no fact kind"
    for kind in new.reports:
        if not isinstance(kind, Kind) or FACT_KINDS.get(kind.name) != kind.values:
            return f"reports {kind!r}, which is not declared with facts.fact_kind"
    for source in new.reads:
        for other in _BY_SOURCE[source]:
            if other.rank == new.rank:
                return f"rank {new.rank} of source {source!r} is {other.name}'s"
    return None


def run(source: str, obj: GoObject | None, where: str) -> list[Fact]:
    """The facts of every check that reads ``source``, in rank order."""
    facts: list[Fact] = []
    for registered in _BY_SOURCE[source]:
        facts.extend(registered.function(obj, where))
    return facts


def checks_reading(source: str) -> tuple[CheckFunction, ...]:
    """The functions of the checks that read ``source``, in rank order."""
    return tuple(registered.function for registered in _BY_SOURCE[source])


def registered() -> tuple[Check, ...]:
    """Every registered check, in registration order."""
    return tuple(_CHECKS.values())


def inside(where: str, name: str) -> str:
    """Where field ``name`` of the object at ``where`` is: ``HostConfig.Privileged``, or
    ``Privileged`` at the top level."""
    return f"{where}.{name}" if where else name
