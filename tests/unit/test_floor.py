"""The floor (what no policy opens), state-judged operations (exec, plugins) and the strict
policy loader: issue 6, classes 2, 3, 6, 7 and 8."""

import json
from pathlib import Path

import pytest

from authz.decoding.facts import Fact
from authz.decoding.plugins import plugin_setting_facts
from authz.moby.daemon import daemon_roots
from authz.plugin import Plugin
from authz.policy import Policy
from authz.policy.floor import SYSTEM_FLOOR, floor_violations, protected
from authz.policy.rules import PolicyError
from authz.protocol import AuthzRequest, Headers
from tests.unit.test_state import FakeDocker
from tests.unit.test_policy import policy_with

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
ID = "e" * 64
PID = "f" * 64


@pytest.mark.parametrize("path, hit", [
    ("/", True), ("/var", True), ("/var/lib", True), ("/var/lib/dpkg/info/x.postinst", True),
    ("/etc/localtime", True), ("/run", True), ("/run/docker.sock", True), ("/usr/local/bin", True),
    ("/var/lib/containerd", True), ("/etc/pyauthz/rules.yaml", True),
    ("/srv/data", False), ("/home/alice", False), ("/var/tmp/x", False), ("/etcetera", False),
    ("/opt/app", False), ("/run/user/1000", False),
])
def test_system_floor(path, hit):
    found = floor_violations("container.create", [Fact("host-path", path, "Binds[0]")], SYSTEM_FLOOR)
    assert bool(found) is hit
    if hit:
        assert found[0].rule == "host-path-protected" and "Fix:" not in found[0].fix


def test_floor_adds_the_running_dockerds_roots(tmp_path):
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"exec-root": "/data/docker-exec/"}))
    roots = daemon_roots({"DockerRootDir": "/data/docker"},
                         ["/usr/sbin/dockerd", "--config-file", str(daemon_json),
                          "--containerd=/data/cd/containerd.sock"])
    found = [p for p, _ in roots]
    assert {"/data/docker", "/data/docker-exec", "/data/cd", "/var/run/docker"} <= set(found)
    # A flag and daemon.json both count (dockerd refuses to start when they conflict).
    roots = daemon_roots({"DockerRootDir": "/d"}, ["dockerd", "--config-file", str(daemon_json),
                                                   "--exec-root", "/x"])
    assert {"/d", "/x", "/data/docker-exec"} <= {p for p, _ in roots}
    paths = protected([p for p, _ in roots], "dockerd's roots")
    assert floor_violations("container.create", [Fact("host-path", "/d/volumes", "w")], paths)
    assert not floor_violations("container.create", [Fact("host-path", "/dx", "w")], paths)


def test_authorization_plugins_are_protected():
    fact = Fact("plugin.interface", "docker.authz/1.0", "plugin.Config.Interface.Types")
    for endpoint in ("plugin.disable", "plugin.remove", "plugin.upgrade", "plugin.set"):
        assert [v.rule for v in floor_violations(endpoint, [fact], ())] == ["authz-plugin-protected"]
    assert floor_violations("plugin.enable", [fact], ()) == []
    other = Fact("plugin.interface", "docker.volumedriver/1.0", "x")
    assert floor_violations("plugin.disable", [other], ()) == []


MOUNT = {"Name": "data", "Source": "/srv", "Destination": "/data", "Type": "bind",
         "Settable": ["source"]}
TWO = {"Name": "two", "Source": "/srv", "Settable": ["source", "destination"]}
DOTTED = {"Name": "a.b", "Source": "/srv", "Settable": ["source"]}
DEVICE = {"Name": "dev", "Path": "/dev/null", "Settable": ["path"]}
CONFIG = {"Mounts": [MOUNT, TWO, DOTTED], "Linux": {"Devices": [DEVICE]},
          "Env": [{"Name": "DEBUG", "Value": "0", "Settable": ["value"]},
                  {"Name": "data2", "Value": "", "Settable": ["value"]}]}


@pytest.mark.parametrize("setting, expected", [
    ("data=/etc", {("host-path", "/etc")}),          # no field: the single settable one
    ("data.source=/etc", {("host-path", "/etc")}),
    ("a.b.source=/etc", {("host-path", "/etc")}),     # the field is after the last '.'
    ("a.b=/etc", set()),                              # name 'a', field 'b': nothing settable
    ("two=/etc", set()),                              # several settable: dockerd refuses
    ("two.source=/etc", {("host-path", "/etc")}),
    ("dev=/dev/sda", {("device", "/dev/sda")}),
    ("dev.path=/dev/sda", {("device", "/dev/sda")}),
    ("DEBUG=1", set()),
    ("data2=/etc", set()),                            # an env named like a path is an env
])
def test_plugin_settings_are_resolved_like_dockerd(setting, expected):
    assert {(f.kind, f.value) for f in plugin_setting_facts(CONFIG, setting, "[0]")} == expected


