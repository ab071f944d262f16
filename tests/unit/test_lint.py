"""``pyauthz policy lint`` (alias ``check-policy``): every error with file:line, warnings,
text and JSON output, exit codes."""

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authz.cli import main
from authz.plugin import load_trust
from authz.policy import Policy
from authz.policytools.lint import lint

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


def run(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def policy(tmp_path):
    directory = tmp_path / "policy"
    shutil.copytree(SHIPPED, directory)
    return directory


def edit(directory, old, new, file="rules.yaml"):
    path = directory / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def append(directory, text, file="rules.yaml"):
    path = directory / file
    path.write_text(path.read_text() + text)


def line_of(directory, needle, file="rules.yaml", nth=1):
    lines = (directory / file).read_text().splitlines()
    found = [i + 1 for i, line in enumerate(lines) if needle in line]
    return found[nth - 1]


def pem_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# --------------------------------------------------------------------------- clean

def test_the_shipped_policy_loads_with_check_policys_lines():
    code, out, err = run("policy", "lint", str(SHIPPED))
    assert code == 0, err
    lines = out.splitlines()
    assert re.fullmatch(rf"{re.escape(str(SHIPPED))}: revision [0-9a-f]{{64}}", lines[0])
    assert re.fullmatch(r"  \d+ rules, \d+ exceptions, \d+ roles", lines[1])
    # serve's start-up warning, its text unchanged, in lint's own format: FILE:LINE: ... [check]
    trust = load_trust(SHIPPED, None).policy
    assert (f"  warning: {trust.path}:{trust.keys_line}: image trust: no trusted key "
            "configured") in out
    assert re.search(r"  warning: \S+/trust\.yaml:\d+: image trust: no trusted key configured"
                     r".* \[image-trust\]$", out, re.M)
    assert all(re.fullmatch(r"  warning: \S+\.yaml:\d+: .* \[[a-z-]+\]", line)
               for line in lines if line.startswith("  warning:"))
    assert "no docker host" not in out      # lint reads no dockerd: not the policy's warning
    assert lines[-1].startswith("pyauthz policy lint: 0 error(s)")
    assert err == ""


def test_check_policy_is_an_alias():
    assert run("check-policy", str(SHIPPED)) == run("policy", "lint", str(SHIPPED))
    assert run("check-policy", "--format", "json", str(SHIPPED))[0] == 0


def test_json_output(policy):
    code, out, _ = run("policy", "lint", "--format", "json", str(policy))
    doc = json.loads(out)
    assert code == 0 and doc["exit"] == 0 and doc["loads"] is True and doc["errors"] == 0
    assert doc["mode"] == "enforce" and doc["counts"]["rules"] > 30
    assert doc["revision"] == Policy.load(policy).revision
    for finding in doc["findings"]:
        assert set(finding) == {"severity", "check", "message", "file", "line"}
    unused = [f for f in doc["findings"] if f["check"] == "role-unused"]
    assert unused and unused[0]["file"].endswith("rules.yaml") and unused[0]["line"] > 0


# --------------------------------------------------------------------------- errors

BROKEN = [
    # (old, new, expected text, the line it is reported at: a needle in the edited file)
    ("  - id: privileged\n    effect: deny\n", "  - id: privileged\n    effect: deny\n    effect: audit\n",
     "duplicate key 'effect'", "    effect: audit"),
    ("  - id: host-ipc\n    effect: deny\n", "  - id: host-ipc\n    colour: red\n    effect: deny\n",
     "unknown key(s) in a rule: colour", "- id: host-ipc"),
    ("      fact: namespace.pid\n", "      fact: namespace.pidd\n",
     "fact 'namespace.pidd' matches nothing", "fact: namespace.pidd"),
    ("      values: [swarm.init,", "      values: [swarm.innit,",
     "endpoint 'swarm.innit' matches nothing", "values: [swarm.innit,", -1),
    ("      values: [\"true\"]\n", "      values: [on]\n",
     "must be a string or a list of strings", "fact: privileged"),
    ("  - id: host-uts\n    effect: deny\n", "  - id: host-uts\n    effect: no\n",
     "effect must be one of deny, audit", "- id: host-uts"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[b[2][:20] for b in BROKEN])
def test_one_broken_entry(policy, case):
    old, new, problem, needle, *offset = case   # offset: reported at the mapping's line
    edit(policy, old, new)
    code, out, err = run("policy", "lint", str(policy))
    assert code == 1
    line = line_of(policy, needle) + sum(offset)
    assert re.search(rf"error: {re.escape(str(policy))}/rules\.yaml:{line}: .*{re.escape(problem)}",
                     err), err
    assert "the policy does not load" in err
    assert "error:" not in out


def test_every_broken_entry_is_reported_at_once(policy):
    for old, new, *_ in BROKEN[1:]:       # (a duplicate key and YAML's rest, below)
        edit(policy, old, new)
    append(policy, """
  - id: merged
    <<: {rules: [privileged]}
    subjects: ["*"]
    reason: x
  - id: bad-values
    rules: [capabilities]
    subjects: ["*"]
    values: [CAP_SYS_ADMIN]
    reason: x
  - id: bad-endpoint
    rules: [capabilities]
    subjects: ["*"]
    endpoints: [container.creat]
    reason: x
  - id: no-role
    rules: [capabilities]
    subjects: ["role:nobody"]
    reason: x
""")
    code, _, err = run("policy", "lint", str(policy))
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("  error: ")]
    for _, _, problem, *_ in BROKEN[1:]:
        assert any(problem in e for e in errors), (problem, err)
    for problem in ("a merge key (<<)", "'CAP_SYS_ADMIN' can never match",
                    "endpoint 'container.creat' matches nothing", "no role 'nobody'"):
        assert any(problem in e for e in errors), (problem, err)
    # and "'rules' is required" of the merged one: lint reads on without the merge key
    assert len(errors) == len(BROKEN) - 1 + 5, errors
    assert all(re.match(r"  error: \S+rules\.yaml:\d+: ", e) for e in errors), errors
    # The loader's own first error is always among them (lint fails exactly when serve does).
    with pytest.raises(Exception) as first:
        Policy.load(policy)
    assert any(str(first.value).split(": ", 1)[1] in e for e in errors)


def test_an_exception_naming_a_broken_rule_is_not_reported_twice(policy):
    edit(policy, "      fact: namespace.pid\n", "      fact: namespace.pidd\n")
    append(policy, """
  - id: pid-for-all
    rules: [host-pid]
    subjects: ["*"]
    reason: x
""")
    code, _, err = run("policy", "lint", str(policy))
    assert code == 1 and "no rule 'host-pid'" not in err
    assert err.count("  error: ") == 1


def test_a_yaml_syntax_error_ends_its_file(policy):
    append(policy, "  - id: [unclosed\n")
    code, _, err = run("policy", "lint", str(policy))
    assert code == 1 and "not valid YAML" in err


def test_trust_yaml_errors_are_reported_entry_by_entry(policy):
    (policy / "trust.yaml").write_text("""version: 1
keys:
  - name: a
    pem: nope
  - name: b b
    pem: nope
rules:
  - pattern: docker.io
    require: maybe
exceptions:
  - pattern: quay.io/x
registries:
  docker.io:
    insecure: true
    insecure: false
timeouts:
  connect: 100
colour: red
""")
    code, _, err = run("policy", "lint", str(policy))
    assert code == 1
    trust = f"{policy}/trust.yaml"
    for line, problem in ((4, "expected exactly one PEM block"), (5, "key name 'b b'"),
                          (9, "require must be one of"), (11, "missing required key 'reason'"),
                          (15, "duplicate key 'insecure'"), (17, "timeouts.connect must be"),
                          (18, "unknown key 'colour'")):
        assert re.search(rf"error: {re.escape(trust)}:{line}: .*{re.escape(problem)}", err), \
            (problem, err)


@pytest.mark.parametrize("breaks", [
    lambda p: edit(p, "version: 1\n", "version: 2\n"),
    lambda p: (p / "model.conf").unlink(),
    lambda p: edit(p, "version: 1\n", "version: 1\nmode: on\n"),
    lambda p: edit(p, "default:\n", "default:\n  colour: red\n", file="trust.yaml"),
    lambda p: (p / "rules.yaml").write_text(""),
])
def test_lint_fails_exactly_when_serve_does(policy, breaks):
    breaks(policy)
    code, _, err = run("policy", "lint", str(policy))
    with pytest.raises(Exception):  # noqa: B017 - whichever loader refuses it
        Policy.load(policy)
        load_trust(policy, None)
    assert code == 1 and "  error: " in err


# --------------------------------------------------------------------------- warnings

def checks(directory, today=None):
    report = lint(directory, today=today)
    assert not report.errors, report.errors
    return {(f.check, f.line) for f in report.warnings}, report


def test_expired_and_expiring_exceptions(policy):
    append(policy, """
  - id: gone
    rules: [capabilities]
    subjects: ["*"]
    values: [SYS_ADMIN]
    reason: x
    expires: 2020-01-01
  - id: soon
    rules: [capabilities]
    subjects: ["*"]
    values: [NET_ADMIN]
    reason: x
    expires: 2030-01-05
""")
    found, report = checks(policy, today=dt.date(2030, 1, 1))
    assert ("exception-expired", line_of(policy, "- id: gone")) in found
    assert ("exception-expiring", line_of(policy, "- id: soon")) in found
    assert not [f for f in report.findings if "expired on" in f.message and f.check == "startup"]
    code, out, _ = run("policy", "lint", str(policy))
    assert code == 0 and "exception gone expired on 2020-01-01" in out


def test_exceptions_that_lift_nothing(policy):
    append(policy, """
  - id: wrong-endpoint
    rules: [image-import]
    subjects: ["*"]
    endpoints: [container.create]
    reason: x
  - id: excepted-already
    rules: [capabilities]
    subjects: ["*"]
    values: [CHOWN]
    reason: x
  - id: useful
    rules: [capabilities]
    subjects: ["*"]
    values: [SYS_ADMIN, CHOWN]
    reason: x
""")
    found, _ = checks(policy)
    assert ("exception-lifts-nothing", line_of(policy, "- id: wrong-endpoint")) in found
    assert ("exception-lifts-nothing", line_of(policy, "- id: excepted-already")) in found
    assert ("exception-lifts-nothing", line_of(policy, "- id: useful")) not in found


def test_rules_that_never_match_and_duplicates(policy):
    edit(policy, "\nrules:\n", """
rules:
  - id: all-excepted
    match: {fact: sysctl, except: ["*"]}
    message: m
    fix: f
  - id: pull-on-create
    match: {fact: endpoint, values: [image.pull], endpoints: [container.create]}
    message: m
    fix: f
  - id: privileged-again
    match: {fact: privileged, values: ["true"]}
    message: m
    fix: f
""")
    found, _ = checks(policy)
    assert ("rule-never-matches", line_of(policy, "- id: all-excepted")) in found
    assert ("rule-never-matches", line_of(policy, "- id: pull-on-create")) in found
    assert ("rule-duplicate", line_of(policy, "- id: privileged", nth=2)) in found


def test_unused_roles_and_yaml_1_1_role_names(policy):
    edit(policy, "roles:\n", "roles:\n  yes: [bob]\n  '0777': [carol]\n")
    found, _ = checks(policy)
    assert ("role-unused", line_of(policy, "docker-admins: []")) in found
    assert ("yaml-scalar", line_of(policy, "yes: [bob]")) in found
    assert ("yaml-scalar", line_of(policy, "'0777'")) not in found    # quoted: a name
    assert ("role-unused", line_of(policy, "builders: []")) not in found


def test_audit_mode_is_a_warning_and_strict_fails_on_warnings(policy):
    edit(policy, "version: 1\n", "version: 1\nmode: audit\n")
    found, report = checks(policy)
    assert ("mode-audit", line_of(policy, "mode: audit")) in found and report.mode == "audit"
    code, out, err = run("policy", "lint", str(policy))
    assert code == 0 and "mode: audit" in out
    line = next(x for x in out.splitlines() if x.endswith("[mode-audit]"))
    assert line.startswith(f"  warning: {policy / 'rules.yaml'}:{line_of(policy, 'mode: audit')}: ")
    # Audit mode covers image trust too (authz/decision.py): only the floor and request-* deny.
    assert "the rules and image trust deny nothing" in line
    assert "Only the built-in floor and the request-* refusals still deny" in line
    assert "image trust still deny" not in line
    code, out, err = run("policy", "lint", "--strict", str(policy))
    assert code == 1 and "--strict: warnings fail" in err
    doc = json.loads(run("policy", "lint", "--strict", "--format", "json", str(policy))[1])
    assert doc["exit"] == 1 and doc["errors"] == 0 and doc["strict"] is True


def test_trust_warnings(policy):
    (policy / "a.pub").write_text(pem_key())
    (policy / "b.pub").write_text(pem_key())
    (policy / "trust.yaml").write_text("""version: 1
keys:
  - name: a
    file: a.pub
  - name: b
    file: b.pub
default:
  require: signature
  keys: [a]
rules:
  - pattern: registry.example.com
    require: reject
    reason: mirror only
  - pattern: registry.example.com/team
    require: reject
    reason: also
  - pattern: docker.io
    require: signature
    keys: [a]
""")
    found, _ = checks(policy)
    assert ("trust-key-unused", 2) in found                       # b: nothing trusts it
    assert ("trust-rule-redundant", 14) in found                  # within a reject already
    assert ("trust-rule-redundant", 17) in found                  # what the default asks
    assert ("trust-rule-redundant", 11) not in found


# --------------------------------------------------------------------------- JSON Schemas

jsonschema = pytest.importorskip("jsonschema")
SCHEMAS = Path(__file__).resolve().parents[2] / "schema"


def schema(name):
    doc = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def as_editors_read(value):
    """A YAML document as a YAML 1.2 editor hands it to a JSON Schema: dates are text."""
    if isinstance(value, dict):
        return {str(k): as_editors_read(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_editors_read(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def schema_errors(name, text):
    import yaml

    validator = jsonschema.Draft202012Validator(schema(name),
                                                format_checker=jsonschema.FormatChecker())
    return [e.message for e in validator.iter_errors(as_editors_read(yaml.safe_load(text)))]


@pytest.mark.parametrize("name", ["rules", "trust"])
def test_the_shipped_policy_is_valid(name):
    assert schema_errors(name, (SHIPPED / f"{name}.yaml").read_text()) == []


def test_the_trust_fixture_is_valid(tmp_path):
    directory = full_trust(tmp_path)
    assert schema_errors("trust", (directory / "trust.yaml").read_text()) == []


@pytest.mark.parametrize("old, new", [
    ("  - id: host-ipc\n", "  - id: host-ipc\n    colour: red\n"),
    ("      fact: namespace.pid\n", "      fact: namespace.pidd\n"),
    ("      values: [swarm.init,", "      values: [swarm.init]\n      endpoints: [swarm.innit,"),
    ("  - id: host-uts\n    effect: deny\n", "  - id: host-uts\n    effect: no\n"),
    ("      values: [\"true\"]\n", "      values: [\"true\"]\n      paths: [/x]\n"),
    ("version: 1\n", "version: 1\nmode: permissive\n"),
    ("  - id: host-uts\n", "  - id: request-uts\n"),
    ("    reason:", "    expires: next week\n    reason:"),
])
def test_the_rules_schema_refuses_what_the_loader_refuses(policy, old, new):
    edit(policy, old, new)
    with pytest.raises(Exception):  # noqa: B017 - PolicyError; the point is that both refuse
        Policy.load(policy)
    assert schema_errors("rules", (policy / "rules.yaml").read_text())


@pytest.mark.parametrize("old, new", [
    ("default:\n", "default:\n  colour: red\n"),
    ("  require: signature\n  identity: repository\n", "  require: maybe\n"),
    ("  require: signature\n  identity: repository\n", "  require: accept\n"),
    ("exceptions: []\n", "exceptions:\n  - pattern: quay.io/x\n"),
    ("  connect: 2\n", "  connect: 200\n"),
    ("registries: {}\n", "registries:\n  h.example.com: {insecure: true, ca_file: x.pem}\n"),
])
def test_the_trust_schema_refuses_what_the_loader_refuses(policy, old, new):
    edit(policy, old, new, file="trust.yaml")
    with pytest.raises(Exception):  # noqa: B017 - TrustPolicyError
        load_trust(policy, None)
    assert schema_errors("trust", (policy / "trust.yaml").read_text())


def props(node):
    return set(node["properties"])


def test_the_rules_schema_and_loader_accept_the_same_keys(monkeypatch):
    """Every mapping the loader reads, with the keys it allows (recorded from the loader
    itself while it loads the shipped policy), is the schema's, and the reverse."""
    from authz.decoding.facts import FACT_KINDS
    from authz.decoding.routes import ENDPOINTS
    from authz.policy import rules as rules_module
    from authz.policy.yamlfile import StrictYaml

    seen = {}
    original = StrictYaml.keys

    def record(self, item, allowed, what, required=frozenset()):
        seen[what] = set(allowed)
        return original(self, item, allowed, what, required)

    monkeypatch.setattr(StrictYaml, "keys", record)
    Policy.load(SHIPPED)
    doc = schema("rules")
    defs = doc["$defs"]
    assert seen == {"the policy": props(doc), "a rule": props(defs["rule"]),
                    "match": props(defs["match"]), "an exception": props(defs["exception"])}
    assert doc["properties"]["mode"]["enum"] == list(rules_module.MODES)
    assert defs["rule"]["properties"]["effect"]["enum"] == list(rules_module.EFFECTS)
    assert set(defs["rule"]["properties"]["id"]["allOf"][2]["not"]["enum"]) == set(
        rules_module.FLOOR_RULES)
    assert defs["id"]["pattern"] == rules_module._ID.pattern
    kinds = set(defs["kind"]["anyOf"][0]["enum"])
    assert kinds == set(FACT_KINDS), ("schema/rules.schema.json $defs.kind: add",
                                      sorted(set(FACT_KINDS) - kinds), "remove",
                                      sorted(kinds - set(FACT_KINDS)))
    endpoints = set(defs["endpoint"]["anyOf"][0]["enum"])
    assert endpoints == set(ENDPOINTS), ("schema/rules.schema.json $defs.endpoint: add",
                                         sorted(set(ENDPOINTS) - endpoints), "remove",
                                         sorted(endpoints - set(ENDPOINTS)))


def full_trust(tmp_path):
    """A policy directory whose trust.yaml uses every key the loader knows."""
    directory = tmp_path / "full"
    shutil.copytree(SHIPPED, directory)
    from authz.trust.keys import load_public_key

    pem = pem_key()
    (directory / "a.pub").write_text(pem)
    fingerprint = load_public_key(pem.encode(), "a", "a.pub").fingerprint
    (directory / "ca.pem").write_text("not checked here")
    (directory / "auth.json").write_text('{"auths": {}}')
    (directory / "auth.json").chmod(0o600)
    indented = "\n".join("      " + line for line in pem_key().strip().splitlines())
    (directory / "trust.yaml").write_text(f"""version: 1
keys:
  - name: a
    file: a.pub
    fingerprint: "{fingerprint}"
  - name: b
    pem: |
{indented}
default:
  require: signature
  keys: [a]
  identity: repository
  reason: the default
rules:
  - pattern: registry.example.com/team
    require: signature
    keys: [a, b]
    identity: {{exact: registry.example.com/team/app}}
    reason: signed before mirroring
exceptions:
  - pattern: quay.io/vendor/agent
    reason: vendor ships unsigned images
registries:
  registry.example.com:
    ca_file: ca.pem
  127.0.0.1:5000:
    insecure: true
credentials_file: auth.json
timeouts: {{connect: 1, read: 1, decision: 3}}
cache: {{ttl_seconds: 60, max_entries: 10}}
""")
    return directory


def test_the_trust_schema_and_loader_accept_the_same_keys(tmp_path, monkeypatch):
    from authz.trust import policy as trust_policy
    from authz.trust.trustyaml import TrustYaml

    directory = full_trust(tmp_path)
    seen = {}
    original = TrustYaml.section

    def record(self, value, line, what, allowed, required=frozenset()):
        seen[re.sub(r"^registry '.*'$", "registry", what)] = (set(allowed), set(required))
        return original(self, value, line, what, allowed, required)

    monkeypatch.setattr(TrustYaml, "section", record)
    assert load_trust(directory, None) is not None
    doc = schema("trust")
    defs = doc["$defs"]
    identity = defs["rule"]["properties"]["identity"]["oneOf"][1]

    def of(node):
        return props(node), set(node.get("required", ()))

    assert seen == {"trust.yaml": of(doc), "a key": of(defs["key"]), "default": of(defs["default"]),
                    "rule": of(defs["rule"]), "exception": of(defs["exception"]),
                    "registry": of(defs["registry"]), "identity": of(identity),
                    "timeouts": of(doc["properties"]["timeouts"]),
                    "cache": of(doc["properties"]["cache"])}
    assert defs["require"]["enum"] == list(trust_policy.ACTIONS)


def test_a_policy_anyone_could_rewrite_fails_lint_as_serve_refuses_it(tmp_path):
    import os
    import shutil

    from authz.policytools.lint import lint

    directory = tmp_path / "p"
    shutil.copytree(Path(__file__).resolve().parents[2] / "policies", directory)
    os.chmod(directory / "rules.yaml", 0o666)
    report = lint(directory)
    assert any(f.check == "policy-writable" for f in report.errors), report.findings
