"""``pyauthz policy test``: the case format, running cases through the plugin's decision path,
the table, JUnit XML and exit codes; and the shipped suite for the default policy: it covers
every rule both ways, and removing or narrowing any rule makes it fail."""

import copy
import shutil
import sys
import textwrap
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import authz.policytools
from authz.cli import main
from authz.policy import Policy
from authz.policy.floor import SYSTEM_FLOOR
from authz.policy.rules import FLOOR_RULES
from authz.policytools.cases import CaseError, load_cases, load_file
from authz.policytools.casestate import CaseState
from authz.policytools.casetest import junit, run_cases, table

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
ID = "c" * 64


def policy_dir(tmp_path, cases_yaml: str, rules_yaml: str | None = None) -> Path:
    """A copy of the shipped policy (or one with ``rules_yaml``) with one case file."""
    directory = tmp_path / "policy"
    directory.mkdir()
    shutil.copy(SHIPPED / "model.conf", directory / "model.conf")
    if rules_yaml is None:
        shutil.copy(SHIPPED / "rules.yaml", directory / "rules.yaml")
    else:
        (directory / "rules.yaml").write_text(textwrap.dedent(rules_yaml))
    (directory / "tests").mkdir()
    (directory / "tests" / "cases.yaml").write_text(textwrap.dedent(cases_yaml))
    return directory


PRIVILEGED = """\
cases:
  - name: privileged
    request:
      method: POST
      uri: /v1.41/containers/create
      body: {Image: busybox, HostConfig: {Privileged: true}}
    expect: deny
    rules: [privileged]
"""


# --------------------------------------------------------------------------- the format

def test_a_raw_request_gets_the_headers_the_docker_cli_sends(tmp_path):
    directory = policy_dir(tmp_path, PRIVILEGED)
    [case] = load_cases(directory)
    assert case.request.method == "POST" and case.request.body.startswith(b'{"Image"')
    assert case.request.headers == {"Content-Type": "application/json",
                                    "Content-Length": str(len(case.request.body))}
    assert case.rules == {"privileged"} and case.expect == "deny" and case.line == 2


def test_a_request_may_be_dockerds_own_call(tmp_path):
    directory = policy_dir(tmp_path, """\
        cases:
          - name: wire format
            request: {RequestMethod: POST, RequestUri: /v1.41/containers/create,
                      RequestHeaders: {Content-Type: application/json},
                      RequestBody: eyJIb3N0Q29uZmlnIjp7IlByaXZpbGVnZWQiOnRydWV9fQ==}
            expect: deny
            rules: [privileged]
    """)
    [result] = run_cases(Policy.load(directory), load_cases(directory))
    assert result.passed, result.problems


@pytest.mark.parametrize("text, error", [
    ("cases:\n  - name: a\n    name: b\n", ":3: duplicate key 'name'"),
    ("cases:\n  - {name: a, expect: deny, request: {method: GET, uri: /_ping}}\n",
     "a deny names the rules"),
    ("cases:\n  - {name: a, expect: allow, rules: [x], request: {method: GET, uri: /_ping}}\n",
     "an allow has no denying rules"),
    ("cases:\n  - {name: a, expect: allow, docker: ps, request: {method: GET, uri: /_ping}}\n",
     "give one of 'docker'"),
    ("cases:\n  - {name: a, expect: maybe, request: {method: GET, uri: /_ping}}\n",
     "expect is allow or deny"),
    ("cases:\n  - {name: a, expect: allow, requests: {}}\n", "unknown key(s) in a case: requests"),
    ("cases:\n  - {name: a, expect: allow, request: {method: GET, uri: /_ping},"
     " user: 0}\n", "user must be text"),
    ("cases:\n  - {name: a, expect: allow, request: {method: GET, uri: /_ping,"
     " headers: {Content-Length: 0}}}\n", "quote numbers"),
    ("cases:\n  - {name: a, expect: allow, request: {method: GET, uri: /_ping}}\n"
     "  - {name: a, expect: allow, request: {method: GET, uri: /_ping}}\n", "also at line 2"),
    ("cases:\n  - {name: a, expect: deny, rules: [x], near_miss: [x],"
     " request: {method: GET, uri: /_ping}}\n", "a near miss of a rule it expects to deny"),
    ("cases:\n  - {name: a, expect: allow, request: {method: GET, uri: /_ping},"
     " state: {secrets: []}}\n", "unknown key(s) in state: secrets"),
    ("cases:\n  - {name: a, expect: allow, request: {method: GET, uri: /_ping},"
     " certificate: {cn: x}}\n", "unknown key(s) in certificate: cn"),
    ("- just a list\n", "a mapping with 'cases:'"),
])
def test_a_case_file_that_says_something_unclear_does_not_load(tmp_path, text, error):
    path = tmp_path / "cases.yaml"
    path.write_text(text)
    with pytest.raises(CaseError) as exc:
        load_file(path)
    assert str(exc.value).startswith(str(path)) and error in str(exc.value)