def test_plugin_mount_setting_must_be_canonical():
    from authz.decoding.errors import RequestRefused

    with pytest.raises(RequestRefused) as info:
        plugin_setting_facts(CONFIG, "data=/srv/x/../../etc", "[0]")
    assert info.value.rule == "request-noncanonical"


class PluginDocker(FakeDocker):
    docker_host = "unix:///nonexistent/pyauthz-test.sock"

    def server_pid(self):
        return None

    def __init__(self, plugins=None, execs=None, **kw):
        super().__init__(**kw)
        self.plugins = plugins or {}
        self.execs = execs or {}

    def inspect_plugin(self, name, deadline):
        for info in self.plugins.values():
            if name in (info["Id"], info["Name"], info["Name"].split(":")[0]) or info["Id"].startswith(name):
                return info
        return None

    def inspect_exec(self, exec_id, deadline):
        return self.execs.get(exec_id)

    def inspect_image(self, ref, deadline):
        return None  # no such image: no default user to read (issue 9's user facts)

    def info(self, deadline):
        return {"DockerRootDir": "/data/docker"}


def shipped_with(tmp_path, old, new):
    """A copy of the shipped policy with ``old`` replaced by ``new`` in rules.yaml."""
    import shutil

    policy_dir = tmp_path / "p"
    shutil.copytree(SHIPPED, policy_dir)
    rules = policy_dir / "rules.yaml"
    text = rules.read_text()
    assert old in text
    rules.write_text(text.replace(old, new, 1))
    return Policy.load(policy_dir)


def decide(uri, body=None, docker=None, method="POST", policy=None):
    policy = policy or Policy.load(SHIPPED)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data) if data else 0)}
    call = AuthzRequest(phase="request", method=method, uri=uri, body=data, headers=Headers(headers))
    return Plugin(policy, None, docker, threads=16).decide(call)


AUTHZ_PLUGIN = {"Id": PID, "Name": "vendor/authz:latest", "Enabled": True,
                "Config": {"Interface": {"Types": ["docker.authz/1.0"]}, "Env": []}}
PRIVILEGED_PLUGIN = {"Id": "a" * 64, "Name": "vendor/vol:latest", "Enabled": False,
                     "Config": {"Interface": {"Types": ["docker.volumedriver/1.0"]},
                                "Network": {"Type": "host"}, "Mounts": [MOUNT],
                                "Linux": {"Capabilities": ["CAP_SYS_ADMIN"]}}}


def rules_of(decision):
    return sorted({v.rule for v in decision.violations})


def test_plugin_operations_through_the_decision():
    docker = PluginDocker(plugins={"a": AUTHZ_PLUGIN, "v": PRIVILEGED_PLUGIN})
    assert rules_of(decide(f"/plugins/{PID}/disable", docker=docker)) == ["authz-plugin-protected"]
    assert rules_of(decide(f"/plugins/{PID}?force=1", docker=docker, method="DELETE")) == \
        ["authz-plugin-protected"]
    assert rules_of(decide(f"/plugins/{PID}/set", ["DEBUG=1"], docker=docker)) == ["authz-plugin-protected"]
    assert rules_of(decide("/plugins/vendor/authz/disable", docker=docker)) == \
        ["authz-plugin-protected", "target-by-id"]
    enable = decide(f"/plugins/{'a' * 64}/enable", docker=docker)
    assert rules_of(enable) == ["plugin-privileges"]
    assert {f.value for f in enable.facts if f.kind == "plugin.privilege"} >= {
        "network=host", "mount=/srv", "capabilities=CAP_SYS_ADMIN"}
    assert decide(f"/plugins/{'a' * 64}/set", ["data=/srv/ok"], docker=docker).allow
    assert rules_of(decide(f"/plugins/{'a' * 64}/set", ["data=/var/lib/docker"], docker=docker)) == \
        ["host-path-protected", "host-path-roots"]


