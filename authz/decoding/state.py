"""Facts that depend on dockerd's current state, read over its API.

Some requests name things whose meaning is in dockerd, not in the request:

- ``POST /containers/{id}/start`` (and restart, exec, attach, archive) acts on a container
  created earlier. Its stored HostConfig is checked again exactly as at create: bind sources
  are resolved anew (a symlink swapped since the create is seen) and containers created
  before this policy, or by another route, are caught. Its image id goes to image trust.
- ``--volumes-from NAME`` takes over another container's mounts, and a named volume mounts
  what its options said when it was created.
- A swarm service may name the host network by id or id prefix, not only as ``host``.
- A plugin acted on is judged by the config it was installed with.
- A create without ``User`` runs as its image's default user, and ``-P`` publishes its
  image's exposed ports: the image is read as dockerd resolves ``Config.Image``.

Every read goes through dockerd (and so through this plugin, served by another thread),
within the decision's deadline (``lookups.py``), at most once per object and decision (the
decision's reads remember the answer; image trust reads through them too); a read that
fails refuses the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.deadline import DeadlineExceeded
from authz.decoding import checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.decoding.findings import Findings, ImageDefaults, normalize_image
from authz.decoding.lookups import Lookups
from authz.decoding.plugins import plugin_privilege_facts, plugin_setting_facts
from authz.moby import views
from authz.moby.client import DockerError
from authz.moby.daemon import cached_daemon_paths
from authz.moby.gojson import GoObject, from_parsed
from authz.moby.ids import is_full_id

# Objects one decision may read through dockerd (each read also comes back through this
# plugin). Real requests name a handful; each name is read once.
MAX_LOOKUPS = 32


@dataclass(frozen=True)
class ActedOn:
    """A container a request acts on: the facts of its stored configuration and its image."""
    facts: list[Fact]
    image_id: str
    image: str          # the image name it was created from (Config.Image)


@dataclass
class StateFacts:
    """What dockerd's state adds to a request's findings."""
    facts: list[Fact] = field(default_factory=list)
    stored: list[Fact] = field(default_factory=list)   # the acted-on containers' own config
    image: str = ""                                     # their image, for images: patterns
    started_images: list[str] = field(default_factory=list)  # image ids a start runs


def _target_fact(name: str, obj_id: str, obj_name: str, what: str = "container") -> Fact:
    """How a request names the container (or plugin) it acts on. dockerd looks the name up
    again after the plugin decides (full id, then exact name, then id prefix): only a full
    id cannot be made to point at another one in between (a rename, a remove, a create)."""
    if is_full_id(name) and obj_id == name:
        value = "id"
    elif obj_name in ("/" + name, name, name + ":latest"):
        value = "name"
    else:
        value = "prefix"
    return Fact("target", value, "path", f"{name[:100]!r} is {what} {obj_id[:64]}")


def _missing(name: str, what: str = "container") -> Fact:
    # dockerd answers 404 now, but one may take the name before it looks.
    return Fact("target", "missing", "path", f"no {what} {name[:100]!r}")


def _unique(facts: list[Fact]) -> list[Fact]:
    seen: set[tuple[str, str]] = set()
    out = []
    for fact in facts:
        if (fact.kind, fact.value) not in seen:
            seen.add((fact.kind, fact.value))
            out.append(fact)
    return out


def _unavailable(what: str, exc: Exception) -> RequestRefused:
    return RequestRefused(
        "request-state",
        f"{what} could not be read from dockerd: {exc}",
        "Retry; check that dockerd answers and that the policy allows the plugin's reads "
        "(GET /containers/*/json, /images/*/json, /networks/*, /volumes/*).",
    )


def _added_label_at(host_config: dict) -> int | None:
    """Where in the stored SecurityOpt dockerd put the ``label=disable`` it adds itself: its
    ``generateSecurityOpt`` appends it to a container created privileged or with the host's
    pid or ipc namespace that gives no ``label`` option of its own (moby daemon/create.go).
    That option follows from what the create asked for, which is judged as such."""
    opts = host_config.get("SecurityOpt")
    if not isinstance(opts, list) or not opts:
        return None
    host = (host_config.get("Privileged") is True or host_config.get("PidMode") == "host"
            or host_config.get("IpcMode") == "host")
    labels = [o for o in opts if isinstance(o, str) and o.split("=", 1)[0] == "label"]
    if host and labels == ["label=disable"] and opts[-1] == "label=disable":
        return len(opts) - 1
    return None


def _without_added_label(facts: list[Fact], host_config: dict) -> list[Fact]:
    """The stored configuration's facts but the SELinux opt-out dockerd added itself."""
    at = _added_label_at(host_config)
    if at is None:
        return facts
    where = f"container.HostConfig.SecurityOpt[{at}]"
    return [f for f in facts if not (f.kind == "selinux" and f.where == where)]


