"""One small, named check per risk, each reading one part of a container's configuration
the way dockerd reads it and returning facts (after kubernetes' pod-security-admission
``policy/check_*.go``).

A check never decides: it reports what the request asks for (``capability=SYS_ADMIN``),
and the policy says whether that is allowed, for whom, on which image.

The same checks serve container create (``HostConfig``), the legacy HostConfig body of
container start, container update (``Resources``) and swarm services (``ContainerSpec``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import posixpath
import stat
from typing import Any, Callable, Iterable, Iterator

from authz.decoding import canonical
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.moby.gojson import (MAX_ITEMS, GoObject, get_bool, get_list, get_map, get_obj, get_str,
                                   get_strings, loads, InvalidJSON)

# ---------------------------------------------------------------------------------------
# Shared normalizers


def normalize_capability(name: str) -> str:
    """As moby's ``NormalizeLegacyCapabilities``: upper-cased, without ``CAP_``; ``ALL``."""
    upper = name.upper()
    if upper == "ALL":
        return "ALL"
    return upper[4:] if upper.startswith("CAP_") else upper


def host_paths(raw: str) -> list[str]:
    """A host path as the kernel will see it: lexically cleaned, and also with symlinks
    resolved on this host (``/tmp/link -> /etc`` binds ``/etc``). Both are returned when
    they differ; rules match either."""
    cleaned = posixpath.normpath(raw)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    paths = [cleaned]
    resolved = canonical.resolved(cleaned)
    if resolved != cleaned:
        paths.append(resolved)
    return paths


def host_path_facts(kind: str, raw: str, where: str, detail: str = "") -> list[Fact]:
    return [Fact(kind, p, where, detail if p == raw else (detail or f"from {raw!r}"))
            for p in host_paths(raw)]


def _p(where: str) -> str:
    """``where`` as a prefix: ``HostConfig.`` or nothing at the top level."""
    return f"{where}." if where else ""


def namespace_facts(kind: str, mode: str, where: str) -> list[Fact]:
    lowered = mode.lower()
    if lowered == "host":
        return [Fact(kind, "host", where)]
    if lowered.startswith("container:"):
        return [Fact(kind, "container", where, f"joins {mode[10:]!r}")]
    return []


# The local volume driver: ``mount -t TYPE -o O DEVICE`` with the options as given (no
# cleaning, no trimming; moby/sys/mount splits O on ',' and passes every word that is not a
# mount flag to the filesystem as data; ``defaults`` and ``remount`` are data or refused
# here). pyauthz decides by allowing: a driver option, a filesystem type's data option or a
# flag it does not know is refused, because it cannot know whether it names a host path.
LOCAL_DRIVER_OPTIONS = frozenset({"type", "device", "o", "size"})
MOUNT_FLAGS = frozenset({
    "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync",
    "async", "dirsync", "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "bind",
    "rbind", "relatime", "norelatime", "strictatime", "nostrictatime", "private", "rprivate",
    "slave", "rslave", "shared", "rshared", "unbindable", "runbindable"})
_NFS = frozenset({
    "addr", "vers", "nfsvers", "minorversion", "proto", "port", "mountport", "mountproto",
    "mountvers", "hard", "soft", "softreval", "timeo", "retrans", "retry", "rsize", "wsize",
    "bsize", "ac", "noac", "acregmin", "acregmax", "acdirmin", "acdirmax", "actimeo", "lock",
    "nolock", "sec", "namlen", "lookupcache", "clientaddr", "local_lock", "rdirplus",
    "nordirplus", "resvport", "noresvport", "sharecache", "nosharecache", "cto", "nocto",
    "tcp", "udp", "rdma", "intr", "nointr", "bg", "fg", "nconnect", "max_connect"})
_CIFS = frozenset({
    "username", "user", "password", "pass", "domain", "dom", "workgroup", "vers", "uid",
    "gid", "forceuid", "forcegid", "noforceuid", "noforcegid", "file_mode", "dir_mode",
    "addr", "ip", "port", "sec", "seal", "iocharset", "nounix", "serverino", "noserverino",
    "cache", "actimeo", "rsize", "wsize", "nobrl", "mfsymlinks", "hard", "soft",
    "echo_interval", "noperm", "nocase", "multiuser", "nosharesock"})
