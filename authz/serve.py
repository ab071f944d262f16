"""Serve a WSGI app on a unix socket under gunicorn, the way dockerd expects a plugin.

dockerd keeps connections to a plugin alive and calls it on every API request, so the
default worker model is gthread (threads share one loaded policy per process and keep-alive
connections are kept), with a few worker processes for the second core.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass
from typing import Callable

from gunicorn.app.base import BaseApplication

DEFAULT_SOCKET = "/run/docker/plugins/pyauthz.sock"


class SocketInUse(RuntimeError):
    """Another process is already answering on the socket path."""


@dataclass
class ServeOptions:
    socket_path: str = DEFAULT_SOCKET
    workers: int = 2
    threads: int = 32
    # dockerd reuses its connection to the plugin; keep idle ones open for a while.
    keepalive: int = 75
    # A request to the plugin that takes longer than this is a bug; the worker is
    # restarted (dockerd sees a transport error, which it answers with HTTP 500: closed).
    timeout: int = 30
    # Runs in the master on SIGHUP, before any worker is replaced (the safe reload).
    on_reload: Callable[[], object] | None = None
    pidfile: str | None = None
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
            "worker_class": "gthread",
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


def serve(app_factory: Callable[[], object], options: ServeOptions) -> None:
    """Run until SIGTERM/SIGINT (graceful), SIGHUP reloads workers (and so the policy)."""
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