def _as_request(host_config: dict) -> GoObject:
    """A stored HostConfig, read like a request's (the same checks run on it)."""
    return from_parsed(host_config)


class DockerState:
    """dockerd's state as one decision reads it: every read takes the decision's lookups."""

    def __init__(self, lookups: Lookups):
        self.lookups = lookups
        self.reads = lookups.reads   # dockerd's inspect_* calls, each answer kept

    def _read(self, what: str, inspect, name: str, view):
        """One inspect through dockerd, as ``view`` (None: no such object); a failure, or an
        answer without the keys that name the object, refuses the request."""
        try:
            info = inspect(name, self.lookups.use())
            return None if info is None else view.of(info)
        except (DockerError, DeadlineExceeded, views.InvalidAnswer) as exc:
            raise _unavailable(what, exc) from None

    def acted_on(self, name: str) -> ActedOn:
        """The facts of acting on container ``name`` with what it was created with (start,
        restart, exec, attach, archive): how the request names it, its stored HostConfig,
        and the mounts dockerd will make (including those of --volumes-from and of named
        volumes, whose options are looked up)."""
        container = self._read(f"container {name[:100]!r}", self.reads.inspect_container,
                               name, views.Container)
        if container is None:
            return ActedOn([_missing(name)], "", "")  # dockerd refuses the request itself
        facts = [_target_fact(name, container.id, container.name)]
        # Every check that reads a stored HostConfig (not the cgroup namespace: dockerd
        # stores its own default there; see checks/privileges.py).
        facts += _without_added_label(
            checks.run(checks.STORED_HOST_CONFIG, _as_request(container.host_config),
                       "container.HostConfig"), container.host_config)
        # Only the stored Config's fields that checks read (its Env and labels may be large).
        facts += checks.run(checks.STORED_CONFIG, _as_request({"User": container.user}),
                            "container.Config")
        facts += self._mount_facts(container.mounts)
        return ActedOn(_unique(facts), container.image_id, container.image_name)

    def _mount_facts(self, mounts: tuple[views.Mount, ...]) -> list[Fact]:
        """The container's mounts as dockerd lists them: bind sources resolved anew, local
        volumes by their options."""
        facts: list[Fact] = []
        for i, mount in enumerate(mounts):
            at = f"container.Mounts[{i}]"
            if mount.type == "bind" and mount.source:
                facts += checks.host_path_facts("host-path", mount.source, at)  # dockerd cleaned it
                if mount.propagation in ("shared", "rshared"):
                    facts.append(Fact("mount-propagation", mount.propagation, at))
            elif mount.type == "volume" and mount.name:
                facts += self.volume_facts(mount.name, at)
        return facts

    def exec_facts(self, exec_id: str) -> tuple[list[Fact], ActedOn | None]:
        """Starting exec ``exec_id`` (dockerd finds it by exact id only): its own privileges
        and its container's stored configuration, as the exec runs with both; and the
        container."""
        instance = self._read(f"exec {exec_id[:100]!r}", self.reads.inspect_exec, exec_id,
                              views.Exec)
        if instance is None:
            return [], None  # dockerd answers 404; exec ids are dockerd's random ids
        facts: list[Fact] = []
        if instance.privileged:
            facts.append(Fact("privileged", "true", "exec.ProcessConfig.privileged",
                              "the exec was created --privileged"))
        if instance.user:
            facts += checks.user_facts(instance.user, "exec.ProcessConfig.user",
                                       "the exec was created -u")
        container = self.acted_on(instance.container_id)
        return facts + [f for f in container.facts if f.kind != "target"], container

    def image_default_facts(self, defaults: ImageDefaults) -> list[Fact]:
        """What a create takes from its image, read as dockerd resolves ``Config.Image``:
        its ``USER`` when the create gives none, the ports ``-P`` publishes. For an image
        dockerd does not have now, the user is unknown: dockerd refuses the create, but looks
        the image up again after this decision, and a pull finishing in between would run
        its default user unseen (the CLI's pull-then-create-again is judged anew)."""
        image = self._read(f"image {defaults.image[:100]!r}", self.reads.inspect_image,
                           defaults.image, views.Image)
        if image is None:
            return [Fact("user.root", "unknown", defaults.where,
                         f"image {defaults.image[:100]!r} is not here: its default user is "
                         "not known")] if defaults.user else []
        detail = f"the default of image {defaults.image[:100]!r}"
        facts: list[Fact] = []
        if defaults.user:
            facts += checks.user_facts(image.user, "image.Config.User", detail)
        if defaults.publish_all:
            facts += checks.publish_all_facts(image.exposed_ports, defaults.covered,
                                              "image.Config.ExposedPorts", detail)
        return facts

    def plugin_facts(self, name: str, endpoint: str, settings: list[str]) -> list[Fact]:
        """A plugin acted on: how the request names it, the interfaces it implements (an
        authorization plugin is protected), at enable the privileges it runs with, and for
        ``plugin set`` what each setting changes, resolved as dockerd's settable code does."""
        plugin = self._read(f"plugin {name[:100]!r}", self.reads.inspect_plugin, name,
                            views.Plugin)
        if plugin is None:
            return [_missing(name, "plugin")]
        facts = [_target_fact(name, plugin.id, plugin.name, "plugin")]
        facts += [Fact("plugin.interface", kind, "plugin.Config.Interface.Types")
                  for kind in plugin.interface_types]
        if endpoint == "plugin.enable":
            facts += plugin_privilege_facts(plugin.config)
        for i, setting in enumerate(settings):
            facts += plugin_setting_facts(plugin.config, setting, f"[{i}]")
        return _unique(facts)

    def daemon_paths(self) -> list[tuple[str, str]]:
        """dockerd's and containerd's roots on this host, as the running dockerd has them:
        ``(path, what)``, re-read once a minute; a read that fails refuses the request."""
        try:
            return cached_daemon_paths(self.lookups.docker, self.lookups.use())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable("dockerd's data root (GET /info)", exc) from None

    def volume_facts(self, name: str, where: str) -> list[Fact]:
        """A named volume: what its ``local`` driver options mount (set when it was created,
        perhaps before this policy)."""
        volume = self._read(f"volume {name[:100]!r}", self.reads.inspect_volume, name,
                            views.Volume)
        if volume is None:
            return []  # dockerd creates it, plain, at the create
        return [Fact(f.kind, f.value, f.where, f"volume {name!r}")
                for f in checks.local_volume_facts(volume.driver, volume.options, where)]

    def volumes_from_facts(self, name: str, where: str) -> list[Fact]:
        """``--volumes-from NAME`` takes over NAME's mounts: its binds and volumes count as
        this container's (checked with the policy in force now)."""
        container = self._read(f"container {name[:100]!r}", self.reads.inspect_container,
                               name, views.Container)
        if container is None:
            return [_missing(name)]
        facts = checks.run(checks.VOLUMES_FROM, _as_request(container.host_config), where)
        # dockerd looks NAME up again when it creates the container: a full id only.
        return [_target_fact(name, container.id, container.name)] + [
            Fact(f.kind, f.value, f.where, f"from {name!r}") for f in facts]

    def network_config_facts(self, name: str, driver: str, where: str) -> list[Fact]:
        """``--config-from NAME``: the options stored in config-only network NAME, read as
        if they were given to this create."""
        network = self._read(f"network {name[:100]!r}", self.reads.inspect_network, name,
                             views.Network)
        if network is None:
            return [_missing(name, "network")]
        return [Fact(f.kind, f.value, f.where, f"from {name!r}")
                for f in checks.network_option_facts(driver, network.options, where)]

    def network_facts(self, target: str, where: str) -> list[Fact]:
        """A service network named by id or id prefix may be the host network."""
        network = self._read(f"network {target[:100]!r}", self.reads.inspect_network, target,
                             views.Network)
        if network is None:
            return []  # dockerd refuses a service on a network it does not have
        if network.driver == "host" or network.name == "host":
            return [Fact("namespace.network", "host", where, f"{target!r} is the host network")]
        return []


