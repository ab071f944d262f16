"""Facts that depend on dockerd's current state, looked up over its API.

Some requests name things whose meaning is in dockerd, not in the request:

- ``POST /containers/{id}/start`` (and restart) runs a container created earlier. Its stored
  HostConfig is checked again exactly as at create: bind sources are resolved anew (a
  symlink swapped since the create is seen) and containers created before this policy, or by
  another route, are caught. Its image id goes to image trust.
- ``--volumes-from NAME`` takes over another container's mounts, and a named volume mounts
  what its options said when it was created.
- A swarm service may name the host network by id or id prefix, not only as ``host``.

Every lookup is a read through dockerd (and so through this plugin, served by another
thread), bounded in time; a lookup that fails refuses the request.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

from authz.decoding import canonical, checks
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.moby.gojson import GoObject, loads
from authz.moby.ids import is_full_id
from authz.moby.client import DockerClient, DockerError
from authz.deadline import Deadline, DeadlineExceeded

# How long what dockerd reports of its own roots is reused (a new data root needs a restart
# of dockerd; the plugin sees it within this time).
ROOTS_TTL_SECONDS = 60.0
_ROOTS_CACHE: dict[str, tuple[float, list[tuple[str, str]]]] = {}
_ROOTS_LOCK = threading.Lock()
DEFAULT_EXEC_ROOT = "/var/run/docker"
DEFAULT_DAEMON_JSON = "/etc/docker/daemon.json"

# All of one decision's lookups share this budget (dockerd waits on the plugin without a
# timeout of its own).
LOOKUP_SECONDS = 3.0


@dataclass(frozen=True)
class StartedContainer:
    facts: list[Fact]
    image_id: str
    image: str          # the image name it was created from (Config.Image)


def _target_fact(name: str, info: dict, what: str = "container") -> Fact:
    """How a request names the container (or plugin) it acts on. dockerd looks the name up
    again after the plugin decides (full id, then exact name, then id prefix): only a full
    id cannot be made to point at another one in between (a rename, a remove, a create)."""
    if is_full_id(name) and info.get("Id") == name:
        value = "id"
    elif info.get("Name") in ("/" + name, name, name + ":latest"):
        value = "name"
    else:
        value = "prefix"
    return Fact("target", value, "path", f"{name[:100]!r} is {what} {str(info.get('Id'))[:64]}")


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
        "(GET /containers/*/json, /networks/*, /volumes/*).",
    )


class LiveState:
    """dockerd's state as one decision sees it: every lookup shares one deadline."""

    def __init__(self, docker: DockerClient, deadline: Deadline | None = None):
        self.docker = docker
        self.deadline = deadline

    def for_decision(self) -> "LiveState":
        return LiveState(self.docker, self._budget())

    def _budget(self) -> Deadline:
        return self.deadline or Deadline(LOOKUP_SECONDS)

    def _container(self, name: str) -> tuple[dict, GoObject] | None:
        """The container's inspect JSON and its stored HostConfig (read like a request's)."""
        try:
            info = self.docker.inspect_container(name, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"container {name[:100]!r}", exc) from None
        if info is None:
            return None  # dockerd refuses the request itself
        stored = info.get("HostConfig")
        return info, loads(json.dumps(stored if isinstance(stored, dict) else {}).encode())

    def started_container(self, name: str) -> StartedContainer:
        """The facts of acting on container ``name`` with what it was created with (start,
        restart, exec, attach, archive): how the request names it, its stored HostConfig,
        and the mounts dockerd will make (including those of --volumes-from and of named
        volumes, whose options are looked up)."""
        found = self._container(name)
        if found is None:
            return StartedContainer([_missing(name)], "", "")
        info, doc = found
        facts = [_target_fact(name, info)]
        # dockerd stores its own defaults; the cgroup namespace default is "host" on cgroup v1
        # hosts (or by daemon configuration), so a stored "host" says nothing about what was
        # asked: the cgroup namespace is judged at create only.
        facts += [f for f in checks.run_checks(checks.HOST_CONFIG_CHECKS, doc, "container.HostConfig")
                  if f.kind != "namespace.cgroup"]
        facts += self._mount_facts(info.get("Mounts"))
        config = info.get("Config")
        image = config.get("Image") if isinstance(config, dict) else None
        return StartedContainer(_unique(facts), info["Image"], image if isinstance(image, str) else "")

    def _mount_facts(self, mounts) -> list[Fact]:
        """The container's mounts as dockerd lists them: bind sources resolved anew, local
        volumes by their options."""
        facts: list[Fact] = []
        for i, mount in enumerate(mounts if isinstance(mounts, list) else []):
            if not isinstance(mount, dict):
                continue
            at = f"container.Mounts[{i}]"
            kind, source = mount.get("Type"), mount.get("Source")
            if kind == "bind" and isinstance(source, str) and source:
                facts += checks.host_path_facts("host-path", source, at)  # dockerd cleaned it
                propagation = mount.get("Propagation")
                if propagation in ("shared", "rshared"):
                    facts.append(Fact("mount-propagation", propagation, at))
            elif kind == "volume" and isinstance(mount.get("Name"), str):
                facts += self.volume_facts(mount["Name"], at)
        return facts

    def exec_facts(self, exec_id: str) -> tuple[list[Fact], "StartedContainer | None"]:
        """Starting exec ``exec_id`` (dockerd finds it by exact id only): its own privileges
        and its container's stored configuration, as the exec runs with both; and the
        container."""
        try:
            info = self.docker.inspect_exec(exec_id, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"exec {exec_id[:100]!r}", exc) from None
        if info is None:
            return [], None  # dockerd answers 404; exec ids are dockerd's random ids
        facts: list[Fact] = []
        process = info.get("ProcessConfig")
        if isinstance(process, dict) and process.get("privileged") is True:
            facts.append(Fact("privileged", "true", "exec.ProcessConfig.privileged",
                              "the exec was created --privileged"))
        container = self.started_container(info["ContainerID"])
        return facts + [f for f in container.facts if f.kind != "target"], container

    def plugin_facts(self, name: str, endpoint: str, settings: list[str]) -> list[Fact]:
        """A plugin acted on: how the request names it, the interfaces it implements (an
        authorization plugin is protected), at enable the privileges it runs with, and for
        ``plugin set`` what each setting changes, resolved as dockerd's settable code does."""
        try:
            info = self.docker.inspect_plugin(name, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"plugin {name[:100]!r}", exc) from None
        if info is None:
            return [_missing(name, "plugin")]
        facts = [_target_fact(name, info, "plugin")]
        config = info.get("Config") if isinstance(info.get("Config"), dict) else {}
        interface = config.get("Interface") if isinstance(config.get("Interface"), dict) else {}
        for kind in interface.get("Types") or ():
            if isinstance(kind, str):
                facts.append(Fact("plugin.interface", kind, "plugin.Config.Interface.Types"))
        if endpoint == "plugin.enable":
            facts += plugin_privilege_facts(config)
        for i, setting in enumerate(settings):
            facts += plugin_setting_facts(config, setting, f"[{i}]")
        return _unique(facts)

    def daemon_paths(self) -> list[tuple[str, str]]:
        """dockerd's and containerd's roots on this host, as the running dockerd has them:
        ``(path, what)``. Read at most once a minute (``GET /info`` and dockerd's command
        line and daemon.json); a read that fails refuses the request."""
        key = self.docker.docker_host
        with _ROOTS_LOCK:
            cached = _ROOTS_CACHE.get(key)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
        try:
            info = self.docker.info(self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable("dockerd's data root (GET /info)", exc) from None
        paths = daemon_roots(info, dockerd_arguments(self.docker))
        with _ROOTS_LOCK:
            _ROOTS_CACHE[key] = (time.monotonic() + ROOTS_TTL_SECONDS, paths)
        return paths

    def volume_facts(self, name: str, where: str) -> list[Fact]:
        """A named volume: what its ``local`` driver options mount (set when it was created,
        perhaps before this policy)."""
        try:
            info = self.docker.inspect_volume(name, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"volume {name[:100]!r}", exc) from None
        if info is None:
            return []  # dockerd creates it, plain, at the create
        options = info.get("Options")
        driver = info.get("Driver")
        return [Fact(f.kind, f.value, f.where, f"volume {name!r}") for f in checks.local_volume_facts(
            driver if isinstance(driver, str) else "", options if isinstance(options, dict) else {},
            where)]

    def volumes_from_facts(self, name: str, where: str) -> list[Fact]:
        """``--volumes-from NAME`` takes over NAME's mounts: its binds and volumes count as
        this container's (checked with the policy in force now)."""
        found = self._container(name)
        if found is None:
            return [_missing(name)]
        facts = checks.run_checks((checks.check_binds, checks.check_mounts,
                                   checks.check_volume_driver), found[1], where)
        # dockerd looks NAME up again when it creates the container: a full id only.
        return [_target_fact(name, found[0])] + [
            Fact(f.kind, f.value, f.where, f"from {name!r}") for f in facts]

    def network_config_facts(self, name: str, driver: str, where: str) -> list[Fact]:
        """``--config-from NAME``: the options stored in config-only network NAME, read as
        if they were given to this create."""
        try:
            info = self.docker.inspect_network(name, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"network {name[:100]!r}", exc) from None
        if info is None:
            return [_missing(name, "network")]
        options = info.get("Options") if isinstance(info.get("Options"), dict) else {}
        return [Fact(f.kind, f.value, f.where, f"from {name!r}")
                for f in checks.network_option_facts(driver, options, where)]

    def network_facts(self, target: str, where: str) -> list[Fact]:
        try:
            info = self.docker.inspect_network(target, self._budget())
        except (DockerError, DeadlineExceeded) as exc:
            raise _unavailable(f"network {target[:100]!r}", exc) from None
        if info is None:
            return []  # dockerd refuses a service on a network it does not have
        if info.get("Driver") == "host" or info.get("Name") == "host":
            return [Fact("namespace.network", "host", where, f"{target!r} is the host network")]
        return []


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


def _flags(args: list[str], *names: str) -> list[str]:
    """Every value of a command-line flag (``--name V`` or ``--name=V``)."""
    found = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found.append(args[i + 1])
            elif arg.startswith(name + "="):
                found.append(arg[len(name) + 1:])
    return found


def _flag(args: list[str], *names: str) -> str | None:
    """The value of a command-line flag (the last wins, as in Go's flag parsing)."""
    found = _flags(args, *names)
    return found[-1] if found else None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(256 * 1024)
    except OSError:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]


