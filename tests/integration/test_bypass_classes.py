"""The bypass classes of the outside review (issue 6), each through a real dockerd.

Where it is safe, a positive control first shows that dockerd (with no plugin) really acts on
the request; then the plugin denies it, names the rule and the fix, and nothing is created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
import yaml

from tests.support.dockerd import (BUSYBOX_IMAGE, BUSYBOX_PATH, assert_api_denied,
                                   assert_cli_denied)

BB = BUSYBOX_IMAGE
TRUE = ["/bin/busybox", "true"]
JSON = [("Content-Type", "application/json")]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def full_id(env, name: str, what: str = "container") -> str:
    args = ("plugin", "inspect") if what == "plugin" else ("inspect",)
    return env.docker(*args, "--format", "{{.Id}}", name).stdout.strip()


def volumes(env) -> set[str]:
    return set(env.docker("volume", "ls", "-q").stdout.split())


def edited_policy(directory, old: str, new: str, trust: bool = True):
    """A copy of the shipped policy in ``directory`` with ``old`` replaced by ``new`` in
    rules.yaml (and the test image's trust exception); returns (dir, rules path, original)."""
    from tests.support.dockerd import SHIPPED_POLICIES, add_trust_exceptions

    policy = directory / "policies"
    shutil.copytree(SHIPPED_POLICIES, policy)
    if trust:
        add_trust_exceptions(policy, ["docker.io/local/busybox"])
    rules = policy / "rules.yaml"
    original = rules.read_text()
    assert old in original
    rules.write_text(original.replace(old, new, 1))
    return policy, rules, original


# --------------------------------------------------------------------------- class 1

@pytest.fixture
def dotdot_after_symlink(bind_dir):
    """``<bind_dir>/lnk/..``: lexically ``<bind_dir>``, to the kernel the parent of
    ``/etc``, i.e. ``/`` (the symlink is followed before the '..')."""
    os.symlink("/etc", bind_dir / "lnk")
    return f"{bind_dir}/lnk/.."


def test_control_volume_device_with_dotdot_after_symlink_mounts_the_host_root(
        control_dockerd, dotdot_after_symlink):
    env = control_dockerd
    vol = unique("ctl")
    env.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
               f"device={dotdot_after_symlink}", vol)
    try:
        r = env.docker("run", "--rm", "-v", f"{vol}:/x:ro", BB, "/bin/busybox", "ls", "/x/etc/hostname")
        assert r.stdout.strip() == "/x/etc/hostname"  # the host's root, not the bind dir
    finally:
        env.docker("volume", "rm", "-f", vol, check=False)


def test_volume_device_with_dotdot_after_symlink_is_refused(docker_env, dotdot_after_symlink):
    env = docker_env
    before = volumes(env)
    r = env.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
                   f"device={dotdot_after_symlink}", unique("v"), check=False)
    assert_cli_denied(env, r, "request-noncanonical")
    assert "Fix:" in r.stderr
    # The same options inline in --mount.
    r = env.docker("run", "--rm", "--mount",
                   f"type=volume,dst=/x,volume-driver=local,volume-opt=type=none,"
                   f"volume-opt=o=bind,volume-opt=device={dotdot_after_symlink}", BB, *TRUE,
                   check=False)
    assert_cli_denied(env, r, "request-noncanonical")
    assert volumes(env) == before


@pytest.mark.parametrize("opts, rule", [
    (["type=overlay", "o=lowerdir=/etc,upperdir=UP,workdir=WORK"], "host-path-protected"),
    (["type=overlay", "o=lowerdir=BIND/a\\:/etc,upperdir=UP,workdir=WORK"], "request-noncanonical"),
    (["type=tmpfs", "device=tmpfs", "o=size=1m,mystery=/etc"], "request-volume-option"),
    (["type=tmpfs", "device=tmpfs", "o= size=1m"], "request-volume-option"),
    (["type=proc", "device=proc"], "volume-types"),
])
def test_local_volume_options_are_judged_as_mount_reads_them(docker_env, bind_dir, opts, rule):
    env = docker_env
    (bind_dir / "up").mkdir()
    (bind_dir / "work").mkdir()
    args = []
    for opt in opts:
        opt = (opt.replace("UP", str(bind_dir / "up")).replace("WORK", str(bind_dir / "work"))
               .replace("BIND", str(bind_dir)))
        args += ["-o", opt]
    before = volumes(env)
    r = env.docker("volume", "create", *args, unique("v"), check=False)
    assert_cli_denied(env, r, rule)
    assert volumes(env) == before


