"""Reads of dockerd's state (authz/decoding/state.py), with a stand-in for dockerd."""

import json

import pytest

from authz.decoding.errors import RequestRefused
from authz.decoding.lookups import Lookups
from authz.decoding.state import DockerState
from authz.moby.client import DockerError


class FakeDocker:
    def __init__(self, containers=None, networks=None, volumes=None, fail=False):
        self.containers = containers or {}
        self.networks = networks or {}
        self.volumes = volumes or {}
        self.fail = fail

    def inspect_volume(self, name, deadline):
        if self.fail:
            raise DockerError("dockerd did not answer")
        return self.volumes.get(name)

    def inspect_container(self, name, deadline):
        if self.fail:
            raise DockerError("dockerd did not answer")
        for key, info in self.containers.items():
            if name in (key, info.get("Id"), (info.get("Name") or "")[1:]) or (
                    info.get("Id", "").startswith(name)):
                return info
        return None

    def inspect_network(self, name, deadline):
        if self.fail:
            raise DockerError("dockerd did not answer")
        for net in self.networks.values():
            if net["Id"].startswith(name) or net["Name"] == name:
                return net
        return None


def test_service_network_named_by_id_prefix_is_the_host_network():
    docker = FakeDocker(networks={"host": {"Id": "5b64c9dad866aa", "Name": "host", "Driver": "host"},
                                  "app": {"Id": "77aa00", "Name": "app", "Driver": "overlay"}})
    live = DockerState(Lookups(docker))
    assert [(f.kind, f.value) for f in live.network_facts("5b64c9", "Networks[0].Target")] == \
        [("namespace.network", "host")]
    assert live.network_facts("app", "Networks[0].Target") == []
    assert live.network_facts("nope", "Networks[0].Target") == []


ID = "c" * 64


def test_started_container_is_checked_with_its_stored_config():
    stored = {"Id": ID, "Name": "/c1", "Image": "sha256:" + "a" * 64, "Config": {"Image": "busybox"},
              "HostConfig": {"Privileged": True, "CgroupnsMode": "host", "Binds": ["/:/h"],
                             "MaskedPaths": ["/proc/asound"]}}
    live = DockerState(Lookups(FakeDocker(containers={"c1": json.loads(json.dumps(stored))})))
    started = live.acted_on("c1")
    kinds = {(f.kind, f.value) for f in started.facts}
    assert {("privileged", "true"), ("host-path", "/"), ("masked-paths", "reduced")} <= kinds
    # dockerd stores "host" as its own default on cgroup v1: not judged at start
    assert not any(f.kind == "namespace.cgroup" for f in started.facts)
    assert started.image_id == stored["Image"] and started.image == "busybox"
    assert [(f.kind, f.value) for f in live.acted_on("missing").facts] == \
        [("target", "missing")]


ID = "c" * 64


@pytest.mark.parametrize("name, value", [(ID, "id"), ("web", "name"), ("cccc", "prefix")])
def test_how_a_start_names_its_container(name, value):
    live = DockerState(Lookups(FakeDocker(containers={"web": {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64}})))
    facts = live.acted_on(name).facts
    assert ("target", value) in {(f.kind, f.value) for f in facts}


def test_start_checks_the_mounts_dockerd_makes(tmp_path):
    link = tmp_path / "link"
    link.symlink_to("/etc")
    container = {"Id": ID, "Name": "/heir", "Image": "sha256:" + "a" * 64, "HostConfig": {"VolumesFrom": ["src"]},
                 "Mounts": [{"Type": "bind", "Source": str(link), "Destination": "/x"},
                            {"Type": "volume", "Name": "vv", "Source": "/var/lib/docker/volumes/vv/_data",
                             "Driver": "local"}]}
    volumes = {"vv": {"Name": "vv", "Driver": "local",
                      "Options": {"type": "none", "o": "bind", "device": "/var/run/docker.sock"}}}
    live = DockerState(Lookups(FakeDocker(containers={"heir": container}, volumes=volumes)))
    values = {(f.kind, f.value) for f in live.acted_on(ID).facts}
    assert {("host-path", "/etc"), ("host-path", "/var/run/docker.sock")} <= values


