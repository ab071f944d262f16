"""A small client for dockerd's own API (inspect images, containers and networks).

Each request goes through dockerd's authorization chain, so through this plugin too. It is
an ordinary read request, not marked in any way (nothing a client sends can make a request
count as the plugin's own); the plugin's policy must allow ``GET /images/*/json``,
``GET /containers/*/json``, ``GET /exec/*/json``, ``GET /plugins/*/json``, ``GET /info``,
``GET /networks/*`` and ``GET /volumes/*``. It is served by another gunicorn thread or
worker. If none is free, or dockerd does not answer, the timeout ends the wait and the check
denies: no deadlock, and closed. Every read of an answer ends by the decision's deadline,
however slowly dockerd (or whatever listens on its socket) sends it.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
from urllib.parse import quote, urlsplit

from authz.deadline import Deadline

MAX_INSPECT_BYTES = 1024 * 1024


class DockerError(Exception):
    """dockerd did not answer usefully; the check denies."""


class _DeadlineSocket(socket.socket):
    """A socket every read of which ends by the decision's deadline (and within ``cap``
    seconds): a dockerd that sends its answer a byte at a time cannot stretch a decision
    (a socket timeout alone bounds each read, not the answer)."""

    def bind_deadline(self, deadline: Deadline, cap: float) -> _DeadlineSocket:
        self._deadline, self._cap = deadline, cap
        return self

    def _before_read(self) -> None:
        left = self._deadline.remaining()
        if left <= 0:
            raise socket.timeout("decision deadline reached while reading from dockerd")
        self.settimeout(min(self._cap, left))

    def recv(self, *args):
        self._before_read()
        return super().recv(*args)

    def recv_into(self, *args):
        self._before_read()
        return super().recv_into(*args)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float, deadline: Deadline):
        super().__init__("localhost", timeout=timeout)
        self._unix_path, self._deadline = path, deadline

    def connect(self) -> None:
        sock = _DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock.bind_deadline(self._deadline, self.timeout)


class _TCPHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, deadline: Deadline):
        super().__init__(host, port, timeout=timeout)
        self._deadline = deadline

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        sock = _DeadlineSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        sock.settimeout(self.timeout)  # a socket made from a descriptor starts blocking
        self.sock = sock.bind_deadline(self._deadline, self.timeout)


class DockerClient:
    def __init__(self, docker_host: str, timeout: float = 2.0):
        self.docker_host = docker_host
        self.timeout = timeout
        parts = urlsplit(docker_host)
        if parts.scheme == "unix":
            self._unix = parts.path or parts.netloc
            self._tcp = None
        elif parts.scheme in ("tcp", "http"):
            if not parts.hostname:
                raise ValueError(f"docker host {docker_host!r} has no host")
            self._unix = None
            self._tcp = (parts.hostname, parts.port or 2375)
        else:
            raise ValueError(f"docker host {docker_host!r}: only unix:// and tcp:// are supported")

    def _connection(self, timeout: float, deadline: Deadline) -> http.client.HTTPConnection:
        if self._unix:
            return _UnixHTTPConnection(self._unix, timeout, deadline)
        return _TCPHTTPConnection(*self._tcp, timeout=timeout, deadline=deadline)

    def inspect_image(self, ref: str, deadline: Deadline) -> dict | None:
        """The image's inspect JSON (``Id``, ``RepoTags``, ``RepoDigests``...) or None if
        dockerd has no such image."""
        return self._inspect(f"/images/{quote(ref, safe='/:@')}/json", deadline,
                             "the local image", "GET /images/*/json")

    def inspect_container(self, name: str, deadline: Deadline) -> dict | None:
        """The container's inspect JSON (its ``Image`` is the image id) or None."""
        return self._inspect(f"/containers/{quote(name, safe='')}/json", deadline,
                             "the container", "GET /containers/*/json")

    def inspect_network(self, name: str, deadline: Deadline) -> dict | None:
        """The network's inspect JSON (``Name``, ``Driver``) or None."""
        return self._inspect(f"/networks/{quote(name, safe='')}", deadline,
                             "the network", "GET /networks/*")

    def inspect_volume(self, name: str, deadline: Deadline) -> dict | None:
        """The volume's inspect JSON (``Driver``, ``Options``) or None."""
        return self._inspect(f"/volumes/{quote(name, safe='')}", deadline,
                             "the volume", "GET /volumes/*")

    def inspect_exec(self, exec_id: str, deadline: Deadline) -> dict | None:
        """The exec instance's inspect JSON (``ContainerID``, ``ProcessConfig``) or None."""
        return self._inspect(f"/exec/{quote(exec_id, safe='')}/json", deadline,
                             "the exec instance", "GET /exec/*/json")

    def inspect_plugin(self, name: str, deadline: Deadline) -> dict | None:
        """The plugin's inspect JSON (``Id``, ``Name``, ``Config``, ``Settings``) or None."""
        return self._inspect(f"/plugins/{quote(name, safe='')}/json", deadline,
                             "the plugin", "GET /plugins/*/json")

    def info(self, deadline: Deadline) -> dict:
        """``GET /info`` (``DockerRootDir``...)."""
        found = self._inspect("/info", deadline, "dockerd's configuration", "GET /info")
        if found is None:
            raise DockerError("dockerd answered 404 to GET /info")
        return found

    def server_pid(self) -> int | None:
        """The pid of the process that listens on dockerd's unix socket (SO_PEERCRED), or
        None (tcp://, or it cannot be read). With socket activation it is systemd's."""
        if not self._unix:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(1.0)
        try:
            sock.connect(self._unix)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return struct.unpack("3i", creds)[0] or None
        except OSError:
            return None
        finally:
            sock.close()

    def _inspect(self, path: str, deadline: Deadline, what: str, route: str) -> dict | None:
        timeout = deadline.bound(self.timeout, f"asking dockerd for {what}")
        conn = self._connection(timeout, deadline)
        try:
            conn.request("GET", path, headers={"Host": "docker", "User-Agent": "pyauthz-trust/1"})
            resp = conn.getresponse()
            body = bytearray()
            while True:
                chunk = resp.read(64 * 1024)
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_INSPECT_BYTES:
                    raise DockerError(f"dockerd's answer for {what} is too large")
                if deadline.expired():
                    raise DockerError("decision deadline reached while reading from dockerd")
        except socket.timeout:
            raise DockerError(f"dockerd ({self.docker_host}) did not answer within "
                              f"{timeout:.1f}s (all plugin threads busy?)") from None
        except OSError as exc:
            raise DockerError(f"cannot reach dockerd at {self.docker_host}: "
                              f"{exc.strerror or exc}") from None
        except http.client.HTTPException as exc:
            raise DockerError(f"bad answer from dockerd: {exc!r}") from None
        finally:
            conn.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = bytes(body[:200]).decode("utf-8", "replace")
            raise DockerError(f"dockerd answered {resp.status} to GET {path}: {message}"
                              + (f" (the authorization policy must allow {route})"
                                 if resp.status == 403 else ""))
        try:
            data = json.loads(body)
        except ValueError:
            raise DockerError(f"dockerd's answer for {what} is not JSON") from None
        key = {"images": "Id", "containers": "Image", "networks": "Name", "volumes": "Name",
               "exec": "ContainerID", "plugins": "Id", "info": "DockerRootDir"}[path.split("/")[1]]
        if not isinstance(data, dict) or not isinstance(data.get(key), str):
            raise DockerError(f"dockerd's answer for {what} has no {key}")
        return data
