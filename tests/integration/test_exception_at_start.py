"""An exception that lifts a rule at create (endpoints: [container.create]) carries over to
the container's start and attach, through a real dockerd: including the SELinux opt-out
(`label=disable`) that dockerd itself adds to a privileged or host-pid container."""

from __future__ import annotations

import shutil

import pytest

from tests.support.dockerd import (BUSYBOX_IMAGE, SHIPPED_POLICIES, TEST_TRUST_EXCEPTIONS,
                                   add_trust_exceptions)

EXCEPTION = """
  - id: lab-host-pid-and-privileged
    rules: [privileged, host-pid]
    subjects: ["*"]
    images: ["docker.io/local/busybox:*"]
    endpoints: [container.create]
    reason: the suite's test of exceptions carried over to start
"""


@pytest.fixture(scope="module")
def env(start_docker_env, tmp_path_factory):
    directory = tmp_path_factory.mktemp("exc") / "policies"
    shutil.copytree(SHIPPED_POLICIES, directory)
    add_trust_exceptions(directory, TEST_TRUST_EXCEPTIONS)
    rules = directory / "rules.yaml"
    text = rules.read_text()
    assert "\nexceptions:\n" in text
    rules.write_text(text.replace("\nexceptions:\n", "\nexceptions:\n" + EXCEPTION, 1))
    return start_docker_env(policy_dir=directory)


@pytest.mark.parametrize("flag", ["--pid=host", "--privileged"])
def test_a_create_exception_lets_the_start_and_attach_through(env, flag):
    since = env.log_mark()
    env.docker("run", "--rm", flag, "--network", "none", BUSYBOX_IMAGE, "true", check=False)
    found = env.wait_decisions(since, lambda d: any(
        x.get("endpoint") == "container.start" and x["phase"] == "request" for x in d))
    requests = [d for d in found if d["phase"] == "request"
                and d.get("endpoint") in ("container.create", "container.attach", "container.start")]
    assert {d["endpoint"] for d in requests} >= {"container.create", "container.start"}
    for decision in requests:
        assert decision["allow"], decision
    stored = env.api("GET", "/containers/json?all=1")
    assert stored.status == 200
