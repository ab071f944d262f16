"""The policy: rules.yaml loading, Casbin evaluation, exceptions, and the shipped default."""

import shutil
import textwrap
from pathlib import Path

import pytest

from authz.decoding.facts import Fact
from authz.policy import Policy, PolicyError
from authz.policy.matchers import path_overlaps

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def default_policy():
    return Policy.load(SHIPPED)


def policy_with(tmp_path, rules_yaml: str) -> Policy:
    shutil.copy(SHIPPED / "model.conf", tmp_path / "model.conf")
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(rules_yaml))
    return Policy.load(tmp_path)


def violated(policy, kind, value, *, subject="anonymous", endpoint="container.create", image=""):
    result = policy.evaluate(subject, endpoint, image, [Fact(kind, value, "HostConfig.X")])
    return sorted(v.rule for v in result.violations)


# Every rule of the shipped policy, with a fact it denies and one it leaves alone.
@pytest.mark.parametrize("rule, denied, allowed", [
    ("privileged", ("privileged", "true"), ("privileged", "false")),
    ("host-network", ("namespace.network", "host"), ("namespace.network", "bridge")),
    ("host-pid", ("namespace.pid", "host"), None),
    ("host-ipc", ("namespace.ipc", "host"), None),
    ("host-uts", ("namespace.uts", "host"), None),
    ("host-userns", ("namespace.userns", "host"), None),
    ("host-cgroupns", ("namespace.cgroup", "host"), None),
    ("shared-namespaces", ("namespace.pid", "container"), None),
    ("capabilities", ("capability", "SYS_ADMIN"), ("capability", "NET_BIND_SERVICE")),
    ("capabilities", ("capability", "ALL"), ("capability", "CHOWN")),
    ("devices", ("device", "/dev/sda"), None),
    ("devices", ("device", "request:nvidia"), None),
    ("host-path-roots", ("host-path", "/"), ("host-path", "/srv/data")),
    ("host-path-roots", ("host-path", "/var/tmp/x"), ("host-path", "/srv/u/p")),
    ("host-path-roots", ("host-path", "/srvx/data"), ("host-path", "/srv")),
    ("host-path-roots", ("host-path", "/home/admin/.ssh"), None),
    ("auto-restart-host-paths", ("auto-restart", "always"), ("restart-policy", "always")),
    ("checkpoints", ("checkpoint", "restore"), None),
    ("log-sockets", ("log-socket", "/var/run/docker.sock"), ("log-socket", "/dev/log")),
    ("volume-drivers", ("volume-driver", "vendor/vol:1"), None),
    ("plugin-installs", ("endpoint", "plugin.pull"), ("endpoint", "plugin.push")),
    ("volume-types", ("volume-type", "nfs"), None),
    ("mount-propagation", ("mount-propagation", "rshared"), ("mount-propagation", "rslave")),
    ("seccomp-unconfined", ("seccomp", "unconfined"), ("seccomp", "default")),
    ("seccomp-custom-profile", ("seccomp", "custom:sha256:ab12"), None),
    ("volume-types", ("volume-type", "proc"), None),
    ("swarm-membership", ("endpoint", "swarm.inspect"), ("endpoint", "node.list")),
    ("apparmor-unconfined", ("apparmor", "unconfined"), ("apparmor", "docker-default")),
    ("apparmor-unconfined", ("apparmor", "my-profile"), ("apparmor", "")),
    ("selinux-disabled", ("selinux", "disable"), ("selinux", "level:s0:c1")),
    ("selinux-disabled", ("selinux", "type:unconfined_service_t"), ("selinux", "type:container_t")),
    ("selinux-disabled", ("selinux", "user:unconfined_u"), None),
    ("selinux-disabled", ("selinux", "filetype:shadow_t"), ("selinux", "filetype:container_file_t")),
    ("driver-plugins", ("network-driver", "vendor/net"), None),
    ("driver-plugins", ("log-driver", "vendor/log"), None),
    ("masked-paths", ("masked-paths", "reduced"), None),
    ("unsafe-sysctls", ("sysctl", "kernel.msgmax"), ("sysctl", "net.ipv4.ip_unprivileged_port_start")),
    ("plugin-privileges", ("plugin.privilege", "network=host"), None),
    ("swarm-membership", ("endpoint", "swarm.join"), ("endpoint", "swarm.leave")),
    ("opaque-endpoints", ("endpoint", "build.grpc"), ("endpoint", "build.prune")),
    ("daemon-debug", ("endpoint", "system.debug"), ("endpoint", "system.ping")),
    ("target-by-id", ("target", "name"), ("target", "id")),
    ("target-by-id", ("target", "missing"), None),
    ("builds", ("endpoint", "build"), ("endpoint", "build.prune")),
    ("builds", ("endpoint", "build.session"), None),
    ("image-import", ("endpoint", "image.import"), ("endpoint", "image.load")),
    ("unknown-write-endpoint", ("endpoint", "unknown.write"), ("endpoint", "unknown.read")),
])
def test_default_rules(default_policy, rule, denied, allowed):
    assert violated(default_policy, *denied) == [rule]
    if allowed:
        assert violated(default_policy, *allowed) == []