def test_exec_start_is_judged_on_the_exec_and_its_container():
    container = {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64,
                 "HostConfig": {"Binds": ["/opt/x:/x"]}}
    execs = {"1" * 64: {"ContainerID": ID, "ProcessConfig": {"privileged": True}},
             "2" * 64: {"ContainerID": ID, "ProcessConfig": {"privileged": False}}}
    docker = PluginDocker(execs=execs, containers={"web": container})
    assert rules_of(decide(f"/exec/{'1' * 64}/start", {"Detach": True}, docker=docker)) == \
        ["host-path-roots", "privileged"]
    assert rules_of(decide(f"/exec/{'2' * 64}/start", {"Detach": True}, docker=docker)) == \
        ["host-path-roots"]
    for uri, body, method in ((f"/containers/{ID}/exec", {"Cmd": ["true"]}, "POST"),
                              (f"/containers/{ID}/attach?stream=1", None, "POST"),
                              (f"/containers/{ID}/archive?path=/x", None, "GET"),
                              (f"/containers/{ID}/archive?path=/x", None, "PUT"),
                              (f"/v1.23/containers/{ID}/copy", {"Resource": "/x"}, "POST")):
        assert rules_of(decide(uri, body, docker=docker, method=method)) == ["host-path-roots"], uri
    assert rules_of(decide("/containers/web/exec", {"Cmd": ["true"]}, docker=docker)) == \
        ["host-path-roots", "target-by-id"]


def test_plugin_set_without_dockerd_state_is_refused():
    policy = Policy.load(SHIPPED)
    data = json.dumps(["DEBUG=1"]).encode()
    call = AuthzRequest(phase="request", method="POST", uri=f"/plugins/{PID}/set", body=data,
                        headers=Headers({"Content-Type": "application/json",
                                         "Content-Length": str(len(data))}))
    decision = Plugin(policy).decide(call)
    assert rules_of(decision) == ["request-state"]


# --------------------------------------------------------------------------- class 8

@pytest.mark.parametrize("text, problem", [
    ("""
     rules:
       - id: caps
         effect: deny
         effect: audit
         match: {fact: capability}
         message: m
         fix: f
     """, "duplicate key 'effect'"),
    ("""
     rules:
       - id: caps
         match: {fact: capability, values: [A], values: [B]}
         message: m
         fix: f
     """, "duplicate key 'values'"),
    ("""
     rules:
       - id: caps
         match: {fact: capabilty}
         message: m
         fix: f
     """, "fact 'capabilty' matches nothing"),
    ("""
     rules:
       - id: caps
         match: {fact: "namespace.*", endpoints: [container.craete]}
         message: m
         fix: f
     """, "endpoint 'container.craete' matches nothing"),
    ("""
     rules:
       - id: eps
         match: {fact: endpoint, values: [swarm.innit]}
         message: m
         fix: f
     """, "endpoint 'swarm.innit' matches nothing"),
    ("""
     rules:
       - id: roots
         match: {fact: host-path, outside: [/srv/]}
         message: m
         fix: f
     """, "not absolute and canonical"),
    ("""
     rules:
       - id: roots
         match: {fact: host-path, outside: [/srv], except: [/etc]}
         message: m
         fix: f
     """, "takes no 'except'"),
    ("""
     rules:
       - id: caps
         match: {fact: capability}
         message: m
         fix: f
     exceptions:
       - {id: e, rules: [host-path-protected], subjects: ["*"], reason: r}
     """, "floor rules"),
    ("""
     rules:
       - id: host-path-protected
         match: {fact: host-path}
         message: m
         fix: f
     """, "built-in floor rule"),
    ("""
     rules:
       - id: caps
         match: {fact: capability}
         message: m
         fix: f
     exceptions:
       - {id: e, rules: [caps], subjects: ["*"], endpoints: [exec.craete], reason: r}
     """, "endpoint 'exec.craete' matches nothing"),
])
def test_policies_that_would_silently_mean_something_else(tmp_path, text, problem):
    with pytest.raises(PolicyError) as info:
        policy_with(tmp_path, "version: 1\n" + text.replace("\n     ", "\n"))
    assert problem in str(info.value) and "rules.yaml:" in str(info.value)


def test_outside_is_an_allow_list_of_roots(tmp_path):
    policy = policy_with(tmp_path, """
        version: 1
        rules:
          - id: roots
            match: {fact: host-path, outside: [/srv, /home/shared]}
            message: m
            fix: f
    """)

    def denied(path):
        return bool(policy.evaluate("anonymous", "container.create", "",
                                    [Fact("host-path", path, "x")]).violations)

    assert not denied("/srv") and not denied("/srv/a/b") and not denied("/home/shared/x")
    assert denied("/srvx") and denied("/home") and denied("/home/sharedx") and denied("/")


