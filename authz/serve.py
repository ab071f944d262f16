"""Serve a WSGI app on a unix socket under gunicorn, the way dockerd expects a plugin.

dockerd keeps connections to a plugin alive and calls it on every API request, so the
worker model is threads sharing one loaded policy per process, each of dockerd's kept-alive
connections answered call after call by one thread (``authz.worker.PluginWorker``, gunicorn's
gthread without its per-call hand-over), in a few more worker processes than cores (each
decides under its own interpreter lock).

Under systemd (``packaging/systemd/pyauthz.socket``) the listening socket is systemd's: it
passes it as fd 3 with ``LISTEN_FDS=1`` and ``LISTEN_PID`` = the pid it started.
``inherited_socket`` reads those variables as ``gunicorn.systemd.listen_fds`` does (and
checks the descriptor) without consuming them, so that gunicorn's arbiter, which runs in this
same process and so is the master, takes the socket itself: it then never binds, chmods or
unlinks it (not at a reload, not at its stop) and removes the variables before forking
workers. No stale-socket cleanup runs on that path.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Callable

from gunicorn.app.base import BaseApplication

from authz.moby import recall  # noqa: F401 - its shared mapping is made here, before the fork
from authz.ownership import unsafe_ancestor

DEFAULT_SOCKET = "/run/docker/plugins/pyauthz.sock"


class SocketInUse(RuntimeError):
    """Another process is already answering on the socket path."""


class InheritedSocketError(RuntimeError):
    """systemd passed this process something pyauthz cannot serve on."""


SD_LISTEN_FDS_START = 3  # as gunicorn.systemd and sd_listen_fds(3)


@dataclass(frozen=True)
class InheritedSocket:
    """The listening unix socket systemd (or systemd-socket-activate) passed to us."""

    fd: int
    path: str


def inherited_socket(requested_path: str | None = None) -> InheritedSocket | None:
    """The socket systemd passed to this process, or None when it passed none.

    Read as ``gunicorn.systemd.listen_fds`` reads it: ``LISTEN_FDS`` counts only when
    ``LISTEN_PID`` is this process (variables meant for another process are not ours). The
    variables are left in place: gunicorn's arbiter reads them again in this process, the
    master, and takes the socket. Refused (``InheritedSocketError``): more than one socket,
    a descriptor that is not a listening unix stream socket with a path, and a
    ``requested_path`` (an explicit ``--socket``) other than the socket's own path.
    """
    try:
        pid = int(os.environ.get("LISTEN_PID", "0") or 0)
        count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    except ValueError:
        raise InheritedSocketError(
            f"LISTEN_PID={os.environ.get('LISTEN_PID')!r} LISTEN_FDS="
            f"{os.environ.get('LISTEN_FDS')!r} are not numbers") from None
    if pid != os.getpid() or count == 0:
        return None
    if count != 1:
        raise InheritedSocketError(
            f"systemd passed {count} sockets; pyauthz serves exactly one "
            "(one ListenStream= in pyauthz.socket)")
    fd = SD_LISTEN_FDS_START
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise InheritedSocketError(f"LISTEN_FDS=1 but fd {fd} is not a socket: "
                                   f"{exc.strerror or exc}") from None
    try:
        if probe.family != socket.AF_UNIX or probe.type != socket.SOCK_STREAM:
            raise InheritedSocketError(
                f"the socket systemd passed (fd {fd}) is {probe.family.name}/"
                f"{probe.type.name}; dockerd needs a unix stream socket "
                "(ListenStream=/run/docker/plugins/NAME.sock)")
        if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise InheritedSocketError(f"the socket systemd passed (fd {fd}) is not listening")
        path = probe.getsockname()
    finally:
        probe.close()  # the duplicate only: fd 3 stays open for gunicorn
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or path.startswith("\0"):
        raise InheritedSocketError("the socket systemd passed has no path in the file system; "
                                   "dockerd finds plugins by /run/docker/plugins/NAME.sock")
    if requested_path is not None and os.path.abspath(requested_path) != path:
        raise InheritedSocketError(
            f"--socket {requested_path} but systemd passed the socket {path}: give the "
            "ListenStream= path (or leave --socket out)")
    _check_private(path)
    return InheritedSocket(fd, path)


def _check_private(path: str) -> None:
    """The socket and its directory as pyauthz makes its own: only root may connect (anyone
    who can would have calls decided and logged as dockerd's) or replace the socket."""
    try:
        sock, parent = os.lstat(path), os.lstat(os.path.dirname(path))
    except OSError as exc:
        raise InheritedSocketError(f"the socket systemd passed ({path}) cannot be checked: "
                                   f"{exc.strerror or exc}") from None
    # Connecting to a unix socket needs write permission on it: no group or other write bit.
    if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid != 0 or sock.st_mode & 0o022:
        raise InheritedSocketError(
            f"the socket systemd passed ({path}) has mode {stat.S_IMODE(sock.st_mode):04o} "
            f"and owner uid {sock.st_uid}: only root may connect to the plugin "
            "(SocketMode=0600, SocketUser=root in pyauthz.socket)")
    above = unsafe_ancestor(os.path.dirname(path))
    if above is not None:
        raise InheritedSocketError(f"the socket systemd passed ({path}) can be replaced by "
                                   f"others: {above}")
    if parent.st_uid != 0 or parent.st_mode & 0o022:
        raise InheritedSocketError(
            f"the directory of the socket systemd passed ({os.path.dirname(path)}) has mode "
            f"{stat.S_IMODE(parent.st_mode):04o} and owner uid {parent.st_uid}: others could "
            "replace the socket (DirectoryMode=0755, root-owned)")


def forget_foreign_listeners() -> None:
    """gunicorn also takes listeners from its own re-exec hand-over (GUNICORN_FD with
    GUNICORN_PID), which would bypass every check above: pyauthz never re-execs gunicorn, so
    any such variables were not set for it and are dropped before gunicorn starts."""
    for name in ("GUNICORN_FD", "GUNICORN_PID"):
        os.environ.pop(name, None)


@dataclass
class ServeOptions:
    socket_path: str = DEFAULT_SOCKET
    # Python decides with one lock per process (the GIL): with more processes than cores,
    # fewer threads wait on each one (bench at 8 clients on 2 vCPUs: 2 x 32 made 0.69x the
    # floor's decisions/s, 4 x 16 0.76-0.82x; bench/README.md).
    workers: int = 4
    threads: int = 16
    # gunicorn's worker class: pyauthz's own (authz/worker.py); the benchmark's floor also
    # runs under gunicorn's gthread, as a naive Flask plugin would.
    worker_class: str = "authz.worker.PluginWorker"
    # dockerd reuses its connection to the plugin; keep idle ones open for a while.
    keepalive: int = 75
    # gunicorn's heartbeat: a worker whose main loop has not checked in for this long is
    # killed and replaced. PluginWorker's main loop checks in at least once a second whatever
    # its threads do; each request is bounded by its own deadlines (READ_TIMEOUT, the
    # decision's), not by this.
    timeout: int = 30
    # Runs in the master on SIGHUP, before any worker is replaced (the safe reload).
    on_reload: Callable[[], object] | None = None
    pidfile: str | None = None
    # The socket is systemd's (inherited_socket): gunicorn's master takes it from LISTEN_FDS;
    # nothing at socket_path is created, probed, chmodded or unlinked.
    inherited: bool = False
    # (host, port) of /metrics and /health, served by the master (authz/metrics.py); None: off.
    metrics_listen: tuple[str, int] | None = None


def prepare_socket_path(path: str) -> None:
    """Create the socket's directory; remove a stale socket, refuse a live one.

    gunicorn would silently unlink any socket at the path, which would steal the
    socket of a running plugin: check first that nobody answers on it.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)  # stale: left by a process that died
            return
        raise
    else:
        raise SocketInUse(f"another process is serving on {path}")
    finally:
        probe.close()


class _GunicornApp(BaseApplication):
    def __init__(self, app_factory: Callable[[], object], options: ServeOptions,
                 metrics_server=None):
        self._factory = app_factory
        self._options = options
        self._metrics = metrics_server
        super().__init__()

    def load_config(self) -> None:
        o = self._options
        settings = {
            "bind": f"unix:{o.socket_path}",
            "workers": o.workers,
            "threads": o.threads,
            "worker_class": o.worker_class,
            "keepalive": o.keepalive,
            "timeout": o.timeout,
            "graceful_timeout": 10,
            # Only root may connect: the socket is created with mode 0600.
            "umask": 0o177,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "pyauthz",
            # The app is made in each worker after the fork, from the policy the master
            # holds (authz/reload.py): SIGHUP makes the master load and validate the policy
            # directory before any worker is replaced.
            "preload_app": False,
        }
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 25.1+ would open a control socket ($XDG_RUNTIME_DIR/gunicorn.ctl or
            # ~/.gunicorn/gunicorn.ctl, a path every root gunicorn shares and unlinks): a second
            # way to scale workers or stop the plugin (a quick shutdown skips the stop's linger)
            # beside pyauthz's own. None.
            settings["control_socket_disable"] = True
        if o.on_reload is not None:
            hook = o.on_reload
            settings["on_reload"] = lambda arbiter: hook()
        if o.pidfile:
            os.makedirs(os.path.dirname(o.pidfile), mode=0o755, exist_ok=True)
            settings["pidfile"] = o.pidfile
        if self._metrics is not None:
            m = self._metrics
            settings["post_fork"] = lambda arbiter, worker: m.post_fork()
            settings["child_exit"] = lambda arbiter, worker: m.child_exit(worker.pid)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        return self._factory()


def _check_inherited(socket_path: str) -> None:
    """Right before gunicorn reads LISTEN_FDS itself: the socket is still there for us (had
    the variables gone, gunicorn would bind a socket of its own over systemd's path)."""
    found = inherited_socket(socket_path)
    if found is None:
        raise InheritedSocketError("the socket systemd passed is no longer in LISTEN_FDS")
    if not os.path.exists(found.path):
        print(f"pyauthz: warning: {found.path} (systemd's socket) is gone from the file "
              "system; dockerd cannot reach pyauthz until pyauthz.socket is restarted",
              file=sys.stderr, flush=True)


def serve(app_factory: Callable[[], object], options: ServeOptions) -> None:
    """Run until SIGTERM/SIGINT (graceful), SIGHUP reloads workers (and so the policy)."""
    forget_foreign_listeners()
    if options.inherited:
        _check_inherited(options.socket_path)
    else:
        prepare_socket_path(options.socket_path)
    metrics_server = None
    if options.metrics_listen is not None:
        from authz import metrics

        metrics_server = metrics.start(*options.metrics_listen, options.socket_path)
    try:
        _GunicornApp(app_factory, options, metrics_server).run()
    finally:
        if metrics_server is not None:
            metrics_server.stop()  # the master only: a worker exits through here too