def test_audit_effect_reports_without_denying(tmp_path):
    policy = policy_with(tmp_path, """
        rules:
          - id: watch-caps
            effect: audit
            match: {fact: capability}
            message: m
            fix: f
    """)
    result = policy.evaluate("anonymous", "container.create", "", [Fact("capability", "NET_ADMIN", "x")])
    assert [(v.rule, v.effect) for v in result.violations] == [("watch-caps", "audit")]


def test_every_rule_has_message_fix_and_reference(default_policy):
    for rule in default_policy.ruleset.rules:
        assert rule.message and rule.fix and rule.reference, rule.id


@pytest.mark.parametrize("path, protected, expected", [
    ("/", "/etc", True), ("/etc", "/etc", True), ("/etc/x", "/etc", True), ("/etcetera", "/etc", False),
    ("/var", "/var/run/docker.sock", True), ("/var/run/docker.sock", "/var/run/docker.sock", True),
    ("/var/tmp", "/var/run/docker.sock", False), ("/etc/", "/etc", True),
])
def test_path_overlap(path, protected, expected):
    assert path_overlaps(path, protected) is expected


RULES = """
    version: 1
    roles:
      admins: [alice]
    rules:
      - id: caps
        match:
          fact: capability
          values: ["*"]
          except: [CHOWN]
        message: m
        fix: f
      - id: net-admin
        match:
          fact: capability
          values: [NET_ADMIN]
        message: m2
        fix: f2
    exceptions:
      - id: admins-net
        rules: [caps]
        subjects: ["role:admins"]
        values: [NET_ADMIN]
        reason: needed
      - id: tool-image
        rules: [caps]
        subjects: ["*"]
        images: ["127.0.0.1:5000/tools/*"]
        endpoints: [container.create]
        reason: tooling
      - id: old
        rules: [net-admin]
        subjects: ["*"]
        reason: gone
        expires: 2000-01-01
"""


def test_exceptions_lift_only_their_rule(tmp_path):
    policy = policy_with(tmp_path, RULES)
    # alice's exception lifts "caps" for NET_ADMIN but not the separate "net-admin" rule
    assert violated(policy, "capability", "NET_ADMIN", subject="alice") == ["net-admin"]
    assert violated(policy, "capability", "NET_ADMIN", subject="bob") == ["caps", "net-admin"]
    assert violated(policy, "capability", "SYS_ADMIN", subject="alice") == ["caps"]
    # "except" values leave only their own rule
    assert violated(policy, "capability", "CHOWN") == []


def test_image_and_endpoint_scoped_exception(tmp_path):
    policy = policy_with(tmp_path, RULES)
    img = "127.0.0.1:5000/tools/probe:1"
    assert violated(policy, "capability", "SYS_ADMIN", image=img) == []
    assert violated(policy, "capability", "SYS_ADMIN", image="127.0.0.1:5000/tools/a/b:1") == ["caps"]
    assert violated(policy, "capability", "SYS_ADMIN", image=img, endpoint="service.create") == ["caps"]
    result = policy.evaluate("anonymous", "container.create", img, [Fact("capability", "SYS_ADMIN", "x")])
    assert [(e.exception, e.rule) for e in result.exceptions_applied] == [("tool-image", "caps")]


def test_expired_exception_no_longer_applies(tmp_path):
    policy = policy_with(tmp_path, RULES)
    assert "net-admin" in violated(policy, "capability", "NET_ADMIN")
    assert any("expired" in w for w in policy.warnings)


def test_answers_are_memoized(tmp_path):
    policy = policy_with(tmp_path, RULES)
    violated(policy, "capability", "SYS_ADMIN")
    enforcer = policy._state[0][0]
    enforcer._enforcer = None  # a second identical question must not reach Casbin
    assert violated(policy, "capability", "SYS_ADMIN") == ["caps"]


