"""Red team of issue 9: holes found in the new facts, replay and bounded cost.

Each test states what dockerd (or the live plugin) does and fails while pyauthz disagrees.
"""

import json
import threading
import time
from pathlib import Path

from authz.decoding import Lookups, decode
from authz.plugin import Plugin
from authz.policy import Policy
from authz.policytools.replay import replay
from authz.protocol import REQUEST_PHASE, AuthzRequest, Headers
from tests.unit.test_facts_issue9 import CID, IMAGE_ID, Dockerd, facts, image
from tests.unit.test_replay import DOCKER, Lines, SHIPPED, outcome, raw_call, write_log

NO_ROOT_RULE = """
  - id: no-root
    effect: deny
    match:
      fact: user.root
      values: ["true", "unknown"]
    message: Containers run as a non-root user.
    fix: docker run -u 1000:1000
"""


def _policy_with(tmp_path, extra_rules: str) -> Path:
    import shutil

    target = tmp_path / "policy"
    shutil.copytree(SHIPPED, target)
    rules = target / "rules.yaml"
    text = rules.read_text()
    rules.write_text(text.replace("\nexceptions:\n", extra_rules + "\nexceptions:\n", 1))
    return target


def _call(uri, body):
    data = json.dumps(body).encode()
    return AuthzRequest(phase=REQUEST_PHASE, method="POST", uri=uri, body=data,
                        headers=Headers({"Content-Type": "application/json",
                                         "Content-Length": str(len(data))}))


def _stored_container(host_config, user="1000"):
    return {"Id": CID, "Name": "/web", "Image": IMAGE_ID,
            "Config": {"Image": "busybox", "User": user}, "HostConfig": host_config,
            "Mounts": []}


# ----------------------------------------------------------------------- pids-limit at update

def test_update_that_removes_the_pids_limit_reports_pids_limit_unset():
    """dockerd (API >= 1.40) applies `docker update --pids-limit -1` (or 0) to the running
    container at once: PidsLimit <= 0 is "unlimited" (postContainerUpdate). The fact table
    says pids-limit is reported "on create and stored", so a rule scoped to creation, as
    docs/policy.md's pids-limit-required example is, never sees the limit being removed,
    and an unscoped one sees it only at the next start (the container already runs without
    it)."""
    docker = Dockerd(images={"busybox": image("1000")},
                     containers={CID: _stored_container({"PidsLimit": 100})})
    found = facts({"PidsLimit": -1}, docker, kinds=("pids-limit",),
                  uri=f"/v1.41/containers/{CID}/update")
    assert ("pids-limit", "unset") in found


# ----------------------------------------------------------------------- bounded cost

def test_many_port_bindings_cost_is_bounded():
    """A create body under 1 MiB with 200 ports x 200 bindings is 40,000 distinct
    port.publish facts, each put through Casbin by the shipped ports-on-all-interfaces rule:
    seconds of CPU per request (bench.worst_inputs aims at 50 ms), and the memo of every
    port rule is flushed 20 times over. It must be refused (like 600 host paths) or cheap."""
    plugin = Plugin(Policy.load(SHIPPED), None, Dockerd(), logger=Lines())
    doc = {"Image": "busybox", "User": "1000", "HostConfig": {"PortBindings": {
        str(port): [{"HostPort": str(20000 + b)} for b in range(200)]
        for port in range(1, 201)}}}
    assert len(json.dumps(doc, separators=(",", ":"))) < 1024 * 1024
    started = time.process_time()
    decision = plugin.decide(_call("/v1.41/containers/create", doc))
    spent = time.process_time() - started
    refused = [v.rule for v in decision.violations if v.rule.startswith("request-")]
    assert refused or spent < 0.5, f"{spent:.2f} s of CPU for one decision"


# ----------------------------------------------------------------------- replay exactness

