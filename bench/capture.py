"""Record the plugin calls a real dockerd makes for the benchmark's session.

Needs root, ``dockerd`` (docker.io), the ``docker`` CLI and a static busybox. It starts
a throw-away dockerd (vfs, no iptables, no bridge) with two authz plugins in a chain:
``bench.allow_all --record`` first, then the real pyauthz (``python -m authz serve``,
the repo's policies without trust.yaml, ``--docker-host`` pointing at this dockerd). It
imports ``local/busybox:1`` (before pyauthz joins the chain, by SIGHUP), then runs

    docker run --rm local/busybox:1 true
    docker ps
    docker run --rm --privileged --network host -v /:/host local/busybox:1 true
    docker image inspect local/busybox:1        (only to record dockerd's answer)

and writes every AuthZReq/AuthZRes call of each command to ``bench/session.json`` (the
workload ``bench.run`` replays). Because the recorder sits first in the chain it also
sees the calls caused by pyauthz's own reads of dockerd (``GET /containers/ID/json`` on a
start), with dockerd's answer in their AuthZRes: ``bench.dockerd_standin`` serves those
answers during the benchmark. Not needed to run the benchmark: the file is committed;
capture again when dockerd, the CLI or the plugin's own lookups change. From the repo root:

    sudo python3 -m bench.capture [--out bench/session.json] [--no-pyauthz]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from bench.paths import REPO_ROOT, SESSION_FILE, SHIPPED_POLICY_DIR, module_argv

COMMANDS = [
    ("run", ["run", "--rm", "local/busybox:1", "true"]),
    ("ps", ["ps"]),
    ("run_privileged", ["run", "--rm", "--privileged", "--network", "host",
                        "-v", "/:/host", "local/busybox:1", "true"]),
    ("image_inspect", ["image", "inspect", "local/busybox:1"]),
]
# Commands whose failure is expected: denied by pyauthz, or unable to start in a sandbox
# without the capabilities a privileged container gets (its create is recorded first).
MAY_FAIL = {"run_privileged"}


@dataclass
class Sandbox:
    """The throw-away dockerd's files and sockets (in tmp) and its two plugins' names and sockets."""

    tmp: str
    recorder_name: str = field(init=False)
    recorder_socket: str = field(init=False)
    pyauthz_name: str = field(init=False)
    pyauthz_socket: str = field(init=False)
    daemon_json: str = field(init=False)
    record: str = field(init=False)
    docker_socket: str = field(init=False)
    cli_env: dict = field(init=False)

    def __post_init__(self) -> None:
        """Name everything after tmp and this process's id."""
        self.recorder_name = f"pyauthz-bench-rec-{os.getpid()}"
        self.recorder_socket = f"/run/docker/plugins/{self.recorder_name}.sock"
        self.pyauthz_name = f"pyauthz-bench-pz-{os.getpid()}"
        self.pyauthz_socket = f"/run/docker/plugins/{self.pyauthz_name}.sock"
        self.daemon_json = self.path("daemon.json")
        self.record = self.path("calls.jsonl")
        self.docker_socket = self.path("docker.sock")
        self.cli_env = dict(os.environ, DOCKER_HOST=f"unix://{self.docker_socket}",
                            DOCKER_CONFIG=self.path("cli"))

    def path(self, name: str) -> str:
        """A path inside the sandbox's temp dir."""
        return os.path.join(self.tmp, name)


def wait_for(path: str, proc: subprocess.Popen, seconds: float) -> None:
    """Wait until path exists; exit if proc ends first or seconds pass."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise SystemExit(f"process exited ({proc.returncode}) before creating {path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.1)


def read_calls(record: str) -> list[dict]:
    """The calls the recorder has appended so far."""
    if not os.path.exists(record):
        return []
    with open(record, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM proc and wait for it (20 s, then SIGKILL)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse_args() -> argparse.Namespace:
    """--out and --no-pyauthz."""
    parser = argparse.ArgumentParser(description="record a docker session's plugin calls")
    parser.add_argument("--out", default=SESSION_FILE)
    parser.add_argument("--no-pyauthz", action="store_true",
                        help="record with allow_all alone (no plugin self-calls)")
    return parser.parse_args()


def find_busybox() -> str:
    """busybox's path; exits unless root with busybox, dockerd and the docker CLI."""
    if os.geteuid() != 0:
        raise SystemExit("capture.py starts a dockerd: run it as root")
    busybox = shutil.which("busybox")
    if not busybox or not shutil.which("dockerd") or not shutil.which("docker"):
        raise SystemExit("needs busybox (static), dockerd and the docker CLI")
    return busybox


def write_plugin_chain(box: Sandbox, names: list[str]) -> None:
    """daemon.json naming the authorization plugins dockerd calls, in order."""
    with open(box.daemon_json, "w") as fh:
        json.dump({"authorization-plugins": names}, fh)


def start_recorder(box: Sandbox) -> subprocess.Popen:
    """bench.allow_all recording every call, up on its plugin socket."""
    recorder = subprocess.Popen(
        module_argv("bench.allow_all", "--socket", box.recorder_socket,
                    "--workers", "1", "--threads", "4", "--record", box.record), cwd=REPO_ROOT)
    wait_for(box.recorder_socket, recorder, 20)
    return recorder


