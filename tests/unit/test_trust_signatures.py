"""cosign signature verification through check_pull / check_service, against an in-process
registry: every way a signature can be wrong, and the ways it can be right."""

import json

import pytest

from authz.trust import ImageTrust
from tests.support.cosign import Key, SigLayer, payload, write_trust_policy

NAME = "team/app"


@pytest.fixture(scope="module")
def keys():
    return {"team": Key("ecdsa"), "other": Key("ecdsa"), "rsa": Key("rsa"),
            "ed": Key("ed25519"), "old": Key("ecdsa")}


def make_trust(tmp_path, registry, keys: dict, extra: str = "") -> ImageTrust:
    write_trust_policy(tmp_path, keys=keys, insecure=[registry.host], extra=extra)
    return ImageTrust.load(tmp_path, None)


@pytest.fixture
def trust(tmp_path, registry, keys):
    return make_trust(tmp_path, registry, {"team": keys["team"]})


def ref(registry, tail=":1"):
    return f"{registry.host}/{NAME}{tail}"


# ------------------------------------------------------------------ good

def test_valid_signature_by_tag_and_by_digest(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, keys["team"])
    result = trust.check_pull(ref(registry))
    assert result.allowed, result.message
    assert result.rule == "image-signature"
    assert result.digest == img.digest
    assert result.key_fingerprint == keys["team"].fingerprint
    assert result.key_name == "team"
    assert result.reference == ref(registry)
    fields = result.log_fields()
    assert fields["image_digest"] == img.digest and fields["key_fingerprint"] == keys["team"].fingerprint
    by_digest = trust.check_pull(ref(registry, f"@{img.digest}"))
    assert by_digest.allowed and by_digest.digest == img.digest


def test_manifest_requested_with_oci_and_docker_media_types(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1", oci=True)
    pusher.sign(NAME, img.digest, keys["team"])
    assert trust.check_pull(ref(registry)).allowed
    accept = next(r["accept"] for r in registry.requests
                  if r["path"] == f"/v2/{NAME}/manifests/1" and r["method"] == "GET")
    for media_type in ("application/vnd.oci.image.manifest.v1+json",
                       "application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.v2+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json"):
        assert media_type in accept


def test_two_layers_one_valid_is_enough(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["other"]), SigLayer(keys["team"])])
    result = trust.check_pull(ref(registry))
    assert result.allowed and result.key_name == "team"


def test_appended_signature_counts(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, keys["other"])
    assert not trust.check_pull(ref(registry)).allowed
    pusher.sign(NAME, img.digest, keys["team"], append=True)
    assert trust.check_pull(ref(registry)).allowed


def test_key_rotation_old_and_new_both_verify(tmp_path, registry, pusher, keys):
    trust = make_trust(tmp_path, registry, {"old": keys["old"], "team": keys["team"]})
    old_img = pusher.push_image(NAME, "old", seed="old")
    new_img = pusher.push_image(NAME, "new", seed="new")
    pusher.sign(NAME, old_img.digest, keys["old"])
    pusher.sign(NAME, new_img.digest, keys["team"])
    r_old = trust.check_pull(ref(registry, ":old"))
    r_new = trust.check_pull(ref(registry, ":new"))
    assert r_old.allowed and r_old.key_fingerprint == keys["old"].fingerprint
    assert r_new.allowed and r_new.key_fingerprint == keys["team"].fingerprint


@pytest.mark.parametrize("kind", ["rsa", "ed"])
def test_rsa_and_ed25519_keys(tmp_path, registry, pusher, keys, kind):
    trust = make_trust(tmp_path, registry, {kind: keys[kind]})
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, keys[kind])
    result = trust.check_pull(ref(registry))
    assert result.allowed, result.message
    assert result.key_fingerprint == keys[kind].fingerprint


def test_rule_limits_keys(tmp_path, registry, pusher, keys):
    trust = make_trust(tmp_path, registry, {"old": keys["old"], "team": keys["team"]},
                       extra=f"rules:\n  - pattern: {registry.host}/team\n"
                             f"    require: signature\n    keys: [team]\n")
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, keys["old"])
    result = trust.check_pull(ref(registry))
    assert not result.allowed
    assert "team (" in result.expected and "old (" not in result.expected


def test_exact_identity_for_mirrored_images(tmp_path, registry, pusher, keys):
    trust = make_trust(tmp_path, registry, {"team": keys["team"]},
                       extra=f"rules:\n  - pattern: {registry.host}/mirror\n"
                             f"    require: signature\n"
                             f"    identity: {{exact: registry.example.com/team/app}}\n")
    img = pusher.push_image("mirror/app", "1")
    pusher.sign("mirror/app", img.digest,
                [SigLayer(keys["team"], identity="registry.example.com/team/app")])
    assert trust.check_pull(f"{registry.host}/mirror/app:1").allowed
    # the same signature does not do for the team repository itself (identity: repository)
    img2 = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img2.digest, [SigLayer(keys["team"], identity="registry.example.com/team/app")])
    assert not trust.check_pull(ref(registry)).allowed


