"""Image trust against a real registry: Debian's docker-registry (distribution v2.8).

The signer pushes a small image (config + layer) and cosign-format signatures with the
registry's own upload API; the verifier reads them back as dockerd's pulls would.
"""

import json

import pytest

from authz.trust import ImageTrust
from tests.support.cosign import Key, Pusher, SigLayer, write_trust_policy
from tests.support.registry import RealRegistry, bcrypt_htpasswd, make_tls_cert, registry_missing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(registry_missing() is not None, reason=registry_missing() or ""),
]


@pytest.fixture(scope="module")
def keys():
    return {"team": Key("ecdsa"), "rotated": Key("ecdsa"), "stranger": Key("ecdsa")}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = RealRegistry(tmp_path_factory.mktemp("registry"))
    reg.start()
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def pusher(registry):
    return Pusher(registry.url)


@pytest.fixture
def trust(tmp_path, registry, keys):
    write_trust_policy(tmp_path, keys={"team": keys["team"], "rotated": keys["rotated"]},
                       insecure=[registry.host],
                       extra=(f"exceptions:\n  - pattern: {registry.host}/vendor\n"
                              f"    reason: vendor images are unsigned (test)\n"))
    return ImageTrust.load(tmp_path, None)


def test_signed_image_pull_allowed_by_tag_and_digest(registry, pusher, trust, keys):
    img = pusher.push_image("team/app", "1", seed="signed")
    pusher.sign("team/app", img.digest, keys["team"])
    result = trust.check_pull(f"{registry.host}/team/app:1")
    assert result.allowed, result.message
    assert result.digest == img.digest
    assert result.key_fingerprint == keys["team"].fingerprint
    assert trust.check_pull(f"{registry.host}/team/app@{img.digest}").allowed
    assert trust.check_service(f"{registry.host}/team/app:1@{img.digest}").allowed


def test_unsigned_image_denied(registry, pusher, trust):
    img = pusher.push_image("team/unsigned", "1", seed="unsigned")
    result = trust.check_pull(f"{registry.host}/team/unsigned:1")
    assert not result.allowed
    assert result.digest == img.digest
    assert "no signature" in result.found
    assert f"cosign sign --key cosign.key --tlog-upload=false {registry.host}/team/unsigned@{img.digest}" \
        in result.fix


def test_untrusted_key_and_tampered_payload_denied(registry, pusher, trust, keys):
    img = pusher.push_image("team/bad", "1", seed="bad")
    pusher.sign("team/bad", img.digest, [SigLayer(keys["stranger"]),
                                         SigLayer(keys["team"], tamper=True)])
    result = trust.check_pull(f"{registry.host}/team/bad:1")
    assert not result.allowed
    assert "layer 1: not signed by a trusted key" in result.found
    assert "layer 2: not signed by a trusted key" in result.found


def test_wrong_digest_and_wrong_identity_denied(registry, pusher, trust, keys):
    img = pusher.push_image("team/mixed", "1", seed="mixed")
    other = pusher.push_image("team/mixed", "2", seed="mixed-other")
    pusher.sign("team/mixed", img.digest, [
        SigLayer(keys["team"], digest=other.digest),
        SigLayer(keys["team"], identity=f"{registry.host}/team/elsewhere"),
    ])
    result = trust.check_pull(f"{registry.host}/team/mixed:1")
    assert not result.allowed
    assert "another image" in result.found and "team/elsewhere" in result.found


def test_one_valid_layer_among_several_and_rotation(registry, pusher, trust, keys):
    img = pusher.push_image("team/multi", "1", seed="multi")
    pusher.sign("team/multi", img.digest, [SigLayer(keys["stranger"]), SigLayer(keys["rotated"])])
    result = trust.check_pull(f"{registry.host}/team/multi:1")
    assert result.allowed and result.key_name == "rotated"


