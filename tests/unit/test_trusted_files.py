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


def _policy_with_key_outside(lab: Path) -> tuple[Path, Path]:
    """A policy whose trust.yaml names a key file in lab/keys: (that directory, the policy)."""
    keys = lab / "keys"
    keys.mkdir()
    (keys / "team.pub").write_bytes(Key("ecdsa").public_pem)
    policy = _policy(lab)
    (policy / "trust.yaml").write_text(f"version: 1\nkeys:\n  - {{name: team, file: {keys}/team.pub}}\n")
    return keys, policy


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


# ------------------------------------------------------------------ red team, round 2

def test_a_trust_yaml_that_is_a_symlink_to_nothing_is_refused_not_trust_off(lab):
    """Whoever controls where a trust.yaml symlink leads removed the file there: image
    trust was then silently off (load_trust asked is_file()). Refused at every step now."""
    from authz.plugin import load_trust
    from authz.reload import OpenPolicy, refuse_open_policy

    policy = _policy(lab)
    (policy / "trust.yaml").unlink()
    (policy / "trust.yaml").symlink_to(lab / "gone" / "trust.yaml")
    with pytest.raises(OpenPolicy, match="symbolic link that leads nowhere"):
        refuse_open_policy(policy)
    with pytest.raises(TrustPolicyError):
        load_trust(policy, None)
    with pytest.raises(Exception):
        load_bundle(policy, None, settle=0)


def test_serve_says_when_image_trust_is_off(lab):
    from authz.plugin import Plugin

    policy = _policy(lab)
    (policy / "trust.yaml").unlink()
    assert any("image trust is OFF" in w for w in Plugin(Policy.load(policy)).warnings())


def test_no_bind_reaches_a_file_image_trust_is_loaded_from(lab):
    """A key, CA bundle or logins file named outside the policy directory (say under /srv,
    an allowed bind root): a container binding its directory writes it as root, and so
    chooses the key at the next reload. The floor now protects those files (as named, each
    symlink followed, where they are), in serve and in policy test / explain alike; their
    siblings stay bindable (a symlink directly in /srv must not close all of /srv), and a
    path spelled "//x" protects /x, not everything."""
    from authz.plugin import Plugin, PluginConfig, load_trust
    from authz.policy.floor import floor_violations
    from authz.policytools.casetest import serve_floor

    key = Key("ecdsa")
    srv = lab / "srv"
    (srv / "pki" / "keys").mkdir(parents=True)
    (srv / "data").mkdir()
    (srv / "pki" / "keys" / "team.pub").write_bytes(key.public_pem)
    (srv / "link").symlink_to(srv / "pki" / "keys")
    policy = _policy(lab)
    (policy / "trust.yaml").write_text(
        f"version: 1\nkeys:\n  - {{name: team, file: /{srv}/link/team.pub}}\n")
    (lab / "run").mkdir()  # the socket's directory is protected: not lab itself
    config = PluginConfig(policy_dir=policy, socket_path=str(lab / "run" / "p.sock"))
    plugin = Plugin.build(config)

    def denied(floor, path):
        return bool(floor_violations("container.create", [Fact("host-path", str(path), "x")],
                                     floor))

    for floor in (plugin.floor, serve_floor(policy)):
        for path in (srv / "pki" / "keys", srv / "pki", srv, srv / "link",
                     srv / "pki" / "keys" / "team.pub"):
            assert denied(floor, path), path
        assert not denied(floor, srv / "data") and not denied(floor, lab / "elsewhere")
    assert load_trust(policy, None).policy.files[0] == str(policy / "trust.yaml")


def test_the_revision_reads_each_file_bounded_and_checked(lab):
    """policy_revision read every file of the tree by path, whole: a symlink in the policy
    to a file a user grows made every load read gigabytes."""
    from authz.ownership import TooLarge
    from authz.policy.engine import policy_revision

    policy = _policy(lab)
    big = lab / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(17 * 1024 * 1024)  # sparse
    (policy / "extra.yaml").symlink_to(big)
    with pytest.raises(TooLarge):
        policy_revision(policy)
    (policy / "extra.yaml").unlink()
    (lab / "home" / "extra.yaml").write_text("x")
    (policy / "extra.yaml").symlink_to(lab / "home" / "extra.yaml")
    with pytest.raises(NotTrusted):
        policy_revision(policy)


