"""Decoders of the endpoints on images, builds, volumes, plugins, networks, secrets,
configs and the swarm itself."""

from __future__ import annotations

from authz.decoding import checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.decoding.findings import Body, Findings
from authz.decoding.uri import Target
from authz.moby.gojson import (MAX_ITEMS, GoObject, get_map, get_obj, get_str,
                               get_strings, loads)
from authz.decoding.decoders import common

# The fact kinds these decoders report themselves (the checks they run declare theirs).
fact_kind("network-driver", "a network driver (or ipam:NAME) that is not built into dockerd (a plugin)")
fact_kind("plugin.remote", "the plugin image installed or upgraded to")


def image_create(target: Target, body: Body, out: Findings) -> None:
    query = target.query
    from_image = query.get("fromImage")
    if query.get("fromSrc") != "-" or from_image:
        # Only an import from "-" has a (tar) body; any other body could be a form that
        # dockerd reads as query values (with a first Content-Type header we cannot see).
        body.expect_none(out.endpoint)
    if not from_image:
        # dockerd imports only when fromImage is empty; any fromImage is a pull.
        out.endpoint = "image.import"
        repo = query.get("repo")
        if repo:
            out.facts.append(Fact("image.write", common.image_ref(repo, query.get("tag")), "query repo"))
        return
    out.pulls.append(common.image_ref(from_image, query.get("tag")))


def image_tag(target: Target, body: Body, out: Findings) -> None:
    body.expect_none(out.endpoint)
    repo = target.query.get("repo")
    if repo:
        out.facts.append(Fact("image.write", common.image_ref(repo, target.query.get("tag")), "query repo"))


def build(target: Target, body: Body, out: Findings) -> None:
    query = target.query
    if query.get("remote"):
        # A remote (or BuildKit session) build takes no body; one that has a body could
        # carry form values (networkmode=host) that dockerd reads and we cannot see.
        body.expect_none(out.endpoint)
    mode = query.get("networkmode")
    out.facts += checks.namespace_facts("namespace.network", mode, "query networkmode")
    for tag in query.getall("t"):
        out.facts.append(Fact("image.write", tag, "query t"))


def volume_create(target: Target, body: Body, out: Findings) -> None:
    doc = body.json(out.endpoint)
    out.facts += checks.local_volume_facts(get_str(doc, "Driver"), get_map(doc, "DriverOpts"),
                                           "DriverOpts")


def plugin_target(target: Target, body: Body, out: Findings) -> None:
    """enable, disable, remove: the plugin is read through dockerd (its privileges, and
    whether it is an authorization plugin)."""
    body.expect_none(out.endpoint)
    out.plugins.append(out.params.get("name", ""))


def plugin_upgrade(target: Target, body: Body, out: Findings) -> None:
    out.plugins.append(out.params.get("name", ""))
    plugin_privileges(target, body, out)


def plugin_privileges(target: Target, body: Body, out: Findings) -> None:
    """plugin pull/upgrade: the body lists the privileges the caller accepts for it."""
    data = body.data
    if not data:
        raise RequestRefused("request-body-missing",
                             f"{out.endpoint} carries the plugin's privileges in its body, and "
                             "dockerd forwarded none",
                             "Send the privileges as a JSON array (docker plugin install does).")
    doc = loads(data)
    if not isinstance(doc, list) or len(doc) > MAX_ITEMS:
        raise RequestRefused("request-body-invalid", "plugin privileges are not a JSON array "
                             f"of at most {MAX_ITEMS} entries", "Send a JSON array.")
    out.facts.append(Fact("plugin.remote", target.query.get("remote"), "query remote"))
    for i, privilege in enumerate(doc):
        at = f"[{i}]"
        if not isinstance(privilege, GoObject):
            raise RequestRefused("request-body-invalid", f"privilege {at} is not an object",
                                 "Send objects with Name and Value.")
        name = get_str(privilege, "Name", at)
        values = get_strings(privilege, "Value", at) or [""]
        for value in values:
            out.facts.append(Fact("plugin.privilege", f"{name}={value}" if value else name, at))


def plugin_create(target: Target, body: Body, out: Findings) -> None:
    out.facts.append(Fact("plugin.privilege", "unknown", "body",
                          "a plugin built from a tar archive; its privileges cannot be read"))


def plugin_set(target: Target, body: Body, out: Findings) -> None:
    """``docker plugin set P mnt.source=/etc dev.path=/dev/sda``, and ``mnt=/etc``: a
    setting without a field goes to the single settable field of whatever it names, so
    each is resolved against the plugin's config, read through dockerd (state.py)."""
    data = body.data
    if not data:
        raise RequestRefused("request-body-missing",
                             "plugin set carries its settings in its body, and dockerd forwarded none",
                             "Send the settings as a JSON array of strings.")
    doc = loads(data)
    if not isinstance(doc, list) or len(doc) > MAX_ITEMS or not all(isinstance(s, str) for s in doc):
        raise RequestRefused("request-body-invalid", "plugin settings are not an array of strings",
                             "Send a JSON array of KEY=VALUE strings.")
    out.plugins.append(out.params.get("name", ""))
    out.plugin_settings += doc


def network_create(target: Target, body: Body, out: Findings) -> None:
    """A network driver or IPAM driver that is not built in is a plugin; dockerd acts on
    its answers (a remote driver's Join moves a host interface into the container)."""
    doc = body.json(out.endpoint)
    out.facts += checks.driver_facts("network-driver", get_str(doc, "Driver"),
                                     checks.BUILTIN_NETWORK_DRIVERS, "Driver",
                                     "a network driver plugin")
    ipam = get_obj(doc, "IPAM")
    out.facts += [Fact(f.kind, f"ipam:{f.value}", f.where, f.detail) for f in checks.driver_facts(
        "network-driver", get_str(ipam, "Driver", "IPAM"), checks.BUILTIN_IPAM_DRIVERS,
        "IPAM.Driver", "an IPAM driver plugin")]
    driver = get_str(doc, "Driver")
    out.facts += checks.network_option_facts(driver, get_map(doc, "Options"), "Options",
                                             swarm=get_str(doc, "Scope") == "swarm")
    config_from = get_obj(doc, "ConfigFrom")
    network = get_str(config_from, "Network", "ConfigFrom")
    if network:
        # The options live in a config-only network (perhaps made before this policy).
        out.network_configs.append((network, driver, "ConfigFrom.Network"))


def secret_or_config(target: Target, body: Body, out: Findings) -> None:
    """A secret store or templating driver is a plugin, looked up by name as a path."""
    doc = body.json(out.endpoint)
    for key in ("Driver", "Templating"):
        driver = get_obj(doc, key)
        checks.plugin_name(get_str(driver, "Name", key), f"{key}.Name")


def swarm_update(target: Target, body: Body, out: Findings) -> None:
    doc = body.json(out.endpoint, required=False)
    out.facts += checks.run(checks.TASK_DEFAULTS, get_obj(doc, "TaskDefaults"), "TaskDefaults")
