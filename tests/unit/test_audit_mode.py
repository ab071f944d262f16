"""rules.yaml's ``mode: audit`` (authz/decision.py): the rules' denies are logged as audit
violations (effect "deny": the would-be denies) and the request is allowed; the built-in
floor and the request-* refusals still deny; image trust follows the mode."""

import shutil
from pathlib import Path

import pytest

from authz.decision import Decision
from authz.plugin import Plugin
from authz.policy import Policy, PolicyError
from authz.policy.engine import Violation
from authz.protocol import REQUEST_PHASE
from tests.unit.test_plugin import Events, raw_call

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
CREATE = "/v1.41/containers/create"


def policy_in(tmp_path, mode_line="mode: audit\n", extra=""):
    directory = tmp_path / "policy"
    shutil.copytree(SHIPPED, directory)
    rules = directory / "rules.yaml"
    text = rules.read_text()
    assert "\nversion: 1\n" in text
    rules.write_text(text.replace("\nversion: 1\n", f"\nversion: 1\n{mode_line}", 1) + extra)
    return Policy.load(directory)


def would_deny(line):
    """The rules in audit_violations with effect deny (rule-level audits say "audit")."""
    return {v["rule"] for v in line.get("audit_violations", ()) if v["effect"] == "deny"}


def plugin_for(policy, trust=None):
    events = Events()
    return Plugin(policy, trust, None, logger=events), events


def create(host_config):
    return raw_call("POST", CREATE, {"Image": "busybox", "HostConfig": host_config})


def test_the_mode_is_enforce_unless_said():
    assert Policy.load(SHIPPED).ruleset.mode == "enforce"
    plugin, events = plugin_for(Policy.load(SHIPPED))
    answer = plugin.handle(REQUEST_PHASE, create({"Privileged": True}))
    assert answer["Allow"] is False and "[privileged]" in answer["Msg"]
    assert [v["rule"] for v in events.lines[0]["violations"]] == ["privileged"]
    assert would_deny(events.lines[0]) == set()


def test_a_privileged_create_is_allowed_and_logged_as_a_would_be_deny(tmp_path):
    policy = policy_in(tmp_path)
    assert policy.ruleset.mode == "audit"
    plugin, events = plugin_for(policy)
    answer = plugin.handle(REQUEST_PHASE, create({"Privileged": True, "CapAdd": ["SYS_ADMIN"]}))
    assert answer["Allow"] is True
    line = events.lines[0]
    assert line["allow"] is True and line["violations"] == []
    assert would_deny(line) == {"privileged", "capabilities"}
    assert any(f["kind"] == "privileged" for f in line["facts"])


def test_the_decision_records_the_mode(tmp_path):
    plugin, _ = plugin_for(policy_in(tmp_path))
    from authz.protocol import parse_call

    decision = plugin.decide(parse_call(create({"Privileged": True}), REQUEST_PHASE))
    assert decision.allow and decision.mode == "audit"
    assert [v.rule for v in decision.audits if v.effect == "deny"] == ["privileged"]
    enforce, _ = plugin_for(Policy.load(SHIPPED))
    decision = enforce.decide(parse_call(create({"Privileged": True}), REQUEST_PHASE))
    assert not decision.allow and decision.mode == "enforce"


def test_a_rule_level_audit_stays_an_audit_in_both_modes(tmp_path):
    extra_rule = "\n".join([
        "  - id: watch-sysctls", "    effect: audit", "    match:", "      fact: sysctl",
        "    message: Watching sysctls.", "    fix: None needed.", ""])
    for mode_line, name in (("", "enforce"), ("mode: audit\n", "audit")):
        directory = tmp_path / name
        shutil.copytree(SHIPPED, directory)
        rules = directory / "rules.yaml"
        text = rules.read_text().replace("\nversion: 1\n", f"\nversion: 1\n{mode_line}", 1)
        rules.write_text(text.replace("\nrules:\n", "\nrules:\n" + extra_rule, 1))
        plugin, events = plugin_for(Policy.load(directory))
        sysctls = {"net.ipv4.ip_unprivileged_port_start": "0"}
        answer = plugin.handle(REQUEST_PHASE, create({"Sysctls": sysctls}))
        assert answer["Allow"] is True, name
        assert ("watch-sysctls", "audit") in [
            (v["rule"], v["effect"]) for v in events.lines[0]["audit_violations"]], name
        assert would_deny(events.lines[0]) == set(), name