def test_named_volume_options_are_looked_up():
    volumes = {"vv": {"Name": "vv", "Driver": "local", "Options": {"type": "proc", "device": "proc"}},
               "plain": {"Name": "plain", "Driver": "local", "Options": None}}
    live = DockerState(Lookups(FakeDocker(volumes=volumes)))
    assert ("volume-type", "proc") in {(f.kind, f.value) for f in live.volume_facts("vv", "HostConfig.Binds[0]")}
    assert live.volume_facts("plain", "x") == [] and live.volume_facts("absent", "x") == []


def test_unreadable_state_refuses():
    live = DockerState(Lookups(FakeDocker(fail=True)))
    with pytest.raises(RequestRefused) as info:
        live.acted_on("c1")
    assert info.value.rule == "request-state"
    with pytest.raises(RequestRefused):
        live.network_facts("x", "Networks[0].Target")


def test_volumes_from_takes_over_the_source_containers_binds():
    stored = {"Image": "sha256:" + "a" * 64,
              "HostConfig": {"Binds": ["/var/run/docker.sock:/s"], "Privileged": True}}
    live = DockerState(Lookups(FakeDocker(containers={"admin": stored})))
    facts = live.volumes_from_facts("admin", "HostConfig.VolumesFrom[0]")
    assert [(f.kind, f.value) for f in facts][:2] == [("target", "prefix"),
                                                      ("host-path", "/var/run/docker.sock")]
    assert not any(f.kind == "privileged" for f in facts)  # only mounts are taken over


def test_decisions_that_wait_on_dockerd_are_bounded_by_lookup_slots():
    """When every lookup slot is held, a start is refused within about a second instead of
    taking a thread that dockerd's own reads (back through the plugin) would need."""
    import threading
    import time
    from pathlib import Path

    from authz.plugin import Plugin
    from authz.policy import Policy
    from authz.protocol import AuthzRequest, Headers

    policy = Policy.load(Path(__file__).resolve().parents[2] / "policies")
    docker = FakeDocker(containers={"web": {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64}})
    call = AuthzRequest(phase="request", method="POST", uri=f"/v1.41/containers/{ID}/start",
                        headers=Headers({"Content-Length": "0"}))
    plugin = Plugin(policy, None, docker, threads=4)   # one slot
    assert plugin.decide(call).allow
    plugin.slots.acquire()
    started = time.monotonic()
    decision = plugin.decide(call)
    assert time.monotonic() - started < 2.0
    assert not decision.allow and decision.violations[0].rule == "request-state"


@pytest.mark.parametrize("answer", [
    {"Id": ID, "Name": "/web"},                       # no Image: its image could not be judged
    {"Id": ID, "Name": "/web", "Image": 7},
])
def test_a_container_answer_without_its_image_refuses(answer):
    state = DockerState(Lookups(FakeDocker(containers={"web": answer})))
    with pytest.raises(RequestRefused) as info:
        state.acted_on(ID)
    assert info.value.rule == "request-state" and "no Image" in info.value.found


def test_an_exec_answer_without_its_container_refuses():
    class Execs(FakeDocker):
        def inspect_exec(self, exec_id, deadline):
            return {"ID": exec_id, "ProcessConfig": {"privileged": False}}

    with pytest.raises(RequestRefused) as info:
        DockerState(Lookups(Execs())).exec_facts("e" * 64)
    assert info.value.rule == "request-state" and "ContainerID" in info.value.found


@pytest.mark.parametrize("host_config, kept", [
    # dockerd appended label=disable itself (privileged, host pid, host ipc; no label of its own)
    ({"Privileged": True, "SecurityOpt": ["label=disable"]}, False),
    ({"PidMode": "host", "SecurityOpt": ["seccomp=unconfined", "label=disable"]}, False),
    ({"IpcMode": "host", "SecurityOpt": ["label=disable"]}, False),
    # not dockerd's: no host namespace, or the caller's own label options
    ({"SecurityOpt": ["label=disable"]}, True),
    ({"Privileged": True, "SecurityOpt": ["label=disable", "apparmor=unconfined"]}, True),
    ({"Privileged": True, "SecurityOpt": ["label=type:x", "label=disable"]}, True),
])
def test_the_selinux_opt_out_dockerd_adds_is_not_judged_at_start(host_config, kept):
    container = {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64, "HostConfig": host_config}
    facts = DockerState(Lookups(FakeDocker(containers={"web": container}))).acted_on(ID).facts
    assert (("selinux", "disable") in {(f.kind, f.value) for f in facts}) is kept