def test_a_docker_line_is_split_like_a_shell(tmp_path):
    path = tmp_path / "cases.yaml"
    path.write_text("cases:\n  - {name: a, expect: allow, docker: \"docker run -e 'A=b c' img\"}\n")
    [case] = load_file(path)
    assert case.docker == ("run", "-e", "A=b c", "img")
    assert case.command == "docker run -e 'A=b c' img"


def test_certificate_fields_are_part_of_the_format(tmp_path):
    path = tmp_path / "cases.yaml"
    path.write_text("cases:\n  - {name: a, expect: allow, user: alice, request: {method: GET, "
                    "uri: /_ping}, certificate: {o: [Acme], ou: [ops], san: ['dns:a.example'],"
                    " issuer: 'CN=Corp CA'}}\n")
    [case] = load_file(path)
    assert case.certificate == {"o": ("Acme",), "ou": ("ops",), "san": ("dns:a.example",),
                                "issuer": ("CN=Corp CA",)}
    path.write_text("cases:\n  - {name: a, expect: allow, request: {method: GET, uri: /_ping},"
                    " certificate: {san: ['a.example']}}\n")
    with pytest.raises(CaseError, match="san 'a.example' is one of dns:VALUE"):
        load_file(path)


def test_the_subject_and_its_certificate_fields_reach_the_decision(tmp_path):
    directory = policy_dir(tmp_path, """\
        cases:
          - name: ops by OU
            user: carol
            certificate: {ou: [ops], san: ["dns:Carol.Example"]}
            request: {method: GET, uri: /v1.41/swarm}
            expect: allow
            exceptions: [ops-swarm]
          - name: the same CN without the OU
            user: carol
            request: {method: GET, uri: /v1.41/swarm}
            expect: deny
            rules: [swarm-membership]
          - name: anonymous
            request: {method: GET, uri: /v1.41/swarm}
            expect: deny
            rules: [swarm-membership]
    """, rules_yaml="""\
        version: 1
        rules:
          - {id: swarm-membership, match: {fact: endpoint, values: [swarm.inspect]},
             message: m, fix: f}
        exceptions:
          - {id: ops-swarm, rules: [swarm-membership], subjects: ["ou:ops"], reason: r}
    """)
    results = run_cases(Policy.load(directory), load_cases(directory))
    assert [r.passed for r in results] == [True, True, True], [r.problems for r in results]


# --------------------------------------------------------------------------- running

def test_state_stands_in_for_dockerd_as_dockerd_looks_names_up():
    state = CaseState({"containers": ({"Id": ID, "Name": "/web"},),
                       "plugins": ({"Id": ID, "Name": "vendor/p:latest"},),
                       "volumes": ({"Name": "data"},)})
    assert state.inspect_container("web")["Id"] == ID
    assert state.inspect_container("/web")["Id"] == ID
    assert state.inspect_container("ccc")["Id"] == ID
    assert state.inspect_container("nope") is None and state.inspect_container("") is None
    assert state.inspect_plugin("vendor/p")["Id"] == ID
    assert state.inspect_volume("data") and state.inspect_volume("other") is None
    assert state.info()["DockerRootDir"] == "/var/lib/docker"


