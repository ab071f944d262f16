"""Checks on what confines a container: seccomp, AppArmor, SELinux, the masked and
read-only paths of /proc and /sys, and the sysctls it sets."""

from __future__ import annotations

import hashlib
from typing import Iterator

from authz.decoding import canonical
from authz.decoding.checks.registry import (CONTAINER_SPEC, HOST_CONFIG, STORED_HOST_CONFIG,
                                            check, inside)
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import (GoObject, InvalidJSON, get_bool, get_map, get_obj, get_str,
                               get_strings, loads)

SECCOMP = fact_kind("seccomp", "unconfined, or custom:sha256:DIGEST")
APPARMOR = fact_kind("apparmor", "unconfined, or the profile name")
SELINUX = fact_kind("selinux", "disable, type:T, level:L...")
MASKED_PATHS = fact_kind("masked-paths", "reduced, unconfined")
SYSCTL = fact_kind("sysctl", "the name, '.'-separated")

_UNCONFINED_SECCOMP_ACTIONS = {"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE",
                               "SCMP_ACT_NOTIFY"}


def seccomp_value(profile: str) -> str:
    """``unconfined``; or ``custom:sha256:<hex of the profile as sent>`` for a JSON profile,
    so that a security team can approve reviewed profiles by digest. A profile whose default
    action lets every syscall through counts as unconfined. The profile is read with Go's
    rules (dockerd unmarshals it: ``DefaultAction`` is ``defaultAction``)."""
    if profile.lower() == "unconfined":
        return "unconfined"
    digest = "custom:sha256:" + hashlib.sha256(profile.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        action = get_str(loads(profile.encode("utf-8", "surrogatepass")), "defaultAction",
                         "seccomp profile")
    except (InvalidJSON, AttributeError):
        return digest
    if action.upper() in _UNCONFINED_SECCOMP_ACTIONS:
        return "unconfined"
    return digest


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), rank=70,
       reports=(SECCOMP, APPARMOR, SELINUX, MASKED_PATHS))
def check_security_opt(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--security-opt`` as dockerd's ``parseSecurityOpt`` reads it: ``k=v`` or ``k:v``
    (``=`` first), the bare word ``disable`` (SELinux labels off)."""
    for i, opt in enumerate(get_strings(hc, "SecurityOpt", where) or ()):
        at = inside(where, f"SecurityOpt[{i}]")
        if opt == "no-new-privileges":
            continue
        if opt == "disable":
            yield Fact("selinux", "disable", at)
            continue
        if "=" in opt:
            key, value = opt.split("=", 1)
        elif ":" in opt:
            key, value = opt.split(":", 1)
        else:
            continue  # dockerd refuses it
        key = key.lower()
        if key == "seccomp":
            yield Fact("seccomp", seccomp_value(value), at)
        elif key == "apparmor":
            # runc writes the name to the kernel, which trims it: " unconfined" is unconfined.
            canonical.require_name(value, at, "AppArmor profile")
            yield Fact("apparmor", value.lower() if value.lower() == "unconfined" else value, at)
        elif key == "label":
            canonical.require_name(value, at, "SELinux label option")
            yield Fact("selinux", value.lower() if value.lower() == "disable" else value, at)
        elif key == "systempaths" and value.lower() == "unconfined":
            yield Fact("masked-paths", "unconfined", at)


# dockerd's defaults (oci/defaults.go); a request that sets the list without one of them
# unmasks it.
DEFAULT_MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/proc/scsi", "/sys/firmware")
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger")


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(MASKED_PATHS,), rank=80)
def check_system_paths(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``MaskedPaths``/``ReadonlyPaths`` set without dockerd's defaults
    (``--security-opt systempaths=unconfined`` sends both empty)."""
    for field, defaults in (("MaskedPaths", DEFAULT_MASKED_PATHS),
                            ("ReadonlyPaths", DEFAULT_READONLY_PATHS)):
        given = get_strings(hc, field, where)
        if given is None:
            continue
        # runc mounts each entry as given and skips one that does not resolve: only the
        # exact path protects it ("/proc/x/../sys" cleans to "/proc/sys" and masks nothing).
        kept = set(given)
        missing = [p for p in defaults if p not in kept]
        if missing:
            yield Fact("masked-paths", "reduced", inside(where, field),
                       "no longer covers " + ", ".join(missing))


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG, CONTAINER_SPEC), reports=(SYSCTL,), rank=90)
def check_sysctls(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--sysctl``: the name (``/`` and ``.`` are the same separator to runc)."""
    for name in get_map(hc, "Sysctls", where):
        yield Fact("sysctl", name.replace("/", "."), inside(where, f"Sysctls[{name!r}]"))


def _privileges(spec: GoObject | None, where: str) -> tuple[GoObject | None, str]:
    """A service's ``Privileges`` and where they are."""
    return get_obj(spec, "Privileges", where), inside(where, "Privileges")


@check(reads=(CONTAINER_SPEC,), reports=(SELINUX,), rank=100)
def check_service_selinux(spec: GoObject | None, where: str) -> Iterator[Fact]:
    """``Privileges.SELinuxContext``: ``Disable``, and each field as a ``label=`` option."""
    privileges, pw = _privileges(spec, where)
    selinux = get_obj(privileges, "SELinuxContext", pw)
    if get_bool(selinux, "Disable", f"{pw}.SELinuxContext"):
        yield Fact("selinux", "disable", f"{pw}.SELinuxContext.Disable")
    # The executor turns each into a label= option (applyPrivileges), as --security-opt.
    for field, prefix in (("User", "user"), ("Role", "role"), ("Type", "type"),
                          ("Level", "level")):
        value = get_str(selinux, field, f"{pw}.SELinuxContext")
        if value:
            yield Fact("selinux", f"{prefix}:{value}", f"{pw}.SELinuxContext.{field}")


@check(reads=(CONTAINER_SPEC,), reports=(SECCOMP,), rank=110)
def check_service_seccomp(spec: GoObject | None, where: str) -> Iterator[Fact]:
    """``Privileges.Seccomp``: ``Mode`` unconfined, or a custom profile (``seccomp_value``)."""
    privileges, pw = _privileges(spec, where)
    seccomp = get_obj(privileges, "Seccomp", pw)
    mode = get_str(seccomp, "Mode", f"{pw}.Seccomp").lower()
    if mode == "unconfined":
        yield Fact("seccomp", "unconfined", f"{pw}.Seccomp.Mode")
    elif mode == "custom":
        profile = get_str(seccomp, "Profile", f"{pw}.Seccomp")
        yield Fact("seccomp", seccomp_value(profile), f"{pw}.Seccomp")


@check(reads=(CONTAINER_SPEC,), reports=(APPARMOR,), rank=120)
def check_service_apparmor(spec: GoObject | None, where: str) -> Iterator[Fact]:
    """``Privileges.AppArmor``: ``Mode: disabled`` is unconfined."""
    privileges, pw = _privileges(spec, where)
    apparmor = get_obj(privileges, "AppArmor", pw)
    if get_str(apparmor, "Mode", f"{pw}.AppArmor").lower() == "disabled":
        yield Fact("apparmor", "unconfined", f"{pw}.AppArmor.Mode")
