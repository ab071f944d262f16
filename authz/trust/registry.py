"""A read-only OCI distribution (registry v2) client: manifests and blobs, within a deadline.

- HTTPS by default, verified against the system CAs or the registry's ``ca_file``; plain
  HTTP only for a registry that trust.yaml marks ``insecure: true``.
- Authentication as dockerd does it: on a 401, follow the ``WWW-Authenticate`` challenge:
  ``Bearer`` (token service, with the login as basic auth when there is one) or ``Basic``.
  Logins come from the credentials file; they are never logged, put in a URL or an error,
  and never sent over plain HTTP to a host that the policy does not mark insecure.
- Every call is bounded: connect/read timeouts, capped by what is left of the decision's
  deadline, and a size limit on every body. Environment proxies and ``.netrc`` are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlencode, urlsplit

import requests

from authz.deadline import Deadline, DeadlineExceeded
from authz.moby.reference import Reference
from authz.trust.credentials import Credential
from authz.trust.policy import RegistrySettings, Timeouts

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024

USER_AGENT = "pyauthz-trust/1"


# --------------------------------------------------------------------------- errors

class RegistryError(Exception):
    """A registry answer that stops the check. ``unreachable`` errors are the ones where a
    still-valid cached verification may stand in."""
    unreachable = False


class RegistryUnreachable(RegistryError):
    """No answer: down, timed out, TLS failed."""
    unreachable = True


class RegistryNotFound(RegistryError):
    """404: no such manifest or blob."""


class RegistryDenied(RegistryError):
    """401/403, or the token service refused."""


class RegistryBadResponse(RegistryError):
    """An answer that is not what the distribution API promises."""


# --------------------------------------------------------------------------- manifests

@dataclass(frozen=True)
class Manifest:
    """A manifest or index as fetched (and hashed)."""
    digest: str          # sha256 of the bytes as fetched
    media_type: str
    body: bytes
    data: dict

    @property
    def is_index(self) -> bool:
        """An index (manifest list): platform manifests, no config."""
        return self.media_type in INDEX_TYPES

    @property
    def config_digest(self) -> str | None:
        """The image config's digest: what dockerd calls the image id."""
        config = self.data.get("config")
        return config.get("digest") if isinstance(config, dict) else None

    def children(self) -> list[dict]:
        """An index's platform manifest descriptors."""
        items = self.data.get("manifests")
        return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_manifest(body: bytes, content_type: str | None, digest: str) -> Manifest:
    """A schema 2 manifest or index (OCI or Docker); anything else is a bad response."""
    try:
        data = json.loads(body)
    except ValueError:
        raise RegistryBadResponse(f"manifest {digest} is not JSON") from None
    if not isinstance(data, dict):
        raise RegistryBadResponse(f"manifest {digest} is not a JSON object")
    if data.get("schemaVersion") == 1:
        raise RegistryBadResponse(f"manifest {digest} is a schema 1 manifest, which carries no "
                                  f"image config digest and is not supported")
    if data.get("schemaVersion") != 2:
        raise RegistryBadResponse(f"manifest {digest}: unsupported schemaVersion")
    media_type = data.get("mediaType") or (content_type or "").split(";")[0].strip()
    if media_type not in INDEX_TYPES + MANIFEST_TYPES:
        if isinstance(data.get("manifests"), list):
            media_type = OCI_INDEX
        elif isinstance(data.get("config"), dict):
            media_type = OCI_MANIFEST
        else:
            raise RegistryBadResponse(f"manifest {digest}: unknown media type {media_type!r}")
    return Manifest(digest=digest, media_type=media_type, body=body, data=data)


# --------------------------------------------------------------------------- auth

_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://a/token",service="reg",scope="repository:x:pull"``."""
    header = (header or "").strip()
    scheme, _, rest = header.partition(" ")
    params = {}
    for m in _PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


# --------------------------------------------------------------------------- client

