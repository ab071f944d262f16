"""Small typed views of dockerd's inspect JSON: the one place that knows which keys of
``GET /containers/{id}/json`` (and images, execs, plugins, networks, volumes) the plugin
reads, and what each holds (moby ``api/types``). The keys deciding depends on (a
container's ``Image``, an exec's ``ContainerID``) must be there: an answer
without them raises ``InvalidAnswer`` (the caller refuses the request). Any other key of the
wrong type reads as absent, and whoever reads a view decides what absent means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class InvalidAnswer(ValueError):
    """dockerd's answer lacks a key that names the object: nothing can be judged on it."""


def _required(data: dict, key: str, what: str) -> str:
    """A non-empty string that dockerd always writes."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidAnswer(f"dockerd's answer for {what} has no {key}")
    return value


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Mount:
    """One entry of a container's ``Mounts`` (``types.MountPoint``)."""
    type: str            # bind, volume, tmpfs, npipe
    source: str          # the host path dockerd mounts (cleaned by dockerd)
    name: str            # the volume's name (type volume)
    propagation: str

    @classmethod
    def of(cls, data: dict) -> "Mount":
        return cls(_str(data.get("Type")), _str(data.get("Source")), _str(data.get("Name")),
                   _str(data.get("Propagation")))


@dataclass(frozen=True)
class Container:
    """``GET /containers/{id}/json``: ``Image`` is the image id, ``Config.Image`` the name
    it was created from; ``HostConfig`` as dockerd stored it; ``Config.User`` the user it
    runs as (dockerd merged its image's default into it at create)."""
    id: str
    name: str            # "/name"
    image_id: str
    image_name: str
    host_config: dict = field(repr=False)
    mounts: tuple[Mount, ...] = ()
    user: str = ""

    @classmethod
    def of(cls, data: dict) -> "Container":
        config = _dict(data.get("Config"))
        return cls(_str(data.get("Id")), _str(data.get("Name")),
                   _required(data, "Image", "the container"),
                   _str(config.get("Image")), _dict(data.get("HostConfig")),
                   tuple(Mount.of(m) for m in _dicts(data.get("Mounts"))),
                   _str(config.get("User")))


@dataclass(frozen=True)
class Image:
    """``GET /images/{name}/json``: the image id and the names it has here; ``Config.User``
    and ``Config.ExposedPorts``, the defaults a container created from it takes."""
    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    os: str
    architecture: str
    variant: str
    user: str = ""
    exposed_ports: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: dict) -> "Image":
        config = _dict(data.get("Config"))
        return cls(_str(data.get("Id")), tuple(_strings(data.get("RepoTags"))),
                   tuple(_strings(data.get("RepoDigests"))), _str(data.get("Os")),
                   _str(data.get("Architecture")), _str(data.get("Variant")),
                   _str(config.get("User")), tuple(_dict(config.get("ExposedPorts"))))


@dataclass(frozen=True)
class Exec:
    """``GET /exec/{id}/json``: the container it runs in, whether it is privileged, and the
    user it was created with (empty: its container's)."""
    container_id: str
    privileged: bool
    user: str = ""

    @classmethod
    def of(cls, data: dict) -> "Exec":
        process = _dict(data.get("ProcessConfig"))
        return cls(_required(data, "ContainerID", "the exec instance"),
                   process.get("privileged") is True, _str(process.get("user")))


@dataclass(frozen=True)
class Plugin:
    """``GET /plugins/{name}/json``: ``Config`` is the plugin's config.json as installed."""
    id: str
    name: str
    config: dict = field(repr=False)

    @property
    def interface_types(self) -> list[str]:
        return _strings(_dict(self.config.get("Interface")).get("Types"))

    @classmethod
    def of(cls, data: dict) -> "Plugin":
        return cls(_str(data.get("Id")), _str(data.get("Name")), _dict(data.get("Config")))


@dataclass(frozen=True)
class Network:
    """``GET /networks/{id}``."""
    name: str
    driver: str
    options: dict

    @classmethod
    def of(cls, data: dict) -> "Network":
        return cls(_str(data.get("Name")), _str(data.get("Driver")), _dict(data.get("Options")))


@dataclass(frozen=True)
class Volume:
    """``GET /volumes/{name}``: the driver and the options it was created with."""
    name: str
    driver: str
    options: dict

    @classmethod
    def of(cls, data: dict) -> "Volume":
        return cls(_str(data.get("Name")), _str(data.get("Driver")), _dict(data.get("Options")))