def test_a_case_is_decided_by_the_plugin_with_the_state_it_gives(tmp_path):
    directory = policy_dir(tmp_path, f"""\
        cases:
          - name: by name
            request: {{method: POST, uri: /v1.41/containers/web/start}}
            state: {{containers: [{{Id: "{ID}", Name: /web, Image: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", HostConfig: {{Privileged: true}}}}]}}
            expect: deny
            rules: [target-by-id, privileged]
          - name: without state, nothing is stored
            request: {{method: POST, uri: /v1.41/containers/web/start}}
            expect: allow
    """)
    results = run_cases(Policy.load(directory), load_cases(directory))
    assert [r.passed for r in results] == [True, True], [r.problems for r in results]
    assert results[0].endpoint == "container.start"
    assert "[target-by-id] found path: target=name" in results[0].message


def test_audits_and_exceptions_are_exact_sets_when_given(tmp_path):
    directory = policy_dir(tmp_path, """\
        cases:
          - name: lifted
            user: alice
            request: {method: POST, uri: /v1.41/containers/create,
                      body: {Image: busybox, HostConfig: {CapAdd: [NET_ADMIN], PidMode: host}}}
            expect: allow
            audits: [host-pid]
            exceptions: [vpn]
          - name: wrong audits
            request: {method: POST, uri: /v1.41/containers/create,
                      body: {Image: busybox, HostConfig: {PidMode: host}}}
            expect: allow
            audits: []
    """, rules_yaml="""\
        version: 1
        rules:
          - {id: capabilities, match: {fact: capability}, message: m, fix: f}
          - {id: host-pid, effect: audit, match: {fact: namespace.pid, values: [host]},
             message: m, fix: f}
        exceptions:
          - {id: vpn, rules: [capabilities], subjects: [alice], values: [NET_ADMIN], reason: r}
    """)
    lifted, wrong = run_cases(Policy.load(directory), load_cases(directory))
    assert lifted.passed, lifted.problems
    assert not wrong.passed and wrong.problems == ["expected audits [], got [host-pid]"]


def fake_cli(monkeypatch, calls):
    """A stand-in for authz.policytools.docker_cli: ``calls`` maps a label to (method, uri,
    body)."""
    from authz.policytools.cases import RawRequest, body_bytes, default_headers

    module = types.ModuleType("authz.policytools.docker_cli")

    class CliError(ValueError):
        pass

    @dataclass
    class ApiCall:
        method: str
        uri: str
        label: str
        body: bytes | None = None
        headers: dict = field(default_factory=dict)

    def api_calls(argv, *, api_version="1.41"):
        assert argv[0] == "docker"
        if argv[1] != "run":
            raise CliError(f"unknown command {argv[1]!r}")
        return [ApiCall(m, u, label, body_bytes(b)) for label, (m, u, b) in calls.items()]

    def to_authz_request(call, user=""):
        return RawRequest(call.method, call.uri, default_headers(call.body), call.body).call(user)

    module.CliError, module.api_calls, module.to_authz_request = CliError, api_calls, to_authz_request
    monkeypatch.setitem(sys.modules, "authz.policytools.docker_cli", module)
    monkeypatch.setattr(authz.policytools, "docker_cli", module, raising=False)