def test_identity_with_tag_still_names_the_repository(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], identity=f"{registry.host}/{NAME}:1")])
    assert trust.check_pull(ref(registry)).allowed


def test_index_signed_at_pull(registry, pusher, trust, keys):
    amd = pusher.push_image(NAME, None, seed="amd")
    arm = pusher.push_image(NAME, None, seed="arm", architecture="arm64")
    index = pusher.push_index(NAME, "multi", [(amd, "amd64"), (arm, "arm64")])
    assert not trust.check_pull(ref(registry, ":multi")).allowed
    pusher.sign(NAME, index, keys["team"])
    result = trust.check_pull(ref(registry, ":multi"))
    assert result.allowed and result.digest == index


# ------------------------------------------------------------------ bad

def deny(trust, registry, tail=":1"):
    result = trust.check_pull(ref(registry, tail))
    assert not result.allowed, result.message
    assert result.rule == "image-signature"
    assert result.key_fingerprint is None
    assert result.found and result.fix and result.expected
    return result


def test_unsigned(registry, pusher, trust):
    img = pusher.push_image(NAME, "1")
    result = deny(trust, registry)
    assert result.digest == img.digest
    assert "no signature" in result.found
    assert f"cosign sign --key cosign.key --tlog-upload=false {registry.host}/{NAME}@{img.digest}" \
        in result.fix
    assert "exceptions:" in result.fix
    # the message names the key expected and what was found
    assert keys_fp_prefix(trust) in result.message and "no signature" in result.message


def keys_fp_prefix(trust):
    return trust.policy.keys[0].fingerprint[:19]


def test_untrusted_key(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, keys["other"])
    result = deny(trust, registry)
    assert "not signed by a trusted key" in result.found
    assert "`keys:`" in result.fix      # says where to trust it, if it should be


def test_tampered_payload(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], tamper=True)])
    assert "not signed by a trusted key" in deny(trust, registry).found


def test_payload_for_another_digest(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    other = pusher.push_image(NAME, "2", seed="other")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], digest=other.digest)])
    result = deny(trust, registry)
    assert "another image" in result.found and other.digest in result.found


def test_signature_of_one_image_copied_to_another(registry, pusher, trust, keys):
    """The .sig of a signed image, copied under another digest's tag, does not sign it."""
    good = pusher.push_image(NAME, "1")
    evil = pusher.push_image(NAME, "evil", seed="evil")
    sig_digest = pusher.sign(NAME, good.digest, keys["team"])
    body, media_type = registry.manifests[(NAME, sig_digest)]
    registry.put_manifest(NAME, evil.digest.replace(":", "-") + ".sig", body, media_type)
    assert trust.check_pull(ref(registry, ":1")).allowed
    assert "another image" in deny(trust, registry, ":evil").found


def test_payload_for_another_repository(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], identity=f"{registry.host}/team/other")])
    result = deny(trust, registry)
    assert "team/other" in result.found and f"expected {registry.host}/{NAME}" in result.found


def test_identity_on_another_registry(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], identity=f"evil.example.com/{NAME}")])
    assert "evil.example.com" in deny(trust, registry).found


def test_layer_without_signature_or_with_bad_base64(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], no_signature=True),
                                   SigLayer(keys["team"], bad_base64=True)])
    found = deny(trust, registry).found
    assert "layer 1: no dev.cosignproject.cosign/signature" in found
    assert "layer 2: the signature annotation is not base64" in found


def test_wrong_media_type_is_not_a_signature(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], media_type="application/octet-stream")])
    assert "not a cosign simple-signing payload" in deny(trust, registry).found


def test_signed_but_wrong_payload_type(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    data = json.loads(payload(f"{registry.host}/{NAME}", img.digest))
    data["critical"]["type"] = "something else"
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], raw_payload=json.dumps(data).encode())])
    assert "payload type" in deny(trust, registry).found


def test_signed_junk_payload_is_not_parsed_as_valid(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], raw_payload=b"[1, 2, 3]")])
    assert "not a cosign simple-signing payload" in deny(trust, registry).found