def _is_dockerd(args: list[str]) -> bool:
    return bool(args) and os.path.basename(args[0]).startswith("dockerd")


def dockerd_arguments(docker) -> list[str]:
    """dockerd's command line: the process listening on its socket, or (socket activation:
    systemd holds the listener) the one dockerd process that names that socket, or else the
    flags of every dockerd process together (each one's roots are protected)."""
    pid = docker.server_pid() if hasattr(docker, "server_pid") else None
    if pid:
        args = _cmdline(pid)
        if _is_dockerd(args):
            return args
    socket_path = urlsplit_path(getattr(docker, "docker_host", ""))
    candidates = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        entries = []
    for entry in entries:
        args = _cmdline(int(entry))
        if _is_dockerd(args):
            candidates.append(args)
    named = [a for a in candidates if socket_path and any(socket_path in arg for arg in a)]
    if len(named) == 1:
        return named[0]
    # Several dockerd processes and none names the socket (socket activation, rootless
    # beside rootful): their flags all count, so that every one's roots are protected.
    return [arg for args in candidates for arg in args]


def urlsplit_path(docker_host: str) -> str:
    return docker_host[len("unix://"):] if docker_host.startswith("unix://") else ""


def _daemon_json(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(1024 * 1024))
    except (OSError, ValueError):
        return {}  # dockerd does not start on an unreadable one
    return doc if isinstance(doc, dict) else {}


