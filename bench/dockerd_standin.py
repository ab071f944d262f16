"""A stand-in for dockerd's API, for pyauthz's own reads during the benchmark.

pyauthz reads dockerd's state for some decisions (on a container start it inspects the
container: ``GET /containers/ID/json``). In production that read goes through dockerd's
authorization chain, so through pyauthz again (an AuthZReq and an AuthZRes, served by
another thread while the first decision waits), and dockerd answers it. This process does
the same, on a unix socket:

- answers ``GET [/vX.Y]/info`` with a data root, and ``GET [/vX.Y]/containers/ID/json`` and
  ``GET [/vX.Y]/images/REF/json`` with the
  answers dockerd gave in the recorded session (``session.json``: the AuthZRes of
  pyauthz's own read, and ``docker image inspect``), the container ID put in; anything
  else: 404, as dockerd does for an unknown object;
- with ``--plugin SOCKET``, first sends the AuthZReq and then the AuthZRes dockerd would
  send for that read to the plugin, byte for byte as recorded (Go's JSON encoding, sorted
  header maps), over a pool that keeps at most 2 idle connections, like dockerd's plugin
  client (Go's default MaxIdleConnsPerHost); a deny gives 403, as dockerd does.

    python3 -m bench.dockerd_standin --socket /tmp/x/dockerd.sock --plugin /tmp/x/pyauthz.sock
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import re
import signal
import socket
import threading
from typing import NamedTuple

from bench import client as bench_client
from bench import workload

_VERSION = re.compile(r"^/v[0-9]+(?:\.[0-9]+)?(?=/)")
_CONTAINER = re.compile(r"^/containers/([^/]+)/json$")
_IMAGE = re.compile(r"^/images/(.+)/json$")
_STRIPPED = {"authorization", "x-registry-auth", "x-registry-config"}
MAX_FORWARDED_BODY = 64 * 1024  # dockerd forwards JSON answers up to 64 KiB to AuthZRes
PLUGIN_HEADERS = {"Host": "", "User-Agent": "Go-http-client/1.1", "Content-Length": "0",
                  "Accept": "application/vnd.docker.plugins.v1.2+json"}


def canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey for ordinary header names."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class Answers:
    """dockerd's recorded answers, with the object's ID substituted."""

    def __init__(self, session: dict):
        fixtures = workload.fixtures(session)
        self.container = fixtures.get("container")
        self.image = fixtures.get("image")

    def answer(self, path: str) -> tuple[int, dict, bytes]:
        """Status, headers and body dockerd gave for path (any API version prefix); else 404."""
        path = _VERSION.sub("", path.split("?", 1)[0])
        m = _CONTAINER.match(path)
        if m and self.container:
            body, old_id, headers = self.container
            return 200, headers, body.replace(old_id.encode(), m.group(1).encode())
        m = _IMAGE.match(path)
        if m and self.image:
            body, _, headers = self.image
            return 200, headers, body
        if path == "/info":  # read by pyauthz (at most once a minute): roots, swarm state
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"DockerRootDir": "/var/lib/docker",
                 "Swarm": {"LocalNodeState": "inactive"}}).encode() + b"\n"
        msg = json.dumps({"message": f"No such object: {path}"}).encode() + b"\n"
        return 404, {"Content-Type": "application/json"}, msg


class PluginChain:
    """Calls the plugin as dockerd's authorization middleware does."""

    def __init__(self, path: str, max_idle: int = 2):
        self.path = path
        self.idle: queue.LifoQueue = queue.LifoQueue()
        self.max_idle = max_idle
        self.lock = threading.Lock()

    def _call(self, phase: str, body: dict) -> tuple[bool, str]:
        """Post one AuthZReq/AuthZRes body, Go-encoded, on a pooled connection: (allow, message)."""
        raw = workload.go_json(body).encode()
        call = workload.Call("standin", phase, "", workload.http_request(
            phase, PLUGIN_HEADERS, raw), False)
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = bench_client.RawConn(self.path)
        try:
            status, answer = conn.roundtrip(call)
        except Exception:
            conn.close()
            raise
        with self.lock:
            if conn.sock is not None and self.idle.qsize() < self.max_idle:
                self.idle.put(conn)
            else:
                conn.close()
        if status != 200:
            return False, f"plugin answered HTTP {status}"
        doc = json.loads(answer)
        return bool(doc.get("Allow")), doc.get("Msg", "")

    def authorize(self, method: str, uri: str, headers: dict,
                  status: int | None = None, resp_headers: dict | None = None,
                  resp_body: bytes | None = None) -> tuple[bool, str]:
        """The AuthZReq for a request, or with status given the AuthZRes: (allow, message)."""
        req = {"RequestMethod": method, "RequestUri": uri,
               "RequestHeaders": dict(sorted(headers.items()))}
        if status is None:
            return self._call("AuthZReq", req)
        res = dict(req)
        res["ResponseStatusCode"] = status
        if resp_body and len(resp_body) < MAX_FORWARDED_BODY and \
                (resp_headers or {}).get("Content-Type", "").startswith("application/json"):
            res["ResponseBody"] = base64.b64encode(resp_body).decode()
        res["ResponseHeaders"] = dict(sorted((resp_headers or {}).items()))
        return self._call("AuthZRes", res)