@pytest.mark.parametrize("yaml_text, error", [
    ("rules: [{id: x, match: {fact: capability}, message: m}]", "'fix' is required"),
    ("rules: [{id: x, match: {fact: capability}, fix: f}]", "'message' is required"),
    ("rules: [{id: X Y, match: {fact: capability}, message: m, fix: f}]", "rule id"),
    ("rules: [{id: request-x, match: {fact: capability}, message: m, fix: f}]", "reserved"),
    ("rules: [{id: x, effect: allow, match: {fact: capability}, message: m, fix: f}]", "effect"),
    ("rules: [{id: x, match: {fact: a, valuez: [b]}, message: m, fix: f}]", "unknown key"),
    ("rules: [{id: x, match: {fact: capability, paths: [etc]}, message: m, fix: f}]", "not absolute"),
    ("rules: [{id: x, match: {fact: capability}, message: m, fix: f}, {id: x, match: {fact: capability}, message: m, fix: f}]",
     "duplicate"),
    ("rules: []\nexceptions: [{id: e, rules: [nope], subjects: ['*'], reason: r}]", "no rule 'nope'"),
    ("rules: [{id: x, match: {fact: capability}, message: m, fix: f}]\nexceptions: [{id: e, rules: [x], reason: r}]",
     "'subjects' is required"),
    ("rules: [{id: x, match: {fact: capability}, message: m, fix: f}]\n"
     "exceptions: [{id: e, rules: [x], subjects: ['role:ghosts'], reason: r}]", "no role 'ghosts'"),
    ("rules: [{id: x, match: {fact: capability}, message: m, fix: f}]\nexceptions: [{id: e, rules: [x], subjects: ['*']}]",
     "'reason' is required"),
    ("version: 2\nrules: []", "unsupported version"),
    ("rules: [", "not valid YAML"),
])
def test_invalid_policies_name_file_and_problem(tmp_path, yaml_text, error):
    with pytest.raises(PolicyError) as info:
        policy_with(tmp_path, yaml_text)
    assert error in str(info.value)
    assert "rules.yaml" in str(info.value)


def test_error_names_the_line(tmp_path):
    with pytest.raises(PolicyError) as info:
        policy_with(tmp_path, "version: 1\nrules:\n  - id: ok\n    match: {fact: capability}\n    message: m\n")
    assert "rules.yaml:3:" in str(info.value)


def test_revision_changes_with_any_policy_file(tmp_path):
    first = policy_with(tmp_path, RULES).revision
    (tmp_path / "rules.yaml").write_text((tmp_path / "rules.yaml").read_text() + "\n# note\n")
    assert Policy.load(tmp_path).revision != first


def test_docs_describe_every_shipped_rule_and_fact_kind():
    """docs/policy.md names every rule of the shipped policy (and the floor rules) in its
    rule-by-rule list, and its facts table lists exactly the kinds of the check registry."""
    import re

    from authz.decoding.facts import FACT_KINDS
    from authz.policy.rules import FLOOR_RULES

    doc = (SHIPPED.parent / "docs" / "policy.md").read_text()
    for rule_id in [r.id for r in Policy.load(SHIPPED).ruleset.rules] + sorted(FLOOR_RULES):
        assert f"- **`{rule_id}`**" in doc, rule_id
    table = doc.split("| kind | values | from |", 1)[1].split("\n\n", 1)[0]
    documented = {kind for row in table.splitlines()[2:]
                  for kind in re.findall(r"`([^`]+)`", row.strip().split(" | ")[0])}
    assert set(FACT_KINDS) - documented == set(), "kinds missing from docs/policy.md"
    assert documented - set(FACT_KINDS) == set(), "docs/policy.md lists kinds no code reports"


def test_docs_describe_every_refusal():
    """Every request-* refusal the decoder can raise is in docs/policy.md's refusal table."""
    import re

    source = "".join(p.read_text() for p in (SHIPPED.parent / "authz").rglob("*.py"))
    ids = set(re.findall(r'"(request-[a-z-]+)"', source))
    doc = (SHIPPED.parent / "docs" / "policy.md").read_text()
    assert ids and all(f"| `{i}` |" in doc for i in ids), sorted(
        i for i in ids if f"| `{i}` |" not in doc)


def test_exception_expires_at_its_date_without_a_reload(tmp_path):
    """An exception applies through its expiry day and stops the day after, in a running
    plugin, with no reload."""
    import datetime as dt

    (tmp_path / "model.conf").write_text((SHIPPED / "model.conf").read_text())
    (tmp_path / "rules.yaml").write_text(textwrap.dedent("""
        version: 1
        rules:
          - id: caps
            match: {fact: capability}
            message: m
            fix: f
        exceptions:
          - {id: soon, rules: [caps], subjects: ["*"], values: [NET_ADMIN], reason: r,
             expires: 2027-03-31}
    """))
    from authz.policy.rules import load_rules

    days = [dt.date(2027, 3, 31)]
    policy = Policy(tmp_path, load_rules(tmp_path / "rules.yaml", days[0]), "rev",
                    clock=lambda: days[0])
    assert violated(policy, "capability", "NET_ADMIN") == []
    days[0] = dt.date(2027, 4, 1)
    assert violated(policy, "capability", "NET_ADMIN") == ["caps"]
    assert any("expired" in w for w in policy.warnings)


def test_the_memo_keeps_no_long_request_strings(tmp_path):
    policy = policy_with(tmp_path, RULES)
    for i in range(50):
        violated(policy, "capability", f"X{i}" + "A" * 100_000)
    assert all(len(e._cache) == 0 for e in policy._state[0])
    for i in range(5000):
        violated(policy, "capability", f"CAP{i}")
    assert all(len(e._cache) <= e._CACHE_LIMIT for e in policy._state[0])
