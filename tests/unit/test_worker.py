"""authz.worker.PluginWorker under a real gunicorn: kept-alive connections answered call after
call by one thread, and bounded whatever a client does (idle, stalled, many, malformed)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

APP = textwrap.dedent('''
    import threading
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        out = f"{threading.get_ident()} {len(body)}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]
''')


# The app's plugin_calls (as authz.app makes them): answered by the worker without WSGI.
APP_CALLS = textwrap.dedent('''
    def _direct(body):
        return f"direct {threading.get_ident()} {len(body)}".encode()
    app.plugin_calls = {"/AuthZPlugin.AuthZReq": _direct}
''')


def _request(body: bytes = b"x", close: bool = False) -> bytes:
    head = "POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: plugin\r\n"
    if close:
        head += "Connection: close\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _answers(sock: socket.socket, n: int, timeout: float = 10.0) -> list[bytes]:
    """The bodies of the next ``n`` responses on ``sock``."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
                         .split(b":")[1])
            if len(rest) >= length:
                assert head.startswith(b"HTTP/1.1 200"), head
                out.append(rest[:length])
                buf = rest[length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} answers")
        buf += chunk
    return out


@pytest.fixture
def served(tmp_path):
    """Start gunicorn with the plugin's worker on a unix socket: ``served(threads=, keepalive=)``
    returns the socket path."""
    procs = []

    def start(threads: int = 4, keepalive: int = 75, nofile: int | None = None,
              calls: bool = False) -> str:
        (tmp_path / "wapp.py").write_text(APP + (APP_CALLS if calls else ""))
        path = str(tmp_path / f"w{len(procs)}.sock")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "authz.worker.PluginWorker", "-w", "1",
             "--threads", str(threads), "--keep-alive", str(keepalive), "--graceful-timeout", "5",
             "--chdir", str(tmp_path), "-b", f"unix:{path}", "wapp:app", "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            if nofile else None)
        procs.append(proc)
        for _ in range(100):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # the worker forks after the master binds
        return path

    start.procs = procs
    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    return sock


def test_calls_on_one_connection_are_answered_by_one_thread(served):
    path = served()
    with _connect(path) as sock:
        threads = set()
        for i in range(50):
            sock.sendall(_request(b"y" * i))
            (answer,) = _answers(sock, 1)
            ident, length = answer.split()
            assert int(length) == i
            threads.add(ident)
    assert len(threads) == 1  # no hand-over to the poller between calls


def test_pipelined_calls_are_all_answered_in_order(served):
    path = served()
    with _connect(path) as sock:
        sock.sendall(b"".join(_request(b"z" * i) for i in (1, 2, 3)))
        assert [a.split()[1] for a in _answers(sock, 3)] == [b"1", b"2", b"3"]


def test_a_connection_silent_at_first_and_after_lingering_is_still_served(served):
    path = served(threads=2)
    with _connect(path) as sock:
        time.sleep(0.3)  # silent at first: it waits on the poller, not on a thread
        sock.sendall(_request())
        assert _answers(sock, 1)
        time.sleep(1.3)  # past LINGER: handed back to the poller
        sock.sendall(_request())
        assert _answers(sock, 1)


def test_idle_connections_beyond_the_threads_never_starve_new_calls(served):
    path = served(threads=2)
    idle = [_connect(path) for _ in range(12)]
    try:
        for sock in idle:  # each one used once, then left open (lingering, then on the poller)
            sock.sendall(_request())
            assert _answers(sock, 1)
        with _connect(path) as fresh:
            started = time.monotonic()
            fresh.sendall(_request())
            assert _answers(fresh, 1, timeout=5)
            assert time.monotonic() - started < 3
        for sock in idle:  # and every idle one still answers
            sock.sendall(_request())
            assert _answers(sock, 1)
    finally:
        for sock in idle:
            sock.close()


