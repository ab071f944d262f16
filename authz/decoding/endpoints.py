"""The Docker Engine API as dockerd 20.10 (API 1.41) routes it: one table, one place.

Each route is (method, path pattern as registered with gorilla/mux, endpoint name,
whether it changes state, the decoder of its security-relevant content). Patterns use
mux's syntax: ``{name:.*}`` matches across slashes, ``{id}`` does not. The first route
that matches wins, as in mux.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from authz.decoding import canonical, checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.moby.gojson import (MAX_ITEMS, GoObject, get_bool, get_list, get_map, get_obj, get_str,
                                   get_strings, loads)
from authz.moby.reference import InvalidReference, parse_reference, pull_reference
from authz.decoding.uri import Target


@dataclass
class Decoded:
    """What the policy is asked about one request."""

    endpoint: str
    write: bool
    params: dict[str, str] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)
    # Image references as the request gives them: pulled (as dockerd builds the reference
    # from fromImage+tag; a bare name pulls every tag), run from the local store (the raw
    # Image: a name, an id or an id prefix), or run by swarm services (nodes pull them).
    pulls: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    # Containers started (by name or id): their stored configuration and image are checked
    # again (authz/decoding/live.py).
    starts: list[str] = field(default_factory=list)
    # Containers a request acts inside with their stored privileges (exec, attach, archive,
    # copy): their stored configuration is checked again, as for a start.
    acts_on: list[str] = field(default_factory=list)
    # Exec instances started (exact ids): their container and their own privileges.
    execs: list[str] = field(default_factory=list)
    # Plugins acted on (enable, disable, remove, upgrade, set): read through dockerd.
    plugins: list[str] = field(default_factory=list)
    # plugin set: the settings, resolved against the plugin's config as dockerd does.
    plugin_settings: list[str] = field(default_factory=list)
    # Containers whose mounts a create takes over (--volumes-from NAME[:ro|rw]), and where.
    volumes_from: list[tuple[str, str]] = field(default_factory=list)
    # Named volumes a create mounts, and where: their options are looked up (live.py).
    volumes: list[tuple[str, str]] = field(default_factory=list)
    # Service network targets other than "host" (a name, an id or an id prefix), and where.
    network_targets: list[tuple[str, str]] = field(default_factory=list)
    # network create --config-from NAME: (NAME, the new network's driver, where).
    network_configs: list[tuple[str, str, str]] = field(default_factory=list)

    def needs_state(self) -> bool:
        """Whether deciding reads dockerd's state (live.py)."""
        return bool(self.starts or self.acts_on or self.execs or self.plugins or self.volumes
                    or self.volumes_from or self.network_targets or self.network_configs)

    @property
    def image(self) -> str:
        """The image the policy's ``images:`` patterns are matched against."""
        for ref in self.runs + self.services:
            return normalize_image(ref, default_tag=True)
        for ref in self.pulls:
            return normalize_image(ref, default_tag=False)
        return ""


@dataclass(frozen=True)
class Body:
    """The request body as forwarded by dockerd, and whether one may exist unseen."""

    data: bytes | None
    # dockerd forwards a body only when Content-Type is JSON, 0 < Content-Length < 1 MiB
    # and the URI does not end in "/auth". When none arrived, one may still exist
    # (chunked, too big, another type): only a Content-Length of 0 proves there is none.
    maybe_hidden: bool

    def json(self, endpoint: str, required: bool = True) -> GoObject | None:
        if not self.data:
            if required or self.maybe_hidden:
                raise RequestRefused(
                    "request-body-missing",
                    f"{endpoint} needs its JSON body inspected, and dockerd forwarded none "
                    "(body over 1 MiB, chunked, not application/json, or a URI ending in '/auth')",
                    "Send the body as Content-Type: application/json with a Content-Length, "
                    "under 1 MiB, and without '/auth' at the end of the URI.",
                )
            return None
        doc = loads(self.data)
        if not isinstance(doc, GoObject):
            raise RequestRefused("request-body-invalid", f"{endpoint} body is not a JSON object",
                                 "Send a JSON object.")
        return doc


    def expect_none(self, endpoint: str) -> None:
        if self.data or self.maybe_hidden:
            raise RequestRefused(
                "request-body-missing",
                f"{endpoint} takes no body, and this request has one the plugin cannot see "
                "(dockerd may read it as form values)",
                "Send no body (Content-Length: 0).",
            )