def _first(pairs: list[tuple]) -> list[tuple]:
    """Each name once (the first place it was found)."""
    seen: dict = {}
    for pair in pairs:
        seen.setdefault(pair[0], pair)
    return list(seen.values())


def bound_reads(findings: Findings) -> None:
    """Read each object once, and refuse a request that would read more than MAX_LOOKUPS."""
    findings.starts = list(dict.fromkeys(findings.starts))
    findings.acts_on = [n for n in dict.fromkeys(findings.acts_on) if n not in findings.starts]
    findings.execs = list(dict.fromkeys(findings.execs))
    findings.plugins = list(dict.fromkeys(findings.plugins))
    findings.volumes = _first(findings.volumes)
    findings.volumes_from = _first(findings.volumes_from)
    findings.network_targets = _first(findings.network_targets)
    findings.network_configs = _first(findings.network_configs)
    count = sum(len(x) for x in (findings.starts, findings.acts_on, findings.execs,
                                 findings.plugins, findings.volumes, findings.volumes_from,
                                 findings.network_targets, findings.network_configs,
                                 findings.image_defaults))
    if count > MAX_LOOKUPS:
        raise RequestRefused("request-body-invalid",
                             f"deciding would read {count} objects through dockerd (named "
                             f"volumes, --volumes-from, networks...); at most {MAX_LOOKUPS}",
                             "Split the request, or name fewer volumes and networks.")


