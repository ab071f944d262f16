"""``pyauthz policy test`` against a real dockerd: for each CLI form in a set of cases, the
offline outcome (the plugin's decide, no dockerd) and the live decision of the plugin in front
of a real dockerd agree, outcome and denying rule ids.

The live pair decides with a copy of the shipped policy whose trust.yaml lets the unsigned
test image run (the harness's trust exception); offline cases consult no image trust, so the
two agree on that image. Starts by name and by id are given the container's stored state as
``docker inspect`` shows it (``state:``), as dockerd gives it to the plugin live.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.policy import Policy
from authz.policytools.cases import load_file
from authz.policytools.casetest import run_case, serve_floor
from tests.support.dockerd import BUSYBOX_IMAGE

pytest.importorskip("authz.policytools.docker_cli")

IMG = BUSYBOX_IMAGE

CASES = """\
cases:
  - {name: privileged, docker: "run --rm --privileged IMG true", expect: deny, rules: [privileged]}
  - {name: plain run, docker: "run --rm IMG true", expect: allow}
  - {name: the host's root, docker: "run --rm -v /:/h IMG true", expect: deny,
     rules: [host-path-protected, host-path-roots]}
  - {name: outside the roots, docker: "run --rm -v /opt:/o IMG true", expect: deny,
     rules: [host-path-roots]}
  - {name: under /srv, docker: "run --rm -v BIND:/d IMG true", expect: allow}
  - {name: restart with a host path, docker: "run -d --restart always -v BIND:/d IMG true",
     expect: deny, rules: [auto-restart-host-paths]}
  - {name: cap-add SYS_ADMIN, docker: "run --rm --cap-add SYS_ADMIN IMG true", expect: deny,
     rules: [capabilities]}
  - {name: cap-add CHOWN, docker: "run --rm --cap-add CHOWN IMG true", expect: allow}
  - {name: host pid, docker: "run --rm --pid host IMG true", expect: deny, rules: [host-pid]}
  - {name: seccomp off, docker: "run --rm --security-opt seccomp=unconfined IMG true",
     expect: deny, rules: [seccomp-unconfined]}
  - {name: safe sysctl, docker: "run --rm --sysctl net.ipv4.ip_unprivileged_port_start=0 IMG true",
     expect: allow}
  - {name: unsafe sysctl, docker: "run --rm --sysctl kernel.msgmax=65536 IMG true", expect: deny,
     rules: [unsafe-sysctls]}
  - {name: volume plugin, docker: "volume create -d vendor/vol pyauthz-cases-v", expect: deny,
     rules: [volume-drivers]}
  - {name: macvlan on the host's link, docker: "network create -d macvlan -o parent=eth0 pyauthz-cases-n",
     expect: deny, rules: [host-interfaces]}
  - {name: start by name, docker: "start pyauthz-cases-c", state: {containers: [STORED]},
     expect: deny, rules: [target-by-id]}
  - {name: start by id, docker: "start ID", state: {containers: [STORED]}, expect: allow}
"""


@pytest.fixture
def stored_container(docker_env):
    name = "pyauthz-cases-c"
    docker_env.docker("rm", "-f", name, check=False)
    cid = docker_env.docker("create", "--name", name, IMG, "true").stdout.strip()
    [info] = json.loads(docker_env.docker("inspect", cid).stdout)
    yield cid, info
    docker_env.docker("rm", "-f", cid, check=False)


def live_outcome(env, argv: tuple[str, ...]) -> tuple[str, frozenset[str], str]:
    """Run the real CLI; its outcome and the rules of the first request it was denied."""
    mark = env.log_mark()
    result = env.docker(*argv, check=False)
    denied = [d for d in env.decisions(mark)
              if d.get("phase") == "request" and d.get("allow") is False]
    rules = frozenset(v["rule"] for v in denied[0]["violations"]) if denied else frozenset()
    outcome = "allow" if result.returncode == 0 and not denied else "deny"
    return outcome, rules, result.stderr


def test_policy_test_and_the_live_plugin_agree_on_every_cli_form(docker_env, bind_dir,
                                                                 stored_container, tmp_path):
    cid, info = stored_container
    text = (CASES.replace("IMG", IMG).replace("BIND", str(bind_dir))
            .replace("STORED", json.dumps(info)).replace("start ID", f"start {cid}"))
    path = tmp_path / "live.yaml"
    path.write_text(text)
    policy = Policy.load(Path(docker_env.policy_dir))
    floor = serve_floor(Path(docker_env.policy_dir))
    disagreements = []
    try:
        for case in load_file(path):
            offline = run_case(policy, case, floor)
            live, rules, stderr = live_outcome(docker_env, case.docker)
            row = (f"{case.command}: expected {offline.expected}; policy test "
                   f"{offline.actual} {offline.problems}; live {live} {sorted(rules)}")
            if not offline.passed or live != case.expect or rules != case.rules:
                disagreements.append(row + f"\n  {stderr.strip()[:300]}")
            if case.expect == "deny":
                assert "authorization denied by plugin" in stderr, row
    finally:
        for cleanup in (("volume", "rm", "-f", "pyauthz-cases-v"),
                        ("network", "rm", "pyauthz-cases-n")):
            docker_env.docker(*cleanup, check=False)
        for line in docker_env.docker("ps", "-aq", "--filter", f"volume={bind_dir}",
                                      check=False).stdout.split():
            docker_env.docker("rm", "-f", line, check=False)
    assert not disagreements, "\n".join(disagreements)
