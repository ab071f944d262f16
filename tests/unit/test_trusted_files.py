"""Files that decide (rules.yaml, model.conf, trust.yaml and the key, CA and login files it
names) are read once, through a path no one but root could change, and only those bytes
are used (authz/ownership.py ``open_verified``): red team findings of issue 11's last
session. Run as root; uid 1000 plays the local user."""

import os
import shutil
import stat
from pathlib import Path

import pytest

from authz.decoding.facts import Fact
from authz.ownership import NotTrusted, open_verified, read_verified
from authz.policy import Policy, PolicyError
from authz.reload import load_bundle
from authz.trust import TrustPolicyError, load_policy
from tests.support.cosign import Key

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
USER = 1000


@pytest.fixture
def lab(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, USER, USER)
    return tmp_path


def _policy(lab: Path) -> Path:
    policy = lab / "policy"
    shutil.copytree(SHIPPED, policy, ignore=shutil.ignore_patterns("tests"))
    return policy


# ------------------------------------------------------------------ open_verified itself

def test_every_component_is_checked_where_it_really_is(lab):
    (lab / "a" / "b").mkdir(parents=True)
    (lab / "a" / "b" / "f").write_text("root's\n")
    (lab / "a" / "lb").symlink_to("b")
    (lab / "abs").symlink_to(lab / "a" / "b" / "f")
    for path in (lab / "a" / "b" / "f", lab / "a" / "lb" / "f", lab / "abs",
                 f"{lab}/a/b/../b/f"):
        assert read_verified(str(path)) == b"root's\n"
    # Through a user's directory, however it is reached: named, by a symlink, or in the
    # middle of a chain of symlinks that neither starts nor ends there.
    (lab / "home" / "cur").symlink_to(lab / "a" / "b" / "f")
    os.lchown(lab / "home" / "cur", USER, USER)
    (lab / "a" / "chain").symlink_to(lab / "home" / "cur")
    for path in (lab / "home" / "cur", lab / "a" / "chain"):
        with pytest.raises(NotTrusted, match=f"{lab / 'home'} belongs to uid {USER}"):
            read_verified(str(path))


def test_a_users_symlink_in_a_sticky_directory_is_refused(lab):
    sticky = lab / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (lab / "f").write_text("x")
    (sticky / "f").symlink_to(lab / "f")
    assert read_verified(str(sticky / "f")) == b"x"  # root's symlink: fine
    os.lchown(sticky / "f", USER, USER)
    with pytest.raises(NotTrusted, match="belongs to uid 1000"):
        read_verified(str(sticky / "f"))


@pytest.mark.parametrize("make", ["fifo", "directory", "loop", "user-file", "world-writable"])
def test_what_is_not_a_root_regular_file_is_refused_without_waiting(lab, make):
    path = lab / "x"
    if make == "fifo":
        os.mkfifo(path)  # opened without blocking, then refused
    elif make == "directory":
        path.mkdir()
    elif make == "loop":
        path.symlink_to(path)
    else:
        path.write_text("x")
        if make == "user-file":
            os.chown(path, USER, USER)
        else:
            os.chmod(path, 0o666)
    with pytest.raises(OSError):
        read_verified(str(path))