# Data options each filesystem type may take: the value is no path, or (overlay) the
# options whose values are host directories, ':'-separated for lowerdir.
DATA_OPTIONS: dict[str, frozenset[str]] = {
    "tmpfs": frozenset({"size", "nr_blocks", "nr_inodes", "mode", "uid", "gid", "huge",
                        "mpol", "noswap"}),
    "nfs": _NFS,
    "nfs4": _NFS,
    "cifs": _CIFS,
    "smb3": _CIFS,
    "overlay": frozenset({"redirect_dir", "index", "metacopy", "xino", "userxattr",
                          "volatile", "nfs_export", "uuid", "verity"}),
}
OVERLAY_DIR_OPTIONS = frozenset({"lowerdir", "upperdir", "workdir", "lowerdir+", "datadir+"})
OVERLAY_MAX_STACK = 500  # the kernel's OVL_MAX_STACK: more lower layers never mount
MOUNT_DATA_MAX = 4096    # one page: what mount(2) copies of its data argument
# Filesystem types whose ``device`` is nothing of this host: memory and network
# filesystems, and overlay (whose host directories are judged one by one). Any other type
# (proc, sysfs, cgroup, ext4 on a host disk...), and the network ones, are reported as a
# ``volume-type`` fact.
NETWORK_OR_MEMORY_FS = frozenset({"tmpfs", "nfs", "nfs4", "cifs", "smb3"})
# ... of which these are reported as ``volume-type`` all the same (a policy may allow them).
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3"})


def _unknown_option(where: str, what: str) -> RequestRefused:
    return RequestRefused(
        "request-volume-option", f"{where}: {what}",
        "Use only the local driver options pyauthz knows (type, device, o, size) and, in "
        "o=, mount flags and the data options of tmpfs, nfs, cifs or overlay; see "
        "docs/policy.md (local volumes).")


def _walked(device: str) -> str:
    """The path mount(2) walks for a local ``device``: relative to dockerd's working
    directory, ``/``."""
    return device if device.startswith("/") else "/" + device


def local_device_facts(device: str, where: str, detail: str) -> list[Fact]:
    """A local path given as a volume's ``device`` or overlay directory (mount(2) reads it
    raw): a device node or anything under /dev is a ``device``, anything else a
    ``host-path``."""
    facts: list[Fact] = []
    for fact in canonical.kernel_path_facts("host-path", _walked(device), where, detail):
        path = fact.value
        try:
            mode = os.stat(path).st_mode
            is_device = stat.S_ISBLK(mode) or stat.S_ISCHR(mode)
        except (OSError, ValueError):
            is_device = False
        if is_device or path == "/dev" or path.startswith("/dev/"):
            facts.append(Fact("device", path, fact.where, fact.detail))
        else:
            facts.append(fact)
    return facts