def test_an_exception_still_lifts_in_audit_mode(tmp_path):
    policy = policy_in(tmp_path, extra="""
  - id: sysadmin-for-all
    rules: [capabilities]
    subjects: ["*"]
    values: [SYS_ADMIN]
    reason: test
""")
    plugin, events = plugin_for(policy)
    assert plugin.handle(REQUEST_PHASE, create({"CapAdd": ["SYS_ADMIN"]}))["Allow"] is True
    line = events.lines[0]
    assert would_deny(line) == set()
    assert line["exemptions"][0]["exception"] == "sysadmin-for-all"


def test_the_floor_is_still_enforced(tmp_path):
    plugin, events = plugin_for(policy_in(tmp_path))
    answer = plugin.handle(REQUEST_PHASE, create({"Binds": ["/:/h"], "Privileged": True}))
    assert answer["Allow"] is False and "[host-path-protected]" in answer["Msg"]
    line = events.lines[0]
    assert {v["rule"] for v in line["violations"]} == {"host-path-protected"}
    # The policy's own denies on the same request are measured, not enforced.
    assert {"privileged", "host-path-roots"} <= would_deny(line)
    assert "[privileged]" not in answer["Msg"]


@pytest.mark.parametrize("call, rule", [
    (raw_call("POST", CREATE, [1]), "request-body-invalid"),
    (raw_call("POST", "/v1.41/containers/create?a=1;b=2", {"Image": "busybox"}), "request-uri"),
    (raw_call("POST", CREATE, {"Image": "busybox", "HostConfig": {"Privileged": True,
                                                                   "privileged": False}}),
     "request-ambiguous"),
])
def test_request_refusals_are_still_enforced(tmp_path, call, rule):
    plugin, events = plugin_for(policy_in(tmp_path))
    answer = plugin.handle(REQUEST_PHASE, call)
    assert answer["Allow"] is False and f"[{rule}]" in answer["Msg"], answer
    assert events.lines[0]["allow"] is False


class DenyingTrust:
    """Image trust that denies every image (trust.yaml is read on its own: its denies are
    not under rules.yaml's mode)."""

    decision_seconds = 4.0

    class Result:
        allowed = False

        def log_fields(self):
            return {"trust_allowed": False, "trust_rule": "image-signature"}

        def violation(self):
            return Violation("image-signature", "image docker.io/library/busybox:latest: unsigned",
                             "Only images signed by a trusted key may be pulled or run.", "Sign it.")

    def check_run(self, reference, deadline=None):
        return self.Result()

    check_pull = check_service = check_run

    def startup_warnings(self):
        return []


def test_image_trust_follows_the_mode_of_the_whole_policy(tmp_path):
    plugin, events = plugin_for(policy_in(tmp_path), trust=DenyingTrust())
    answer = plugin.handle(REQUEST_PHASE, create({"Privileged": True}))
    assert answer["Allow"] is True
    line = events.lines[0]
    assert line["violations"] == []
    assert would_deny(line) == {"privileged", "image-signature"}
    enforcing, events = plugin_for(policy_in(tmp_path / "enforce", mode_line="mode: enforce\n"),
                                   trust=DenyingTrust())
    answer = enforcing.handle(REQUEST_PHASE, create({"Privileged": True}))
    assert answer["Allow"] is False and "[image-signature]" in answer["Msg"]


@pytest.mark.parametrize("value", ["on", "Audit", "permissive", "1", "[audit]", '""'])
def test_a_bad_mode_does_not_load(tmp_path, value):
    with pytest.raises(PolicyError, match=r"rules\.yaml:\d+: mode must be one of enforce, audit"):
        policy_in(tmp_path, mode_line=f"mode: {value}\n")


def test_mode_enforce_may_be_written_out(tmp_path):
    assert policy_in(tmp_path, mode_line="mode: enforce\n").ruleset.mode == "enforce"


def test_decision_mode_defaults_to_none_before_the_policy_is_consulted():
    assert Decision(id="x", phase="request", allow=False).mode is None
