"""Health that tells the truth (issue 7, part 6): a real decision through the plugin socket;
unhealthy when decisions cannot be logged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.support.dockerd import REPO_ROOT


def health(env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "authz", "health", "--socket", env.plugin_socket],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_follows_the_decision_log(docker_env, tmp_path):
    r = health(docker_env)
    assert r.returncode == 0 and "healthy" in r.stdout, r.stdout + r.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "authz", "health", "--socket",
                               docker_env.plugin_socket, "--listen", f"127.0.0.1:{port}"],
                              cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
                    assert resp.status == 200 and json.loads(resp.read())["healthy"] is True
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the health listener did not answer")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def test_unwritable_log_is_unhealthy(start_docker_env, tmp_path):
    env = start_docker_env()
    # Make the log a full device: every line fails (ENOSPC) from the next write on.
    log = env.decision_log
    full_mode = os.stat("/dev/full").st_mode & 0o777
    os.rename(log, str(log) + ".old")
    os.symlink("/dev/full", log)
    try:
        r = health(env)
        assert r.returncode == 1 and "decision log" in r.stderr, r.stdout + r.stderr
    finally:
        os.unlink(log)
    assert oct(os.stat("/dev/full").st_mode & 0o777) == oct(full_mode)  # a device is left alone


def test_a_blocked_log_sink_denies_in_bounded_time_and_recovers(start_docker_env):
    """The decision log becomes a FIFO that nobody reads: calls are denied within the bound
    (never hang); once the log is a file again, decisions are made and logged again."""
    env = start_docker_env()
    log = env.decision_log
    os.rename(log, str(log) + ".old")
    os.mkfifo(log, 0o600)
    try:
        started = time.monotonic()
        r = env.docker("ps", check=False, timeout=60)
        assert r.returncode != 0 and "decision log" in r.stderr, r.stderr
        assert time.monotonic() - started < 20
    finally:
        os.unlink(log)
    env.docker("ps")  # a new file at the path: logged again
    assert log.is_file() and log.stat().st_size > 0


def test_a_killed_worker_is_replaced_under_load(start_docker_env):
    env = start_docker_env()
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(env.plugin_proc.pid)],
                                              capture_output=True, text=True).stdout.split()]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    failures = sum(env.docker("ps", "-q", check=False).returncode != 0 for _ in range(20))
    assert failures <= 2  # only a call in flight on the killed worker may fail
    assert env.plugin_proc.poll() is None
    assert health(env).returncode == 0
