"""authz.policytools.docker_cli: docker command lines translated into the API calls the
docker 20.10 CLI makes (checked against the real CLI in
tests/integration/test_docker_cli_real.py). Table-driven: a flag, and the body it makes."""

from __future__ import annotations

import json

import pytest

from authz.policytools.docker_cli import (
    USER_AGENT,
    ApiCall,
    CliError,
    api_calls,
    placeholder_id,
    to_authz_request,
)
from authz.policytools.docker_cli_go import api_uri, csv_record, go_json, parse_duration, ram_in_bytes

IMG = "local/busybox:1"


def create_body(*flags: str) -> dict:
    calls = api_calls(["docker", "create", *flags, IMG])
    assert [c.label for c in calls] == ["ping", "create"]
    return json.loads(calls[1].body)


def dig(doc, path: str):
    for part in path.split("."):
        doc = doc[part]
    return doc


# (flags, path in the create body, value)
FLAG_CASES = [
    ([], "HostConfig.Privileged", False),
    (["--privileged"], "HostConfig.Privileged", True),
    (["--privileged=false"], "HostConfig.Privileged", False),
    (["-v", "/:/host"], "HostConfig.Binds", ["/:/host"]),
    (["-v", "/srv/a:/a:ro,rslave"], "HostConfig.Binds", ["/srv/a:/a:ro,rslave"]),
    (["-v", "named:/data"], "HostConfig.Binds", ["named:/data"]),
    (["-v", "/anon"], "Volumes", {"/anon": {}}),
    (["-v", "/anon"], "HostConfig.Binds", None),
    (["-v", "./rel:/r"], "HostConfig.Binds", ["./rel:/r"]),
    (["-v", "/x:/a", "-v", "/x:/a"], "HostConfig.Binds", ["/x:/a"]),
    (["--mount", "type=bind,src=/,dst=/h"], "HostConfig.Mounts",
     [{"Type": "bind", "Source": "/", "Target": "/h"}]),
    (["--mount", "type=bind,src=/srv,dst=/h,ro,bind-propagation=rshared"], "HostConfig.Mounts",
     [{"Type": "bind", "Source": "/srv", "Target": "/h", "ReadOnly": True,
       "BindOptions": {"Propagation": "rshared"}}]),
    (["--mount", "dst=/v,src=vol,volume-opt=device=/etc,volume-opt=o=bind"], "HostConfig.Mounts",
     [{"Type": "volume", "Source": "vol", "Target": "/v",
       "VolumeOptions": {"DriverConfig": {"Options": {"device": "/etc", "o": "bind"}}}}]),
    (["--mount", '"type=bind","src=/a,b",dst=/c'], "HostConfig.Mounts",
     [{"Type": "bind", "Source": "/a,b", "Target": "/c"}]),
    (["--mount", "type=tmpfs,dst=/t,tmpfs-size=1k,tmpfs-mode=700"], "HostConfig.Mounts",
     [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024, "Mode": 448}}]),
    (["--tmpfs", "/run:rw,exec"], "HostConfig.Tmpfs", {"/run": "rw,exec"}),
    (["--cap-add", "sys_admin", "--cap-add", "ALL"], "HostConfig.CapAdd", ["sys_admin", "ALL"]),
    (["--cap-drop", "NET_RAW"], "HostConfig.CapDrop", ["NET_RAW"]),
    (["--device", "/dev/sda"], "HostConfig.Devices",
     [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]),
    (["--device", "/dev/sda:/dev/x:r"], "HostConfig.Devices",
     [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/x", "CgroupPermissions": "r"}]),
    (["--device", "/dev/sda:rw"], "HostConfig.Devices",
     [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rw"}]),
    (["--device-cgroup-rule", "a *:* rwm"], "HostConfig.DeviceCgroupRules", ["a *:* rwm"]),
    (["--network", "host"], "HostConfig.NetworkMode", "host"),
    (["--net=container:x"], "HostConfig.NetworkMode", "container:x"),
    (["--network", "host"], "NetworkingConfig", {"EndpointsConfig": {}}),
    (["--pid", "host"], "HostConfig.PidMode", "host"),
    (["--pid", "container:abc"], "HostConfig.PidMode", "container:abc"),
    (["--ipc", "host"], "HostConfig.IpcMode", "host"),
    (["--uts", "host"], "HostConfig.UTSMode", "host"),
    (["--userns", "host"], "HostConfig.UsernsMode", "host"),
    (["--cgroupns", "host"], "HostConfig.CgroupnsMode", "host"),
    (["--security-opt", "seccomp=unconfined"], "HostConfig.SecurityOpt", ["seccomp=unconfined"]),
    (["--security-opt", "apparmor:unconfined"], "HostConfig.SecurityOpt", ["apparmor:unconfined"]),
    (["--security-opt", "no-new-privileges"], "HostConfig.SecurityOpt", ["no-new-privileges"]),
    (["--security-opt", "systempaths=unconfined"], "HostConfig.SecurityOpt", []),
    (["--security-opt", "systempaths=unconfined"], "HostConfig.MaskedPaths", []),
    (["--security-opt", "systempaths=unconfined"], "HostConfig.ReadonlyPaths", []),
    ([], "HostConfig.MaskedPaths", None),
    (["--sysctl", "net.ipv4.ip_forward=1"], "HostConfig.Sysctls", {"net.ipv4.ip_forward": "1"}),
    (["--log-driver", "syslog", "--log-opt", "syslog-address=unix:///dev/log"], "HostConfig.LogConfig",
     {"Type": "syslog", "Config": {"syslog-address": "unix:///dev/log"}}),
    (["--restart", "always"], "HostConfig.RestartPolicy", {"Name": "always", "MaximumRetryCount": 0}),
    (["--restart", "on-failure:5"], "HostConfig.RestartPolicy", {"Name": "on-failure", "MaximumRetryCount": 5}),
    ([], "HostConfig.RestartPolicy", {"Name": "no", "MaximumRetryCount": 0}),
    (["-u", "0:0"], "User", "0:0"),
    (["--user=root"], "User", "root"),
    (["-p", "8080:80"], "HostConfig.PortBindings", {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
    (["-p", "0.0.0.0:53:53/udp"], "HostConfig.PortBindings", {"53/udp": [{"HostIp": "0.0.0.0", "HostPort": "53"}]}),
    (["-p", "80"], "ExposedPorts", {"80/tcp": {}}),
    (["-p", "1000-1001:80"], "HostConfig.PortBindings", {"80/tcp": [{"HostIp": "", "HostPort": "1000-1001"}]}),
    (["-p", "published=8080,target=80"], "HostConfig.PortBindings",
     {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
    (["-P"], "HostConfig.PublishAllPorts", True),
    (["--read-only"], "HostConfig.ReadonlyRootfs", True),
    (["-m", "1g"], "HostConfig.Memory", 1 << 30),
    (["--memory=1.5m"], "HostConfig.Memory", 1572864),
    (["--pids-limit", "100"], "HostConfig.PidsLimit", 100),
    (["--pids-limit", "-1"], "HostConfig.PidsLimit", -1),
    (["--runtime", "runc"], "HostConfig.Runtime", "runc"),
    (["-l", "a=b", "-l", "c"], "Labels", {"a": "b", "c": ""}),
    (["--cgroup-parent", "/docker"], "HostConfig.CgroupParent", "/docker"),
    (["--volumes-from", "other:ro"], "HostConfig.VolumesFrom", ["other:ro"]),
    (["--volume-driver", "rexray"], "HostConfig.VolumeDriver", "rexray"),
    (["-e", "A=1", "-e", "B=2=3"], "Env", ["A=1", "B=2=3"]),
    (["-e", "A=1", "-e", "PYAUTHZ_NOT_SET_X", "-e", "A=2"], "Env", ["A=2", "PYAUTHZ_NOT_SET_X"]),
    (["--entrypoint", "/bin/sh"], "Entrypoint", ["/bin/sh"]),
    (["--entrypoint="], "Entrypoint", [""]),
    (["-w", "/tmp"], "WorkingDir", "/tmp"),
    (["-i"], "OpenStdin", True),
    (["-i"], "StdinOnce", True),
    (["-t"], "Tty", True),
    (["--rm"], "HostConfig.AutoRemove", True),
    (["--init"], "HostConfig.Init", True),
    (["--group-add", "docker"], "HostConfig.GroupAdd", ["docker"]),
    (["--hostname", "h"], "Hostname", "h"),
    (["-h", "h2"], "Hostname", "h2"),
    (["--dns", "1.1.1.1"], "HostConfig.Dns", ["1.1.1.1"]),
    (["--health-cmd", "curl x", "--health-interval", "1m30s"], "Healthcheck",
     {"Test": ["CMD-SHELL", "curl x"], "Interval": 90_000_000_000}),
    (["--no-healthcheck"], "Healthcheck", {"Test": ["NONE"]}),
    (["--stop-timeout", "5"], "StopTimeout", 5),
    (["--shm-size", "64m"], "HostConfig.ShmSize", 64 << 20),
    (["--isolation", "default"], "HostConfig.Isolation", "default"),
    (["-a", "STDERR"], "AttachStdout", False),
    (["-a", "STDERR"], "AttachStderr", True),
]


@pytest.mark.parametrize("flags,path,value", FLAG_CASES, ids=[" ".join(c[0]) + " " + c[1] for c in FLAG_CASES])
def test_create_flag(flags, path, value):
    assert dig(create_body(*flags), path) == value


def test_create_body_is_byte_exact_for_the_default():
    # As the 20.10 CLI sent it for `docker create -t -i --name c2 local/busybox:1` (recorded).
    body = api_calls(["docker", "create", "-t", "-i", "--name", "c2", IMG])[1].body
    assert body.startswith(b'{"Hostname":"","Domainname":"","User":"","AttachStdin":true,'
                           b'"AttachStdout":true,"AttachStderr":true,"Tty":true,"OpenStdin":true,"StdinOnce":true,')
    assert body.endswith(b'"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{}}}\n')
    assert len(body) == 1518


def test_seccomp_file_is_read_and_compacted(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW",  "names": ["a b"]\n}\n')
    assert dig(create_body("--security-opt", f"seccomp={profile}"), "HostConfig.SecurityOpt") == [
        'seccomp={"defaultAction":"SCMP_ACT_ALLOW","names":["a b"]}']
    with pytest.raises(CliError, match="seccomp profile"):
        create_body("--security-opt", f"seccomp={tmp_path}/missing.json")


def test_env_without_value_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FROM_ENV", "x")
    monkeypatch.delenv("NOT_SET", raising=False)
    assert create_body("-e", "FROM_ENV", "-e", "NOT_SET")["Env"] == ["FROM_ENV=x", "NOT_SET"]


def test_run_is_create_attach_wait_start_with_a_placeholder_id():
    argv = ["docker", "run", "--rm", "--name", "web", IMG, "true"]
    calls = api_calls(argv)
    cid = placeholder_id(argv, "container")
    assert len(cid) == 64 and cid == placeholder_id(list(argv), "container")
    assert [(c.method, c.uri, c.label) for c in calls] == [
        ("HEAD", "/_ping", "ping"),
        ("POST", "/v1.41/containers/create?name=web", "create"),
        ("POST", f"/v1.41/containers/{cid}/attach?stderr=1&stdout=1&stream=1", "attach"),
        ("POST", f"/v1.41/containers/{cid}/wait?condition=removed", "wait"),
        ("POST", f"/v1.41/containers/{cid}/start", "start"),
    ]
    assert calls[2].headers["Upgrade"] == "tcp"


def test_run_detached_has_no_attach_and_clears_attach_flags():
    calls = api_calls(["docker", "run", "-dit", IMG])
    assert [c.label for c in calls] == ["ping", "create", "wait", "start"]
    body = json.loads(calls[1].body)
    assert (body["AttachStdin"], body["AttachStdout"], body["OpenStdin"], body["Tty"]) == (False, False, True, True)
    assert calls[2].uri.endswith("/wait?condition=next-exit")


def test_run_interactive_with_a_terminal():
    # On a terminal the CLI goes on (resize calls with the terminal's size follow the
    # start: left out); off a terminal it stops before any call.
    calls = api_calls(["docker", "run", "-it", "--privileged", IMG, "sh"])
    assert [c.label for c in calls] == ["ping", "create", "attach", "wait", "start"]
    assert calls[2].uri.endswith("/attach?stderr=1&stdin=1&stdout=1&stream=1")


def test_run_pull_always_pulls_first():
    calls = api_calls(["docker", "run", "--pull", "always", "-d", "busybox"])
    assert calls[1].uri == "/v1.41/images/create?fromImage=busybox&tag=latest"


@pytest.mark.parametrize("argv,uri", [
    (["pull", "busybox"], "/v1.41/images/create?fromImage=busybox&tag=latest"),
    (["pull", "docker.io/library/busybox:1.36"], "/v1.41/images/create?fromImage=busybox&tag=1.36"),
    (["pull", "127.0.0.1:5000/team/app:1"], "/v1.41/images/create?fromImage=127.0.0.1%3A5000%2Fteam%2Fapp&tag=1"),
    (["pull", "-a", "team/app"], "/v1.41/images/create?fromImage=team%2Fapp"),
    (["pull", "app@sha256:" + "b" * 64], "/v1.41/images/create?fromImage=app&tag=sha256%3A" + "b" * 64),
    (["ps"], "/v1.41/containers/json"),
    (["ps", "-a", "-l"], "/v1.41/containers/json?all=1&limit=1"),
    (["container", "ls", "-s"], "/v1.41/containers/json?size=1"),
    (["images", "-a"], "/v1.41/images/json?all=1"),
    (["images", "busybox"], "/v1.41/images/json?filters=%7B%22reference%22%3A%7B%22busybox%22%3Atrue%7D%7D"),
    (["info"], "/v1.41/info"),
    (["system", "info"], "/v1.41/info"),
    (["version"], "/v1.41/version"),
    (["start", "c1"], "/v1.41/containers/c1/start"),
    (["stop", "c1"], "/v1.41/containers/c1/stop"),
    (["stop", "-t", "3", "c1"], "/v1.41/containers/c1/stop?t=3"),
    (["kill", "c1"], "/v1.41/containers/c1/kill?signal=KILL"),
    (["kill", "-s", "HUP", "c1"], "/v1.41/containers/c1/kill?signal=HUP"),
    (["rm", "-fv", "c1"], "/v1.41/containers/c1?force=1&v=1"),
    (["inspect", "--type", "container", "c1"], "/v1.41/containers/c1/json"),
    (["image", "inspect", "busybox"], "/v1.41/images/busybox/json"),
    (["start", "../../x y"], "/x%20y/start"),
])
def test_simple_commands(argv, uri):
    assert api_calls(["docker", *argv])[-1].uri == uri


def test_exec_calls_and_body():
    argv = ["docker", "exec", "-it", "-u", "0", "--privileged", "c1", "sh"]
    calls = api_calls(argv)
    exec_id = placeholder_id(argv, "exec")
    assert [(c.method, c.uri) for c in calls] == [
        ("HEAD", "/_ping"), ("GET", "/v1.41/containers/c1/json"), ("POST", "/v1.41/containers/c1/exec"),
        ("POST", f"/v1.41/exec/{exec_id}/start"), ("GET", f"/v1.41/exec/{exec_id}/json")]
    body = json.loads(calls[2].body)
    assert body == {"User": "0", "Privileged": True, "Tty": True, "AttachStdin": True, "AttachStderr": True,
                    "AttachStdout": True, "Detach": False, "DetachKeys": "", "Env": None, "WorkingDir": "",
                    "Cmd": ["sh"]}
    assert json.loads(calls[3].body) == {"Detach": False, "Tty": True}


def test_volume_and_network_create():
    vol = api_calls(["docker", "volume", "create", "-o", "o=bind", "-o", "device=/etc", "v"])[1]
    assert vol.body == b'{"Driver":"local","DriverOpts":{"device":"/etc","o":"bind"},"Labels":{},"Name":"v"}\n'
    net = json.loads(api_calls(["docker", "network", "create", "-d", "macvlan", "-o", "parent=eth0", "n"])[1].body)
    assert (net["Driver"], net["Options"], net["Name"]) == ("macvlan", {"parent": "eth0"}, "n")


def test_update_and_plugin_commands():
    calls = api_calls(["docker", "update", "--restart", "always", "-m", "1g", "c1", "c2"])
    assert [c.uri for c in calls[1:]] == ["/v1.41/containers/c1/update", "/v1.41/containers/c2/update"]
    body = json.loads(calls[1].body)
    assert body["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert (body["Memory"], body["PidsLimit"], body["MemorySwappiness"]) == (1 << 30, None, None)
    with pytest.raises(CliError, match="one or more flags"):
        api_calls(["docker", "update", "c1"])
    assert api_calls(["docker", "plugin", "enable", "p"])[1].uri == "/v1.41/plugins/p/enable?timeout=30"
    assert api_calls(["docker", "plugin", "disable", "-f", "p"])[1].uri == "/v1.41/plugins/p/disable?force=1"
    assert api_calls(["docker", "plugin", "rm", "p"])[1].method == "DELETE"
    assert api_calls(["docker", "plugin", "set", "p", "mounts.m.source=/"])[1].body == b'["mounts.m.source=/"]\n'
    with pytest.raises(CliError, match="not modelled"):
        api_calls(["docker", "plugin", "install", "x/y"])


def test_login_never_carries_credentials():
    calls = api_calls(["docker", "login", "-u", "alice", "-p", "hunter2", "reg.example"])
    assert [c.label for c in calls] == ["ping", "info", "login"]
    assert b"hunter2" not in calls[2].body and b"alice" not in calls[2].body
    assert to_authz_request(calls[2]).body is None


@pytest.mark.parametrize("argv,message", [
    (["run", "--no-such-flag", IMG], "unknown flag: --no-such-flag"),
    (["run", "-Z", IMG], "unknown shorthand flag: 'Z'"),
    (["run", "--platform", "linux/arm64", IMG], "--platform is not modelled"),
    (["run", "--gpus", "all", IMG], "--gpus is not modelled"),
    (["run", "--env-file", "x", IMG], "--env-file is not modelled"),
    (["run", "--network", "name=n,alias=a", IMG], "advanced"),
    (["run", "--privileged=maybe", IMG], "ParseBool"),
    (["run", "--pid", "bogus", IMG], "invalid PID mode"),
    (["run", "--cgroupns", "bogus", IMG], "invalid CGROUP mode"),
    (["run", "--sysctl", "kernel.panic=1", IMG], "not whitelisted"),
    (["run", "--restart", "always", "--rm", IMG], "Conflicting options"),
    (["run", "-p", "99999:80", IMG], "Invalid hostPort"),
    (["run", "--mount", "type=bind,src=/", IMG], "target is required"),
    (["run", "--mount", "type=bind,dst=/x,volume-opt=a=b", IMG], "cannot mix"),
    (["run", "--security-opt", "bogus", IMG], "Invalid --security-opt"),
    (["run", "--device-cgroup-rule", "x", IMG], "invalid device cgroup format"),
    (["run", "-m", "lots", IMG], "invalid size"),
    (["run", "Not/Valid", IMG], "invalid image reference"),
    (["run"], "requires at least 1 argument"),
    (["inspect", "x"], "--type"),
    (["login"], "not modelled"),
    (["swarm", "init"], "not modelled"),
    (["--tls", "ps"], "unknown flag"),
])
def test_refused(argv, message):
    with pytest.raises(CliError, match=message if not message.startswith("--") else None) as info:
        api_calls(["docker", *argv])
    assert message in str(info.value)


def test_argv_must_start_with_docker_and_only_api_1_41():
    with pytest.raises(CliError):
        api_calls(["podman", "ps"])
    with pytest.raises(CliError):
        api_calls(["docker", "ps"], api_version="1.40")


def test_flag_parsing_forms():
    body = create_body("-it", "-e=A=1", "-eB=2", "--name=x", "-p80:80")
    assert (body["Tty"], body["OpenStdin"], body["Env"]) == (True, True, ["A=1", "B=2"])
    assert body["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "80"}]}
    # The first positional ends run's flags: later words are the command.
    calls = api_calls(["docker", "run", "-d", IMG, "--privileged"])
    body = json.loads(calls[1].body)
    assert body["Cmd"] == ["--privileged"] and body["HostConfig"]["Privileged"] is False
    # A value taken from the next argument even when it starts with "-".
    assert create_body("-w", "-x")["WorkingDir"] == "-x"


def test_to_authz_request():
    create = api_calls(["docker", "create", IMG])[1]
    request = to_authz_request(create, user="alice")
    assert (request.phase, request.method, request.uri, request.user) == ("request", "POST", create.uri, "alice")
    assert request.body == create.body
    assert request.headers["content-type"] == "application/json"
    assert request.headers["Content-Length"] == str(len(create.body))
    start = to_authz_request(api_calls(["docker", "start", "c"])[1])
    assert start.body is None and start.headers["Content-Length"] == "0"
    big = ApiCall("POST", "/v1.41/containers/create", {"Content-Type": "application/json",
                                                       "User-Agent": USER_AGENT}, b"{" + b" " * (1 << 20) + b"}", "x")
    assert to_authz_request(big).body is None


def test_go_helpers():
    assert go_json({"a": "<&>\u2028\x08"}) == b'{"a":"\\u003c\\u0026\\u003e\\u2028\\u0008"}\n'
    assert parse_duration("x", "1h2m3.5s") == 3_723_500_000_000
    assert parse_duration("x", "1.5µs") == 1500
    with pytest.raises(CliError):
        parse_duration("x", "5")
    assert ram_in_bytes("x", "2 GiB") == 2 << 30
    assert csv_record("x", 'a,"b,""c""",') == ["a", 'b,"c"', ""]
    with pytest.raises(CliError):
        csv_record("x", 'a"b')
    assert api_uri("1.41", "/containers/a b/json", {"x": "1 2"}) == "/v1.41/containers/a%20b/json?x=1+2"