def local_volume_facts(driver: str, options: dict[str, Any], where: str) -> list[Fact]:
    """A volume of the ``local`` driver with options is ``mount -t TYPE -o O DEVICE``:
    with ``o=bind`` it is a bind mount of ``device`` in disguise, an overlay names host
    directories in ``o``, a kernel filesystem (proc, sysfs, cgroup...) or a disk
    filesystem mounts the host's own. Every value is judged as mount(2) reads it."""
    if driver not in ("", "local"):
        # A volume plugin answers Mount with a path inside its own rootfs, which dockerd
        # joins lexically and runc mounts following symlinks: it can be any host path.
        return driver_facts("volume-driver", driver, frozenset(), where,
                            "a volume plugin decides what is mounted")
    at = _p(where)
    for key, value in options.items():
        if key not in LOCAL_DRIVER_OPTIONS:
            raise _unknown_option(f"{at}{key[:100]!r}", "the local volume driver option "
                                  f"{key[:100]!r} is not one pyauthz knows")
        if not isinstance(value, str):
            raise RequestRefused("request-body-invalid", f"{at}{key} is not a string",
                                 "Send driver options as strings.")
    device = options.get("device", "")
    fstype = options.get("type", "")
    mount_opts = options.get("o", "")
    if not (fstype or device or mount_opts):
        return []  # a plain named volume: a directory under dockerd's data root
    if fstype:
        canonical.require_name(fstype, f"{at}type", "filesystem type")
    if mount_opts.count(",") >= MAX_ITEMS:
        raise _unknown_option(f"{at}o", f"more than {MAX_ITEMS} mount options")
    if len(mount_opts.encode("utf-8", "surrogatepass")) >= MOUNT_DATA_MAX:
        # mount(2) copies one page of options and drops the rest.
        raise canonical.noncanonical(f"{at}o: {MOUNT_DATA_MAX} bytes or more of mount options "
                                     "(mount(2) reads one page and drops the rest)",
                                     "Send shorter mount options.")
    words = [w for w in mount_opts.split(",") if w]
    flags = [w for w in words if w in MOUNT_FLAGS]
    data = [w for w in words if w not in MOUNT_FLAGS]
    facts: list[Fact] = []
    is_bind = "bind" in flags or "rbind" in flags
    if is_bind:
        if not device:
            raise _unknown_option(f"{at}device", "a bind without a device")
        facts += canonical.kernel_path_facts("host-path", _walked(device), f"{at}device",
                                             "local volume o=bind")
        allowed: frozenset[str] = frozenset()  # mount(2) ignores data for a bind
    elif fstype in NETWORK_OR_MEMORY_FS or fstype == "overlay":
        allowed = DATA_OPTIONS[fstype]  # nothing of this host in ``device``
        if fstype in NETWORK_FS:
            # A network filesystem can point back at this host (addr=127.0.0.1, or one of
            # its own addresses) and reach its exports past the roots and the floor.
            facts.append(Fact("volume-type", fstype, f"{at}type",
                              f"mounts {device[:200] or 'nothing'} over the network"))
    else:
        facts.append(Fact("volume-type", fstype or "(none)", f"{at}type",
                          f"mounts {device[:200] or 'nothing'} as {fstype or 'an unnamed type'}"))
        if device:
            facts += local_device_facts(device, f"{at}device", f"local volume type {fstype}")
        allowed = frozenset()
    # cifs options carry credentials (password=...; a ',' in one splits it): never echo an
    # unknown word of a network filesystem into the message and the log.
    shown = (lambda key: "(not shown)") if fstype in NETWORK_FS else (lambda key: repr(key[:60]))
    for word in data:
        key, sep, value = word.partition("=")
        bad = canonical.path_problem("/" + key) if key else "empty"
        if bad:
            raise _unknown_option(f"{at}o", f"a mount option {shown(key)} that is not canonical")
        if not is_bind and fstype == "overlay" and key in OVERLAY_DIR_OPTIONS and sep:
            parts = value.split(":") if key == "lowerdir" else [value]
            if len(parts) > OVERLAY_MAX_STACK:
                raise _unknown_option(f"{at}o", f"more than {OVERLAY_MAX_STACK} overlay layers "
                                      "(the kernel's limit)")
            for part in parts:
                if not part.startswith("/"):  # "::" (data-only layers), relative dirs
                    raise canonical.noncanonical(
                        f"{at}o: overlay {key} entry {part[:200]!r} is not an absolute path",
                        "List absolute, canonical directories separated by single ':'.")
                facts += local_device_facts(part, f"{at}o", f"overlay {key}")
        elif key not in allowed:
            raise _unknown_option(f"{at}o", f"the mount option {shown(key)} is not one pyauthz "
                                  f"knows for {'a bind' if is_bind else fstype or 'no type'}")
    for flag in flags:
        if flag in ("shared", "rshared"):
            facts.append(Fact("mount-propagation", flag, f"{at}o"))
    return facts


# ---------------------------------------------------------------------------------------
# Checks on a container's HostConfig. Each takes the HostConfig object (Go semantics) and
# the path of that object in the request, and yields facts.

Check = Callable[[GoObject, str], Iterable[Fact]]


