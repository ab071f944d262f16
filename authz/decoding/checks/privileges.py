"""Checks on what a container may do to the host: ``--privileged``, host namespaces,
capabilities, devices and its place in the host's cgroup tree."""

from __future__ import annotations

from typing import Iterator

from authz.decoding.checks.registry import (CONTAINER_SPEC, HOST_CONFIG, RESOURCES,
                                            STORED_HOST_CONFIG, check, inside)
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, get_bool, get_list, get_str, get_strings

PRIVILEGED = fact_kind("privileged", "true: --privileged on create, start (API < 1.24), exec")
NETWORK_NAMESPACE = fact_kind("namespace.network", "host, or container (joins another container's)")
PID_NAMESPACE = fact_kind("namespace.pid", "host, or container")
IPC_NAMESPACE = fact_kind("namespace.ipc", "host, or container")
UTS_NAMESPACE = fact_kind("namespace.uts", "host, or container")
USER_NAMESPACE = fact_kind("namespace.userns", "host, or container")
CGROUP_NAMESPACE = fact_kind("namespace.cgroup", "host, or container")
CAPABILITY = fact_kind("capability", "upper case without CAP_: SYS_ADMIN, ALL")
DEVICE = fact_kind("device", "a host device path, cgroup-rule:RULE, request:DRIVER")
CGROUP_PARENT = fact_kind("cgroup-parent", "the cgroup a container is put under (--cgroup-parent)")


def normalize_capability(name: str) -> str:
    """As moby's ``NormalizeLegacyCapabilities``: upper-cased, without ``CAP_``; ``ALL``."""
    upper = name.upper()
    if upper == "ALL":
        return "ALL"
    return upper[4:] if upper.startswith("CAP_") else upper


def namespace_facts(kind: str, mode: str, where: str) -> list[Fact]:
    """A namespace mode: ``host`` shares the host's, ``container:NAME`` joins NAME's."""
    lowered = mode.lower()
    if lowered == "host":
        return [Fact(kind, "host", where)]
    if lowered.startswith("container:"):
        return [Fact(kind, "container", where, f"joins {mode[10:]!r}")]
    return []


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(PRIVILEGED,), rank=10)
def check_privileged(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--privileged``: every capability, every device, no seccomp/AppArmor/masking."""
    if get_bool(hc, "Privileged", where):
        yield Fact("privileged", "true", inside(where, "Privileged"))


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), rank=20,
       reports=(NETWORK_NAMESPACE, PID_NAMESPACE, IPC_NAMESPACE, UTS_NAMESPACE, USER_NAMESPACE))
def check_host_namespaces(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """Host namespaces (``--network host`` ...) and joining another container's."""
    for field, kind in (("NetworkMode", "namespace.network"), ("PidMode", "namespace.pid"),
                        ("IpcMode", "namespace.ipc"), ("UTSMode", "namespace.uts"),
                        ("UsernsMode", "namespace.userns")):
        yield from namespace_facts(kind, get_str(hc, field, where), inside(where, field))


# Not a check of stored configurations: dockerd stores its own defaults, and the cgroup
# namespace default is "host" on cgroup v1 hosts (or by daemon configuration), so a stored
# "host" says nothing about what was asked: the cgroup namespace is judged at create only.
@check(reads=(HOST_CONFIG,), reports=(CGROUP_NAMESPACE,), rank=25)
def check_cgroup_namespace(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--cgroupns host`` (and the legacy ``Cgroup: container:NAME``)."""
    for field in ("CgroupnsMode", "Cgroup"):
        yield from namespace_facts("namespace.cgroup", get_str(hc, field, where),
                                   inside(where, field))


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(CAPABILITY,), rank=30)
def check_capabilities(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--cap-add`` (a string or a list: moby's StrSlice) and the full ``Capabilities``
    set (API 1.40+, replaces the default set)."""
    for field in ("CapAdd", "Capabilities"):
        for i, cap in enumerate(get_strings(hc, field, where, strslice=field == "CapAdd") or ()):
            yield Fact("capability", normalize_capability(cap), inside(where, f"{field}[{i}]"))


@check(reads=(CONTAINER_SPEC,), reports=(CAPABILITY,), rank=65)
def check_service_capabilities(spec: GoObject | None, where: str) -> Iterator[Fact]:
    """A service's ``CapabilityAdd`` (``docker service create --cap-add``)."""
    for i, cap in enumerate(get_strings(spec, "CapabilityAdd", where) or ()):
        yield Fact("capability", normalize_capability(cap), inside(where, f"CapabilityAdd[{i}]"))


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG, RESOURCES), reports=(DEVICE,), rank=40)
def check_devices(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """Host devices, device cgroup rules and device requests (``--gpus``)."""
    for i, device in enumerate(get_list(hc, "Devices", where) or ()):
        at = inside(where, f"Devices[{i}]")
        if isinstance(device, str):
            raise RequestRefused("request-body-invalid", f"{at} is a string, expected an object",
                                 "Send Devices as objects with PathOnHost.")
        if not isinstance(device, GoObject):
            raise RequestRefused("request-body-invalid", f"{at} is not an object",
                                 "Send Devices as objects with PathOnHost.")
        path = get_str(device, "PathOnHost", at)
        yield Fact("device", path or "(empty)", f"{at}.PathOnHost")
    for i, rule in enumerate(get_strings(hc, "DeviceCgroupRules", where) or ()):
        yield Fact("device", f"cgroup-rule:{rule}", inside(where, f"DeviceCgroupRules[{i}]"))
    for i, request in enumerate(get_list(hc, "DeviceRequests", where) or ()):
        at = inside(where, f"DeviceRequests[{i}]")
        if not isinstance(request, GoObject):
            raise RequestRefused("request-body-invalid", f"{at} is not an object",
                                 "Send DeviceRequests as objects.")
        driver = get_str(request, "Driver", at) or "default"
        yield Fact("device", f"request:{driver}", at)


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(CGROUP_PARENT,), rank=150)
def check_cgroup_parent(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--cgroup-parent``: the container joins another part of the host's cgroup tree (a
    service's own cgroup shares that service's memory and pids limits: the plugin's own
    would be put under pressure)."""
    parent = get_str(hc, "CgroupParent", where)
    if parent:
        yield Fact("cgroup-parent", parent, inside(where, "CgroupParent"))
