"""``docker update`` and ``docker plugin enable|disable|rm|set``, as docker/cli 20.10
sends them (``out`` is docker_cli's call builder)."""

from __future__ import annotations

from typing import Any

from authz.policytools.docker_cli_errors import CliError
from authz.policytools.docker_cli_flags import BOOL, INT, UINT16, Flag, FlagSet
from authz.policytools.docker_cli_go import ram_in_bytes

_UPDATE_FLAGS = [
    Flag("blkio-weight", UINT16), Flag("cpu-period", INT), Flag("cpu-quota", INT),
    Flag("cpu-rt-period", INT), Flag("cpu-rt-runtime", INT), Flag("cpu-shares", INT, "c"),
    Flag("cpus", refused="NanoCPUs"), Flag("cpuset-cpus"), Flag("cpuset-mems"),
    Flag("kernel-memory"), Flag("memory", short="m"), Flag("memory-reservation"),
    Flag("memory-swap"), Flag("pids-limit", INT), Flag("restart"),
]


def update(rest: list[str], out: Any) -> None:
    """runUpdate: one ``POST /containers/{name}/update`` per container, same UpdateConfig."""
    from authz.policytools.docker_cli_create import _restart

    parsed = FlagSet("update", _UPDATE_FLAGS).parse(rest)
    if not parsed.args:
        raise CliError("docker update: requires at least 1 argument")
    if not parsed.changed:
        raise CliError("you must provide one or more flags when using this command")

    def size(name: str) -> int:
        value = parsed.get(name)
        return ram_in_bytes(f"--{name}", value) if value is not None else 0

    swap = parsed.get("memory-swap")
    restart = parsed.get("restart") or ""
    body = {
        "CpuShares": parsed.get("cpu-shares", 0), "Memory": size("memory"), "NanoCpus": 0,
        "CgroupParent": "", "BlkioWeight": parsed.get("blkio-weight", 0), "BlkioWeightDevice": None,
        "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None, "BlkioDeviceReadIOps": None,
        "BlkioDeviceWriteIOps": None, "CpuPeriod": parsed.get("cpu-period", 0),
        "CpuQuota": parsed.get("cpu-quota", 0), "CpuRealtimePeriod": parsed.get("cpu-rt-period", 0),
        "CpuRealtimeRuntime": parsed.get("cpu-rt-runtime", 0),
        "CpusetCpus": parsed.get("cpuset-cpus", ""), "CpusetMems": parsed.get("cpuset-mems", ""),
        "Devices": None, "DeviceCgroupRules": None, "DeviceRequests": None,
        "KernelMemory": size("kernel-memory"), "KernelMemoryTCP": 0,
        "MemoryReservation": size("memory-reservation"),
        "MemorySwap": -1 if swap == "-1" else size("memory-swap"), "MemorySwappiness": None,
        "OomKillDisable": None, "PidsLimit": parsed.get("pids-limit") or None, "Ulimits": None,
        "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "RestartPolicy": _restart(restart) if restart else {"Name": "", "MaximumRetryCount": 0},
    }
    for name in parsed.args:
        out.post(f"/containers/{name}/update", "update", body=body)


def plugin(command: str, rest: list[str], out: Any) -> None:
    """plugin enable (``timeout`` always sent), disable, rm, set (the arguments as a JSON list)."""
    if command == "plugin enable":
        parsed = FlagSet(command, [Flag("timeout", INT)]).parse(rest)
        timeout = parsed.get("timeout", 30)
        if len(parsed.args) != 1:
            raise CliError("docker plugin enable: requires exactly 1 argument")
        if timeout < 0:
            raise CliError(f"negative timeout {timeout} is invalid")
        out.post(f"/plugins/{parsed.args[0]}/enable", "plugin-enable", {"timeout": str(timeout)})
    elif command == "plugin disable":
        parsed = FlagSet(command, [Flag("force", BOOL, "f")]).parse(rest)
        if len(parsed.args) != 1:
            raise CliError("docker plugin disable: requires exactly 1 argument")
        out.post(f"/plugins/{parsed.args[0]}/disable", "plugin-disable",
                 {"force": "1"} if parsed.get("force") else {})
    elif command in ("plugin rm", "plugin remove"):
        parsed = FlagSet(command, [Flag("force", BOOL, "f")]).parse(rest)
        if not parsed.args:
            raise CliError("docker plugin rm: requires at least 1 argument")
        for name in parsed.args:
            out.get(f"/plugins/{name}", "plugin-rm", {"force": "1"} if parsed.get("force") else {},
                    method="DELETE")
    elif command == "plugin set":
        parsed = FlagSet(command, []).parse(rest)
        if len(parsed.args) < 2:
            raise CliError("docker plugin set: requires at least 2 arguments")
        out.post(f"/plugins/{parsed.args[0]}/set", "plugin-set", body=parsed.args[1:])
    else:
        raise CliError(f"docker {command}: command not modelled (plugin install needs the registry's "
                       "privilege list)")