Decoder = Callable[[Target, Body, Decoded], None]


def _no_body(target: Target, body: Body, out: Decoded) -> None:
    """State-changing endpoints that take no body: a hidden one may be a form."""
    body.expect_none(out.endpoint)


def _binary_body(target: Target, body: Body, out: Decoded) -> None:
    """Endpoints that take a tar stream (never forwarded): nothing to read."""



# ---------------------------------------------------------------------------------------
# Decoders: each fills ``decoded`` from the request; refusals raise RequestRefused.


def _host_config(doc: GoObject | None) -> tuple[GoObject | None, str]:
    """runconfig.ContainerConfigWrapper embeds *container.HostConfig, so HostConfig fields
    given at the top level are what dockerd uses when no (non-null) inner "HostConfig" is
    given; with one, the top level is ignored (but for a few resource limits)."""
    inner = get_obj(doc, "HostConfig")
    return (inner, "HostConfig") if inner is not None else (doc, "")


def _host_config_facts(doc: GoObject | None, out: Decoded) -> list[Fact]:
    host_config, where = _host_config(doc)
    for i, spec in enumerate(get_strings(host_config, "VolumesFrom", where) or ()):
        name = spec.split(":", 1)[0]
        out.volumes_from.append((name, f"{where + '.' if where else ''}VolumesFrom[{i}]"))
    out.volumes += checks.named_volumes(host_config, where)
    facts = checks.run_checks(checks.HOST_CONFIG_CHECKS, host_config, where)
    if where:
        # getHostConfig copies a top-level VolumeDriver (and a few resource limits) into an
        # inner HostConfig that leaves it empty.
        facts += checks.check_volume_driver(doc, "")
    return facts


def _container_create(target: Target, body: Body, out: Decoded) -> None:
    doc = body.json(out.endpoint)
    out.facts += _host_config_facts(doc, out)
    networking = get_obj(doc, "NetworkingConfig")
    endpoints = get_map(networking, "EndpointsConfig", "NetworkingConfig")
    for name in endpoints:
        if name.lower() == "host":
            out.facts.append(Fact("namespace.network", "host",
                                  f"NetworkingConfig.EndpointsConfig[{name!r}]"))
    image = get_str(doc, "Image")
    out.runs.append(image)


def _checkpoint_facts(directory: str, checkpoint: str, where: str) -> list[Fact]:
    """A checkpoint directory on the host (CRIU writes or reads it as root) and the id
    dockerd joins to it: the directory must be canonical, the id a plain name."""
    if checkpoint and ("/" in checkpoint or checkpoint in (".", "..")):
        raise canonical.noncanonical(f"{where}: checkpoint id {checkpoint[:100]!r} is not a plain name",
                                     "Name the checkpoint without '/'.")
    if not directory:
        return []
    return canonical.kernel_path_facts("host-path", directory, where, "checkpoint directory")


def _container_start(target: Target, body: Body, out: Decoded) -> None:
    out.starts.append(out.params.get("name", ""))
    if target.query.get("checkpoint"):
        out.facts.append(Fact("checkpoint", "restore", "query checkpoint",
                              "CRIU restores the process state it finds there, as root"))
    out.facts += _checkpoint_facts(target.query.get("checkpoint-dir"),
                                   target.query.get("checkpoint"), "query checkpoint-dir")
    if not target.version_below("1.24"):
        body.expect_none(out.endpoint)
        return
    # API < 1.24: a body (ContainerConfigWrapper) replaces the container's HostConfig.
    doc = body.json(out.endpoint, required=False)
    out.facts += _host_config_facts(doc, out)


def _checkpoint_list(target: Target, body: Body, out: Decoded) -> None:
    """dockerd creates and lists ``dir`` on the host, as root."""
    out.facts.append(Fact("checkpoint", "list", "path"))
    out.facts += _checkpoint_facts(target.query.get("dir"), "", "query dir")