# --------------------------------------------------------------------------- red-team follow-ups

def test_restart_policy_with_host_paths_is_denied():
    body = {"Image": "i", "HostConfig": {"Binds": ["/srv/d:/x"],
                                         "RestartPolicy": {"Name": "always"}}}
    docker = PluginDocker()
    assert rules_of(decide("/containers/create", body, docker=docker)) == ["auto-restart-host-paths"]
    body["HostConfig"]["RestartPolicy"]["Name"] = "no"
    assert decide("/containers/create", body, docker=docker).allow
    assert decide("/containers/create", {"Image": "i", "HostConfig": {
        "RestartPolicy": {"Name": "unless-stopped"}}}, docker=docker).allow
    # docker update --restart on a container that binds a host path: read through dockerd.
    container = {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64,
                 "HostConfig": {"Binds": ["/srv/d:/x"]}}
    docker = PluginDocker(containers={"web": container})
    update = {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}
    assert rules_of(decide(f"/containers/{ID}/update", update, docker=docker)) == \
        ["auto-restart-host-paths"]
    assert decide(f"/containers/{ID}/update", {"Memory": 1 << 30}, docker=docker).allow


@pytest.mark.parametrize("uri, method", [
    (f"/containers/{ID}/checkpoints?dir=/etc", "GET"),
    (f"/containers/{ID}/checkpoints/docker?dir=/etc", "DELETE"),
    (f"/containers/{ID}/start?checkpoint=c&checkpoint-dir=/srv/cp", "POST"),
])
def test_checkpoints_are_denied_and_their_dirs_judged(uri, method):
    decision = decide(uri, docker=PluginDocker(containers={"c": {"Id": ID, "Name": "/c",
                                                                  "Image": "sha256:" + "a" * 64}}),
                      method=method)
    assert "checkpoints" in rules_of(decision)
    if "/etc" in uri:
        assert "host-path-protected" in rules_of(decision)


@pytest.mark.parametrize("checkpoint", ["..", "%2E%2E", "."])
def test_checkpoint_remove_id_must_be_a_plain_name(checkpoint):
    decision = decide(f"/containers/{ID}/checkpoints/{checkpoint}?dir=/srv/cp",
                      docker=PluginDocker(), method="DELETE")
    assert not decision.allow
    assert rules_of(decision)[0] in ("request-uri", "request-noncanonical")


def test_login_is_not_refused_for_its_unseen_body():
    policy = Policy.load(SHIPPED)
    call = AuthzRequest(phase="request", method="POST", uri="/v1.41/auth",
                        headers=Headers({"Content-Type": "application/json", "Content-Length": "80"}))
    assert Plugin(policy).decide(call).allow


@pytest.mark.parametrize("kind, protected_", [
    ("docker.authz/1.0", True), ("docker.authz/1.1", True), ("docker.authz/2.0", True),
    ("docker.authzx/1.0", False), ("docker.volumedriver/1.0", False), ("other.authz/1.0", False),
])
def test_every_version_of_the_authz_interface_is_protected(kind, protected_):
    from authz.policy.floor import is_authz_interface

    assert is_authz_interface(kind) is protected_


@pytest.mark.parametrize("value", ["on", "no", "yes", "off", "true", "0777", "12"])
def test_unquoted_yaml_scalars_that_are_not_strings_are_refused(tmp_path, value):
    with pytest.raises(PolicyError) as info:
        policy_with(tmp_path, f"""
            version: 1
            rules:
              - id: caps
                match: {{fact: capability, except: [{value}]}}
                message: m
                fix: f
        """)
    assert "quote" in str(info.value)


def test_several_dockerds_protect_all_their_roots(monkeypatch):
    from authz.moby import daemon as live

    procs = {1: ["/lib/systemd/systemd"], 10: ["/usr/bin/dockerd", "--exec-root", "/a"],
             11: ["/usr/bin/dockerd", "--exec-root=/b", "-H", "unix:///run/user/1/docker.sock"]}
    monkeypatch.setattr(live, "_cmdline", lambda pid: procs.get(pid, []))
    monkeypatch.setattr(live.os, "listdir", lambda path: [str(p) for p in procs])

    class Docker:
        docker_host = "unix:///var/run/docker.sock"

        def server_pid(self):
            return 1   # socket activation: systemd holds the listener

    args = live.dockerd_arguments(Docker())
    roots = {p for p, _ in live.daemon_roots({"DockerRootDir": "/var/lib/docker"}, args)}
    assert {"/a", "/b", "/var/lib/docker"} <= roots


