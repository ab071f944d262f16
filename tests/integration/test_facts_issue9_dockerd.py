"""The facts teams ask for (issue 9) through a real dockerd: a copy of the shipped policy
with deny rules on user.root, published ports, the read-only root filesystem and the memory
limit shows what each fact is, as dockerd is asked."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile

import pytest

from tests.support.dockerd import (BUSYBOX_IMAGE, SHIPPED_POLICIES, add_trust_exceptions,
                                   assert_cli_denied, rootfs_layer)

TRUE = ["/bin/busybox", "true"]
NONROOT_IMAGE = "local/busybox-nonroot:1"
RULES = """
  - id: test-no-root
    effect: deny
    match:
      fact: user.root
      values: ["true", "unknown"]
      endpoints: [container.create, exec.create]
    message: Containers run as a non-root user.
    fix: docker run -u 1000
  - id: test-loopback-ports
    effect: deny
    match:
      fact: port.publish
      values: ["*"]
      except: ["127.0.0.1:*"]
    message: Ports on the loopback only.
    fix: docker run -p 127.0.0.1:8080:80
  - id: test-read-only
    effect: deny
    match:
      fact: readonly-rootfs
      values: ["false"]
      endpoints: [container.create]
    message: A read-only root filesystem.
    fix: docker run --read-only
  - id: test-memory
    effect: deny
    match:
      fact: memory-limit
      values: [unset]
      endpoints: [container.create]
    message: A memory limit.
    fix: docker run --memory 64m
"""
# Everything the rules above ask for: each test leaves out one.
OK = ["-u", "1000", "--read-only", "--memory", "64m"]


def _nonroot_archive(path) -> None:
    """An image archive for docker load whose config says USER 1000."""
    layer = rootfs_layer()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = json.dumps({
        "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": TRUE, "Env": ["PATH=/bin"], "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": name, "RepoTags": [NONROOT_IMAGE],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for member, data in ((name, config), ("layer/layer.tar", layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def env(start_docker_env, tmp_path_factory):
    import shutil

    policy = tmp_path_factory.mktemp("issue9") / "policies"
    shutil.copytree(SHIPPED_POLICIES, policy)
    add_trust_exceptions(policy, ["docker.io/local/busybox", "docker.io/local/busybox-nonroot"])
    rules = policy / "rules.yaml"
    text = rules.read_text()
    assert "\nexceptions:\n" in text
    rules.write_text(text.replace("\nexceptions:\n", RULES + "\nexceptions:\n", 1))
    started = start_docker_env(policy_dir=policy)
    archive = tmp_path_factory.mktemp("images") / "nonroot.tar"
    _nonroot_archive(archive)
    started.docker("load", "-i", str(archive), timeout=120)
    return started


def run(env, *args, check=False):
    return env.docker("run", "--rm", *args, check=check)


def test_everything_asked_for_runs(env):
    result = run(env, *OK, BUSYBOX_IMAGE, *TRUE)
    assert result.returncode == 0, result.stderr


def test_the_image_default_user_root_is_denied(env):
    """busybox's image has no USER: it runs as root, read from the image through dockerd."""
    result = run(env, "--read-only", "--memory", "64m", BUSYBOX_IMAGE, *TRUE)
    assert_cli_denied(env, result, "test-no-root")
    assert "image.Config.User" in result.stderr


@pytest.mark.parametrize("user", ["0", "root", "0:1000", "00", "app"])
def test_root_and_unresolvable_users_are_denied(env, user):
    result = run(env, "-u", user, "--read-only", "--memory", "64m", BUSYBOX_IMAGE, *TRUE)
    assert_cli_denied(env, result, "test-no-root")


def test_an_image_with_a_non_root_user_runs_without_u(env):
    result = run(env, "--read-only", "--memory", "64m", NONROOT_IMAGE, *TRUE)
    assert result.returncode == 0, result.stderr
    # ...and it really runs as that user.
    out = run(env, "--read-only", "--memory", "64m", NONROOT_IMAGE, "/bin/busybox", "id", "-u",
              check=True)
    assert out.stdout.strip() == "1000"


def test_exec_as_root_into_a_non_root_container_is_denied(env):
    cid = env.docker("run", "-d", *OK, BUSYBOX_IMAGE, "/bin/busybox", "sleep", "30").stdout.strip()
    try:
        assert env.docker("exec", cid, "/bin/busybox", "true", check=False).returncode == 0
        result = env.docker("exec", "-u", "0", cid, "/bin/busybox", "true", check=False)
        assert_cli_denied(env, result, "test-no-root")
    finally:
        env.docker("rm", "-f", cid, check=False)


def test_ports_on_every_address_are_denied_on_the_loopback_allowed(env):
    result = run(env, *OK, "-p", "8080:80", BUSYBOX_IMAGE, *TRUE)
    assert_cli_denied(env, result, "test-loopback-ports")
    assert "0.0.0.0:8080->80/tcp" in result.stderr
    assert_cli_denied(env, run(env, *OK, "-P", "--expose", "80", BUSYBOX_IMAGE, *TRUE),
                      "test-loopback-ports")
    result = run(env, *OK, "-p", "127.0.0.1:18080:80", BUSYBOX_IMAGE, *TRUE)
    assert result.returncode == 0, result.stderr


def test_a_host_address_go_cannot_parse_is_every_address(env):
    """dockerd reads HostIp with net.ParseIP: '127.0.0.01' is nil, its default address."""
    body = {"Image": BUSYBOX_IMAGE, "User": "1000", "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"ReadonlyRootfs": True, "Memory": 67108864,
                           "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.01", "HostPort": "18081"}]}}}
    response = env.api("POST", "/v1.41/containers/create", body=body)
    assert response.status == 403 and "[test-loopback-ports]" in response.text, response.text


def test_read_only_and_memory_limit_rules(env):
    result = run(env, "-u", "1000", "--memory", "64m", BUSYBOX_IMAGE, *TRUE)
    assert_cli_denied(env, result, "test-read-only")
    result = run(env, "-u", "1000", "--read-only", BUSYBOX_IMAGE, *TRUE)
    assert_cli_denied(env, result, "test-memory")


def test_the_decision_log_has_the_facts_and_no_log_option_value(env):
    mark = env.log_mark()
    run(env, *OK, "--log-driver", "json-file", "--log-opt", "tag=SECRETVALUE", "--label",
        "team=payments", "--pids-limit", "50", "--security-opt", "no-new-privileges",
        BUSYBOX_IMAGE, *TRUE, check=True)
    text = env.decision_log_text(mark)
    assert "SECRETVALUE" not in text
    creates = [d for d in env.decisions(mark) if d.get("endpoint") == "container.create"]
    assert creates
    facts = {(f["kind"], f["value"]) for f in creates[0].get("all_facts", creates[0]["facts"])}
    assert {("log.driver", "json-file"), ("log.option", "tag"), ("label", "team=payments"),
            ("pids-limit", "set"), ("no-new-privileges", "true"), ("readonly-rootfs", "true"),
            ("memory-limit", "set"), ("user", "1000"), ("user.root", "false"),
            ("runtime", "default")} <= facts