def test_a_cli_line_is_judged_on_the_call_that_decides(tmp_path, monkeypatch):
    fake_cli(monkeypatch, {
        "create": ("POST", "/v1.41/containers/create",
                   {"Image": "busybox", "HostConfig": {"Privileged": True}}),
        "start": ("POST", f"/v1.41/containers/{ID}/start", None),
    })
    directory = policy_dir(tmp_path, """\
        cases:
          - {name: first deny, docker: run --privileged busybox, expect: deny, rules: [privileged]}
          - {name: the start, docker: run --privileged busybox, call: start, expect: allow}
          - {name: no such call, docker: run busybox, call: pull, expect: allow}
          - {name: not translated, docker: frob, expect: allow}
    """)
    results = run_cases(Policy.load(directory), load_cases(directory))
    assert [r.passed for r in results] == [True, True, False, False]
    assert results[0].label == "create" and results[1].label == "start"
    assert "makes no call 'pull' (it makes: create, start)" in results[2].problems[0]
    assert "cannot translate" in results[3].problems[0]


def test_an_allowed_cli_line_allows_every_call(tmp_path, monkeypatch):
    fake_cli(monkeypatch, {"create": ("POST", "/v1.41/containers/create", {"Image": "b"}),
                           "start": ("POST", "/v1.41/containers/x/start", None)})
    directory = policy_dir(tmp_path, "cases:\n  - {name: a, docker: run b, expect: allow}\n")
    [result] = run_cases(Policy.load(directory), load_cases(directory))
    assert result.passed and result.label == "create+start"


# --------------------------------------------------------------------------- the command

