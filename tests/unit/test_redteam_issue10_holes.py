"""Red team of issue 10 (packaging, socket activation, metrics and health): holes found.

Each test fails on the code as landed and passes once the hole is closed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from authz import cli
from authz.decoding.facts import Fact
from authz.plugin import PluginConfig, own_paths
from authz.policy.floor import SYSTEM_FLOOR, floor_violations
from authz.reload import pid_path, state_path

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]]
                                                     if env.get("PYTHONPATH") else []))
    for name in ("LISTEN_PID", "LISTEN_FDS", "GUNICORN_PID", "GUNICORN_FD"):
        env.pop(name, None)
    return env


def _activate_unix(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        return b"authz" in s.recv(4096)
    except OSError:
        return False
    finally:
        s.close()


def _cleanup_state(sock: str) -> None:
    for leftover in (state_path(sock), pid_path(sock)):
        try:
            os.unlink(leftover)
        except OSError:
            pass


# ----------------------------------------------------------------- 1. socket activation

# As systemd or systemd-socket-activate would pass it, but the socket file is world-connectable
# (systemd's default SocketMode= is 0666; a hand-written or copied unit without SocketMode=0600,
# or systemd-socket-activate under umask 000, makes exactly this).
LAUNCH_MODE = r"""
import os, socket, sys
path, mode = sys.argv[1], int(sys.argv[2], 8)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, mode)
s.listen(8)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
command = sys.argv[sys.argv.index("--") + 1:]
os.execv(command[0], command)
"""


@pytest.mark.parametrize("mode", ["0666", "0660"])
def test_redteam_inherited_socket_open_to_other_users_is_refused(tmp_path, mode):
    """pyauthz binds its own socket 0600 (umask 0o177) but takes systemd's as it is: a
    socket any local user (or group) can connect to lets them send AuthZReq/AuthZRes calls
    that are decided and written to the audit log as dockerd's (forged audit lines, policy
    probing, the plugin's threads and lookup slots taken from dockerd). Expected: refused
    like the other sockets pyauthz cannot serve on."""
    sock = str(tmp_path / f"rt10-mode-{os.getpid()}.sock")
    cmd = [sys.executable, "-c", LAUNCH_MODE, sock, mode, "--",
           sys.executable, "-m", "authz", "serve", "--policy", str(POLICIES),
           "--docker-host", "", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        served = _activate_unix(sock)
        proc.terminate()
        proc.communicate(timeout=30)
        pytest.fail(f"pyauthz serves on an inherited socket of mode {mode} "
                    f"(answered Plugin.Activate: {served})")
    finally:
        _cleanup_state(sock)
    assert proc.returncode == 1 and "mode" in err, err


LAUNCH_GUNICORN_FD = r"""
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(GUNICORN_PID="1", GUNICORN_FD="3")
command = sys.argv[sys.argv.index("--") + 1:]
os.execv(command[0], command)
"""


def test_redteam_gunicorn_fd_in_the_environment_is_not_served_on(tmp_path):
    """gunicorn's re-exec hand-over (GUNICORN_PID + GUNICORN_FD) bypasses every check
    inherited_socket makes for LISTEN_FDS: with those two variables in serve's environment,
    gunicorn serves the plugin on whatever the fds are (here a TCP listener: dockerd's
    authorization answered over unauthenticated TCP), while pyauthz prints that it serves on
    --socket. Expected: pyauthz drops (or refuses) GUNICORN_FD/GUNICORN_PID it did not set, and
    never answers on the TCP listener."""
    sock = str(tmp_path / f"rt10-gfd-{os.getpid()}.sock")
    cmd = [sys.executable, "-c", LAUNCH_GUNICORN_FD, "--",
           sys.executable, "-m", "authz", "serve", "--socket", sock, "--policy", str(POLICIES),
           "--docker-host", "", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    answered_tcp = False
    try:
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if _activate_unix(sock):
                break
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/Plugin.Activate",
                                             data=b"", method="POST")
                with urllib.request.urlopen(req, timeout=2) as resp:
                    answered_tcp = b"authz" in resp.read()
                    break
            except OSError:
                time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)
        _cleanup_state(sock)
    assert not answered_tcp, "the plugin answered AuthZ calls on a TCP socket from GUNICORN_FD"


# ----------------------------------------------------------------- 2. metrics and health

@pytest.fixture
def metrics_server(tmp_path, monkeypatch):
    pytest.importorskip("prometheus_client")
    from authz import metrics

    monkeypatch.setattr(metrics, "multiproc_parent", lambda: str(tmp_path))
    server = metrics.start("127.0.0.1", 0, str(tmp_path / "rt10.sock"))
    try:
        yield server
    finally:
        server.stop()
        metrics.disable()


def test_redteam_metrics_listener_drops_idle_connections(metrics_server):
    """/metrics and /health are answered by a ThreadingHTTPServer with no socket timeout: a
    connection that never sends a request holds a thread of the gunicorn master forever. Any
    local user (loopback, no authentication) can open thousands (slowloris), growing the
    master's threads and memory until TasksMax / RLIMIT_NOFILE stop gunicorn from forking a
    replacement worker: no plugin, every docker call fails. Expected: an idle connection is
    closed within a bounded time (say 10 s)."""
    host, port = metrics_server.address
    c = socket.create_connection((host, port), timeout=15)
    try:
        started = time.monotonic()
        try:
            data = c.recv(1)
        except socket.timeout:
            pytest.fail("the metrics listener kept an idle connection open for 15 s")
        except ConnectionResetError:
            data = b""
        assert data == b"" and time.monotonic() - started < 15
    finally:
        c.close()


def test_redteam_metrics_listener_threads_are_bounded(metrics_server):
    """The same listener, counted: each idle connection is one more thread in the master."""
    host, port = metrics_server.address
    before = threading.active_count()
    conns = []
    try:
        for _ in range(100):
            conns.append(socket.create_connection((host, port), timeout=5))
        time.sleep(1.0)
        grown = threading.active_count() - before
    finally:
        for c in conns:
            c.close()
    assert grown < 50, f"100 idle connections made {grown} threads in the master"


def test_redteam_health_is_not_one_logged_decision_per_request(metrics_server, monkeypatch):
    """Every GET /health makes a real decision through the plugin socket and writes a
    decision-log line (authz.health.check). Unauthenticated, on loopback by default: any
    local user (or anyone, with --metrics-listen-any) turns requests into audit-log lines
    and plugin threads 1:1, flooding the audit trail and competing with dockerd's calls.
    Expected: the probe's result is reused for a short while (or probes are serialized and
    rate-limited), so 30 requests in a burst do not make 30 decisions."""
    from authz import health

    calls = []

    def probe(socket_path, timeout=5.0):
        calls.append(socket_path)
        return health.Health(True, "decisions are made and logged (test)")

    monkeypatch.setattr(health, "check", probe)
    host, port = metrics_server.address
    for _ in range(30):
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=10) as resp:
            assert resp.status == 200
    assert len(calls) <= 5, f"30 GET /health made {len(calls)} real decisions"


# ----------------------------------------------------------------- 3. default policy, floor

@pytest.mark.parametrize("kind", ["dangling-symlink", "symlink-loop", "file"])
def test_redteam_a_broken_host_policy_entry_does_not_fall_back_to_the_shipped_one(
        tmp_path, monkeypatch, kind):
    """default_policy_dir() uses Path.is_dir(), which is False for a dangling symlink (an
    atomic `ln -sfn releases/NEW policies` deploy whose target is missing or not yet
    unpacked), a symlink loop, or a file: `pyauthz serve` then quietly decides with the
    shipped policy instead of the host's (a different, possibly weaker policy; the start
    message says 'does not exist'). Expected: anything at /etc/pyauthz/policies (lexists) is
    the host's policy, and a broken one stops the start."""
    system = tmp_path / "policies"
    if kind == "dangling-symlink":
        system.symlink_to(tmp_path / "releases" / "2024-06-01")
    elif kind == "symlink-loop":
        system.symlink_to(system)
    else:
        system.write_text("not a directory\n")
    monkeypatch.setattr(cli, "SYSTEM_POLICY_DIR", system)
    assert cli.default_policy_dir() != cli.shipped_policy_dir()


