"""Red team (final) of the recent commits: holes found. Each test fails on the code as
landed and passes once the hole is closed (a refusal is a fix too)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from authz import cli


def test_redteam_final_broken_etc_pyauthz_itself_does_not_fall_back_to_shipped(
        tmp_path, monkeypatch):
    """default_policy_dir uses os.path.lexists(/etc/pyauthz/policies): lstat of a path whose
    PARENT is a dangling symlink (/etc/pyauthz -> a config mount not mounted yet), a symlink
    loop, or a file fails with ENOENT/ELOOP/ENOTDIR, lexists says False, and serve quietly
    decides with the shipped default policy instead of the host's (stricter) one: the very
    fall back commit 2882f46 meant to close, one level up."""
    etc = tmp_path / "etc-pyauthz"
    etc.symlink_to(tmp_path / "not-mounted-yet" / "pyauthz")  # dangling
    system = etc / "policies"
    monkeypatch.setattr(cli, "SYSTEM_POLICY_DIR", system)
    try:
        used = cli.default_policy_dir()
    except Exception:  # noqa: BLE001 - refusing to pick is a fix too
        return
    assert used == system, f"fell back to the shipped policy {used}"


@pytest.mark.parametrize("kind", ["loop", "file"])
def test_redteam_final_etc_pyauthz_loop_or_file_does_not_fall_back(tmp_path, monkeypatch, kind):
    etc = tmp_path / "etc-pyauthz"
    if kind == "loop":
        etc.symlink_to(etc)
    else:
        etc.write_text("oops")
    monkeypatch.setattr(cli, "SYSTEM_POLICY_DIR", etc / "policies")
    try:
        used = cli.default_policy_dir()
    except Exception:  # noqa: BLE001
        return
    assert used == etc / "policies", f"fell back to the shipped policy {used}"


def test_redteam_final_open_policy_missed_through_a_symlinked_subdirectory(tmp_path):
    """refuse_open_policy walks with Path.rglob, which does not descend into symlinked
    directories, yet the loader reads through them (trust.yaml's key/CA files are resolved
    relative to it, e.g. keys/signer.pub). A world-writable trust key under policy/keys ->
    /srv/keys is not refused: any local user replaces the key image trust checks against."""
    from authz.reload import OpenPolicy, refuse_open_policy

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "rules.yaml").write_text("x: 1\n")
    keys = tmp_path / "srv-keys"
    keys.mkdir()
    key = keys / "signer.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    os.chmod(key, 0o666)
    (policy / "keys").symlink_to(keys)
    with pytest.raises(OpenPolicy):
        refuse_open_policy(policy)


def test_redteam_final_open_policy_missed_when_an_ancestor_is_world_writable(tmp_path):
    """Only the policy directory and what is under it are checked: a root-owned 0755 policy
    directory inside a world-writable (non-sticky) directory is renamed away and replaced by
    any local user (sshd's StrictModes checks every ancestor)."""
    from authz.reload import OpenPolicy, refuse_open_policy

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # no sticky bit: anyone may rename entries
    policy = shared / "policy"
    policy.mkdir()
    os.chmod(policy, 0o755)
    (policy / "rules.yaml").write_text("x: 1\n")
    with pytest.raises(OpenPolicy):
        refuse_open_policy(policy)


def test_redteam_final_inherited_socket_under_a_world_writable_ancestor_is_refused(tmp_path):
    """_check_private looks at the socket and its parent only: /srv/open (0777, no sticky)
    /plugins (root 0755) /pyauthz.sock (0600). Any user renames /srv/open/plugins and puts
    their own plugins/pyauthz.sock there; dockerd then talks to them, not to pyauthz."""
    from authz.serve import InheritedSocketError, _check_private

    shared = tmp_path / "open"
    shared.mkdir()
    os.chmod(shared, 0o777)
    plugins = shared / "plugins"
    plugins.mkdir()
    os.chmod(plugins, 0o755)
    path = str(plugins / "rtf.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        os.chmod(path, 0o600)
        if os.lstat(path).st_uid != 0 or os.lstat(plugins).st_uid != 0:
            pytest.skip("needs root-owned files (run as root)")
        with pytest.raises(InheritedSocketError):
            _check_private(path)
    finally:
        s.close()


@pytest.mark.parametrize("entry", ["rules.yaml", "tests", "tests/case.yaml", "."])
def test_a_policy_file_or_directory_a_user_owns_is_refused(tmp_path, entry):
    """refuse_open_policy checked modes only: a 0644 rules.yaml (or a directory of the
    policy) owned by uid 1000 is rewritten by that user, who then decides every docker call."""
    from authz.reload import OpenPolicy, refuse_open_policy

    policy = tmp_path / "policy"
    (policy / "tests").mkdir(parents=True)
    (policy / "rules.yaml").write_text("x: 1\n")
    (policy / "tests" / "case.yaml").write_text("x: 1\n")
    refuse_open_policy(policy)
    os.chown(policy / entry, 1000, 1000)
    with pytest.raises(OpenPolicy, match="belongs to uid 1000"):
        refuse_open_policy(policy)