def test_the_command_prints_a_table_writes_junit_and_exits_1_on_a_failure(tmp_path):
    directory = policy_dir(tmp_path, PRIVILEGED + """\
  - name: wrong
    request: {method: GET, uri: /v1.41/swarm}
    expect: allow
""")
    out = tmp_path / "junit.xml"
    result = CliRunner().invoke(main, ["policy", "test", str(directory), "--junit", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["RESULT", "CASE", "CALL", "EXPECTED", "ACTUAL"]
    assert lines[1].split()[:2] == ["PASS", "privileged"] and "deny [privileged]" in lines[1]
    assert lines[2].split()[:2] == ["FAIL", "wrong"] and "deny [swarm-membership]" in lines[2]
    assert "cases.yaml:9: expected allow, got deny [swarm-membership]" in result.output
    assert lines[-1] == "1 passed, 1 failed, 2 cases"
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    [suite] = root
    assert suite.get("name") == "cases.yaml"
    ok, failed = suite.findall("testcase")
    assert ok.find("failure") is None and ok.get("name") == "privileged"
    assert "expected allow, got deny" in failed.find("failure").get("message")


def test_the_command_exits_0_when_every_case_passes(tmp_path):
    directory = policy_dir(tmp_path, PRIVILEGED)
    result = CliRunner().invoke(main, ["policy", "test", str(directory)])
    assert result.exit_code == 0 and "1 passed, 0 failed, 1 cases" in result.output


def test_the_command_exits_2_when_nothing_can_be_tested(tmp_path):
    directory = policy_dir(tmp_path, "cases: {}\n")
    result = CliRunner().invoke(main, ["policy", "test", str(directory)])
    assert result.exit_code == 2 and "'cases' is a list" in result.output
    (directory / "rules.yaml").write_text("version: 1\nrules: [{id: x}]\n")
    result = CliRunner().invoke(main, ["policy", "test", str(directory)])
    assert result.exit_code == 2 and "the policy does not load" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(SHIPPED / "model.conf", empty)
    shutil.copy(SHIPPED / "rules.yaml", empty)
    result = CliRunner().invoke(main, ["policy", "test", str(empty)])
    assert result.exit_code == 2 and "no case files" in result.output


def test_junit_names_the_problem_when_nothing_can_be_tested(tmp_path):
    directory = policy_dir(tmp_path, "cases: {}\n")
    out = tmp_path / "junit.xml"
    result = CliRunner().invoke(main, ["policy", "test", str(directory), "--junit", str(out)])
    assert result.exit_code == 2
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites" and root.get("errors") == "1" and root.get("tests") == "1"
    [suite] = root
    [case] = suite.findall("testcase")
    error = case.find("error")
    assert error is not None and "'cases' is a list" in error.get("message")
    assert str(directory / "tests" / "cases.yaml") in error.text
    (directory / "rules.yaml").write_text("version: 1\nrules: [{id: x}]\n")
    result = CliRunner().invoke(main, ["policy", "test", str(directory), "--junit", str(out)])
    assert result.exit_code == 2
    assert "the policy does not load" in ET.parse(out).getroot().find(".//error").get("message")


def test_a_near_miss_must_name_a_rule_of_the_policy(tmp_path):
    directory = policy_dir(tmp_path, """\
cases:
  - name: fine
    request: {method: GET, uri: /_ping}
    expect: allow
    near_miss: [privileged, host-path-protected]
  - name: renamed
    request: {method: GET, uri: /_ping}
    expect: allow
    near_miss: [privileged, no-such-rule]
""")
    result = CliRunner().invoke(main, ["policy", "test", str(directory)])
    assert result.exit_code == 2, result.output
    assert (f"{directory / 'tests' / 'cases.yaml'}:6: case 'renamed': near_miss names "
            "no-such-rule, which the policy has no rule of") in result.output
    assert "PASS" not in result.output                    # nothing was tested


def test_table_and_junit_name_expected_and_actual_rule_ids(tmp_path):
    directory = policy_dir(tmp_path, PRIVILEGED)
    results = run_cases(Policy.load(directory), load_cases(directory), SYSTEM_FLOOR)
    assert "privileged" in table(results)
    assert "expected: deny [privileged]" in ET.tostring(junit(results, directory).getroot(),
                                                          encoding="unicode")


# --------------------------------------------------------------------------- the shipped suite

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SHIPPED_DOC = yaml.load((SHIPPED / "rules.yaml").read_text(), Loader=_LOADER)


def shipped_rules() -> list[dict]:
    return copy.deepcopy(_SHIPPED_DOC["rules"])


def test_the_shipped_suite_passes():
    results = run_cases(Policy.load(SHIPPED), load_cases(SHIPPED))
    assert all(r.passed for r in results), table([r for r in results if not r.passed])


def test_the_shipped_suite_covers_every_rule_both_ways():
    cases = load_cases(SHIPPED)
    rules = {r["id"]: r.get("effect", "deny") for r in shipped_rules()}
    rules.update({rule: "deny" for rule in FLOOR_RULES})
    denied = {rule for c in cases if c.expect == "deny" for rule in c.rules}
    audited = {rule for c in cases for rule in (c.audits or ())}
    near = {rule for c in cases if c.expect == "allow" for rule in c.near_miss}
    missing = sorted(rule for rule, effect in rules.items()
                     if rule not in (denied if effect == "deny" else audited))
    assert not missing, f"rules with no case expecting them to deny (or audit): {missing}"
    no_near = sorted(set(rules) - near)
    assert not no_near, f"rules with no allowed near-miss case (near_miss: [RULE]): {no_near}"


def mutants() -> list[tuple[str, object]]:
    """(what, how to change a rule): each rule removed; each value, fact kind and endpoint of
    a rule with several dropped; for an allow list of roots (outside:), every path allowed."""
    out = []
    for rule in shipped_rules():
        rid, match = rule["id"], rule["match"]
        out.append((f"{rid} removed", (rid, None)))
        for key in ("values", "fact", "endpoints"):
            items = match.get(key)
            if isinstance(items, list) and len(items) > 1:
                for item in items:
                    narrowed = dict(match, **{key: [i for i in items if i != item]})
                    out.append((f"{rid} without {key} {item}", (rid, narrowed)))
        if "outside" in match:
            out.append((f"{rid} with / as a root", (rid, dict(match, outside=["/"]))))
    return out


def mutated_policy(tmp_path, rule_id: str, match: dict | None) -> Path:
    doc = copy.deepcopy(_SHIPPED_DOC)
    if match is None:
        doc["rules"] = [r for r in doc["rules"] if r["id"] != rule_id]
        kept = []
        for ex in doc.get("exceptions") or []:
            ex["rules"] = [r for r in ex["rules"] if r != rule_id]
            if ex["rules"]:
                kept.append(ex)
        doc["exceptions"] = kept
    else:
        for rule in doc["rules"]:
            if rule["id"] == rule_id:
                rule["match"] = match
    directory = tmp_path / "mutant"
    shutil.copytree(SHIPPED, directory, ignore=shutil.ignore_patterns("tests"))
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    (directory / "rules.yaml").write_text(yaml.dump(doc, Dumper=dumper, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def shipped_cases():
    return load_cases(SHIPPED)


@pytest.mark.parametrize("what, change", mutants(), ids=[m[0] for m in mutants()])
def test_removing_or_narrowing_any_rule_fails_the_shipped_suite(tmp_path, shipped_cases, what,
                                                                change):
    directory = mutated_policy(tmp_path, *change)
    results = run_cases(Policy.load(directory), shipped_cases)
    assert not all(r.passed for r in results), f"the shipped suite still passes with {what}"


def test_a_mutant_fails_through_the_cli_too(tmp_path):
    directory = mutated_policy(tmp_path, "privileged", {"fact": "privileged", "values": ["true"],
                                                          "endpoints": ["exec.create"]})
    shutil.copytree(SHIPPED / "tests", directory / "tests")
    result = CliRunner().invoke(main, ["policy", "test", str(directory)])
    assert result.exit_code == 1 and "FAIL    privileged container" in result.output
    # A removed rule that a case's near_miss still names stops the run (exit 2) at that case.
    removed = mutated_policy(tmp_path / "removed", "privileged", None)
    shutil.copytree(SHIPPED / "tests", removed / "tests")
    result = CliRunner().invoke(main, ["policy", "test", str(removed)])
    assert result.exit_code == 2 and "near_miss names privileged" in result.output


def test_mode_tests_an_audit_roll_out_as_it_will_enforce(tmp_path):
    rules = ("version: 1\nmode: audit\nrules:\n  - {id: privileged, match: {fact: privileged, "
             "values: [\"true\"]}, message: m, fix: f}\n")
    directory = policy_dir(tmp_path, PRIVILEGED, rules_yaml=rules)
    assert CliRunner().invoke(main, ["policy", "test", str(directory)]).exit_code == 1
    result = CliRunner().invoke(main, ["policy", "test", "--mode", "enforce", str(directory)])
    assert result.exit_code == 0, result.output
    (directory / "tests" / "cases.yaml").write_text(PRIVILEGED.replace(
        "expect: deny\n    rules: [privileged]", "expect: allow\n    audits: [privileged]"))
    assert CliRunner().invoke(main, ["policy", "test", str(directory)]).exit_code == 0


def test_a_case_can_state_the_image_and_its_default_user():
    from authz.policytools.casestate import CaseState

    image = {"Id": "sha256:" + "b" * 64, "RepoTags": ["app:1"], "Config": {"User": "1000"}}
    state = CaseState({"images": (image,)})
    assert state.inspect_image("app:1") is image
    assert state.inspect_image("b" * 64) is image
    assert state.inspect_image("other") is None


def test_an_image_in_the_state_gives_a_create_its_default_user(tmp_path):
    from authz.policytools.casestate import CaseState
    from authz.policytools.docker_cli import api_calls, to_authz_request
    from authz.plugin import Plugin
    from authz.policy import Policy

    policy = Policy.load(Path(__file__).resolve().parents[2] / "policies")
    images = {"images": ({"Id": "sha256:" + "b" * 64, "RepoTags": ["app:1"],
                          "Config": {"User": "1000"}},)}
    create = next(c for c in api_calls(["docker", "create", "app:1"]) if c.label == "create")
    decision = Plugin(policy, None, CaseState(images)).decide(to_authz_request(create))
    assert ("user.root", "false") in {(f.kind, f.value) for f in decision.request.facts}
