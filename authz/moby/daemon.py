"""Where dockerd keeps its state on this host: its data root, exec roots and containerd's
socket directory, as the running dockerd has them (its ``GET /info``, its command line and
its daemon.json, read like dockerd's own flag parsing: the last value wins)."""

from __future__ import annotations

import json
import os
import threading
import time

from authz.deadline import Deadline

DEFAULT_EXEC_ROOT = "/var/run/docker"
DEFAULT_DAEMON_JSON = "/etc/docker/daemon.json"


def _flags(args: list[str], *names: str) -> list[str]:
    """Every value of a command-line flag (``--name V`` or ``--name=V``)."""
    found = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found.append(args[i + 1])
            elif arg.startswith(name + "="):
                found.append(arg[len(name) + 1:])
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(256 * 1024)
    except OSError:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]


def _is_dockerd(args: list[str]) -> bool:
    return bool(args) and os.path.basename(args[0]).startswith("dockerd")


def dockerd_arguments(docker) -> list[str]:
    """dockerd's command line: the process listening on its socket, or (socket activation:
    systemd holds the listener) the one dockerd process that names that socket, or else the
    flags of every dockerd process together (each one's roots are protected)."""
    pid = docker.server_pid() if hasattr(docker, "server_pid") else None
    if pid:
        args = _cmdline(pid)
        if _is_dockerd(args):
            return args
    socket_path = urlsplit_path(getattr(docker, "docker_host", ""))
    candidates = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        entries = []
    for entry in entries:
        args = _cmdline(int(entry))
        if _is_dockerd(args):
            candidates.append(args)
    named = [a for a in candidates if socket_path and any(socket_path in arg for arg in a)]
    if len(named) == 1:
        return named[0]
    # Several dockerd processes and none names the socket (socket activation, rootless
    # beside rootful): their flags all count, so that every one's roots are protected.
    return [arg for args in candidates for arg in args]


def urlsplit_path(docker_host: str) -> str:
    return docker_host[len("unix://"):] if docker_host.startswith("unix://") else ""


def _daemon_json(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(1024 * 1024))
    except (OSError, ValueError):
        return {}  # dockerd does not start on an unreadable one
    return doc if isinstance(doc, dict) else {}


def daemon_roots(info: dict, args: list[str]) -> list[tuple[str, str]]:
    """dockerd's data root (as ``GET /info`` reports it), its exec roots and containerd's
    socket directories (from its command line and daemon.json; the default exec root is
    always kept), each also symlink-resolved. Duplicates are dropped."""
    configs = [_daemon_json(p) for p in _flags(args, "--config-file") or [DEFAULT_DAEMON_JSON]]
    found = [(info.get("DockerRootDir"), "dockerd's data root")]
    exec_roots = _flags(args, "--exec-root") + [c.get("exec-root") for c in configs]
    found += [(root, "dockerd's exec root") for root in exec_roots + [DEFAULT_EXEC_ROOT]]
    data_roots = _flags(args, "--data-root", "-g", "--graph") + [c.get("data-root") for c in configs]
    found += [(root, "dockerd's data root") for root in data_roots]
    for socket_path in _flags(args, "--containerd") + [c.get("containerd") for c in configs]:
        if isinstance(socket_path, str) and socket_path.startswith("/"):
            found.append((os.path.dirname(socket_path), "containerd's socket directory"))
    out: dict[str, str] = {}
    for path, what in found:
        if isinstance(path, str) and path.startswith("/"):
            path = os.path.normpath(path)
            if path in ("/", "//"):
                continue
            # dockerd's own configuration: trusted, so Python's resolution will do.
            for form in (path, os.path.realpath(path)):
                out.setdefault(form, what)
    return list(out.items())


# How long what dockerd reports of its own roots is reused (a new data root needs a restart
# of dockerd; the plugin sees it within this time).
ROOTS_TTL_SECONDS = 60.0
_ROOTS_CACHE: dict[str, tuple[float, list[tuple[str, str]]]] = {}
_ROOTS_LOCK = threading.Lock()


def cached_daemon_paths(docker, deadline: Deadline) -> list[tuple[str, str]]:
    """``daemon_roots`` of the dockerd behind ``docker``, read at most once a minute
    (``GET /info``, its command line and daemon.json). Raises the client's errors."""
    key = docker.docker_host
    with _ROOTS_LOCK:
        cached = _ROOTS_CACHE.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
    paths = daemon_roots(docker.info(deadline), dockerd_arguments(docker))
    with _ROOTS_LOCK:
        _ROOTS_CACHE[key] = (time.monotonic() + ROOTS_TTL_SECONDS, paths)
    return paths