def test_init_makes_no_directory_before_the_path_is_checked(lab):
    """Root's `policy init u/evil/nologin/pol` with u/evil a user's symlink to /etc made
    /etc/nologin (pam_nologin: no more logins) before refusing."""
    from authz.cli import shipped_policy_dir
    from authz.policytools.init import InitRefused, init_policy

    rootonly = lab / "rootonly"
    rootonly.mkdir()
    (lab / "home" / "evil").symlink_to(rootonly)
    os.lchown(lab / "home" / "evil", USER, USER)
    with pytest.raises(InitRefused, match="uid 1000"):
        init_policy(lab / "home" / "evil" / "nologin" / "pol", shipped_policy_dir())
    assert list(rootonly.iterdir()) == []
    made = lab / "a" / "b" / "pol"  # missing levels under a checked directory are made
    init_policy(made, shipped_policy_dir())
    assert (made / "rules.yaml").is_file() and stat.S_IMODE(os.stat(lab / "a").st_mode) == 0o755


def test_lint_judges_files_as_serve_does_whoever_runs_it(lab, monkeypatch):
    """trusted_owners() is root and the caller: right for policy test, wrong for lint,
    which must fail exactly when serve (root) would refuse."""
    from authz.ownership import as_served, trusted_owners
    from authz.policytools.lint import lint

    monkeypatch.setattr(os, "geteuid", lambda: USER)
    assert trusted_owners() == {0, USER}
    with as_served():
        assert trusted_owners() == {0}
    key = Key("ecdsa")
    policy = _policy(lab)
    (lab / "k").mkdir()
    (lab / "k" / "team.pub").write_bytes(key.public_pem)
    os.chown(lab / "k" / "team.pub", USER, USER)
    (policy / "trust.yaml").write_text(f"version: 1\nkeys:\n  - {{name: team, file: {lab}/k/team.pub}}\n")
    load_policy(policy)  # the caller's own key: fine for the offline tools
    report = lint(policy)
    assert any("uid 1000" in f.message for f in report.findings if f.severity == "error"), \
        [f.message for f in report.findings]