def start_dockerd(box: Sandbox) -> subprocess.Popen:
    """The throw-away dockerd, once its socket exists and the docker CLI reaches it (or 20 s)."""
    dockerd = subprocess.Popen(
        ["dockerd", "--data-root", box.path("data"),
         "--exec-root", box.path("exec"), "-H", f"unix://{box.docker_socket}",
         "--pidfile", box.path("dockerd.pid"), "--iptables=false",
         "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
         "--config-file", box.daemon_json],
        stdout=open(box.path("dockerd.log"), "w"), stderr=subprocess.STDOUT)
    wait_for(box.docker_socket, dockerd, 60)
    for _ in range(100):
        if subprocess.run(["docker", "version"], env=box.cli_env,
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    return dockerd


def import_busybox_image(box: Sandbox, busybox: str) -> None:
    """local/busybox:1: a root filesystem of busybox with sh and true."""
    rootfs = box.path("rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
    for applet in ("sh", "true"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", "local/busybox:1"], stdin=tar.stdout,
                   env=box.cli_env, check=True, capture_output=True)
    tar.wait()


def start_pyauthz(box: Sandbox) -> subprocess.Popen:
    """pyauthz on the shipped policy without trust.yaml, reading this dockerd, up on its socket."""
    policy = box.path("policies")
    shutil.copytree(SHIPPED_POLICY_DIR, policy)
    if os.path.exists(os.path.join(policy, "trust.yaml")):
        os.unlink(os.path.join(policy, "trust.yaml"))
    pyauthz = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "--socket", box.pyauthz_socket, "--policy", policy,
         "--log-file", box.path("decisions.log"), "--workers", "2",
         "--threads", "4", "--docker-host", f"unix://{box.docker_socket}"],
        cwd=REPO_ROOT, stderr=open(box.path("pyauthz.log"), "w"))
    wait_for(box.pyauthz_socket, pyauthz, 30)
    return pyauthz


def chain_pyauthz(box: Sandbox, dockerd: subprocess.Popen) -> None:
    """Put pyauthz after the recorder in dockerd's plugin chain (SIGHUP)."""
    write_plugin_chain(box, [box.recorder_name, box.pyauthz_name])
    dockerd.send_signal(signal.SIGHUP)
    time.sleep(2)  # dockerd reloads its configuration asynchronously


def session_entry(call: dict) -> dict | None:
    """A recorded AuthZReq/AuthZRes as session.json keeps it; None for other calls."""
    phase = call["path"].rsplit(".", 1)[-1]  # AuthZReq / AuthZRes
    if phase not in ("AuthZReq", "AuthZRes"):
        return None
    raw = base64.b64decode(call["body_b64"]).decode()
    body = json.loads(raw)
    agent = (body.get("RequestHeaders") or {}).get("User-Agent", "")
    # "raw" is the exact body dockerd sent (Go's encoder: HTML-escaped,
    # newline-terminated); "body" is the same, parsed, for reading. "origin":
    # "client" for the docker CLI's requests, "plugin" for pyauthz's own reads.
    return {"phase": phase, "plugin_headers": call["headers"],
            "origin": "client" if agent.startswith("Docker-Client/")
            else "plugin", "raw": raw, "body": body}


def record_command(box: Sandbox, label: str, argv: list[str]) -> dict:
    """Run one docker command; the plugin calls it caused."""
    before = len(read_calls(box.record))
    done = subprocess.run(["docker", *argv], env=box.cli_env, capture_output=True, text=True)
    # The privileged run may fail to start in a sandbox (no capabilities to
    # grant); only its create call matters, and it is recorded before that.
    if done.returncode != 0 and label not in MAY_FAIL:
        raise SystemExit(f"docker {' '.join(argv)} failed: {done.stderr}")
    time.sleep(0.5)  # let the last AuthZRes land
    calls = [entry for entry in map(session_entry, read_calls(box.record)[before:]) if entry]
    return {"label": label, "argv": ["docker", *argv], "calls": calls}


def record_session(box: Sandbox, with_pyauthz: bool) -> dict:
    """The versions, and each of COMMANDS with its calls: session.json's content."""
    session = {"recorded_with_pyauthz": with_pyauthz,
               "dockerd": subprocess.run(["dockerd", "--version"], capture_output=True,
                                         text=True).stdout.strip(),
               "cli": subprocess.run(["docker", "--version"], capture_output=True,
                                     text=True).stdout.strip(),
               "commands": []}
    for label, argv in COMMANDS:
        session["commands"].append(record_command(box, label, argv))
    return session


def write_session(session: dict, out: str) -> None:
    """session as indented JSON to out, then a summary of its calls on stdout."""
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(session, fh, indent=1)
        fh.write("\n")
    for command in session["commands"]:
        print(" ".join(command["argv"]))
        for call in command["calls"]:
            b = call["body"]
            print(f"  {call['origin']:<6}  {call['phase']}  {b.get('RequestMethod')} "
                  f"{b.get('RequestUri')}  {b.get('ResponseStatusCode', '')}")
    print(f"wrote {out}")


def remove_sandbox(tmp: str) -> None:
    """Unmount what dockerd left under tmp (netns, vfs layers), deepest first; remove tmp."""
    with open("/proc/mounts", encoding="utf-8") as fh:
        mounts = [line.split()[1] for line in fh if line.split()[1].startswith(tmp + "/")]
    for mount in sorted(mounts, reverse=True):
        subprocess.run(["umount", mount], capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Record the session into --out."""
    args = parse_args()
    busybox = find_busybox()
    box = Sandbox(tempfile.mkdtemp(prefix="pyauthz-capture-"))
    recorder = dockerd = pyauthz = None
    try:
        write_plugin_chain(box, [box.recorder_name])
        recorder = start_recorder(box)
        dockerd = start_dockerd(box)
        import_busybox_image(box, busybox)
        if not args.no_pyauthz:
            pyauthz = start_pyauthz(box)
            chain_pyauthz(box, dockerd)
        write_session(record_session(box, not args.no_pyauthz), args.out)
    finally:
        stop(dockerd)
        stop(pyauthz)
        stop(recorder)
        remove_sandbox(box.tmp)


if __name__ == "__main__":
    main()
