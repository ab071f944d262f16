"""The facts teams ask for (issue 9): user and user.root, published ports, log driver and
option keys, runtime, labels, read-only root filesystem, no-new-privileges, memory and pids
limits; bodies in, facts out, with dockerd's state from a stand-in."""

import json
import re
from pathlib import Path

import pytest
import yaml

from authz.decoding import decode
from authz.decoding.checks import host_ip, user_is_root
from authz.decoding.facts import value_problem
from authz.decoding.lookups import Lookups
from authz.policy import Policy
from authz.protocol import AuthzRequest, Headers

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ID = "sha256:" + "a" * 64
CID = "c" * 64


class Dockerd:
    """dockerd's images, containers and execs as inspect answers them."""

    def __init__(self, images=None, containers=None, execs=None):
        self.images = images or {}
        self.containers = containers or {}
        self.execs = execs or {}
        self.image_reads = []

    def inspect_image(self, ref, deadline):
        self.image_reads.append(ref)
        return self.images.get(ref)

    def inspect_container(self, name, deadline):
        return self.containers.get(name)

    def inspect_exec(self, exec_id, deadline):
        return self.execs.get(exec_id)

    def info(self, deadline):
        return {"DockerRootDir": "/var/lib/docker"}

    def server_pid(self):
        return None


def image(user="", exposed=()):
    return {"Id": IMAGE_ID, "Config": {"User": user, "ExposedPorts": {p: {} for p in exposed}}}


def request(uri, body, docker=None):
    data = json.dumps(body).encode()
    call = AuthzRequest(phase="request", method="POST", uri=uri, body=data,
                        headers=Headers({"Content-Type": "application/json",
                                         "Content-Length": str(len(data))}))
    return decode(call, Lookups(docker))


def facts(body, docker=None, kinds=None, uri="/v1.41/containers/create"):
    found = request(uri, body, docker).facts
    return sorted((f.kind, f.value) for f in found
                  if (kinds is None or f.kind in kinds) and f.kind not in ("endpoint", "image"))


# --------------------------------------------------------------------------- user.root

@pytest.mark.parametrize("user, root", [
    ("", "true"), (":1000", "true"), ("0", "true"), ("00", "true"), ("+0", "true"),
    ("-0", "true"), ("0:0", "true"), ("0:1000", "true"), ("root", "true"), ("root:wheel", "true"),
    ("1000", "false"), ("1000:0", "false"), ("65534:65534", "false"), ("+1000", "false"),
    ("2147483647", "false"),
    ("2147483648", "unknown"),            # above runc's maxId: refused, unless in /etc/passwd
    ("-1", "unknown"),
    ("99999999999999999999", "unknown"),  # Atoi fails: a name, /etc/passwd decides (may be 0)
    ("nobody", "unknown"), ("Root", "unknown"), (" 0", "unknown"), ("0x0", "unknown"),
    ("1_000", "unknown"), ("app:0", "unknown"),
])
def test_user_root_reads_user_group_as_runc_does(user, root):
    assert user_is_root(user) == root


# --------------------------------------------------------------------------- user

USER_KINDS = ("user", "user.root")


@pytest.mark.parametrize("body, expected", [
    ({"Image": "busybox", "User": "1000:1000"}, [("user", "1000:1000"), ("user.root", "false")]),
    ({"Image": "busybox", "User": "0"}, [("user", "0"), ("user.root", "true")]),
    ({"Image": "busybox", "user": "app"}, [("user", "app"), ("user.root", "unknown")]),
    ({"User": ""}, [("user.root", "true")]),                 # no image, no user: root
    ({"Image": "busybox", "User": "x" * 300}, [("user", "x" * 256), ("user.root", "unknown")]),
])
def test_an_explicit_user_needs_no_image_read(body, expected):
    docker = Dockerd()
    assert facts(body, docker, USER_KINDS) == expected
    assert docker.image_reads == []


