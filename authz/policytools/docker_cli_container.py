"""``docker run`` / ``docker create``: the flags and the create body, as docker/cli 20.10's
``cli/command/container/opts.go`` (addFlags, parse) and ``create.go`` build them.

The body is ``{Config fields..., "HostConfig": {...}, "NetworkingConfig": {...}}`` with
every field Go writes (zero values included, ``omitempty`` fields left out when empty), in
struct order, Go maps sorted. Two places where the real CLI is not deterministic are kept
in argv order here: ``HostConfig.Binds`` (the CLI iterates a Go map of ``-v`` values, so
its order varies from run to run) and nothing else.
"""

from __future__ import annotations

import re
from typing import Any

from authz.policytools.docker_cli_errors import CliError
from authz.policytools.docker_cli_flags import BOOL, INT, LIST, UINT16, Flag, FlagSet
from authz.policytools.docker_cli_go import (
    GoMap,
    csv_record,
    parse_ip,
    ram_in_bytes,
)

# Flags of `docker run`/`docker create` (20.10) that are read but not modelled: refused.
_REFUSED = {
    "env-file": "reads a local file", "label-file": "reads a local file",
    "cidfile": "writes a local file", "platform": "platform selection",
    "gpus": "GPU device requests", "ulimit": "ulimits", "link": "legacy links",
    "add-host": "extra hosts", "ip": "static addresses", "ip6": "static addresses",
    "link-local-ip": "static addresses", "mac-address": "MAC addresses",
    "network-alias": "network aliases", "blkio-weight-device": "blkio devices",
    "device-read-bps": "blkio devices", "device-write-bps": "blkio devices",
    "device-read-iops": "blkio devices", "device-write-iops": "blkio devices",
    "detach-keys": "changes the attach query", "io-maxbandwidth": "Windows only",
    "io-maxiops": "Windows only", "cpu-count": "Windows only", "cpu-percent": "Windows only",
    "dns-search": "DNS search domains", "dns-option": "DNS options",
    "cpus": "NanoCPUs", "cpu-rt-period": "real-time CPU", "cpu-rt-runtime": "real-time CPU",
}

_RUN_ONLY = [Flag("detach", BOOL, "d"), Flag("sig-proxy", BOOL),
             Flag("detach-keys", refused=_REFUSED["detach-keys"])]

_FLAGS = [
    Flag("attach", LIST, "a"), Flag("device-cgroup-rule", LIST), Flag("device", LIST),
    Flag("env", LIST, "e"), Flag("entrypoint"), Flag("group-add", LIST), Flag("hostname", short="h"),
    Flag("domainname"), Flag("interactive", BOOL, "i"), Flag("label", LIST, "l"),
    Flag("read-only", BOOL), Flag("restart"), Flag("stop-signal"), Flag("stop-timeout", INT),
    Flag("sysctl", LIST), Flag("tty", BOOL, "t"), Flag("user", short="u"),
    Flag("workdir", short="w"), Flag("rm", BOOL),
    Flag("cap-add", LIST), Flag("cap-drop", LIST), Flag("privileged", BOOL),
    Flag("security-opt", LIST), Flag("userns"), Flag("cgroupns"),
    Flag("dns", LIST), Flag("expose", LIST), Flag("publish", LIST, "p"),
    Flag("publish-all", BOOL, "P"), Flag("network", LIST, aliases=("net",)),
    Flag("log-driver"), Flag("volume-driver"), Flag("log-opt", LIST), Flag("storage-opt", LIST),
    Flag("tmpfs", LIST), Flag("volumes-from", LIST), Flag("volume", LIST, "v"), Flag("mount", LIST),
    Flag("health-cmd"), Flag("health-interval"), Flag("health-retries", INT),
    Flag("health-timeout"), Flag("health-start-period"), Flag("no-healthcheck", BOOL),
    Flag("blkio-weight", UINT16), Flag("cpuset-cpus"), Flag("cpuset-mems"),
    Flag("cpu-period", INT), Flag("cpu-quota", INT), Flag("cpu-shares", INT, "c"),
    Flag("kernel-memory"), Flag("memory", short="m"), Flag("memory-reservation"),
    Flag("memory-swap"), Flag("memory-swappiness", INT), Flag("oom-kill-disable", BOOL),
    Flag("oom-score-adj", INT), Flag("pids-limit", INT),
    Flag("cgroup-parent"), Flag("ipc"), Flag("isolation"), Flag("pid"), Flag("shm-size"),
    Flag("uts"), Flag("runtime"), Flag("init", BOOL),
    Flag("name"), Flag("pull"), Flag("disable-content-trust", BOOL), Flag("quiet", BOOL, "q"),
    Flag("dns-option", aliases=("dns-opt",), refused=_REFUSED["dns-option"]),
    Flag("net-alias", refused=_REFUSED["network-alias"]),
] + [Flag(name, refused=why) for name, why in _REFUSED.items()
     if name not in ("detach-keys", "dns-option")]


