"""Who is asking, through a real dockerd (issue 9, item 7): dockerd on 127.0.0.1 with
``--tlsverify`` and client certificates this suite makes; the real docker CLI over TLS; an
exception that lifts a rule only for OU=ops; the decision log names each caller."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.identity import Identity
from authz.policy import Policy
from tests.support.dockerd import (BUSYBOX_IMAGE, CLI_TIMEOUT, DOCKERD_START_TIMEOUT, DockerEnv,
                                   HarnessError, add_trust_exceptions, SHIPPED_POLICIES,
                                   TEST_TRUST_EXCEPTIONS)

NOW = dt.datetime.now(dt.timezone.utc)
CA_DN = "CN=pyauthz test CA,O=Acme"


# ----------------------------------------------------------------------------- certificates

def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(directory: Path, stem: str, cert: x509.Certificate, key) -> None:
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path = directory / f"{stem}-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _issue(ca_cert, ca_key, subject: x509.Name, usage, sans=()):
    key = _key()
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(hours=1))
               .not_valid_after(NOW + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=True, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> None:
    """ca.pem; server.pem for 127.0.0.1; alice (O=Acme, OU=ops) and bob, whose O looks like
    an OU=ops selector (O="Acme,OU=ops", OU=dev)."""
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "pyauthz test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(hours=1))
               .not_valid_after(NOW + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = _issue(ca_cert, ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockerd")]),
                    ExtendedKeyUsageOID.SERVER_AUTH,
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    _write(directory, "server", *server)
    for stem, org, unit in (("alice", "Acme", "ops"), ("bob", "Acme,OU=ops", "dev")):
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                          x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                          x509.NameAttribute(NameOID.COMMON_NAME, stem)])
        _write(directory, stem, *_issue(ca_cert, ca_key, name, ExtendedKeyUsageOID.CLIENT_AUTH))


# ----------------------------------------------------------------------------- dockerd over TLS

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsDockerEnv(DockerEnv):
    """The harness's pair, with dockerd also listening on 127.0.0.1:PORT with --tlsverify
    (the unix socket stays, for the harness itself)."""

    pki: Path
    port: int

    def _start_dockerd(self) -> None:
        d, pki = self.workdir, self.pki
        cmd = [shutil.which("dockerd") or "dockerd",
               "--data-root", str(d / "data"), "--exec-root", str(d / "x"),
               "-H", f"unix://{self.docker_socket}", "-H", f"tcp://127.0.0.1:{self.port}",
               "--tlsverify", "--tlscacert", str(pki / "ca.pem"),
               "--tlscert", str(pki / "server.pem"), "--tlskey", str(pki / "server-key.pem"),
               "--pidfile", str(d / "dockerd.pid"),
               "--iptables=false", "--ip6tables=false", "--bridge=none",
               "--storage-driver=vfs", f"--authorization-plugin={self.name}"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        with open(self.dockerd_output, "wb") as out:
            self.dockerd_proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=environ, start_new_session=True)
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        while time.monotonic() < deadline and self.dockerd_proc.poll() is None:
            if os.path.exists(self.docker_socket):
                try:
                    if self.api("GET", "/_ping", timeout=5).status == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        raise HarnessError(f"dockerd with TLS not ready within {DOCKERD_START_TIMEOUT}s\n"
                           + self.logs())

    def tls_docker(self, client: str, *args: str) -> subprocess.CompletedProcess:
        """The real docker CLI over TLS on 127.0.0.1, as ``client`` (alice, bob)."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        environ["DOCKER_CONFIG"] = str(self.docker_config)
        environ["DOCKER_CLI_HINTS"] = "false"
        pki = self.pki
        cmd = [self.docker_bin, "--tlsverify", "--tlscacert", str(pki / "ca.pem"),
               "--tlscert", str(pki / f"{client}.pem"), "--tlskey", str(pki / f"{client}-key.pem"),
               "-H", f"tcp://127.0.0.1:{self.port}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=environ,
                              timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)


OPS_POLICY = """
  - id: operators-may-run-privileged
    rules: [privileged]
    subjects: ["role:operators"]
    reason: pyauthz integration test (certificate OU=ops)
"""


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory):
    from tests.support.dockerd import missing_requirements

    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("tls")
    pki = base / "pki"
    pki.mkdir()
    make_pki(pki)
    policy = base / "policies"
    shutil.copytree(SHIPPED_POLICIES, policy)
    add_trust_exceptions(policy, TEST_TRUST_EXCEPTIONS)
    rules = policy / "rules.yaml"
    text = rules.read_text()
    assert text.count("\nroles:\n") == 1
    rules.write_text(text.replace("\nroles:\n", '\nroles:\n  operators: ["ou:ops"]\n')
                     + OPS_POLICY)
    Policy.load(policy)  # the edited copy loads

    class Env(TlsDockerEnv):
        pass

    Env.pki, Env.port = pki, _free_port()
    env = Env.start(policy_dir=policy)
    try:
        yield env
    finally:
        env.close()


def _creates(env, since: int, name: str) -> list[dict]:
    return [d for d in env.decisions(since) if d.get("phase") == "request"
            and d.get("endpoint") == "container.create"
            and (d.get("identity") or {}).get("name") == name]


def test_exception_for_ou_ops_lifts_the_rule_for_alice_only(tls_env):
    env = tls_env
    mark = env.log_mark()
    create = ("create", "--privileged", "--network", "none", BUSYBOX_IMAGE, "/bin/busybox", "true")

    alice = env.tls_docker("alice", *create)
    assert alice.returncode == 0, alice.stderr
    bob = env.tls_docker("bob", *create)
    assert bob.returncode != 0
    assert "authorization denied by plugin" in bob.stderr and "[privileged]" in bob.stderr
    local = env.docker(*create, check=False)  # the harness, on the unix socket: anonymous
    assert local.returncode != 0 and "[privileged]" in local.stderr
    # both TLS callers may do what everyone may
    for client in ("alice", "bob"):
        r = env.tls_docker(client, "ps", "-q")
        assert r.returncode == 0, r.stderr

    found = env.wait_decisions(mark, lambda ds: all(
        _creates(env, mark, n) for n in ("alice", "bob", "anonymous")), timeout=10)
    assert found
    [a] = _creates(env, mark, "alice")
    assert a["allow"] is True and a["user"] == "alice" and a["auth_method"] == "TLS"
    assert a["identity"] == {"name": "alice", "certificate": True, "fields": {
        "cn": ["alice"], "o": ["Acme"], "ou": ["ops"], "issuer": [CA_DN]}}
    assert [e["exception"] for e in a["exemptions"]] == ["operators-may-run-privileged"]

    [b] = _creates(env, mark, "bob")
    assert b["allow"] is False and [v["rule"] for v in b["violations"]] == ["privileged"]
    assert b["identity"]["fields"]["o"] == ["Acme,OU=ops"]  # one value: not an OU
    assert b["identity"]["fields"]["ou"] == ["dev"]
    assert "exemptions" not in b

    [u] = _creates(env, mark, "anonymous")
    assert u["allow"] is False and u["identity"] == {"name": "anonymous", "certificate": False,
                                                       "fields": {}}
    # replay reads each identity back exactly
    assert Identity.from_log(a["identity"]).field("ou") == ("ops",)
    assert Identity.from_log(u["identity"]) == Identity.anonymous()
    assert "BEGIN CERTIFICATE" not in env.decision_log_text(mark)