def _checkpoint_remove(target: Target, body: Body, out: Decoded) -> None:
    """dockerd removes ``dir/CHECKPOINT`` on the host, recursively, as root."""
    body.expect_none(out.endpoint)
    out.facts.append(Fact("checkpoint", "remove", "path"))
    out.facts += _checkpoint_facts(target.query.get("dir"), out.params.get("checkpoint", ""),
                                   "query dir")


def _checkpoint_create(target: Target, body: Body, out: Decoded) -> None:
    doc = body.json(out.endpoint)
    out.facts.append(Fact("checkpoint", "create", "path"))
    out.acts_on.append(out.params.get("name", ""))
    out.facts += _checkpoint_facts(get_str(doc, "CheckpointDir"), get_str(doc, "CheckpointID"),
                                   "CheckpointDir")


def _container_restart(target: Target, body: Body, out: Decoded) -> None:
    body.expect_none(out.endpoint)
    out.starts.append(out.params.get("name", ""))


def _container_update(target: Target, body: Body, out: Decoded) -> None:
    doc = body.json(out.endpoint)
    facts = checks.run_checks(checks.RESOURCES_CHECKS, doc, "")
    out.facts += facts
    if any(f.kind == "restart-policy" for f in facts):
        # A restart policy on a container that mounts host paths: read what it mounts.
        out.acts_on.append(out.params.get("name", ""))


def _exec_create(target: Target, body: Body, out: Decoded) -> None:
    doc = body.json(out.endpoint)
    out.acts_on.append(out.params.get("name", ""))
    if get_bool(doc, "Privileged"):
        out.facts.append(Fact("privileged", "true", "Privileged", "docker exec --privileged"))


def _exec_start(target: Target, body: Body, out: Decoded) -> None:
    """Starts an exec made earlier (perhaps under another policy): its container's stored
    configuration and the exec's own privileges are checked (dockerd finds it by exact id)."""
    body.json(out.endpoint, required=False)
    out.execs.append(out.params.get("name", ""))


def _acts_inside(target: Target, body: Body, out: Decoded) -> None:
    """attach, archive get/head: act inside a container with what it was created with."""
    if target.method not in READ_METHODS:
        body.expect_none(out.endpoint)
    out.acts_on.append(out.params.get("name", ""))


def _archive_put(target: Target, body: Body, out: Decoded) -> None:
    """docker cp into a container (a tar body, never forwarded; its form values only move
    the copy within the container): judged on the container's stored state."""
    out.acts_on.append(out.params.get("name", ""))


def _container_copy(target: Target, body: Body, out: Decoded) -> None:
    """The pre-1.24 ``copy``: a file out of the container, through its mounts."""
    body.json(out.endpoint, required=False)
    out.acts_on.append(out.params.get("name", ""))


def _commit(target: Target, body: Body, out: Decoded) -> None:
    # The body (optional) is the new image's Config; it starts nothing itself.
    body.json(out.endpoint, required=False)
    repo = target.query.get("repo")
    if repo:
        out.facts.append(Fact("image.write", _ref(repo, target.query.get("tag")), "query repo"))


def _image_create(target: Target, body: Body, out: Decoded) -> None:
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
            out.facts.append(Fact("image.write", _ref(repo, query.get("tag")), "query repo"))
        return
    out.pulls.append(_ref(from_image, query.get("tag")))


def normalize_image(text: str, *, default_tag: bool) -> str:
    """The normalized reference (``docker.io/library/busybox:latest``), or the text as given
    when it is not a name (an image id) or not valid (dockerd will refuse it)."""
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return text
    return str(ref.with_default_tag() if default_tag else ref)


def _ref(name: str, tag: str) -> str:
    """images/create, commit and tag: ``fromImage``/``repo`` + ``tag`` (which may be a
    digest), combined as dockerd does; the text as given when invalid."""
    try:
        return str(pull_reference(name, tag))
    except InvalidReference:
        return f"{name}:{tag}" if tag else name


