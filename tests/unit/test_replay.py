"""pyauthz policy replay (authz/policytools/replay.py), the replayable decision log
(audit.decided_on) and the fact vocabulary version (authz/decoding/vocabulary.py).

Lines are recorded by the real plugin (authz.plugin.Plugin, with a fake dockerd), written as
the log writes them, replayed against a candidate, and compared with the same calls decided
live under that candidate."""

import base64
import gzip
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from authz import audit
from authz.decoding import vocabulary
from authz.plugin import Plugin
from authz.policy import Policy
from authz.policytools.commands import policy as policy_group
from authz.policytools.replay import EXIT_CHANGED, EXIT_UNCHANGED, EXIT_UNREADABLE, replay
from authz.policytools.replay_decide import (NEWLY_ALLOWED, NEWLY_DENIED, RULES_CHANGED, Outcome,
                                             replay_line)
from authz.protocol import REQUEST_PHASE, RESPONSE_PHASE

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
CID = "c" * 64
OTHER = "d" * 64
IMAGE_ID = "sha256:" + "a" * 64


class Docker:
    """dockerd's state as the plugin reads it: containers, and its own roots."""

    docker_host = "unix:///replay-test.sock"

    def __init__(self, containers=None):
        self.containers = containers or {}

    def inspect_container(self, name, deadline):
        for info in self.containers.values():
            if name in (info["Id"], info["Name"][1:]) or info["Id"].startswith(name):
                return info
        return None

    def inspect_volume(self, name, deadline):
        return None

    def inspect_network(self, name, deadline):
        return None

    def inspect_image(self, name, deadline):
        return {"Id": IMAGE_ID, "RepoTags": ["busybox:latest"], "Config": {"User": ""}}

    def info(self, deadline):
        return {"DockerRootDir": "/var/lib/docker"}


def container(cid, name, host_config):
    return {"Id": cid, "Name": "/" + name, "Image": IMAGE_ID, "Config": {"Image": "busybox"},
            "HostConfig": host_config, "Mounts": []}


DOCKER = Docker({
    "web": container(CID, "web", {"CapAdd": ["SYS_CHROOT"]}),
    "tool": container(OTHER, "tool", {"CapAdd": ["MKNOD"]}),
})


class Lines:
    """A decision logger that writes what the log would hold, one JSON line each."""

    def __init__(self):
        self.lines: list[str] = []

    def info(self, event, **fields):
        doc = {**fields, "event": event, "time": f"2026-11-22T19:40:{len(self.lines):02d}Z"}
        self.lines.append(audit._serialize(doc).decode())


