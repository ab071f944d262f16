"""The master's policy holder: only a policy that loads, from a directory that holds still,
replaces the running one."""

import shutil
from pathlib import Path

import pytest

from authz import reload as reload_mod
from authz.reload import PolicyHolder, UnstablePolicy, load_bundle

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(reload_mod, "STATE_DIR", tmp_path / "state")
    return tmp_path / "state"


def test_a_directory_that_changes_while_read_is_not_served(tmp_path, monkeypatch):
    policy = tmp_path / "p"
    shutil.copytree(SHIPPED, policy)
    revisions = iter(["a" * 64, "b" * 64] * 10)
    monkeypatch.setattr(reload_mod, "policy_revision", lambda d: next(revisions))
    with pytest.raises(UnstablePolicy):
        load_bundle(policy, None, settle=0)


def test_failed_reload_keeps_the_running_policy(tmp_path, state_dir):
    policy = tmp_path / "p"
    shutil.copytree(SHIPPED, policy)
    holder = PolicyHolder(policy, None, "/run/docker/plugins/t.sock")
    old = holder.bundle.policy.revision
    rules = policy / "rules.yaml"
    rules.write_text(rules.read_text() + "\nbogus: 1\n")
    assert holder.reload() is False
    assert holder.bundle.policy.revision == old
    state = reload_mod.read_state("/run/docker/plugins/t.sock")
    assert state["failed_reloads"] == 1 and "bogus" in state["last_error"]
    rules.write_text(rules.read_text().replace("\nbogus: 1\n", "\n"))
    (policy / "extra.txt").write_text("a new file changes the revision")
    assert holder.reload() is True
    assert holder.bundle.policy.revision != old
    assert reload_mod.read_state("/run/docker/plugins/t.sock")["last_error"] == ""


def test_reload_names_a_stale_state_file_and_signals_nothing(tmp_path):
    """A state file left by a pyauthz that has exited: reload says so (exit 2), and sends no
    signal to whatever process may have its pid."""
    import json
    import os
    import subprocess
    import sys

    from click.testing import CliRunner

    from authz.cli import main
    from authz.reload import state_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    socket_path = str(tmp_path / f"stale-{os.getpid()}.sock")
    state = state_path(socket_path)
    state.parent.mkdir(parents=True, exist_ok=True)
    policies = Path(__file__).resolve().parents[2] / "policies"
    state.write_text(json.dumps({"pid": dead.pid, "policy_dir": str(policies),
                                 "revision": "0" * 64, "reloads": 0}))
    try:
        result = CliRunner().invoke(main, ["reload", "--socket", socket_path, "--timeout", "1"])
    finally:
        state.unlink()
    assert result.exit_code == 2
    assert "stale state file" in result.output, result.output


def _reload_with_state(tmp_path, state: dict):
    import json
    import os

    from click.testing import CliRunner

    from authz.cli import main
    from authz.reload import state_path

    socket_path = str(tmp_path / f"reused-{os.getpid()}.sock")
    path = state_path(socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"policy_dir": str(SHIPPED), "revision": "0" * 64,
                                "reloads": 0, **state}))
    try:
        return CliRunner().invoke(main, ["reload", "--socket", socket_path, "--timeout", "1"])
    finally:
        path.unlink()


def test_reload_signals_no_process_that_reused_the_pid(tmp_path):
    """The state file's pid now belongs to another process (here one whose command line
    even says "authz", which was all reload checked): it is not the process that wrote the
    file (it started at another time), so it gets no SIGHUP (which would end it)."""
    import subprocess
    import sys

    from authz.reload import process_identity

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "authz"])
    try:
        boot, ticks = process_identity(other.pid).rsplit(":", 1)
        result = _reload_with_state(tmp_path, {"pid": other.pid,
                                               "started": f"{boot}:{int(ticks) - 1}"})
        assert result.exit_code == 2 and "stale state file" in result.output, result.output
        assert other.poll() is None, "the process that reused the pid was signalled"
    finally:
        other.kill()
        other.wait()


def test_reload_signals_the_process_that_wrote_the_state(tmp_path):
    import signal
    import subprocess
    import sys

    from authz.reload import process_identity

    master = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result = _reload_with_state(tmp_path, {"pid": master.pid,
                                               "started": process_identity(master.pid)})
        assert master.wait(timeout=10) == -signal.SIGHUP
        assert result.exit_code == 2 and "no answer" in result.output  # it never reports
    finally:
        master.kill()
        master.wait()


def test_reload_signals_no_pyauthz_serving_another_socket_of_the_same_name(tmp_path):
    """State files are named after the socket's file name: a second pyauthz on
    /elsewhere/NAME.sock writes the same one. reload --socket A must not signal B."""
    import subprocess
    import sys

    from authz.reload import process_identity

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        result = _reload_with_state(tmp_path, {"pid": other.pid,
                                               "started": process_identity(other.pid),
                                               "socket": "/elsewhere/reused.sock"})
        assert result.exit_code == 2 and "two sockets with one name" in result.output
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_reload_says_when_the_reloaded_policy_has_no_image_trust(tmp_path):
    """A reload that leaves no trust.yaml turns image trust off: `pyauthz reload` says so,
    not only the plugin's log. The master here is a stand-in that, on SIGHUP, reports the
    reload in the state file as pyauthz's master does."""
    import json
    import os
    import subprocess
    import sys

    from click.testing import CliRunner

    from authz.cli import main
    from authz.reload import load_bundle, process_identity, state_path

    policy = tmp_path / "p"
    shutil.copytree(SHIPPED, policy, ignore=shutil.ignore_patterns("tests"))
    (policy / "trust.yaml").unlink()
    revision = load_bundle(policy, None, settle=0).policy.revision
    socket_path = str(tmp_path / f"notrust-{os.getpid()}.sock")
    path = state_path(socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    after = json.dumps({"policy_dir": str(policy), "revision": revision, "reloads": 1,
                        "last_error": ""})
    master = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time\n"
        f"def hup(*_):\n    open({str(path)!r}, 'w').write({after!r}); sys.exit(0)\n"
        "signal.signal(signal.SIGHUP, hup)\nprint('ready', flush=True)\ntime.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert master.stdout.readline().strip() == "ready"
        path.write_text(json.dumps({"pid": master.pid, "started": process_identity(master.pid),
                                    "socket": os.path.abspath(socket_path),
                                    "policy_dir": str(policy), "revision": "0" * 64,
                                    "reloads": 0}))
        result = CliRunner().invoke(main, ["reload", "--socket", socket_path, "--timeout", "5"])
    finally:
        master.kill()
        master.wait()
        path.unlink(missing_ok=True)
    assert result.exit_code == 0, result.output
    assert "image trust is OFF" in result.output
