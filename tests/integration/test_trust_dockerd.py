"""Image trust end to end: the real docker CLI -> a private dockerd -> the plugin, which
verifies cosign signatures in a real docker-registry and asks dockerd (through itself)
which local image a create would run.

The signed image is the suite's own busybox image, pushed to the registry and signed there;
the unsigned ones are made with commit, import and load, and by re-tagging.
"""

import re
import shutil
import tarfile
import time

import pytest

from tests.support.cosign import Key, Pusher, write_trust_policy
from tests.support.dockerd import (BUSYBOX_IMAGE, BUSYBOX_PATH, SHIPPED_POLICIES,
                                   assert_cli_denied, write_image_archive)
from tests.support.registry import HangServer, RealRegistry, registry_missing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(registry_missing() is not None, reason=registry_missing() or ""),
]

TRUE = ["/bin/busybox", "true"]


class Setup:
    pass


@pytest.fixture(scope="module")
def trust_env(start_docker_env, tmp_path_factory):
    s = Setup()
    s.key = Key()
    s.registry = RealRegistry(tmp_path_factory.mktemp("registry"))
    s.registry.start()
    host = s.registry.host
    policy_dir = tmp_path_factory.mktemp("trust") / "policies"
    shutil.copytree(SHIPPED_POLICIES, policy_dir)
    write_trust_policy(policy_dir, keys={"team": s.key}, insecure=[host], extra=(
        "exceptions:\n"
        "  - pattern: docker.io/local/busybox\n"
        "    reason: the suite's imported test image\n"))
    try:
        s.policy_dir = policy_dir
        s.env = start_docker_env(policy_dir=policy_dir, name="pyauthz-trust")
        env = s.env
        s.app = f"{host}/team/app"
        s.unsigned = f"{host}/team/unsigned"
        s.digest = push(env, BUSYBOX_IMAGE, f"{s.app}:1")
        Pusher(s.registry.url).sign("team/app", s.digest, s.key)
        push(env, BUSYBOX_IMAGE, f"{s.unsigned}:1")
        env.docker("rmi", f"{s.app}:1")     # pulled again by the tests
        yield s
    finally:
        s.registry.close()


def push(env, source: str, target: str) -> str:
    env.docker("tag", source, target)
    out = env.docker("push", target).stdout
    m = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
    assert m, out
    return m.group(1)


def denied(env, result, *fragments):
    assert result.returncode != 0, result.stdout
    assert "authorization denied by plugin" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def image_id(env, ref: str) -> str:
    return env.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def test_signed_image_pulls_and_runs(trust_env):
    env = trust_env.env
    mark = env.log_mark()
    env.docker("pull", f"{trust_env.app}:1")
    env.docker("run", "--rm", f"{trust_env.app}:1", *TRUE)
    env.docker("run", "--rm", f"{trust_env.app}@{trust_env.digest}", *TRUE)
    text = env.decision_log_text(mark)
    assert trust_env.key.fingerprint in text
    assert trust_env.digest in text


def test_signed_image_runs_by_id(trust_env):
    env = trust_env.env
    env.docker("pull", f"{trust_env.app}:1")
    env.docker("run", "--rm", image_id(env, f"{trust_env.app}:1"), *TRUE)


def test_unsigned_image_is_not_pulled(trust_env):
    env = trust_env.env
    denied(env, env.docker("pull", f"{trust_env.unsigned}:1", check=False), "no signature")


def test_unsigned_repository_does_not_run(trust_env):
    """The image has a digest in team/unsigned (it was pushed there), but no signature."""
    env = trust_env.env
    denied(env, env.docker("run", "--rm", f"{trust_env.unsigned}:1", *TRUE, check=False),
           "no signature")
    env.docker("tag", BUSYBOX_IMAGE, f"{trust_env.unsigned}:local")
    try:
        denied(env, env.docker("run", "--rm", f"{trust_env.unsigned}:local", *TRUE, check=False),
               "no signature")
    finally:
        env.docker("rmi", f"{trust_env.unsigned}:local", check=False)


def committed_image(env, tag: str) -> str:
    cid = env.docker("create", BUSYBOX_IMAGE, *TRUE).stdout.strip()
    try:
        env.docker("commit", "--change", "LABEL evil=1", cid, tag)
    finally:
        env.docker("rm", cid, check=False)
    return image_id(env, tag)