def _image_tag(target: Target, body: Body, out: Decoded) -> None:
    body.expect_none(out.endpoint)
    repo = target.query.get("repo")
    if repo:
        out.facts.append(Fact("image.write", _ref(repo, target.query.get("tag")), "query repo"))


def _build(target: Target, body: Body, out: Decoded) -> None:
    query = target.query
    if query.get("remote"):
        # A remote (or BuildKit session) build takes no body; one that has a body could
        # carry form values (networkmode=host) that dockerd reads and we cannot see.
        body.expect_none(out.endpoint)
    mode = query.get("networkmode")
    out.facts += checks.namespace_facts("namespace.network", mode, "query networkmode")
    for tag in query.getall("t"):
        out.facts.append(Fact("image.write", tag, "query t"))


def _volume_create(target: Target, body: Body, out: Decoded) -> None:
    doc = body.json(out.endpoint)
    out.facts += checks.local_volume_facts(get_str(doc, "Driver"), get_map(doc, "DriverOpts"),
                                           "DriverOpts")


def _plugin_target(target: Target, body: Body, out: Decoded) -> None:
    """enable, disable, remove: the plugin is read through dockerd (its privileges, and
    whether it is an authorization plugin)."""
    body.expect_none(out.endpoint)
    out.plugins.append(out.params.get("name", ""))


def _plugin_upgrade(target: Target, body: Body, out: Decoded) -> None:
    out.plugins.append(out.params.get("name", ""))
    _plugin_privileges(target, body, out)


def _plugin_privileges(target: Target, body: Body, out: Decoded) -> None:
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


def _plugin_create(target: Target, body: Body, out: Decoded) -> None:
    out.facts.append(Fact("plugin.privilege", "unknown", "body",
                          "a plugin built from a tar archive; its privileges cannot be read"))


def _plugin_set(target: Target, body: Body, out: Decoded) -> None:
    """``docker plugin set P mnt.source=/etc dev.path=/dev/sda``, and ``mnt=/etc``: a
    setting without a field goes to the single settable field of whatever it names, so
    each is resolved against the plugin's config, read through dockerd (live.py)."""
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


def _log_driver(holder: GoObject | None, where: str) -> list[Fact]:
    """A swarm ``LogDriver`` (service task templates, swarm task defaults)."""
    driver = get_obj(holder, "LogDriver", where)
    at = f"{where}.LogDriver" if where else "LogDriver"
    facts = checks.driver_facts("log-driver", get_str(driver, "Name", at),
                                checks.BUILTIN_LOG_DRIVERS, f"{at}.Name", "a log driver plugin")
    return facts + list(checks.log_option_facts(get_map(driver, "Options", at), f"{at}.Options"))


def _network_create(target: Target, body: Body, out: Decoded) -> None:
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


def _secret_or_config(target: Target, body: Body, out: Decoded) -> None:
    """A secret store or templating driver is a plugin, looked up by name as a path."""
    doc = body.json(out.endpoint)
    for key in ("Driver", "Templating"):
        driver = get_obj(doc, key)
        checks.plugin_name(get_str(driver, "Name", key), f"{key}.Name")


def _swarm_update(target: Target, body: Body, out: Decoded) -> None:
    doc = body.json(out.endpoint, required=False)
    out.facts += _log_driver(get_obj(doc, "TaskDefaults"), "TaskDefaults")


def _service(target: Target, body: Body, out: Decoded) -> None:
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
    out.facts += _log_driver(task, "TaskTemplate")
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


def _auth(target: Target, body: Body, out: Decoded) -> None:
    """``docker login``: dockerd never forwards a body to a URI ending in ``/auth``, and
    this handler decodes JSON credentials only (no form values): nothing to judge."""


def _body_json_optional(target: Target, body: Body, out: Decoded) -> None:
    """Endpoints whose JSON body the policy does not read, but which must parse."""
    body.json(out.endpoint, required=False)


# ---------------------------------------------------------------------------------------
# The route table.