def _floored(path: str, config: PluginConfig) -> bool:
    return bool(floor_violations("container.create", [Fact("host-path", path, "x")],
                                 SYSTEM_FLOOR + own_paths(config)))


def test_redteam_the_floor_covers_the_base_python_of_a_venv(tmp_path, monkeypatch):
    """own_paths protects sys.prefix only. In a venv (the README's and operations.md's
    install) sys.prefix is the venv, while the standard library the root plugin imports lives
    in sys.base_prefix: a Python under /opt or /srv (uv, pyenv as a service user, a source
    build under /opt) is bindable, and a container that writes its os.py or an encodings
    module runs code as root in pyauthz at the next worker fork. The same holds for any other
    sys.path entry (a .pth, a --system-site-packages directory outside /usr)."""
    base = tmp_path / "opt-python3.11"
    extra = tmp_path / "site-extra"
    monkeypatch.setattr(sys, "base_prefix", str(base))
    monkeypatch.setattr(sys, "base_exec_prefix", str(base))
    monkeypatch.setattr(sys, "path", list(sys.path) + [str(extra)])
    config = PluginConfig(policy_dir=POLICIES, docker_host=None, socket_path=None)
    assert _floored(str(base / "lib" / "python3.11"), config), "the base Python is bindable"
    assert _floored(str(extra), config), "a sys.path entry is bindable"


