"""Checks on what a container mounts: ``-v`` binds, ``--mount`` (binds, and volumes whose
local driver options bind), and the named volumes whose options dockerd's state holds."""

from __future__ import annotations

from typing import Any, Iterator

from authz.decoding.checks.paths import HOST_PATH, MOUNT_PROPAGATION, host_path_facts
from authz.decoding.checks.privileges import DEVICE
from authz.decoding.checks.registry import (CONTAINER_SPEC, HOST_CONFIG, STORED_HOST_CONFIG,
                                            VOLUMES_FROM, check, inside)
from authz.decoding.checks.volumes import VOLUME_DRIVER, VOLUME_TYPE, local_volume_facts
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, get_list, get_map, get_obj, get_str, get_strings

MOUNT_TYPE = fact_kind("mount-type", "a --mount type dockerd does not know")


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


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG, VOLUMES_FROM), rank=50,
       reports=(HOST_PATH, MOUNT_PROPAGATION))
def check_binds(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``-v /host:/ctr[:opts]``: host paths and their propagation."""
    for i, spec in enumerate(get_strings(hc, "Binds", where) or ()):
        at = inside(where, f"Binds[{i}]")
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
                                      get_map(driver, "Options", where), inside(where, "Options"))
    elif kind not in ("tmpfs", "npipe", "cluster", ""):
        yield Fact("mount-type", kind, f"{at}.Type")


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG, VOLUMES_FROM, CONTAINER_SPEC), rank=60,
       reports=(HOST_PATH, MOUNT_PROPAGATION, MOUNT_TYPE, VOLUME_DRIVER, VOLUME_TYPE, DEVICE))
def check_mounts(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--mount``: ``type=bind`` sources, propagation, and local volumes that bind."""
    for i, mount in enumerate(get_list(hc, "Mounts", where) or ()):
        yield from mount_facts(mount, inside(where, f"Mounts[{i}]"))


def named_volumes(hc: GoObject | None, where: str) -> list[tuple[str, str]]:
    """Named volumes a container mounts (``-v NAME:/dst``, ``--mount type=volume,src=NAME``):
    their options were set when they were created, so they are looked up (state.py)."""
    found: list[tuple[str, str]] = []
    for i, spec in enumerate(get_strings(hc, "Binds", where) or ()):
        source, _ = parse_bind(spec)
        name = spec.split(":", 1)[0]
        if source is None and ":" in spec and name:
            found.append((name, inside(where, f"Binds[{i}]")))
    for i, mount in enumerate(get_list(hc, "Mounts", where) or ()):
        at = inside(where, f"Mounts[{i}]")
        if isinstance(mount, GoObject) and get_str(mount, "Type", at).lower() == "volume":
            name = get_str(mount, "Source", at)
            if name:
                found.append((name, at))
    return found
