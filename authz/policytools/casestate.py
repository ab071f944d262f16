"""dockerd's state as a test case states it: the objects the plugin would read through
dockerd (``GET /containers/{id}/json``...), answered from the case, offline.

The plugin reads them through this stand-in exactly as through its dockerd client
(``authz.moby.client.DockerClient``): an object the case does not list is missing, as
dockerd would answer 404. Names are looked up as dockerd looks them up: a container by full
id, name (with or without the leading ``/``) or unique id prefix; an exec by exact id; a
plugin by id, id prefix or name (``:latest`` implied); a network by id, id prefix or name; a
volume by name; an image by id or by one of its ``RepoTags`` (``:latest`` implied). Objects
are dockerd's inspect JSON: a container needs its ``Image`` (the image id dockerd always
reports), as with a real dockerd.
"""

from __future__ import annotations

# dockerd's defaults: what GET /info reports when a case does not say otherwise.
DEFAULT_INFO = {"DockerRootDir": "/var/lib/docker"}


def _by_prefix(objects: tuple[dict, ...], name: str) -> dict | None:
    """The one object whose Id starts with ``name`` (dockerd refuses an ambiguous prefix;
    so does the stand-in, as missing)."""
    found = [o for o in objects if str(o.get("Id", "")).startswith(name)]
    return found[0] if len(found) == 1 and name else None


class CaseState:
    """The dockerd a case describes (``state:``), answering the plugin's inspects."""

    docker_host = "case:"

    def __init__(self, state: dict[str, tuple[dict, ...]], info: dict | None = None):
        self.state = {kind: tuple(objects) for kind, objects in state.items()}
        self._info = dict(DEFAULT_INFO if info is None else info)

    def _objects(self, kind: str) -> tuple[dict, ...]:
        return self.state.get(kind, ())

    def inspect_container(self, name: str, deadline=None) -> dict | None:
        containers = self._objects("containers")
        for info in containers:
            if name == info.get("Id") or info.get("Name") in (name, "/" + name):
                return info
        return _by_prefix(containers, name)

    def inspect_exec(self, exec_id: str, deadline=None) -> dict | None:
        return next((e for e in self._objects("execs") if e.get("ID", e.get("Id")) == exec_id),
                    None)

    def inspect_plugin(self, name: str, deadline=None) -> dict | None:
        plugins = self._objects("plugins")
        for info in plugins:
            if name == info.get("Id") or info.get("Name") in (name, f"{name}:latest"):
                return info
        return _by_prefix(plugins, name)

    def inspect_network(self, name: str, deadline=None) -> dict | None:
        networks = self._objects("networks")
        for info in networks:
            if name in (info.get("Id"), info.get("Name")):
                return info
        return _by_prefix(networks, name)

    def inspect_volume(self, name: str, deadline=None) -> dict | None:
        return next((v for v in self._objects("volumes") if v.get("Name") == name), None)

    def inspect_image(self, ref: str, deadline=None) -> dict | None:
        for info in self._objects("images"):
            names = [info.get("Id"), str(info.get("Id", "")).removeprefix("sha256:")]
            names += list(info.get("RepoTags") or ())
            if ref in names or f"{ref}:latest" in names:
                return info
        return None

    def info(self, deadline=None) -> dict:
        return dict(self._info)

    def server_pid(self) -> int | None:
        return None