def test_redteam_the_floor_covers_the_run_directory():
    """/run/pyauthz (the state and pid files `pyauthz reload` and ExecReload= trust, the
    prometheus multiprocess directory whose files the master parses at every scrape, and
    TMPDIR under the unit) is not in the floor, unlike the socket, log and policy
    directories. A policy whose roots include it (or /run/pyauthz/...) lets a container
    forge the state file (which pid SIGHUP goes to, which directory reload validates) and
    plant metric files in the master's directory."""
    from authz.reload import STATE_DIR

    config = PluginConfig(policy_dir=POLICIES, docker_host=None,
                          socket_path="/run/docker/plugins/pyauthz.sock")
    assert _floored(str(STATE_DIR), config)


def test_redteam_a_world_writable_policy_directory_is_refused(tmp_path):
    """The policy root loads is never checked for who may write it: a policy directory (or
    rules.yaml) writable by other users is loaded, so any local user rewrites what root
    enforces (and `pyauthz policy init` into an existing directory keeps its mode, 0777
    included). Expected: refused (as sshd's StrictModes), or at least not served."""
    from authz.policytools.init import InitRefused, init_policy
    from authz.reload import load_bundle

    target = tmp_path / "policies"
    target.mkdir()
    os.chmod(target, 0o777)
    # init refuses to write a policy there at all (since issue 11's last session: DIR is
    # opened through a checked path), and serve refuses to load one.
    with pytest.raises(InitRefused, match="writable by every user"):
        init_policy(target, cli.shipped_policy_dir())
    assert os.listdir(target) == []
    shutil.copytree(cli.shipped_policy_dir(), target, dirs_exist_ok=True)
    os.chmod(target, 0o777)  # copytree copied the shipped directory's mode
    with pytest.raises(Exception, match="(?i)writable"):
        load_bundle(target, None, settle=0)


def test_redteam_policy_init_force_does_not_write_through_symlinked_subdirectories(tmp_path):
    """init --force follows a symlinked subdirectory of DIR (level.is_dir() follows links):
    whoever can write DIR (a policy kept under a user's home, a shared checkout) points
    DIR/tests at any directory and root's `pyauthz policy init --force DIR` writes the shipped
    test files there."""
    from authz.policytools.init import init_policy

    target = tmp_path / "policies"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "tests").symlink_to(elsewhere)
    try:
        init_policy(target, cli.shipped_policy_dir(), force=True)
    except Exception:  # noqa: BLE001 - refusing is a fix too
        pass
    assert list(elsewhere.iterdir()) == [], "files written through DIR/tests -> elsewhere"


# ----------------------------------------------------------------- 5. fail open on errors

def test_redteam_host_interface_lookup_failure_is_not_no_such_interface(monkeypatch):
    """_host_link treats every failure of socket.if_nametoindex as 'no such interface'. glibc
    returns 0 (Python: 'no interface with this name') also when it cannot open its helper
    socket: EMFILE/ENFILE under load, or a sandbox that denies socket() (a drop-in
    tightening RestrictAddressFamilies= or PrivateNetwork=, which also makes every host link
    invisible). Then `docker network create -o com.docker.network.bridge.name=br-host`
    takes over the host's bridge with no host-interface fact: fail OPEN. Expected: a lookup
    that cannot be made is refused, or counted as a host link."""
    from authz.decoding.checks import drivers

    def failing(name):
        raise OSError(24, "Too many open files")  # what an EMFILE looks like from Python

    monkeypatch.setattr(drivers.socket, "if_nametoindex", failing)
    try:
        facts = drivers.network_option_facts(
            "bridge", {"com.docker.network.bridge.name": "lo"}, "Options")
    except Exception:  # noqa: BLE001 - a refusal is fail-closed
        return
    assert any(f.kind == "host-interface" for f in facts), facts
