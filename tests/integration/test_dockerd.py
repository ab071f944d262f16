"""The plugin in front of a real dockerd, driven by the real docker CLI.

Benign work must pass through untouched; every class of dangerous request must be denied
with its rule id in the CLI's error, and must leave no container (or volume) behind.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.support.dockerd import (
    BUSYBOX_IMAGE,
    assert_api_denied,
    assert_cli_denied,
    dangerous_containers,
)

BB = BUSYBOX_IMAGE
BUSYBOX = "/bin/busybox"


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def env(plugin_and_dockerd):
    return plugin_and_dockerd


@pytest.fixture(scope="module")
def sleeper(env):
    """A running container (``sleep``) to exec into and to share namespaces with."""
    name = unique("sleeper")
    env.docker("run", "-d", "--name", name, "--network", "none", BB, BUSYBOX, "sleep", "600")
    yield name
    env.docker("rm", "-f", name, check=False)


def run_bb(env, *args: str, check: bool = True):
    """``docker run --rm [args] local/busybox:1`` + a command given after ``--``."""
    if "--" in args:
        i = args.index("--")
        opts, cmd = args[:i], args[i + 1:]
    else:
        opts, cmd = args, ("true",)
    return env.docker("run", "--rm", *opts, BB, BUSYBOX, *cmd, check=check)


# --------------------------------------------------------------------------- allowed

def test_run_true(env):
    r = run_bb(env)
    assert r.returncode == 0


def test_run_output(env):
    r = run_bb(env, "--", "echo", "hello-pyauthz")
    assert r.stdout == "hello-pyauthz\n"


def test_ps_and_images(env):
    assert env.docker("ps").returncode == 0
    assert env.docker("ps", "-a", "-q").returncode == 0
    images = env.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert BB in images
    info = json.loads(env.docker("image", "inspect", BB).stdout)
    assert info and info[0]["RepoTags"] == [BB]


def test_info_version_ping(env):
    assert env.docker("version").returncode == 0
    assert env.docker("info").returncode == 0
    status, _, body = env.api("GET", "/_ping")
    assert (status, body) == (200, b"OK")


def full_id(env, name: str) -> str:
    return env.docker("inspect", "--format", "{{.Id}}", name).stdout.strip()


def test_exec(env, sleeper):
    cid = full_id(env, sleeper)
    r = env.docker("exec", cid, BUSYBOX, "echo", "from-exec")
    assert r.stdout == "from-exec\n"
    r = env.docker("exec", "-u", "1000", cid, BUSYBOX, "id", "-u")
    assert r.stdout.strip() == "1000"
    # By name or prefix, dockerd looks the container up again after the plugin's check.
    for ref in (sleeper, cid[:12]):
        assert_cli_denied(env, env.docker("exec", ref, BUSYBOX, "true", check=False),
                          "target-by-id")


def test_cp_both_ways(env, sleeper, tmp_path):
    cid = full_id(env, sleeper)
    src = tmp_path / "in.txt"
    src.write_text("to-ctr\n")
    env.docker("cp", str(src), f"{cid}:/tmp/in.txt")
    env.docker("cp", f"{cid}:/tmp/in.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "to-ctr\n"
    assert_cli_denied(env, env.docker("cp", str(src), f"{sleeper}:/tmp/x", check=False),
                      "target-by-id")


def test_container_lifecycle(env):
    name = unique("life")
    cid = env.docker("create", "--name", name, "--network", "none", BB, BUSYBOX, "sleep", "60").stdout.strip()
    # By name, dockerd looks the container up again after the plugin's check: refused.
    assert_cli_denied(env, env.docker("start", name, check=False), "target-by-id")
    assert_cli_denied(env, env.docker("start", cid[:12], check=False), "target-by-id")
    env.docker("start", cid)
    env.docker("restart", "-t", "1", cid)
    hc = json.loads(env.docker("inspect", name).stdout)[0]["HostConfig"]
    assert hc["Privileged"] is False
    env.docker("logs", name)
    env.docker("stop", "-t", "1", name)
    env.docker("rm", name)
    assert name not in {n for _, n in env.containers_all()}


def test_named_volume(env):
    vol = unique("vol")
    env.docker("volume", "create", vol)
    try:
        run_bb(env, "-v", f"{vol}:/data", "--", "sh", "-c", "echo persisted > /data/f")
        r = run_bb(env, "-v", f"{vol}:/data:ro", "--", "cat", "/data/f")
        assert r.stdout == "persisted\n"
        assert vol in env.docker("volume", "ls", "-q").stdout.split()
    finally:
        env.docker("volume", "rm", "-f", vol, check=False)


def test_tmpfs_volume_with_options(env):
    vol = unique("tmpfsvol")
    env.docker("volume", "create", "--driver", "local", "--opt", "type=tmpfs",
               "--opt", "device=tmpfs", "--opt", "o=size=1m", vol)
    env.docker("volume", "rm", vol)


def test_mount_volume_syntax(env):
    vol = unique("mvol")
    try:
        r = run_bb(env, "--mount", f"type=volume,src={vol},dst=/data", "--", "echo", "ok")
        assert r.stdout == "ok\n"
    finally:
        env.docker("volume", "rm", "-f", vol, check=False)


def test_cap_add_baseline(env):
    run_bb(env, "--cap-add", "NET_BIND_SERVICE")
    run_bb(env, "--cap-add", "CAP_CHOWN", "--cap-add", "kill")


def test_cap_drop_all(env):
    run_bb(env, "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE")
    run_bb(env, "--cap-drop", "ALL")


def test_network_none(env):
    r = run_bb(env, "--network", "none", "--", "echo", "isolated")
    assert r.stdout == "isolated\n"


def test_publish_port(env):
    name = unique("ports")
    env.docker("create", "--name", name, "-p", "127.0.0.1::80", "-p", "127.0.0.1:18080:8080/tcp",
               BB, BUSYBOX, "true")
    hc = json.loads(env.docker("inspect", name).stdout)[0]["HostConfig"]
    assert "80/tcp" in hc["PortBindings"]
    env.docker("rm", name)
    # dockerd runs with --bridge=none: the default network mode has no bridge, but a run
    # with a published port still works (and is what users do).
    run_bb(env, "-p", "127.0.0.1::80")


def test_user_defined_network(env):
    net = unique("net")
    env.docker("network", "create", net)
    try:
        r = run_bb(env, "--network", net, "-p", "127.0.0.1::8080", "--", "echo", "on-net")
        assert r.stdout == "on-net\n"
    finally:
        env.docker("network", "rm", net, check=False)


def test_harmless_bind(env, bind_dir):
    d = bind_dir / "somedir"
    d.mkdir()
    (d / "in.txt").write_text("from-host\n")
    r = run_bb(env, "-v", f"{d}:/x", "--", "sh", "-c", "cat /x/in.txt; echo from-ctr > /x/out.txt")
    assert r.stdout == "from-host\n"
    assert (d / "out.txt").read_text() == "from-ctr\n"
    r = run_bb(env, "--mount", f"type=bind,src={d},dst=/y,readonly", "--", "cat", "/y/in.txt")
    assert r.stdout == "from-host\n"
    run_bb(env, "--mount", f"type=bind,src={d},dst=/z,bind-propagation=rprivate")


def test_safe_security_opts_and_sysctl(env):
    run_bb(env, "--security-opt", "no-new-privileges")
    run_bb(env, "--network", "none", "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
           "--", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")


def test_env_and_labels(env):
    r = run_bb(env, "-e", "FOO=bar", "--label", "a=b", "--", "sh", "-c", "echo $FOO")
    assert r.stdout == "bar\n"


# --------------------------------------------------------------------------- denied

@pytest.fixture
def no_new_container(env):
    """Checks after the test that no container was created (by CLI view and on disk)."""
    before_ids = env.container_ids()
    before_disk = {c["id"] for c in env.containers_on_disk()}
    yield
    bad = dangerous_containers(env)
    after_ids = env.container_ids()
    new_disk = {c["id"] for c in env.containers_on_disk()} - before_disk
    for cid in (after_ids - before_ids) | new_disk:  # don't let one failure spill over
        env.docker("rm", "-f", cid, check=False)
    assert bad == [], f"dangerous containers stored: {bad}"
    assert after_ids == before_ids and not new_disk, "a denied request left a container"


@pytest.fixture
def shared_dir(bind_dir):
    """A directory that is a shared mount point, so that dockerd itself accepts
    bind-propagation=shared/rshared on it (otherwise it refuses: "not a shared mount")."""
    d = bind_dir / "shared"
    d.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True,
                             timeout=10).returncode == 0
    if mounted:
        subprocess.run(["mount", "--make-shared", str(d)], capture_output=True, timeout=10)
    yield d
    if mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=10)


DENIED_RUN_CASES = [
    (["--privileged"], "privileged"),
    (["--network", "host"], "host-network"),
    (["--net=host"], "host-network"),
    (["--pid", "host"], "host-pid"),
    (["--ipc", "host"], "host-ipc"),
    (["--uts", "host"], "host-uts"),
    (["--userns", "host"], "host-userns"),
    (["--cgroupns", "host"], "host-cgroupns"),
    (["--cap-add", "SYS_ADMIN"], "capabilities"),
    (["--cap-add", "ALL"], "capabilities"),
    (["--cap-add", "cap_sys_admin"], "capabilities"),
    (["--cap-add", "NET_ADMIN"], "capabilities"),
    (["--device", "/dev/null"], "devices"),
    (["--device", "/dev/null:/dev/xnull:rwm"], "devices"),
    (["--device-cgroup-rule", "c 1:3 rwm"], "devices"),
    (["--gpus", "all"], "devices"),
    (["-v", "/:/host"], "host-path-protected"),
    (["-v", "/etc:/x"], "host-path-protected"),
    (["-v", "/etc/shadow:/x:ro"], "host-path-protected"),
    (["-v", "/var/run/docker.sock:/s"], "host-path-protected"),
    (["-v", "/run:/r"], "host-path-protected"),
    (["-v", "/var:/v"], "host-path-protected"),
    (["-v", "/usr/../etc:/x"], "host-path-protected"),
    (["--mount", "type=bind,src=/proc,dst=/x"], "host-path-protected"),
    (["--mount", "type=bind,source=/sys,target=/x,readonly"], "host-path-protected"),
    (["--mount", "type=bind,src={shared},dst=/x,bind-propagation=rshared"], "mount-propagation"),
    (["--mount", "type=bind,src={shared},dst=/x,bind-propagation=shared"], "mount-propagation"),
    (["-v", "{shared}:/x:rshared"], "mount-propagation"),
    (["--security-opt", "seccomp=unconfined"], "seccomp-unconfined"),
    (["--security-opt", "seccomp:unconfined"], "seccomp-unconfined"),
    (["--security-opt", "apparmor=unconfined"], "apparmor-unconfined"),
    (["--security-opt", "label=disable"], "selinux-disabled"),
    (["--security-opt", "label:disable"], "selinux-disabled"),
    (["--security-opt", "systempaths=unconfined"], "masked-paths"),
    (["--sysctl", "kernel.msgmax=1"], "unsafe-sysctls"),
]


@pytest.mark.parametrize("args,rule", DENIED_RUN_CASES,
                         ids=[" ".join(a) for a, _ in DENIED_RUN_CASES])
def test_run_denied(env, request, no_new_container, args, rule):
    if any("{shared}" in a for a in args):
        shared = request.getfixturevalue("shared_dir")
        args = [a.replace("{shared}", str(shared)) for a in args]
    name = unique("denied")
    # No --rm: a container wrongly created must still be there for no_new_container.
    r = env.docker("run", "--name", name, *args, BB, BUSYBOX, "true", check=False)
    assert_cli_denied(env, r, rule)
    assert "Fix:" in r.stderr


@pytest.mark.parametrize("mode_flag", ["--network", "--pid", "--ipc"])
def test_shared_namespaces_denied(env, sleeper, no_new_container, mode_flag):
    r = env.docker("create", mode_flag, f"container:{sleeper}", BB, BUSYBOX, "true", check=False)
    assert_cli_denied(env, r, "shared-namespaces")


def test_bind_volume_denied(env):
    vol = unique("bindvol")
    r = env.docker("volume", "create", "--driver", "local", "--opt", "type=none",
                   "--opt", "o=bind", "--opt", "device=/etc", vol, check=False)
    assert_cli_denied(env, r, "host-path-protected")
    assert vol not in env.docker("volume", "ls", "-q").stdout.split()
    assert vol not in {v["name"] for v in env.volumes_on_disk()}


def test_bind_volume_via_mount_denied(env, no_new_container):
    vol = unique("bindvol")
    r = env.docker("run", "--rm", "--mount",
                   f"type=volume,src={vol},dst=/x,volume-driver=local,"
                   "volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/etc",
                   BB, BUSYBOX, "true", check=False)
    assert_cli_denied(env, r, "host-path-protected")
    env.docker("volume", "rm", "-f", vol, check=False)


def test_exec_privileged_denied(env, sleeper):
    r = env.docker("exec", "--privileged", full_id(env, sleeper), BUSYBOX, "true", check=False)
    assert_cli_denied(env, r, "privileged")


def test_update_devices_denied(env, sleeper):
    # The CLI's `docker update` has no --device: use the API as a client could.
    body = {"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/xnull",
                         "CgroupPermissions": "rwm"}]}
    resp = env.api("POST", f"/containers/{sleeper}/update", body)
    assert_api_denied(env, resp, "devices")
    body = {"DeviceCgroupRules": ["a *:* rwm"]}
    resp = env.api("POST", f"/containers/{sleeper}/update", body)
    assert_api_denied(env, resp, "devices")


def test_update_benign_allowed(env, sleeper):
    env.docker("update", "--memory", "64m", "--memory-swap", "128m", sleeper)


def test_all_violations_in_one_message(env, no_new_container):
    r = env.docker("create", "--privileged", "--network", "host", "--pid", "host",
                   "--cap-add", "SYS_ADMIN", "-v", "/:/host",
                   "--security-opt", "seccomp=unconfined",
                   BB, BUSYBOX, "true", check=False)
    rules = ["privileged", "host-network", "host-pid", "capabilities",
             "host-path-protected", "seccomp-unconfined"]
    assert_cli_denied(env, r, *rules)
    # One message: a single deny line from dockerd, with a hint per violation.
    assert r.stderr.count(f"authorization denied by plugin {env.name}") == 1
    assert r.stderr.count("Fix:") >= len(rules)


# --------------------------------------------------------------------------- decision log

def _is_create(decision: dict) -> bool:
    text = "".join(ch for ch in str(decision.get("endpoint", "")).lower() if ch.isalnum())
    return "containerscreate" in text or "containercreate" in text


def test_decision_log_allowed_create(env):
    mark = env.log_mark()
    secret = "hunter2value"
    run_bb(env, "-e", f"SECRET={secret}", "--", "true")
    found = env.wait_decisions(mark, lambda ds: sum(map(_is_create, ds)) >= 2)
    creates = [d for d in found if _is_create(d)]
    phases = sorted(d.get("phase") for d in creates)
    assert phases == ["request", "response"], creates
    for d in creates:
        for key in ("phase", "endpoint", "allow", "violations", "decision_id"):
            assert key in d, f"{key} missing from {d}"
        assert d["allow"] is True
        assert d["violations"] == []
        assert isinstance(d["decision_id"], str) and d["decision_id"]
    assert all(d.get("phase") in ("request", "response") for d in found)
    assert secret not in env.decision_log_text(mark)


def test_decision_log_denied_create(env, no_new_container):
    mark = env.log_mark()
    secret = "hunter2value"
    r = env.docker("create", "--privileged", "-e", f"SECRET={secret}", BB, BUSYBOX, "true",
                   check=False)
    assert_cli_denied(env, r, "privileged")
    found = env.wait_decisions(mark, lambda ds: any(_is_create(d) for d in ds))
    creates = [d for d in found if _is_create(d)]
    # dockerd does not call AuthZRes for a request that AuthZReq denied.
    assert [d.get("phase") for d in creates] == ["request"], creates
    d = creates[0]
    assert d["allow"] is False
    assert "privileged" in [v.get("rule") for v in d["violations"]]
    assert isinstance(d["decision_id"], str) and d["decision_id"]
    assert secret not in env.decision_log_text(mark)
    assert secret not in r.stderr


def test_no_leftover_dangerous_containers(env):
    """After the whole module: nothing privileged or sensitive-bound was ever stored."""
    assert dangerous_containers(env) == []
    assert not [v for v in env.volumes_on_disk()
                if (v["opts"] or {}).get("MountDevice", "").startswith("/etc")]



# --------------------------------------------------------------------------- second pair

def test_second_pair_with_shipped_trust_policy(start_docker_env, shipped_policy_dir_copy):
    """A second plugin+dockerd with another policy dir: the shipped trust policy (no key,
    no exception) denies the unsigned test image, while the session pair allows it."""
    if not (shipped_policy_dir_copy / "trust.yaml").is_file():
        pytest.skip("no image trust policy shipped")
    other = start_docker_env(policy_dir=shipped_policy_dir_copy)
    assert other.policy_dir == shipped_policy_dir_copy
    r = other.docker("run", "--rm", BB, BUSYBOX, "true", check=False)
    assert_cli_denied(other, r, "image-signature")
    assert other.containers_all() == []
