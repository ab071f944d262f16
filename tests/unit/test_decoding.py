"""Request decoding: endpoints, bodies and the facts each risk check reports."""

import json

import pytest

from authz.decoding import RequestRefused, read_request
from authz.decoding.canonical import path_budget
from authz.protocol import AuthzRequest, Headers


def decode(request):
    """The request's target and findings: what it says itself, before dockerd's state, under
    one decision's path budget (as ``authz.decoding.decode`` reads it)."""
    with path_budget():
        return read_request(request)


def call(method, uri, body=None, *, content_type="application/json", length=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if length is None:
        length = str(len(data)) if data else "0"
    if length != "absent":
        headers["Content-Length"] = length
    return AuthzRequest(phase="request", method=method, uri=uri, body=data, headers=Headers(headers))


def facts_of(method, uri, body=None, **kw):
    _, decoded = decode(call(method, uri, body, **kw))
    return {(f.kind, f.value) for f in decoded.facts if f.kind != "endpoint"}


# What every create reports when it sets none of them (issue 9: rules can ask for "unset");
# tests/unit/test_facts_issue9.py tests them.
ISSUE_9_ZERO_FACTS = {("readonly-rootfs", "false"), ("no-new-privileges", "false"),
                      ("memory-limit", "unset"), ("pids-limit", "unset"), ("runtime", "default"),
                      ("log.driver", "default")}


def create(host_config=None, **top):
    body = {"Image": "local/busybox:1", **top}
    if host_config is not None:
        body["HostConfig"] = host_config
    return facts_of("POST", "/v1.41/containers/create", body) - ISSUE_9_ZERO_FACTS


# ---------------------------------------------------------------------------------------
# Endpoints

@pytest.mark.parametrize("method, uri, endpoint, write", [
    ("GET", "/_ping", "system.ping", False),
    ("HEAD", "/_ping", "system.ping", False),
    ("GET", "/v1.41/containers/json?all=1", "container.list", False),
    ("POST", "/v1.41/containers/abc/start", "container.start", True),
    ("POST", "/containers/create/start", "container.start", True),  # a container named "create"
    ("POST", "/v1.41/containers/abc/wait?condition=removed", "container.wait", False),
    ("DELETE", "/v1.41/containers/abc?force=1", "container.remove", True),
    ("DELETE", "/v1.41/containers/abc/checkpoints/cp1", "checkpoint.remove", True),
    ("GET", "/v1.41/images/127.0.0.1:5000/team/app:1/json", "image.inspect", False),
    ("POST", "/v1.41/images/127.0.0.1:5000/team/app:1/tag?repo=x&tag=y", "image.tag", True),
    ("POST", "/v1.41/images/create?fromImage=busybox&tag=1", "image.pull", True),
    ("POST", "/v1.41/images/create?fromSrc=-&repo=x", "image.import", True),
    ("POST", "/v1.41/exec/abc/start", "exec.start", True),
    ("POST", "/v1.41/swarm/init", "swarm.init", True),
    ("POST", "/v1.41/plugins/pull/enable", "plugin.enable", True),
    ("GET", "/debug/pprof/profile", "system.debug", False),
    ("PUT", "/debug/vars", "system.debug", False),
    ("OPTIONS", "/v1.41/containers/json", "system.options", False),
    ("POST", "/v1.41/containers/abc/frobnicate", "unknown.write", True),
    ("GET", "/v1.41/frobnicate", "unknown.read", False),
    ("PATCH", "/v1.41/containers/abc", "unknown.write", True),
])
def test_endpoints(method, uri, endpoint, write):
    _, decoded = decode(call(method, uri))
    assert (decoded.endpoint, decoded.write) == (endpoint, write)


# ---------------------------------------------------------------------------------------
# Container create: one row per risk

@pytest.mark.parametrize("host_config, expected", [
    ({"Privileged": True}, {("privileged", "true")}),
    ({"Privileged": False}, set()),
    ({"NetworkMode": "host"}, {("namespace.network", "host")}),
    ({"NetworkMode": "HOST"}, {("namespace.network", "host")}),
    ({"NetworkMode": "container:db"}, {("namespace.network", "container")}),
    ({"NetworkMode": "bridge"}, set()),
    ({"PidMode": "host"}, {("namespace.pid", "host")}),
    ({"PidMode": "container:x"}, {("namespace.pid", "container")}),
    ({"IpcMode": "host"}, {("namespace.ipc", "host")}),
    ({"IpcMode": "shareable"}, set()),
    ({"UTSMode": "host"}, {("namespace.uts", "host")}),
    ({"UsernsMode": "host"}, {("namespace.userns", "host")}),
    ({"CgroupnsMode": "host"}, {("namespace.cgroup", "host")}),
    ({"Cgroup": "container:x"}, {("namespace.cgroup", "container")}),
    ({"CapAdd": ["SYS_ADMIN"]}, {("capability", "SYS_ADMIN")}),
    ({"CapAdd": ["cap_sys_admin"]}, {("capability", "SYS_ADMIN")}),
    ({"CapAdd": ["CAP_NET_ADMIN"]}, {("capability", "NET_ADMIN")}),
    ({"CapAdd": "all"}, {("capability", "ALL")}),
    ({"CapAdd": ["\u017fys_admin"]}, {("capability", "SYS_ADMIN")}),  # Go's ToUpper folds long s
    ({"Capabilities": ["CAP_SYS_PTRACE"]}, {("capability", "SYS_PTRACE")}),
    ({"CapDrop": ["ALL"]}, set()),
    ({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]}, {("device", "/dev/sda")}),
    ({"DeviceCgroupRules": ["c 1:3 rwm"]}, {("device", "cgroup-rule:c 1:3 rwm")}),
    ({"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]}, {("device", "request:default")}),
    ({"Binds": ["/:/host"]}, {("host-path", "/")}),
    ({"Binds": ["/etc/../etc/:/x:ro"]}, {("host-path", "/etc")}),
    ({"Binds": ["//var//run/docker.sock:/s"]}, {("host-path", "/var/run/docker.sock"), ("host-path", "/run/docker.sock")}),
    ({"Binds": ["named:/data"]}, set()),
    ({"Binds": ["/data"]}, set()),
    ({"Binds": ["/srv/x:/x:rshared"]}, {("host-path", "/srv/x"), ("mount-propagation", "rshared")}),
    ({"Mounts": [{"Type": "bind", "Source": "/proc", "Target": "/p"}]}, {("host-path", "/proc")}),
    ({"Mounts": [{"type": "BIND", "source": "/sys", "target": "/s"}]}, {("host-path", "/sys")}),
    ({"Mounts": [{"Type": "bind", "Source": "/srv", "Target": "/x", "BindOptions": {"Propagation": "shared"}}]},
     {("host-path", "/srv"), ("mount-propagation", "shared")}),
    ({"Mounts": [{"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {
        "Name": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}}}}]},
     {("host-path", "/etc")}),
    ({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/x"}]}, set()),
    ({"Mounts": [{"Type": "tmpfs", "Target": "/t"}]}, set()),
    ({"SecurityOpt": ["seccomp=unconfined"]}, {("seccomp", "unconfined")}),
    ({"SecurityOpt": ["seccomp:unconfined"]}, {("seccomp", "unconfined")}),
    ({"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']}, {("seccomp", "unconfined")}),
    ({"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ERRNO"}']},
     {("seccomp", "custom:sha256:4b9a142931f026292d45914eab52edec8271378769fd2e886eab9d476457b755")}),
    # dockerd unmarshals the profile with Go's rules: DefaultAction is defaultAction
    ({"SecurityOpt": ['seccomp={"DefaultAction":"SCMP_ACT_ALLOW"}']}, {("seccomp", "unconfined")}),
    ({"SecurityOpt": ["apparmor=unconfined"]}, {("apparmor", "unconfined")}),
    ({"SecurityOpt": ["apparmor:unconfined"]}, {("apparmor", "unconfined")}),
    ({"SecurityOpt": ["label=disable"]}, {("selinux", "disable")}),
    ({"SecurityOpt": ["label:disable"]}, {("selinux", "disable")}),
    ({"SecurityOpt": ["disable"]}, {("selinux", "disable")}),
    ({"SecurityOpt": ["label=type:spc_t"]}, {("selinux", "type:spc_t")}),
    ({"SecurityOpt": ["no-new-privileges"]}, {("no-new-privileges", "true")}),
    ({"MaskedPaths": [], "ReadonlyPaths": []}, {("masked-paths", "reduced")}),
    ({"MaskedPaths": None}, set()),
    ({"Sysctls": {"kernel.msgmax": "1"}}, {("sysctl", "kernel.msgmax")}),
    ({"Sysctls": {"net/ipv4/ip_forward": "1"}}, {("sysctl", "net.ipv4.ip_forward")}),
])
def test_create_checks(host_config, expected):
    facts = create(host_config)
    facts.discard(("image", "docker.io/local/busybox:1"))
    assert facts == expected


def test_top_level_host_config_fields_are_read_without_inner():
    assert ("privileged", "true") in create(None, Privileged=True)
    assert ("host-path", "/") in create(None, Binds=["/:/h"])
    # "HostConfig": null leaves the top level in force too
    assert ("privileged", "true") in create(None, HostConfig=None, Privileged=True)


def test_top_level_is_ignored_when_inner_host_config_exists():
    assert ("privileged", "true") not in create({}, Privileged=True)


def test_lowercase_keys_and_networking_config():
    facts = facts_of("POST", "/containers/create",
                     raw=b'{"image":"x","hostconfig":{"privileged":true},'
                         b'"NetworkingConfig":{"EndpointsConfig":{"host":{}}}}')
    assert {("privileged", "true"), ("namespace.network", "host")} <= facts


def test_long_s_key_is_read_as_binds():
    facts = facts_of("POST", "/containers/create", raw='{"HostConfig":{"Bind\u017f":["/:/h"]}}'.encode())
    assert ("host-path", "/") in facts


def test_symlinked_bind_source_is_resolved(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    facts = create({"Binds": [f"{link}:/x"]})
    assert ("host-path", "/etc") in facts


def test_image_is_normalized():
    assert ("image", "docker.io/library/busybox:latest") in facts_of(
        "POST", "/containers/create", {"Image": "busybox"})


# ---------------------------------------------------------------------------------------
# Other endpoints that reach the escalation surface

def test_exec_privileged():
    assert ("privileged", "true") in facts_of("POST", "/containers/x/exec", {"Privileged": True, "Cmd": ["sh"]})
    assert facts_of("POST", "/containers/x/exec", {"Cmd": ["sh"]}) == set()


def test_update_devices():
    assert ("device", "/dev/mem") in facts_of("POST", "/containers/x/update",
                                              {"Devices": [{"PathOnHost": "/dev/mem"}]})


def test_legacy_start_body_is_a_host_config():
    body = {"Privileged": True, "Binds": ["/:/h"]}
    assert {("privileged", "true"), ("host-path", "/")} <= facts_of("POST", "/v1.23/containers/x/start", body)
    assert ("privileged", "true") in facts_of("POST", "/v1.23/containers/x/start",
                                              {"HostConfig": {"Privileged": True}})


def test_legacy_start_with_hidden_body_is_refused():
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", "/v1.20/containers/x/start", length="4096"))
    assert info.value.rule == "request-body-missing"


def test_volume_create_bind_in_disguise():
    facts = facts_of("POST", "/volumes/create", {"Name": "v", "Driver": "local",
                                                 "DriverOpts": {"type": "none", "o": "bind", "device": "/"}})
    assert ("host-path", "/") in facts
    facts = facts_of("POST", "/volumes/create", {"Name": "v", "DriverOpts": {
        "type": "overlay", "o": "lowerdir=/etc:/usr,upperdir=/srv/u,workdir=/srv/w"}})
    assert {("host-path", "/etc"), ("host-path", "/usr")} <= facts
    assert ("device", "/dev/sda1") in facts_of("POST", "/volumes/create", {
        "DriverOpts": {"type": "ext4", "device": "/dev/sda1"}})
    assert facts_of("POST", "/volumes/create", {"Name": "plain"}) == set()


def test_service_create():
    spec = {"TaskTemplate": {
        "ContainerSpec": {"Image": "busybox", "CapabilityAdd": ["SYS_ADMIN"],
                          "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}],
                          "Privileges": {"SELinuxContext": {"Disable": True},
                                         "Seccomp": {"Mode": "unconfined"},
                                         "AppArmor": {"Mode": "disabled"}},
                          "Sysctls": {"kernel.msgmax": "1"}},
        "Networks": [{"Target": "host"}]}}
    facts = facts_of("POST", "/services/create", spec)
    assert {("capability", "SYS_ADMIN"), ("host-path", "/var/run/docker.sock"), ("selinux", "disable"),
            ("seccomp", "unconfined"), ("apparmor", "unconfined"), ("sysctl", "kernel.msgmax"),
            ("namespace.network", "host"), ("image", "docker.io/library/busybox:latest")} <= facts
    assert ("namespace.network", "host") in facts_of("POST", "/services/x/update",
                                                     {"Networks": [{"Target": "host"}]})


def test_plugin_install_privileges():
    body = [{"Name": "network", "Value": ["host"]}, {"Name": "mount", "Value": ["/"]}]
    facts = facts_of("POST", "/plugins/pull?remote=127.0.0.1:5000/p:1&name=p", body)
    assert {("plugin.privilege", "network=host"), ("plugin.privilege", "mount=/")} <= facts
    assert ("plugin.privilege", "unknown") in facts_of("POST", "/plugins/create?name=x", None,
                                                       content_type="application/x-tar", length="100")


def test_plugin_set_is_resolved_against_the_plugin():
    _, decoded = decode(call("POST", "/plugins/p/set", ["data.source=/etc", "mnt=/", "DEBUG=1"]))
    assert decoded.plugins == ["p"]
    assert decoded.plugin_settings == ["data.source=/etc", "mnt=/", "DEBUG=1"]


def test_build_host_network():
    assert ("namespace.network", "host") in facts_of(
        "POST", "/build?networkmode=host&t=x", None, content_type="application/x-tar", length="2048")


def test_pull_reference():
    facts = facts_of("POST", "/images/create?fromImage=127.0.0.1:5000/team/app&tag=1")
    assert ("image", "127.0.0.1:5000/team/app:1") in facts
    facts = facts_of("POST", "/images/create?fromImage=127.0.0.1:5000/team/app&tag=sha256:" + "a" * 64)
    assert ("image", "127.0.0.1:5000/team/app@sha256:" + "a" * 64) in facts


def test_checkpoint_dir_is_a_host_path():
    assert ("host-path", "/etc") in facts_of("POST", "/containers/x/checkpoints",
                                             {"CheckpointID": "c", "CheckpointDir": "/etc"})


# ---------------------------------------------------------------------------------------
# Bodies dockerd does not show, or that could be read two ways

@pytest.mark.parametrize("request_", [
    # a create whose body was not forwarded (over 1 MiB, chunked, URI ending in /auth ...)
    call("POST", "/containers/create", None, length="2000000"),
    call("POST", "/containers/create", None, length="absent"),
    call("POST", "/containers/create?name=x/auth", None, length="80"),
    call("POST", "/services/create", None, content_type="text/plain", length="80"),
    call("POST", "/plugins/pull?remote=x", None, content_type="text/plain", length="50"),
    call("POST", "/containers/x/exec", None, length="40"),
    call("POST", "/containers/x/update", None),
    call("POST", "/volumes/create", None, length="absent"),
    # a write that takes no body but has one unseen (a form behind a repeated Content-Type)
    call("POST", "/images/create?fromImage=127.0.0.1:5000/ok&tag=1", None, length="40"),
    call("POST", "/images/create?fromImage=x", None, content_type="application/json", length="absent"),
    call("POST", "/containers/x/start", None, length="30"),
    call("POST", "/build?remote=git://x&t=y", None, content_type="application/x-tar", length="30"),
])
def test_hidden_bodies_are_refused(request_):
    with pytest.raises(RequestRefused) as info:
        decode(request_)
    assert info.value.rule == "request-body-missing"


@pytest.mark.parametrize("request_", [
    call("POST", "/containers/x/start", None),                                    # CLI: CL 0
    call("POST", "/containers/x/start", None, content_type=None, length="absent"),  # curl -X POST
    call("POST", "/build?t=x", None, content_type="application/x-tar", length="4096"),
    call("POST", "/images/load", None, content_type="application/x-tar", length="4096"),
    call("PUT", "/containers/x/archive?path=/tmp", None, content_type="application/x-tar", length="4096"),
    call("POST", "/images/create?fromSrc=-&repo=x", None, content_type="application/x-tar", length="4096"),
])
def test_legitimate_bodyless_and_binary_requests_pass(request_):
    decode(request_)


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "Application/X-WWW-Form-Urlencoded; charset=utf-8",
    "multipart/form-data; boundary=x",
])
def test_form_bodies_on_writes_are_refused(content_type):
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", "/images/create?fromImage=x", None, content_type=content_type, length="20"))
    assert info.value.rule == "request-form-body"


def test_form_content_type_on_reads_is_harmless():
    decode(call("GET", "/containers/json", None, content_type="application/x-www-form-urlencoded"))


def test_json_media_type_with_parameters_is_read():
    facts = facts_of("POST", "/containers/create", {"HostConfig": {"Privileged": True}},
                     content_type="application/json; charset=utf-8")
    assert ("privileged", "true") in facts


@pytest.mark.parametrize("query, image", [
    ("fromImage=busybox", "docker.io/library/busybox"),  # no tag: dockerd pulls every tag
    ("fromImage=busybox:", "docker.io/library/busybox"),  # "pull -a" sends a trailing ':'
    ("fromImage=127.0.0.1:5000/a:1&tag=2", "127.0.0.1:5000/a:2"),  # tag replaces the tag
    ("fromImage=127.0.0.1:5000/a@sha256:" + "b" * 64, "127.0.0.1:5000/a@sha256:" + "b" * 64),
])
def test_pull_reference_as_dockerd_builds_it(query, image):
    _, decoded = decode(call("POST", f"/images/create?{query}"))
    assert decoded.pulls == [image]
    assert ("image", image) in {(f.kind, f.value) for f in decoded.facts}


def test_run_and_service_images_are_kept_raw_for_trust():
    _, decoded = decode(call("POST", "/containers/create", {"Image": "e1aa26f1b185"}))
    assert decoded.runs == ["e1aa26f1b185"] and decoded.services == []
    _, decoded = decode(call("POST", "/services/create",
                             {"TaskTemplate": {"ContainerSpec": {"Image": "127.0.0.1:5000/a"}}}))
    assert decoded.services == ["127.0.0.1:5000/a"] and decoded.runs == []
    assert decoded.image == "127.0.0.1:5000/a:latest"


# ---------------------------------------------------------------------------------------
# Found by review: each of these reached dockerd unchecked once.

@pytest.mark.parametrize("options, expected", [
    ({"type": "proc", "device": "proc"}, ("volume-type", "proc")),
    ({"type": "proc", "device": "proc"}, ("host-path", "/proc")),  # walked from dockerd's "/"
    ({"type": "sysfs", "device": "sysfs"}, ("volume-type", "sysfs")),
    ({"type": "ext4", "device": "dev/vda"}, ("device", "/dev/vda")),
    ({"type": "none", "o": "bind", "device": "/etc"}, ("host-path", "/etc")),
    ({"type": "none", "o": "ro,rbind", "device": "/srv/x"}, ("host-path", "/srv/x")),
    ({"type": "none", "o": "bind,rshared", "device": "/srv/x"}, ("mount-propagation", "rshared")),
    ({"type": "overlay", "o": "lowerdir=/srv/a:/etc,upperdir=/srv/u,workdir=/srv/w"},
     ("host-path", "/etc")),
    ({"type": "overlay", "o": "lowerdir+=/etc,upperdir=/srv/u,workdir=/srv/w"}, ("host-path", "/etc")),
    ({"type": "overlay", "o": "datadir+=/root,upperdir=/srv/u,workdir=/srv/w"}, ("host-path", "/root")),
    ({"type": "overlay", "o": "lowerdir=/srv/a,upperdir=/etc,workdir=/srv/w"}, ("host-path", "/etc")),
    # A network filesystem can point back at this host (addr=127.0.0.1): policy decides.
    ({"type": "nfs", "device": ":/", "o": "addr=127.0.0.1,nolock"}, ("volume-type", "nfs")),
    ({"type": "cifs", "device": "//127.0.0.1/root", "o": "username=u"}, ("volume-type", "cifs")),
])
def test_local_volumes_that_mount_the_host(options, expected):
    assert expected in facts_of("POST", "/volumes/create", {"Name": "v", "DriverOpts": options})
    mount = {"Type": "volume", "Target": "/v", "VolumeOptions": {"DriverConfig": {"Options": options}}}
    assert expected in create({"Mounts": [mount]})


@pytest.mark.parametrize("options", [
    {"type": "tmpfs", "device": "tmpfs", "o": "size=100m"},
    {},
])
def test_local_volumes_that_do_not(options):
    assert facts_of("POST", "/volumes/create", {"Name": "v", "DriverOpts": options}) == set()


def test_non_ascii_content_type_is_refused():
    # Go lower-cases U+0130 to "i": this is a form to dockerd.
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", "/build", None, content_type="appl\u0130cation/x-www-form-urlencoded",
                    length="100"))
    assert info.value.rule == "request-form-body"


