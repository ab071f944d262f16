"""``pyauthz serve --workers 2 --metrics-listen 127.0.0.1:PORT`` (issue 10, item 4): /metrics
sums every worker's counters (prometheus-client multiprocess mode, one directory the master
owns), survives worker replacement, reports reloads; /health is 200 only while decisions are
made and logged. No dockerd: decisions are sent to the plugin socket as dockerd sends them."""

from __future__ import annotations

import base64
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.dockerd import REPO_ROOT, SHIPPED_POLICIES


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def authz_req(sock: str, method: str, uri: str, body=None) -> dict:
    """One AuthZReq on a new connection (so that both workers take some)."""
    doc = {"User": "", "UserAuthNMethod": "", "RequestMethod": method, "RequestUri": uri,
           "RequestHeaders": {"Content-Type": "application/json"}}
    if body is not None:
        data = json.dumps(body).encode()
        doc["RequestBody"] = base64.b64encode(data).decode()
        doc["RequestHeaders"]["Content-Length"] = str(len(data))
    conn = _Unix(sock)
    try:
        conn.request("POST", "/AuthZPlugin.AuthZReq", body=json.dumps(doc).encode())
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text (labels in any order), 0 when absent."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric == name and set(filter(None, rest.rstrip("}").split(","))) == want:
            return float(value)
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def full_fs(tmp_path):
    """A small tmpfs of our own for the decision log, to fill up (root)."""
    mount = tmp_path / "logfs"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler


def test_metrics_and_health_across_two_workers(tmp_path, full_fs):
    policy = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES, policy)
    sock = str(tmp_path / "pyauthz-metrics-test.sock")
    log = full_fs / "decisions.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "--workers", "2", "--threads", "8",
         "--socket", sock, "--policy", str(policy), "--log-file", str(log),
         "--docker-host", "", "--metrics-listen", f"127.0.0.1:{port}"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.err", "wb"))
    try:
        wait_for(lambda: os.path.exists(sock) and get(base + "/health")[0] == 200,
                 what="/health 200")
        status, body = get(base + "/health")
        assert status == 200 and json.loads(body)["healthy"] is True, body

        # The multiprocess directory: the master's, private, in /run/pyauthz.
        [directory] = glob.glob(f"/run/pyauthz/pyauthz-metrics-test.metrics.{proc.pid}.*")
        assert os.stat(directory).st_mode & 0o777 == 0o700

        workers = wait_for(lambda: len(children(proc.pid)) == 2 and children(proc.pid),
                           what="two workers")
        allowed, denied = 60, 20
        for _ in range(allowed):
            assert authz_req(sock, "GET", "/v1.41/containers/json")["Allow"] is True
        for _ in range(denied):
            answer = authz_req(sock, "POST", "/v1.41/containers/create",
                               {"Image": "busybox", "HostConfig": {"Privileged": True}})
            assert answer["Allow"] is False and "[privileged]" in answer["Msg"]

        # Both workers decided, each in its own file; /metrics is their sum.
        wrote = {int(f.rsplit("_", 1)[1].removesuffix(".db"))
                 for f in os.listdir(directory) if f.startswith("counter_")}
        assert set(workers) <= wrote, (workers, wrote)
        status, text = get(base + "/metrics")
        assert status == 200
        assert sample(text, "pyauthz_decisions_total", phase="request",
                      endpoint="container.list", outcome="allow") == allowed
        assert sample(text, "pyauthz_decisions_total", phase="request",
                      endpoint="container.create", outcome="deny") == denied
        assert sample(text, "pyauthz_decision_rules_total", phase="request",
                      endpoint="container.create", rule="privileged", effect="deny") == denied
        pings = sample(text, "pyauthz_decisions_total", phase="request", endpoint="system.ping",
                       outcome="allow")
        assert pings >= 1  # a /health probe is a real decision (reused for 2 s)
        assert sample(text, "pyauthz_decision_duration_seconds_count",
                      phase="request") == allowed + denied + pings
        state = json.loads(Path("/run/pyauthz/pyauthz-metrics-test.state.json").read_text())
        assert sample(text, "pyauthz_policy_revision_info",
                      revision=state["revision"][:12]) == 1
        assert sample(text, "pyauthz_policy_last_reload_ok") == 1
        assert sample(text, "pyauthz_decision_log_write_failures_total") == 0

        # A reload replaces both workers: their counts stay in the sums.
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: sample(get(base + "/metrics")[1], "pyauthz_policy_reloads_total",
                                result="ok") == 1, what="the reload")
        wait_for(lambda: len(children(proc.pid)) == 2 and not set(children(proc.pid)) & set(workers),
                 what="new workers")
        assert authz_req(sock, "GET", "/v1.41/containers/json")["Allow"] is True
        text = get(base + "/metrics")[1]
        assert sample(text, "pyauthz_decisions_total", phase="request",
                      endpoint="container.list", outcome="allow") == allowed + 1

        # A reload that fails: counted, and the last reload is not ok.
        (policy / "rules.yaml").write_text("rules: [this is not a rule\n")
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: sample(get(base + "/metrics")[1], "pyauthz_policy_reloads_total",
                                result="failed") == 1, what="the failed reload")
        text = get(base + "/metrics")[1]
        assert sample(text, "pyauthz_policy_last_reload_ok") == 0
        assert sample(text, "pyauthz_policy_revision_info", revision=state["revision"][:12]) == 1

        # The decision log's filesystem fills up: decisions are denied, /health says so.
        filler = fill(full_fs)
        wait_for(lambda: authz_req(sock, "GET", "/v1.41/containers/json")["Allow"] is False,
                 what="a decision that cannot be logged")
        time.sleep(2.1)  # a probe's result is reused for 2 s (health.PROBE_TTL_SECONDS)
        status, body = get(base + "/health")
        assert status == 503 and "decision log" in json.loads(body)["detail"], body
        text = get(base + "/metrics")[1]
        failures = sample(text, "pyauthz_decision_log_write_failures_total")
        assert failures >= 2
        assert sample(text, "pyauthz_decisions_total", phase="request",
                      endpoint="container.list", outcome="error") >= 1
        # Space again: healthy again.
        filler.unlink()
        wait_for(lambda: get(base + "/health")[0] == 200, what="/health 200 again")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        print((tmp_path / "serve.err").read_text(errors="replace")[-3000:])
    # The master removed its directory on the way out.
    assert not glob.glob(f"/run/pyauthz/pyauthz-metrics-test.metrics.{proc.pid}.*")


def test_a_non_loopback_metrics_address_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "authz", "serve", "--socket",
                        str(tmp_path / "x.sock"), "--metrics-listen", "0.0.0.0:9102"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--metrics-listen-any" in r.stderr, r.stderr
    assert not (tmp_path / "x.sock").exists()