def test_registry_serves_bytes_other_than_the_blob_digest(registry, pusher, trust, keys):
    """A signed payload served under another layer's digest: the digest check catches it."""
    img = pusher.push_image(NAME, "1")
    other = pusher.push_image(NAME, "2", seed="2")
    sig_digest = pusher.sign(NAME, other.digest, keys["team"])
    # sign img too, then make the registry serve the payload signed for img where any blob
    # is asked for: signature valid over the bytes, but the bytes are not the layer's blob
    sig_img = pusher.sign(NAME, img.digest, keys["team"])
    layer_img = json.loads(registry.manifests[(NAME, sig_img)][0])["layers"][0]
    layer_other = json.loads(registry.manifests[(NAME, sig_digest)][0])["layers"][0]
    registry.served_blob_override[layer_img["digest"]] = registry.blobs[layer_other["digest"]]
    # the payload for `other` is validly signed, but the annotation of img's layer signs
    # img's payload: so the signature check fails first (different bytes)
    assert not trust.check_pull(ref(registry)).allowed
    # now make the layer's annotation match the served bytes: then only the digest check
    # stands between the bytes and acceptance
    body = json.loads(registry.manifests[(NAME, sig_img)][0])
    body["layers"][0]["annotations"] = layer_other["annotations"]
    registry.put_manifest(NAME, img.digest.replace(":", "-") + ".sig",
                          json.dumps(body).encode(), "application/vnd.oci.image.manifest.v1+json")
    result = deny(trust, registry)
    assert "hash to" in result.found


def test_missing_payload_blob(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    sig = pusher.sign(NAME, img.digest, keys["team"])
    layer = json.loads(registry.manifests[(NAME, sig)][0])["layers"][0]
    del registry.blobs[layer["digest"]]
    assert "missing" in deny(trust, registry).found


def test_oversized_payload_is_not_fetched(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    sig = pusher.sign(NAME, img.digest, keys["team"])
    body = json.loads(registry.manifests[(NAME, sig)][0])
    body["layers"][0]["size"] = 10 * 1024 * 1024
    registry.put_manifest(NAME, img.digest.replace(":", "-") + ".sig",
                          json.dumps(body).encode(), "application/vnd.oci.image.manifest.v1+json")
    blob_gets = len([p for p in registry.paths() if "/blobs/" in p])
    assert "over the" in deny(trust, registry).found
    assert len([p for p in registry.paths() if "/blobs/" in p]) == blob_gets


def test_unknown_tag(registry, trust):
    result = deny(trust, registry, ":nope")
    assert "not found" in result.found and result.digest is None


def test_sha512_digest_is_refused(registry, trust):
    result = trust.check_pull(ref(registry, "@sha512:" + "a" * 128))
    assert not result.allowed and "not sha256" in result.found


# ------------------------------------------------------------------ policy outcomes

def test_reject_exception_accept(tmp_path, registry, pusher, keys):
    trust = make_trust(tmp_path, registry, {"team": keys["team"]}, extra=(
        f"rules:\n"
        f"  - pattern: {registry.host}/banned\n    require: reject\n    reason: known bad\n"
        f"  - pattern: {registry.host}/open\n    require: accept\n    reason: sandbox\n"
        f"exceptions:\n"
        f"  - pattern: {registry.host}/vendor/agent\n    reason: SEC-9 vendor image\n"))
    r = trust.check_pull(f"{registry.host}/banned/x:1")
    assert not r.allowed and r.rule == "image-rejected" and "known bad" in r.found
    assert "trust.yaml" in r.policy
    r = trust.check_pull(f"{registry.host}/vendor/agent:3")
    assert r.allowed and r.rule == "image-unsigned-exception" and "SEC-9" in r.found
    r = trust.check_pull(f"{registry.host}/open/thing")
    assert r.allowed and r.rule == "image-accepted"
    # nothing was asked of the registry for those
    assert not registry.requests


def test_pull_of_every_tag_is_denied_where_signatures_are_required(tmp_path, registry, pusher,
                                                                    trust, keys):
    img = pusher.push_image(NAME, "latest")
    pusher.sign(NAME, img.digest, keys["team"])
    for reference in (ref(registry, ""), ref(registry, ":")):
        result = trust.check_pull(reference)
        assert not result.allowed and "every tag" in result.found
    # a service's bare name means :latest
    assert trust.check_service(ref(registry, "")).allowed


def test_invalid_reference(trust):
    result = trust.check_pull("UPPER/Case:x")
    assert not result.allowed and result.rule == "image-reference"


def test_payload_naming_a_field_twice_is_refused(registry, pusher, trust, keys):
    """cosign reads the payload with Go's rules (case-insensitive keys, duplicates merged):
    a payload with "critical" and "Critical" could mean another digest to cosign."""
    img = pusher.push_image(NAME, "1")
    other = pusher.push_image(NAME, "2", seed="other")
    good = payload(f"{registry.host}/{NAME}", img.digest).decode()
    twice = good[:-1] + ', "Critical": {"image": {"docker-manifest-digest": "%s"}}}' % other.digest
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], raw_payload=twice.encode())])
    assert "names a field twice" in deny(trust, registry).found


def test_payload_keys_match_case_insensitively(registry, pusher, trust, keys):
    img = pusher.push_image(NAME, "1")
    data = payload(f"{registry.host}/{NAME}", img.digest).decode().replace('"critical"', '"CRITICAL"')
    pusher.sign(NAME, img.digest, [SigLayer(keys["team"], raw_payload=data.encode())])
    assert trust.check_pull(ref(registry, ":1")).allowed