def test_host_path_resolution_is_bounded_per_decision():
    """256 binds of 2,000-component paths would cost seconds of lstat: refused early."""
    import time

    deep = "/srv/" + "/".join(["d"] * 2000)
    body = {"Image": "i", "HostConfig": {"Binds": [f"{deep}{i}:/x{i}" for i in range(256)]}}
    started = time.process_time()
    decision = decide("/containers/create", body, docker=PluginDocker())
    assert time.process_time() - started < 1.0
    assert rules_of(decision) == ["request-body-invalid"]
    assert "path components" in decision.violations[0].found


def test_own_files_are_in_the_floor(tmp_path):
    import sys

    import authz
    from authz.plugin import PluginConfig, own_paths

    config = PluginConfig(policy_dir=SHIPPED, log_file=tmp_path / "log" / "d.jsonl",
                       socket_path="/run/docker/plugins/pyauthz.sock",
                       docker_host="unix:///var/run/docker.sock")
    paths = own_paths(config)
    for path in (str(SHIPPED / "rules.yaml"), str(tmp_path / "log"), "/run/docker/plugins/x.sock",
                 str(Path(authz.__file__).parent / "app.py"), sys.prefix):
        assert floor_violations("container.create", [Fact("host-path", path, "x")], paths), path


def test_service_with_a_bind_restarts_unasked():
    body = {"TaskTemplate": {"ContainerSpec": {"Image": "i", "Mounts": [
        {"Type": "bind", "Source": "/srv/a", "Target": "/a"}]}}}
    assert "auto-restart-host-paths" in rules_of(decide("/services/create", body,
                                                        docker=PluginDocker()))


def test_config_from_network_options_are_looked_up():
    class Docker(PluginDocker):
        def inspect_network(self, name, deadline):
            return {"Name": name, "Driver": "null", "Options": {"parent": "eth0"}}

    decision = decide("/networks/create", {"Name": "n", "Driver": "macvlan",
                                           "ConfigFrom": {"Network": "cfg"}}, docker=Docker())
    assert rules_of(decision) == ["host-interfaces"]


def test_each_object_is_read_once_and_at_most_32():
    calls = []

    class Counting(PluginDocker):
        def inspect_volume(self, name, deadline):
            calls.append(name)
            return None

    body = {"Image": "i", "HostConfig": {"Binds": [f"v0:/d{i}" for i in range(200)]}}
    assert decide("/containers/create", body, docker=Counting()).allow
    assert calls == ["v0"]
    body = {"Image": "i", "HostConfig": {"Binds": [f"v{i}:/d{i}" for i in range(40)]}}
    decision = decide("/containers/create", body, docker=Counting())
    assert rules_of(decision) == ["request-body-invalid"] and "at most 32" in decision.violations[0].found


def test_service_rollbacks_and_cgroup_parents_are_denied():
    spec = {"TaskTemplate": {"ContainerSpec": {"Image": "i"}, "RestartPolicy": {"Condition": "none"}}}
    assert decide("/services/abc/update?version=3", spec, docker=PluginDocker()).allow
    assert rules_of(decide("/services/abc/update?version=3&rollback=previous", spec,
                           docker=PluginDocker())) == ["service-rollback"]
    failing = dict(spec, UpdateConfig={"FailureAction": "rollback"})
    assert rules_of(decide("/services/abc/update?version=3", failing, docker=PluginDocker())) == \
        ["service-rollback"]
    assert rules_of(decide("/containers/create", {"Image": "i", "HostConfig": {
        "CgroupParent": "/system.slice/pyauthz.service"}}, docker=PluginDocker())) == ["cgroup-parent"]


@pytest.mark.parametrize("match, problem", [
    ("{fact: capability, values: [CAP_SYS_ADMIN]}", "without CAP_"),
    ("{fact: capability, values: [sys_admin]}", "upper case"),
    ("{fact: host-path, values: [/home]}", "paths:"),
    ("{fact: namespace.network, values: ['container:*']}", "host, container"),
    ("{fact: 'namespace.*', values: [Host]}", "host, container"),
    ("{fact: seccomp, values: [Unconfined]}", "seccomp values"),
    ("{fact: privileged, values: ['yes']}", "privileged values"),
])
def test_rule_values_that_can_never_match_do_not_load(tmp_path, match, problem):
    with pytest.raises(PolicyError) as info:
        policy_with(tmp_path, f"""
            version: 1
            rules:
              - id: r
                match: {match}
                message: m
                fix: f
        """)
    assert problem in str(info.value) and "rules.yaml:" in str(info.value)


