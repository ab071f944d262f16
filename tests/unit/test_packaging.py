"""Packaging (issue 10, item 1): the distribution name, the version, the default policy as
package data and which policy serve picks, `pyauthz policy init`, LICENSE, CHANGELOG, and the
plugin version in every decision-log line. The wheel itself is built and installed by
tests/integration/test_wheel_install.py."""

import os
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import authz
from authz import cli
from authz.cli import main
from authz.plugin import Plugin, PluginConfig, own_paths
from authz.policy import Policy
from authz.policy.engine import policy_revision
from authz.policy.floor import Fact, floor_violations
from authz.policytools.init import init_policy, shipped_files
from authz.protocol import REQUEST_PHASE
from tests.unit.test_plugin import Events, raw_call

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
POLICY_FILES = {"rules.yaml", "trust.yaml", "model.conf"}


def test_the_distribution_name_is_ours_and_the_command_stays_pyauthz():
    # `pyauthz` on PyPI is an unrelated project; `pyauthz-docker` was free when chosen.
    assert PROJECT["name"] == authz.DISTRIBUTION == "pyauthz-docker"
    assert PROJECT["scripts"] == {"pyauthz": "authz.cli:main"}
    assert "`pyauthz-docker`" in (REPO / "README.md").read_text()


def test_the_version_is_the_projects():
    assert authz.__version__ == PROJECT["version"]
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"pyauthz {PROJECT['version']} (pyauthz-docker)\n"