def daemon_roots(info: dict, args: list[str]) -> list[tuple[str, str]]:
    """dockerd's data root (as ``GET /info`` reports it), its exec roots and containerd's
    socket directories (from its command line and daemon.json; the default exec root is
    always kept), each also symlink-resolved. Duplicates are dropped."""
    configs = [_daemon_json(p) for p in _flags(args, "--config-file") or [DEFAULT_DAEMON_JSON]]
    found = [(info.get("DockerRootDir"), "dockerd's data root")]
    exec_roots = _flags(args, "--exec-root") + [c.get("exec-root") for c in configs]
    found += [(root, "dockerd's exec root") for root in exec_roots + [DEFAULT_EXEC_ROOT]]
    data_roots = _flags(args, "--data-root", "-g", "--graph") + [c.get("data-root") for c in configs]
    found += [(root, "dockerd's data root") for root in data_roots]
    for socket_path in _flags(args, "--containerd") + [c.get("containerd") for c in configs]:
        if isinstance(socket_path, str) and socket_path.startswith("/"):
            found.append((os.path.dirname(socket_path), "containerd's socket directory"))
    out: dict[str, str] = {}
    for path, what in found:
        if isinstance(path, str) and path.startswith("/"):
            path = os.path.normpath(path)
            if path in ("/", "//"):
                continue
            # dockerd's own configuration: trusted, so Python's resolution will do.
            for form in (path, os.path.realpath(path)):
                out.setdefault(form, what)
    return list(out.items())