def test_the_ca_bundle_memfd_is_not_inherited_across_exec(lab):
    import fcntl

    from authz.trust.policyfile import pinned_bundle

    path = pinned_bundle(b"-----BEGIN CERTIFICATE-----\ncloexec test\n")
    fd = int(path.rsplit("/", 1)[1])
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_a_file_name_ending_in_a_slash_is_refused(lab):
    (lab / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        read_verified(f"{lab}/f/")


def test_a_key_rewritten_outside_the_policy_changes_the_revision_in_force(lab):
    """Red team round 3: the revision hashed the policy directory only, so a key file
    outside it (rewritten by a container that had bound it before it was named) changed
    what is trusted under the same revision: the decision log could not tell. The revision
    in force (serve, reload, lint alike) now covers every file trust.yaml names."""
    from authz.policytools.lint import lint

    keys, policy = _policy_with_key_outside(lab)
    first = load_bundle(policy, None, settle=0).policy.revision
    assert lint(policy).revision == first
    (keys / "team.pub").write_bytes(Key("ecdsa").public_pem)
    second = load_bundle(policy, None, settle=0).policy.revision
    assert second != first and lint(policy).revision == second
    # Without files named, the revision is the directory's, as before.
    (policy / "trust.yaml").write_text("version: 1\n")
    from authz.policy.engine import policy_revision
    assert load_bundle(policy, None, settle=0).policy.revision == policy_revision(policy)


def test_init_refuses_a_level_someone_else_made_meanwhile(lab, monkeypatch):
    """Red team round 3: in a sticky directory another user can make the missing level
    between init's mkdir and its open (EEXIST, then their directory was used)."""
    from authz.cli import shipped_policy_dir
    from authz.policytools import init as init_mod

    sticky = lab / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    real_mkdir = os.mkdir

    def theirs_first(name, mode=0o777, *, dir_fd=None):
        if name == "a" and dir_fd is not None:
            real_mkdir(name, 0o755, dir_fd=dir_fd)
            os.chown(sticky / "a", USER, USER)  # the user won the race
        return real_mkdir(name, mode, dir_fd=dir_fd)

    monkeypatch.setattr(init_mod.os, "mkdir", theirs_first)
    with pytest.raises(init_mod.InitRefused, match="uid 1000"):
        init_mod.init_policy(sticky / "a" / "pol", shipped_policy_dir())
    assert list((sticky / "a").iterdir()) == []


def test_lint_reports_what_it_cannot_read(lab, monkeypatch):
    """A directory of the policy lint cannot list (run as a user; serve, as root, can) was
    skipped silently: lint said OK where serve refused. Now it says it could not check."""
    from authz.reload import OpenPolicy, refuse_open_policy

    policy = _policy(lab)
    (policy / "private").mkdir(mode=0o700)
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # what a user meets in a 0700 root directory
    with pytest.raises(OpenPolicy, match="private cannot be checked: Permission denied"):
        refuse_open_policy(policy)


def test_a_reload_that_turns_trust_off_says_so(lab, monkeypatch, capsys):
    from authz import reload as reload_mod
    from authz.reload import PolicyHolder

    monkeypatch.setattr(reload_mod, "STATE_DIR", lab / "state")
    policy = _policy(lab)
    holder = PolicyHolder(policy, None, str(lab / "t.sock"))
    (policy / "trust.yaml").unlink()
    assert holder.reload() is True
    assert "image trust is OFF" in capsys.readouterr().err


# ------------------------------------------------------------------ red team round 4, docs trial

def test_a_directory_that_dotdot_leaves_is_protected_too(lab):
    """A key named L/srv/data/sub/../../pki/keys/team.pub: the kernel walks through data/sub
    and back; a container binding L/srv/data could make `sub` a symlink and so choose where
    `..` leads (a key of its own, read as root's at the next reload)."""
    from authz.plugin import Plugin, PluginConfig
    from authz.policy.floor import floor_violations

    srv = lab / "srv"
    (srv / "pki" / "keys").mkdir(parents=True)
    (srv / "data" / "sub").mkdir(parents=True)
    (srv / "other").mkdir()
    (srv / "pki" / "keys" / "team.pub").write_bytes(Key("ecdsa").public_pem)
    policy = _policy(lab)
    (policy / "trust.yaml").write_text(
        f"version: 1\nkeys:\n  - {{name: team, file: {srv}/data/sub/../../pki/keys/team.pub}}\n")
    (lab / "run").mkdir()
    plugin = Plugin.build(PluginConfig(policy_dir=policy, socket_path=str(lab / "run" / "s")))

    def denied(path):
        return bool(floor_violations("container.create", [Fact("host-path", str(path), "x")],
                                     plugin.floor))

    assert denied(srv / "data") and denied(srv / "data" / "sub") and denied(srv / "pki" / "keys")
    assert not denied(srv / "other")


def test_the_revision_does_not_depend_on_where_the_policy_is(lab):
    """A key named relative to trust.yaml hashed under its absolute path: `cp -r candidate
    /etc/pyauthz/policies` changed the revision lint had printed for the candidate."""
    from authz.policytools.lint import lint

    revisions = []
    for name in ("a", "b"):
        policy = lab / name / "policy"
        shutil.copytree(SHIPPED, policy, ignore=shutil.ignore_patterns("tests"))
        (policy / "keys").mkdir()
        (policy / "keys" / "team.pub").write_bytes(b"")
        revisions.append(policy)
    key = Key("ecdsa").public_pem
    for policy in revisions:
        (policy / "keys" / "team.pub").write_bytes(key)
        (policy / "trust.yaml").write_text("version: 1\nkeys:\n  - {name: team, file: keys/team.pub}\n")
    a, b = (load_bundle(p, None, settle=0).policy.revision for p in revisions)
    assert a == b == lint(revisions[0]).revision


def test_explain_and_policy_test_name_the_revision_serve_names(lab):
    from authz.plugin import served_revision

    keys, policy = _policy_with_key_outside(lab)
    served = load_bundle(policy, None, settle=0).policy.revision
    assert served_revision(Policy.load(policy)) == served != Policy.load(policy).revision


def test_init_refuses_dotdot_in_dir(lab):
    from authz.cli import shipped_policy_dir
    from authz.policytools.init import InitRefused, init_policy

    (lab / "x").mkdir()
    with pytest.raises(InitRefused, match=r"without '\.\.'"):
        init_policy(lab / "x" / ".." / "pol", shipped_policy_dir())
    assert not (lab / "pol").exists()


def test_a_plugin_built_without_a_bundle_reads_its_files_checked(lab):
    """In process (the bench, tests: serve always passes its master's bundle), the policy is
    read as the offline tools read it: through checked paths, the caller's files allowed."""
    from authz.plugin import Plugin, PluginConfig

    policy = _policy(lab)
    os.chmod(policy / "rules.yaml", 0o666)
    with pytest.raises(PolicyError, match="writable by every user"):
        Plugin.build(PluginConfig(policy_dir=policy, socket_path=str(lab / "s")))


def test_lint_reports_each_error_once_and_says_when_trust_is_off(lab, monkeypatch):
    from authz.policytools.lint import lint

    policy = _policy(lab)
    (policy / "trust.yaml").write_text("version: 1\nbogus: 1\n")
    monkeypatch.chdir(lab)
    report = lint(Path("policy"))  # a relative DIR: trust.yaml's errors were counted twice
    errors = [f.message for f in report.errors]
    assert len([m for m in errors if "bogus" in m]) == 1, errors
    (policy / "trust.yaml").unlink()
    report = lint(Path("policy"))
    assert any("image trust is OFF" in f.message for f in report.findings)


def test_a_symlink_loop_in_the_policy_is_refused_and_a_dangling_trust_yaml_says_restore(lab):
    from authz.reload import OpenPolicy, refuse_open_policy

    policy = _policy(lab)
    (policy / "loop").symlink_to("loop")
    with pytest.raises(OpenPolicy, match="leads nowhere"):
        refuse_open_policy(policy)
    (policy / "loop").unlink()
    (policy / "trust.yaml").unlink()
    (policy / "trust.yaml").symlink_to(lab / "gone")
    with pytest.raises(OpenPolicy, match="restore what it points to"):
        refuse_open_policy(policy)


# ------------------------------------------------------------------ red team round 5

def test_a_policy_named_through_link_dotdot_is_reloaded_where_it_was_loaded(lab, monkeypatch):
    """PolicyHolder kept os.path.abspath(--policy): "srv/link/../pol" collapsed on paper to
    srv/pol, while the kernel (and the start) read opt/pol. The route to it is protected."""
    from authz import reload as reload_mod
    from authz.plugin import PluginConfig, own_paths
    from authz.reload import PolicyHolder

    monkeypatch.setattr(reload_mod, "STATE_DIR", lab / "state")
    (lab / "opt" / "x").mkdir(parents=True)
    (lab / "srv").mkdir()
    (lab / "srv" / "link").symlink_to(lab / "opt" / "x")
    real = _policy(lab)
    shutil.move(real, lab / "opt" / "pol")
    named = Path(f"{lab}/srv/link/../pol")
    holder = PolicyHolder(named, None, str(lab / "t.sock"))
    assert holder.reload() is True
    assert holder.bundle.policy.directory == named
    protected = {p.path for p in own_paths(PluginConfig(policy_dir=named, socket_path="/x/s"))}
    assert str(lab / "srv" / "link") in protected and str(lab / "opt" / "pol") in protected


def test_the_revision_does_not_depend_on_how_the_directory_is_spelled(lab):
    real = _policy(lab)
    (real / "keys").mkdir()
    (real / "keys" / "a.pub").write_bytes(Key("ecdsa").public_pem)
    (real / "trust.yaml").write_text(f"version: 1\nkeys:\n  - {{name: a, file: {real}/keys/a.pub}}\n")
    (lab / "etc").mkdir()
    (lab / "etc" / "policies").symlink_to(real)
    assert load_bundle(real, None, settle=0).policy.revision == \
        load_bundle(lab / "etc" / "policies", None, settle=0).policy.revision


def test_a_symlink_through_a_regular_file_is_refused(lab):
    from authz.reload import OpenPolicy, refuse_open_policy

    policy = _policy(lab)
    (policy / "odd.yaml").symlink_to(policy / "rules.yaml" / "x")
    with pytest.raises(OpenPolicy, match="leads nowhere"):
        refuse_open_policy(policy)


# ------------------------------------------------------------------ red team round 6

def test_entries_on_the_way_are_protected_from_binds_that_contain_them_only(lab):
    """The route to the policy (/srv/pyauthz -> ../etc/pol) steps out of /srv with "..":
    protecting /srv outright closed every bind under /srv. A bind inside such a directory
    cannot change where the way leads; only one that is or contains it can."""
    from authz.plugin import PluginConfig, own_paths
    from authz.policy.floor import SYSTEM_FLOOR, floor_violations

    (lab / "etc").mkdir()
    real = _policy(lab)
    shutil.move(real, lab / "etc" / "pol")
    srv = lab / "srv"
    (srv / "app" / "data").mkdir(parents=True)
    (srv / "pyauthz").symlink_to("../etc/pol")
    (lab / "run").mkdir()
    floor = SYSTEM_FLOOR + own_paths(PluginConfig(policy_dir=srv / "pyauthz",
                                                  socket_path=str(lab / "run" / "s")))

    def denied(path):
        return bool(floor_violations("container.create", [Fact("host-path", str(path), "x")],
                                     floor))

    assert not denied(srv / "app") and not denied(srv / "app" / "data")
    assert denied(srv) and denied(srv / "pyauthz") and denied(lab / "etc" / "pol")
    assert denied(lab / "etc" / "pol" / "rules.yaml")  # the policy directory itself: all of it


def test_the_revision_reads_a_bounded_total(lab, monkeypatch):
    from authz.ownership import TooLarge
    from authz.policy import engine

    policy = _policy(lab)
    monkeypatch.setattr(engine, "MAX_REVISION_BYTES", 64 * 1024)
    for i in range(3):
        (policy / f"extra{i}.yaml").write_bytes(b"#" * 30_000)  # each fine, together too many
    with pytest.raises(TooLarge, match="together"):
        engine.policy_revision(policy)
