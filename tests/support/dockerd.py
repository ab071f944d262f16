"""Run the real plugin in front of a real, private dockerd for integration tests.

One :class:`DockerEnv` is a pair: ``python -m authz serve`` on
``/run/docker/plugins/NAME.sock`` and a ``dockerd --authorization-plugin=NAME`` with its
own data root, exec root and API socket in a temporary directory, so that it never
touches the host's docker. Everything the pair started is stopped and removed by
:meth:`DockerEnv.close`, which is safe to call more than once and after a failed start.

Typical use (see ``tests/conftest.py`` for the fixtures)::

    env = DockerEnv.start(policy_dir=some_dir)
    try:
        env.docker("run", "--rm", "--network", "none", BUSYBOX, "/bin/busybox", "true")
        status, headers, body = env.api("GET", "/_ping")
    finally:
        env.close()

Set ``PYAUTHZ_PLUGIN_CMD`` to replace the plugin command (a template with
``{socket} {policy} {log} {docker_host}``), e.g. to validate the harness against a stub.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_POLICIES = REPO_ROOT / "policies"
PLUGIN_DIR = Path("/run/docker/plugins")
BUSYBOX_PATH = Path("/bin/busybox")
BUSYBOX_IMAGE = "local/busybox:1"

# Timeouts (seconds). dockerd waits ~30 s for a missing plugin before giving up.
PLUGIN_START_TIMEOUT = 30
DOCKERD_START_TIMEOUT = 60
CLI_TIMEOUT = 60
API_TIMEOUT = 30
STOP_TIMEOUT = 20

_counter = itertools.count()


# --------------------------------------------------------------------------- requirements

# The Debian docker.io CLI (the one the tests are written for), before any other docker
# on PATH (a newer CLI negotiates down, but sends other calls).
DEBIAN_DOCKER_CLI = Path("/usr/bin/docker")


def docker_cli() -> str:
    """The docker CLI the tests drive: Debian's docker.io when installed."""
    if DEBIAN_DOCKER_CLI.is_file():
        return str(DEBIAN_DOCKER_CLI)
    return shutil.which("docker") or "docker"


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP (dynamic loader) program header."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off:off + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def missing_requirements() -> str | None:
    """Why the integration tests cannot run here, or None when they can."""
    if os.environ.get("PYAUTHZ_INTEGRATION", "1") == "0":
        return "PYAUTHZ_INTEGRATION=0"
    if sys.platform != "linux":
        return "integration tests need Linux"
    if os.geteuid() != 0:
        return "integration tests start a dockerd and need root"
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found on PATH (apt-get install docker.io)"
    if not BUSYBOX_PATH.is_file():
        return f"{BUSYBOX_PATH} missing (apt-get install busybox-static)"
    if not _is_static_elf(BUSYBOX_PATH):
        return f"{BUSYBOX_PATH} is not statically linked (apt-get install busybox-static)"
    return None


# --------------------------------------------------------------------------- policy dirs

# The test image is imported locally and unsigned: the shipped trust policy (every image
# needs a signature) would deny every container of the suite.
TEST_TRUST_EXCEPTIONS = ("docker.io/local/busybox",)


def add_trust_exceptions(policy_dir: str | os.PathLike, patterns: Iterable[str],
                         reason: str = "pyauthz integration tests: local unsigned test image") -> bool:
    """Add ``exceptions:`` entries to ``policy_dir/trust.yaml`` (when that file exists).

    Returns whether the file was changed. The file is rewritten by PyYAML (comments lost):
    only do this to a copy.
    """
    import yaml  # a dependency of the plugin itself

    path = Path(policy_dir) / "trust.yaml"
    if not path.is_file():
        return False
    data = yaml.safe_load(path.read_text()) or {}
    exceptions = list(data.get("exceptions") or [])
    known = {e.get("pattern") for e in exceptions if isinstance(e, dict)}
    added = False
    for pattern in patterns:
        if pattern not in known:
            exceptions.append({"pattern": pattern, "reason": reason})
            added = True
    if added:
        data["exceptions"] = exceptions
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return added


# --------------------------------------------------------------------------- raw HTTP