def http_answer(status: int, headers: dict, body: bytes) -> bytes:
    """An HTTP/1.1 response with headers and body, framed by Content-Length."""
    reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}
    lines = [f"HTTP/1.1 {status} {reason.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Request(NamedTuple):
    """A request to the stand-in, as dockerd would forward it to the plugin."""

    method: str
    uri: str
    headers: dict       # canonical names, without Host and the credentials dockerd strips
    close: bool         # the client sent Connection: close


def parse_head(head: bytes) -> tuple[Request, int]:
    """The request in a request line and header lines, and its body's Content-Length."""
    lines = head.decode("latin-1").split("\r\n")
    method, uri, _ = lines[0].split(" ", 2)
    headers, length, close = {}, 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        value = value.strip()
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "connection" and value.lower() == "close":
            close = True
        if name.lower() != "host" and name.lower() not in _STRIPPED:
            headers[canonical(name)] = value  # the last value wins, as in dockerd
    return Request(method, uri, headers, close), length


def read_request(sock: socket.socket, buf: bytes) -> tuple[Request | None, bytes]:
    """The next request on sock (its body read and dropped) and the bytes after it; None at EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    request, length = parse_head(head)
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    return request, buf[length:]


def recorded_answer(answers: Answers, request: Request) -> tuple[int, dict, bytes]:
    """dockerd's recorded answer to a GET; 404 to any other method."""
    if request.method == "GET":
        return answers.answer(request.uri)
    return 404, {"Content-Type": "application/json"}, b'{"message":"page not found"}\n'


def authorized_answer(chain: PluginChain, plugin_name: str, request: Request, status: int,
                      resp_headers: dict, body: bytes) -> tuple[int, dict, bytes]:
    """The answer once the plugin saw the AuthZReq and the AuthZRes: as is, or dockerd's 403."""
    allow, msg = chain.authorize(request.method, request.uri, request.headers)
    if allow:
        allow, msg = chain.authorize(request.method, request.uri, request.headers,
                                     status, resp_headers, body)
    if allow:
        return status, resp_headers, body
    body = json.dumps({"message": f"authorization denied by plugin "
                                  f"{plugin_name}: {msg}"}).encode() + b"\n"
    return 403, {"Content-Type": "application/json"}, body


def serve_connection(sock: socket.socket, answers: Answers, chain: PluginChain | None,
                     plugin_name: str) -> None:
    """Answer the requests on one connection until the client closes it or asks to."""
    buf = b""
    try:
        while True:
            request, buf = read_request(sock, buf)
            if request is None:
                return
            status, resp_headers, body = recorded_answer(answers, request)
            if chain is not None:
                status, resp_headers, body = authorized_answer(chain, plugin_name, request,
                                                               status, resp_headers, body)
            sock.sendall(http_answer(status, {"Api-Version": "1.41", **resp_headers}, body))
            if request.close:
                return
    except (OSError, ValueError, ConnectionError):
        return
    finally:
        sock.close()


def listen(path: str) -> socket.socket:
    """A unix socket listening at path (replacing a stale one)."""
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    return listener


def main(argv=None) -> None:
    """Serve until SIGTERM, a thread per connection."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--plugin", help="the plugin's socket: pass each read through it")
    ap.add_argument("--plugin-name", default="pyauthz")
    ap.add_argument("--session", default=workload.SESSION_FILE)
    args = ap.parse_args(argv)
    answers = Answers(workload.load_session(args.session))
    chain = PluginChain(args.plugin) if args.plugin else None
    listener = listen(args.socket)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = listener.accept()
        conn.settimeout(30)
        threading.Thread(target=serve_connection, args=(conn, answers, chain, args.plugin_name),
                         daemon=True).start()


if __name__ == "__main__":
    main()
