"""Who is asking (issue 9, item 7): the identity read from RequestPeerCertificates, subjects
that name certificate fields, roles over them, and the identity in the decision log."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.decoding.facts import Fact
from authz.identity import (Identity, IdentityError, Subject, from_certificates,
                            parse_subject)
from authz.plugin import Plugin
from authz.policy import Policy, PolicyError
from authz.protocol import REQUEST_PHASE, ProtocolError, parse_call

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
NOW = dt.datetime.now(dt.timezone.utc)


# ----------------------------------------------------------------------------- certificates

def _name(*pairs) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def make_ca(cn: str = "Corp CA", o: str = "Acme"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name((NameOID.ORGANIZATION_NAME, o), (NameOID.COMMON_NAME, cn))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, subject, sans=()) -> x509.Certificate:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(*subject))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1))
               .not_valid_after(NOW + dt.timedelta(days=2))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def wire(*certs) -> list[str]:
    """RequestPeerCertificates as moby marshals it: each a JSON []byte (base64) of Go's PEM."""
    return [base64.b64encode(c.public_bytes(serialization.Encoding.PEM)).decode() for c in certs]


@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.fixture(scope="module")
def alice(ca):
    return make_leaf(ca, [(NameOID.ORGANIZATION_NAME, "Acme"),
                          (NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),
                          (NameOID.ORGANIZATIONAL_UNIT_NAME, "oncall"),
                          (NameOID.COMMON_NAME, "alice")],
                     [x509.DNSName("CI.Example.com"), x509.RFC822Name("alice@example.com"),
                      x509.UniformResourceIdentifier("spiffe://example.com/ci"),
                      x509.IPAddress(ipaddress.ip_address("::1"))])


@pytest.fixture(scope="module")
def forger(ca):
    """Issued by the same CA, with values that look like other selectors."""
    return make_leaf(ca, [(NameOID.ORGANIZATION_NAME, "Acme,OU=ops"),
                          (NameOID.ORGANIZATIONAL_UNIT_NAME, "dev"),
                          (NameOID.COMMON_NAME, "ou:ops")])


def call(phase=REQUEST_PHASE, **doc):
    doc.setdefault("RequestMethod", "GET")
    doc.setdefault("RequestUri", "/_ping")
    return parse_call(json.dumps(doc).encode(), phase)


# ----------------------------------------------------------------------------- parsing

def test_leaf_fields_from_real_der(alice):
    identity = from_certificates([alice.public_bytes(serialization.Encoding.DER)])
    assert identity.name == "alice" and identity.certificate
    assert identity.field("cn") == ("alice",)
    assert identity.field("o") == ("Acme",)
    assert identity.field("ou") == ("ops", "oncall")
    assert identity.field("san:dns") == ("ci.example.com",)  # DNS names in lower case
    assert identity.field("san:email") == ("alice@example.com",)
    assert identity.field("san:uri") == ("spiffe://example.com/ci",)
    assert identity.field("san:ip") == ("::1",)
    assert identity.field("issuer") == ("CN=Corp CA,O=Acme",)


def test_wire_format_is_mobys_base64_pem_and_only_the_leaf_counts(ca, alice):
    # The client may send any certificate after its leaf: an "admin" one, self-signed.
    bogus = make_leaf(make_ca("Evil CA", "Evil"), [(NameOID.ORGANIZATIONAL_UNIT_NAME, "admins"),
                                                    (NameOID.COMMON_NAME, "root")])
    parsed = call(User="alice", UserAuthNMethod="TLS",
                  RequestPeerCertificates=wire(alice, bogus, ca[0]))
    assert parsed.identity.name == "alice"
    assert parsed.identity.field("ou") == ("ops", "oncall")
    assert "admins" not in json.dumps(parsed.identity.as_log())
    # the response phase carries the same certificates: the same identity
    assert call("response", User="alice", RequestPeerCertificates=wire(alice)).identity == \
        parsed.identity


def test_no_certificate_is_anonymous_whatever_user_says():
    for doc in ({}, {"User": "alice", "UserAuthNMethod": "TLS"}, {"RequestPeerCertificates": None},
                {"RequestPeerCertificates": []}):
        identity = call(**doc).identity
        assert identity == Identity.anonymous()
        assert identity.as_log() == {"name": "anonymous", "certificate": False, "fields": {}}


