"""What a managed plugin is allowed to do, read from its config as dockerd reads it: the
privileges it runs with (``computePrivileges``) and what ``docker plugin set`` changes
(``newSettable``)."""

from __future__ import annotations

from authz.decoding import canonical
from authz.decoding.facts import Fact


def _items(obj: dict, *path: str) -> list[dict]:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return [item for item in obj if isinstance(item, dict)] if isinstance(obj, list) else []


def plugin_privilege_facts(config: dict) -> list[Fact]:
    """The privileges a plugin runs with, named as dockerd's ``computePrivileges`` names
    them (the same values ``docker plugin install`` asks the caller to accept), and its
    mount sources as host paths."""
    out: list[Fact] = []
    where = "plugin.Config"
    network = config.get("Network") if isinstance(config.get("Network"), dict) else {}
    if network.get("Type") not in (None, "", "null", "bridge"):
        out.append(Fact("plugin.privilege", f"network={network.get('Type')}", f"{where}.Network"))
    linux = config.get("Linux") if isinstance(config.get("Linux"), dict) else {}
    if config.get("IpcHost") is True:
        out.append(Fact("plugin.privilege", "host ipc namespace=true", f"{where}.IpcHost"))
    if config.get("PidHost") is True:
        out.append(Fact("plugin.privilege", "host pid namespace=true", f"{where}.PidHost"))
    for i, mount in enumerate(_items(config, "Mounts")):
        source = mount.get("Source")
        if isinstance(source, str):
            at = f"{where}.Mounts[{i}].Source"
            out.append(Fact("plugin.privilege", f"mount={source}", at))
            if source and (source.startswith("/") or mount.get("Type") == "bind"):
                out += canonical.kernel_path_facts("host-path", source, at, "a plugin mount")
    for i, device in enumerate(_items(linux, "Devices")):
        if isinstance(device.get("Path"), str):
            out.append(Fact("plugin.privilege", f"device={device['Path']}",
                            f"{where}.Linux.Devices[{i}]"))
    if linux.get("AllowAllDevices") is True:
        out.append(Fact("plugin.privilege", "allow-all-devices=true", f"{where}.Linux"))
    for cap in linux.get("Capabilities") or ():
        out.append(Fact("plugin.privilege", f"capabilities={cap}", f"{where}.Linux.Capabilities"))
    return out


def plugin_setting_facts(config: dict, setting: str, where: str) -> list[Fact]:
    """One ``plugin set`` argument, parsed as moby's ``newSettable``: ``name[.field][=value]``
    (the field is after the last '.'; without one, the single settable field of whatever
    ``name`` names). A mount's ``source`` is a host path, a device's ``path`` a device."""
    eq = setting.find("=")
    name, value = (setting, "") if eq < 0 else (setting[:eq], setting[eq + 1:])
    field = ""
    dot = name.rfind(".")
    if dot > 0:
        name, field = name[:dot], name[dot + 1:]
    facts: list[Fact] = []
    kinds = (("Mounts", "source", "host-path"), ("Devices", "path", "device"))
    for holder, settable_field, kind in kinds:
        items = _items(config, holder) if holder == "Mounts" else _items(config, "Linux", holder)
        for item in items:
            if item.get("Name") != name:
                continue
            settable = [s for s in item.get("Settable") or () if isinstance(s, str)]
            effective = field or (settable[0] if len(settable) == 1 else "")
            if effective != settable_field:
                continue
            at = f"{where} {name}.{settable_field}"
            if kind == "host-path":
                facts += canonical.kernel_path_facts("host-path", value, at, "plugin mount source")
            else:
                facts.append(Fact("device", value or "(empty)", at, "plugin device path"))
    return facts
