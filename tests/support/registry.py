"""Registries for the image trust tests.

- :class:`RealRegistry`: Debian's ``docker-registry`` (distribution v2) on 127.0.0.1, with
  filesystem storage in a temp dir, optionally htpasswd basic auth or TLS.
- :class:`FakeRegistry`: a small in-process OCI distribution server (push and pull of
  blobs and manifests) whose storage and answers tests can change: basic or bearer-token
  auth, TLS, dropped blobs, served bytes that differ from their digest, request log.
- :class:`HangServer`: accepts TCP connections and never answers.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

DOCKER_REGISTRY = Path("/usr/bin/docker-registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_missing() -> str | None:
    if not DOCKER_REGISTRY.is_file() or not os.access(DOCKER_REGISTRY, os.X_OK):
        return f"{DOCKER_REGISTRY} missing (apt-get install docker-registry)"
    return None


def bcrypt_htpasswd(user: str, password: str) -> str | None:
    """An htpasswd line with a bcrypt hash (all docker-registry accepts), or None when
    neither the ``htpasswd`` tool nor a bcrypt-capable ``crypt`` is available."""
    tool = shutil.which("htpasswd")
    if tool:
        out = subprocess.run([tool, "-nbB", user, password], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # noqa: PLC0415 - deprecated module, only a test fallback
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    except (ImportError, AttributeError, ValueError, OSError):
        return None
    if not hashed or not hashed.startswith("$2"):
        return None
    return f"{user}:{hashed}"


def make_tls_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``host``; returns (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyauthz test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


# --------------------------------------------------------------------------- real registry

class RealRegistry:
    """``docker-registry serve CONFIG`` on 127.0.0.1:<free port>; a context manager."""

    def __init__(self, workdir: Path | None = None, *, htpasswd: tuple[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None):
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="pyauthz-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"
        self.auth = htpasswd
        self._tls = tls
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "registry.log"

    def _config(self) -> str:
        storage = self.dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {uuid.uuid4().hex}",
        ]
        if self._tls:
            cert, key = self._tls
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if self.auth:
            line = bcrypt_htpasswd(*self.auth)
            if line is None:
                raise RuntimeError("no bcrypt htpasswd available")
            pw_file = self.dir / "htpasswd"
            pw_file.write_text(line + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: pyauthz-test", f"    path: {pw_file}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> "RealRegistry":
        cfg = self.dir / "config.yml"
        cfg.write_text(self._config())
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen([str(DOCKER_REGISTRY), "serve", str(cfg)], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({self.proc.returncode}): {self.logs()}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # readiness probe: no CA check
                    r = requests.get(f"{self.url}/v2/", timeout=1, verify=False)
                if r.status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url}: {self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RealRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- fake registry

_MANIFEST_RE = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_BLOB_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_UPLOAD_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")


class FakeRegistry:
    """An in-process registry v2. ``auth`` is None, ``"basic"`` or ``"bearer"`` (token
    service at ``/token`` on the same server), with login ``user``/``password``."""

    def __init__(self, *, auth: str | None = None, user: str = "alice",
                 password: str = "s3cret-pw", tls: tuple[Path, Path] | None = None):
        self.auth = auth
        self.user, self.password = user, password
        self.realm: str | None = None          # bearer token service URL (default: own /token)
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}   # (name, ref) -> (body, type)
        self.served_blob_override: dict[str, bytes] = {}   # digest -> bytes served instead
        self.requests: list[dict] = []
        self.tokens: set[str] = set()
        self.token_requests: list[dict] = []
        self._uploads: dict[str, bytearray] = {}
        self._lock = threading.Lock()
        self._tls = tls
        handler = self._handler_class()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._conns: set = set()
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> "FakeRegistry":
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a registry that goes down: also drop kept-alive connections."""
        self.server.shutdown()
        self.server.server_close()
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conns.clear()

    def __enter__(self) -> "FakeRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- storage helpers
    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._lock:
            self.blobs[digest] = data
        return digest

    def put_manifest(self, name: str, ref: str, body: bytes, media_type: str) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        with self._lock:
            self.manifests[(name, ref)] = (body, media_type)
            self.manifests[(name, digest)] = (body, media_type)
        return digest

    def delete_manifest(self, name: str, ref: str) -> None:
        with self._lock:
            self.manifests.pop((name, ref), None)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    # -- auth
    def _authorized(self, header: str | None) -> bool:
        if self.auth is None:
            return True
        if not header:
            return False
        if self.auth == "basic":
            want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return header == f"Basic {want}"
        if self.auth == "bearer":
            return header.startswith("Bearer ") and header[7:] in self.tokens
        return False

    def _challenge(self, name: str | None) -> str:
        if self.auth == "basic":
            return 'Basic realm="fake-registry"'
        scope = f',scope="repository:{name}:pull"' if name else ""
        realm = self.realm or f"{self.url}/token"
        return f'Bearer realm="{realm}",service="fake-registry"{scope}'

    def _handler_class(self):
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()
                reg._conns.add(self.connection)

            def finish(self):
                reg._conns.discard(self.connection)
                super().finish()

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD" and body:
                    self.wfile.write(body)

            def _error(self, status, code):
                self._send(status, json.dumps({"errors": [{"code": code}]}).encode(),
                           {"Content-Type": "application/json"})

            def _record(self):
                parts = urlsplit(self.path)
                reg.requests.append({"method": self.command, "path": parts.path,
                                     "query": parts.query,
                                     "authorization": self.headers.get("Authorization"),
                                     "accept": self.headers.get("Accept")})
                return parts

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _gate(self, name):
                if reg._authorized(self.headers.get("Authorization")):
                    return True
                self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                           {"WWW-Authenticate": reg._challenge(name),
                            "Content-Type": "application/json"})
                return False

            def do_GET(self):
                parts = self._record()
                path = parts.path
                if path == "/token":
                    return self._token(parts)
                if path == "/v2/":
                    if self._gate(None):
                        self._send(200, b"{}", {"Content-Type": "application/json"})
                    return
                m = _MANIFEST_RE.match(path)
                if m:
                    if not self._gate(m["name"]):
                        return
                    with reg._lock:
                        item = reg.manifests.get((m["name"], m["ref"]))
                    if item is None:
                        return self._error(404, "MANIFEST_UNKNOWN")
                    body, media_type = item
                    digest = "sha256:" + hashlib.sha256(body).hexdigest()
                    return self._send(200, body, {"Content-Type": media_type,
                                                  "Docker-Content-Digest": digest})
                m = _BLOB_RE.match(path)
                if m:
                    if not self._gate(m["name"]):
                        return
                    with reg._lock:
                        data = reg.served_blob_override.get(m["digest"], reg.blobs.get(m["digest"]))
                    if data is None:
                        return self._error(404, "BLOB_UNKNOWN")
                    return self._send(200, data, {"Content-Type": "application/octet-stream",
                                                  "Docker-Content-Digest": m["digest"]})
                self._error(404, "NOT_FOUND")

            do_HEAD = do_GET

            def _token(self, parts):
                q = parse_qs(parts.query)
                header = self.headers.get("Authorization")
                reg.token_requests.append({"query": q, "authorization": header})
                want = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
                if header != f"Basic {want}":
                    return self._send(401, b'{"details":"login required"}',
                                      {"Content-Type": "application/json"})
                token = uuid.uuid4().hex
                reg.tokens.add(token)
                self._send(200, json.dumps({"token": token, "expires_in": 300}).encode(),
                           {"Content-Type": "application/json"})

            def do_POST(self):
                parts = self._record()
                m = _UPLOAD_RE.match(parts.path)
                self._body()
                if not m or m["id"]:
                    return self._error(404, "NOT_FOUND")
                if not self._gate(m["name"]):
                    return
                upload = uuid.uuid4().hex
                reg._uploads[upload] = bytearray()
                self._send(202, b"", {"Location": f"/v2/{m['name']}/blobs/uploads/{upload}",
                                      "Docker-Upload-UUID": upload, "Range": "0-0"})

            def do_PUT(self):
                parts = self._record()
                body = self._body()
                m = _UPLOAD_RE.match(parts.path)
                if m and m["id"]:
                    if not self._gate(m["name"]):
                        return
                    data = bytes(reg._uploads.pop(m["id"], bytearray())) + body
                    want = parse_qs(parts.query).get("digest", [""])[0]
                    got = reg.put_blob(data)
                    if got != want:
                        return self._error(400, "DIGEST_INVALID")
                    return self._send(201, b"", {"Location": f"/v2/{m['name']}/blobs/{got}",
                                                 "Docker-Content-Digest": got})
                m = _MANIFEST_RE.match(parts.path)
                if m:
                    if not self._gate(m["name"]):
                        return
                    media_type = self.headers.get("Content-Type", "")
                    digest = reg.put_manifest(m["name"], m["ref"], body, media_type)
                    return self._send(201, b"", {"Location": f"/v2/{m['name']}/manifests/{digest}",
                                                 "Docker-Content-Digest": digest})
                self._error(404, "NOT_FOUND")

        return Handler


# --------------------------------------------------------------------------- hanging server

class HangServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (until closed)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self._conns.append(conn)

    def __enter__(self) -> "HangServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self._conns:
            c.close()
        self.sock.close()