class ApiResponse(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


HeaderSpec = Mapping[str, str] | Sequence[tuple[str, str]] | None


def _header_items(headers: HeaderSpec) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def unix_http_exchange(sock_path: str, request: bytes, timeout: float = API_TIMEOUT) -> ApiResponse:
    """Send ``request`` byte for byte over a unix socket and read one HTTP response."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            # dockerd may answer (e.g. 403 after the plugin's deny) and close before it has
            # read a large body: its answer is still waiting in our receive buffer.
            pass
        resp = http.client.HTTPResponse(s, method=request.split(b" ", 1)[0].decode("latin-1"))
        resp.begin()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return ApiResponse(resp.status, resp.headers, body)
    finally:
        s.close()


def build_request(method: str, path: str, body=None, headers: HeaderSpec = None,
                  raw: bool = False) -> bytes:
    """Build the bytes of one HTTP/1.1 request.

    raw=False: ``body`` may be a dict/list (sent as JSON with ``Content-Type:
    application/json``), str or bytes; Host, Content-Length and ``Connection: close`` are
    added.

    raw=True: the request line is ``f"{method} {path} HTTP/1.1"`` verbatim, ``headers`` are
    sent exactly as given, in order (pass a list of pairs to repeat a header), and the body
    bytes exactly as given (a str is UTF-8 encoded; a dict is still JSON-encoded, but no
    Content-Type is added). Only ``Host: docker`` and ``Connection: close`` are added when
    absent, and ``Content-Length`` when there is a body and neither Content-Length nor
    Transfer-Encoding was given. For a fully hand-made request use
    :meth:`DockerEnv.raw_request`.
    """
    items = _header_items(headers)
    if isinstance(body, (dict, list)):
        payload = json.dumps(body).encode()
        if not raw and not any(k.lower() == "content-type" for k, _ in items):
            items.append(("Content-Type", "application/json"))
    elif isinstance(body, str):
        payload = body.encode("utf-8")
    else:
        payload = body
    names = {k.lower() for k, _ in items}
    if "host" not in names:
        items.insert(0, ("Host", "docker"))
    if "connection" not in names:
        items.append(("Connection", "close"))
    if payload is not None and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(payload))))
    elif payload is None and not raw and method.upper() in ("POST", "PUT") and "content-length" not in names:
        items.append(("Content-Length", "0"))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
    return head.encode("latin-1" if raw else "ascii", "strict") + (payload or b"")


def chunked(payload: bytes, chunk_size: int = 64) -> bytes:
    """Encode ``payload`` with HTTP/1.1 chunked transfer coding."""
    out = bytearray()
    for i in range(0, len(payload), chunk_size):
        part = payload[i:i + chunk_size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


# --------------------------------------------------------------------------- processes

def _wait_socket(path: str, proc: subprocess.Popen | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(path)
            return True
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    return False


def _stop(proc: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process, then SIGKILL its process group (it was started in its own session)."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers in the group we created (workers, containerd)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _pids_referencing(marker: str) -> list[int]:
    """Pids whose command line mentions ``marker`` (our unique temp dir): shims, containerd."""
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            pids.append(int(entry))
    return pids


def _unmount_under(root: str) -> None:
    """Lazily unmount whatever is still mounted below ``root`` (deepest first)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = []
    for line in lines:
        parts = line.split()
        if len(parts) > 4:
            mp = parts[4].encode().decode("unicode_escape")
            if mp == root or mp.startswith(root.rstrip("/") + "/"):
                points.append(mp)
    for mp in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, timeout=10)


def _tail(path: Path, limit: int = 12000) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    if len(data) > limit:
        data = b"...\n" + data[-limit:]
    return data.decode("utf-8", "replace")


class HarnessError(RuntimeError):
    """The plugin or dockerd could not be started; the message holds their logs."""


# --------------------------------------------------------------------------- the pair

