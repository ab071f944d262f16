"""The swarm service decoder: a service spec runs containers on every node, with no
further call through this plugin, so everything a task will run with is judged here."""

from __future__ import annotations

from authz.decoding import checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.decoding.findings import Body, Findings
from authz.decoding.uri import Target
from authz.moby.gojson import (GoObject, get_bool, get_list, get_map, get_obj, get_str,
                               get_strings)


def log_driver(holder: GoObject | None, where: str) -> list[Fact]:
    """A swarm ``LogDriver`` (service task templates, swarm task defaults)."""
    driver = get_obj(holder, "LogDriver", where)
    at = f"{where}.LogDriver" if where else "LogDriver"
    facts = checks.driver_facts("log-driver", get_str(driver, "Name", at),
                                checks.BUILTIN_LOG_DRIVERS, f"{at}.Name", "a log driver plugin")
    return facts + list(checks.log_option_facts(get_map(driver, "Options", at), f"{at}.Options"))


def service(target: Target, body: Body, out: Findings) -> None:
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
    out.facts += log_driver(task, "TaskTemplate")
    runtime = get_str(task, "Runtime", "TaskTemplate")
    if runtime not in ("", "container"):
        # Runtime "plugin" (experimental): every node pulls and enables the plugin in
        # PluginSpec with the privileges it lists.
        out.facts.append(Fact("service-runtime", runtime, "TaskTemplate.Runtime",
                              "every node installs and runs a plugin"))
        spec_at = "TaskTemplate.PluginSpec"
        plugin = get_obj(task, "PluginSpec", "TaskTemplate")
        for i, privilege in enumerate(get_list(plugin, "Privileges", spec_at) or ()):
            at = f"{spec_at}.Privileges[{i}]"
            if not isinstance(privilege, GoObject):
                raise RequestRefused("request-body-invalid", f"{at} is not an object",
                                     "Send objects with Name and Value.")
            name = get_str(privilege, "Name", at)
            for value in get_strings(privilege, "Value", at) or [""]:
                out.facts.append(Fact("plugin.privilege", f"{name}={value}" if value else name, at))
    # Swarm restarts a task's container by itself (condition "any" when none is given),
    # and its task containers never pass through the plugin.
    restart = get_obj(task, "RestartPolicy", "TaskTemplate")
    condition = get_str(restart, "Condition", "TaskTemplate.RestartPolicy") or "any"
    if condition != "none":
        out.facts.append(Fact("restart-policy", condition, "TaskTemplate.RestartPolicy.Condition"))
    if spec is not None:
        out.volumes += checks.named_volumes(spec, where)
        for i, mount in enumerate(get_list(spec, "Mounts", where) or ()):
            out.facts += checks.mount_facts(mount, f"{where}.Mounts[{i}]")
        for i, cap in enumerate(get_strings(spec, "CapabilityAdd", where) or ()):
            out.facts.append(Fact("capability", checks.normalize_capability(cap),
                                  f"{where}.CapabilityAdd[{i}]"))
        for name in get_map(spec, "Sysctls", where):
            out.facts.append(Fact("sysctl", name.replace("/", "."), f"{where}.Sysctls[{name!r}]"))
        privileges = get_obj(spec, "Privileges", where)
        pw = f"{where}.Privileges"
        selinux = get_obj(privileges, "SELinuxContext", pw)
        if get_bool(selinux, "Disable", f"{pw}.SELinuxContext"):
            out.facts.append(Fact("selinux", "disable", f"{pw}.SELinuxContext.Disable"))
        # The executor turns each into a label= option (applyPrivileges), as --security-opt.
        for field, prefix in (("User", "user"), ("Role", "role"), ("Type", "type"),
                              ("Level", "level")):
            value = get_str(selinux, field, f"{pw}.SELinuxContext")
            if value:
                out.facts.append(Fact("selinux", f"{prefix}:{value}",
                                      f"{pw}.SELinuxContext.{field}"))
        seccomp = get_obj(privileges, "Seccomp", pw)
        mode = get_str(seccomp, "Mode", f"{pw}.Seccomp").lower()
        if mode == "unconfined":
            out.facts.append(Fact("seccomp", "unconfined", f"{pw}.Seccomp.Mode"))
        elif mode == "custom":
            profile = get_str(seccomp, "Profile", f"{pw}.Seccomp")
            out.facts.append(Fact("seccomp", checks.seccomp_value(profile), f"{pw}.Seccomp"))
        apparmor = get_obj(privileges, "AppArmor", pw)
        if get_str(apparmor, "Mode", f"{pw}.AppArmor").lower() == "disabled":
            out.facts.append(Fact("apparmor", "unconfined", f"{pw}.AppArmor.Mode"))
        out.services.append(get_str(spec, "Image", where))
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