def test_commit_tagged_as_the_signed_name_does_not_run(trust_env):
    env = trust_env.env
    evil = f"{trust_env.app}:commit"
    committed_image(env, evil)
    try:
        denied(env, env.docker("run", "--rm", evil, *TRUE, check=False),
               f"no digest from {trust_env.app}")
    finally:
        env.docker("rmi", evil, check=False)


def test_retag_over_the_signed_tag_does_not_run(trust_env):
    env = trust_env.env
    env.docker("pull", f"{trust_env.app}:1")
    evil_id = committed_image(env, "local/evil:1")
    try:
        env.docker("tag", "local/evil:1", f"{trust_env.app}:1")     # moves the local tag
        denied(env, env.docker("run", "--rm", f"{trust_env.app}:1", *TRUE, check=False),
               evil_id)
    finally:
        env.docker("rmi", f"{trust_env.app}:1", "local/evil:1", check=False)


def test_import_is_denied_and_a_load_does_not_run(trust_env, tmp_path):
    env = trust_env.env
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(str(BUSYBOX_PATH), arcname="bin/busybox")
    imported = f"{trust_env.app}:imported"
    assert_cli_denied(env, env.docker("import", str(rootfs), imported, check=False),
                      "image-import")
    saved = tmp_path / "saved.tar"
    # Another config than the test image's, so that it is another image id.
    write_image_archive(saved, imported, cmd=("/bin/busybox", "echo", "loaded"))
    env.docker("load", "-i", str(saved))
    try:
        denied(env, env.docker("run", "--rm", imported, *TRUE, check=False), "no digest from")
    finally:
        env.docker("rmi", imported, check=False)


def test_unsigned_image_by_id_does_not_run(trust_env):
    env = trust_env.env
    evil_id = committed_image(env, "local/evil:byid")
    try:
        for ref in (evil_id, evil_id.removeprefix("sha256:")[:12]):
            denied(env, env.docker("run", "--rm", ref, *TRUE, check=False))
    finally:
        env.docker("rmi", "local/evil:byid", check=False)


def test_pull_of_every_tag_is_denied(trust_env):
    """`latest` is signed, `2` is not: a pull of every tag would fetch both."""
    env = trust_env.env
    repo = f"{trust_env.registry.host}/team/all"
    digest = push(env, BUSYBOX_IMAGE, f"{repo}:latest")
    Pusher(trust_env.registry.url).sign("team/all", digest, trust_env.key)
    committed_image(env, f"{repo}:2")
    push_only(env, f"{repo}:2")
    env.docker("rmi", f"{repo}:latest", f"{repo}:2")
    try:
        denied(env, env.docker("pull", "--all-tags", repo, check=False), "every tag")
    finally:
        env.docker("rmi", f"{repo}:latest", f"{repo}:2", check=False)


def push_only(env, target: str) -> None:
    env.docker("push", target)


def test_registry_down_with_and_without_a_cached_verification(trust_env, start_docker_env):
    """A verified image still runs while its registry is down (the verification is cached,
    per worker: one worker here); an image never verified is denied."""
    env = start_docker_env(policy_dir=trust_env.policy_dir, name="pyauthz-trust-cache", workers=1)
    env.docker("pull", f"{trust_env.app}:1")
    env.docker("run", "--rm", f"{trust_env.app}:1", *TRUE)
    trust_env.registry.stop()
    try:
        env.docker("run", "--rm", f"{trust_env.app}:1", *TRUE)
        assert "trust_cached" in env.decision_log_text() and '"trust_cached":true' in env.decision_log_text()
        denied(env, env.docker("pull", f"{trust_env.unsigned}:1", check=False), "unreachable")
    finally:
        trust_env.registry.start()


def test_hanging_registry_decision_ends_in_time(trust_env):
    env = trust_env.env
    with HangServer() as hang:
        started = time.monotonic()
        result = env.docker("pull", f"{hang.host}/team/app:1", check=False, timeout=60)
        elapsed = time.monotonic() - started
    denied(env, result)
    assert elapsed < 15, elapsed
