"""A docker command line, translated into the API calls the docker CLI (docker/cli 20.10,
Debian docker.io 20.10.24, API 1.41) makes for it, so that policy tests and explanations
decide exactly what dockerd would be asked.

``api_calls(["docker", "run", "--privileged", "img", "true"])`` lists every call in the
order the CLI sends it, starting with its ``HEAD /_ping``. What cannot be known offline
is fixed and documented:

- ids dockerd would hand out (the created container, an exec instance) are a placeholder
  full 64-hex id, ``sha256("pyauthz-docker-cli\\0<kind>\\0" + NUL-joined argv)``
  (``placeholder_id``), so the same command line always gives the same calls;
- the image given to run/create is taken to exist locally (the CLI pulls and retries the
  create only after a 404), and content trust is off (``DOCKER_CONTENT_TRUST`` unset);
- ``-e NAME`` without a value takes NAME from this process's environment, as the CLI takes
  it from its own; ``run -it``/``exec -it`` are translated as on a terminal (off one the
  CLI stops before any call), without the ``resize`` calls that carry the terminal's size
  after the start;
- for run, the ``attach`` (unless -d) and ``wait`` calls are included, labelled;
- registry credentials never appear: ``X-Registry-Auth`` is stripped by dockerd before a
  plugin sees it, and ``login``'s ``/auth`` body has its username and password replaced by
  ``<redacted>`` (``to_authz_request`` forwards no ``/auth`` body);
- ``HostConfig.Binds`` and run/create's ``Env`` are in argv order (the CLI's order is a Go
  map's: random; ``Env`` has one entry per name, the last given); the CLI's config.json is
  taken to configure no ``proxies`` (the CLI would add them to ``Env``); rm, stop and kill
  of several containers are sent concurrently by the CLI, listed here in argv order.

Anything else it cannot translate exactly raises ``CliError``: never a guess.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from authz.moby.reference import DEFAULT_DOMAIN, InvalidReference, parse_reference
from authz.policytools.docker_cli_errors import CliError
from authz.policytools.docker_cli_flags import BOOL, INT, LIST, Flag, FlagSet
from authz.policytools.docker_cli_go import api_uri, go_json
from authz.policytools.docker_cli_objects import plugin, update
from authz.protocol import REQUEST_PHASE, AuthzRequest, Headers

__all__ = ["ApiCall", "CliError", "api_calls", "placeholder_id", "to_authz_request", "USER_AGENT"]

USER_AGENT = "Docker-Client/20.10.24+dfsg1 (linux)"
MAX_FORWARDED_BODY = 1 << 20  # dockerd forwards a body only below 1 MiB


@dataclass(frozen=True)
class ApiCall:
    method: str
    uri: str  # raw request target as the CLI sends it, with /v1.41 prefix and query
    headers: dict[str, str]
    body: bytes | None
    label: str  # e.g. "create", "start", "pull"


def placeholder_id(argv: list[str], kind: str) -> str:
    """The stand-in for an id dockerd would return (kind: "container", "exec")."""
    data = "\0".join(["pyauthz-docker-cli", kind, *argv]).encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).hexdigest()


class _Calls:
    """Builds one command's calls (headers as dockerd's Go server shows them)."""

    def __init__(self, version: str):
        self.version = version
        self.calls: list[ApiCall] = [ApiCall("HEAD", "/_ping", {"User-Agent": USER_AGENT}, None, "ping")]

    def get(self, path: str, label: str, query: dict[str, str] | None = None, method: str = "GET") -> None:
        self.calls.append(ApiCall(method, api_uri(self.version, path, query),
                                  {"User-Agent": USER_AGENT}, None, label))

    def post(self, path: str, label: str, query: dict[str, str] | None = None, body=None,
             hijack: bool = False) -> None:
        data = b"" if body is None else go_json(body)
        headers = {"Content-Length": str(len(data)),
                   "Content-Type": "text/plain" if body is None else "application/json",
                   "User-Agent": USER_AGENT}
        if hijack:
            headers.update({"Connection": "Upgrade", "Upgrade": "tcp"})
        self.calls.append(ApiCall("POST", api_uri(self.version, path, query), headers,
                                  data if body is not None else None, label))


def _name(arg: str) -> str:
    """A container/image/exec name as the CLI puts it into a path (path.Join cleans it)."""
    if not arg:
        raise CliError("an empty name is not modelled")
    return arg


def _familiar(text: str) -> tuple[str, str]:
    """ImagePull's fromImage (FamiliarName) and tag (digest, tag or ``latest``)."""
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        raise CliError(f"invalid reference format: {text!r}: {exc}") from None
    name = ref.path.removeprefix("library/") if ref.domain == DEFAULT_DOMAIN else f"{ref.domain}/{ref.path}"
    return name, ref.digest or ref.tag or "latest"