def check_privileged(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--privileged``: every capability, every device, no seccomp/AppArmor/masking."""
    if get_bool(hc, "Privileged", where):
        yield Fact("privileged", "true", f"{_p(where)}Privileged")


def check_host_namespaces(hc: GoObject, where: str) -> Iterator[Fact]:
    """Host namespaces (``--network host`` ...) and joining another container's."""
    for field, kind in (("NetworkMode", "namespace.network"), ("PidMode", "namespace.pid"),
                        ("IpcMode", "namespace.ipc"), ("UTSMode", "namespace.uts"),
                        ("UsernsMode", "namespace.userns"), ("CgroupnsMode", "namespace.cgroup"),
                        ("Cgroup", "namespace.cgroup")):
        yield from namespace_facts(kind, get_str(hc, field, where), f"{_p(where)}{field}")


def check_capabilities(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--cap-add`` (a string or a list: moby's StrSlice) and the full ``Capabilities``
    set (API 1.40+, replaces the default set)."""
    for field in ("CapAdd", "Capabilities"):
        for i, cap in enumerate(get_strings(hc, field, where, strslice=field == "CapAdd") or ()):
            yield Fact("capability", normalize_capability(cap), f"{_p(where)}{field}[{i}]")


def check_devices(hc: GoObject, where: str) -> Iterator[Fact]:
    """Host devices, device cgroup rules and device requests (``--gpus``)."""
    for i, device in enumerate(get_list(hc, "Devices", where) or ()):
        at = f"{_p(where)}Devices[{i}]"
        if isinstance(device, str):
            raise RequestRefused("request-body-invalid", f"{at} is a string, expected an object",
                                 "Send Devices as objects with PathOnHost.")
        if not isinstance(device, GoObject):
            raise RequestRefused("request-body-invalid", f"{at} is not an object",
                                 "Send Devices as objects with PathOnHost.")
        path = get_str(device, "PathOnHost", at)
        yield Fact("device", path or "(empty)", f"{at}.PathOnHost")
    for i, rule in enumerate(get_strings(hc, "DeviceCgroupRules", where) or ()):
        yield Fact("device", f"cgroup-rule:{rule}", f"{_p(where)}DeviceCgroupRules[{i}]")
    for i, request in enumerate(get_list(hc, "DeviceRequests", where) or ()):
        at = f"{_p(where)}DeviceRequests[{i}]"
        if not isinstance(request, GoObject):
            raise RequestRefused("request-body-invalid", f"{at} is not an object",
                                 "Send DeviceRequests as objects.")
        driver = get_str(request, "Driver", at) or "default"
        yield Fact("device", f"request:{driver}", at)


def parse_bind(spec: str) -> tuple[str | None, list[str]]:
    """moby's Linux ``Binds`` parser: ``[src:]dst[:mode]``; ``src`` is a host path when
    absolute (else a volume name). Returns (host source or None, mode words)."""
    parts = spec.split(":")
    if len(parts) > 3:
        raise RequestRefused("request-body-invalid", f"bind {spec!r} has too many ':'",
                             "Use src:dst[:options].")
    if len(parts) == 1:
        return None, []
    source = parts[0]
    modes = parts[2].split(",") if len(parts) == 3 else []
    return (source if source.startswith("/") else None), modes


def check_binds(hc: GoObject, where: str) -> Iterator[Fact]:
    """``-v /host:/ctr[:opts]``: host paths and their propagation."""
    for i, spec in enumerate(get_strings(hc, "Binds", where) or ()):
        at = f"{_p(where)}Binds[{i}]"
        source, modes = parse_bind(spec)
        if source is not None:
            yield from host_path_facts("host-path", source, at)
        for mode in modes:
            if mode in ("shared", "rshared", "slave", "rslave"):
                yield Fact("mount-propagation", mode, at)


def mount_facts(mount: Any, at: str) -> Iterator[Fact]:
    """One ``--mount``: a bind of a host path, or a volume whose driver options bind."""
    if not isinstance(mount, GoObject):
        raise RequestRefused("request-body-invalid", f"{at} is not an object",
                             "Send Mounts as objects.")
    kind = get_str(mount, "Type", at).lower()
    source = get_str(mount, "Source", at)
    if kind == "bind":
        if source:
            yield from host_path_facts("host-path", source, f"{at}.Source")
        else:
            yield Fact("host-path", "(empty)", f"{at}.Source", "bind mount without a source")
        options = get_obj(mount, "BindOptions", at)
        propagation = get_str(options, "Propagation", f"{at}.BindOptions")
        if propagation:
            yield Fact("mount-propagation", propagation.lower(), f"{at}.BindOptions.Propagation")
    elif kind == "volume":
        options = get_obj(mount, "VolumeOptions", at)
        driver = get_obj(options, "DriverConfig", f"{at}.VolumeOptions")
        where = f"{at}.VolumeOptions.DriverConfig"
        yield from local_volume_facts(get_str(driver, "Name", where),
                                      get_map(driver, "Options", where), f"{_p(where)}Options")
    elif kind not in ("tmpfs", "npipe", "cluster", ""):
        yield Fact("mount-type", kind, f"{at}.Type")


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


def _host_link(name: str) -> bool:
    """Whether ``name`` names a link on this host as dockerd's netlink lookup does
    (alternative names included, which /sys/class/net does not list). A name longer than an
    interface name can be is only ever an alternative name: counted as existing."""
    if len(name.encode("utf-8", "surrogatepass")) > 15:
        return True
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


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


def check_volume_driver(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--volume-driver``: the driver of the named and anonymous volumes the container
    creates (see ``local_volume_facts``)."""
    yield from driver_facts("volume-driver", get_str(hc, "VolumeDriver", where),
                            frozenset({"", "local"}), f"{_p(where)}VolumeDriver",
                            "a volume plugin decides what is mounted")


def check_log_driver(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--log-driver``: a log driver that is not built in is a plugin."""
    log = get_obj(hc, "LogConfig", where)
    yield from driver_facts("log-driver", get_str(log, "Type", f"{_p(where)}LogConfig"),
                            BUILTIN_LOG_DRIVERS, f"{_p(where)}LogConfig.Type",
                            "a log driver plugin")


def check_cgroup_parent(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--cgroup-parent``: the container joins another part of the host's cgroup tree (a
    service's own cgroup shares that service's memory and pids limits: the plugin's own
    would be put under pressure)."""
    parent = get_str(hc, "CgroupParent", where)
    if parent:
        yield Fact("cgroup-parent", parent, f"{_p(where)}CgroupParent")


def check_tmpfs(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--tmpfs /dst:opts``: runc reads the options as mount flags, ``bind`` and
    propagation included."""
    for dst, options in get_map(hc, "Tmpfs", where).items():
        at = f"{_p(where)}Tmpfs[{dst[:100]!r}]"
        if not isinstance(options, str):
            raise RequestRefused("request-body-invalid", f"{at} is not a string",
                                 "Send tmpfs options as a string.")
        for word in options.split(","):
            if word in ("bind", "rbind", "remount", "move"):
                raise _unknown_option(at, f"the tmpfs option {word!r} is not a tmpfs option")
            if word in ("shared", "rshared"):
                yield Fact("mount-propagation", word, at)


def log_address_path(value: str) -> str | None:
    """The host socket a log address names, as Go's ``url.Parse`` reads it for dockerd's
    syslog and fluentd drivers (``unix:///p``, ``unix:/p``, ``unix://host/p`` are all the
    path ``/p``; the scheme is case-insensitive), or None for a network address."""
    scheme, sep, rest = value.partition(":")
    if not sep or scheme.lower() not in ("unix", "unixgram"):
        return None
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        rest = rest[slash:] if slash >= 0 else ""
    return rest or "(empty)"


def log_option_facts(options: dict[str, Any], at: str) -> Iterator[Fact]:
    """Log driver options that name a host socket: dockerd connects there and writes the
    container's output, as root."""
    for key, value in options.items():
        if not isinstance(value, str):
            raise RequestRefused("request-body-invalid", f"{at}[{key[:100]!r}] is not a string",
                                 "Send log options as strings.")
        path = log_address_path(value)
        if path is not None:
            yield Fact("log-socket", path, f"{at}[{key[:100]!r}]",
                       "dockerd writes the container's output there")


def check_log_config(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--log-opt syslog-address=unix:///path`` and the like (``log_option_facts``)."""
    log = get_obj(hc, "LogConfig", where)
    yield from log_option_facts(get_map(log, "Config", f"{_p(where)}LogConfig"),
                                f"{_p(where)}LogConfig.Config")


def check_mounts(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--mount``: ``type=bind`` sources, propagation, and local volumes that bind."""
    for i, mount in enumerate(get_list(hc, "Mounts", where) or ()):
        yield from mount_facts(mount, f"{_p(where)}Mounts[{i}]")


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


def check_security_opt(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--security-opt`` as dockerd's ``parseSecurityOpt`` reads it: ``k=v`` or ``k:v``
    (``=`` first), the bare word ``disable`` (SELinux labels off)."""
    for i, opt in enumerate(get_strings(hc, "SecurityOpt", where) or ()):
        at = f"{_p(where)}SecurityOpt[{i}]"
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


def check_system_paths(hc: GoObject, where: str) -> Iterator[Fact]:
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
            yield Fact("masked-paths", "reduced", f"{_p(where)}{field}",
                       "no longer covers " + ", ".join(missing))


def check_sysctls(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--sysctl``: the name (``/`` and ``.`` are the same separator to runc)."""
    for name in get_map(hc, "Sysctls", where):
        yield Fact("sysctl", name.replace("/", "."), f"{_p(where)}Sysctls[{name!r}]")


def check_restart_policy(hc: GoObject, where: str) -> Iterator[Fact]:
    """``--restart``: dockerd restarts the container itself (and at its own start), without
    asking any plugin, and mounts its host paths again by name (see ``auto_restart_facts``)."""
    policy = get_obj(hc, "RestartPolicy", where)
    name = get_str(policy, "Name", f"{_p(where)}RestartPolicy")
    if name not in ("", "no"):
        yield Fact("restart-policy", name, f"{_p(where)}RestartPolicy.Name")


def auto_restart_facts(facts: list[Fact]) -> list[Fact]:
    """A container that dockerd restarts by itself and that mounts host paths: a path
    swapped for a symlink between two starts would be mounted with no plugin asked. Derived
    once every fact of the request (and of dockerd's state) is known."""
    policies = [f for f in facts if f.kind == "restart-policy"]
    paths = [f for f in facts if f.kind == "host-path"]
    if not policies or not paths:
        return []
    return [Fact("auto-restart", p.value, p.where, f"with host path {paths[0].value}")
            for p in policies]


def named_volumes(hc: GoObject | None, where: str) -> list[tuple[str, str]]:
    """Named volumes a container mounts (``-v NAME:/dst``, ``--mount type=volume,src=NAME``):
    their options were set when they were created, so they are looked up (live.py)."""
    found: list[tuple[str, str]] = []
    for i, spec in enumerate(get_strings(hc, "Binds", where) or ()):
        source, _ = parse_bind(spec)
        name = spec.split(":", 1)[0]
        if source is None and ":" in spec and name:
            found.append((name, f"{_p(where)}Binds[{i}]"))
    for i, mount in enumerate(get_list(hc, "Mounts", where) or ()):
        at = f"{_p(where)}Mounts[{i}]"
        if isinstance(mount, GoObject) and get_str(mount, "Type", at).lower() == "volume":
            name = get_str(mount, "Source", at)
            if name:
                found.append((name, at))
    return found


HOST_CONFIG_CHECKS: tuple[Check, ...] = (
    check_privileged,
    check_host_namespaces,
    check_capabilities,
    check_devices,
    check_binds,
    check_mounts,
    check_security_opt,
    check_system_paths,
    check_sysctls,
    check_restart_policy,
    check_volume_driver,
    check_tmpfs,
    check_log_config,
    check_log_driver,
    check_cgroup_parent,
)

# Container update carries Resources and RestartPolicy: devices can widen access, and a
# restart policy makes dockerd mount the container's host paths again unasked.
RESOURCES_CHECKS: tuple[Check, ...] = (check_devices, check_restart_policy)


def run_checks(checks: Iterable[Check], obj: GoObject | None, where: str) -> list[Fact]:
    if obj is None:
        return []
    facts: list[Fact] = []
    for check in checks:
        facts.extend(check(obj, where))
    return facts