R, W = False, True
_ROUTES: list[tuple[str, str, str, bool, Decoder | None]] = [
    # checkpoints (experimental); registered before the container routes, as in dockerd,
    # or DELETE /containers/{name:.*} would take them.
    ("GET", "/containers/{name:.*}/checkpoints", "checkpoint.list", R, _checkpoint_list),
    ("POST", "/containers/{name:.*}/checkpoints", "checkpoint.create", W, _checkpoint_create),
    ("DELETE", "/containers/{name}/checkpoints/{checkpoint}", "checkpoint.remove", W, _checkpoint_remove),
    # system
    ("GET", "/_ping", "system.ping", R, None),
    ("HEAD", "/_ping", "system.ping", R, None),
    ("GET", "/events", "system.events", R, None),
    ("GET", "/info", "system.info", R, None),
    ("GET", "/version", "system.version", R, None),
    ("GET", "/system/df", "system.df", R, None),
    ("POST", "/auth", "system.auth", W, _auth),
    # containers
    ("HEAD", "/containers/{name:.*}/archive", "container.archive.stat", R, _acts_inside),
    ("GET", "/containers/json", "container.list", R, None),
    ("GET", "/containers/{name:.*}/export", "container.export", R, None),
    ("GET", "/containers/{name:.*}/changes", "container.changes", R, None),
    ("GET", "/containers/{name:.*}/json", "container.inspect", R, None),
    ("GET", "/containers/{name:.*}/top", "container.top", R, None),
    ("GET", "/containers/{name:.*}/logs", "container.logs", R, None),
    ("GET", "/containers/{name:.*}/stats", "container.stats", R, None),
    ("GET", "/containers/{name:.*}/attach/ws", "container.attach", W, _acts_inside),
    ("GET", "/exec/{id:.*}/json", "exec.inspect", R, None),
    ("GET", "/containers/{name:.*}/archive", "container.archive.get", R, _acts_inside),
    ("POST", "/containers/create", "container.create", W, _container_create),
    ("POST", "/containers/{name:.*}/kill", "container.kill", W, None),
    ("POST", "/containers/{name:.*}/pause", "container.pause", W, None),
    ("POST", "/containers/{name:.*}/unpause", "container.unpause", W, None),
    ("POST", "/containers/{name:.*}/restart", "container.restart", W, _container_restart),
    ("POST", "/containers/{name:.*}/start", "container.start", W, _container_start),
    ("POST", "/containers/{name:.*}/stop", "container.stop", W, None),
    ("POST", "/containers/{name:.*}/wait", "container.wait", R, None),
    ("POST", "/containers/{name:.*}/resize", "container.resize", W, None),
    ("POST", "/containers/{name:.*}/attach", "container.attach", W, _acts_inside),
    ("POST", "/containers/{name:.*}/copy", "container.copy", R, _container_copy),
    ("POST", "/containers/{name:.*}/exec", "exec.create", W, _exec_create),
    ("POST", "/exec/{name:.*}/start", "exec.start", W, _exec_start),
    ("POST", "/exec/{name:.*}/resize", "exec.resize", W, None),
    ("POST", "/containers/{name:.*}/rename", "container.rename", W, None),
    ("POST", "/containers/{name:.*}/update", "container.update", W, _container_update),
    ("POST", "/containers/prune", "container.prune", W, None),
    ("POST", "/commit", "image.commit", W, _commit),
    ("PUT", "/containers/{name:.*}/archive", "container.archive.put", W, _archive_put),
    ("DELETE", "/containers/{name:.*}", "container.remove", W, None),
    # images
    ("GET", "/images/json", "image.list", R, None),
    ("GET", "/images/search", "image.search", R, None),
    ("GET", "/images/get", "image.save", R, None),
    ("GET", "/images/{name:.*}/get", "image.save", R, None),
    ("GET", "/images/{name:.*}/history", "image.history", R, None),
    ("GET", "/images/{name:.*}/json", "image.inspect", R, None),
    ("POST", "/images/load", "image.load", W, _binary_body),
    ("POST", "/images/create", "image.pull", W, _image_create),
    ("POST", "/images/{name:.*}/push", "image.push", W, _body_json_optional),
    ("POST", "/images/{name:.*}/tag", "image.tag", W, _image_tag),
    ("POST", "/images/prune", "image.prune", W, None),
    ("DELETE", "/images/{name:.*}", "image.remove", W, None),
    # build
    ("POST", "/build", "build", W, _build),
    ("POST", "/build/prune", "build.prune", W, None),
    ("POST", "/build/cancel", "build.cancel", W, None),
    ("POST", "/session", "build.session", W, None),
    ("POST", "/grpc", "build.grpc", W, None),
    # distribution
    ("GET", "/distribution/{name:.*}/json", "distribution.inspect", R, None),
    # volumes
    ("GET", "/volumes", "volume.list", R, None),
    ("GET", "/volumes/{name:.*}", "volume.inspect", R, None),
    ("POST", "/volumes/create", "volume.create", W, _volume_create),
    ("POST", "/volumes/prune", "volume.prune", W, None),
    ("DELETE", "/volumes/{name:.*}", "volume.remove", W, None),
    # networks
    ("GET", "/networks", "network.list", R, None),
    ("GET", "/networks/", "network.list", R, None),
    ("GET", "/networks/{id:.+}", "network.inspect", R, None),
    ("POST", "/networks/create", "network.create", W, _network_create),
    ("POST", "/networks/{id:.*}/connect", "network.connect", W, _body_json_optional),
    ("POST", "/networks/{id:.*}/disconnect", "network.disconnect", W, _body_json_optional),
    ("POST", "/networks/prune", "network.prune", W, None),
    ("DELETE", "/networks/{id:.*}", "network.remove", W, None),
    # plugins
    ("GET", "/plugins/{name:.*}/json", "plugin.inspect", R, None),
    ("GET", "/plugins/privileges", "plugin.privileges", R, None),
    ("GET", "/plugins", "plugin.list", R, None),
    ("POST", "/plugins/{name:.*}/enable", "plugin.enable", W, _plugin_target),
    ("POST", "/plugins/{name:.*}/disable", "plugin.disable", W, _plugin_target),
    ("POST", "/plugins/pull", "plugin.pull", W, _plugin_privileges),
    ("POST", "/plugins/{name:.*}/push", "plugin.push", W, None),
    ("POST", "/plugins/{name:.*}/upgrade", "plugin.upgrade", W, _plugin_upgrade),
    ("POST", "/plugins/{name:.*}/set", "plugin.set", W, _plugin_set),
    ("POST", "/plugins/create", "plugin.create", W, _plugin_create),
    ("DELETE", "/plugins/{name:.*}", "plugin.remove", W, _plugin_target),
    # swarm
    ("GET", "/swarm", "swarm.inspect", R, None),
    ("GET", "/swarm/unlockkey", "swarm.unlockkey", R, None),
    ("POST", "/swarm/init", "swarm.init", W, _body_json_optional),
    ("POST", "/swarm/join", "swarm.join", W, _body_json_optional),
    ("POST", "/swarm/leave", "swarm.leave", W, None),
    ("POST", "/swarm/update", "swarm.update", W, _swarm_update),
    ("POST", "/swarm/unlock", "swarm.unlock", W, _body_json_optional),
    ("GET", "/services", "service.list", R, None),
    ("GET", "/services/{id}", "service.inspect", R, None),
    ("POST", "/services/create", "service.create", W, _service),
    ("POST", "/services/{id}/update", "service.update", W, _service),
    ("DELETE", "/services/{id}", "service.remove", W, None),
    ("GET", "/services/{id}/logs", "service.logs", R, None),
    ("GET", "/nodes", "node.list", R, None),
    ("GET", "/nodes/{id}", "node.inspect", R, None),
    ("DELETE", "/nodes/{id}", "node.remove", W, None),
    ("POST", "/nodes/{id}/update", "node.update", W, _body_json_optional),
    ("GET", "/tasks", "task.list", R, None),
    ("GET", "/tasks/{id}", "task.inspect", R, None),
    ("GET", "/tasks/{id}/logs", "task.logs", R, None),
    ("GET", "/secrets", "secret.list", R, None),
    ("POST", "/secrets/create", "secret.create", W, _secret_or_config),
    ("DELETE", "/secrets/{id}", "secret.remove", W, None),
    ("GET", "/secrets/{id}", "secret.inspect", R, None),
    ("POST", "/secrets/{id}/update", "secret.update", W, _body_json_optional),
    ("GET", "/configs", "config.list", R, None),
    ("POST", "/configs/create", "config.create", W, _secret_or_config),
    ("DELETE", "/configs/{id}", "config.remove", W, None),
    ("GET", "/configs/{id}", "config.inspect", R, None),
    ("POST", "/configs/{id}/update", "config.update", W, _body_json_optional),
]