def raw_call(method, uri, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else b""
    head = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    head.update(headers or {})
    doc = {"RequestMethod": method, "RequestUri": uri, "RequestHeaders": head}
    if data:
        doc["RequestBody"] = base64.b64encode(data).decode()
    return json.dumps(doc).encode()


def create(host_config=None, **config):
    return ("POST", "/v1.41/containers/create",
            {"Image": "busybox", "Cmd": ["true"], **config, "HostConfig": host_config or {}})


SESSION = [
    ("GET", "/_ping", None),
    create(),
    create({"Privileged": True}),
    create({"PidMode": "host"}),
    create({"CapAdd": ["SYS_CHROOT"]}),
    create({"CapAdd": ["NET_ADMIN", "SYS_ADMIN"]}),
    create({"Binds": ["/srv/data:/data"]}),
    create({"Binds": ["/etc:/host-etc"]}),          # the floor
    create({"Binds": ["/opt/x:/x"]}),               # outside the bind roots
    ("POST", f"/v1.41/containers/{CID}/start", None),
    ("POST", f"/v1.41/containers/{OTHER}/start", None),
    ("POST", "/v1.41/containers/web/start", None),  # by name
    ("POST", f"/v1.41/containers/{CID}/exec", {"Cmd": ["true"]}),
    ("POST", f"/v1.41/containers/{CID}/exec", {"Cmd": ["true"], "Privileged": True}),
    ("POST", "/v1.41/containers/create", [1]),      # refused before the policy
    ("POST", "/v1.41/build", None),
]


def plugin(policy_dir, trust=None):
    lines = Lines()
    return Plugin(Policy.load(policy_dir), trust, DOCKER, logger=lines), lines


def record(policy_dir, calls=SESSION, trust=None):
    live, lines = plugin(policy_dir, trust)
    for method, uri, body in calls:
        live.handle(REQUEST_PHASE, raw_call(method, uri, body))
    return [json.loads(line) for line in lines.lines]


def write_log(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def candidate(tmp_path, edit, name="candidate"):
    """A copy of the shipped policy with rules.yaml edited by ``edit(text) -> text``."""
    target = tmp_path / name
    shutil.copytree(SHIPPED, target)
    rules = target / "rules.yaml"
    rules.write_text(edit(rules.read_text()))
    return target


def without_host_pid(text):
    start = text.index("  - id: host-pid\n")
    end = text.index("  - id: host-ipc\n")
    return text[:start] + text[end:]


NEW_RULES = """
  - id: no-sys-chroot
    effect: deny
    match:
      fact: capability
      values: [SYS_CHROOT]
    message: test rule
    fix: drop it
  - id: no-mknod-at-start
    effect: deny
    match:
      fact: capability
      values: [MKNOD]
      endpoints: [container.start]
    message: test rule
    fix: drop it
"""

NEW_EXCEPTION = """
  - id: chroot-at-create
    rules: [no-sys-chroot]
    subjects: ["*"]
    endpoints: [container.create]
    reason: test exception, lifted at create and so at start and exec
"""


def policy_b(text):
    """A: the shipped policy. B: host-pid removed; two rules added; an exception scoped to
    container.create for one of them."""
    text = without_host_pid(text)
    text = text.replace("\nexceptions:\n", NEW_RULES + "\nexceptions:\n" + NEW_EXCEPTION, 1)
    return text


def outcome(doc):
    return Outcome.recorded(doc)


# --------------------------------------------------------------------------- vocabulary

def test_vocabulary_version_is_semantics_and_a_short_registry_digest():
    version = vocabulary.current()
    semantics, _, digest = version.partition(".")
    assert semantics == str(vocabulary.SEMANTICS) and len(digest) == 12
    assert version == vocabulary.version_of(dict(reversed(list(
        vocabulary.FACT_KINDS.items()))))                      # order does not matter
    kinds = dict(vocabulary.FACT_KINDS)
    assert vocabulary.version_of({**kinds, "privileged": "something else"}) != version
    assert vocabulary.version_of({**kinds, "new-kind": "a new kind"}) != version
    assert vocabulary.version_of(kinds, semantics=vocabulary.SEMANTICS + 1) != version
    assert "fact vocabulary" in vocabulary.describe() and digest in vocabulary.describe()


# --------------------------------------------------------------------------- the log line

def test_a_line_records_every_fact_which_are_stored_the_image_and_the_vocabulary():
    docs = record(SHIPPED, [create({"CapAdd": ["SYS_CHROOT"]}),
                            ("POST", f"/v1.41/containers/{CID}/start", None)])
    made, started = docs
    assert made["fact_vocabulary"] == started["fact_vocabulary"] == vocabulary.current()
    # the contract's fields are still there, as they were
    for key in ("decision_id", "phase", "user", "method", "endpoint", "uri", "allow", "facts",
                "violations", "policy_revision", "duration_ms"):
        assert key in made
    kinds = {(f["kind"], f["value"]) for f in made["all_facts"]}
    assert ("capability", "SYS_CHROOT") in kinds and ("image", "docker.io/library/busybox:latest") in kinds
    assert not any(f.get("stored") for f in made["all_facts"])
    assert made["policy_image"] == "docker.io/library/busybox:latest"
    stored = [f for f in started["all_facts"] if f.get("stored")]
    assert {"kind": "capability", "value": "SYS_CHROOT",
            "where": "container.HostConfig.CapAdd[0]", "stored": True} in stored
    target = next(f for f in started["all_facts"] if f["kind"] == "target")
    assert "stored" not in target and target["detail"]          # detail kept, not stored
    assert started["policy_image"] == "docker.io/library/busybox:latest"


def test_a_refused_request_has_no_facts_to_replay_but_says_its_vocabulary():
    (doc,) = record(SHIPPED, [("POST", "/v1.41/containers/create", [1])])
    assert "all_facts" not in doc and doc["fact_vocabulary"] == vocabulary.current()


SECRET = "s3cr3t-T0KEN-value"


def test_secrets_never_reach_the_log_not_even_in_a_fact_or_its_detail():
    calls = [
        create({"LogConfig": {"Type": "splunk", "Config": {"splunk-token": SECRET}}},
               Env=[f"PASSWORD={SECRET}"]),
        create({"Mounts": [{"Type": "volume", "Target": "/x", "VolumeOptions": {
            "DriverConfig": {"Name": "local", "Options": {
                "type": "cifs", "device": "//10.0.0.1/share", "o": f"password={SECRET}"}}}}]}),
        ("POST", f"/v1.41/build?buildargs=%7B%22A%22%3A%22{SECRET}%22%7D", None),
        ("POST", "/v1.41/images/create?fromImage=busybox&tag=1", None),
        ("POST", "/v1.41/swarm/init", {"ListenAddr": "0.0.0.0", "Spec": {
            "CAConfig": {"SigningCAKey": SECRET}}}),
        ("POST", f"/v1.41/containers/{CID}/exec", {"Cmd": ["true"], "Env": [f"K={SECRET}"]}),
    ]
    live, lines = plugin(SHIPPED)
    for method, uri, body in calls:
        live.handle(REQUEST_PHASE, raw_call(method, uri, body,
                                            {"X-Registry-Auth": SECRET}))
    assert len(lines.lines) == len(calls)
    for line in lines.lines:
        assert SECRET not in line
        assert SECRET not in json.dumps(json.loads(line).get("all_facts"))


def test_all_facts_are_bounded_and_a_cut_line_is_not_replayed(tmp_path, monkeypatch):
    binds = [f"/srv/{'d' * 200}{i}:/m{i}" for i in range(256)]
    (whole,) = record(SHIPPED, [create({"Binds": binds})])
    assert "all_facts_omitted" not in whole and len(whole["all_facts"]) > 256
    monkeypatch.setattr(audit, "ALL_FACTS_BYTES", 8 * 1024)
    (cut,) = record(SHIPPED, [create({"Binds": binds})])
    assert cut["all_facts_omitted"] == len(whole["all_facts"]) - len(cut["all_facts"]) > 0
    assert len(json.dumps(cut["all_facts"], separators=(",", ":"))) <= 8 * 1024
    report = replay([str(write_log(tmp_path / "log", [cut, whole]))], Policy.load(SHIPPED))
    assert report.incomplete == 1 and len(report.decisions) == 1


# --------------------------------------------------------------------------- replay

def test_replay_against_the_same_policy_changes_nothing(tmp_path):
    docs = record(SHIPPED)
    report = replay([str(write_log(tmp_path / "log", docs))], Policy.load(SHIPPED))
    assert len(report.decisions) == len(SESSION)
    assert [d.change for d in report.decisions] == [None] * len(SESSION)
    assert [d.predicted for d in report.decisions] == [outcome(d) for d in docs]
    assert sum(d.kept for d in report.decisions) == 1            # the refused create


def test_replay_predicts_exactly_what_the_candidate_decides_live(tmp_path):
    b = candidate(tmp_path, policy_b)
    recorded = record(SHIPPED)
    live_b = record(b)
    report = replay([str(write_log(tmp_path / "log", recorded))], Policy.load(b))
    assert [d.predicted for d in report.decisions] == [outcome(d) for d in live_b]
    changes = {d.line["uri"] + (" " + d.line["endpoint"]): d.change for d in report.decisions
               if d.change}
    assert NEWLY_ALLOWED in changes.values() and NEWLY_DENIED in changes.values()
    by_class = {c: report.groups(c, 2) for c in (NEWLY_ALLOWED, NEWLY_DENIED)}
    assert [(g["rule"], g["endpoint"], g["count"]) for g in by_class[NEWLY_ALLOWED]] == [
        ("host-pid", "container.create", 1)]
    assert {(g["rule"], g["endpoint"]) for g in by_class[NEWLY_DENIED]} == {
        ("no-mknod-at-start", "container.start")}
    # stored SYS_CHROOT at start and exec: lifted as at create by chroot-at-create
    start = next(d for d in report.decisions if d.line["uri"].endswith(f"{CID}/start"))
    assert start.predicted.allow and ("chroot-at-create", "no-sys-chroot") in \
        start.predicted.exemptions


def test_an_exception_for_a_subject_replays_with_that_subject(tmp_path):
    b = candidate(tmp_path, lambda t: t.replace("\nexceptions:\n", """
exceptions:
  - id: anon-may-privileged
    rules: [privileged]
    subjects: [anonymous]
    reason: test
""", 1))
    docs = record(SHIPPED, [create({"Privileged": True})])
    (d,) = replay([str(write_log(tmp_path / "log", docs))], Policy.load(b)).decisions
    assert d.change == NEWLY_ALLOWED and d.subject == "anonymous"
    (live,) = record(b, [create({"Privileged": True})])
    assert d.predicted == outcome(live)


def test_the_floor_and_image_trust_are_kept_as_recorded(tmp_path):
    class Trust:
        def __init__(self):
            from authz.trust.result import TrustResult
            self.denied = TrustResult.unsigned("docker.io/library/busybox:latest",
                                               found="no signature", fix="sign it")

        def check_run(self, reference, deadline=None):
            return self.denied

        check_pull = check_service = check_run

    docs = record(SHIPPED, [create({"Binds": ["/etc:/e"]}), create()], trust=Trust())
    assert [v["rule"] for v in docs[0]["violations"]] == [
        "host-path-protected", "host-path-roots", "image-signature"]
    b = candidate(tmp_path, lambda t: t.replace("  - id: host-path-roots\n",
                                                "  - id: host-path-roots-renamed\n"))
    report = replay([str(write_log(tmp_path / "log", docs))], Policy.load(b))
    floor, plain = report.decisions
    assert floor.predicted.rules == ("host-path-protected", "host-path-roots-renamed",
                                     "image-signature")
    assert plain.predicted == outcome(docs[1]) and plain.predicted.rules == ("image-signature",)


def test_a_protected_plugin_stays_denied_once():
    line = {"event": "decision", "phase": "request", "decision_id": "1" * 16, "user": None,
            "endpoint": "plugin.disable", "allow": False, "fact_vocabulary": vocabulary.current(),
            "all_facts": [{"kind": "plugin.interface", "value": "docker.authz/1.0",
                           "where": "plugin.Config.Interface.Types"},
                          {"kind": "target", "value": "id", "where": "path"}],
            "policy_image": "",
            "violations": [{"rule": "authz-plugin-protected",
                            "found": "plugin.Config.Interface.Types: "
                                     "plugin.interface=docker.authz/1.0", "effect": "deny"}]}
    d = replay_line(line, Policy.load(SHIPPED))
    assert d.predicted.rules == ("authz-plugin-protected",) and d.change is None


def test_other_lines_are_counted_and_reported_never_skipped_silently(tmp_path):
    docs = record(SHIPPED, [create(), create({"Privileged": True})])
    old = dict(docs[0], fact_vocabulary="0.000000000000")
    before = {k: v for k, v in docs[1].items() if k not in ("all_facts", "fact_vocabulary")}
    response = dict(docs[0], phase="response", status=201)
    void = {"event": "decision-void", "decision_id": docs[0]["decision_id"], "allow": False}
    log = tmp_path / "log"
    log.write_text("".join(json.dumps(d) + "\n" for d in (docs[0], old, before, response, void))
                   + "{not json\n\n" + json.dumps(dict(docs[1], all_facts="x")) + "\n")
    report = replay([str(log)], Policy.load(SHIPPED))
    assert len(report.decisions) == 1
    assert report.other_vocabulary == {"0.000000000000": 1, "none": 1}
    assert report.response_lines == 1 and report.voided == [docs[0]["decision_id"]]
    assert report.unreadable == 2 and report.not_replayed == 4
    assert any(":6: not JSON" in p for p in report.problems)
    # A decision line that lost its "event" is a line that cannot be read, not another event.
    eventless = {k: v for k, v in docs[1].items() if k != "event"}
    other = {"event": "something-else", "time": docs[0]["time"]}
    log.write_text("".join(json.dumps(d) + "\n" for d in (docs[0], eventless, other)))
    report = replay([str(log)], Policy.load(SHIPPED))
    assert report.unreadable == 1 and report.not_replayed == 1 and report.other_events == 1
    assert any(':2: a decision line ("phase") without "event"' in p for p in report.problems)
    result = run("--policy", str(SHIPPED), str(log))
    assert "1 line(s) could not be read" in result.output
    assert "1 line(s) of other events (not decisions) were skipped" in result.output
    log.write_text("".join(json.dumps(d) + "\n" for d in (docs[0], old, before, response, void))
                   + "{not json\n\n" + json.dumps(dict(docs[1], all_facts="x")) + "\n")
    loose = replay([str(log)], Policy.load(SHIPPED), any_vocabulary=True)
    assert len(loose.decisions) == 3 and loose.replayed_other_vocabulary == 2


def test_identity_is_replayed_as_logged():
    docs = record(SHIPPED, [create()])
    line = dict(docs[0], user="alice")
    if "identity" in docs[0]:   # certificate identities: the logged identity decides
        line["identity"] = {"name": "alice", "certificate": True, "fields": {"cn": ["alice"]}}
    assert replay_line(line, Policy.load(SHIPPED)).subject == "alice"
    line.pop("identity", None)  # a line from before identities were logged: its user
    assert replay_line(line, Policy.load(SHIPPED)).subject == "alice"


# --------------------------------------------------------------------------- the command

def run(*args):
    return CliRunner().invoke(policy_group, ["replay", *args])


def test_exit_codes_and_reports(tmp_path):
    log = write_log(tmp_path / "log", record(SHIPPED))
    b = candidate(tmp_path, policy_b)
    allow_only = candidate(tmp_path, without_host_pid, "allow-only")

    same = run("--policy", str(SHIPPED), str(log))
    assert same.exit_code == EXIT_UNCHANGED, same.output
    assert "unchanged 16" in same.output

    changed = run("--policy", str(b), str(log))
    assert changed.exit_code == EXIT_CHANGED, changed.output
    assert "Newly denied (1 decision)" in changed.output
    assert "no-mknod-at-start" in changed.output and "Newly allowed" in changed.output

    loosened = run("--policy", str(allow_only), str(log))
    assert loosened.exit_code == EXIT_UNCHANGED                 # --fail-on denied
    assert run("--policy", str(allow_only), "--fail-on", "any", str(log)).exit_code == EXIT_CHANGED
    assert run("--policy", str(b), "--fail-on", "never", str(log)).exit_code == EXIT_UNCHANGED

    doc = json.loads(run("--policy", str(b), "--json", "--decisions", "--examples", "1",
                         str(log)).output)
    assert doc["summary"][NEWLY_DENIED] == 1 and doc["summary"][NEWLY_ALLOWED] == 1
    group = doc["changes"][NEWLY_DENIED][0]
    assert group["rule"] == "no-mknod-at-start" and group["subject"] == "anonymous"
    assert group["image"] == "docker.io/library/busybox:latest" and group["count"] == 1
    assert group["examples"][0]["decision_id"] and group["examples"][0]["time"]
    assert len(doc["decisions"]) == len(SESSION)
    assert doc["fact_vocabulary"] == vocabulary.current()

    # --decisions is a part of the JSON document: alone it is refused, not ignored.
    refused = run("--policy", str(b), "--decisions", str(log))
    assert refused.exit_code == 2 and "--decisions" in refused.output
    assert "give --json too" in refused.output

    gz = tmp_path / "log.1.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    assert run("--policy", str(SHIPPED), str(gz), str(log)).exit_code == EXIT_UNCHANGED


def test_unreadable_input_exits_2(tmp_path):
    log = write_log(tmp_path / "log", record(SHIPPED, [create()]))
    assert run("--policy", str(SHIPPED), str(tmp_path / "missing")).exit_code == EXIT_UNREADABLE
    assert run("--policy", str(tmp_path / "nopolicy"), str(log)).exit_code == EXIT_UNREADABLE
    junk = tmp_path / "junk"
    junk.write_text("{not json\n")
    result = run("--policy", str(SHIPPED), str(junk))
    assert result.exit_code == EXIT_UNREADABLE and "could not be read" in result.output
    old = write_log(tmp_path / "old", [dict(json.loads(log.read_text()),
                                            fact_vocabulary="0.0")])
    assert run("--policy", str(SHIPPED), str(old)).exit_code == EXIT_UNREADABLE
    mixed = tmp_path / "mixed"
    mixed.write_text(log.read_text() + old.read_text())
    result = run("--policy", str(SHIPPED), str(mixed))
    assert result.exit_code == EXIT_UNCHANGED and "another fact vocabulary" in result.output
    assert run("--policy", str(SHIPPED), "--strict", str(mixed)).exit_code == EXIT_UNREADABLE


def test_the_response_phase_is_not_a_decision_to_replay(tmp_path):
    live, lines = plugin(SHIPPED)
    live.handle(RESPONSE_PHASE, raw_call("GET", "/v1.41/containers/json"))
    log = tmp_path / "log"
    log.write_text("\n".join(lines.lines) + "\n")
    report = replay([str(log)], Policy.load(SHIPPED))
    assert report.response_lines == 1 and not report.decisions


@pytest.mark.parametrize("change", [RULES_CHANGED])
def test_still_denied_by_other_rules(tmp_path, change):
    b = candidate(tmp_path, lambda t: t.replace("      fact: privileged\n",
                                                "      fact: privileged\n"
                                                "      endpoints: [exec.create]\n", 1))
    docs = record(SHIPPED, [create({"Privileged": True, "CapAdd": ["SYS_ADMIN"]})])
    report = replay([str(write_log(tmp_path / "log", docs))], Policy.load(b))
    (group,) = report.groups(change, 3)
    assert group["rule"] == "-privileged"
    assert group["examples"][0]["found"] == ["HostConfig.Privileged: privileged=true"]


def test_the_logged_request_rebuilds_exactly_what_the_policy_was_asked():
    from authz.policytools.replay_log import rebuild_request
    from authz.protocol import parse_call

    live, lines = plugin(SHIPPED)
    for method, uri, body in SESSION:
        decision = live.decide(parse_call(raw_call(method, uri, body), REQUEST_PHASE))
        line = json.loads(audit._serialize(audit.decision_event(
            parse_call(raw_call(method, uri, body), REQUEST_PHASE), decision, "r")))
        if decision.request is None:
            assert "all_facts" not in line
            continue
        rebuilt = rebuild_request(line)
        assert rebuilt.facts == decision.request.facts, uri
        assert rebuilt.stored == decision.request.stored, uri
        assert rebuilt.image == decision.request.image and rebuilt.endpoint == decision.endpoint
