"""The body of ``POST /containers/create`` as docker/cli 20.10's parse() (opts.go) and
runContainer() (run.go) build it from parsed flags. See docker_cli_container for the
flag set and the value parsers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from authz.policytools.docker_cli_container import (
    _port_range,
    _split_proto_port,
    _standard_notation,
    parse_mount,
    parse_port_spec,
    volume_source,
)
from authz.policytools.docker_cli_values import (
    _DEVICE_CGROUP_RULE,
    _validate_env,
    _validate_label,
    _validate_sysctl,
    check_image,
    kv_map,
    parse_device,
    parse_security_opts,
)
from authz.policytools.docker_cli_errors import CliError
from authz.policytools.docker_cli_flags import Parsed
from authz.policytools.docker_cli_go import GoMap, parse_duration, parse_ip, ram_in_bytes


@dataclass
class Create:
    """What run needs besides the body."""

    body: dict[str, Any]
    query: dict[str, str]
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    tty: bool
    auto_remove: bool


def _mode_valid(flag: str, value: str) -> None:
    """container.PidMode/UTSMode/UsernsMode/CgroupnsMode.Valid(), as parse() checks them."""
    parts = value.split(":")
    if flag == "--pid":
        ok = parts[0] in ("", "host") or (parts[0] == "container" and len(parts) == 2 and parts[1] != "")
    elif flag in ("--uts", "--userns"):
        ok = parts[0] in ("", "host")
    else:  # --cgroupns
        ok = value in ("", "host", "private")
    if not ok:
        kind = {"--pid": "PID", "--uts": "UTS", "--userns": "USER", "--cgroupns": "CGROUP"}[flag]
        raise CliError(f"{flag}: invalid {kind} mode")


def _ports(parsed: Parsed) -> tuple[GoMap, GoMap]:
    exposed, bindings = GoMap(), GoMap()
    for spec in _standard_notation(parsed.list("publish")):
        for port, binding in parse_port_spec(spec):
            exposed[port] = {}
            bindings.setdefault(port, []).append(binding)
    for spec in parsed.list("expose"):
        if ":" in spec:
            raise CliError(f"invalid port format for --expose: {spec}")
        proto, port = _split_proto_port(spec)
        try:
            start, end = _port_range(port)
        except ValueError:
            raise CliError(f"invalid range format for --expose: {spec}") from None
        for number in range(start, end + 1):
            exposed.setdefault(f"{number}/{proto}", {})
    return exposed, bindings


def _restart(text: str) -> dict[str, Any]:
    """opts.ParseRestartPolicy (the name is not checked by the CLI)."""
    if text == "":
        return {"Name": "", "MaximumRetryCount": 0}
    parts = text.split(":")
    if len(parts) > 2:
        raise CliError("invalid restart policy format")
    count = 0
    if len(parts) == 2:
        if not re.fullmatch(r"[+-]?[0-9]+", parts[1]) or not -2 ** 63 <= int(parts[1]) < 2 ** 63:
            raise CliError("maximum retry count must be an integer")
        count = int(parts[1])
    return {"Name": parts[0], "MaximumRetryCount": count}


def _healthcheck(parsed: Parsed) -> dict[str, Any] | None:
    durations = {name: parse_duration(f"--{name}", parsed.get(name) or "0")
                 for name in ("health-interval", "health-timeout", "health-start-period")}
    retries = parsed.get("health-retries", 0)
    cmd = parsed.get("health-cmd") or ""
    have = bool(cmd) or any(durations.values()) or retries != 0
    if parsed.get("no-healthcheck"):
        if have:
            raise CliError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not have:
        return None
    for name, value in durations.items():
        if value < 0:
            raise CliError(f"--{name} cannot be negative")
    if retries < 0:
        raise CliError("--health-retries cannot be negative")
    out: dict[str, Any] = {}
    if cmd:
        out["Test"] = ["CMD-SHELL", cmd]
    for key, name in (("Interval", "health-interval"), ("Timeout", "health-timeout"),
                      ("StartPeriod", "health-start-period")):
        if durations[name]:
            out[key] = durations[name]
    if retries:
        out["Retries"] = retries
    return out


def _network(parsed: Parsed) -> tuple[str, GoMap]:
    """NetworkOpt (simple and long ``name=...,alias=...`` syntax) and parseNetworkOpts."""
    targets = []
    for value in parsed.list("network"):
        if re.search(r"[0-9A-Za-z_]+=[0-9A-Za-z_]+(,[0-9A-Za-z_]+=[0-9A-Za-z_]+)*", value):
            raise CliError(f"--network {value!r}: the advanced name=...,alias=... syntax is not modelled")
        targets.append(value)
    mode = targets[0] if targets else "default"
    endpoints = GoMap()
    user_defined = non_user_defined = False
    for index, target in enumerate(targets):
        builtin = target in ("default", "bridge", "host", "none") or target.startswith("container:")
        user_defined |= not builtin
        non_user_defined |= builtin
        if not target.strip():
            raise CliError("no name set for network")
        if target in endpoints:
            raise CliError(f"network {target!r} is specified multiple times")
        if index == 0 and len(targets) == 1:
            continue  # an empty EndpointSettings for a single network is left out
        endpoints[target] = {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "",
                             "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                             "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                             "MacAddress": "", "DriverOpts": None}
    if user_defined and non_user_defined:
        raise CliError("conflicting options: cannot attach both user-defined and "
                       "non-user-defined network-modes")
    return mode, endpoints


def build_create(command: str, parsed: Parsed) -> Create:
    """parse() and, for run, runContainer()'s changes (-d clears the attach flags)."""
    if not parsed.args:
        raise CliError(f"docker {command}: requires at least 1 argument (the image)")
    image, args = parsed.args[0], parsed.args[1:]
    check_image(image)
    attach = [_attach(v) for v in parsed.list("attach")]
    detach = bool(parsed.get("detach"))
    if detach and attach:
        raise CliError("Conflicting options: -a and -d")
    stdin = bool(parsed.get("interactive"))
    tty = bool(parsed.get("tty"))
    attach_stdin = "stdin" in attach or stdin
    attach_stdout = "stdout" in attach or not attach
    attach_stderr = "stderr" in attach or not attach
    stdin_once = stdin and attach_stdin
    if command == "run" and detach:
        attach_stdin = attach_stdout = attach_stderr = stdin_once = False
    swappiness = parsed.get("memory-swappiness", -1)
    if swappiness != -1 and not 0 <= swappiness <= 100:
        raise CliError(f"invalid value: {swappiness}. Valid memory swappiness range is 0-100")

    volumes = GoMap()
    binds: list[str] | None = None
    for spec in parsed.list("volume"):
        if volume_source(spec):
            binds = binds or []
            if spec not in binds:
                binds.append(spec)
        else:
            volumes[spec] = {}
    tmpfs = GoMap()
    for spec in parsed.list("tmpfs"):
        key, has, val = spec.partition(":")
        tmpfs[key] = val if has else ""
    entrypoint = None
    if parsed.get("entrypoint"):
        entrypoint = [parsed.get("entrypoint")]
    elif "entrypoint" in parsed.changed:
        entrypoint = [""]
    exposed, bindings = _ports(parsed)
    devices = [parse_device(d) for d in parsed.list("device")]
    for rule in parsed.list("device-cgroup-rule"):
        if not _DEVICE_CGROUP_RULE.match(rule):
            raise CliError(f"invalid device cgroup format '{rule}'")
    env = _env([_validate_env(v) for v in parsed.list("env")])
    labels = kv_map([_validate_label(v) for v in parsed.list("label")])
    modes = {flag: parsed.get(flag[2:], "") for flag in ("--pid", "--uts", "--userns", "--cgroupns")}
    for flag, value in modes.items():
        _mode_valid(flag, value)
    restart = _restart(parsed.get("restart", "no"))
    log_driver = parsed.get("log-driver", "")
    log_opts = parsed.list("log-opt")
    if log_driver == "none" and log_opts:
        raise CliError(f"invalid logging opts for driver {log_driver}")
    security_opt: list[str] | None = None
    masked = readonly = None
    if "security-opt" in parsed.changed:
        security_opt = []
        for opt in parse_security_opts(parsed.list("security-opt")):
            if opt == "systempaths=unconfined":
                masked, readonly = [], []
            else:
                security_opt.append(opt)
    storage = GoMap()
    for opt in parsed.list("storage-opt"):
        if "=" not in opt:
            raise CliError("invalid storage option")
        key, _, val = opt.partition("=")
        storage[key] = val
    health = _healthcheck(parsed)
    dns = []
    for value in parsed.list("dns"):
        ip = parse_ip(value.strip(" \t\n\v\f\r\x85\xa0"))
        if ip is None:
            raise CliError(f"invalid argument {value!r} for --dns: {value} is not an ip address")
        dns.append(ip)
    sysctls = kv_map([_validate_sysctl(v) for v in parsed.list("sysctl")])
    network_mode, endpoints = _network(parsed)
    auto_remove = bool(parsed.get("rm"))
    if auto_remove and restart["Name"] not in ("", "no"):
        raise CliError("Conflicting options: --restart and --rm")

    def size(name: str) -> int:
        return ram_in_bytes(f"--{name}", parsed.get(name)) if parsed.get(name) is not None else 0

    swap = parsed.get("memory-swap")
    memory_swap = -1 if swap == "-1" else size("memory-swap")
    config: dict[str, Any] = {
        "Hostname": parsed.get("hostname", ""), "Domainname": parsed.get("domainname", ""),
        "User": parsed.get("user", ""), "AttachStdin": attach_stdin,
        "AttachStdout": attach_stdout, "AttachStderr": attach_stderr,
    }
    if exposed:
        config["ExposedPorts"] = exposed
    config.update({"Tty": tty, "OpenStdin": stdin, "StdinOnce": stdin_once, "Env": env,
                   "Cmd": args or None})
    if health is not None:
        config["Healthcheck"] = health
    config.update({"Image": image, "Volumes": volumes, "WorkingDir": parsed.get("workdir", ""),
                   "Entrypoint": entrypoint, "OnBuild": None, "Labels": labels})
    if "stop-signal" in parsed.changed and parsed.get("stop-signal"):
        config["StopSignal"] = parsed.get("stop-signal")
    if "stop-timeout" in parsed.changed:
        config["StopTimeout"] = parsed.get("stop-timeout")
    host: dict[str, Any] = {
        "Binds": binds, "ContainerIDFile": "",
        "LogConfig": {"Type": log_driver, "Config": kv_map(log_opts)},
        "NetworkMode": network_mode, "PortBindings": bindings, "RestartPolicy": restart,
        "AutoRemove": auto_remove, "VolumeDriver": parsed.get("volume-driver", ""),
        "VolumesFrom": parsed.list("volumes-from") or None,
        "CapAdd": parsed.list("cap-add") or None, "CapDrop": parsed.list("cap-drop") or None,
        "CgroupnsMode": modes["--cgroupns"], "Dns": dns, "DnsOptions": [], "DnsSearch": [],
        "ExtraHosts": None, "GroupAdd": parsed.list("group-add") or None,
        "IpcMode": parsed.get("ipc", ""), "Cgroup": "", "Links": None,
        "OomScoreAdj": parsed.get("oom-score-adj", 0), "PidMode": modes["--pid"],
        "Privileged": bool(parsed.get("privileged")),
        "PublishAllPorts": bool(parsed.get("publish-all")),
        "ReadonlyRootfs": bool(parsed.get("read-only")), "SecurityOpt": security_opt,
    }
    if storage:
        host["StorageOpt"] = storage
    if tmpfs:
        host["Tmpfs"] = tmpfs
    host.update({"UTSMode": modes["--uts"], "UsernsMode": modes["--userns"], "ShmSize": size("shm-size")})
    if sysctls:
        host["Sysctls"] = sysctls
    if parsed.get("runtime"):
        host["Runtime"] = parsed.get("runtime")
    host.update({
        "ConsoleSize": [0, 0], "Isolation": parsed.get("isolation", ""),
        "CpuShares": parsed.get("cpu-shares", 0), "Memory": size("memory"), "NanoCpus": 0,
        "CgroupParent": parsed.get("cgroup-parent", ""), "BlkioWeight": parsed.get("blkio-weight", 0),
        "BlkioWeightDevice": [], "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None,
        "BlkioDeviceReadIOps": None, "BlkioDeviceWriteIOps": None,
        "CpuPeriod": parsed.get("cpu-period", 0), "CpuQuota": parsed.get("cpu-quota", 0),
        "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
        "CpusetCpus": parsed.get("cpuset-cpus", ""), "CpusetMems": parsed.get("cpuset-mems", ""),
        "Devices": devices, "DeviceCgroupRules": parsed.list("device-cgroup-rule") or None,
        "DeviceRequests": None, "KernelMemory": size("kernel-memory"), "KernelMemoryTCP": 0,
        "MemoryReservation": size("memory-reservation"), "MemorySwap": memory_swap,
        "MemorySwappiness": swappiness, "OomKillDisable": bool(parsed.get("oom-kill-disable")),
        "PidsLimit": parsed.get("pids-limit", 0), "Ulimits": None, "CpuCount": 0, "CpuPercent": 0,
        "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    })
    mounts = [parse_mount(m) for m in parsed.list("mount")]
    if mounts:
        host["Mounts"] = mounts
    host.update({"MaskedPaths": masked, "ReadonlyPaths": readonly})
    if "init" in parsed.changed:
        host["Init"] = bool(parsed.get("init"))
    body = dict(config, HostConfig=host, NetworkingConfig={"EndpointsConfig": endpoints})
    query = {"name": parsed.get("name")} if parsed.get("name") else {}
    return Create(body, query, attach_stdin, attach_stdout, attach_stderr, tty, auto_remove)



def _env(values: list[str]) -> list[str] | None:
    """run/create pass -e through a Go map (ParseProxyConfig, with no proxies configured in
    the CLI's config.json): one entry per name, the last one given; the CLI's order is the
    map's (random), here the order of first appearance."""
    merged: dict[str, str] = {}
    for value in values:
        name = value.split("=", 1)[0]
        merged[name] = value
    return list(merged.values()) or None


def _attach(value: str) -> str:
    low = value.lower()
    if low not in ("stdin", "stdout", "stderr"):
        raise CliError(f"invalid argument {value!r} for -a: valid streams are STDIN, STDOUT and STDERR")
    return low