def test_exception_values_that_can_never_match_do_not_load(tmp_path):
    with pytest.raises(PolicyError) as info:
        policy_with(tmp_path, """
            version: 1
            rules:
              - id: caps
                match: {fact: capability}
                message: m
                fix: f
            exceptions:
              - {id: e, rules: [caps], subjects: ["*"], values: [CAP_NET_ADMIN], reason: r}
        """)
    assert "without CAP_" in str(info.value)


def test_a_create_scoped_exception_lifts_the_start_of_that_container(tmp_path):
    """docker run --rm with an exception scoped to container.create: the start re-check
    must not deny what the create was allowed (the CLI would wait forever)."""
    policy = shipped_with(tmp_path, "\nexceptions:\n", """
exceptions:
  - id: opt-at-create
    rules: [host-path-roots]
    subjects: ["*"]
    endpoints: [container.create]
    reason: test
""")
    container = {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64,
                 "HostConfig": {"Binds": ["/opt/x:/x"]}}
    docker = PluginDocker(containers={"web": container})
    started = decide(f"/containers/{ID}/start", docker=docker, policy=policy)
    assert started.allow, [v.rule for v in started.violations]
    assert [e.exception for e in started.exceptions_applied] == ["opt-at-create"]
    # By name, the start is still refused (target-by-id is not lifted).
    assert rules_of(decide("/containers/web/start", docker=docker, policy=policy)) == ["target-by-id"]


def test_create_scoped_exceptions_lift_only_the_containers_configuration(tmp_path):
    """How a start names its container, and an exec's own privileges, are this request's:
    an exception scoped to container.create does not reach them."""
    policy = shipped_with(tmp_path, "\nexceptions:\n", """
exceptions:
  - id: at-create
    rules: [target-by-id, privileged]
    subjects: ["*"]
    endpoints: [container.create]
    reason: test
""")
    container = {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64, "HostConfig": {}}
    execs = {"1" * 64: {"ContainerID": ID, "ProcessConfig": {"privileged": True}}}
    docker = PluginDocker(containers={"web": container}, execs=execs)
    assert rules_of(decide("/containers/web/start", docker=docker, policy=policy)) == ["target-by-id"]
    assert rules_of(decide(f"/exec/{'1' * 64}/start", {"Detach": True}, docker=docker,
                           policy=policy)) == ["privileged"]


def test_rules_scoped_to_exec_still_deny_and_image_exceptions_carry_over(tmp_path):
    policy = shipped_with(tmp_path, "\nexceptions:\n", """
exceptions:
  - id: app-opt
    rules: [host-path-roots]
    subjects: ["*"]
    images: ["docker.io/library/app:*"]
    endpoints: [container.create]
    reason: test
""")
    rules = policy.directory / "rules.yaml"
    rules.write_text(rules.read_text().replace("\nrules:\n", """
rules:
  - id: no-exec-into-secrets
    match: {fact: host-path, paths: [/srv/secret], endpoints: [exec.create, container.attach]}
    message: m
    fix: f
""", 1))
    policy = Policy.load(policy.directory)
    secret = {"Id": ID, "Name": "/s", "Image": "sha256:" + "a" * 64, "Config": {"Image": "other"},
              "HostConfig": {"Binds": ["/srv/secret:/s"]}}
    opt = {"Id": "b" * 64, "Name": "/o", "Image": "sha256:" + "b" * 64, "Config": {"Image": "app:1"},
           "HostConfig": {"Binds": ["/opt/x:/x"]}}
    docker = PluginDocker(containers={"s": secret, "o": opt})

    def run(uri, body=None):
        return decide(uri, body, docker=docker, policy=policy)

    assert rules_of(run(f"/containers/{ID}/exec", {"Cmd": ["sh"]})) == ["no-exec-into-secrets"]
    assert rules_of(run(f"/containers/{ID}/attach?stream=1")) == ["no-exec-into-secrets"]
    assert run(f"/containers/{ID}/start").allow
    # The image-scoped create exception applies to attach of that container (docker run -it).
    assert run(f"/containers/{'b' * 64}/attach?stream=1").allow
    assert run(f"/containers/{'b' * 64}/start").allow
