"""Decisions that need dockerd's current state: a container's stored configuration is
checked again when it is started, so a bind source swapped for a symlink after the create
is caught, and so is a container created while the policy allowed more."""

import os
import shutil
import uuid


from tests.support.dockerd import BUSYBOX_IMAGE, add_trust_exceptions, assert_cli_denied

TRUE = ["/bin/busybox", "true"]


def test_bind_source_swapped_for_a_symlink_after_create(docker_env, bind_dir):
    env = docker_env
    source = bind_dir / "data"
    source.mkdir()
    name = f"swap-{uuid.uuid4().hex[:8]}"
    cid = env.docker("create", "--name", name, "-v", f"{source}:/data", BUSYBOX_IMAGE, *TRUE).stdout.strip()
    try:
        # A writer (another container sharing bind_dir, say) replaces the directory.
        shutil.rmtree(source)
        os.symlink("/etc", source)
        result = env.docker("start", cid, check=False)
        assert_cli_denied(env, result, "host-path-protected", "host-path-roots")
        state = env.docker("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "created"
    finally:
        env.docker("rm", "-f", name, check=False)


def test_unchanged_container_starts(docker_env, bind_dir):
    env = docker_env
    (bind_dir / "ok").mkdir()
    result = env.docker("run", "--rm", "-v", f"{bind_dir / 'ok'}:/ok", BUSYBOX_IMAGE, *TRUE,
                        check=False)
    assert result.returncode == 0, result.stderr


def _loose_then_strict(start_docker_env, tmp_path, rule, create_args):
    """A pair whose policy lifts ``rule`` while a container is created with ``create_args``,
    then is reloaded (SIGHUP) without that exception. Returns (env, container name)."""
    policy = tmp_path / "policies"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "..", "policies"), policy)
    add_trust_exceptions(policy, ["docker.io/local/busybox"])
    rules = policy / "rules.yaml"
    strict = rules.read_text()
    assert "\nexceptions:\n" in strict
    rules.write_text(strict.replace("\nexceptions:\n", f"""\nexceptions:
  - id: temporary
    rules: [{rule}]
    subjects: ["*"]
    reason: a test of reloads
""", 1))
    env = start_docker_env(policy_dir=policy)
    name = f"loose-{uuid.uuid4().hex[:8]}"
    cid = env.docker("create", "--name", name, *create_args, BUSYBOX_IMAGE, *TRUE).stdout.strip()
    rules.write_text(strict)
    env.reload_policy()
    return env, cid


def test_container_created_under_a_looser_policy_cannot_start(start_docker_env, tmp_path):
    """A privileged container made while an exception allowed it is refused at start once the
    exception is gone."""
    env, name = _loose_then_strict(start_docker_env, tmp_path, "privileged", ["--privileged"])
    result = env.docker("start", name, check=False)
    assert_cli_denied(env, result, "privileged")


def test_volumes_from_a_container_with_a_bind_outside_the_roots(start_docker_env, tmp_path):
    """An admin's container made under an exception lends its bind to nobody."""
    outside = f"/var/tmp/pyauthz-test-{uuid.uuid4().hex[:8]}"
    env, name = _loose_then_strict(start_docker_env, tmp_path, "host-path-roots",
                                   ["-v", f"{outside}:/hostdir:ro"])
    try:
        before = env.container_ids()
        result = env.docker("create", "--volumes-from", name, BUSYBOX_IMAGE, *TRUE, check=False)
        assert_cli_denied(env, result, "host-path-roots")
        assert env.container_ids() == before
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_named_bind_volume_is_looked_up_at_create(docker_env, bind_dir):
    """A volume's options are set at volume create; a symlink in its device swapped later is
    seen when a container mounts it."""
    env = docker_env
    target = bind_dir / "dir"
    target.mkdir()
    vol = f"vv-{uuid.uuid4().hex[:8]}"
    env.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={target}", vol)
    try:
        shutil.rmtree(target)
        os.symlink("/etc", target)
        before = env.container_ids()
        result = env.docker("create", "-v", f"{vol}:/x", BUSYBOX_IMAGE, *TRUE, check=False)
        assert_cli_denied(env, result, "host-path-protected")
        assert env.container_ids() == before
    finally:
        env.docker("volume", "rm", "-f", vol, check=False)