class RegistryClient:
    """Reads manifests and blobs, each call within the decision's deadline."""

    def __init__(self, settings_for: Callable[[str], RegistrySettings],
                 credentials: dict[str, Credential], timeouts: Timeouts):
        self._settings_for = settings_for
        self._credentials = credentials
        self._timeouts = timeouts
        self._local = threading.local()
        self._tokens: dict[tuple, tuple[float, str]] = {}
        self._tokens_lock = threading.Lock()

    # -- plumbing
    def _session(self) -> requests.Session:
        """This thread's session (connections reused)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False          # no proxies or .netrc from the environment
            session.max_redirects = 3
            self._local.session = session
        return session

    def _base(self, ref: Reference) -> tuple[str, RegistrySettings]:
        """The registry's base URL (http only when insecure) and its settings."""
        settings = self._settings_for(ref.domain)
        scheme = "http" if settings.insecure else "https"
        return f"{scheme}://{ref.api_host}", settings

    def _verify(self, settings: RegistrySettings) -> str | bool:
        """requests' ``verify``: the registry's CA bundle as loaded, or the system CAs."""
        if settings.ca_file is not None and settings.ca_bundle is None:
            raise RegistryUnreachable(f"ca_file {settings.ca_file} was not loaded")
        return settings.ca_bundle or True

    def _request(self, url: str, headers: dict, settings: RegistrySettings, deadline: Deadline,
                 what: str) -> requests.Response:
        """GET within the deadline; network and TLS failures are RegistryUnreachable."""
        timeout = (deadline.bound(self._timeouts.connect, what),
                   deadline.bound(self._timeouts.read, what))
        try:
            return self._session().get(url, headers=headers, timeout=timeout, stream=True,
                                       verify=self._verify(settings), allow_redirects=True)
        except requests.exceptions.SSLError as exc:
            host = urlsplit(url).netloc
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                raise RegistryUnreachable(f"TLS verification of {host} failed: its certificate "
                                          f"is not trusted ({_short(exc)}); set ca_file for it "
                                          f"under `registries:` in trust.yaml") from None
            raise RegistryUnreachable(f"TLS handshake with {host} failed ({_short(exc)}); if "
                                      f"it serves plain HTTP, only `insecure: true` for it under "
                                      f"`registries:` in trust.yaml allows that") from None
        except requests.exceptions.Timeout:
            raise RegistryUnreachable(f"registry {urlsplit(url).netloc} timed out ({what})") from None
        except requests.exceptions.RequestException as exc:
            raise RegistryUnreachable(f"registry {urlsplit(url).netloc} unreachable "
                                      f"({_short(exc)})") from None

    def _read(self, resp: requests.Response, limit: int, deadline: Deadline, what: str) -> bytes:
        """The body, at most ``limit`` bytes, within the deadline."""
        try:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise RegistryBadResponse(f"{what}: {length} bytes is over the {limit}-byte limit")
            buf = bytearray()
            # read1 returns after one recv, so a registry that trickles bytes cannot hold
            # the read past the deadline (iter_content would wait for a whole chunk, each
            # recv with a fresh timeout). Content-Encoding is decoded by urllib3.
            while True:
                chunk = resp.raw.read1(64 * 1024, decode_content=True)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > limit:
                    raise RegistryBadResponse(f"{what}: over the {limit}-byte limit")
                if deadline.expired():
                    raise DeadlineExceeded(f"decision deadline ({deadline.total:g}s) reached "
                                           f"while reading {what}")
            return bytes(buf)
        except requests.exceptions.RequestException as exc:
            raise RegistryUnreachable(f"reading {what} failed ({_short(exc)})") from None
        finally:
            resp.close()

    def _get(self, ref: Reference, path: str, accept: str | None, limit: int,
             deadline: Deadline, what: str) -> tuple[bytes, requests.Response]:
        """GET ``path`` at ``ref``'s registry, authenticating on a 401; the body and response."""
        base, settings = self._base(ref)
        url = base + path
        scope = f"repository:{ref.path}:pull"
        headers = {"User-Agent": USER_AGENT}
        if accept:
            headers["Accept"] = accept
        auth = self._cached_token(ref.api_host, scope)
        if auth:
            headers["Authorization"] = auth
        resp = self._request(url, headers, settings, deadline, what)
        if resp.status_code == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            auth = self._authenticate(ref, settings, challenge, scope, deadline)
            if auth:
                headers["Authorization"] = auth
                resp = self._request(url, headers, settings, deadline, what)
        if resp.status_code in (401, 403):
            resp.close()
            login = "with" if self._login(ref) else "without"
            raise RegistryDenied(f"registry {ref.domain} refused {what} ({resp.status_code}, "
                                 f"{login} a login from credentials_file)")
        if resp.status_code == 404:
            resp.close()
            raise RegistryNotFound(f"{what} not found in {ref.repository}")
        if resp.status_code != 200:
            resp.close()
            raise RegistryBadResponse(f"registry {ref.domain} answered {resp.status_code} "
                                      f"to {what}")
        return self._read(resp, limit, deadline, what), resp

    def _login(self, ref: Reference) -> Credential | None:
        """The login for ``ref``'s registry, if credentials_file has one."""
        return self._credentials.get(ref.domain.lower())

    def _cached_token(self, host: str, scope: str) -> str | None:
        """A still-valid token header for ``host`` and ``scope``."""
        with self._tokens_lock:
            item = self._tokens.get((host, scope))
        if item and item[0] > time.monotonic():
            return item[1]
        return None

    def _authenticate(self, ref: Reference, settings: RegistrySettings, challenge: str,
                      scope: str, deadline: Deadline) -> str | None:
        """The Authorization header that answers a 401's challenge, or None (none we can)."""
        scheme, params = parse_challenge(challenge)
        login = self._login(ref)
        if scheme == "basic":
            return _basic_auth(login) if login else None
        if scheme != "bearer" or not params.get("realm"):
            return None
        return self._bearer_token(ref, settings, params, scope, login, deadline)

    def _bearer_token(self, ref: Reference, settings: RegistrySettings, params: dict[str, str],
                      scope: str, login: Credential | None, deadline: Deadline) -> str:
        """Ask the challenge's token service for a pull token (cached until it expires)."""
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https"):
            raise RegistryBadResponse(f"registry {ref.domain}: token realm is not an http(s) URL")
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"User-Agent": USER_AGENT}
        # Send the login to the token service only over TLS, or over plain HTTP when the
        # policy marks the registry insecure and the realm is that same host.
        if login and (parts.scheme == "https"
                      or (settings.insecure and parts.netloc.lower() == ref.api_host.lower())):
            headers["Authorization"] = _basic_auth(login)
        sep = "&" if parts.query else "?"
        url = realm + sep + urlencode(query)
        realm_settings = self._settings_for(parts.netloc.lower())
        if realm_settings.ca_file is None and settings.ca_file is not None:
            realm_settings = settings
        resp = self._request(url, headers, realm_settings, deadline, "a registry token")
        if resp.status_code != 200:
            resp.close()
            raise RegistryDenied(f"token service of {ref.domain} answered {resp.status_code}"
                                 f" ({'with' if login else 'without'} a login from credentials_file)")
        token, ttl = _token_of(self._read(resp, MAX_TOKEN_BYTES, deadline, "a registry token"),
                               ref)
        header = f"Bearer {token}"
        with self._tokens_lock:
            if len(self._tokens) > 1024:
                self._tokens.clear()
            self._tokens[(ref.api_host, scope)] = (time.monotonic() + min(ttl, 300) - 5, header)
        return header

    # -- API
    def manifest(self, ref: Reference, tag_or_digest: str, deadline: Deadline) -> Manifest:
        """GET a manifest or index by tag or digest; by digest, the bytes must hash to it."""
        what = f"manifest {tag_or_digest}"
        body, resp = self._get(ref, f"/v2/{ref.path}/manifests/{tag_or_digest}", MANIFEST_ACCEPT,
                               MAX_MANIFEST_BYTES, deadline, what)
        digest = sha256_digest(body)
        if tag_or_digest.startswith("sha256:") and digest != tag_or_digest:
            raise RegistryBadResponse(f"registry {ref.domain} sent a manifest for {tag_or_digest} "
                                      f"whose bytes hash to {digest}")
        return parse_manifest(body, resp.headers.get("Content-Type"), digest)

    def blob(self, ref: Reference, digest: str, limit: int, deadline: Deadline) -> bytes:
        """GET a blob, at most ``limit`` bytes."""
        body, _ = self._get(ref, f"/v2/{ref.path}/blobs/{digest}", None, limit, deadline,
                            f"blob {digest[:19]}…")
        return body


def _basic_auth(login: Credential) -> str:
    """``Basic base64(user:password)``."""
    token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
    return f"Basic {token}"


def _token_of(body: bytes, ref: Reference) -> tuple[str, float]:
    """The token in a token service's answer, and its lifetime (60 s when it names none)."""
    try:
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryBadResponse(f"token service of {ref.domain} sent no token")
    expires_in = data.get("expires_in")
    return token, expires_in if isinstance(expires_in, (int, float)) and expires_in > 0 else 60


def _short(exc: Exception) -> str:
    """An exception's text, shortened to what happened."""
    text = str(exc)
    # urllib3 wraps reasons in long reprs; keep the end, which says what happened
    text = re.sub(r"\s+", " ", text)
    reason = re.search(r"\]\s*([^\]]+?)['\")]*$", text)
    if reason and len(text) > 160:
        text = reason.group(1)
    return text[:160]
