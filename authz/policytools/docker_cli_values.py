"""Small value parsers of docker/cli 20.10 that run/create use (opts.ValidateEnv,
ValidateLabel, ValidateSysctl, ConvertKVStringsToMap, parseLinuxDevice, parseSecurityOpts,
reference.ParseAnyReference)."""

from __future__ import annotations

import json
import os
import re

from authz.moby.ids import is_full_id
from authz.moby.reference import InvalidReference, parse_reference
from authz.policytools.docker_cli_errors import CliError
from authz.policytools.docker_cli_go import GoMap


_WHITESPACE = " \t\n\v\f\r"


def _validate_env(value: str) -> str:
    """opts.ValidateEnv: ``NAME`` alone takes NAME's value from this process's environment
    (as the CLI takes it from its own), when set."""
    name, has, _ = value.partition("=")
    if not name:
        raise CliError(f"invalid argument {value!r} for -e: invalid environment variable: {value}")
    if not has and name in os.environ:
        return f"{name}={os.environ[name]}"
    return value


def _validate_label(value: str) -> str:
    key = value.split("=", 1)[0].lstrip(_WHITESPACE)
    if not key:
        raise CliError(f"invalid argument {value!r} for -l: invalid label '{value}': empty name")
    if any(c in key for c in _WHITESPACE):
        raise CliError(f"invalid argument {value!r} for -l: label '{key}' contains whitespaces")
    return value


_SYSCTL_NAMES = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                 "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def _validate_sysctl(value: str) -> str:
    parts = value.split("=")
    if len(parts) < 2 or not (parts[0] in _SYSCTL_NAMES or parts[0].startswith(("net.", "fs.mqueue."))):
        raise CliError(f"invalid argument {value!r} for --sysctl: sysctl '{value}' is not whitelisted")
    return value


def kv_map(values: list[str]) -> GoMap:
    """opts.ConvertKVStringsToMap (and MapOpts.Set): ``k=v``; ``k`` alone maps to ""."""
    out = GoMap()
    for value in values:
        key, _, val = value.partition("=")
        out[key] = val
    return out


_DEVICE_CGROUP_RULE = re.compile(r"[acb] ([0-9]+|\*):([0-9]+|\*) [rwm]{1,3}\Z")


def _valid_device_mode(mode: str) -> bool:
    return bool(mode) and all(c in "rwm" for c in mode) and len(set(mode)) == len(mode)


def _go_path_clean(path: str) -> str:
    import posixpath
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return cleaned[1:] if cleaned.startswith("//") else cleaned


def parse_device(value: str) -> dict[str, str]:
    """validateLinuxPath then parseLinuxDevice: a DeviceMapping."""
    if value.count(":") > 2 or not value.split(":", 1)[0]:
        raise CliError(f"invalid argument {value!r} for --device: bad format for path: {value}")
    split = value.split(":", 2)
    if len(split) == 1:
        container_path, value = split[0], _go_path_clean(split[0])
    elif len(split) == 2:
        if _valid_device_mode(split[1]):
            container_path = split[0]
            value = f"{_go_path_clean(split[0])}:{split[1]}"
        else:
            container_path = split[1]
            value = f"{split[0]}:{_go_path_clean(split[1])}"
    else:
        container_path = split[1]
        if not _valid_device_mode(split[2]):
            raise CliError(f"invalid argument for --device: bad mode specified: {split[2]}")
    if not container_path.startswith("/"):
        raise CliError(f"--device: {container_path} is not an absolute path")
    arr = value.split(":")
    permissions, destination = "rwm", ""
    if len(arr) == 3:
        permissions = arr[2]
    if len(arr) >= 2:
        if _valid_device_mode(arr[1]):
            permissions = arr[1]
        else:
            destination = arr[1]
    return {"PathOnHost": arr[0], "PathInContainer": destination or arr[0],
            "CgroupPermissions": permissions}


def parse_security_opts(values: list[str]) -> list[str]:
    """parseSecurityOpts: kept raw, except ``seccomp=FILE`` (not ``unconfined``), whose
    file is read and compacted as json.Compact does."""
    out = []
    for opt in values:
        con = opt.split("=", 1)
        if len(con) == 1 and con[0] != "no-new-privileges":
            if ":" not in opt:
                raise CliError(f"Invalid --security-opt: {opt!r}")
            con = opt.split(":", 1)
        if con[0] == "seccomp" and con[1] != "unconfined":
            try:
                with open(con[1], "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise CliError(f"opening seccomp profile ({con[1]}) failed: {exc}") from None
            opt = "seccomp=" + _json_compact(raw, con[1])
        out.append(opt)
    return out


def _json_compact(raw: bytes, name: str) -> str:
    """json.Compact: whitespace outside strings removed, everything else byte for byte."""
    try:
        text = raw.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"compacting json for seccomp profile ({name}) failed: {exc}") from None
    out, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch in " \t\r\n":
            continue
        else:
            out.append(ch)
            in_string = ch == '"'
    return "".join(out)


def check_image(image: str) -> None:
    """reference.ParseAnyReference, which createContainer calls first."""
    if is_full_id(image) or re.fullmatch(r"sha256:[0-9a-f]{64}", image):
        return
    try:
        parse_reference(image)
    except InvalidReference as exc:
        raise CliError(f"invalid image reference {image!r}: {exc}") from None