def _compile(pattern: str) -> re.Pattern[str]:
    out, pos = "^", 0
    for m in re.finditer(r"\{(\w+)(?::([^}]+))?\}", pattern):
        out += re.escape(pattern[pos:m.start()])
        out += f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})"
        pos = m.end()
    return re.compile(out + re.escape(pattern[pos:]) + "$", re.DOTALL)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    endpoint: str
    write: bool
    decoder: Decoder | None


ROUTES: tuple[Route, ...] = tuple(
    Route(m, p, _compile(p), e, w, d if d is not None or not w else _no_body)
    for m, p, e, w, d in _ROUTES
)
_BY_METHOD: dict[str, tuple[Route, ...]] = {}
for _route in ROUTES:
    _BY_METHOD[_route.method] = _BY_METHOD.get(_route.method, ()) + (_route,)

# Literal paths (most calls) are found without running a regex.
_LITERAL: dict[tuple[str, str], Route] = {}
for _route in ROUTES:
    if "{" not in _route.pattern:
        _LITERAL.setdefault((_route.method, _route.pattern), _route)

READ_METHODS = frozenset({"GET", "HEAD"})

# Every endpoint name a decision can carry (rules and exceptions may only name these).
ENDPOINTS: frozenset[str] = frozenset({e for _, _, e, _, _ in _ROUTES} | {
    "image.import", "system.debug", "system.options", "unknown.read", "unknown.write"})


