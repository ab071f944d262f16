"""The Docker Engine API as dockerd 20.10 (API 1.41) routes it: one table, one place.

Each route is (method, path pattern as registered with gorilla/mux, endpoint name,
whether it changes state, the decoder of its security-relevant content). Patterns use
mux's syntax: ``{name:.*}`` matches across slashes, ``{id}`` does not. The first route
that matches wins, as in mux. The table is data, in mux order: adding an endpoint is one
line here and, if its content matters, one decoder in ``decoders/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.decoding.decoders import common, containers, objects, services
from authz.decoding.facts import Fact
from authz.decoding.findings import READ_METHODS, Body, Decoder, Findings, normalize_image
from authz.decoding.uri import Target

R, W = False, True
_ROUTES: list[tuple[str, str, str, bool, Decoder | None]] = [
    # checkpoints (experimental); registered before the container routes, as in dockerd,
    # or DELETE /containers/{name:.*} would take them.
    ("GET", "/containers/{name:.*}/checkpoints", "checkpoint.list", R, containers.checkpoint_list),
    ("POST", "/containers/{name:.*}/checkpoints", "checkpoint.create", W, containers.checkpoint_create),
    ("DELETE", "/containers/{name}/checkpoints/{checkpoint}", "checkpoint.remove", W,
     containers.checkpoint_remove),
    # system
    ("GET", "/_ping", "system.ping", R, None),
    ("HEAD", "/_ping", "system.ping", R, None),
    ("GET", "/events", "system.events", R, None),
    ("GET", "/info", "system.info", R, None),
    ("GET", "/version", "system.version", R, None),
    ("GET", "/system/df", "system.df", R, None),
    ("POST", "/auth", "system.auth", W, common.auth),
    # containers
    ("HEAD", "/containers/{name:.*}/archive", "container.archive.stat", R, containers.acts_inside),
    ("GET", "/containers/json", "container.list", R, None),
    ("GET", "/containers/{name:.*}/export", "container.export", R, None),
    ("GET", "/containers/{name:.*}/changes", "container.changes", R, None),
    ("GET", "/containers/{name:.*}/json", "container.inspect", R, None),
    ("GET", "/containers/{name:.*}/top", "container.top", R, None),
    ("GET", "/containers/{name:.*}/logs", "container.logs", R, None),
    ("GET", "/containers/{name:.*}/stats", "container.stats", R, None),
    ("GET", "/containers/{name:.*}/attach/ws", "container.attach", W, containers.acts_inside),
    ("GET", "/exec/{id:.*}/json", "exec.inspect", R, None),
    ("GET", "/containers/{name:.*}/archive", "container.archive.get", R, containers.acts_inside),
    ("POST", "/containers/create", "container.create", W, containers.create),
    ("POST", "/containers/{name:.*}/kill", "container.kill", W, None),
    ("POST", "/containers/{name:.*}/pause", "container.pause", W, None),
    ("POST", "/containers/{name:.*}/unpause", "container.unpause", W, None),
    ("POST", "/containers/{name:.*}/restart", "container.restart", W, containers.restart),
    ("POST", "/containers/{name:.*}/start", "container.start", W, containers.start),
    ("POST", "/containers/{name:.*}/stop", "container.stop", W, None),
    ("POST", "/containers/{name:.*}/wait", "container.wait", R, None),
    ("POST", "/containers/{name:.*}/resize", "container.resize", W, None),
    ("POST", "/containers/{name:.*}/attach", "container.attach", W, containers.acts_inside),
    ("POST", "/containers/{name:.*}/copy", "container.copy", R, containers.copy),
    ("POST", "/containers/{name:.*}/exec", "exec.create", W, containers.exec_create),
    ("POST", "/exec/{name:.*}/start", "exec.start", W, containers.exec_start),
    ("POST", "/exec/{name:.*}/resize", "exec.resize", W, None),
    ("POST", "/containers/{name:.*}/rename", "container.rename", W, None),
    ("POST", "/containers/{name:.*}/update", "container.update", W, containers.update),
    ("POST", "/containers/prune", "container.prune", W, None),
    ("POST", "/commit", "image.commit", W, containers.commit),
    ("PUT", "/containers/{name:.*}/archive", "container.archive.put", W, containers.archive_put),
    ("DELETE", "/containers/{name:.*}", "container.remove", W, None),
    # images
    ("GET", "/images/json", "image.list", R, None),
    ("GET", "/images/search", "image.search", R, None),
    ("GET", "/images/get", "image.save", R, None),
    ("GET", "/images/{name:.*}/get", "image.save", R, None),
    ("GET", "/images/{name:.*}/history", "image.history", R, None),
    ("GET", "/images/{name:.*}/json", "image.inspect", R, None),
    ("POST", "/images/load", "image.load", W, common.binary_body),
    ("POST", "/images/create", "image.pull", W, objects.image_create),
    ("POST", "/images/{name:.*}/push", "image.push", W, common.body_json_optional),
    ("POST", "/images/{name:.*}/tag", "image.tag", W, objects.image_tag),
    ("POST", "/images/prune", "image.prune", W, None),
    ("DELETE", "/images/{name:.*}", "image.remove", W, None),
    # build
    ("POST", "/build", "build", W, objects.build),
    ("POST", "/build/prune", "build.prune", W, None),
    ("POST", "/build/cancel", "build.cancel", W, None),
    ("POST", "/session", "build.session", W, None),
    ("POST", "/grpc", "build.grpc", W, None),
    # distribution
    ("GET", "/distribution/{name:.*}/json", "distribution.inspect", R, None),
    # volumes
    ("GET", "/volumes", "volume.list", R, None),
    ("GET", "/volumes/{name:.*}", "volume.inspect", R, None),
    ("POST", "/volumes/create", "volume.create", W, objects.volume_create),
    ("POST", "/volumes/prune", "volume.prune", W, None),
    ("DELETE", "/volumes/{name:.*}", "volume.remove", W, None),
    # networks
    ("GET", "/networks", "network.list", R, None),
    ("GET", "/networks/", "network.list", R, None),
    ("GET", "/networks/{id:.+}", "network.inspect", R, None),
    ("POST", "/networks/create", "network.create", W, objects.network_create),
    ("POST", "/networks/{id:.*}/connect", "network.connect", W, common.body_json_optional),
    ("POST", "/networks/{id:.*}/disconnect", "network.disconnect", W, common.body_json_optional),
    ("POST", "/networks/prune", "network.prune", W, None),
    ("DELETE", "/networks/{id:.*}", "network.remove", W, None),
    # plugins
    ("GET", "/plugins/{name:.*}/json", "plugin.inspect", R, None),
    ("GET", "/plugins/privileges", "plugin.privileges", R, None),
    ("GET", "/plugins", "plugin.list", R, None),
    ("POST", "/plugins/{name:.*}/enable", "plugin.enable", W, objects.plugin_target),
    ("POST", "/plugins/{name:.*}/disable", "plugin.disable", W, objects.plugin_target),
    ("POST", "/plugins/pull", "plugin.pull", W, objects.plugin_privileges),
    ("POST", "/plugins/{name:.*}/push", "plugin.push", W, None),
    ("POST", "/plugins/{name:.*}/upgrade", "plugin.upgrade", W, objects.plugin_upgrade),
    ("POST", "/plugins/{name:.*}/set", "plugin.set", W, objects.plugin_set),
    ("POST", "/plugins/create", "plugin.create", W, objects.plugin_create),
    ("DELETE", "/plugins/{name:.*}", "plugin.remove", W, objects.plugin_target),
    # swarm
    ("GET", "/swarm", "swarm.inspect", R, None),
    ("GET", "/swarm/unlockkey", "swarm.unlockkey", R, None),
    ("POST", "/swarm/init", "swarm.init", W, common.body_json_optional),
    ("POST", "/swarm/join", "swarm.join", W, common.body_json_optional),
    ("POST", "/swarm/leave", "swarm.leave", W, None),
    ("POST", "/swarm/update", "swarm.update", W, objects.swarm_update),
    ("POST", "/swarm/unlock", "swarm.unlock", W, common.body_json_optional),
    ("GET", "/services", "service.list", R, None),
    ("GET", "/services/{id}", "service.inspect", R, None),
    ("POST", "/services/create", "service.create", W, services.service),
    ("POST", "/services/{id}/update", "service.update", W, services.service),
    ("DELETE", "/services/{id}", "service.remove", W, None),
    ("GET", "/services/{id}/logs", "service.logs", R, None),
    ("GET", "/nodes", "node.list", R, None),
    ("GET", "/nodes/{id}", "node.inspect", R, None),
    ("DELETE", "/nodes/{id}", "node.remove", W, None),
    ("POST", "/nodes/{id}/update", "node.update", W, common.body_json_optional),
    ("GET", "/tasks", "task.list", R, None),
    ("GET", "/tasks/{id}", "task.inspect", R, None),
    ("GET", "/tasks/{id}/logs", "task.logs", R, None),
    ("GET", "/secrets", "secret.list", R, None),
    ("POST", "/secrets/create", "secret.create", W, objects.secret_or_config),
    ("DELETE", "/secrets/{id}", "secret.remove", W, None),
    ("GET", "/secrets/{id}", "secret.inspect", R, None),
    ("POST", "/secrets/{id}/update", "secret.update", W, common.body_json_optional),
    ("GET", "/configs", "config.list", R, None),
    ("POST", "/configs/create", "config.create", W, objects.secret_or_config),
    ("DELETE", "/configs/{id}", "config.remove", W, None),
    ("GET", "/configs/{id}", "config.inspect", R, None),
    ("POST", "/configs/{id}/update", "config.update", W, common.body_json_optional),
]


def _compile(pattern: str) -> re.Pattern[str]:
    out, pos = "^", 0
    for m in re.finditer(r"\{(\w+)(?::([^}]+))?\}", pattern):
        out += re.escape(pattern[pos:m.start()])
        out += f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})"
        pos = m.end()
    return re.compile(out + re.escape(pattern[pos:]) + "$", re.DOTALL)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    endpoint: str
    write: bool
    decoder: Decoder | None


ROUTES: tuple[Route, ...] = tuple(
    Route(m, p, _compile(p), e, w, d if d is not None or not w else common.no_body)
    for m, p, e, w, d in _ROUTES
)
_BY_METHOD: dict[str, tuple[Route, ...]] = {}
for _route in ROUTES:
    _BY_METHOD[_route.method] = _BY_METHOD.get(_route.method, ()) + (_route,)

# Literal paths (most calls) are found without running a regex.
_LITERAL: dict[tuple[str, str], Route] = {}
for _route in ROUTES:
    if "{" not in _route.pattern:
        _LITERAL.setdefault((_route.method, _route.pattern), _route)

# Every endpoint name a decision can carry (rules and exceptions may only name these).
ENDPOINTS: frozenset[str] = frozenset({e for _, _, e, _, _ in _ROUTES} | {
    "image.import", "system.debug", "system.options", "unknown.read", "unknown.write"})


# What each call may change of what the plugin remembers of dockerd between decisions
# (authz.moby.recall: containers never run, images). A read changes nothing; every other call
# is taken to change everything, except these.
_READ_ENDPOINTS = frozenset(
    e for e in ENDPOINTS
    if any(r.endpoint == e for r in ROUTES) and not any(r.write for r in ROUTES if r.endpoint == e))
# Neither a container's configuration, name or state "created", nor any image: a create only
# adds a container under a new id and an unused name; an exec or an attach needs it running.
_CHANGES_NOTHING_KEPT = frozenset({
    "container.create", "container.attach", "container.resize", "exec.create", "exec.start",
    "exec.resize"})
# The one container the path names (every container, unless it is named by its full id).
_CHANGES_ONE_CONTAINER = frozenset({
    "container.kill", "container.pause", "container.unpause", "container.restart",
    "container.start", "container.stop", "container.update", "container.archive.put",
    "checkpoint.create", "checkpoint.remove"})
# Containers' names, or more than one container: every container.
_CHANGES_CONTAINERS = frozenset({"container.rename", "container.remove", "container.prune",
                                 "network.connect", "network.disconnect"})
_CHANGES_UNSEEN = ("build.session", "build.grpc", "swarm.", "service.", "node.", "secret.",
                   "config.")
_MAYBE_PREFIX = re.compile(r"^[0-9a-f]{1,63}$")


def state_changes(endpoint: str | None, target: Target | None = None
                  ) -> tuple[bool, str | None, bool, bool]:
    """(every container, the one container's full id or name, every image, unseen): what a call to
    ``endpoint`` on ``target`` (None: not known) may change of the state the plugin
    remembers, and whether dockerd may then change state without a call the plugin sees."""
    if endpoint in _READ_ENDPOINTS or endpoint in _CHANGES_NOTHING_KEPT:
        return False, None, False, False
    if endpoint in _CHANGES_ONE_CONTAINER and target is not None:
        route, params = match_route(target.method, target.path)
        name = params.get("name", "") if route is not None and route.endpoint == endpoint else ""
        # dockerd finds it by full id, then by name, then by id prefix: a full id or a name is
        # one container (recall forgets what it kept under that id or that name); anything
        # that could be a prefix may be any, and so may a legacy link's alias ("web/db" is
        # the container linked as db into web: a name of its own in dockerd's registry).
        bare = name.removeprefix("/")
        if bare and "/" not in bare and not _MAYBE_PREFIX.match(bare):
            return False, name, False, False
        return True, None, False, False
    if endpoint in _CHANGES_CONTAINERS or endpoint in _CHANGES_ONE_CONTAINER:
        return True, None, False, False
    return True, None, True, bool(endpoint) and endpoint.startswith(_CHANGES_UNSEEN)


# Registered outside the versioned table: /debug/* answers any method (pprof, expvar), and
# OPTIONS on any path is the CORS preflight.
_DEBUG = Route("*", "/debug/{path:.*}", _compile("/debug/{path:.*}"), "system.debug", False, None)
_OPTIONS = Route("OPTIONS", "/{path:.*}", _compile("/{path:.*}"), "system.options", False, None)


def match_route(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    """The first route that matches, as mux finds it, and its path variables."""
    if path == "/debug" or path.startswith("/debug/"):
        return _DEBUG, {}
    if method == "OPTIONS":
        return _OPTIONS, {}
    route = _LITERAL.get((method, path))
    if route is not None:
        return route, {}
    for route in _BY_METHOD.get(method, ()):
        m = route.regex.match(path)
        if m:
            return route, m.groupdict()
    return None, {}


def endpoint_of(method: str, route: Route | None) -> str:
    """The canonical endpoint name of a matched route (or of an unknown one)."""
    if route is not None:
        return route.endpoint
    return "unknown.read" if method in READ_METHODS else "unknown.write"


def decode_route(target: Target, body: Body, route: Route | None,
                 params: dict[str, str]) -> Findings:
    """Run the route's decoder (``match_route``'s result) over the request."""
    if route is None:
        write = target.method not in READ_METHODS
        return Findings(endpoint="unknown.write" if write else "unknown.read", write=write,
                        facts=[Fact("endpoint", "unknown.write" if write else "unknown.read",
                                    f"{target.method} {target.path[:200]}")])
    findings = Findings(endpoint=route.endpoint, write=route.write, params=params)
    if route.decoder is not None:
        route.decoder(target, body, findings)
    findings.facts.insert(0, Fact("endpoint", findings.endpoint, f"{target.method} {route.pattern}"))
    for ref in findings.runs:
        findings.facts.append(Fact("image", normalize_image(ref, default_tag=True), "Image",
                                  "starts a container"))
    for ref in findings.services:
        findings.facts.append(Fact("image", normalize_image(ref, default_tag=True),
                                  "TaskTemplate.ContainerSpec.Image", "a service runs it"))
    for ref in findings.pulls:
        findings.facts.append(Fact("image", ref, "query fromImage", "pulled"))
    return findings