def test_signed_index(registry, pusher, trust, keys):
    amd = pusher.push_image("team/index", None, seed="idx-amd")
    arm = pusher.push_image("team/index", None, seed="idx-arm", architecture="arm64")
    index = pusher.push_index("team/index", "1", [(amd, "amd64"), (arm, "arm64")])
    assert not trust.check_pull(f"{registry.host}/team/index:1").allowed
    pusher.sign("team/index", index, keys["team"])
    result = trust.check_pull(f"{registry.host}/team/index:1")
    assert result.allowed and result.digest == index


def test_exception_and_all_tags(registry, pusher, trust, keys):
    pusher.push_image("vendor/agent", "1", seed="vendor")
    r = trust.check_pull(f"{registry.host}/vendor/agent:1")
    assert r.allowed and r.rule == "image-unsigned-exception"
    r = trust.check_pull(f"{registry.host}/team/app")       # every tag: not verifiable
    assert not r.allowed and "every tag" in r.found


def test_registry_down_cached_and_uncached(tmp_path, keys):
    with RealRegistry(tmp_path / "reg") as reg:
        pusher = Pusher(reg.url)
        a = pusher.push_image("team/a", "1", seed="a")
        b = pusher.push_image("team/b", "1", seed="b")
        pusher.sign("team/a", a.digest, keys["team"])
        pusher.sign("team/b", b.digest, keys["team"])
        write_trust_policy(tmp_path / "p", keys={"team": keys["team"]}, insecure=[reg.host])
        trust = ImageTrust.load(tmp_path / "p", None)
        assert trust.check_pull(f"{reg.host}/team/a@{a.digest}").allowed
        reg.stop()
        cached = trust.check_pull(f"{reg.host}/team/a@{a.digest}")
        assert cached.allowed and cached.cached
        down = trust.check_pull(f"{reg.host}/team/b@{b.digest}")
        assert not down.allowed and "unreachable" in down.found


@pytest.mark.skipif(bcrypt_htpasswd("u", "p") is None, reason="no bcrypt htpasswd available")
def test_htpasswd_registry_with_credentials_file(tmp_path, keys):
    with RealRegistry(tmp_path / "reg", htpasswd=("ci", "registry-pw-123")) as reg:
        pusher = Pusher(reg.url, auth=("ci", "registry-pw-123"))
        img = pusher.push_image("team/private", "1", seed="private")
        pusher.sign("team/private", img.digest, keys["team"])
        creds = tmp_path / "auth.json"
        creds.write_text(json.dumps({"auths": {reg.host: {"username": "ci",
                                                          "password": "registry-pw-123"}}}))
        creds.chmod(0o600)
        write_trust_policy(tmp_path / "with", keys={"team": keys["team"]}, insecure=[reg.host],
                           extra=f"credentials_file: {creds}\n")
        ok = ImageTrust.load(tmp_path / "with", None).check_pull(f"{reg.host}/team/private:1")
        assert ok.allowed, ok.message
        assert "registry-pw-123" not in json.dumps(ok.log_fields()) + ok.message
        write_trust_policy(tmp_path / "without", keys={"team": keys["team"]}, insecure=[reg.host])
        denied = ImageTrust.load(tmp_path / "without", None).check_pull(f"{reg.host}/team/private:1")
        assert not denied.allowed and "refused" in denied.found


def test_tls_registry_with_ca_file(tmp_path, keys):
    ca, cert, key = make_tls_cert(tmp_path / "tls")
    with RealRegistry(tmp_path / "reg", tls=(cert, key)) as reg:
        pusher = Pusher(reg.url, verify=str(ca))
        img = pusher.push_image("team/tls", "1", seed="tls")
        pusher.sign("team/tls", img.digest, keys["team"])
        write_trust_policy(tmp_path / "p", keys={"team": keys["team"]},
                           extra=f'registries:\n  "{reg.host}":\n    ca_file: {ca}\n')
        ok = ImageTrust.load(tmp_path / "p", None).check_pull(f"{reg.host}/team/tls:1")
        assert ok.allowed, ok.message
        write_trust_policy(tmp_path / "q", keys={"team": keys["team"]})
        bad = ImageTrust.load(tmp_path / "q", None).check_pull(f"{reg.host}/team/tls:1")
        assert not bad.allowed and "not trusted" in bad.found