def flagset(command: str) -> FlagSet:
    """The flags of `docker run` (with -d, --sig-proxy) or `docker create`."""
    flags = _FLAGS + (_RUN_ONLY if command == "run" else [])
    return FlagSet(command, flags, interspersed=False)


# ------------------------------------------------------------------ volumes (-v)

def _is_windows_drive(buffer: list[str], char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer[0].isalpha()


def volume_source(spec: str) -> str:
    """The Source compose's loader.ParseVolume finds in a ``-v`` spec (its error ignored,
    as parse() does): non-empty means a bind (or named volume) for HostConfig.Binds."""
    if len(spec) <= 2:
        return ""
    source = target = ""
    buffer: list[str] = []
    for char in list(spec) + [None]:
        if char is not None and _is_windows_drive(buffer, char):
            buffer.append(char)
        elif char == ":" or char is None:
            if not buffer:
                return source  # "empty section between colons"
            if not source and char is None:
                return source  # anonymous volume: only a target
            if not source:
                source = "".join(buffer)
            elif not target:
                target = "".join(buffer)
            elif char == ":":
                return source  # "too many colons"
            buffer = []
        else:
            buffer.append(char)
    return source


# ------------------------------------------------------------------ --mount

def parse_mount(value: str) -> dict[str, Any]:
    """opts.MountOpt.Set: one mount.Mount, as the JSON fields Go writes (omitempty)."""
    fields = csv_record("--mount", value)
    mount: dict[str, Any] = {"Type": "volume"}
    volume: dict[str, Any] | None = None
    bind: dict[str, Any] | None = None
    tmpfs: dict[str, Any] | None = None

    def volume_options() -> dict[str, Any]:
        nonlocal volume
        if volume is None:
            volume = {"NoCopy": False, "Labels": GoMap(), "DriverConfig": {"Name": "", "Options": None}}
        return volume

    def set_map(target: GoMap, text: str) -> None:
        key, has, val = text.partition("=")
        target[key if has else text] = val

    for field in fields:
        key, has_value, val = field.partition("=")
        key = key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                mount["ReadOnly"] = True
                continue
            if key == "volume-nocopy":
                volume_options()["NoCopy"] = True
                continue
            if key == "bind-nonrecursive":
                bind = bind or {}
                bind["NonRecursive"] = True
                continue
            raise CliError(f"invalid argument {value!r} for --mount: "
                           f"invalid field '{field}' must be a key=value pair")
        if key == "type":
            mount["Type"] = val.lower()
        elif key in ("source", "src"):
            mount["Source"] = val
        elif key in ("target", "dst", "destination"):
            mount["Target"] = val
        elif key in ("readonly", "ro", "bind-nonrecursive", "volume-nocopy"):
            flag = _go_bool(val, f"--mount {key}")
            if key in ("readonly", "ro"):
                mount["ReadOnly"] = flag
            elif key == "bind-nonrecursive":
                bind = bind or {}
                bind["NonRecursive"] = flag
            else:
                volume_options()["NoCopy"] = flag
        elif key == "consistency":
            mount["Consistency"] = val.lower()
        elif key == "bind-propagation":
            bind = bind or {}
            bind["Propagation"] = val.lower()
        elif key == "volume-label":
            set_map(volume_options()["Labels"], val)
        elif key == "volume-driver":
            volume_options()["DriverConfig"]["Name"] = val
        elif key == "volume-opt":
            driver = volume_options()["DriverConfig"]
            if driver["Options"] is None:
                driver["Options"] = GoMap()
            set_map(driver["Options"], val)
        elif key == "tmpfs-size":
            tmpfs = tmpfs or {}
            tmpfs["SizeBytes"] = ram_in_bytes("--mount tmpfs-size", val)
        elif key == "tmpfs-mode":
            tmpfs = tmpfs or {}
            if not re.fullmatch(r"[0-7]+", val) or int(val, 8) >= 2 ** 32:
                raise CliError(f"invalid argument {value!r} for --mount: invalid value for tmpfs-mode: {val}")
            tmpfs["Mode"] = int(val, 8)
        else:
            raise CliError(f"invalid argument {value!r} for --mount: unexpected key '{key}' in '{field}'")
    if not mount["Type"]:
        raise CliError(f"invalid argument {value!r} for --mount: type is required")
    if not mount.get("Target"):
        raise CliError(f"invalid argument {value!r} for --mount: target is required")
    for options, kind in ((volume, "volume"), (bind, "bind"), (tmpfs, "tmpfs")):
        if options is not None and mount["Type"] != kind:
            raise CliError(f"invalid argument {value!r} for --mount: cannot mix '{kind}-*' options "
                           f"with mount type '{mount['Type']}'")
    return _mount_json(mount, volume, bind, tmpfs)


def _mount_json(mount, volume, bind, tmpfs) -> dict[str, Any]:
    """mount.Mount in field order with Go's omitempty."""
    out: dict[str, Any] = {}
    for key in ("Type", "Source", "Target", "ReadOnly", "Consistency"):
        if mount.get(key):
            out[key] = mount[key]
    if bind is not None:
        out["BindOptions"] = {k: bind[k] for k in ("Propagation", "NonRecursive") if bind.get(k)}
    if volume is not None:
        vol: dict[str, Any] = {}
        if volume["NoCopy"]:
            vol["NoCopy"] = True
        if volume["Labels"]:
            vol["Labels"] = volume["Labels"]
        driver = {k: v for k, v in volume["DriverConfig"].items() if v}
        vol["DriverConfig"] = driver
        out["VolumeOptions"] = vol
    if tmpfs is not None:
        out["TmpfsOptions"] = {k: tmpfs[k] for k in ("SizeBytes", "Mode") if tmpfs.get(k)}
    return out


def _go_bool(text: str, where: str) -> bool:
    from authz.policytools.docker_cli_go import parse_bool
    return parse_bool(where, text)


# ------------------------------------------------------------------ -p (go-connections nat)

def _port_range(text: str) -> tuple[int, int]:
    """nat.ParsePortRange (strconv.ParseUint base 10, 16 bits)."""
    if not text:
        raise ValueError("empty")
    parts = text.split("-")
    if len(parts) == 1:
        start = end = _uint16(parts[0])
    else:
        start, end = _uint16(parts[0]), _uint16(parts[1])
        if end < start:
            raise ValueError("range")
    return start, end


def _uint16(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) > 65535:
        raise ValueError(text)
    return int(text)


def _split_proto_port(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1:
        return "tcp", raw
    if not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _new_port(proto: str, port: str) -> str:
    start, end = _port_range(port)
    return f"{start}/{proto}" if start == end else f"{start}-{end}/{proto}"


def parse_port_spec(raw: str) -> list[tuple[str, dict[str, str]]]:
    """nat.ParsePortSpec: (port "80/tcp", binding {"HostIp", "HostPort"}) pairs."""
    parts = raw.split(":")
    container_port = parts[-1]
    if len(parts) == 1:
        raw_ip, host_port = "", ""
    elif len(parts) == 2:
        raw_ip, host_port = "", parts[0]
    else:
        raw_ip, host_port = ":".join(parts[:-2]), parts[-2]
    proto, container_port = _split_proto_port(container_port)
    ip = raw_ip
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    elif ":" in ip or "[" in ip or "]" in ip:
        raise CliError(f"Invalid ip address {raw_ip}: too many colons")
    if ip and parse_ip(ip) is None:
        raise CliError(f"Invalid ip address: {ip}")
    if not container_port:
        raise CliError(f"No port specified: {raw}<empty>")
    try:
        start, end = _port_range(container_port)
    except ValueError:
        raise CliError(f"Invalid containerPort: {container_port}") from None
    host_start = host_end = 0
    if host_port:
        try:
            host_start, host_end = _port_range(host_port)
        except ValueError:
            raise CliError(f"Invalid hostPort: {host_port}") from None
    if host_port and end - start != host_end - host_start and end != start:
        raise CliError("Invalid ranges specified for container and host Ports: "
                       f"{container_port} and {host_port}")
    if proto.lower() not in ("tcp", "udp", "sctp"):
        raise CliError(f"Invalid proto: {proto}")
    out = []
    for offset in range(end - start + 1):
        port = str(start + offset)
        if host_port:
            host_port = str(host_start + offset)
        if start == end and host_start != host_end:
            host_port = f"{host_port}-{host_end}"
        out.append((_new_port(proto.lower(), port), {"HostIp": ip, "HostPort": host_port}))
    return out


def _standard_notation(publish: list[str]) -> list[str]:
    """convertToStandardNotation: ``published=8080,target=80`` to ``8080:80/tcp``."""
    out = []
    for spec in publish:
        if "=" not in spec:
            out.append(spec)
            continue
        params = {"protocol": "tcp"}
        for param in spec.split(","):
            opt = param.split("=")
            if len(opt) < 2:
                raise CliError(f"invalid publish opts format (should be name=value but got '{param}')")
            params[opt[0]] = opt[1]
        out.append(f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}")
    return out


