"""Health that tells the truth: a real decision, made and logged, through the plugin socket.

``pyauthz health`` sends the plugin the AuthZReq dockerd would send for ``GET /_ping`` and
checks that a decision comes back (allow, or a deny by the policy): that means the worker
runs, the policy is loaded and the decision log took the line. A deny because the log cannot
be written, an internal error, no answer within the timeout, or no socket: unhealthy.
``pyauthz health --listen 127.0.0.1:PORT`` serves the same check as ``GET /health`` on its
own localhost listener (never the plugin socket), for monitors.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass

from authz.reload import read_state

_PROBE = {"User": "", "UserAuthNMethod": "", "RequestMethod": "GET", "RequestUri": "/_ping",
          "RequestHeaders": {"User-Agent": "pyauthz-health"}}


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str

    def as_json(self) -> bytes:
        return json.dumps({"healthy": self.ok, "detail": self.detail}).encode() + b"\n"


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("plugin.moby.localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def check(socket_path: str, timeout: float = 5.0) -> Health:
    """One probe decision through the plugin socket."""
    conn = _Unix(socket_path, timeout)
    try:
        conn.request("POST", "/AuthZPlugin.AuthZReq", body=json.dumps(_PROBE).encode(),
                     headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        resp = conn.getresponse()
        body = resp.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        return Health(False, f"no decision from {socket_path}: {exc}")
    finally:
        conn.close()
    try:
        answer = json.loads(body)
    except ValueError:
        return Health(False, f"the plugin answered HTTP {resp.status} without JSON")
    if resp.status != 200 or not isinstance(answer.get("Allow"), bool):
        return Health(False, f"the plugin answered HTTP {resp.status}: {str(answer)[:300]}")
    message = str(answer.get("Msg", ""))
    if not answer["Allow"] and not message.startswith("pyauthz denied system.ping"):
        return Health(False, message[:500])  # the log cannot be written, an internal error...
    state = read_state(socket_path) or {}
    revision = str(state.get("revision", ""))[:12] or "unknown"
    return Health(True, f"decisions are made and logged (policy revision {revision})")


# A probe is one real decision, logged: an unauthenticated listener reuses a recent result
# rather than turn each request into an audit-log line and a plugin thread.
PROBE_TTL_SECONDS = 2.0
# The listener's bounds: an idle or slow connection is dropped after this long, and at
# most this many are served at once (more are closed at once): no caller can grow the
# gunicorn master's threads or hold them.
LISTENER_TIMEOUT_SECONDS = 5.0
LISTENER_CONNECTIONS = 8


class CachedCheck:
    """``check`` at most once per PROBE_TTL_SECONDS, one probe at a time."""

    def __init__(self, socket_path: str, clock=time.monotonic):
        self.socket_path = socket_path
        self._clock = clock
        self._lock = threading.Lock()
        self._result: tuple[float, Health] | None = None

    def __call__(self) -> Health:
        with self._lock:
            now = self._clock()
            if self._result is None or now - self._result[0] >= PROBE_TTL_SECONDS:
                self._result = (now, check(self.socket_path))
            return self._result[1]


class BoundedHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that serves at most LISTENER_CONNECTIONS at once."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(LISTENER_CONNECTIONS)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: the caller retries
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A handler with a socket timeout, that logs nothing."""

    timeout = LISTENER_TIMEOUT_SECONDS

    def log_message(self, *args):
        pass


def serve_health(socket_path: str, host: str, port: int) -> None:
    """``GET /health``: 200 and the detail when healthy, 503 otherwise."""
    probe = CachedCheck(socket_path)

    class Handler(QuietHandler):
        def do_GET(self):
            if self.path != "/health":
                self.send_error(404)
                return
            health = probe()
            body = health.as_json()
            self.send_response(200 if health.ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = BoundedHTTPServer((host, port), Handler)
    try:
        server.serve_forever()
    finally:
        server.server_close()