@pytest.mark.parametrize("certs, message", [
    ("abc", "not a list of strings"),
    ([None], "not a list of strings"),
    (["!!!"], "not base64"),
    ([base64.b64encode(b"hello").decode()], "not one PEM CERTIFICATE block"),
    ([base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").decode()],
     "not a valid X.509"),
    ([base64.b64encode(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").decode()],
     "invalid PEM base64"),
    ([base64.b64encode(b"-----BEGIN CERTIFICATE-----\n" + base64.b64encode(b"x" * 20000)
                       + b"\n-----END CERTIFICATE-----\n").decode()], "larger than"),
])
def test_malformed_certificates_are_protocol_errors(certs, message):
    with pytest.raises(ProtocolError, match=message):
        call(User="alice", RequestPeerCertificates=certs)


def test_too_many_certificates_and_a_user_that_is_not_the_cn(alice):
    with pytest.raises(ProtocolError, match="more than 8"):
        call(User="alice", RequestPeerCertificates=wire(*[alice] * 9))
    with pytest.raises(ProtocolError, match="User is not the client certificate's CN"):
        call(User="bob", RequestPeerCertificates=wire(alice))


def test_a_malformed_certificate_is_a_deny(tmp_path):
    plugin = Plugin(policy_dir(tmp_path, "rules: []\n"))
    answer = plugin.handle(REQUEST_PHASE, json.dumps({
        "User": "alice", "RequestMethod": "GET", "RequestUri": "/_ping",
        "RequestPeerCertificates": ["!!!"]}).encode())
    assert answer["Allow"] is False and "[protocol]" in answer["Msg"]


def test_go_reads_the_last_cn(ca):
    leaf = make_leaf(ca, [(NameOID.COMMON_NAME, "admin"), (NameOID.COMMON_NAME, "bob")])
    identity = call(User="bob", RequestPeerCertificates=wire(leaf)).identity
    assert identity.name == "bob" and identity.field("cn") == ("bob",)


def test_a_certificate_without_cn_has_an_empty_name(ca):
    leaf = make_leaf(ca, [(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops")],
                     [x509.UniformResourceIdentifier("spiffe://example.com/ci")])
    identity = call(RequestPeerCertificates=wire(leaf)).identity
    assert identity.name == "" and identity.certificate and identity.field("cn") == ()
    assert not identity.matches(parse_subject("anonymous"))
    assert identity.matches(parse_subject("san:uri:spiffe://example.com/ci"))


# ----------------------------------------------------------------------------- subjects

@pytest.mark.parametrize("text, parsed", [
    ("*", Subject("*")),
    ("anonymous", Subject("anonymous")),
    ("alice", Subject("name", "alice")),
    ("role:ops", Subject("role", "ops")),
    ("cn:host:1", Subject("cn", "host:1")),
    ("o:Acme Corp", Subject("o", "Acme Corp")),
    ("ou:ops", Subject("ou", "ops")),
    ("san:dns:CI.example.com", Subject("san:dns", "ci.example.com")),
    ("san:email:a@example.com", Subject("san:email", "a@example.com")),
    ("san:uri:spiffe://example.com/ci", Subject("san:uri", "spiffe://example.com/ci")),
    ("san:ip:0:0::1", Subject("san:ip", "::1")),
    ("issuer:CN=Corp CA,O=Acme", Subject("issuer", "CN=Corp CA,O=Acme")),
])
def test_subject_syntax(text, parsed):
    assert parse_subject(text) == parsed


@pytest.mark.parametrize("text", ["", "x:y", "host:1", "o:", "ou: ops", " alice", "role:",
                                  "san:dns", "san:ip:not-an-ip", "san:other:x", "a\nb", "cn:a\x00"])
def test_bad_subjects(text):
    with pytest.raises(IdentityError):
        parse_subject(text)


def test_forged_looking_values_match_only_themselves(forger):
    identity = from_certificates([forger.public_bytes(serialization.Encoding.DER)])
    assert identity.field("o") == ("Acme,OU=ops",)
    for text in ("o:Acme", "ou:ops", "role:x", "anonymous"):
        subject = parse_subject(text)
        assert subject.kind == "role" or not identity.matches(subject), text
    assert identity.matches(parse_subject("o:Acme,OU=ops"))
    assert identity.matches(parse_subject("ou:dev"))
    assert identity.matches(parse_subject("cn:ou:ops"))  # its CN, named explicitly


def test_anonymous_has_no_field_and_cn_anonymous_is_not_the_unix_caller(ca):
    anonymous = Identity.anonymous()
    assert anonymous.matches(parse_subject("anonymous"))
    for text in ("cn:anonymous", "o:Acme", "issuer:CN=Corp CA,O=Acme", "alice"):
        assert not anonymous.matches(parse_subject(text))
    leaf = make_leaf(ca, [(NameOID.COMMON_NAME, "anonymous")])
    tls = call(User="anonymous", RequestPeerCertificates=wire(leaf)).identity
    assert tls.certificate and not tls.matches(parse_subject("anonymous"))
    assert tls.matches(parse_subject("cn:anonymous"))


# ----------------------------------------------------------------------------- the log

def test_as_log_and_from_log_round_trip(alice):
    identity = from_certificates([alice.public_bytes(serialization.Encoding.DER)])
    logged = json.loads(json.dumps(identity.as_log()))
    assert logged == {"name": "alice", "certificate": True, "fields": {
        "cn": ["alice"], "o": ["Acme"], "ou": ["ops", "oncall"], "san:dns": ["ci.example.com"],
        "san:email": ["alice@example.com"], "san:uri": ["spiffe://example.com/ci"],
        "san:ip": ["::1"], "issuer": ["CN=Corp CA,O=Acme"]}}
    assert Identity.from_log(logged) == identity
    assert Identity.from_log(Identity.anonymous().as_log()) == Identity.anonymous()
    assert Identity.named("alice") == Identity.from_log(
        {"name": "alice", "certificate": True, "fields": {"cn": ["alice"]}})


@pytest.mark.parametrize("doc", [
    None, "alice", {"name": "anonymous", "certificate": False, "fields": {"o": ["Acme"]}},
    {"name": "alice", "certificate": False, "fields": {}},
    {"name": "alice", "certificate": "yes", "fields": {}},
    {"name": "alice", "certificate": True, "fields": {"o": "Acme"}},
    {"name": "alice", "certificate": True, "fields": {"role": ["admins"]}},
    {"name": "alice", "certificate": True, "fields": {"san:dns": ["CI.example.com"]}},
    {"name": "alice", "certificate": True, "fields": {}, "key": "x"},
])
def test_from_log_refuses_what_as_log_never_writes(doc):
    with pytest.raises(IdentityError):
        Identity.from_log(doc)


def test_the_decision_log_records_the_identity(tmp_path, alice):
    lines = []

    class Logger:
        def info(self, event, **fields):
            lines.append(json.loads(json.dumps(fields, default=str)))

    plugin = Plugin(policy_dir(tmp_path, "rules: []\n"), logger=Logger())
    for doc in ({"User": "alice", "UserAuthNMethod": "TLS",
                 "RequestPeerCertificates": wire(alice)}, {}, {"RequestPeerCertificates": "x"}):
        plugin.handle(REQUEST_PHASE, json.dumps(
            {"RequestMethod": "GET", "RequestUri": "/_ping", **doc}).encode())
    assert lines[0]["identity"]["name"] == "alice"
    assert lines[0]["identity"]["fields"]["ou"] == ["ops", "oncall"]
    assert Identity.from_log(lines[0]["identity"]).field("issuer") == ("CN=Corp CA,O=Acme",)
    assert lines[1]["identity"] == Identity.anonymous().as_log()
    assert lines[2]["identity"] is None and lines[2]["allow"] is False  # unreadable call
    assert "BEGIN CERTIFICATE" not in json.dumps(lines)


# ----------------------------------------------------------------------------- the policy

def policy_dir(tmp_path: Path, rules_yaml: str) -> Policy:
    shutil.copy(SHIPPED / "model.conf", tmp_path / "model.conf")
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(rules_yaml))
    return Policy.load(tmp_path)


POLICY = """\
    version: 1
    roles:
      operators: ["ou:ops", "carol"]
      staff: ["role:operators", "o:Acme"]
      ci: ["san:uri:spiffe://example.com/ci", "san:dns:build.example.com"]
    rules:
      - id: caps
        match: {fact: capability, except: [CHOWN]}
        message: m
        fix: f
      - id: dev-no-host-net
        subjects: ["ou:dev", "anonymous"]
        match: {fact: namespace.network, values: [host]}
        message: m
        fix: f
    exceptions:
      - {id: ops-net-admin, rules: [caps], subjects: ["role:operators"], values: [NET_ADMIN],
         reason: r}
      - {id: staff-chown-all, rules: [caps], subjects: ["role:staff"], values: [SETUID],
         reason: r}
      - {id: ci-sys-time, rules: [caps], subjects: ["role:ci"], values: [SYS_TIME], reason: r}
      - {id: corp-ca-kill, rules: [caps], subjects: ["issuer:CN=Corp CA,O=Acme"],
         values: [KILL], reason: r}
"""


def denied(policy, identity, kind, value):
    result = policy.evaluate(identity, "container.create", "", [Fact(kind, value, "HostConfig.X")])
    return sorted(v.rule for v in result.violations)


def test_roles_and_selectors(tmp_path, ca, alice, forger):
    policy = policy_dir(tmp_path, POLICY)
    ops = from_certificates([alice.public_bytes(serialization.Encoding.DER)])
    forged = from_certificates([forger.public_bytes(serialization.Encoding.DER)])
    other_ca = make_ca("Other CA", "Acme")
    stranger = from_certificates([make_leaf(other_ca, [(NameOID.COMMON_NAME, "dave")])
                                  .public_bytes(serialization.Encoding.DER)])
    anonymous = Identity.anonymous()
    assert policy.subjects.roles_of(ops) == {"operators", "staff", "ci"}
    assert policy.subjects.roles_of(forged) == frozenset()  # O "Acme,OU=ops" is not O "Acme"
    assert policy.subjects.roles_of(Identity.named("carol")) == {"operators", "staff"}
    assert policy.subjects.roles_of(anonymous) == frozenset()
    # The memo is keyed on who is asking: alternate callers on the same fact.
    for _ in range(2):
        assert denied(policy, ops, "capability", "NET_ADMIN") == []
        assert denied(policy, forged, "capability", "NET_ADMIN") == ["caps"]
        assert denied(policy, anonymous, "capability", "NET_ADMIN") == ["caps"]
        assert denied(policy, "carol", "capability", "NET_ADMIN") == []
        assert denied(policy, "alice", "capability", "NET_ADMIN") == ["caps"]  # a CN, no OU
        assert denied(policy, ops, "capability", "SYS_TIME") == []              # san:uri
        assert denied(policy, "carol", "capability", "SYS_TIME") == ["caps"]
        assert denied(policy, forged, "capability", "KILL") == []                # issuer
        assert denied(policy, stranger, "capability", "KILL") == ["caps"]
        assert denied(policy, anonymous, "capability", "KILL") == ["caps"]


def test_a_rule_with_subjects_applies_only_to_them(tmp_path, forger, alice):
    policy = policy_dir(tmp_path, POLICY)
    dev = from_certificates([forger.public_bytes(serialization.Encoding.DER)])
    ops = from_certificates([alice.public_bytes(serialization.Encoding.DER)])
    assert denied(policy, dev, "namespace.network", "host") == ["dev-no-host-net"]
    assert denied(policy, Identity.anonymous(), "namespace.network", "host") == ["dev-no-host-net"]
    assert denied(policy, ops, "namespace.network", "host") == []
    assert denied(policy, dev, "namespace.network", "bridge") == []


@pytest.mark.parametrize("fragment, message", [
    ("roles: {ops: ['ou:']}", "the ou value is empty"),
    ("roles: {ops: ['host:1']}", "a CN with a ':' is written cn:VALUE"),
    ("roles: {ops: ['*']}", "'\\*' is not a member"),
    ("roles: {ops: ['role:ghosts']}", "no role 'ghosts'"),
    ("rules: [{id: x, subjects: ['org:Acme'], match: {fact: capability}, message: m, fix: f}]",
     "rule x: subject 'org:Acme'"),
    ("rules: [{id: x, subjects: [], match: {fact: capability}, message: m, fix: f}]",
     "'subjects' must not be empty"),
    ("rules: [{id: x, match: {fact: capability}, message: m, fix: f}]\n"
     "exceptions: [{id: e, rules: [x], subjects: ['san:ip:x'], reason: r}]",
     "exception e: subject 'san:ip:x'"),
])
def test_bad_subjects_stop_the_load(tmp_path, fragment, message):
    with pytest.raises(PolicyError, match=message):
        policy_dir(tmp_path, f"version: 1\n{fragment}\n")


def test_an_older_model_conf_is_refused(tmp_path):
    (tmp_path / "rules.yaml").write_text("rules: []\n")
    old = (SHIPPED / "model.conf").read_text().replace(
        "subjectMatch(r.sub, p.sub)", '(p.sub == "*" || g(r.sub, p.sub))')
    (tmp_path / "model.conf").write_text(old + "\n[role_definition]\ng = _, _\n")
    with pytest.raises(PolicyError, match="subjectMatch"):
        Policy.load(tmp_path)


def test_shipped_policy_anonymous_is_no_role_member():
    policy = Policy.load(SHIPPED)
    assert policy.subjects.roles_of(Identity.anonymous()) == frozenset()