def _run_create(command: str, argv: list[str], rest: list[str], out: _Calls) -> None:
    from authz.policytools.docker_cli_container import flagset
    from authz.policytools.docker_cli_create import build_create

    parsed = flagset(command).parse(rest)
    pull = parsed.get("pull", "missing")
    if pull not in ("missing", "always", "never"):
        raise CliError(f'invalid pull option: {pull!r}: must be one of "always", "missing" or "never"')
    if parsed.get("disable-content-trust") is False:
        raise CliError("--disable-content-trust=false (content trust) is not modelled")
    create = build_create(command, parsed)
    if pull == "always":
        image = create.body["Image"]
        name, tag = _familiar(image)
        out.post("/images/create", "pull", {"fromImage": name, "tag": tag})
    out.post("/containers/create", "create", create.query, create.body)
    if command == "create":
        return
    cid = placeholder_id(argv, "container")
    if create.attach_stdin or create.attach_stdout or create.attach_stderr:
        query = {"stream": "1"}
        for stream, on in (("stdin", create.attach_stdin), ("stdout", create.attach_stdout),
                           ("stderr", create.attach_stderr)):
            if on:
                query[stream] = "1"
        out.post(f"/containers/{cid}/attach", "attach", query, hijack=True)
    out.post(f"/containers/{cid}/wait", "wait",
             {"condition": "removed" if create.auto_remove else "next-exit"})
    out.post(f"/containers/{cid}/start", "start")


_EXEC_FLAGS = [Flag("detach", BOOL, "d"), Flag("env", LIST, "e"), Flag("interactive", BOOL, "i"),
               Flag("privileged", BOOL), Flag("tty", BOOL, "t"), Flag("user", short="u"),
               Flag("workdir", short="w"), Flag("detach-keys", refused="changes the exec body"),
               Flag("env-file", refused="reads a local file")]


def _exec(argv: list[str], rest: list[str], out: _Calls) -> None:
    from authz.policytools.docker_cli_values import _validate_env

    parsed = FlagSet("exec", _EXEC_FLAGS, interspersed=False).parse(rest)
    if len(parsed.args) < 2:
        raise CliError("docker exec: requires at least 2 arguments (container, command)")
    container, cmd = _name(parsed.args[0]), parsed.args[1:]
    detach, tty = bool(parsed.get("detach")), bool(parsed.get("tty"))
    body = {"User": parsed.get("user", ""), "Privileged": bool(parsed.get("privileged")), "Tty": tty,
            "AttachStdin": not detach and bool(parsed.get("interactive")),
            "AttachStderr": not detach, "AttachStdout": not detach, "Detach": detach,
            "DetachKeys": "", "Env": [_validate_env(v) for v in parsed.list("env")] or None,
            "WorkingDir": parsed.get("workdir", ""), "Cmd": cmd}
    out.get(f"/containers/{container}/json", "inspect")
    out.post(f"/containers/{container}/exec", "exec-create", body=body)
    exec_id = placeholder_id(argv, "exec")
    out.post(f"/exec/{exec_id}/start", "exec-start", body={"Detach": detach, "Tty": tty},
             hijack=not detach)
    if not detach:
        out.get(f"/exec/{exec_id}/json", "exec-inspect")


def _simple(command: str, flags: list[Flag], rest: list[str], minimum: int = 0, maximum: int | None = None):
    parsed = FlagSet(command, flags).parse(rest)
    if len(parsed.args) < minimum or (maximum is not None and len(parsed.args) > maximum):
        raise CliError(f"docker {command}: wrong number of arguments")
    return parsed


def _volume_create(rest: list[str], out: _Calls) -> None:
    from authz.policytools.docker_cli_values import _validate_label, kv_map

    parsed = _simple("volume create", [Flag("driver", short="d"), Flag("opt", LIST, "o"),
                                       Flag("label", LIST), Flag("name")], rest, 0, 1)
    name = parsed.get("name", "")
    if parsed.args:
        if name:
            raise CliError("conflicting options: either specify --name or provide positional arg, not both")
        name = parsed.args[0]
    out.post("/volumes/create", "volume-create", body={
        "Driver": parsed.get("driver", "local"), "DriverOpts": kv_map(parsed.list("opt")),
        "Labels": kv_map([_validate_label(v) for v in parsed.list("label")]), "Name": name})


