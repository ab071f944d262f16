"""Drivers and plugins a request names, network driver options, and the plugin a swarm
service may run: dockerd acts on what a plugin answers, so a driver that is not built in
is a fact, and a name that is not plain is refused."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from typing import Any, Iterator

from authz.decoding import canonical
from authz.decoding.checks.registry import TASK_TEMPLATE, check, inside
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, get_list, get_obj, get_str, get_strings

HOST_INTERFACE = fact_kind("host-interface", "a host interface a network takes over or attaches to "
                           "(bridge name, parent)")
SERVICE_RUNTIME = fact_kind("service-runtime", "a swarm service runtime other than container (plugin)")
# Also reported by the plugin decoders (decoders/objects.py) and at plugin enable
# (plugins.py, from dockerd's state).
PLUGIN_PRIVILEGE = fact_kind("plugin.privilege",
                             "network=host, mount=/, capabilities=CAP_SYS_ADMIN, unknown")

# Drivers built into dockerd 20.10; any other name is a plugin. A legacy plugin's name is
# joined to /run/docker/plugins (and the spec directories) as a path, so "../../srv/x/p"
# would be a socket any container that can write /srv/x serves.
BUILTIN_LOG_DRIVERS = frozenset({"", "json-file", "local", "journald", "syslog", "gelf",
                                 "fluentd", "awslogs", "splunk", "etwlogs", "gcplogs",
                                 "logentries", "none"})
BUILTIN_NETWORK_DRIVERS = frozenset({"", "bridge", "overlay", "macvlan", "ipvlan"})
BUILTIN_IPAM_DRIVERS = frozenset({"", "default"})


def plugin_name(name: str, where: str) -> str:
    """A driver name that may name a plugin: refused unless it is a plain reference (no
    empty, '.' or '..' component, no leading or trailing '/', no '\\' or whitespace)."""
    if name and canonical.path_problem("/" + name) is not None:
        raise canonical.noncanonical(
            f"{where}: driver {name[:100]!r} is not a plain name (dockerd joins a legacy "
            "plugin's name to /run/docker/plugins as a path)", "Name the driver plainly.")
    return name


def driver_facts(kind: str, name: str, builtin: frozenset[str], where: str,
                 detail: str) -> list[Fact]:
    """A driver a request names: nothing for a built-in one, else a fact (a plugin)."""
    if name in builtin:
        return []
    return [Fact(kind, plugin_name(name, where), where, detail)]


# Network driver options (docker network create -o), read by allowing, per built-in driver:
# an option pyauthz does not know is refused. The options that name a host interface (an
# existing bridge such as docker0 or the host's own, a macvlan/ipvlan parent) are facts.
_COMMON_NETWORK_OPTIONS = frozenset({"com.docker.network.driver.mtu",
                                     "com.docker.network.container_iface_prefix"})
NETWORK_OPTIONS: dict[str, frozenset[str]] = {
    "bridge": _COMMON_NETWORK_OPTIONS | {
        "com.docker.network.bridge.enable_icc", "com.docker.network.bridge.enable_ip_masquerade",
        "com.docker.network.bridge.host_binding_ipv4", "com.docker.network.bridge.internal"},
    "overlay": _COMMON_NETWORK_OPTIONS | {
        "com.docker.network.driver.overlay.vxlanid_list", "encrypted"},
    "macvlan": _COMMON_NETWORK_OPTIONS | {"macvlan_mode"},
    "ipvlan": _COMMON_NETWORK_OPTIONS | {"ipvlan_mode", "ipvlan_flag"},
}
HOST_INTERFACE_OPTIONS = {"bridge": "com.docker.network.bridge.name",
                          "macvlan": "parent", "ipvlan": "parent"}


_LIBC = ctypes.CDLL(None, use_errno=True)


def _host_link(name: str) -> bool:
    """Whether ``name`` names a link on this host as dockerd's netlink lookup does
    (alternative names included, which /sys/class/net does not list). A name longer than an
    interface name can be is only ever an alternative name: counted as existing."""
    if len(name.encode("utf-8", "surrogatepass")) > 15:
        return True
    try:
        socket.if_nametoindex(name)
    except OSError as exc:
        # Python says "no interface with this name" whatever made libc return 0: ask libc
        # again for its errno; only ENODEV means there is none (EMFILE, a sandbox denying
        # socket()... mean the lookup could not be made, and it must not pass as "none").
        return _confirmed_link(name, exc)
    return True


def _confirmed_link(name: str, first: OSError) -> bool:
    """After a failed lookup: False when libc says there is no such link, else a refusal."""
    err = first.errno
    if err is None:
        ctypes.set_errno(0)
        if _LIBC.if_nametoindex(name.encode("utf-8", "surrogateescape")):
            return True
        err = ctypes.get_errno()
    if err in (errno.ENODEV, errno.ENXIO):
        return False
    raise RequestRefused("request-state", f"whether {name[:64]!r} is a host interface could "
                         f"not be read: {os.strerror(err) if err else 'unknown error'}",
                         "Retry; if it persists, check the plugin's file descriptor limit and "
                         "that its sandbox allows AF_UNIX/AF_NETLINK sockets.")


def network_option_facts(driver: str, options: dict[str, Any], where: str,
                         swarm: bool = False) -> list[Fact]:
    """``docker network create -d DRIVER -o K=V``: a bridge named like an existing one
    (docker0, a host bridge) is taken over and readdressed, a macvlan/ipvlan ``parent`` puts
    containers on the host's own link; any option pyauthz does not know is refused."""
    driver = driver or "bridge"
    known = NETWORK_OPTIONS.get(driver)
    facts: list[Fact] = []
    for key, value in options.items():
        at = f"{where}[{key[:100]!r}]"
        if not isinstance(value, str):
            raise RequestRefused("request-body-invalid", f"{at} is not a string",
                                 "Send driver options as strings.")
        if key == HOST_INTERFACE_OPTIONS.get(driver):
            if not value or "/" in value or value in (".", ".."):
                raise canonical.noncanonical(f"{at}: interface {value[:100]!r} is not a plain "
                                             "interface name", "Name the interface plainly.")
            # A bridge name dockerd creates is the network's own; an existing one (docker0,
            # a host bridge) is taken over. A parent is always the host's link; so is any
            # name of a swarm-scope network (every node's agent creates it, unchecked).
            if driver != "bridge" or value == "docker0" or swarm or _host_link(value):
                facts.append(Fact("host-interface", value, at, f"a {driver} network on it"))
        elif known is not None and key not in known:
            raise RequestRefused(
                "request-driver-option", f"{at}: the {driver} option {key[:100]!r} is not one "
                "pyauthz knows", "Use only the network options pyauthz knows (docs/policy.md, "
                "networks), or none.")
    return facts


@check(reads=(TASK_TEMPLATE,), reports=(SERVICE_RUNTIME, PLUGIN_PRIVILEGE), rank=20)
def check_service_runtime(task: GoObject | None, where: str) -> Iterator[Fact]:
    """A service ``Runtime`` other than ``container``, and the privileges its plugin gets."""
    runtime = get_str(task, "Runtime", where)
    if runtime in ("", "container"):
        return
    # Runtime "plugin" (experimental): every node pulls and enables the plugin in
    # PluginSpec with the privileges it lists.
    yield Fact("service-runtime", runtime, inside(where, "Runtime"),
               "every node installs and runs a plugin")
    spec_at = inside(where, "PluginSpec")
    plugin = get_obj(task, "PluginSpec", where)
    for i, privilege in enumerate(get_list(plugin, "Privileges", spec_at) or ()):
        at = f"{spec_at}.Privileges[{i}]"
        if not isinstance(privilege, GoObject):
            raise RequestRefused("request-body-invalid", f"{at} is not an object",
                                 "Send objects with Name and Value.")
        name = get_str(privilege, "Name", at)
        for value in get_strings(privilege, "Value", at) or [""]:
            yield Fact("plugin.privilege", f"{name}={value}" if value else name, at)
