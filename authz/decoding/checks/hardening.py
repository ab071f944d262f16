"""Checks on how a container is hardened and bounded (CIS Docker Benchmark 5.10, 5.12, 5.25,
5.28): a read-only root filesystem, no-new-privileges, memory and pids limits, and the OCI
runtime. These are reported on every create, set or not, so that a rule can ask for them
(``memory-limit`` = ``unset``)."""

from __future__ import annotations

from typing import Iterator

from authz.decoding.checks.registry import (CONTAINER_SPEC, HOST_CONFIG, RESOURCES,
                                            STORED_HOST_CONFIG, TASK_TEMPLATE, check, inside)
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, InvalidJSON, get_bool, get_obj, get_str, get_strings

READONLY_ROOTFS = fact_kind("readonly-rootfs", "true, false: --read-only (always reported)")
NO_NEW_PRIVILEGES = fact_kind("no-new-privileges", "true, false: --security-opt "
                              "no-new-privileges (always reported)")
MEMORY_LIMIT = fact_kind("memory-limit", "set, unset: --memory (always reported)")
PIDS_LIMIT = fact_kind("pids-limit", "set, unset: --pids-limit above 0 (always reported)")
RUNTIME = fact_kind("runtime", "the OCI runtime (--runtime), default when the create names none")

_INT64 = range(-(1 << 63), 1 << 63)
# Go's strconv.ParseBool, which dockerd's parseSecurityOpt uses.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_RUNTIME_MAX = 100


def get_int(obj: GoObject | None, name: str, where: str) -> int | None:
    """A Go ``int64`` field (None when absent or null); anything but an integer in range
    (``1.0``, ``1e9``, ``true``) is refused, as Go's decoder refuses it."""
    if obj is None:
        return None
    value = obj.field(name, where)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
        at = inside(where, name)
        raise InvalidJSON(f"{at} is {type(value).__name__}, expected an integer (int64)",
                          f"Send {name} as an integer.")
    return value


def _flag(value: bool) -> str:
    return "true" if value else "false"


def no_new_privileges(options: list[str]) -> bool:
    """Whether ``SecurityOpt`` sets no-new-privileges, as dockerd's ``parseSecurityOpt``
    reads it: the bare word, or ``no-new-privileges=BOOL`` (``:`` too; the key is
    case-sensitive, the value read by ``strconv.ParseBool``; the last one wins). A value
    ParseBool refuses makes dockerd refuse the create."""
    found = False
    for opt in options:
        if opt == "no-new-privileges":
            found = True
            continue
        separator = "=" if "=" in opt else ":" if ":" in opt else ""
        if not separator:
            continue
        key, value = opt.split(separator, 1)
        if key == "no-new-privileges" and (value in _GO_TRUE or value in _GO_FALSE):
            found = value in _GO_TRUE
    return found


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(READONLY_ROOTFS,), rank=170)
def check_readonly_rootfs(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--read-only``: the container cannot write its root filesystem (CIS 5.12)."""
    yield Fact("readonly-rootfs", _flag(get_bool(hc, "ReadonlyRootfs", where)),
               inside(where, "ReadonlyRootfs"))


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(NO_NEW_PRIVILEGES,), rank=180)
def check_no_new_privileges(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--security-opt no-new-privileges``: setuid binaries cannot raise privileges (CIS
    5.25). dockerd's own ``no-new-privileges`` setting is not read."""
    options = get_strings(hc, "SecurityOpt", where) or []
    yield Fact("no-new-privileges", _flag(no_new_privileges(options)),
               inside(where, "SecurityOpt"))


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(MEMORY_LIMIT, PIDS_LIMIT), rank=190)
def check_resource_limits(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--memory`` (``Memory``: any value but 0 is a limit, dockerd refuses one under
    6 MB) and ``--pids-limit`` (``PidsLimit``: null, 0 and negative values are unlimited)."""
    memory = get_int(hc, "Memory", where)
    yield Fact("memory-limit", "set" if memory else "unset", inside(where, "Memory"))
    pids = get_int(hc, "PidsLimit", where)
    yield Fact("pids-limit", "set" if pids is not None and pids > 0 else "unset",
               inside(where, "PidsLimit"))


@check(reads=(RESOURCES,), reports=(PIDS_LIMIT,), rank=50)
def check_update_pids_limit(update: GoObject | None, where: str) -> Iterator[Fact]:
    """``docker update --pids-limit -1`` (or 0): dockerd applies "unlimited" to the running
    container at once (postContainerUpdate, API 1.40 and later; earlier ones ignore the
    field or keep the limit); a positive one sets a limit. Absent: no change, no fact."""
    pids = get_int(update, "PidsLimit", where)
    if pids is not None:
        yield Fact("pids-limit", "set" if pids > 0 else "unset", inside(where, "PidsLimit"))


def top_level_memory(doc: GoObject | None, facts: list[Fact]) -> list[Fact]:
    """A create with an inner HostConfig whose ``Memory`` is 0 takes a top-level ``Memory``
    (moby's ``getHostConfig``): ``facts`` with its memory-limit fact set accordingly."""
    if not get_int(doc, "Memory", ""):
        return facts
    return [Fact("memory-limit", "set", "Memory") if f.kind == "memory-limit" else f
            for f in facts]


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(RUNTIME,), rank=200)
def check_runtime(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--runtime``: the OCI runtime dockerd runs the container with (``default``: dockerd's
    ``default-runtime``, runc unless configured; dockerd stores the name it resolved)."""
    runtime = get_str(hc, "Runtime", where) or "default"
    yield Fact("runtime", runtime[:_RUNTIME_MAX], inside(where, "Runtime"))


@check(reads=(CONTAINER_SPEC,), reports=(READONLY_ROOTFS,), rank=150)
def check_service_readonly_rootfs(spec: GoObject | None, where: str) -> Iterator[Fact]:
    """A service's ``ContainerSpec.ReadOnly`` (``docker service create --read-only``)."""
    yield Fact("readonly-rootfs", _flag(get_bool(spec, "ReadOnly", where)),
               inside(where, "ReadOnly"))


@check(reads=(TASK_TEMPLATE,), reports=(MEMORY_LIMIT, PIDS_LIMIT), rank=40)
def check_service_limits(task: GoObject | None, where: str) -> Iterator[Fact]:
    """A service's ``Resources.Limits``: ``MemoryBytes`` and ``Pids`` above 0 are limits."""
    at = inside(where, "Resources.Limits")
    limits = get_obj(get_obj(task, "Resources", where), "Limits", inside(where, "Resources"))
    memory = get_int(limits, "MemoryBytes", at)
    yield Fact("memory-limit", "set" if memory and memory > 0 else "unset", f"{at}.MemoryBytes")
    pids = get_int(limits, "Pids", at)
    yield Fact("pids-limit", "set" if pids and pids > 0 else "unset", f"{at}.Pids")
