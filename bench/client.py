"""Benchmark clients: one process, one kept-alive HTTP/1.1 connection over a unix socket.

Two ways to speak HTTP, chosen with ``python3 -m bench.run --client``:

- ``raw`` (default): writes the pre-encoded request bytes and parses the response by
  hand (status line, Content-Length, Connection). Measured here: ~80-110 µs of client
  CPU a call (syscalls included).
- ``http.client``: ``UnixHTTPConnection``, a stdlib ``http.client.HTTPConnection``
  connecting AF_UNIX; sends the same header lines. ~270-320 µs a call (header parsing
  through ``email``); kept to cross-check the raw client.

On a 2-core machine the clients share the CPUs with the server, and a heavy client
flatters the plugin: it adds the same cost to both sides and so shrinks the ratio. With
8 clients, http.client cut the floor's throughput by about a quarter.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from array import array

from bench.workload import Call

TIMEOUT = 10.0  # a call that takes longer is an error (and ends that client)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client's connection, over a unix socket."""

    def __init__(self, path: str, timeout: float = TIMEOUT):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        """Connect to the unix socket at unix_path."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class HttpClientConn:
    """Replays a Call through http.client (same request line and header lines)."""

    def __init__(self, path: str):
        self.conn = UnixHTTPConnection(path)
        self.conn.connect()
        self.reconnects = 0

    def roundtrip(self, call: Call) -> tuple[int, bytes]:
        """Send the call's request line, headers and body; (status, body) of the answer."""
        head, _, body = call.payload.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _, url, _ = lines[0].split(" ")
        c = self.conn
        if c.sock is None:
            self.reconnects += 1
        c.putrequest("POST", url, skip_host=True, skip_accept_encoding=True)
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            c.putheader(name, value)
        c.endheaders(body)
        resp = c.getresponse()
        data = resp.read()
        if resp.will_close:
            c.close()
        return resp.status, data

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class RawConn:
    """Minimal HTTP/1.1 keep-alive client for small, Content-Length-framed answers."""

    def __init__(self, path: str):
        self.path = path
        self.reconnects = 0
        self.sock = None
        self._connect()

    def _connect(self) -> None:
        """Open a fresh connection, with an empty read buffer."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(self.path)
        self.sock = sock
        self.buf = b""

    def roundtrip(self, call: Call) -> tuple[int, bytes]:
        """Write the call's bytes, read one answer: (status, body). One piece: it is the hot loop."""
        if self.sock is None:
            self.reconnects += 1
            self._connect()
        sock = self.sock
        sock.sendall(call.payload)
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-response")
            buf += chunk
        head = buf[:end].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = None
        close = head[0].startswith("HTTP/1.0")
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                close = value.strip().lower() == "close"
            elif name == "transfer-encoding":
                raise ConnectionError("chunked answers are not supported by this client")
        if length is None:
            raise ConnectionError("answer without Content-Length")
        start = end + 4
        while len(buf) - start < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection mid-body")
            buf += chunk
        body = buf[start:start + length]
        self.buf = buf[start + length:]
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        """Close the connection; the next roundtrip reconnects."""
        if self.sock is not None:
            self.sock.close()
        self.sock = None


CLIENTS = {"raw": RawConn, "http.client": HttpClientConn}


def connect(kind: str, path: str, wait: float = 10.0):
    """A client of that kind connected to path, retrying while the socket is not there yet."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return CLIENTS[kind](path)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def decision(status: int, body: bytes) -> bool | None:
    """True/False for a 200 answer with a boolean Allow, None for anything else."""
    if status != 200:
        return None
    try:
        allow = json.loads(body).get("Allow")
    except (ValueError, AttributeError):
        return None
    return allow if isinstance(allow, bool) else None


def run_client(index: int, kind: str, path: str, sessions: list[list[Call]],
               check_denies: bool, measure_from: int, measure_to: int, pipe) -> None:
    """Child process: send calls back to back until measure_to (monotonic ns).

    Calls started before measure_from are warm-up. Reports through pipe: latencies
    (ns, array('q') bytes) of calls started and finished inside the window, counts,
    this process's CPU time inside the window.
    """
    result = {"index": index, "ok": 0, "mismatch": 0, "errors": 0, "first_problem": None,
              "reconnects": 0, "cpu_s": 0.0}
    lat = array("q")
    kinds = array("H")  # index into the session's calls: which call each latency is
    # Each client starts at another point of the session cycle.
    calls = [c for s in sessions for c in s]
    per_session = len(sessions[0])
    i = (index * 7919) % len(calls)
    n_calls = len(calls)
    cpu_start = None
    conn = None
    try:
        conn = connect(kind, path)
        now = time.monotonic_ns
        while True:
            t0 = now()
            if t0 >= measure_to:
                break
            if cpu_start is None and t0 >= measure_from:
                cpu_start = time.process_time()
            call = calls[i]
            i += 1
            if i == n_calls:
                i = 0
            status, body = conn.roundtrip(call)
            t1 = now()
            if t0 < measure_from or t1 > measure_to:
                continue
            allow = decision(status, body)
            expected = not (call.deny and check_denies)
            if allow is expected:
                result["ok"] += 1
                lat.append(t1 - t0)
                kinds.append((i - 1) % per_session)
            else:
                result["mismatch" if allow is not None else "errors"] += 1
                if result["first_problem"] is None:
                    result["first_problem"] = (f"{call.phase} {call.what}: HTTP {status} "
                                               f"{body[:200]!r} (expected Allow={expected})")
    except Exception as exc:  # noqa: BLE001 - reported, and ends this client
        result["errors"] += 1
        result["first_problem"] = result["first_problem"] or f"{type(exc).__name__}: {exc}"
    finally:
        if cpu_start is not None:
            result["cpu_s"] = time.process_time() - cpu_start
        if conn is not None:
            result["reconnects"] = conn.reconnects
            conn.close()
        result["lat"] = lat.tobytes()
        result["kinds"] = kinds.tobytes()
        pipe.send(result)
        pipe.close()
        os._exit(0)