@dataclass
class DockerEnv:
    name: str
    workdir: Path
    policy_dir: Path
    plugin_socket: str
    docker_socket: str
    decision_log: Path
    plugin_output: Path
    dockerd_output: Path
    docker_config: Path
    plugin_proc: subprocess.Popen | None = None
    dockerd_proc: subprocess.Popen | None = None
    docker_bin: str = field(default_factory=lambda: docker_cli())
    closed: bool = False
    authz: bool = True

    # ----- lifecycle

    @classmethod
    def start(cls, policy_dir: str | os.PathLike | None = None, name: str | None = None,
              import_busybox: bool = True, workers: int = 2,
              trust_exceptions: Sequence[str] = TEST_TRUST_EXCEPTIONS,
              authz: bool = True) -> "DockerEnv":
        """Start the plugin, then dockerd; import the busybox image. Raises HarnessError.

        ``policy_dir`` defaults to a fresh copy of the shipped ``policies/`` inside the
        pair's temp dir, where ``trust_exceptions`` (default: the unsigned test image's
        repository) are added to ``trust.yaml``'s ``exceptions:``; pass ``()`` to keep the
        shipped trust policy. A ``policy_dir`` given is used as it is (see
        :func:`add_trust_exceptions`). After changing files there, call :meth:`reload_policy`.

        ``authz=False`` starts dockerd without the plugin: a positive control, to show that
        dockerd really acts on a request the plugin denies.
        """
        # Short path: the exec root holds containerd's socket (108-byte limit on unix paths).
        workdir = Path(tempfile.mkdtemp(prefix="pz", dir="/tmp"))
        os.chmod(workdir, 0o711)
        name = name or f"pyauthz-test-{os.getpid()}-{next(_counter)}"
        if policy_dir is None:
            policy_dir = workdir / "policies"
            if SHIPPED_POLICIES.is_dir():
                shutil.copytree(SHIPPED_POLICIES, policy_dir)
            else:
                policy_dir.mkdir()
            if trust_exceptions:
                add_trust_exceptions(policy_dir, trust_exceptions)
        env = cls(
            name=name,
            workdir=workdir,
            policy_dir=Path(policy_dir),
            plugin_socket=str(PLUGIN_DIR / f"{name}.sock"),
            docker_socket=str(workdir / "d.sock"),
            decision_log=workdir / "decisions.jsonl",
            plugin_output=workdir / "plugin.out",
            dockerd_output=workdir / "dockerd.out",
            docker_config=workdir / "cli",
        )
        env.docker_config.mkdir()
        env.authz = authz
        try:
            if authz:
                env._start_plugin(workers)
            env._start_dockerd()
            if import_busybox:
                env.import_busybox()
        except BaseException:
            env.close()
            raise
        return env

    def _start_plugin(self, workers: int) -> None:
        PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        if os.path.exists(self.plugin_socket):
            raise HarnessError(f"{self.plugin_socket} already exists; pick another plugin name")
        template = os.environ.get("PYAUTHZ_PLUGIN_CMD")
        fields = dict(socket=self.plugin_socket, policy=str(self.policy_dir),
                      log=str(self.decision_log), docker_host=f"unix://{self.docker_socket}")
        if template:
            cmd = [part.format(**fields) for part in shlex.split(template)]
        else:
            cmd = [sys.executable, "-m", "authz", "serve",
                   "--socket", self.plugin_socket,
                   "--policy", str(self.policy_dir),
                   "--log-file", str(self.decision_log),
                   "--docker-host", f"unix://{self.docker_socket}",
                   "--workers", str(workers)]
        environ = dict(os.environ)
        environ["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([environ["PYTHONPATH"]] if environ.get("PYTHONPATH") else []))
        environ.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.plugin_output, "wb") as out:
            self.plugin_proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=environ, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if not _wait_socket(self.plugin_socket, self.plugin_proc, PLUGIN_START_TIMEOUT):
            code = self.plugin_proc.poll()
            raise HarnessError(
                f"plugin did not listen on {self.plugin_socket} within {PLUGIN_START_TIMEOUT}s "
                f"(exit code {code}); command: {shlex.join(cmd)}\n"
                f"--- plugin output ---\n{_tail(self.plugin_output)}")

    def _start_dockerd(self) -> None:
        d = self.workdir
        cmd = [shutil.which("dockerd") or "dockerd",
               "--data-root", str(d / "data"),
               "--exec-root", str(d / "x"),
               "-H", f"unix://{self.docker_socket}",
               "--pidfile", str(d / "dockerd.pid"),
               "--iptables=false", "--ip6tables=false", "--bridge=none",
               "--storage-driver=vfs"]
        if self.authz:
            cmd.append(f"--authorization-plugin={self.name}")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        with open(self.dockerd_output, "wb") as out:
            self.dockerd_proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=environ, start_new_session=True)
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.dockerd_proc.poll() is not None:
                last = f"dockerd exited with {self.dockerd_proc.returncode}"
                break
            if os.path.exists(self.docker_socket):
                try:
                    r = self.api("GET", "/_ping", timeout=5)
                    if r.status == 200:
                        return
                    last = f"/_ping answered {r.status}: {r.text.strip()}"
                except OSError as exc:
                    last = f"/_ping: {exc}"
            time.sleep(0.2)
        raise HarnessError(f"dockerd not ready within {DOCKERD_START_TIMEOUT}s ({last})\n"
                           + self.logs())

    def import_busybox(self, image: str = BUSYBOX_IMAGE) -> None:
        """Load ``image`` (busybox and a few applet links) with ``docker load``: the default
        policy denies ``docker import`` (rule image-import), and a load is what is left."""
        archive = self.workdir / "busybox-image.tar"
        write_image_archive(archive, image, BUSYBOX_PATH)
        r = self.docker("load", "-i", str(archive), check=False, timeout=120)
        if r.returncode != 0:
            raise HarnessError(f"docker load {image} failed ({r.returncode}): {r.stderr}\n"
                               + self.logs())

    def reload_policy(self, settle: float = 2.0) -> None:
        """SIGHUP the plugin (gunicorn reloads its workers and so the policy)."""
        if self.plugin_proc is not None and self.plugin_proc.poll() is None:
            self.plugin_proc.send_signal(signal.SIGHUP)
            time.sleep(settle)

    def close(self) -> None:
        """Stop dockerd (and its containerd/shims), then the plugin; remove everything."""
        if self.closed:
            return
        self.closed = True
        marker = str(self.workdir)
        bridges: list[str] = []
        try:
            if self.dockerd_proc is not None and self.dockerd_proc.poll() is None:
                try:  # remove containers first so that dockerd's shutdown is quick
                    r = self.docker("ps", "-aq", check=False, timeout=20)
                    ids = r.stdout.split()
                    if ids:
                        self.docker("rm", "-f", *ids, check=False, timeout=60)
                    # The host interfaces of the bridge networks a test made: dockerd leaves
                    # them behind when it stops, and each holds one of dockerd's default
                    # address pools (30 of them, then `network create` fails on this host).
                    r = self.docker("network", "ls", "-q", "--no-trunc", "--filter",
                                    "driver=bridge", check=False, timeout=20)
                    bridges = [f"br-{net[:12]}" for net in r.stdout.split()]
                except Exception:  # noqa: BLE001 - best effort
                    pass
            _stop(self.dockerd_proc)
            for bridge in bridges if shutil.which("ip") else ():
                subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
            for pid in _pids_referencing(marker):  # containerd-shim and friends left behind
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            _stop(self.plugin_proc)
            for leftover in (self.plugin_socket, f"/run/pyauthz/{self.name}.state.json",
                             f"/run/pyauthz/{self.name}.pid"):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
            _unmount_under(marker)
            if os.environ.get("PYAUTHZ_KEEP_TEST_DIRS") != "1":
                shutil.rmtree(self.workdir, ignore_errors=True)

    # ----- clients

    def docker(self, *args: str, check: bool = True, input: str | bytes | None = None,
               timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        """Run the real docker CLI against this dockerd; text mode unless ``input`` is bytes."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        environ["DOCKER_CONFIG"] = str(self.docker_config)
        environ["DOCKER_CLI_HINTS"] = "false"
        text = not isinstance(input, bytes)
        cmd = [self.docker_bin, "-H", f"unix://{self.docker_socket}", *args]
        try:
            result = subprocess.run(cmd, input=input, capture_output=True, text=text,
                                    env=environ, timeout=timeout, stdin=None if input is not None
                                    else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"timed out after {timeout}s: {shlex.join(cmd)}\n"
                                 f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}") from exc
        if check and result.returncode != 0:
            raise AssertionError(f"`docker {shlex.join(args)}` exited {result.returncode}\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def api(self, method: str, path: str, body=None, headers: HeaderSpec = None,
            raw: bool = False, timeout: float = API_TIMEOUT) -> ApiResponse:
        """One HTTP/1.1 request over dockerd's socket: ``(status, headers, body bytes)``.

        See :func:`build_request` for what ``raw`` changes.
        """
        return unix_http_exchange(self.docker_socket,
                                  build_request(method, path, body, headers, raw), timeout)

    def raw_request(self, data: bytes, timeout: float = API_TIMEOUT) -> ApiResponse:
        """Send ``data`` exactly (request line, headers, body) and read the response."""
        return unix_http_exchange(self.docker_socket, data, timeout)

    # ----- observations

    def decisions(self, since: int = 0) -> list[dict]:
        """The decision log's JSON lines (from byte offset ``since``; see :meth:`log_mark`)."""
        try:
            with open(self.decision_log, "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in data.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def decision_log_text(self, since: int = 0) -> str:
        try:
            with open(self.decision_log, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current size of the decision log, to read only later decisions."""
        try:
            return self.decision_log.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_decisions(self, since: int, predicate, timeout: float = 5.0) -> list[dict]:
        """Decisions after ``since``, waiting up to ``timeout`` until ``predicate(list)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.decisions(since)
            if predicate(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def containers_all(self) -> list[tuple[str, str]]:
        """``(full id, name)`` of every container, from ``docker ps -a``."""
        r = self.docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
        out = []
        for line in r.stdout.splitlines():
            if line.strip():
                cid, _, cname = line.strip().partition(" ")
                out.append((cid, cname))
        return out

    def container_ids(self) -> set[str]:
        return {cid for cid, _ in self.containers_all()}

    def containers_on_disk(self) -> list[dict]:
        """Every container dockerd has stored, read from its data root (not through the
        plugin): ``{"id", "name", "config": config.v2.json, "hostconfig": hostconfig.json}``."""
        root = self.workdir / "data" / "containers"
        out = []
        if not root.is_dir():
            return out
        for cdir in sorted(root.iterdir()):
            item = {"id": cdir.name, "name": None, "config": {}, "hostconfig": {}}
            for key, fname in (("config", "config.v2.json"), ("hostconfig", "hostconfig.json")):
                try:
                    item[key] = json.loads((cdir / fname).read_text())
                except (OSError, ValueError):
                    pass
            item["name"] = (item["config"].get("Name") or "").lstrip("/") or None
            out.append(item)
        return out

    def volumes_on_disk(self) -> list[dict]:
        """Named volumes with their options, from the data root: ``{"name", "opts"}``."""
        root = self.workdir / "data" / "volumes"
        out = []
        if not root.is_dir():
            return out
        for vdir in sorted(p for p in root.iterdir() if p.is_dir()):
            opts = {}
            try:
                opts = json.loads((vdir / "opts.json").read_text())
            except (OSError, ValueError):
                pass
            out.append({"name": vdir.name, "opts": opts})
        return out

    def logs(self) -> str:
        """Tails of the plugin's output, dockerd's output and the decision log."""
        return (f"--- plugin {self.name} output ({self.plugin_output}) ---\n{_tail(self.plugin_output)}\n"
                f"--- dockerd output ({self.dockerd_output}) ---\n{_tail(self.dockerd_output, 6000)}\n"
                f"--- decision log tail ---\n{_tail(self.decision_log, 6000)}\n")


def rootfs_layer(busybox: Path = BUSYBOX_PATH) -> bytes:
    """A layer tar: /bin/busybox, a few applet links and the usual directories."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for dname in ("bin", "tmp", "data", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(dname)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if dname == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in ("sh", "sleep", "true", "echo", "cat", "id", "ls", "touch"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


def write_image_archive(path: Path, image: str, busybox: Path = BUSYBOX_PATH,
                        cmd: Sequence[str] = ("/bin/busybox", "true")) -> None:
    """An image archive in ``docker save``'s format (manifest.json, config, one layer) for
    ``docker load``, with a default CMD so that raw create bodies need no ``Cmd``."""
    import hashlib
    import io
    import platform

    layer = rootfs_layer(busybox)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = json.dumps({
        "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "pyauthz tests"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [image],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((config_name, config), ("layer/layer.tar", layer),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def dangerous_containers(env: DockerEnv) -> list[str]:
    """Descriptions of stored containers that a deny should have prevented."""
    bad = []
    for c in env.containers_on_disk():
        hc = c["hostconfig"] or {}
        reasons = []
        if hc.get("Privileged"):
            reasons.append("privileged")
        for b in hc.get("Binds") or []:
            src = b.split(":", 1)[0]
            if src.startswith("/") and _sensitive(src):
                reasons.append(f"bind {b}")
        for m in hc.get("Mounts") or []:
            if (m.get("Type") == "bind" and _sensitive(m.get("Source") or "")):
                reasons.append(f"mount {m.get('Source')}")
        # Not CgroupnsMode: on cgroup v1 hosts dockerd stores "host" for every container.
        for key in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode"):
            if (hc.get(key) or "") == "host":
                reasons.append(f"{key}=host")
        for opt in hc.get("SecurityOpt") or []:
            flat = str(opt).replace(":", "=").replace(" ", "").lower()
            if flat in ("seccomp=unconfined", "apparmor=unconfined", "label=disable",
                        "systempaths=unconfined"):
                reasons.append(f"SecurityOpt {opt}")
        caps = [str(x).upper() for x in (hc.get("CapAdd") or [])]
        if any(cap in ("ALL", "SYS_ADMIN", "CAP_SYS_ADMIN", "CAP_ALL") for cap in caps):
            reasons.append(f"CapAdd={caps}")
        if hc.get("Devices"):
            reasons.append("devices")
        if reasons:
            bad.append(f"{c['id'][:12]} ({c['name']}): {', '.join(reasons)}")
    return bad


_SENSITIVE_EXACT = {"/", "/var", "/run", "/var/run", "/var/run/docker.sock", "/run/docker.sock"}
_SENSITIVE_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/lib", "/usr")


def _sensitive(src: str) -> bool:
    if not src:
        return False
    norm = os.path.normpath(src)
    return norm in _SENSITIVE_EXACT or any(norm == t or norm.startswith(t + "/")
                                           for t in _SENSITIVE_TREES)


def rule_ids_in(message: str, ids: Iterable[str]) -> list[str]:
    """Which of ``ids`` appear as ``[id]`` in ``message``."""
    return [i for i in ids if f"[{i}]" in message]


def deny_prefix(env: DockerEnv) -> str:
    return f"authorization denied by plugin {env.name}:"


def assert_cli_denied(env: DockerEnv, result: subprocess.CompletedProcess, *rule_ids: str) -> None:
    """The CLI failed with the plugin's deny message naming every one of ``rule_ids``."""
    err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode("utf-8", "replace")
    assert result.returncode != 0, (
        f"expected a deny {list(rule_ids)}, but the command succeeded\nstdout: {result.stdout}\n"
        f"stderr: {err}")
    assert deny_prefix(env) in err, f"not denied by the plugin {env.name}:\n{err}"
    missing = [r for r in rule_ids if f"[{r}]" not in err]
    assert not missing, f"rule ids {missing} missing from the deny message:\n{err}"


def assert_api_denied(env: DockerEnv, resp: ApiResponse, *acceptable: str) -> str:
    """HTTP 403 from the plugin whose message names at least one of ``acceptable``."""
    text = resp.text
    assert resp.status == 403, f"expected 403 from the plugin, got {resp.status}: {text}"
    assert deny_prefix(env) in text, f"403 but not from the plugin {env.name}: {text}"
    if acceptable:
        assert any(f"[{r}]" in text for r in acceptable), (
            f"none of {list(acceptable)} in the deny message: {text}")
    return text