def test_plain_and_tmpfs_volumes_still_work(docker_env, bind_dir):
    env = docker_env
    for args in ([], ["-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m,uid=1000"],
                 ["-o", "type=none", "-o", "o=bind", "-o", f"device={bind_dir}"]):
        vol = unique("ok")
        env.docker("volume", "create", *args, vol)
        try:
            env.docker("run", "--rm", "-v", f"{vol}:/x", BB, "/bin/busybox", "touch", "/x/f")
        finally:
            env.docker("volume", "rm", "-f", vol, check=False)
    env.docker("run", "--rm", "--tmpfs", "/t", BB, *TRUE)


def test_readonly_path_that_only_cleans_to_proc_sys_is_not_counted(docker_env):
    env = docker_env
    body = {"Image": BB, "Cmd": TRUE, "HostConfig": {"ReadonlyPaths": [
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/nonexistent/../sys", "/proc/sysrq-trigger"]}}
    before = env.container_ids()
    assert_api_denied(env, env.api("POST", "/containers/create", body), "masked-paths")
    assert env.container_ids() == before


def test_apparmor_profile_with_whitespace_is_refused(docker_env):
    env = docker_env
    r = env.docker("create", "--security-opt", "apparmor= unconfined", BB, *TRUE, check=False)
    assert_cli_denied(env, r, "request-noncanonical")


# --------------------------------------------------------------------------- classes 2, 7

def make_plugin_dir(root, interface: str, mounts=(), env_settings=()) -> str:
    """A plugin directory for ``docker plugin create`` (busybox as its rootfs)."""
    (root / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX_PATH, root / "rootfs" / "bin" / "busybox")
    config = {
        "description": "pyauthz test plugin",
        "documentation": "https://example.invalid",
        "interface": {"types": [interface], "socket": "p.sock"},
        "entrypoint": ["/bin/busybox", "sleep", "600"],
        "network": {"type": "none"},
        "mounts": list(mounts),
        "env": list(env_settings),
        "linux": {"capabilities": []},
    }
    (root / "config.json").write_text(json.dumps(config))
    return str(root)


@pytest.fixture(scope="module")
def plugin_env(start_docker_env, tmp_path_factory):
    """A pair whose policy lets anyone create plugins from a directory (nothing else)."""
    policy, _, _ = edited_policy(tmp_path_factory.mktemp("plugin-policy"), "\nexceptions:\n", """
exceptions:
  - id: tests-may-create-plugins
    rules: [plugin-privileges, plugin-installs]
    subjects: ["*"]
    endpoints: [plugin.create]
    reason: the test creates plugins from a directory
""")
    return start_docker_env(policy_dir=policy)


def create_plugin(env, tmp_path, interface, **kw) -> tuple[str, str]:
    name = unique("pz-plugin") + ":latest"
    directory = make_plugin_dir(tmp_path / name.split(":")[0], interface, **kw)
    env.docker("plugin", "create", name, directory)
    return name, full_id(env, name, "plugin")


MOUNT = {"name": "data", "source": "/srv", "destination": "/data", "type": "bind",
         "options": ["rbind"], "settable": ["source"]}
DEBUG = {"name": "DEBUG", "value": "0", "settable": ["value"]}


def test_plugin_setting_without_a_field_sets_the_mount_source(plugin_env, tmp_path):
    env = plugin_env
    name, pid = create_plugin(env, tmp_path, "docker.volumedriver/1.0", mounts=[MOUNT],
                              env_settings=[DEBUG])
    try:
        # "data=/etc" has no ".source": dockerd sets the mount's only settable field.
        for setting in ("data=/etc", "data.source=/etc"):
            r = env.docker("plugin", "set", pid, setting, check=False)
            assert_cli_denied(env, r, "host-path-protected", "host-path-roots")
        r = env.docker("plugin", "set", pid, "data=/srv/x/../../etc", check=False)
        assert_cli_denied(env, r, "request-noncanonical")
        source = json.loads(env.docker("plugin", "inspect", pid).stdout)[0]["Config"]["Mounts"][0]["Source"]
        assert source == "/srv"
        env.docker("plugin", "set", pid, "DEBUG=1")          # an env setting is fine
        env.docker("plugin", "set", pid, "data=/srv/plugin-data")  # so is a source under a root
        r = env.docker("plugin", "set", name, "DEBUG=2", check=False)
        assert_cli_denied(env, r, "target-by-id")
        # Enabling it runs it with its mount: a privilege (and a host path outside the roots
        # would be judged too).
        r = env.docker("plugin", "enable", pid, check=False)
        assert_cli_denied(env, r, "plugin-privileges")
    finally:
        env.docker("plugin", "rm", "-f", pid, check=False)


def test_authorization_plugins_cannot_be_changed_through_the_api(plugin_env, tmp_path):
    env = plugin_env
    name, pid = create_plugin(env, tmp_path, "docker.authz/1.0", env_settings=[DEBUG])
    for args in (("plugin", "rm", "-f", pid), ("plugin", "disable", "-f", pid),
                 ("plugin", "set", pid, "DEBUG=1")):
        r = env.docker(*args, check=False)
        assert_cli_denied(env, r, "authz-plugin-protected")
    assert pid in env.docker("plugin", "ls", "--no-trunc", "-q").stdout
    # (It stays: only an admin on the host may remove it; the pair's teardown does.)


# --------------------------------------------------------------------------- class 3

def _loose(start_docker_env, tmp_path, rules_text_extra: str):
    policy, rules, strict = edited_policy(tmp_path, "\nexceptions:\n",
                                          "\nexceptions:\n" + rules_text_extra)
    return start_docker_env(policy_dir=policy), rules, strict


def test_existing_container_is_judged_on_its_stored_state(start_docker_env, tmp_path):
    """A container made while an exception allowed a bind outside the roots: once the
    exception is gone, exec (create, and start of an exec made before), attach and docker cp
    (both ways, and the pre-1.24 copy) are refused too."""
    outside = f"/var/tmp/pyauthz-test-{uuid.uuid4().hex[:8]}"
    env, rules, strict = _loose(start_docker_env, tmp_path, """  - id: temporary
    rules: [host-path-roots]
    subjects: ["*"]
    reason: a test of reloads
""")
    try:
        cid = env.docker("run", "-d", "-v", f"{outside}:/host", "--network", "none", BB,
                         "/bin/busybox", "sleep", "600").stdout.strip()
        exec_id = env.api("POST", f"/containers/{cid}/exec", {"Cmd": TRUE}).json()["Id"]
        rules.write_text(strict)
        env.reload_policy()
        src = tmp_path / "f.txt"
        src.write_text("x")
        for args in (("exec", cid, "/bin/busybox", "true"),
                     ("cp", str(src), f"{cid}:/host/f.txt"),
                     ("cp", f"{cid}:/host", str(tmp_path / "out"))):
            assert_cli_denied(env, env.docker(*args, check=False), "host-path-roots")
        assert not os.path.exists(f"{outside}/f.txt")
        for method, path, body in (
                ("POST", f"/exec/{exec_id}/start", {"Detach": True}),
                ("POST", f"/containers/{cid}/attach?stream=1&stdout=1", None),
                ("GET", f"/containers/{cid}/archive?path=/host", None),
                ("POST", f"/v1.23/containers/{cid}/copy", {"Resource": "/host"})):
            assert_api_denied(env, env.api(method, path, body), "host-path-roots")
        mark = env.log_mark()
        assert env.api("HEAD", f"/containers/{cid}/archive?path=/host").status == 403  # no body
        stat = [d for d in env.decisions(mark) if d["endpoint"] == "container.archive.stat"]
        assert stat and stat[0]["allow"] is False
        assert [v["rule"] for v in stat[0]["violations"]] == ["host-path-roots"]
        env.docker("rm", "-f", cid)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# --------------------------------------------------------------------------- classes 4, 5

def _form_behind_a_tar(path: str, body: bytes) -> bytes:
    """dockerd acts on the first Content-Type (a form), the plugin sees the last (a tar)."""
    return (f"POST {path} HTTP/1.1\r\nHost: docker\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Content-Type: application/x-tar\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def test_control_import_with_a_hidden_form_body_is_a_pull(control_dockerd):
    resp = control_dockerd.raw_request(_form_behind_a_tar(
        "/images/create?fromSrc=-&repo=local/imported", b"fromImage=127.0.0.1:9/nowhere&tag=1"))
    # dockerd tried to pull from the registry the hidden form named.
    assert b"127.0.0.1:9" in resp.body, resp.body


def test_import_is_denied_whatever_its_body(docker_env):
    env = docker_env
    resp = env.raw_request(_form_behind_a_tar(
        "/images/create?fromSrc=-&repo=local/imported", b"fromImage=127.0.0.1:9/nowhere&tag=1"))
    text = assert_api_denied(env, resp, "image-import")
    assert "importers" in text


def test_build_is_denied_by_default_and_allowed_for_builders(docker_env, start_docker_env,
                                                             tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    shutil.copy(BUSYBOX_PATH, context / "busybox")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
    environ_args = ("build", "-q", "-t", "local/built:1", str(context))
    r = docker_env.docker(*environ_args, check=False)
    assert_cli_denied(docker_env, r, "builds")
    assert "builders" in r.stderr
    # The same build by a member of the role builders (every unix-socket caller is anonymous).
    policy, _, _ = edited_policy(tmp_path, "  builders: []", "  builders: [anonymous]")
    env = start_docker_env(policy_dir=policy, import_busybox=False)
    r = env.docker(*environ_args, check=False)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- class 6

@pytest.mark.parametrize("source", ["/var/lib/dpkg", "/var/lib/dpkg/info", "/etc/docker",
                                    "/var/spool/cron", "/root"])
def test_protected_host_paths(docker_env, source):
    r = docker_env.docker("create", "-v", f"{source}:/x", BB, *TRUE, check=False)
    assert_cli_denied(docker_env, r, "host-path-protected")


def test_paths_outside_the_roots_say_how_to_allow_a_root(docker_env):
    r = docker_env.docker("create", "-v", "/opt/pyauthz-data:/x", BB, *TRUE, check=False)
    assert_cli_denied(docker_env, r, "host-path-roots")
    assert "host-path-protected" not in r.stderr
    assert "outside:" in r.stderr


@pytest.fixture(scope="module")
def tmp_root_env(start_docker_env, tmp_path_factory):
    """A pair whose policy allows binds from anywhere under /tmp, where its own dockerd keeps
    its data root, exec root and socket (so only the floor stands in the way)."""
    policy, _, _ = edited_policy(tmp_path_factory.mktemp("tmproot"), "outside: [/srv]",
                                 "outside: [/srv, /tmp]")
    return start_docker_env(policy_dir=policy)


def test_floor_reads_dockerds_roots_from_dockerd(tmp_root_env, tmp_path):
    env = tmp_root_env
    info = json.loads(env.docker("info", "--format", "{{json .}}").stdout)
    data_root = info["DockerRootDir"]
    assert data_root.startswith(str(env.workdir))  # not a default location
    for source, what in ((data_root, "data root"), (f"{env.workdir}/x", "exec root"),
                         (env.docker_socket, "socket"), (str(env.policy_dir), "own files"),
                         (str(env.decision_log.parent), "own files")):
        r = env.docker("create", "-v", f"{source}:/x", BB, *TRUE, check=False)
        assert_cli_denied(env, r, "host-path-protected")
        assert what in r.stderr or "pyauthz" in r.stderr, r.stderr
    ok = tmp_path / "fine"
    ok.mkdir()
    env.docker("run", "--rm", "-v", f"{ok}:/x", BB, *TRUE)


def test_no_exception_opens_the_floor(tmp_path):
    policy, _, _ = edited_policy(tmp_path, "\nexceptions:\n", """
exceptions:
  - id: open-everything
    rules: [host-path-protected]
    subjects: ["*"]
    reason: must not load
""", trust=False)
    r = subprocess.run(["python3", "-m", "authz", "check-policy", str(policy)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "host-path-protected" in r.stderr


# --------------------------------------------------------------------------- class 8

@pytest.mark.parametrize("edit, problem", [
    (("  - id: privileged\n    effect: deny\n", "  - id: privileged\n    effect: deny\n    effect: audit\n"),
     "duplicate key 'effect'"),
    (("      fact: privileged\n", "      fact: priviledged\n"), "matches nothing"),
    (("      values: [swarm.init,", "      values: [swarm.innit,"), "matches nothing"),
])
def test_policy_that_would_silently_mean_something_else_does_not_load(tmp_path, edit, problem):
    policy, _, _ = edited_policy(tmp_path, edit[0], edit[1], trust=False)
    r = subprocess.run(["python3", "-m", "authz", "check-policy", str(policy)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert problem in r.stderr and "rules.yaml:" in r.stderr, r.stderr
    yaml.safe_load((policy / "rules.yaml").read_text())  # PyYAML alone loads it silently


# --------------------------------------------------------------------------- restarts by dockerd

def test_restart_policy_on_a_container_with_host_paths_is_denied(docker_env, bind_dir):
    """dockerd restarts such a container itself, unasked, and mounts its bind source again
    by name: a source swapped for a symlink by then would be mounted unchecked."""
    env = docker_env
    before = env.container_ids()
    r = env.docker("create", "--restart", "always", "-v", f"{bind_dir}:/x", BB, *TRUE, check=False)
    assert_cli_denied(env, r, "auto-restart-host-paths")
    assert env.container_ids() == before
    cid = env.docker("create", "-v", f"{bind_dir}:/x", BB, *TRUE).stdout.strip()
    plain = env.docker("create", "--restart", "unless-stopped", BB, *TRUE).stdout.strip()
    try:
        r = env.docker("update", "--restart", "always", cid, check=False)
        assert_cli_denied(env, r, "auto-restart-host-paths")
        policy = json.loads(env.docker("inspect", cid).stdout)[0]["HostConfig"]["RestartPolicy"]
        assert policy["Name"] in ("", "no")
        env.docker("update", "--restart", "on-failure", plain)
    finally:
        env.docker("rm", "-f", cid, plain, check=False)


# --------------------------------------------------------------------------- volume plugins

def test_volume_plugins_and_plugin_installs_are_denied_by_default(docker_env):
    """A volume plugin answers Mount with a path in its rootfs, joined lexically and mounted
    following symlinks: any host path, with no privilege asked."""
    env = docker_env
    before = volumes(env)
    r = env.docker("volume", "create", "--driver", "vendor/vol:1", unique("v"), check=False)
    assert_cli_denied(env, r, "volume-drivers")
    r = env.docker("create", "--volume-driver", "vendor/vol:1", "-v", "x:/host", BB, *TRUE,
                   check=False)
    assert_cli_denied(env, r, "volume-drivers")
    r = env.docker("create", "--mount", "type=volume,src=x,dst=/host,volume-driver=vendor/vol",
                   BB, *TRUE, check=False)
    assert_cli_denied(env, r, "volume-drivers")
    assert volumes(env) == before
    resp = env.api("POST", "/plugins/pull?remote=127.0.0.1:9/vendor/vol:1&name=vendor/vol:1", [])
    assert_api_denied(env, resp, "plugin-installs")


# --------------------------------------------------------------------------- plugin names

def test_legacy_start_body_cannot_bring_a_volume_driver(docker_env):
    """API < 1.24: the start body replaces the HostConfig, and dockerd copies a top-level
    VolumeDriver into the inner one."""
    env = docker_env
    cid = env.docker("create", BB, *TRUE).stdout.strip()
    try:
        resp = env.api("POST", f"/v1.23/containers/{cid}/start",
                       {"HostConfig": {"Binds": ["pwn:/host"]}, "VolumeDriver": "vendor/vol"})
        assert_api_denied(env, resp, "volume-drivers")
        resp = env.api("POST", f"/v1.23/containers/{cid}/start",
                       {"HostConfig": {"Binds": ["pwn:/host"]},
                        "VolumeDriver": "../../../srv/x/evil"})
        assert_api_denied(env, resp, "request-noncanonical")
    finally:
        env.docker("rm", "-f", cid, check=False)


def test_driver_plugins_are_denied_and_plugin_names_must_be_plain(docker_env):
    env = docker_env
    before = set(env.docker("network", "ls", "-q").stdout.split())
    r = env.docker("network", "create", "-d", "vendor/net", unique("n"), check=False)
    assert_cli_denied(env, r, "driver-plugins")
    r = env.docker("network", "create", "-d", "../../../srv/x/evil", unique("n"), check=False)
    assert_cli_denied(env, r, "request-noncanonical")
    r = env.docker("network", "create", "--ipam-driver", "vendor/ipam", unique("n"), check=False)
    assert_cli_denied(env, r, "driver-plugins")
    assert set(env.docker("network", "ls", "-q").stdout.split()) == before
    r = env.docker("create", "--log-driver", "vendor/log", BB, *TRUE, check=False)
    assert_cli_denied(env, r, "driver-plugins")
    net = unique("ok")
    env.docker("network", "create", "-d", "bridge", net)
    env.docker("network", "rm", net)


# --------------------------------------------------------------------------- host interfaces

def test_networks_cannot_take_over_host_interfaces(docker_env):
    """A bridge named docker0 makes dockerd delete its default network and readdress it;
    a macvlan parent puts containers on the host's own link."""
    env = docker_env
    before = set(env.docker("network", "ls", "-q").stdout.split())
    for args, rule in ((["-o", "com.docker.network.bridge.name=docker0"], "host-interfaces"),
                       (["-d", "macvlan", "-o", "parent=lo"], "host-interfaces"),
                       (["-o", "com.docker.network.bridge.inhibit_ipv4=true"], "request-driver-option")):
        r = env.docker("network", "create", *args, unique("n"), check=False)
        assert_cli_denied(env, r, rule)
    assert set(env.docker("network", "ls", "-q").stdout.split()) == before


@pytest.mark.parametrize("args, rule", [
    (["--cgroup-parent", "/system.slice/docker.service"], "cgroup-parent"),
    (["--security-opt", "apparmor=some-host-profile"], "apparmor-unconfined"),
    (["--security-opt", "label=type:unconfined_service_t"], "selinux-disabled"),
    (["--security-opt", "label=user:unconfined_u"], "selinux-disabled"),
    (["--tmpfs", "/t:rw,rshared"], "mount-propagation"),
    (["--log-driver", "syslog", "--log-opt", "syslog-address=unix:/var/run/docker.sock"],
     "log-sockets"),
])
def test_more_confinement_is_kept(docker_env, args, rule):
    before = docker_env.container_ids()
    r = docker_env.docker("create", *args, BB, *TRUE, check=False)
    assert_cli_denied(docker_env, r, rule)
    assert docker_env.container_ids() == before


def test_run_rm_with_a_create_scoped_exception_completes(start_docker_env, tmp_path):
    """The exception example people copy is scoped to container.create: the start re-check
    honours it, so `docker run --rm` neither fails at start nor hangs."""
    outside = f"/var/tmp/pyauthz-test-{uuid.uuid4().hex[:8]}"
    policy, _, _ = edited_policy(tmp_path, "\nexceptions:\n", """
exceptions:
  - id: var-tmp-at-create
    rules: [host-path-roots]
    subjects: ["*"]
    endpoints: [container.create]
    reason: test
""")
    env = start_docker_env(policy_dir=policy)
    try:
        r = env.docker("run", "--rm", "-v", f"{outside}:/x", BB, *TRUE, check=False, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(outside, ignore_errors=True)