def test_the_version_falls_back_without_metadata(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert authz._version() == PROJECT["version"]  # read from the checkout's pyproject.toml


def test_the_package_carries_the_default_policy():
    # authz/policies is what the wheel carries (setuptools follows the link to policies/).
    packaged = Path(authz.__file__).parent / "policies"
    assert packaged.resolve() == SHIPPED.resolve()
    assert cli.shipped_policy_dir() == SHIPPED.resolve()
    names = {p.as_posix() for p in shipped_files(packaged)}
    assert POLICY_FILES <= names
    assert any(n.startswith("tests/") and n.endswith(".yaml") for n in names)
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["authz"]
    assert "policies/*" in globs and "policies/**/*" in globs


def test_serve_uses_the_hosts_policy_when_it_exists(tmp_path, monkeypatch):
    system = tmp_path / "etc-pyauthz-policies"
    monkeypatch.setattr(cli, "SYSTEM_POLICY_DIR", system)
    assert cli.default_policy_dir() == cli.shipped_policy_dir()
    assert "shipped with pyauthz" in cli.policy_origin(None, cli.default_policy_dir())
    system.mkdir()  # exists, even empty or broken: serve then refuses to start, loudly
    assert cli.default_policy_dir() == system
    assert "host's policy" in cli.policy_origin(None, system)
    assert cli.policy_origin(tmp_path, tmp_path) == "given with --policy"


def test_the_floor_protects_the_shipped_policy_where_it_lives(tmp_path):
    paths = own_paths(PluginConfig(policy_dir=cli.shipped_policy_dir(), socket_path=None,
                                   docker_host=None))
    packaged = Path(authz.__file__).parent / "policies"
    for path in (SHIPPED / "rules.yaml", packaged / "trust.yaml", SHIPPED.resolve() / "tests"):
        assert floor_violations("container.create", [Fact("host-path", str(path), "x")], paths), path


def test_init_copies_the_shipped_policy_with_sane_modes(tmp_path):
    target = tmp_path / "new" / "policies"
    old = os.umask(0o077)
    try:
        files, replaced = init_policy(target, SHIPPED)
    finally:
        os.umask(old)
    assert replaced == [] and {f.as_posix() for f in files} >= POLICY_FILES
    for rel in files:
        assert (target / rel).read_bytes() == (SHIPPED / rel).read_bytes()
        assert stat.S_IMODE((target / rel).stat().st_mode) == 0o644, rel
    for directory in (target, target / "tests"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging left
    # The copy is the same policy, byte for byte, and loads.
    assert policy_revision(target) == policy_revision(SHIPPED)
    assert Policy.load(target).revision == Policy.load(SHIPPED).revision


def test_init_refuses_a_non_empty_directory_unless_forced(tmp_path):
    target = tmp_path / "p"
    target.mkdir()
    (target / "rules.yaml").write_text("# mine\n")
    (target / "notes.txt").write_text("keep me\n")
    runner = CliRunner()
    result = runner.invoke(main, ["policy", "init", str(target)])
    assert result.exit_code == 1 and "not empty" in result.output
    assert (target / "rules.yaml").read_text() == "# mine\n"
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt", "rules.yaml"]

    result = runner.invoke(main, ["policy", "init", "--force", str(target)])
    assert result.exit_code == 0, result.output
    assert "over existing ones" in result.output
    assert (target / "rules.yaml").read_bytes() == (SHIPPED / "rules.yaml").read_bytes()
    assert (target / "notes.txt").read_text() == "keep me\n"
    assert (target / "tests").is_dir()


def test_init_into_an_empty_directory_keeps_its_mode(tmp_path):
    target = tmp_path / "p"
    target.mkdir(mode=0o700)
    result = CliRunner().invoke(main, ["policy", "init", str(target)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert (target / "model.conf").is_file()


def test_init_force_never_writes_through_a_directory_swapped_for_a_symlink(tmp_path, monkeypatch):
    """--force checks DIR for symlinks, then writes as root: a user who swaps DIR/tests for
    a symlink between the two must not get the files written elsewhere. The check is made
    to pass (the swap comes right after it): the write itself refuses the symlink."""
    from authz.policytools import init as init_mod

    target, elsewhere = tmp_path / "p", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    (target / "tests").mkdir()
    real_fill = init_mod._fill

    def swap_then_fill(source, files, top):
        (target / "tests").rmdir()
        (target / "tests").symlink_to(elsewhere)
        return real_fill(source, files, top)

    monkeypatch.setattr(init_mod, "_fill", swap_then_fill)
    with pytest.raises(init_mod.InitRefused, match="symbolic link"):
        init_policy(target, SHIPPED, force=True)
    assert list(elsewhere.iterdir()) == []


def test_init_never_writes_where_a_local_user_can_redirect_it(tmp_path):
    """Run as root: DIR given as a symlink a user owns (or that leads through their
    directory) into the live policy, and a new DIR under a directory a user can write (who
    would swap the staging directory for a symlink), are refused, nothing written; a
    root-owned symlink to a root-owned directory is followed as before."""
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 1000, 1000)
    live = tmp_path / "live"
    live.mkdir()
    (live / "rules.yaml").write_text("# the live policy\n")
    (home / "pol").symlink_to(live)
    os.lchown(home / "pol", 1000, 1000)
    result = CliRunner().invoke(main, ["policy", "init", "--force", str(home / "pol")])
    assert result.exit_code == 1 and "belongs to uid 1000" in result.output, result.output
    assert (live / "rules.yaml").read_text() == "# the live policy\n"
    result = CliRunner().invoke(main, ["policy", "init", str(home / "new")])
    assert result.exit_code == 1 and "belongs to uid 1000" in result.output, result.output
    assert sorted(p.name for p in home.iterdir()) == ["pol"]
    (tmp_path / "link").symlink_to(live)
    result = CliRunner().invoke(main, ["policy", "init", "--force", str(tmp_path / "link")])
    assert result.exit_code == 0, result.output
    assert (live / "rules.yaml").read_bytes() == (SHIPPED / "rules.yaml").read_bytes()


@pytest.mark.parametrize("where", ["file", "shipped", "inside-shipped"])
def test_init_refuses_impossible_targets(tmp_path, where):
    target = {"file": tmp_path / "f", "shipped": SHIPPED,
              "inside-shipped": SHIPPED / "tests" / "copy"}[where]
    if where == "file":
        target.write_text("x")
    result = CliRunner().invoke(main, ["policy", "init", "--force", str(target)])
    assert result.exit_code == 1, result.output
    assert not (SHIPPED / "tests" / "copy").exists()


def test_every_decision_line_carries_the_plugin_version():
    events = Events()
    plugin = Plugin(Policy.load(SHIPPED), None, None, logger=events, threads=2)
    plugin.handle(REQUEST_PHASE, raw_call("GET", "/v1.41/containers/json"))
    plugin.handle(REQUEST_PHASE, b"{not json")  # a refusal is logged with it too
    assert [line["plugin_version"] for line in events.lines] == [authz.__version__] * 2
    assert "| `plugin_version` |" in (REPO / "docs" / "decision-log.md").read_text()


def test_license_is_the_apache_2_text():
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert text.strip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 10000


def test_the_changelog_has_an_entry_per_issue_landed():
    text = (REPO / "CHANGELOG.md").read_text()
    assert f"## {PROJECT['version']}" in text
    for issue in (2, 3, 6, 7, 8, 9, 10):
        assert f"### Issue {issue}:" in text, issue
    assert "model.conf" in text and "plugin_version" in text and "Breaking" in text