_NETWORK_FLAGS = [Flag("driver", short="d"), Flag("opt", LIST, "o"), Flag("label", LIST),
                  Flag("internal", BOOL), Flag("attachable", BOOL), Flag("ingress", BOOL),
                  Flag("ipv6", BOOL), Flag("scope"), Flag("config-only", BOOL), Flag("config-from"),
                  Flag("ipam-driver"), Flag("ipam-opt", LIST)] + [
    Flag(name, refused="IPAM address configuration")
    for name in ("subnet", "ip-range", "gateway", "aux-address")]


def _network_create(rest: list[str], out: _Calls) -> None:
    from authz.policytools.docker_cli_values import _validate_label, kv_map

    parsed = _simple("network create", _NETWORK_FLAGS, rest, 1, 1)
    config_from = parsed.get("config-from", "")
    out.post("/networks/create", "network-create", body={
        "CheckDuplicate": True, "Driver": parsed.get("driver", "bridge"), "Scope": parsed.get("scope", ""),
        "EnableIPv6": bool(parsed.get("ipv6")),
        "IPAM": {"Driver": parsed.get("ipam-driver", "default"), "Options": kv_map(parsed.list("ipam-opt")),
                 "Config": []},
        "Internal": bool(parsed.get("internal")), "Attachable": bool(parsed.get("attachable")),
        "Ingress": bool(parsed.get("ingress")), "ConfigOnly": bool(parsed.get("config-only")),
        "ConfigFrom": {"Network": config_from} if config_from else None,
        "Options": kv_map(parsed.list("opt")),
        "Labels": kv_map([_validate_label(v) for v in parsed.list("label")]), "Name": parsed.args[0]})


def _login(rest: list[str], out: _Calls) -> None:
    parsed = _simple("login", [Flag("username", short="u"), Flag("password", short="p"),
                               Flag("password-stdin", BOOL)], rest, 0, 1)
    if not parsed.get("username") or not (parsed.get("password") or parsed.get("password-stdin")):
        raise CliError("docker login without -u and -p/--password-stdin prompts or uses stored "
                       "credentials: not modelled")
    server = parsed.args[0] if parsed.args else "https://index.docker.io/v1/"
    out.get("/info", "info")
    out.post("/auth", "login", body={"username": "<redacted>", "password": "<redacted>",
                                     "serveraddress": server})


def _containers(command: str, flags: list[Flag], rest: list[str]):
    return _simple(command, flags, rest, 1).args


def _dispatch(command: str, argv: list[str], rest: list[str], out: _Calls) -> None:
    if command in ("run", "create"):
        _run_create(command, argv, rest, out)
    elif command == "exec":
        _exec(argv, rest, out)
    elif command == "start":
        for name in _containers("start", [], rest):
            out.post(f"/containers/{_name(name)}/start", "start")
    elif command == "pull":
        parsed = _simple("pull", [Flag("all-tags", BOOL, "a"), Flag("quiet", BOOL, "q"),
                                  Flag("disable-content-trust", BOOL),
                                  Flag("platform", refused="platform selection")], rest, 1, 1)
        name, tag = _familiar(parsed.args[0])
        out.post("/images/create", "pull", {"fromImage": name} if parsed.get("all-tags")
                 else {"fromImage": name, "tag": tag})
    elif command == "ps":
        parsed = _simple("ps", [Flag("all", BOOL, "a"), Flag("quiet", BOOL, "q"), Flag("size", BOOL, "s"),
                                Flag("last", INT, "n"), Flag("latest", BOOL, "l"), Flag("no-trunc", BOOL),
                                Flag("format", refused="template fields decide the size query"),
                                Flag("filter", refused="filters")], rest, 0, 0)
        limit = parsed.get("last", -1)
        if parsed.get("latest") and limit == -1:
            limit = 1
        query = {"all": "1"} if parsed.get("all") else {}
        if limit != -1:
            query["limit"] = str(limit)
        if parsed.get("size"):
            query["size"] = "1"
        out.get("/containers/json", "ps", query)
    elif command == "images":
        parsed = _simple("images", [Flag("all", BOOL, "a"), Flag("quiet", BOOL, "q"), Flag("digests", BOOL),
                                    Flag("no-trunc", BOOL), Flag("format"),
                                    Flag("filter", refused="filters")], rest, 0, 1)
        query = {}
        if parsed.args:
            query["filters"] = go_json({"reference": {parsed.args[0]: True}}).decode().strip()
        if parsed.get("all"):
            query["all"] = "1"
        out.get("/images/json", "images", query)
    elif command in ("info", "version"):
        _simple(command, [Flag("format", short="f")], rest, 0, 0)
        out.get(f"/{command}", command)
    elif command == "rm":
        parsed = _simple("rm", [Flag("force", BOOL, "f"), Flag("link", BOOL, "l"),
                                Flag("volumes", BOOL, "v")], rest, 1)
        query = {key: "1" for key, flag in (("force", "force"), ("link", "link"), ("v", "volumes"))
                 if parsed.get(flag)}
        for name in parsed.args:
            out.get(f"/containers/{_name(name)}", "rm", query, method="DELETE")
    elif command == "stop":
        parsed = _simple("stop", [Flag("time", INT, "t")], rest, 1)
        query = {"t": str(parsed.get("time"))} if "time" in parsed.changed else {}
        for name in parsed.args:
            out.post(f"/containers/{_name(name)}/stop", "stop", query)
    elif command == "kill":
        parsed = _simple("kill", [Flag("signal", short="s")], rest, 1)
        for name in parsed.args:
            out.post(f"/containers/{_name(name)}/kill", "kill", {"signal": parsed.get("signal", "KILL")})
    elif command in ("inspect", "container inspect", "image inspect"):
        flags = [Flag("format", short="f"), Flag("size", BOOL, "s")]
        parsed = _simple(command, flags + ([Flag("type")] if command == "inspect" else []), rest, 1)
        kind = {"container inspect": "container", "image inspect": "image"}.get(command, parsed.get("type"))
        if kind not in ("container", "image"):
            raise CliError("docker inspect without --type container|image tries each object type "
                           "in turn: not modelled")
        for name in parsed.args:
            if kind == "container":
                query = {"size": "1"} if parsed.get("size") else {}
                out.get(f"/containers/{_name(name)}/json", "inspect", query)
            else:
                out.get(f"/images/{_name(name)}/json", "image-inspect")
    elif command == "volume create":
        _volume_create(rest, out)
    elif command == "network create":
        _network_create(rest, out)
    elif command == "login":
        _login(rest, out)
    elif command == "update":
        update(rest, out)
    elif command.startswith("plugin "):
        plugin(command, rest, out)
    else:
        raise CliError(f"docker {command}: command not modelled")


