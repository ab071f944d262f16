"""pyauthz's gunicorn worker: each of dockerd's connections served by one thread, call after call.

dockerd calls the plugin twice for every API call (AuthZReq, AuthZRes), on a connection it
keeps alive. gunicorn's gthread worker hands a kept-alive connection back to its main thread
after every response, and the next call then hops through a pipe, the poller and the thread
pool's queue before a thread reads it: measured, that hand-over was more than half of what a
call cost end to end (an allow-all Flask app: ~470 µs per call, ~216 µs without it). Here the thread
that answered a call waits on the same connection for the next one, for at most ``LINGER``
seconds, and only a quarter of the threads may wait so; an idle connection goes back to the
main thread's poller as in gthread (closed after ``keepalive`` seconds). The app's
``plugin_calls`` (dockerd's two per-call paths, ``authz.app``) are answered without WSGI: the
raw body to a function, its JSON back in one write. gunicorn still does everything else: the
arbiter, reloads, the HTTP parser, and the WSGI environ and response of every other request.

Bounded whatever a client does: at most ``worker_connections`` connections per worker, a
request must arrive whole within ``READ_TIMEOUT`` (+ ``TIMEOUT_SLACK``) once it has begun, a
new connection whose first request has not arrived yet waits on the poller (no thread) and is
closed if it sends nothing for ``READ_TIMEOUT``. A stopping
worker (reload, stop) answers calls on its idle connections for ``STOP_LINGER`` more seconds.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from queue import Empty, SimpleQueue

from gunicorn import http
from gunicorn.http import wsgi
from gunicorn.workers import base

from authz.conn import READ_TIMEOUT, Conn, Settled, http_date, readable
from authz.protocol import MAX_CALL_BYTES

# A thread that answered a call waits this long on its connection for the next one.
LINGER = 1.0
# Out of file descriptors (EMFILE...): stop accepting for this long, then try again.
ACCEPT_PAUSE = 0.5
# A stopping worker (a reload, a stop) keeps its idle connections this long, and answers a
# call that comes on one with "Connection: close". Closing one while dockerd writes a call on
# it would make dockerd send the call again with an empty body (its plugin client retries
# with the buffer the first attempt drained: moby pkg/plugins/client.go), which is a deny.
STOP_LINGER = 2.0


class PluginWorker(base.Worker):
    """gunicorn worker class ``authz.worker.PluginWorker`` (``threads`` threads per worker)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._connections = 0
        self._lingering = 0
        self._max_lingering = self.cfg.threads // 4  # none with fewer than 4 threads
        self._idle: dict[Conn, None] = {}  # waiting on the poller, oldest first
        self._returned: SimpleQueue[Conn] = SimpleQueue()
        self._accept_paused_until = 0.0
        self._calls: dict = {}

    # ---- the main thread: accept, and wait on idle connections ----

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # POSTs to these exact paths are answered by calling the function with the raw body
        # (authz.app.plugin_calls); every other request goes through WSGI.
        self._calls = dict(getattr(self.wsgi, "plugin_calls", None) or {})

    def init_process(self) -> None:
        self._settled = Settled(self.cfg)
        self._pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="pyauthz")
        self._poller = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        super().init_process()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: the main thread is being woken anyway

    def run(self) -> None:
        self._poller.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        accepting = False
        while self.alive:
            self.notify()
            can_accept = (self._connections < self.cfg.worker_connections
                          and time.monotonic() >= self._accept_paused_until)
            if can_accept != accepting:
                self._listen(can_accept)
                accepting = can_accept
            self._dispatch(1.0)
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            self._expire(time.monotonic())
        if accepting:
            self._listen(False)
        self._stop()

    def _listen(self, on: bool) -> None:
        for listener in self.sockets:
            if on:
                listener.setblocking(False)
                self._poller.register(listener, selectors.EVENT_READ, self._accept)
            else:
                self._poller.unregister(listener)

    def _dispatch(self, timeout: float) -> None:
        try:
            for key, _ in self._poller.select(timeout):
                key.data(key.fileobj)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise

    def _accept(self, listener) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors or memory: the worker lives on, answering the
                # connections it has, and stops accepting for a moment (the connection
                # waits in the listen backlog), instead of dying with all of them.
                self.log.error("pyauthz worker: cannot accept a connection (%s); pausing",
                               exc.strerror)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            raise
        with self._lock:
            self._connections += 1
        conn = Conn(sock, addr, listener.getsockname())
        if readable(sock, 0):
            self._pool.submit(self._serve, conn)
        else:  # its first request is not here yet: wait for it on the poller, not a thread
            conn.deadline = time.monotonic() + READ_TIMEOUT
            self._idle[conn] = None
            self._poller.register(sock, selectors.EVENT_READ, partial(self._on_data, conn))

    def _on_wake(self, fd) -> None:
        try:
            os.read(fd, 512)
        except OSError:
            pass
        now = time.monotonic()
        while True:
            try:
                conn = self._returned.get_nowait()
            except Empty:
                return
            conn.deadline = now + (self.cfg.keepalive if self.alive else STOP_LINGER)
            self._idle[conn] = None
            self._poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_data, conn))

    def _on_data(self, conn: Conn, _sock) -> None:
        self._poller.unregister(conn.sock)
        del self._idle[conn]
        self._pool.submit(self._serve, conn)

    def _expire(self, now: float) -> None:
        """Close connections idle past their deadline (keep-alive, or a first request that
        never came)."""
        for conn in list(self._idle):
            if conn.deadline > now:
                continue
            del self._idle[conn]
            self._poller.unregister(conn.sock)
            self._closed(conn)

    def _stop(self) -> None:
        """Graceful: stop accepting; answer calls in flight, and calls on idle connections
        for ``STOP_LINGER`` (with "Connection: close"), within graceful_timeout."""
        now = time.monotonic()
        for conn in self._idle:
            conn.deadline = min(conn.deadline, now + STOP_LINGER)
        deadline = now + self.cfg.graceful_timeout
        while self._connections > 0 and time.monotonic() < deadline:
            self.notify()
            self._dispatch(0.2)
            self._expire(time.monotonic())
        self._pool.shutdown(wait=False)
        self._poller.close()
        for listener in self.sockets:
            listener.close()

    def _closed(self, conn: Conn) -> None:
        conn.close()
        with self._lock:
            self._connections -= 1

    # ---- the pool's threads: one connection, call after call ----

    def _serve(self, conn: Conn) -> None:
        """Answer calls on ``conn`` while they keep coming; then hand it back or close it."""
        try:
            while self._handle(conn):
                if conn.buffered():
                    continue
                if not self.alive or not self._linger(conn):
                    self._give_back(conn)
                    return
        except BaseException:
            self.log.exception("pyauthz worker: connection failed")
        self._closed(conn)

    def _give_back(self, conn: Conn) -> None:
        self._returned.put(conn)
        self._wake()

    def _linger(self, conn: Conn) -> bool:
        """Wait on ``conn`` for the next call, if fewer than a quarter of the threads do."""
        with self._lock:
            if self._lingering >= self._max_lingering:
                return False
            self._lingering += 1
        try:
            return readable(conn.sock, LINGER)
        finally:
            with self._lock:
                self._lingering -= 1

    def _handle(self, conn: Conn) -> bool:
        """Read and answer one request; whether the connection stays open for another."""
        req = None
        try:
            conn.reading.deadline = time.monotonic() + READ_TIMEOUT
            if conn.parser is None:
                conn.parser = http.RequestParser(self._settled, conn.reading, conn.addr)
            req = next(conn.parser)
            if not req:
                return False
            return self._respond(req, conn)
        except (StopIteration, http.errors.NoMoreData):
            return False
        except (socket.timeout, ssl.SSLError):
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            return False
        except Exception as exc:  # noqa: BLE001 - gunicorn answers it (400/500) and closes
            self.handle_error(req, conn.sock, conn.addr, exc)
            return False

    def _respond(self, req, conn: Conn) -> bool:
        call = self._calls.get(req.path) if req.method == "POST" else None
        if call is not None and not req.query and not req.fragment:
            return self._answer(req, conn, call)
        return self._respond_wsgi(req, conn)

    def _answer(self, req, conn: Conn, call) -> bool:
        """One of the app's ``plugin_calls`` (dockerd's per-call paths): the raw body to the
        function, its JSON answer back, without a WSGI request or response."""
        self._count_request()
        raw = req.body.read(MAX_CALL_BYTES + 1)  # more is refused unread (protocol.py)
        out = call(raw)
        close = (len(raw) > MAX_CALL_BYTES or req.should_close() or not self.alive
                 or not self.cfg.keepalive)
        head = (f"HTTP/{req.version[0]}.{req.version[1]} 200 OK\r\nDate: {http_date()}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(out)}\r\n\r\n")
        conn.reading.set_timeout(READ_TIMEOUT)  # writing the answer: at most this long
        conn.sock.sendall(head.encode("latin-1") + out)
        return not close

    def _count_request(self) -> None:
        self.nr += 1
        if self.nr >= self.max_requests:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
            self._wake()

    def _respond_wsgi(self, req, conn: Conn) -> bool:
        environ, resp = {}, None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.addr, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            self._count_request()
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            body = self.wsgi(environ, resp.start_response)
            conn.reading.set_timeout(READ_TIMEOUT)  # writing the answer: at most this long
            try:
                for chunk in body:
                    resp.write(chunk)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(body, "close"):
                    body.close()
            return not resp.should_close()
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
