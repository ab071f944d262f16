"""Serving on a socket systemd passed (socket activation, issue 10): `pyauthz serve` started
the way systemd and systemd-socket-activate start it (the listening socket on fd 3,
LISTEN_FDS=1, LISTEN_PID = the pid that execs pyauthz) serves on that socket; gunicorn's
master (that same pid) takes it; its path, inode and mode are kept through a reload and a
stop; no stale-socket cleanup touches it; what pyauthz cannot serve on is refused."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authz import serve as serve_module
from authz.reload import pid_path, state_path
from authz.serve import InheritedSocket, InheritedSocketError, ServeOptions, inherited_socket

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"

# What systemd does before it execs ExecStart=: the listening socket on fd 3, LISTEN_FDS and
# LISTEN_PID (this process's pid, which exec keeps). argv: KIND PATH COUNT -- COMMAND...
LAUNCH = r"""
import os, socket, sys
kind, path, count = sys.argv[1], sys.argv[2], sys.argv[3]
command = sys.argv[sys.argv.index("--") + 1:]
if kind == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o600)
    if kind == "unix":
        s.listen(8)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)  # as systemd passes it
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=count)
os.execv(command[0], command)
"""


def launch(kind: str, path: Path, *args: str, count: str = "1", **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-c", LAUNCH, kind, str(path), count, "--",
           sys.executable, "-m", "authz", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]]
                                                     if env.get("PYTHONPATH") else []))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, **popen)


def activate(path: Path) -> dict:
    """POST /Plugin.Activate over the socket, as dockerd's first call."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(str(path))
        s.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        s.close()


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sock(tmp_path):
    # A unique plugin name: its state and pid files live in /run/pyauthz/NAME.*.
    path = tmp_path / f"pz-sd-{os.getpid()}-{time.monotonic_ns() % 10**6}.sock"
    yield path
    for leftover in (path, state_path(str(path)), pid_path(str(path))):
        try:
            os.unlink(leftover)
        except OSError:
            pass


# ----------------------------------------------------------------------------- in process

def test_no_variables_no_inherited_socket(monkeypatch):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    assert inherited_socket() is None


def test_variables_for_another_process_are_not_ours(monkeypatch):
    # As sd_listen_fds(3) and gunicorn.systemd.listen_fds: LISTEN_PID names who may take it.
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert inherited_socket() is None
    assert os.environ["LISTEN_FDS"] == "1"  # left alone


@pytest.mark.parametrize("fds, message", [("2", "exactly one"), ("x", "not numbers")])
def test_unusable_counts_are_refused(monkeypatch, fds, message):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", fds)
    with pytest.raises(InheritedSocketError, match=message):
        inherited_socket()


def test_inherited_serve_never_runs_the_stale_socket_cleanup(monkeypatch, tmp_path):
    path = str(tmp_path / "p.sock")
    calls = []
    monkeypatch.setattr(serve_module, "inherited_socket",
                        lambda requested=None: calls.append(requested) or InheritedSocket(3, path))
    monkeypatch.setattr(serve_module, "prepare_socket_path",
                        lambda p: pytest.fail("the stale-socket cleanup ran on systemd's socket"))
    ran = []
    monkeypatch.setattr(serve_module._GunicornApp, "run", lambda self: ran.append(self))
    serve_module.serve(lambda: None, ServeOptions(socket_path=path, inherited=True))
    assert calls == [path] and len(ran) == 1


def test_inherited_serve_refuses_when_the_variables_are_gone(monkeypatch, tmp_path):
    monkeypatch.setattr(serve_module, "inherited_socket", lambda requested=None: None)
    monkeypatch.setattr(serve_module._GunicornApp, "run",
                        lambda self: pytest.fail("gunicorn would bind a socket of its own"))
    with pytest.raises(InheritedSocketError):
        serve_module.serve(lambda: None, ServeOptions(socket_path=str(tmp_path / "p.sock"),
                                                      inherited=True))


# ----------------------------------------------------------------------------- pyauthz serve

def test_serve_on_the_socket_systemd_passed(sock, tmp_path):
    log = tmp_path / "decisions.jsonl"
    # No --socket: the path is the inherited socket's own (state and pid files follow it).
    proc = launch("unix", sock, "serve", "--policy", str(POLICIES), "--log-file", str(log),
                  "--docker-host", "", "--workers", "2",
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        state = wait_for(lambda: read_json(state_path(str(sock))), what="the state file")
        assert state["pid"] == proc.pid  # LISTEN_PID's process loaded the policy...
        before = os.stat(sock)
        assert activate(sock) == {"Implements": ["authz"]}
        # ...and is gunicorn's master (its pid file), which took the socket.
        master = int(wait_for(lambda: pid_path(str(sock)).read_text().strip()
                              if pid_path(str(sock)).exists() else "", what="the pid file"))
        assert master == proc.pid
        after = os.stat(sock)
        assert (after.st_ino, after.st_mode, after.st_uid) == \
            (before.st_ino, before.st_mode, before.st_uid)
        assert stat.S_ISSOCK(after.st_mode) and stat.S_IMODE(after.st_mode) == 0o600

        proc.send_signal(signal.SIGHUP)  # the safe reload, on the same socket
        wait_for(lambda: (read_json(state_path(str(sock))) or {}).get("reloads") == 1,
                 what="the reload")
        assert activate(sock) == {"Implements": ["authz"]}
        assert os.stat(sock).st_ino == before.st_ino
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode("utf-8", "replace")
    assert proc.returncode == 0, out
    assert "taking the listening socket" in out and str(sock) in out
    # Stopped cleanly, and systemd's socket file is still there: gunicorn never unlinks a
    # socket it took from LISTEN_FDS (systemd removes it when the socket unit stops).
    assert os.stat(sock).st_ino == before.st_ino
    assert not pid_path(str(sock)).exists()


def test_explicit_socket_must_be_the_inherited_one(sock, tmp_path):
    proc = launch("unix", sock, "serve", "--socket", str(tmp_path / "other.sock"),
                  "--policy", str(POLICIES), "--docker-host", "",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"systemd passed the socket {sock}" in err
    assert sock.exists() and not (tmp_path / "other.sock").exists()
    # The same path given explicitly is fine (the unit may say --socket).
    os.unlink(sock)  # a fresh socket from "systemd" for the second start
    proc = launch("unix", sock, "serve", "--socket", str(sock), "--policy", str(POLICIES),
                  "--docker-host", "", "--workers", "1",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: read_json(state_path(str(sock))), what="the state file")
        assert activate(sock) == {"Implements": ["authz"]}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and sock.exists()


@pytest.mark.parametrize("kind, count, message", [
    ("tcp", "1", "dockerd needs a unix stream socket"),
    ("unlistened", "1", "is not listening"),
    ("unix", "2", "exactly one"),
])
def test_sockets_pyauthz_cannot_serve_on_are_refused(sock, kind, count, message):
    proc = launch(kind, sock, "serve", "--policy", str(POLICIES), "--docker-host", "",
                  count=count, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and message in err, err
    if kind != "tcp":
        assert sock.exists()  # never unlinked
