"""The docker CLI translation (authz.policytools.docker_cli) against the real docker CLI.

A real dockerd 20.10 runs with one authorization plugin, ``bench.allow_all --record``,
which allows everything and records every AuthZReq. Each command line below is run with
the real Debian docker.io 20.10 CLI (``/usr/bin/docker``: a newer CLI earlier on PATH would
send other bodies) and the calls dockerd forwarded are compared with ``api_calls()`` for
the same argv: method, URI (path and query) and headers exactly, the JSON body parsed and
equal, and whether dockerd forwarded a body with what ``to_authz_request`` says.

Normalized before comparing, and nothing else:
- container and exec ids dockerd handed out (64 hex in a path) and the translation's
  placeholder ids, both to ``<ID>``;
- ``HostConfig.Binds`` and a create's ``Env`` sorted (the CLI orders them by iterating a
  Go map); the CLI's config.json has no ``proxies`` (it would add them to ``Env``);
- ``login``: the translation redacts the username and password of the ``/auth`` body;
  this dockerd forwards that body (with the password) to the plugin, while
  ``to_authz_request`` forwards none, as dockerd's source says it should (its
  Content-Length is that of the redacted body).
``-e B`` takes B from the environment in both (set here to a known value).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authz.policytools.docker_cli import api_calls, to_authz_request
from tests.support.dockerd import BUSYBOX_IMAGE, DockerEnv

REAL_CLI = "/usr/bin/docker"
IMG = BUSYBOX_IMAGE
SECCOMP = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}


def _cli_is_20_10() -> bool:
    try:
        out = subprocess.run([REAL_CLI, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return out.stdout.startswith("Docker version 20.10.")


@pytest.fixture(scope="module")
def recorded_env(tmp_path_factory):
    if not _cli_is_20_10():
        pytest.skip(f"{REAL_CLI} is not the docker 20.10 CLI")
    saved = os.environ.get("PYAUTHZ_PLUGIN_CMD")
    os.environ["PYAUTHZ_PLUGIN_CMD"] = (f"{sys.executable} -m bench.allow_all --socket {{socket}} "
                                        "--workers 1 --threads 4 --record {log}")
    os.environ["B"] = "from-the-environment"
    try:
        env = DockerEnv.start(name=f"pyauthz-cli-{os.getpid()}")
    finally:
        if saved is None:
            os.environ.pop("PYAUTHZ_PLUGIN_CMD", None)
        else:
            os.environ["PYAUTHZ_PLUGIN_CMD"] = saved
    env.docker_bin = REAL_CLI
    try:
        yield env, tmp_path_factory.mktemp("cli")
    finally:
        env.close()
        os.environ.pop("B", None)


def _recorded(env: DockerEnv, since: int) -> list[dict]:
    """The AuthZReq bodies the recorder got after byte offset since."""
    with open(env.decision_log, "rb") as fh:
        fh.seek(since)
        lines = fh.read().splitlines()
    out = []
    for line in lines:
        entry = json.loads(line)
        if entry["path"].endswith("AuthZReq"):
            out.append(json.loads(base64.b64decode(entry["body_b64"])))
    return out


_ID = re.compile(r"/[0-9a-f]{64}(?=/|$|\?)")


def _norm_uri(uri: str) -> str:
    return _ID.sub("/<ID>", uri)


def _norm_body(body: bytes | None, uri: str):
    if body is None:
        return None
    doc = json.loads(body)
    if isinstance(doc, dict) and isinstance(doc.get("HostConfig"), dict) and doc["HostConfig"].get("Binds"):
        doc["HostConfig"]["Binds"] = sorted(doc["HostConfig"]["Binds"])
    if isinstance(doc, dict) and "HostConfig" in doc and doc.get("Env"):
        doc["Env"] = sorted(doc["Env"])
    if uri.endswith("/auth"):
        doc["username"] = doc["password"] = "<redacted>"
    return doc


def _commands(tmp: Path) -> list[list[str]]:
    seccomp = tmp / "seccomp.json"
    seccomp.write_text(json.dumps(SECCOMP, indent=2))
    return [
        ["run", "--rm", IMG, "true"],
        ["run", "-d", "--name", "t1", IMG, "sleep", "300"],
        ["create", "--privileged", IMG],
        ["create", "-v", "/srv/x:/data:ro", "-v", "/anon", "-v", "named:/n", "-v", "/srv/y:/y:rslave",
         "--tmpfs", "/run:rw,size=1m", "--tmpfs", "/t", IMG],
        ["create", "--mount", "type=bind,source=/srv,target=/s,readonly,bind-propagation=rslave",
         "--mount", "type=volume,src=v2,dst=/v,volume-driver=local,volume-opt=type=tmpfs,"
         "volume-opt=device=tmpfs,volume-label=a=b",
         "--mount", "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1777", "--mount", "target=/anon", IMG],
        ["create", "--cap-add", "SYS_ADMIN", "--cap-add", "cap_net_raw", "--cap-drop", "ALL", IMG],
        ["create", "--device", "/dev/null:/dev/n:r", "--device", "/dev/zero",
         "--device-cgroup-rule", "c 1:3 rwm", IMG],
        ["create", "--network", "host", "--pid", "host", "--ipc", "host", "--uts", "host",
         "--userns", "host", "--cgroupns", "host", IMG],
        ["create", "--net=none", "--pid=container:t1", "--ipc=container:t1", IMG],
        ["create", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
         "--security-opt", "no-new-privileges", "--security-opt", "label:disable",
         "--security-opt", "systempaths=unconfined", IMG],
        ["create", "--security-opt", f"seccomp={seccomp}", IMG],
        ["create", "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmax=1000",
         "--log-driver", "json-file", "--log-opt", "max-size=1m", "--log-opt", "max-file=2",
         "--restart", "on-failure:3", IMG],
        ["create", "-u", "1000:1000", "-p", "127.0.0.1:8080:80", "-p", "9000-9001:9000-9001/udp",
         "-p", "53", "-p", "[::1]:5353:53/udp", "-P", "--expose", "7000-7001", "--read-only",
         "-m", "64m", "--memory-reservation", "1.5m", "--pids-limit", "0x40", "--runtime", "runc", IMG],
        ["create", "-l", "a=b", "-l", "c", "--cgroup-parent", "/x", "--volume-driver", "local",
         "--name", "named1", "-e", "A=1", "-e", "B", "-e", "UNSET_IN_ENV", "-e", "A=2", "--entrypoint", "/bin/sh",
         "-w", "/tmp", "-it", "--init", "--group-add", "10", "--hostname", "h", "--dns", "1.1.1.1",
         IMG, "-c", "true"],
        ["create", "--health-cmd", "true", "--health-interval", "1m30s", "--health-retries", "3",
         "--health-timeout", "500ms", "--health-start-period", "2s", "--entrypoint=", IMG],
        ["create", "--volumes-from", "t1:ro", "--stop-signal", "SIGTERM", "--stop-timeout", "5",
         "--shm-size", "1m", "--oom-score-adj", "10", "--init=false", "--rm", IMG],
        ["run", "-a", "stdout", "--rm", "-e", "X=<&>", IMG, "true"],
        ["exec", "-u", "0", "-e", "X=1", "-w", "/tmp", "t1", "true"],
        ["exec", "-d", "--privileged", "t1", "true"],
        ["start", "named1"],
        ["pull", "127.0.0.1:5999/team/app:1"],
        ["pull", "127.0.0.1:5999/team/app@sha256:" + "a" * 64],
        ["volume", "create", "-d", "local", "-o", "type=tmpfs", "-o", "device=tmpfs", "--label", "a=b", "v1"],
        ["network", "create", "--internal", "--label", "x=y", "-o", "com.docker.network.driver.mtu=1400",
         "--attachable", "n1"],
        ["ps", "-a", "-n", "3"],
        ["images", "-a", IMG],
        ["info"],
        ["version"],
        ["inspect", "--type", "container", "-s", "t1"],
        ["image", "inspect", IMG],
        ["update", "--memory", "128m", "--memory-swap", "-1", "--pids-limit", "50", "--restart", "always",
         "--cpu-shares", "512", "t1"],
        ["container", "update", "--restart", "on-failure:2", "--kernel-memory", "0", "t1"],
        ["plugin", "enable", "nosuch"],
        ["plugin", "disable", "-f", "nosuch"],
        ["plugin", "rm", "-f", "nosuch", "other"],
        ["plugin", "set", "nosuch", "a=b", "mounts.x.source=/"],
        ["stop", "-t", "1", "t1"],
        ["kill", "-s", "TERM", "named1"],
        ["rm", "-f", "-v", "named1"],
        ["login", "-u", "someone", "-p", "secret", "127.0.0.1:5999"],
    ]


def _compare(argv: list[str], recorded: list[dict]) -> list[str]:
    expected = api_calls(["docker", *argv])
    problems = []
    if len(expected) != len(recorded):
        problems.append(f"{len(recorded)} calls recorded, {len(expected)} translated: "
                        f"{[(r['RequestMethod'], r['RequestUri']) for r in recorded]} vs "
                        f"{[(c.method, c.uri) for c in expected]}")
    for call, real in zip(expected, recorded, strict=False):
        where = f"{call.label} {call.method} {call.uri}"
        if (call.method, _norm_uri(call.uri)) != (real["RequestMethod"], _norm_uri(real["RequestUri"])):
            problems.append(f"{where}: recorded {real['RequestMethod']} {real['RequestUri']}")
            continue
        real_headers = dict(real.get("RequestHeaders") or {})
        if call.uri.endswith("/auth"):  # the redacted body is shorter than the real one
            real_headers["Content-Length"] = call.headers["Content-Length"]
        if call.headers != real_headers:
            problems.append(f"{where}: headers {call.headers} != recorded {real_headers}")
        real_body = base64.b64decode(real["RequestBody"]) if real.get("RequestBody") else None
        if _norm_body(call.body, call.uri) != _norm_body(real_body, call.uri):
            problems.append(f"{where}: body\n  translated {call.body!r}\n  recorded   {real_body!r}")
        forwarded = to_authz_request(call).body is not None
        if forwarded != (real_body is not None) and not call.uri.endswith("/auth"):
            problems.append(f"{where}: to_authz_request forwards a body: {forwarded}, dockerd: "
                            f"{real_body is not None}")
    return problems


def test_translation_matches_the_real_cli(recorded_env):
    env, tmp = recorded_env
    Path("/srv").mkdir(exist_ok=True)
    failures = {}
    for argv in _commands(tmp):
        mark = env.log_mark()
        env.docker(*argv, check=False, timeout=60)
        time.sleep(0.3)  # the last AuthZReq lands
        problems = _compare(argv, _recorded(env, mark))
        if problems:
            failures[" ".join(argv)] = problems
    assert not failures, json.dumps(failures, indent=1)
