"""trust.yaml: the shipped default, strict validation with file:line, pattern precedence."""

import base64
import json
import os
import textwrap
from pathlib import Path

import pytest

from authz.moby.client import DockerClient
from authz.trust import ImageTrust, TrustPolicyError, load_policy, parse_reference
from authz.trust.credentials import load_credentials
from authz.trust.policy import ACCEPT, REJECT, SIGNATURE, parse_pattern
from tests.support.cosign import Key

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "policies"


@pytest.fixture(scope="module")
def keys():
    return {"old": Key("ecdsa"), "new": Key("ecdsa")}


def write(tmp_path: Path, text: str, keys=None) -> Path:
    for name, key in (keys or {}).items():
        (tmp_path / f"{name}.pub").write_bytes(key.public_pem)
    (tmp_path / "trust.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path


def error_of(tmp_path, text, keys=None) -> str:
    with pytest.raises(TrustPolicyError) as info:
        load_policy(write(tmp_path, text, keys))
    return str(info.value)


# ------------------------------------------------------------------ the shipped file

def test_shipped_policy_denies_everything_and_says_where_to_add_a_key():
    trust = ImageTrust.load(SHIPPED, None)
    p = trust.policy
    assert p.keys == ()
    assert p.default.action == SIGNATURE
    assert p.rules == ()
    keys_line = next(i for i, line in enumerate(
        (SHIPPED / "trust.yaml").read_text().splitlines(), 1) if line.startswith("keys:"))
    assert p.keys_line == keys_line
    warnings = trust.startup_warnings()
    assert any("no trusted key configured" in w and f"line {keys_line}" in w
               and str(SHIPPED / "trust.yaml") in w for w in warnings)
    result = trust.check_pull("127.0.0.1:5000/team/app:1")
    assert not result.allowed
    assert result.rule == "image-signature"
    assert f"{SHIPPED / 'trust.yaml'} line {keys_line}" in result.fix
    assert "exceptions:" in result.fix
    # decided without any network call: no registry is configured or needed
    assert "no trusted key" in result.found


def test_shipped_policy_denies_docker_hub_and_local_names_too():
    trust = ImageTrust.load(SHIPPED, None)
    for ref in ("busybox", "busybox:latest", "docker.io/library/alpine:3",
                "registry.example.com/x@sha256:" + "a" * 64):
        assert not trust.check_pull(ref).allowed


# ------------------------------------------------------------------ a full policy

FULL = """
version: 1
keys:
  - name: old
    file: old.pub
  - name: new
    file: new.pub
default:
  require: reject
  reason: unknown registries are not used
rules:
  - pattern: 127.0.0.1:5000
    require: signature
  - pattern: 127.0.0.1:5000/team
    require: signature
    keys: [new]
  - pattern: 127.0.0.1:5000/team/mirror
    require: signature
    identity: {exact: registry.example.com/team/app}
  - pattern: "*.example.com"
    require: signature
    keys: [old]
  - pattern: registry.example.com
    require: accept
    reason: internal build farm
exceptions:
  - pattern: 127.0.0.1:5000/team/legacy
    reason: vendor image, SEC-1
registries:
  127.0.0.1:5000:
    insecure: true
cache:
  ttl_seconds: 30
timeouts:
  decision: 3
"""


def test_full_policy_precedence(tmp_path, keys):
    p = load_policy(write(tmp_path, FULL, keys))

    def req(ref):
        return p.requirement_for(parse_reference(ref))

    assert req("127.0.0.1:5000/other/x").pattern.text == "127.0.0.1:5000"
    assert [k.name for k in req("127.0.0.1:5000/other/x").keys] == ["old", "new"]
    assert req("127.0.0.1:5000/team").pattern.text == "127.0.0.1:5000/team"
    assert req("127.0.0.1:5000/team/app:1").pattern.text == "127.0.0.1:5000/team"
    assert [k.name for k in req("127.0.0.1:5000/team/app").keys] == ["new"]
    assert req("127.0.0.1:5000/teamx/app").pattern.text == "127.0.0.1:5000"   # component boundary
    mirror = req("127.0.0.1:5000/team/mirror/app")
    assert mirror.identity.exact == "registry.example.com/team/app"
    legacy = req("127.0.0.1:5000/team/legacy:3")
    assert legacy.action == ACCEPT and legacy.origin == "exception"
    assert req("registry.example.com/a").action == ACCEPT           # host beats wildcard
    assert req("REGISTRY.example.com/a").action == ACCEPT           # hosts are case-insensitive
    assert req("other.example.com/a").pattern.text == "*.example.com"
    assert req("a.b.example.com/a").pattern.text == "*.example.com"
    assert req("example.com/a").action == REJECT                    # *.x does not match x
    assert req("busybox").action == REJECT and req("busybox").origin == "default"
    assert p.registry("127.0.0.1:5000").insecure
    assert not p.registry("registry.example.com").insecure
    assert p.cache.ttl_seconds == 30 and p.timeouts.decision == 3
    assert p.exceptions_line == FULL.lstrip("\n").splitlines().index("exceptions:") + 1


def test_key_rotation_both_keys_loaded_with_fingerprints(tmp_path, keys):
    p = load_policy(write(tmp_path, FULL, keys))
    assert {k.name: k.fingerprint for k in p.keys} == {
        "old": keys["old"].fingerprint, "new": keys["new"].fingerprint}
    assert all(k.kind == "ECDSA-P256" for k in p.keys)


def test_inline_pem_and_fingerprint_pin(tmp_path, keys):
    pem = keys["old"].public_pem.decode()
    text = "version: 1\nkeys:\n  - name: inline\n    fingerprint: " + keys["old"].fingerprint \
        + "\n    pem: |\n" + textwrap.indent(pem, "      ")
    p = load_policy(write(tmp_path, text))
    assert p.keys[0].fingerprint == keys["old"].fingerprint
    assert p.keys[0].source.endswith("trust.yaml:5")


def test_startup_warnings_list_exceptions_and_plain_http(tmp_path, keys):
    trust = ImageTrust(load_policy(write(tmp_path, FULL, keys)), DockerClient("unix:///nonexistent.sock"))
    warnings = "\n".join(trust.startup_warnings())
    assert "vendor image, SEC-1" in warnings
    assert "internal build farm" in warnings
    assert "127.0.0.1:5000 is reached over plain HTTP" in warnings
    assert "no trusted key" not in warnings


# ------------------------------------------------------------------ patterns

@pytest.mark.parametrize("text, why", [
    ("team/app", "must start with a registry host"),
    ("127.0.0.1:5000/team/*", "not globs"),
    ("127.0.0.1:5000/team/app:1", "without tag or digest"),
    ("127.0.0.1:5000/team@sha256:" + "a" * 64, "without tag or digest"),
    ("index.docker.io/library/x", "docker.io"),
    ("*.example.com/team", "only `*.domain`"),
    ("127.0.0.1:5000/Team", "invalid repository path"),
    ("", "non-empty"),
])
def test_bad_patterns(text, why):
    with pytest.raises(ValueError, match=None) as info:
        parse_pattern(text)
    assert why in str(info.value)


# ------------------------------------------------------------------ validation errors

@pytest.mark.parametrize("text, line, fragment", [
    ("version: 2\n", 1, "version must be 1"),
    ("keys: []\n", 1, "missing required key 'version'"),
    ("version: 1\nkeyz: []\n", 2, "unknown key 'keyz'"),
    ("version: 1\nkeys: []\nkeys: []\n", 3, "duplicate key 'keys'"),
    ("version: 1\nkeys:\n  - name: a\n", 3, "exactly one of `file`"),
    ("version: 1\nkeys:\n  - name: a\n    file: missing.pub\n", 4, "cannot read"),
    ("version: 1\nkeys: {a: b}\n", 2, "keys must be a list"),
    ("version: 1\ndefault:\n  require: maybe\n", 3, "require must be one of"),
    ("version: 1\ndefault:\n  require: accept\n", 3, "needs a `reason`"),
    ("version: 1\nrules:\n  - pattern: team/app\n    require: reject\n", 3, "registry host"),
    ("version: 1\nrules:\n  - require: reject\n", 3, "missing required key 'pattern'"),
    ("version: 1\nrules:\n  - pattern: a.io\n    require: signature\n    keys: [nope]\n", 5,
     "unknown key 'nope'"),
    ("version: 1\nrules:\n  - pattern: a.io\n    require: reject\n    keys: [x]\n", 5,
     "only applies to require: signature"),
    ("version: 1\nrules:\n  - pattern: a.io\n    require: signature\n    identity: same\n", 5,
     "identity must be"),
    ("version: 1\nrules:\n  - pattern: a.io\n    require: signature\n"
     "    identity: {exact: a.io/x:1}\n", 5, "identity.exact"),
    ("version: 1\nexceptions:\n  - pattern: a.io/x\n", 3, "missing required key 'reason'"),
    ("version: 1\nexceptions:\n  - pattern: a.io/x\n    reason: ''\n", 4, "non-empty string"),
    ("version: 1\nrules:\n  - pattern: a.io/x\n    require: reject\n"
     "exceptions:\n  - pattern: a.io/x\n    reason: r\n", 6, "already used at"),
    ("version: 1\nregistries:\n  a.io:\n    insecure: yes-please\n", 4, "true or false"),
    ("version: 1\nregistries:\n  a.io:\n    insecure: true\n    ca_file: ca.pem\n", 5,
     "exclude each other"),
    ("version: 1\nregistries:\n  a.io:\n    ca_file: none.pem\n", 4, "cannot read"),
    ("version: 1\nregistries:\n  a.io:\n    tls: true\n", 4, "unknown key 'tls'"),
    ("version: 1\ntimeouts:\n  decision: 60\n", 3, "between"),
    ("version: 1\ncache:\n  ttl_seconds: -1\n", 3, "between"),
    ("version: 1\ncredentials_file: nope.json\n", 2, "cannot read"),
    ("version: 1\nkeys: [\n", 3, "not valid YAML"),
    ("", None, "empty file"),
])
def test_validation_errors_name_file_and_line(tmp_path, text, line, fragment):
    message = error_of(tmp_path, text)
    path = str(tmp_path / "trust.yaml")
    assert message.startswith(path), message
    if line is not None:
        assert message.startswith(f"{path}:{line}:"), message
    assert fragment in message, message


# trust.yaml is read by the same strict reader as rules.yaml (policy/yamlfile.py): what YAML
# would take silently is refused, at the line of what is wrong.
@pytest.mark.parametrize("text, line, fragment", [
    ("version: 1\nrules:\n  - pattern: a.io\n    require: signature\n    require: reject\n", 5,
     "duplicate key 'require' (first at line 4)"),
    ("version: 1\nregistries:\n  a.io:\n    insecure: true\n    insecure: false\n", 5,
     "duplicate key 'insecure'"),
    ("version: 1\ndefault: &d\n  require: reject\n  reason: r\nrules:\n  - <<: *d\n"
     "    pattern: a.io\n", 6, "merge key"),
    ("version: 1\nexceptions:\n  - pattern: a.io/x\n    reason: yes\n", 4,
     "reason must be a non-empty string"),
    ("version: 1\nexceptions:\n  - pattern: a.io/x\n    reason: 12\n", 4,
     "reason must be a non-empty string"),
    ("version: 1\nrules:\n  - pattern: 5\n    require: reject\n", 3,
     "pattern must be a non-empty string"),
    ("version: 1\nrules:\n  - pattern: a.io\n    require: on\n", 4,
     "require must be a non-empty string"),
    ("version: 1\nkeys:\n  - name: 0777\n    file: a.pub\n", 3,
     "key name must be a non-empty string"),
    ("version: 1\nrules:\n  - pattern: a.io\n    require: signature\n    keys:\n"
     "      - off\n", 6, "key name must be a non-empty string"),
    ("version: 1\nregistries:\n  1234: {}\n", 3, "registry host must be a non-empty string"),
    ("version: 1\nregistries:\n  a.io:\n    ca_file: 0777\n", 4,
     "ca_file must be a non-empty string"),
    ("version: 1\ncredentials_file: no\n", 2, "credentials_file must be a non-empty string"),
    ("version: 1\nexceptions:\n  - pattern: a.io/x\n    reason: 2024-13-45\n", 4,
     "not valid YAML"),
    ("version: 1\n__line__: 7\n", 2, "unknown key '__line__'"),
])
def test_strict_yaml_refusals_name_file_and_line(tmp_path, text, line, fragment):
    message = error_of(tmp_path, text)
    path = str(tmp_path / "trust.yaml")
    assert message.startswith(f"{path}:{line}: "), message
    assert message.count(path) == 1, message
    assert fragment in message, message


def test_lines_follow_values_in_block_lists(tmp_path, keys):
    """An item of a block list is named by its own line, not its list's."""
    msg = error_of(tmp_path, "version: 1\nkeys:\n  - name: old\n    file: old.pub\nrules:\n"
                             "  - pattern: a.io\n    require: signature\n    keys:\n"
                             "      - old\n      - nope\n", keys)
    assert f"{tmp_path / 'trust.yaml'}:10: unknown key 'nope'" in msg, msg


def test_private_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    key = Key()
    (tmp_path / "cosign.key").write_bytes(key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    message = error_of(tmp_path, "version: 1\nkeys:\n  - name: a\n    file: cosign.key\n")
    assert ":4:" in message and "PRIVATE key" in message


def test_unsupported_and_weak_keys(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    (tmp_path / "k1.pub").write_bytes(k1.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "not supported" in error_of(tmp_path, "version: 1\nkeys:\n  - name: a\n    file: k1.pub\n")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    (tmp_path / "small.pub").write_bytes(small.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "too small" in error_of(tmp_path, "version: 1\nkeys:\n  - name: a\n    file: small.pub\n")
    (tmp_path / "junk.pub").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert "not a valid PEM" in error_of(tmp_path, "version: 1\nkeys:\n  - name: a\n    file: junk.pub\n")


def test_wrong_fingerprint_and_duplicate_key(tmp_path, keys):
    msg = error_of(tmp_path, "version: 1\nkeys:\n  - name: old\n    file: old.pub\n"
                             "    fingerprint: sha256:00\n", keys)
    assert ":5:" in msg and keys["old"].fingerprint in msg
    msg = error_of(tmp_path, "version: 1\nkeys:\n  - name: a\n    file: old.pub\n"
                             "  - name: b\n    file: old.pub\n", keys)
    assert "same key as another" in msg


def test_missing_file(tmp_path):
    with pytest.raises(TrustPolicyError, match="missing"):
        load_policy(tmp_path)


# ------------------------------------------------------------------ credentials

def test_credentials_file_formats_and_redaction(tmp_path):
    creds = {"auths": {
        "127.0.0.1:5000": {"auth": base64.b64encode(b"alice:pw:with:colons").decode()},
        "https://index.docker.io/v1/": {"username": "bob", "password": "hunter2"},
        "http://reg.example.com/": {"auth": base64.b64encode(b"carol:x").decode()},
    }}
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(creds))
    loaded = load_credentials(path)
    assert loaded["127.0.0.1:5000"].password == "pw:with:colons"
    assert loaded["docker.io"].username == "bob"
    assert loaded["reg.example.com"].username == "carol"
    assert "hunter2" not in repr(loaded) and "hunter2" not in str(loaded["docker.io"])


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ('{"auths": []}', "expected an object"),
    ('{"auths": {"h": {"auth": "@@@"}}}', "not base64"),
    ('{"auths": {"h": {"identitytoken": "secret-token"}}}', "no username/password"),
])
def test_bad_credentials_never_echo_content(tmp_path, content, fragment):
    (tmp_path / "auth.json").write_text(content)
    message = error_of(tmp_path, "version: 1\ncredentials_file: auth.json\n")
    assert ":2:" in message and fragment in message
    assert "secret-token" not in message and "@@@" not in message


def test_credentials_file_mode_warning(tmp_path):
    (tmp_path / "auth.json").write_text('{"auths": {}}')
    os.chmod(tmp_path / "auth.json", 0o644)
    trust = ImageTrust.load(write(tmp_path, "version: 1\ncredentials_file: auth.json\n"), None)
    assert any("chmod 600" in w for w in trust.startup_warnings())
    os.chmod(tmp_path / "auth.json", 0o600)
    trust = ImageTrust.load(tmp_path, None)
    assert not any("chmod 600" in w for w in trust.startup_warnings())


# ------------------------------------------------------------------ files others could rewrite

def _outside(tmp_path: Path, name: str = "outside") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return directory


def _key_yaml(path: Path) -> str:
    return f"version: 1\nkeys:\n  - name: team\n    file: {path}\n"


def _ca(path: Path) -> None:
    path.write_text("-----BEGIN CERTIFICATE-----\n")


@pytest.mark.parametrize("make_open, why", [
    (lambda f: os.chmod(f, 0o666), "writable by every user"),
    (lambda f: os.chown(f, 1000, 1000), "belongs to uid 1000"),
    (lambda f: os.chown(f.parent, 1000, 1000), "belongs to uid 1000"),
    (lambda f: os.chmod(f.parent, 0o777), "writable by every user"),
])
def test_files_trust_yaml_names_outside_the_policy_must_be_roots(tmp_path, keys, make_open,
                                                                 why):
    """A key file (or CA bundle, or registry logins) outside the policy directory decides
    what image trust accepts: one a local user can rewrite or replace is refused, naming
    trust.yaml's line, at load (so at serve, reload and lint alike)."""
    policy = _outside(tmp_path, "policy")
    key = _outside(tmp_path) / "team.pub"
    key.write_bytes(keys["new"].public_pem)
    load_policy(write(policy, _key_yaml(key)))  # root's: loads
    make_open(key)
    message = error_of(policy, _key_yaml(key))
    assert why in message and "trust.yaml:4" in message and "key 'team'" in message


def test_a_symlinked_key_is_judged_where_it_is_named_and_where_it_is(tmp_path, keys):
    """A root-owned key reached through a symlink in a directory anyone can write (no sticky
    bit) is refused: the symlink can be swapped. So is a symlink to a key a user owns."""
    policy = _outside(tmp_path, "policy")
    real = _outside(tmp_path, "real") / "team.pub"
    real.write_bytes(keys["new"].public_pem)
    shared = _outside(tmp_path, "shared")
    (shared / "team.pub").symlink_to(real)
    load_policy(write(policy, _key_yaml(shared / "team.pub")))
    os.chmod(shared, 0o777)
    assert "writable by every user" in error_of(policy, _key_yaml(shared / "team.pub"))
    os.chmod(shared, 0o755)
    os.chown(real, 1000, 1000)
    assert "belongs to uid 1000" in error_of(policy, _key_yaml(shared / "team.pub"))


def test_a_key_inside_the_policy_that_a_user_owns_is_refused(tmp_path, keys):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team.pub").write_bytes(keys["new"].public_pem)
    text = "version: 1\nkeys:\n  - name: team\n    file: keys/team.pub\n"
    load_policy(write(tmp_path, text))
    os.chown(tmp_path / "keys" / "team.pub", 1000, 1000)
    assert "belongs to uid 1000" in error_of(tmp_path, text)


def test_ca_file_and_credentials_file_others_could_rewrite_are_refused(tmp_path):
    policy = _outside(tmp_path, "policy")
    outside = _outside(tmp_path)
    ca, auth = outside / "ca.pem", outside / "auth.json"
    _ca(ca)
    auth.write_text('{"auths": {}}')
    os.chmod(auth, 0o600)
    text = (f"version: 1\nregistries:\n  127.0.0.1:5000:\n    ca_file: {ca}\n"
            f"credentials_file: {auth}\n")
    load_policy(write(policy, text))
    os.chmod(ca, 0o646)
    message = error_of(policy, text)
    assert "ca_file" in message and "writable by every user" in message
    os.chmod(ca, 0o644)
    os.chown(auth, 1000, 1000)
    message = error_of(policy, text)
    assert "credentials_file" in message and "belongs to uid 1000" in message
