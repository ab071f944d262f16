"""One of dockerd's connections to pyauthz's worker (``authz.worker``): the socket as
gunicorn's parser reads it (one deadline per request), gunicorn's settings read once, the
Date header, and waiting for a connection's next bytes."""

from __future__ import annotations

import email.utils
import select
import socket
import time

# Once a request has begun, all of it must arrive within this many seconds.
READ_TIMEOUT = 10.0
# A read of a request may wait this much past the request's deadline (the socket's timeout
# is changed only when it would otherwise wait longer: a system call each time).
TIMEOUT_SLACK = 0.5

_date = (0, "")


def http_date() -> str:
    """The Date header's value (RFC 9110), made once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


class Reading:
    """The connection's socket as gunicorn's parser reads it: every read of one request ends
    by the request's deadline, give or take ``TIMEOUT_SLACK`` (not each read by itself: a
    client that sends a byte at a time must not hold a thread longer than ``READ_TIMEOUT`` in
    all). Writes go to the socket."""

    __slots__ = ("sock", "deadline", "timeout")

    def __init__(self, sock: socket.socket):
        self.sock, self.deadline = sock, 0.0
        self.timeout: float | None = None  # the socket's, as last set here

    def recv(self, size: int, *flags) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request did not arrive in time")
        if self.timeout is None or left + TIMEOUT_SLACK < self.timeout:
            self.set_timeout(left)  # a slow request: no read may wait past its deadline
        return self.sock.recv(size, *flags)

    def set_timeout(self, seconds: float) -> None:
        """The socket's timeout (each change is a system call: made only when it changes)."""
        if seconds != self.timeout:
            self.sock.settimeout(seconds)
            self.timeout = seconds

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


class Settled:
    """gunicorn's settings as its HTTP parser reads them (about 14 per request, each a lookup
    through ``Config.__getattr__``): each read once, then a plain attribute. A worker's
    settings never change (a reload replaces the worker)."""

    def __init__(self, cfg):
        self._cfg = cfg

    def __getattr__(self, name: str):
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


class Conn:
    __slots__ = ("sock", "addr", "server", "parser", "deadline", "reading")

    def __init__(self, sock: socket.socket, addr, server):
        self.sock, self.addr, self.server = sock, addr, server
        self.parser = None
        self.deadline = 0.0
        self.reading = Reading(sock)

    def buffered(self) -> bool:
        """Bytes of the next request already read (they no longer wake the poller)."""
        buf = getattr(getattr(self.parser, "unreader", None), "buf", None)
        return bool(buf is not None and buf.getvalue())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` has bytes (or EOF, or an error) to read within ``timeout`` seconds."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        try:
            return bool(poller.poll(timeout * 1000))
        except InterruptedError:  # pragma: no cover - PEP 475 retries; older kernels' EINTR
            continue