# Registered outside the versioned table: /debug/* answers any method (pprof, expvar), and
# OPTIONS on any path is the CORS preflight.
_DEBUG = Route("*", "/debug/{path:.*}", _compile("/debug/{path:.*}"), "system.debug", False, None)
_OPTIONS = Route("OPTIONS", "/{path:.*}", _compile("/{path:.*}"), "system.options", False, None)


def match_route(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    if path == "/debug" or path.startswith("/debug/"):
        return _DEBUG, {}
    if method == "OPTIONS":
        return _OPTIONS, {}
    route = _LITERAL.get((method, path))
    if route is not None:
        return route, {}
    for route in _BY_METHOD.get(method, ()):
        m = route.regex.match(path)
        if m:
            return route, m.groupdict()
    return None, {}


def decode_target(target: Target, body: Body) -> Decoded:
    route, params = match_route(target.method, target.path)
    if route is None:
        write = target.method not in READ_METHODS
        return Decoded(endpoint="unknown.write" if write else "unknown.read", write=write,
                       facts=[Fact("endpoint", "unknown.write" if write else "unknown.read",
                                   f"{target.method} {target.path[:200]}")])
    decoded = Decoded(endpoint=route.endpoint, write=route.write, params=params)
    if route.decoder is not None:
        route.decoder(target, body, decoded)
    decoded.facts.insert(0, Fact("endpoint", decoded.endpoint, f"{target.method} {route.pattern}"))
    for ref in decoded.runs:
        decoded.facts.append(Fact("image", normalize_image(ref, default_tag=True), "Image",
                                  "starts a container"))
    for ref in decoded.services:
        decoded.facts.append(Fact("image", normalize_image(ref, default_tag=True),
                                  "TaskTemplate.ContainerSpec.Image", "a service runs it"))
    for ref in decoded.pulls:
        decoded.facts.append(Fact("image", ref, "query fromImage", "pulled"))
    return decoded