_MANAGEMENT = {  # docker <group> <cmd> forms that are another command's alias
    ("container", "run"): "run", ("container", "create"): "create", ("container", "exec"): "exec",
    ("container", "start"): "start", ("container", "ls"): "ps", ("container", "ps"): "ps",
    ("container", "list"): "ps", ("container", "rm"): "rm", ("container", "stop"): "stop",
    ("container", "kill"): "kill", ("container", "inspect"): "container inspect",
    ("container", "update"): "update",
    ("image", "pull"): "pull", ("image", "ls"): "images", ("image", "list"): "images",
    ("image", "inspect"): "image inspect", ("system", "info"): "info",
    ("volume", "create"): "volume create", ("network", "create"): "network create",
}

_GLOBAL = FlagSet("", [Flag("host", LIST, "H"), Flag("debug", BOOL, "D"), Flag("log-level", short="l")],
                  interspersed=False)


def api_calls(argv: list[str], *, api_version: str = "1.41") -> list[ApiCall]:
    """The API calls the docker CLI makes for argv (``argv[0] == "docker"``), in order."""
    if api_version != "1.41":
        raise CliError(f"API version {api_version}: only the 20.10 CLI's 1.41 is modelled")
    if not argv or argv[0] != "docker":
        raise CliError("the command line must start with `docker`")
    for arg in argv:
        if not isinstance(arg, str):
            raise CliError("every argument must be a string")
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise CliError(f"argument {arg!r} is not valid UTF-8") from None
    parsed = _GLOBAL.parse(argv[1:])
    if not parsed.args:
        raise CliError("no docker command given")
    head, rest = parsed.args[0], parsed.args[1:]
    command = head
    if rest and ((head, rest[0]) in _MANAGEMENT or head in ("volume", "network", "container",
                                                             "image", "system", "plugin")):
        command = _MANAGEMENT.get((head, rest[0]), f"{head} {rest[0]}")
        rest = rest[1:]
    out = _Calls(api_version)
    _dispatch(command, argv, rest, out)
    return out.calls


def to_authz_request(call: ApiCall, user: str = "") -> AuthzRequest:
    """The AuthZReq dockerd would send the plugin for call (phase "request"): the body only
    when dockerd forwards one (JSON Content-Type, 0 < Content-Length < 1 MiB, not /auth)."""
    body = call.body
    path = call.uri.split("?", 1)[0]
    media = call.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if (body is None or media != "application/json" or not 0 < len(body) < MAX_FORWARDED_BODY
            or path.endswith("/auth")):
        body = None
    headers = dict(call.headers)
    if call.body is not None:
        headers["Content-Length"] = str(len(call.body))
    return AuthzRequest(phase=REQUEST_PHASE, user=user, auth_method="TLS" if user else "",
                        method=call.method, uri=call.uri, body=body, headers=Headers(headers))