def test_tag_takes_no_body():
    with pytest.raises(RequestRefused):
        decode(call("POST", "/images/local/busybox:1/tag", None,
                    content_type="application/json", length="30"))


def test_any_from_image_is_a_pull():
    _, decoded = decode(call("POST", "/images/create?fromImage=127.0.0.1:5999/evil&tag=1&fromSrc=x"))
    assert decoded.endpoint == "image.pull" and decoded.pulls == ["127.0.0.1:5999/evil:1"]


@pytest.mark.parametrize("host_config", [
    {"Binds": [f"/srv/{i}:/m{i}" for i in range(300)]},
    {"Sysctls": {f"net.ipv4.x{i}": "1" for i in range(300)}},
    {"CapAdd": ["CHOWN"] * 300},
])
def test_oversized_lists_are_refused(host_config):
    with pytest.raises(RequestRefused) as info:
        create(host_config)
    assert "at most" in info.value.found


def test_refusals_do_not_echo_query_values():
    with pytest.raises(RequestRefused) as info:
        decode(call("POST", "/build?buildargs=%7B%22T%22%3A%22s3cret%22%7D%zz"))
    assert "s3cret" not in info.value.found and "%7B" not in info.value.found


def test_overlong_version_is_refused():
    with pytest.raises(RequestRefused):
        decode(call("GET", "/v" + "1" * 5000 + "/_ping"))


def test_named_volumes_of_a_create_are_listed_for_lookup():
    _, decoded = decode(call("POST", "/containers/create", {"Image": "x", "HostConfig": {
        "Binds": ["vv:/data", "/srv:/srv", "/anon"],
        "Mounts": [{"Type": "volume", "Source": "ww", "Target": "/w"}, {"Type": "volume", "Target": "/a"}]}}))
    assert [name for name, _ in decoded.volumes] == ["vv", "ww"]


def test_request_size_bounds_are_checked_before_parsing():
    from authz.decoding.errors import RequestRefused as Refused

    with pytest.raises(Refused) as info:
        decode(call("GET", "/containers/json?" + "&".join(["a=b"] * 2000)))
    assert info.value.rule == "request-uri"
    with pytest.raises(Refused) as info:
        decode(call("POST", "/containers/create", {"Image": "i", "Labels": {f"k{i}": "" for i in range(60_000)}}))
    assert info.value.rule == "request-body-invalid" and "members" in info.value.found