@pytest.mark.parametrize("default, expected", [
    ("", [("user.root", "true")]),
    ("root", [("user", "root"), ("user.root", "true")]),
    ("1000", [("user", "1000"), ("user.root", "false")]),
    ("nginx", [("user", "nginx"), ("user.root", "unknown")]),
])
def test_without_user_the_image_default_is_read_through_dockerd(default, expected):
    docker = Dockerd(images={"127.0.0.1:5000/app:1": image(default)})
    assert facts({"Image": "127.0.0.1:5000/app:1"}, docker, USER_KINDS) == expected
    assert docker.image_reads == ["127.0.0.1:5000/app:1"]   # Config.Image, as dockerd resolves it
    where = {f.where for f in request("/v1.41/containers/create", {"Image": "127.0.0.1:5000/app:1"},
                                      docker).facts if f.kind == "user.root"}
    assert where == {"image.Config.User"}


def test_a_missing_image_runs_as_an_unknown_user():
    """dockerd refuses the create (No such image), but looks the image up again after the
    decision: a pull finishing in between would run its default user unseen."""
    assert facts({"Image": "nope:1"}, Dockerd(), USER_KINDS) == [("user.root", "unknown")]


def test_without_dockerd_state_the_user_is_unknown():
    """No image is read (--docker-host ''): who the container runs as cannot be known."""
    assert facts({"Image": "busybox"}, None, USER_KINDS) == [("user.root", "unknown")]


def test_a_start_judges_the_stored_user():
    stored = {"Id": CID, "Name": "/web", "Image": IMAGE_ID,
              "Config": {"Image": "busybox", "User": ""}, "HostConfig": {}}
    docker = Dockerd(containers={CID: stored})
    call = AuthzRequest(phase="request", method="POST", uri=f"/v1.41/containers/{CID}/start",
                        headers=Headers({"Content-Length": "0"}))
    decoded = decode(call, Lookups(docker))
    stored_facts = {(f.kind, f.value, f.where) for f in decoded.stored}
    assert ("user.root", "true", "container.Config.User") in stored_facts
    stored["Config"]["User"] = "1000"
    decoded = decode(call, Lookups(docker))
    assert ("user.root", "false") in {(f.kind, f.value) for f in decoded.stored}


def test_exec_user_is_judged_at_create_and_at_start():
    stored = {"Id": CID, "Name": "/web", "Image": IMAGE_ID,
              "Config": {"Image": "busybox", "User": "1000"}, "HostConfig": {}}
    docker = Dockerd(containers={CID: stored},
                     execs={"e" * 64: {"ContainerID": CID, "ProcessConfig": {"user": "root"}}})
    created = facts({"Cmd": ["sh"], "User": "0"}, docker, USER_KINDS,
                    uri=f"/v1.41/containers/{CID}/exec")
    assert created == [("user", "0"), ("user", "1000"), ("user.root", "false"), ("user.root", "true")]
    started = facts({}, docker, USER_KINDS, uri=f"/v1.41/exec/{'e' * 64}/start")
    assert ("user.root", "true") in started and ("user", "root") in started