def test_a_stalled_request_does_not_hold_up_other_connections(served):
    path = served(threads=2)
    stalled = _connect(path)
    try:
        stalled.sendall(b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        time.sleep(0.2)
        for _ in range(3):
            with _connect(path) as sock:
                sock.sendall(_request())
                assert _answers(sock, 1, timeout=5)
    finally:
        stalled.close()


def test_connection_close_and_malformed_requests_close_the_connection(served):
    path = served()
    with _connect(path) as sock:
        sock.sendall(_request(close=True))
        assert _answers(sock, 1)
        sock.settimeout(5)
        assert sock.recv(100) == b""
    with _connect(path) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 400")


def test_idle_connections_are_closed_after_keepalive(served):
    path = served(keepalive=1)
    with _connect(path) as sock:
        sock.sendall(_request())
        assert _answers(sock, 1)
        sock.settimeout(8)
        started = time.monotonic()
        assert sock.recv(100) == b""  # LINGER (1 s), then keepalive (1 s) on the poller
        assert time.monotonic() - started < 6


def test_sigterm_stops_promptly_with_connections_open(served):
    path = served()
    socks = [_connect(path) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(_request())
            assert _answers(sock, 1)
        proc = served.procs[-1]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert time.monotonic() - started < 8
        for sock in socks:  # the idle connections were closed, not left hanging
            sock.settimeout(5)
            assert sock.recv(100) == b""
    finally:
        for sock in socks:
            sock.close()


def test_a_stopping_worker_still_answers_a_call_on_an_idle_connection(served):
    """dockerd may be writing a call on an idle connection as the worker stops (a reload):
    closing it would make dockerd resend the call with an empty body (a deny)."""
    path = served()
    with _connect(path) as sock:
        sock.sendall(_request())
        assert _answers(sock, 1)
        time.sleep(1.3)  # idle on the poller
        served.procs[-1].send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(_request(b"late"))
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
        assert data.endswith(b" 4")


def test_a_request_trickled_a_byte_at_a_time_is_cut_off_at_its_deadline(served, monkeypatch):
    """READ_TIMEOUT bounds the whole request, not each read: a client that sends one byte
    every so often holds a thread no longer than that."""
    path = served(threads=1)
    slow = _connect(path)
    try:
        started = time.monotonic()
        slow.settimeout(30)
        request = _request(b"x" * 20)
        closed_after = None
        for byte in request:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(0.5)
            if time.monotonic() - started > 16:
                break
        if closed_after is None:
            slow.settimeout(5)
            assert slow.recv(100) in (b"",)  # cut off, no answer
            closed_after = time.monotonic() - started
        assert closed_after < 15  # READ_TIMEOUT (10 s) from its first byte, not 0.5 s per read
        with _connect(path) as sock:  # and the one thread serves others again
            sock.sendall(_request())
            assert _answers(sock, 1, timeout=5)
    finally:
        slow.close()


def test_running_out_of_file_descriptors_does_not_kill_the_worker(served):
    """accept() failing with EMFILE pauses accepting; the worker keeps its connections."""
    path = served(nofile=64)
    first = _connect(path)
    first.sendall(_request())
    assert _answers(first, 1)
    pid_before = served.procs[-1].pid
    many = []
    try:
        for _ in range(120):
            many.append(_connect(path))  # beyond the worker's descriptors: the backlog holds them
        time.sleep(1.0)
        first.sendall(_request())          # the worker is alive and answers what it has
        assert _answers(first, 1)
    finally:
        for sock in many:
            sock.close()
    time.sleep(1.0)
    with _connect(path) as sock:           # and accepts again once descriptors are free
        sock.sendall(_request())
        assert _answers(sock, 1, timeout=5)
    first.sendall(_request())
    assert _answers(first, 1)
    assert served.procs[-1].pid == pid_before and served.procs[-1].poll() is None


def test_silent_new_connections_hold_no_thread(served):
    """Connections that send nothing wait on the poller: a real call is answered at once even
    with many of them open and one thread."""
    path = served(threads=1)
    silent = [_connect(path) for _ in range(50)]
    try:
        time.sleep(0.3)
        with _connect(path) as sock:
            started = time.monotonic()
            sock.sendall(_request())
            assert _answers(sock, 1, timeout=5)
            assert time.monotonic() - started < 1.0
    finally:
        for sock in silent:
            sock.close()


def test_a_new_connection_that_never_sends_is_closed(served):
    path = served()
    with _connect(path) as sock:
        sock.settimeout(20)
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert 9 < time.monotonic() - started < 15  # READ_TIMEOUT (10 s)


def _answer_with_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of the next response on ``sock``."""
    sock.settimeout(10)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
                 .split(b":")[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    assert len(rest) == length, "no bytes may follow the answer"
    return head, rest


def test_the_apps_plugin_calls_are_answered_without_wsgi(served):
    path = served(calls=True)
    with _connect(path) as sock:
        threads = set()
        for i in range(20):
            sock.sendall(_request(b"q" * i))
            head, body = _answer_with_head(sock)
            word, ident, length = body.split()
            assert (word, int(length)) == (b"direct", i)
            threads.add(ident)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            for header in (b"Connection: keep-alive", b"Content-Type: application/json",
                           b"Date: "):
                assert header in head
        assert len(threads) == 1
        # Anything but a POST to exactly a listed path goes through WSGI.
        for request in (_request().replace(b"AuthZReq HTTP", b"AuthZReq?x=1 HTTP"),
                        _request().replace(b"AuthZReq", b"AuthZRes"),
                        _request().replace(b"POST", b"PUT")):
            sock.sendall(request)
            assert not _answer_with_head(sock)[1].startswith(b"direct")


def test_a_plugin_call_reads_a_chunked_body_and_honours_connection_close(served):
    path = served(calls=True)
    with _connect(path) as sock:
        sock.sendall(b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: p\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert _answer_with_head(sock)[1].split()[2] == b"5"
        sock.sendall(_request(b"xyz", close=True))
        head, body = _answer_with_head(sock)
        assert b"Connection: close" in head and body.split()[2] == b"3"
        sock.settimeout(5)
        assert sock.recv(100) == b""


def test_a_plugin_call_larger_than_dockerd_sends_is_read_no_further(served):
    """A body past MAX_CALL_BYTES: the function gets one byte more than that (and refuses
    it: protocol.py), the rest is never read, and the connection is closed."""
    from authz.protocol import MAX_CALL_BYTES

    path = served(calls=True)
    with _connect(path) as sock:
        sock.sendall(b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: p\r\n"
                     b"Content-Length: %d\r\n\r\n" % (64 * MAX_CALL_BYTES))
        chunk = b"z" * (1024 * 1024)
        try:
            for _ in range(MAX_CALL_BYTES // len(chunk) + 2):
                sock.sendall(chunk)
        except BrokenPipeError:
            pass  # closed once it had read one byte past the limit: the rest was not read
        head, body = _answer_with_head(sock)
        assert b"Connection: close" in head
        assert int(body.split()[2]) == MAX_CALL_BYTES + 1
