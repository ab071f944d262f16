"""The servers a benchmark run measures, as processes it starts and stops.

Each server is a gunicorn master (``python -m authz serve``, or ``python -m bench.allow_all``
for the floor) on a unix socket in the run's temp dir. A pyauthz server without
``--docker-host`` gets its own ``bench.dockerd_standin``, which passes pyauthz's reads of
dockerd through that same plugin, as dockerd does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import NamedTuple

from bench import client as bench_client
from bench import workload
from bench.paths import REPO_ROOT, child_env, module_argv

SERVER_KINDS = {
    # name: (description, checks denies)
    "floor": ("python -m bench.allow_all: parses the JSON, allows everything (gthread)", False),
    "floor-pw": ("the floor under pyauthz's worker class (authz.worker.PluginWorker)", False),
    "pyauthz": ("python -m authz serve, decision log to a file", True),
    "pyauthz-devnull": ("python -m authz serve, decision log to /dev/null", True),
}

# The handshake dockerd makes, byte for byte: a server is up when it answers this.
ACTIVATE_CALL = workload.Call(
    "activate", "Activate", "",
    b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\n"
    b"User-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\n"
    b"Accept: application/vnd.docker.plugins.v1.2+json\r\n\r\n",
    False)


class ServerSpec(NamedTuple):
    """One entry of ``--servers``: as written, its kind, and its gunicorn workers x threads."""

    spec: str
    kind: str
    workers: int
    threads: int


def file_safe(name: str) -> str:
    """name with everything but letters, digits, '-' and '_' turned into '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


class Server:
    """One measured server: its command lines, its processes, its socket and its stderr log."""

    def __init__(self, name: str, kind: str, workers: int, threads: int, tmp: str,
                 policy_dir: str, docker_host: str | None):
        self.name = name
        self.kind = kind
        self.workers = workers
        self.config = f"{workers}x{threads}"
        safe = file_safe(name)
        self.socket = os.path.join(tmp, f"{safe}.sock")
        self.log = os.path.join(tmp, f"{safe}.stderr")
        self.checks_denies = SERVER_KINDS[kind][1]
        # gthread for the floor (a naive Flask plugin), pyauthz's own for the rest
        self.worker_class = "gthread" if kind == "floor" else "PluginWorker"
        self.decision_log: str | None = None
        self.standin_argv: list[str] | None = None
        common = ["--socket", self.socket, "--workers", str(workers), "--threads", str(threads)]
        if kind == "floor":
            self.argv = module_argv("bench.allow_all", *common)
        elif kind == "floor-pw":
            self.argv = module_argv("bench.allow_all", *common,
                                    "--worker-class", "authz.worker.PluginWorker")
        else:
            self.argv = self._pyauthz_argv(common, tmp, safe, policy_dir, docker_host)
        self.proc: subprocess.Popen | None = None
        self.standin: subprocess.Popen | None = None

    def _pyauthz_argv(self, common: list[str], tmp: str, safe: str, policy_dir: str,
                      docker_host: str | None) -> list[str]:
        """pyauthz's command line; sets the decision log and, without docker_host, the stand-in's."""
        if self.kind == "pyauthz":
            self.decision_log = os.path.join(tmp, f"{safe}-decisions.log")
        else:
            self.decision_log = "/dev/null"
        argv = module_argv("authz", "serve", *common,
                           "--policy", policy_dir, "--log-file", self.decision_log)
        if docker_host:
            return argv + ["--docker-host", docker_host]
        # pyauthz's own reads of dockerd go to a stand-in that passes them through
        # the plugin (nested AuthZReq/AuthZRes) and answers as dockerd did.
        standin_socket = os.path.join(tmp, f"{safe}-dockerd.sock")
        self.standin_argv = module_argv("bench.dockerd_standin",
                                        "--socket", standin_socket, "--plugin", self.socket)
        return argv + ["--docker-host", f"unix://{standin_socket}"]

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (and its stand-in); return once it is ready, else RuntimeError."""
        self._launch()
        self._wait_until_ready(timeout)

    def _launch(self) -> None:
        """Start the processes, each in its own session, stdout and stderr to self.log."""
        env = child_env()
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=env, stdout=err, stderr=err,
                                         start_new_session=True)
            if self.standin_argv:
                self.standin = subprocess.Popen(self.standin_argv, cwd=REPO_ROOT, env=env,
                                                stdout=err, stderr=err, start_new_session=True)

    def _wait_until_ready(self, timeout: float) -> None:
        """Wait until every worker is forked and a handshake succeeds on a fresh connection."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.stderr_tail())
            if self.standin is not None and self.standin.poll() is not None:
                raise RuntimeError(f"{self.name}'s dockerd stand-in exited:\n"
                                   + self.stderr_tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n"
                                   + self.stderr_tail())
            if len(self.worker_pids()) >= self.workers and self._handshake():
                return
            time.sleep(0.1)

    def _handshake(self) -> bool:
        """True when the server answers dockerd's Plugin.Activate as an authz plugin."""
        try:
            conn = bench_client.RawConn(self.socket)
        except OSError:
            return False
        try:
            status, body = conn.roundtrip(ACTIVATE_CALL)
            return status == 200 and json.loads(body) == {"Implements": ["authz"]}
        except (OSError, ValueError, ConnectionError):
            return False
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        """The gunicorn master's children: its workers."""
        if self.proc is None:
            return []
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []

    def stderr_tail(self, n: int = 30) -> str:
        """The last n lines the server and its stand-in wrote."""
        try:
            with open(self.log, errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the stand-in, then the server gracefully (killing its session after 15 s)."""
        if self.standin is not None and self.standin.poll() is None:
            self.standin.terminate()
            self.standin.wait(10)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn master: graceful stop of workers
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only our processes
            self.proc.wait()
