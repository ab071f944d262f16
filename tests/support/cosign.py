"""A small cosign-compatible signer for tests: keys, images and signatures in a registry.

It writes what ``cosign sign --key cosign.key --tlog-upload=false REPO@DIGEST`` writes:
for image manifest digest ``sha256:<hex>``, an OCI manifest tagged ``sha256-<hex>.sig`` in
the same repository whose layers are simple-signing payloads
(``application/vnd.dev.cosign.simplesigning.v1+json``) with the base64 signature in the
``dev.cosignproject.cosign/signature`` annotation. Several layers = several signatures.

Variants for the negative tests: an untrusted key, a tampered payload (the stored blob is
not what was signed), a payload naming another digest or another repository, a layer
without signature, a signature manifest with junk.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- keys

class Key:
    """A signing key pair: ``ecdsa`` (P-256, cosign's default), ``rsa`` or ``ed25519``."""

    def __init__(self, kind: str = "ecdsa"):
        self.kind = kind
        if kind == "ecdsa":
            self.private = ec.generate_private_key(ec.SECP256R1())
        elif kind == "rsa":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "ed25519":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(kind)
        self.public = self.private.public_key()

    @property
    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def fingerprint(self) -> str:
        der = self.public.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        return sha256(der)

    def sign(self, data: bytes) -> bytes:
        if self.kind == "ecdsa":
            return self.private.sign(data, ec.ECDSA(hashes.SHA256()))
        if self.kind == "rsa":
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(data)

    def write_public(self, path) -> None:
        path.write_bytes(self.public_pem)


def payload(identity: str, digest: str, optional=None) -> bytes:
    """The simple-signing payload as cosign writes it."""
    return json.dumps({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": optional,
    }, separators=(",", ":")).encode()


@dataclass
class SigLayer:
    """One signature layer. Defaults: a correct signature by ``key``."""
    key: Key | None
    identity: str | None = None          # default: the repository signed
    digest: str | None = None            # default: the digest signed
    tamper: bool = False                 # store a payload other than the signed one
    raw_payload: bytes | None = None     # sign and store these bytes instead
    media_type: str = SIMPLESIGNING
    no_signature: bool = False
    bad_base64: bool = False


# --------------------------------------------------------------------------- pushing

@dataclass
class Image:
    name: str
    digest: str
    config_digest: str
    manifest: bytes
    media_type: str
    layers: list[str] = field(default_factory=list)


class Pusher:
    """Push blobs, manifests, images and cosign signatures with the distribution API."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None = None, verify=True):
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = verify
        self._auth = auth
        self._token: str | None = None
        host = self.base.split("://", 1)[1]
        self.host = host

    def _req(self, method: str, url: str, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if self._token:
            headers["Authorization"] = self._token
        r = self.session.request(method, url, headers=headers, timeout=10, **kw)
        if r.status_code == 401 and self._auth:
            challenge = r.headers.get("WWW-Authenticate", "")
            cred = base64.b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
            if challenge.lower().startswith("bearer"):
                realm = challenge.split('realm="', 1)[1].split('"', 1)[0]
                t = self.session.get(realm, headers={"Authorization": f"Basic {cred}"}, timeout=10)
                t.raise_for_status()
                self._token = f"Bearer {t.json()['token']}"
            else:
                self._token = f"Basic {cred}"
            headers["Authorization"] = self._token
            r = self.session.request(method, url, headers=headers, timeout=10, **kw)
        return r

    def push_blob(self, name: str, data: bytes) -> str:
        digest = sha256(data)
        r = self._req("POST", f"{self.base}/v2/{name}/blobs/uploads/")
        assert r.status_code == 202, (r.status_code, r.text)
        location = r.headers["Location"]
        if location.startswith("/"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        r = self._req("PUT", f"{location}{sep}digest={digest}", data=data,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, (r.status_code, r.text)
        return digest

    def push_manifest(self, name: str, ref: str, body: bytes, media_type: str) -> str:
        r = self._req("PUT", f"{self.base}/v2/{name}/manifests/{ref}", data=body,
                      headers={"Content-Type": media_type})
        assert r.status_code == 201, (r.status_code, r.text)
        return sha256(body)

    def get_manifest(self, name: str, ref: str) -> bytes | None:
        r = self._req("GET", f"{self.base}/v2/{name}/manifests/{ref}",
                      headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}"})
        return r.content if r.status_code == 200 else None

    def push_image(self, name: str, tag: str | None = "1", *, seed: str = "x",
                   oci: bool = False, architecture: str = "amd64") -> Image:
        """A small image: a config blob and one layer, tagged ``tag``."""
        layer = f"layer-{seed}".encode() * 8
        config = json.dumps({
            "architecture": architecture, "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            "history": [{"created_by": f"pyauthz test {seed}"}],
        }, separators=(",", ":")).encode()
        config_digest = self.push_blob(name, config)
        layer_digest = self.push_blob(name, layer)
        media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                       "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": DOCKER_LAYER, "size": len(layer), "digest": layer_digest}],
        }, separators=(",", ":")).encode()
        digest = self.push_manifest(name, tag or sha256(manifest), manifest, media_type)
        return Image(name, digest, config_digest, manifest, media_type, [layer_digest])

    def push_index(self, name: str, tag: str, images: list[tuple[Image, str]]) -> str:
        """An OCI index over (image, architecture) pairs."""
        body = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": img.media_type, "size": len(img.manifest),
                           "digest": img.digest,
                           "platform": {"architecture": arch, "os": "linux"}}
                          for img, arch in images],
        }, separators=(",", ":")).encode()
        return self.push_manifest(name, tag, body, OCI_INDEX)

    def sign(self, name: str, digest: str, layers: list[SigLayer] | Key, *,
             append: bool = False) -> str:
        """Store cosign signatures for ``digest`` in ``name``; returns the .sig digest."""
        if isinstance(layers, Key):
            layers = [SigLayer(layers)]
        repository = f"{self.host}/{name}"
        descriptors = []
        tag = digest.replace(":", "-", 1) + ".sig"
        if append:
            existing = self.get_manifest(name, tag)
            if existing:
                descriptors = json.loads(existing)["layers"]
        for spec in layers:
            signed = spec.raw_payload if spec.raw_payload is not None else payload(
                spec.identity or repository, spec.digest or digest)
            stored = signed
            if spec.tamper:
                data = json.loads(signed)
                data["optional"] = {"tampered": True}
                stored = json.dumps(data, separators=(",", ":")).encode()
            blob_digest = self.push_blob(name, stored)
            annotations = {}
            if not spec.no_signature:
                sig = base64.b64encode(spec.key.sign(signed)).decode()
                annotations[SIGNATURE_ANNOTATION] = "%%%not-base64" if spec.bad_base64 else sig
            descriptors.append({"mediaType": spec.media_type, "size": len(stored),
                                "digest": blob_digest, "annotations": annotations})
        config = json.dumps({"architecture": "", "os": "", "config": {},
                             "rootfs": {"type": "layers",
                                        "diff_ids": [d["digest"] for d in descriptors]}},
                            separators=(",", ":")).encode()
        config_digest = self.push_blob(name, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
            "layers": descriptors,
        }, separators=(",", ":")).encode()
        return self.push_manifest(name, tag, manifest, OCI_MANIFEST)


# --------------------------------------------------------------------------- trust.yaml

def write_trust_policy(directory, *, keys: dict[str, Key] | None = None,
                       insecure: list[str] = (), extra: str = "",
                       timeouts: str = "") -> "object":
    """Write ``directory/trust.yaml`` trusting ``keys`` (name -> Key, written as PEM files
    beside it) with plain HTTP for the ``insecure`` hosts; ``extra`` is appended YAML
    (rules, exceptions, default...). Returns the directory."""
    from pathlib import Path
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1"]
    if keys:
        lines.append("keys:")
        for name, key in keys.items():
            (directory / f"{name}.pub").write_bytes(key.public_pem)
            lines += [f"  - name: {name}", f"    file: {name}.pub"]
    else:
        lines.append("keys: []")
    if insecure:
        lines.append("registries:")
        for host in insecure:
            lines += [f'  "{host}":', "    insecure: true"]
    if timeouts:
        lines.append(timeouts.rstrip())
    if extra:
        lines.append(extra.rstrip())
    (directory / "trust.yaml").write_text("\n".join(lines) + "\n")
    return directory