def _image_of(container: ActedOn | None) -> str:
    """The image an acted-on container runs, for image-scoped exceptions."""
    if container is None or not container.image_id:
        return ""
    return normalize_image(container.image or container.image_id, default_tag=True)


def read_state(findings: Findings, lookups: Lookups) -> StateFacts:
    """Everything the findings say must be read through dockerd, as facts."""
    bound_reads(findings)
    state, out = DockerState(lookups), StateFacts()
    for name in findings.starts:
        started = state.acted_on(name)
        out.facts += started.facts
        out.stored += started.facts
        out.image = out.image or _image_of(started)
        if started.image_id:
            out.started_images.append(started.image_id)
    for name in findings.acts_on:
        inside = state.acted_on(name)
        out.facts += inside.facts
        out.stored += inside.facts
        out.image = out.image or _image_of(inside)
    for exec_id in findings.execs:
        found, inside = state.exec_facts(exec_id)
        out.facts += found
        out.stored += [f for f in found if f.where.startswith("container.")]
        out.image = out.image or _image_of(inside)
    for name in findings.plugins:
        out.facts += state.plugin_facts(name, findings.endpoint, findings.plugin_settings)
    for name, where in findings.volumes:
        out.facts += state.volume_facts(name, where)
    for name, where in findings.volumes_from:
        out.facts += state.volumes_from_facts(name, where)
    for target, where in findings.network_targets:
        out.facts += state.network_facts(target, where)
    for name, driver, where in findings.network_configs:
        out.facts += state.network_config_facts(name, driver, where)
    for defaults in findings.image_defaults:
        out.facts += state.image_default_facts(defaults)
    return out