def test_replay_keeps_a_request_state_refusal_made_after_the_policy(tmp_path):
    """Image trust takes the lookup slot (lookups.use()) after the rules were evaluated; when
    none is free the decision is refused request-state, but decision.request is already set,
    so the line has all_facts and is replayed as if nothing had been refused, with no image
    trust at all (its images list is empty): replay against the very same policy predicts
    "newly allowed" for an image trust.yaml would deny. docs/policy.md: request-* refusals
    are kept as recorded."""

    class Trust:
        def check_run(self, reference, deadline=None):
            from authz.trust.result import TrustResult
            return TrustResult.unsigned(reference, found="no signature", fix="sign it")

        check_pull = check_service = check_run

    lines = Lines()
    live = Plugin(Policy.load(SHIPPED), Trust(), DOCKER, logger=lines)
    live.slots = threading.BoundedSemaphore(1)
    live.slots.acquire()            # every lookup slot held by other decisions
    live.handle(REQUEST_PHASE, raw_call("POST", "/v1.41/containers/create",
                                        {"Image": "busybox", "User": "1000", "HostConfig": {}}))
    (doc,) = [json.loads(line) for line in lines.lines]
    assert [v["rule"] for v in doc["violations"]] == ["request-state"]
    report = replay([str(write_log(tmp_path / "log", [doc]))], Policy.load(SHIPPED))
    (decision,) = report.decisions
    assert decision.predicted == outcome(doc), (decision.change, decision.predicted)


# ----------------------------------------------------------------------- user.root

def test_a_create_whose_image_dockerd_lacks_still_says_who_it_runs_as(tmp_path):
    """A create without User whose image the plugin's inspect does not find reports no
    user.root fact at all, and is allowed under a no-root rule. dockerd looks the image up
    again after the plugin answered: a `docker pull` (or `docker tag`) finishing in between
    (the caller runs both) creates a container as the image's default user, root, that no
    rule saw. Fail closed: user.root=unknown when the image cannot be read."""
    policy = _policy_with(tmp_path, NO_ROOT_RULE)
    plugin = Plugin(Policy.load(policy), None, Dockerd(images={}), logger=Lines())
    decision = plugin.decide(_call("/v1.41/containers/create",
                                   {"Image": "busybox:1.36", "HostConfig": {}}))
    assert any(f.kind == "user.root" for f in decision.request.facts)
    assert not decision.allow


# ----------------------------------------------------------------------- legacy start

def test_a_legacy_start_without_a_host_config_reports_only_the_stored_one():
    """dockerd (API < 1.24) reads a start body as a new HostConfig only when its
    Content-Length is over 7 bytes (postContainersStart); `{}` or `null` changes nothing.
    pyauthz runs the always-reported checks on the absent HostConfig and reports
    readonly-rootfs=false, memory-limit=unset, pids-limit=unset, no-new-privileges=false for
    a container stored with all four: false facts (a deny under the docs' rules, and wrong
    audit and replay measurements)."""
    docker = Dockerd(containers={CID: _stored_container({
        "ReadonlyRootfs": True, "Memory": 64 << 20, "PidsLimit": 100,
        "SecurityOpt": ["no-new-privileges"]})})
    for body in ({}, None):
        data = json.dumps(body).encode()
        assert len(data) <= 7
        call = AuthzRequest(phase=REQUEST_PHASE, method="POST",
                            uri=f"/v1.23/containers/{CID}/start", body=data,
                            headers=Headers({"Content-Type": "application/json",
                                             "Content-Length": str(len(data))}))
        found = {(f.kind, f.value) for f in decode(call, Lookups(docker)).facts}
        for wrong in (("readonly-rootfs", "false"), ("memory-limit", "unset"),
                      ("pids-limit", "unset"), ("no-new-privileges", "false")):
            assert wrong not in found, (body, wrong)


# ----------------------------------------------------------------------- secrets in the log

def test_credentials_in_the_query_of_a_url_value_never_reach_the_log():
    """`docker import URL` and `docker build URL` put the URL in the query (fromSrc=,
    remote=); a pre-signed object-store URL or a git URL with ?private_token= carries its
    credential in the URL's own query, not in userinfo, and redact_uri logs it whole.
    docs/decision-log.md: no credentials in the log."""
    from urllib.parse import quote

    secret = "s3cr3tSIGNATURE"
    uris = [
        "/v1.41/images/create?fromSrc=" + quote(
            "https://bucket.s3.amazonaws.com/img.tar?X-Amz-Credential=AKIAEXAMPLE"
            f"&X-Amz-Signature={secret}", safe="") + "&repo=team/app",
        "/v1.41/build?remote=" + quote(
            f"https://git.example.com/team/app.git?private_token={secret}", safe=""),
    ]
    lines = Lines()
    live = Plugin(Policy.load(SHIPPED), None, DOCKER, logger=lines)
    for uri in uris:
        live.handle(REQUEST_PHASE, raw_call("POST", uri))
    assert len(lines.lines) == len(uris)
    for line in lines.lines:
        assert secret not in line, json.loads(line)["uri"]
