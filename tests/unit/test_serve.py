"""Serving on the unix socket: stale sockets, live ones, and what `pyauthz serve` starts."""

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authz.serve import SocketInUse, prepare_socket_path

ROOT = Path(__file__).resolve().parents[2]


def test_stale_socket_is_removed(tmp_path):
    path = tmp_path / "p.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # nobody listens: stale
    prepare_socket_path(str(path))
    assert not path.exists()


def test_live_socket_is_refused(tmp_path):
    path = tmp_path / "p.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(1)
    try:
        with pytest.raises(SocketInUse):
            prepare_socket_path(str(path))
        assert path.exists()
    finally:
        s.close()


def test_non_socket_is_refused(tmp_path):
    path = tmp_path / "p.sock"
    path.write_text("not a socket")
    with pytest.raises(SocketInUse):
        prepare_socket_path(str(path))


def test_serve_socket_mode_and_clean_stop(tmp_path):
    sock = tmp_path / "run" / "pyauthz.sock"
    proc = subprocess.Popen([sys.executable, "-m", "authz", "serve", "--socket", str(sock),
                             "--log-file", str(tmp_path / "log"), "--workers", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        assert sock.exists(), proc.stderr.read1().decode() if proc.poll() is not None else "no socket"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        # A second server on the same socket refuses to take it over.
        second = subprocess.run([sys.executable, "-m", "authz", "serve", "--socket", str(sock)],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode != 0 and "another process" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert not sock.exists()


def test_serve_refuses_an_invalid_policy(tmp_path):
    (tmp_path / "model.conf").write_text((ROOT / "policies" / "model.conf").read_text())
    (tmp_path / "rules.yaml").write_text("rules: [{id: x}]\n")
    result = subprocess.run([sys.executable, "-m", "authz", "serve", "--policy", str(tmp_path),
                             "--socket", str(tmp_path / "s.sock")],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "rules.yaml:1" in result.stderr


def test_serve_opens_no_gunicorn_control_socket(tmp_path):
    """gunicorn (25.1+) opens a control socket by default ($XDG_RUNTIME_DIR/gunicorn.ctl, else
    ~/.gunicorn/gunicorn.ctl): a second way to scale or stop the plugin (worker add/remove, a
    quick shutdown) beside pyauthz's own, at a path every root gunicorn shares (each unlinks the last one's).
    pyauthz opens none."""
    sock, home, runtime = tmp_path / "pyauthz.sock", tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    runtime.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    proc = subprocess.Popen([sys.executable, "-m", "authz", "serve", "--socket", str(sock),
                             "--log-file", str(tmp_path / "log"), "--workers", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        answered = False
        for _ in range(150):  # the control socket would come once the first worker is up
            if sock.exists():
                client = socket.socket(socket.AF_UNIX)
                try:
                    client.settimeout(5)
                    client.connect(str(sock))
                    client.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    answered = client.recv(100).startswith(b"HTTP/1.1 200")
                except OSError:
                    pass
                finally:
                    client.close()
            if answered:
                break
            time.sleep(0.1)
        assert answered, proc.stderr.read1().decode() if proc.poll() is not None else "no answer"
        time.sleep(1.0)
        assert list(runtime.iterdir()) == [] and list(home.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