def test_a_service_without_user_is_unknown():
    body = {"TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}
    assert facts(body, None, USER_KINDS, uri="/v1.41/services/create") == [("user.root", "unknown")]
    body["TaskTemplate"]["ContainerSpec"]["User"] = "1000"
    assert facts(body, None, USER_KINDS, uri="/v1.41/services/create") == \
        [("user", "1000"), ("user.root", "false")]


# --------------------------------------------------------------------------- ports

PORT_KINDS = ("port.publish", "port.publish-all")


@pytest.mark.parametrize("text, address", [
    ("", "0.0.0.0"), ("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "127.0.0.1"), ("::", "::"),
    ("::1", "::1"), ("[::1]", "0.0.0.0"), ("::ffff:127.0.0.1", "127.0.0.1"),
    ("127.0.0.01", "0.0.0.0"),       # Go's ParseIP refuses leading zeros: nil, every address
    ("127.1", "0.0.0.0"), ("localhost", "0.0.0.0"), ("fe80::1%eth0", "0.0.0.0"),
    (" 127.0.0.1", "0.0.0.0"), ("2001:DB8::1", "2001:db8::1"),
])
def test_host_ip_is_read_like_go_net_parseip(text, address):
    assert host_ip(text) == address


@pytest.mark.parametrize("bindings, expected", [
    ({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, ["0.0.0.0:8080->80/tcp"]),
    ({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}, ["127.0.0.1:8080->80/tcp"]),
    ({"80": [{"HostPort": ""}]}, ["0.0.0.0:random->80/tcp"]),
    ({"53/udp": [{"HostIp": "::", "HostPort": "53"}, {"HostIp": "10.0.0.1", "HostPort": "0"}]},
     [":::53->53/udp", "10.0.0.1:random->53/udp"]),
    ({"8000-8001/tcp": [{"HostPort": "9000-9001"}]}, ["0.0.0.0:9000-9001->8000-8001/tcp"]),
    ({"80/tcp": []}, []), ({"80/tcp": None}, []),
])
def test_port_bindings(bindings, expected):
    body = {"Image": "busybox", "User": "1", "HostConfig": {"PortBindings": bindings}}
    assert [v for k, v in facts(body, None, PORT_KINDS)] == sorted(expected)


def test_publish_all_publishes_the_exposed_ports_of_the_create_and_the_image():
    docker = Dockerd(images={"busybox": image("1000", ["80/tcp", "443/tcp", "9000/udp"])})
    body = {"Image": "busybox", "ExposedPorts": {"8080/tcp": {}, "443/tcp": {}},
            "HostConfig": {"PublishAllPorts": True,
                           "PortBindings": {"443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "443"}]}}}
    assert facts(body, docker, PORT_KINDS) == sorted([
        ("port.publish", "127.0.0.1:443->443/tcp"), ("port.publish-all", "true"),
        ("port.publish", "0.0.0.0:random->8080/tcp"), ("port.publish", "0.0.0.0:random->80/tcp"),
        ("port.publish", "0.0.0.0:random->9000/udp")])


def test_port_bindings_of_the_wrong_type_are_refused():
    with pytest.raises(Exception, match="request-body-invalid|not an array"):
        request("/v1.41/containers/create",
                {"Image": "b", "HostConfig": {"PortBindings": {"80/tcp": "8080"}}})


# --------------------------------------------------------------------------- the rest

ALWAYS = ("readonly-rootfs", "no-new-privileges", "memory-limit", "pids-limit", "runtime",
          "log.driver", "log.option", "label")


@pytest.mark.parametrize("top, host_config, expected", [
    ({}, {}, {"readonly-rootfs": "false", "no-new-privileges": "false", "memory-limit": "unset",
              "pids-limit": "unset", "runtime": "default", "log.driver": "default"}),
    ({}, {"ReadonlyRootfs": True, "Memory": 67108864, "PidsLimit": 100, "Runtime": "runsc",
          "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
          "SecurityOpt": ["no-new-privileges"]},
     {"readonly-rootfs": "true", "no-new-privileges": "true", "memory-limit": "set",
      "pids-limit": "set", "runtime": "runsc", "log.driver": "json-file", "log.option": "max-size"}),
    ({"Memory": 67108864}, {}, {"memory-limit": "set"}),   # getHostConfig copies it in
    ({}, {"PidsLimit": 0}, {"pids-limit": "unset"}), ({}, {"PidsLimit": -1}, {"pids-limit": "unset"}),
    ({}, {"SecurityOpt": ["no-new-privileges=true"]}, {"no-new-privileges": "true"}),
    ({}, {"SecurityOpt": ["no-new-privileges:1"]}, {"no-new-privileges": "true"}),
    ({}, {"SecurityOpt": ["no-new-privileges", "no-new-privileges=false"]},
     {"no-new-privileges": "false"}),
    ({}, {"SecurityOpt": ["No-New-Privileges=true"]}, {"no-new-privileges": "false"}),
    ({}, {"LogConfig": {"Type": "splunk", "Config": {"splunk-token": "SECRET", "splunk-url": "u"}}},
     {"log.driver": "splunk"}),
    ({"Labels": {"team": "payments", "k" * 200: "v" * 300}}, {}, {}),
])
def test_always_reported_facts(top, host_config, expected):
    found = dict(facts({"Image": "b", "User": "1", **top, "HostConfig": host_config}, None,
                       [k for k in ALWAYS if k not in ("log.option", "label")]))
    for kind, value in expected.items():
        if kind != "log.option":
            assert found[kind] == value, kind


def test_log_options_are_keys_never_values():
    body = {"Image": "b", "HostConfig": {"LogConfig": {"Type": "splunk", "Config": {
        "splunk-token": "SECRET-TOKEN", "splunk-url": "https://x"}}}}
    decoded = request("/v1.41/containers/create", body)
    assert sorted(f.value for f in decoded.facts if f.kind == "log.option") == \
        ["splunk-token", "splunk-url"]
    assert not any("SECRET" in f.value or "SECRET" in f.detail for f in decoded.facts)


def test_labels_are_cut():
    body = {"Image": "b", "Labels": {"team": "payments", "k" * 200: "v" * 300}}
    assert facts(body, None, ("label",)) == sorted([
        ("label", "team=payments"), ("label", "k" * 128 + "=" + "v" * 256)])


def test_memory_must_be_an_integer_as_go_reads_it():
    for memory in (1.5, "64m", True, 1e9):
        with pytest.raises(Exception, match="expected an integer|request-body-invalid"):
            request("/v1.41/containers/create", {"Image": "b", "HostConfig": {"Memory": memory}})


def test_service_limits_and_read_only():
    body = {"TaskTemplate": {"ContainerSpec": {"Image": "b", "ReadOnly": True, "Labels": {"a": "b"}},
                             "Resources": {"Limits": {"MemoryBytes": 1 << 26, "Pids": 0}},
                             "LogDriver": {"Name": "journald", "Options": {"tag": "x"}}}}
    found = facts(body, None, ALWAYS, uri="/v1.41/services/create")
    assert found == sorted([("readonly-rootfs", "true"), ("memory-limit", "set"),
                            ("pids-limit", "unset"), ("label", "a=b"), ("log.driver", "journald"),
                            ("log.option", "tag")])


@pytest.mark.parametrize("kind, value", [("user.root", "yes"), ("memory-limit", "none"),
                                         ("readonly-rootfs", "True"), ("port.publish-all", "false")])
def test_a_rule_value_that_cannot_match_is_refused(kind, value):
    assert value_problem(kind, value)


def test_docs_example_rules_load(tmp_path):
    """docs/policy.md's example rules for these facts load on top of the shipped policy."""
    doc = (ROOT / "docs" / "policy.md").read_text()
    section = doc.split("## Rules on the facts teams ask for", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    examples = yaml.safe_load(block)
    assert {rule["match"]["fact"] for rule in examples} >= {
        "user.root", "memory-limit", "pids-limit", "readonly-rootfs", "no-new-privileges",
        "port.publish", "port.publish-all", "log.driver", "log.option", "runtime", "label"}
    for name in ("rules.yaml", "model.conf", "trust.yaml"):
        (tmp_path / name).write_text((ROOT / "policies" / name).read_text())
    rules = (tmp_path / "rules.yaml").read_text()
    with_examples = rules.replace("\nexceptions:\n", "\n" + block + "\nexceptions:\n", 1)
    (tmp_path / "rules.yaml").write_text(with_examples)
    loaded = Policy.load(tmp_path)
    assert {"no-root", "loopback-ports-only", "sandboxed-runtime"} <= {r.id for r in loaded.ruleset.rules}