def test_a_directory_opens_as_one(lab):
    fd = open_verified(str(lab), directory=True)
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode) and "home" in os.listdir(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the policy

@pytest.mark.parametrize("how", ["user-owned", "symlink-into-a-users-directory"])
def test_rules_yaml_a_user_could_swap_is_refused_by_the_loader_itself(lab, how):
    """refuse_open_policy checks once, before load_bundle's attempts: a user who swaps
    rules.yaml between them had their own file loaded. The loader itself now refuses any
    file it reads that way, whenever it reads it."""
    policy = _policy(lab)
    rules = policy / "rules.yaml"
    if how == "user-owned":
        os.chown(rules, USER, USER)
    else:
        shutil.move(rules, lab / "home" / "rules.yaml")
        rules.symlink_to(lab / "home" / "rules.yaml")
    with pytest.raises(PolicyError, match="someone other than root could rewrite it"):
        Policy.load(policy)
    with pytest.raises(Exception, match="uid 1000"):
        load_bundle(policy, None, settle=0)


def test_model_conf_is_read_once_and_rebuilds_compile_that_text(lab):
    """Each exception's expiry rebuilds the enforcers in every worker: from the text read at
    load, not from model.conf as it is by then."""
    policy = _policy(lab)
    loaded = Policy.load(policy)
    (policy / "model.conf").write_text("[request_definition]\nr = garbage\n")
    loaded._build(loaded._clock())
    answers = loaded.explain_fact("anonymous", "container.create", "",
                                  Fact("privileged", "true", "x"))
    assert ("privileged", "deny") in {(rule.id, effect) for rule, effect, _ in answers}


def test_model_conf_a_user_could_swap_is_refused(lab):
    policy = _policy(lab)
    os.chown(policy / "model.conf", USER, USER)
    with pytest.raises(PolicyError, match="model.conf: someone other than root"):
        Policy.load(policy)


# ------------------------------------------------------------------ image trust's files

def test_trust_yaml_a_user_owns_is_refused(lab):
    policy = _policy(lab)
    os.chown(policy / "trust.yaml", USER, USER)
    with pytest.raises(TrustPolicyError, match="someone other than root could rewrite it"):
        load_policy(policy)


def test_ca_file_through_a_users_symlink_midway_is_refused(lab):
    pki, etc = lab / "pki", lab / "etc"
    pki.mkdir()
    etc.mkdir()
    (pki / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (lab / "home" / "cur").symlink_to(pki / "ca.pem")
    os.lchown(lab / "home" / "cur", USER, USER)
    (etc / "ca.pem").symlink_to(lab / "home" / "cur")
    (etc / "trust.yaml").write_text(f"version: 1\nregistries:\n  r.io:\n    ca_file: {etc}/ca.pem\n")
    with pytest.raises(TrustPolicyError, match="trust.yaml:4.*uid 1000"):
        load_policy(etc)


def test_the_ca_bundle_and_logins_used_are_the_bytes_loaded(lab):
    """requests opened ca_file by path at every connection, and ImageTrust read
    credentials_file again after the check: both now use what was read and checked once."""
    from authz.trust import ImageTrust

    etc = lab / "etc"
    etc.mkdir()
    (etc / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nfirst\n")
    (etc / "auth.json").write_text('{"auths": {"r.io": {"username": "u", "password": "p1"}}}')
    os.chmod(etc / "auth.json", 0o600)
    (etc / "trust.yaml").write_text("version: 1\nregistries:\n  r.io: {ca_file: ca.pem}\n"
                                    "credentials_file: auth.json\n")
    trust = ImageTrust(load_policy(etc), None)
    (etc / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nswapped\n")
    (etc / "auth.json").write_text('{"auths": {"r.io": {"username": "u", "password": "p2"}}}')
    bundle = trust.policy.registries["r.io"].ca_bundle
    with open(bundle, "rb") as f:
        assert f.read() == b"-----BEGIN CERTIFICATE-----\nfirst\n"
    with pytest.raises(OSError):  # sealed: not even this process can change it
        with open(bundle, "r+b") as f:
            f.write(b"x")
    assert trust.policy.credentials["r.io"].password == "p1"
    assert trust._remote.registry._credentials["r.io"].password == "p1"


def test_key_files_read_are_the_ones_checked(lab):
    key = Key("ecdsa")
    etc = lab / "etc"
    etc.mkdir()
    (etc / "team.pub").write_bytes(key.public_pem)
    (etc / "trust.yaml").write_text("version: 1\nkeys:\n  - {name: team, file: team.pub}\n")
    assert load_policy(etc).keys[0].fingerprint == key.fingerprint
    shutil.move(etc / "team.pub", lab / "home" / "team.pub")
    (etc / "team.pub").symlink_to(lab / "home" / "team.pub")
    with pytest.raises(TrustPolicyError, match="uid 1000"):
        load_policy(etc)
