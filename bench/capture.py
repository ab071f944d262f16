"""Record the plugin calls a real dockerd makes for the benchmark's session.

Needs root, ``dockerd`` (docker.io), the ``docker`` CLI and a static busybox. It starts
a throw-away dockerd (vfs, no iptables, no bridge) with two authz plugins in a chain:
``bench/allow_all.py --record`` first, then the real pyauthz (``python -m authz serve``,
the repo's policies without trust.yaml, ``--docker-host`` pointing at this dockerd). It
imports ``local/busybox:1`` (before pyauthz joins the chain, by SIGHUP), then runs

    docker run --rm local/busybox:1 true
    docker ps
    docker run --rm --privileged --network host -v /:/host local/busybox:1 true
    docker image inspect local/busybox:1        (only to record dockerd's answer)

and writes every AuthZReq/AuthZRes call of each command to ``bench/session.json`` (the
workload ``bench/run.py`` replays). Because the recorder sits first in the chain it also
sees the calls caused by pyauthz's own reads of dockerd (``GET /containers/ID/json`` on a
start), with dockerd's answer in their AuthZRes: ``dockerd_standin.py`` serves those
answers during the benchmark. Not needed to run the benchmark: the file is committed;
capture again when dockerd, the CLI or the plugin's own lookups change.

    sudo python bench/capture.py [--out bench/session.json] [--no-pyauthz]
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

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


def wait_for(path: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise SystemExit(f"process exited ({proc.returncode}) before creating {path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.1)


def read_calls(record: str) -> list[dict]:
    if not os.path.exists(record):
        return []
    with open(record, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="record a docker session's plugin calls")
    parser.add_argument("--out", default=os.path.join(HERE, "session.json"))
    parser.add_argument("--no-pyauthz", action="store_true",
                        help="record with allow_all alone (no plugin self-calls)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("capture.py starts a dockerd: run it as root")
    busybox = shutil.which("busybox")
    if not busybox or not shutil.which("dockerd") or not shutil.which("docker"):
        raise SystemExit("needs busybox (static), dockerd and the docker CLI")

    tmp = tempfile.mkdtemp(prefix="pyauthz-capture-")
    name = f"pyauthz-bench-rec-{os.getpid()}"
    plugin_sock = f"/run/docker/plugins/{name}.sock"
    pz_name = f"pyauthz-bench-pz-{os.getpid()}"
    pz_sock = f"/run/docker/plugins/{pz_name}.sock"
    daemon_json = os.path.join(tmp, "daemon.json")
    record = os.path.join(tmp, "calls.jsonl")
    docker_sock = os.path.join(tmp, "docker.sock")
    env = dict(os.environ, DOCKER_HOST=f"unix://{docker_sock}",
               DOCKER_CONFIG=os.path.join(tmp, "cli"))
    plugin = dockerd = pyauthz = None
    try:
        with open(daemon_json, "w") as fh:
            json.dump({"authorization-plugins": [name]}, fh)
        plugin = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "allow_all.py"), "--socket", plugin_sock,
             "--workers", "1", "--threads", "4", "--record", record], cwd=REPO)
        wait_for(plugin_sock, plugin, 20)
        dockerd = subprocess.Popen(
            ["dockerd", "--data-root", os.path.join(tmp, "data"),
             "--exec-root", os.path.join(tmp, "exec"), "-H", f"unix://{docker_sock}",
             "--pidfile", os.path.join(tmp, "dockerd.pid"), "--iptables=false",
             "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
             "--config-file", daemon_json],
            stdout=open(os.path.join(tmp, "dockerd.log"), "w"), stderr=subprocess.STDOUT)
        wait_for(docker_sock, dockerd, 60)
        for _ in range(100):
            if subprocess.run(["docker", "version"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.2)

        rootfs = os.path.join(tmp, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
        for applet in ("sh", "true"):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", "local/busybox:1"], stdin=tar.stdout,
                       env=env, check=True, capture_output=True)
        tar.wait()

        if not args.no_pyauthz:
            policy = os.path.join(tmp, "policies")
            shutil.copytree(os.path.join(REPO, "policies"), policy)
            if os.path.exists(os.path.join(policy, "trust.yaml")):
                os.unlink(os.path.join(policy, "trust.yaml"))
            pyauthz = subprocess.Popen(
                [sys.executable, "-m", "authz", "serve", "--socket", pz_sock, "--policy", policy,
                 "--log-file", os.path.join(tmp, "decisions.log"), "--workers", "2",
                 "--threads", "4", "--docker-host", f"unix://{docker_sock}"],
                cwd=REPO, stderr=open(os.path.join(tmp, "pyauthz.log"), "w"))
            wait_for(pz_sock, pyauthz, 30)
            with open(daemon_json, "w") as fh:
                json.dump({"authorization-plugins": [name, pz_name]}, fh)
            dockerd.send_signal(signal.SIGHUP)
            time.sleep(2)  # dockerd reloads its configuration asynchronously

        session = {"recorded_with_pyauthz": not args.no_pyauthz,
                   "dockerd": subprocess.run(["dockerd", "--version"], capture_output=True,
                                             text=True).stdout.strip(),
                   "cli": subprocess.run(["docker", "--version"], capture_output=True,
                                         text=True).stdout.strip(),
                   "commands": []}
        for label, argv in COMMANDS:
            before = len(read_calls(record))
            done = subprocess.run(["docker", *argv], env=env, capture_output=True, text=True)
            # The privileged run may fail to start in a sandbox (no capabilities to
            # grant); only its create call matters, and it is recorded before that.
            if done.returncode != 0 and label not in MAY_FAIL:
                raise SystemExit(f"docker {' '.join(argv)} failed: {done.stderr}")
            time.sleep(0.5)  # let the last AuthZRes land
            calls = []
            for call in read_calls(record)[before:]:
                phase = call["path"].rsplit(".", 1)[-1]  # AuthZReq / AuthZRes
                if phase not in ("AuthZReq", "AuthZRes"):
                    continue
                raw = base64.b64decode(call["body_b64"]).decode()
                body = json.loads(raw)
                agent = (body.get("RequestHeaders") or {}).get("User-Agent", "")
                # "raw" is the exact body dockerd sent (Go's encoder: HTML-escaped,
                # newline-terminated); "body" is the same, parsed, for reading. "origin":
                # "client" for the docker CLI's requests, "plugin" for pyauthz's own reads.
                calls.append({"phase": phase, "plugin_headers": call["headers"],
                              "origin": "client" if agent.startswith("Docker-Client/")
                              else "plugin", "raw": raw, "body": body})
            session["commands"].append({"label": label, "argv": ["docker", *argv],
                                        "calls": calls})
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(session, fh, indent=1)
            fh.write("\n")
        for command in session["commands"]:
            print(" ".join(command["argv"]))
            for call in command["calls"]:
                b = call["body"]
                print(f"  {call['origin']:<6}  {call['phase']}  {b.get('RequestMethod')} "
                      f"{b.get('RequestUri')}  {b.get('ResponseStatusCode', '')}")
        print(f"wrote {args.out}")
    finally:
        stop(dockerd)
        stop(pyauthz)
        stop(plugin)
        # dockerd leaves mounts under its roots (netns, vfs layers): unmount, deepest first.
        with open("/proc/mounts", encoding="utf-8") as fh:
            mounts = [line.split()[1] for line in fh if line.split()[1].startswith(tmp + "/")]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", mount], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
