"""rules.yaml ``mode: audit`` in front of a real dockerd: the policy's denies are logged as
would-be denies and the request goes through; the built-in floor still denies."""

from __future__ import annotations

import pytest

from tests.support.dockerd import BUSYBOX_IMAGE, assert_cli_denied

BB = BUSYBOX_IMAGE
BUSYBOX = "/bin/busybox"


@pytest.fixture(scope="module")
def audit_env(start_docker_env, tmp_path_factory):
    import shutil

    from tests.support.dockerd import SHIPPED_POLICIES, TEST_TRUST_EXCEPTIONS, add_trust_exceptions

    directory = tmp_path_factory.mktemp("audit") / "policies"
    shutil.copytree(SHIPPED_POLICIES, directory)
    add_trust_exceptions(directory, TEST_TRUST_EXCEPTIONS)
    rules = directory / "rules.yaml"
    rules.write_text(rules.read_text().replace("\nversion: 1\n", "\nversion: 1\nmode: audit\n", 1))
    return start_docker_env(policy_dir=directory)


def creates(env, since):
    return [d for d in env.wait_decisions(
        since, lambda found: any(d.get("endpoint") == "container.create" and d["phase"] == "request"
                                 for d in found))
            if d.get("endpoint") == "container.create" and d["phase"] == "request"]


def test_the_plugin_says_loudly_it_is_in_audit_mode(audit_env):
    out = audit_env.plugin_output.read_text()
    assert "AUDIT MODE" in out, out


def test_a_privileged_run_runs_and_the_log_shows_the_would_be_deny(audit_env):
    env = audit_env
    since = env.log_mark()
    r = env.docker("run", "--rm", "--privileged", "--network", "none", BB, BUSYBOX, "echo", "ran",
                   check=False)
    assert "authorization denied" not in r.stderr, r.stderr
    if r.returncode != 0:
        # The plugin allowed the create and the start; a host that cannot give a container
        # every capability (a nested, unprivileged test machine) fails in runc instead.
        assert "OCI runtime" in r.stderr or "runc" in r.stderr, r.stderr
    else:
        assert r.stdout == "ran\n"
    line = creates(env, since)[0]
    assert line["allow"] is True and line["violations"] == []
    assert ("privileged", "deny") in [(v["rule"], v["effect"]) for v in line["audit_violations"]]
    if "mode" in line:  # the log field (docs/decision-log.md) when the log carries it
        assert line["mode"] == "audit"
    starts = [d for d in env.decisions(since)
              if d.get("endpoint") == "container.start" and d["phase"] == "request"]
    assert starts and starts[0]["allow"] is True    # the stored configuration: audited too
    assert "privileged" in {v["rule"] for v in starts[0]["audit_violations"]}


def test_the_floor_is_still_denied(audit_env):
    env = audit_env
    before = env.container_ids()
    since = env.log_mark()
    r = env.docker("run", "--rm", "--privileged", "-v", "/:/h", BB, BUSYBOX, "true", check=False)
    assert_cli_denied(env, r, "host-path-protected")
    assert "[privileged]" not in r.stderr and "[host-path-roots]" not in r.stderr
    assert env.container_ids() == before
    line = creates(env, since)[0]
    assert line["allow"] is False
    assert {v["rule"] for v in line["violations"]} == {"host-path-protected"}
    assert {"privileged", "host-path-roots"} <= {v["rule"] for v in line["audit_violations"]}
    r = env.docker("run", "--rm", "-v", "/var/run/docker.sock:/s", BB, BUSYBOX, "true", check=False)
    assert_cli_denied(env, r, "host-path-protected")


def test_a_refusal_is_still_denied(audit_env):
    env = audit_env
    status, _, body = env.api("POST", "/v1.41/containers/create",
                              body=b'{"Image": "x", "HostConfig": {"Privileged": true, '
                                   b'"privileged": false}}',
                              headers={"Content-Type": "application/json"})
    assert status == 403 and b"request-ambiguous" in body, body
