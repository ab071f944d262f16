"""Within one decision each object of dockerd is read at most once (decoding's state and image
trust share the decision's reads, authz/moby/reads.py); the next decision reads again
(dockerd's state changes between decisions: a re-tag must be seen). Issue 11."""

import json
from collections import Counter

import pytest

from authz.decoding.errors import RequestRefused
from authz.decoding.lookups import Lookups
from authz.decoding.state import DockerState
from authz.decoding.findings import ImageDefaults
from authz.moby.client import DockerError
from authz.moby.reads import DecisionReads
from authz.plugin import Plugin
from authz.policy import Policy
from authz.protocol import AuthzRequest, Headers
from authz.trust import RULE_NOT_LOCAL, ImageTrust
from tests.support.cosign import write_trust_policy
from tests.unit.test_plugin import SHIPPED, Events

CID = "c" * 64
IMAGE_A = "sha256:" + "a" * 64
IMAGE_B = "sha256:" + "b" * 64


def image(image_id, user=""):
    return {"Id": image_id, "RepoTags": ["busybox:latest"], "RepoDigests": [],
            "Config": {"User": user}, "Os": "linux", "Architecture": "amd64"}


class CountingDocker:
    """A dockerd that counts every inspect it answers, by (kind, name)."""

    def __init__(self, images=None, containers=None, fail=False):
        self.images = dict(images or {})         # name or id -> inspect JSON
        self.containers = dict(containers or {})
        self.fail = fail
        self.reads: Counter = Counter()

    def _answer(self, kind, name, table):
        self.reads[(kind, name)] += 1
        if self.fail:
            raise DockerError("dockerd did not answer")
        found = table.get(name)
        return json.loads(json.dumps(found)) if found is not None else None

    def inspect_image(self, ref, deadline):
        return self._answer("image", ref, self.images)

    def inspect_container(self, name, deadline):
        return self._answer("container", name, self.containers)

    def inspect_volume(self, name, deadline):
        return self._answer("volume", name, {})

    def inspect_network(self, name, deadline):
        return self._answer("network", name, {})


def trust_for(tmp_path, docker):
    """Image trust that reads ``docker`` and accepts busybox unsigned (it still resolves
    the local image through dockerd first)."""
    write_trust_policy(tmp_path / "trust", extra=(
        "exceptions:\n  - {pattern: docker.io/library/busybox, reason: \"test image\"}"))
    return ImageTrust.load(tmp_path / "trust", docker)


def plugin_for(tmp_path, docker, trust=True):
    return Plugin(Policy.load(SHIPPED), trust_for(tmp_path, docker) if trust else None, docker,
                  logger=Events(), threads=4)


def create(body):
    data = json.dumps(body).encode()
    return AuthzRequest(phase="request", method="POST", uri="/v1.41/containers/create",
                        body=data, headers=Headers({"Content-Type": "application/json",
                                                    "Content-Length": str(len(data))}))


def start(name):
    return AuthzRequest(phase="request", method="POST", uri=f"/v1.41/containers/{name}/start",
                        headers=Headers({"Content-Length": "0"}))


def test_a_create_without_user_reads_its_image_once_with_trust_on(tmp_path):
    docker = CountingDocker(images={"busybox": image(IMAGE_A, user="1000")})
    decision = plugin_for(tmp_path, docker).decide(create({"Image": "busybox"}))
    assert docker.reads == Counter({("image", "busybox"): 1})
    # Both used the answer: the default user is a fact, and trust judged that image.
    assert ("user", "1000") in {(f.kind, f.value) for f in decision.request.facts}
    assert [i["image_id"] for i in decision.images] == [IMAGE_A]
    assert decision.images[0]["trust_allowed"] is True and decision.allow


def test_a_start_reads_its_container_once_and_its_image_once(tmp_path):
    container = {"Id": CID, "Name": "/web", "Image": IMAGE_A,
                 "Config": {"Image": "busybox", "User": "1000"}, "HostConfig": {}, "Mounts": []}
    docker = CountingDocker(images={IMAGE_A: image(IMAGE_A)}, containers={CID: container})
    decision = plugin_for(tmp_path, docker).decide(start(CID))
    assert docker.reads == Counter({("container", CID): 1, ("image", IMAGE_A): 1})
    assert [i["image_id"] for i in decision.images] == [IMAGE_A] and decision.allow


def test_a_second_decision_reads_again_and_sees_a_retag(tmp_path):
    docker = CountingDocker(images={"busybox": image(IMAGE_A, user="1000")})
    plugin = plugin_for(tmp_path, docker)
    first = plugin.decide(create({"Image": "busybox"}))
    docker.images["busybox"] = image(IMAGE_B, user="0")      # re-tagged between the two
    second = plugin.decide(create({"Image": "busybox"}))
    assert docker.reads == Counter({("image", "busybox"): 2})
    assert [i["image_id"] for i in first.images] == [IMAGE_A]
    assert [i["image_id"] for i in second.images] == [IMAGE_B]
    facts = {(f.kind, f.value) for f in second.request.facts}
    assert ("user", "0") in facts and ("user", "1000") not in facts


def test_a_failed_read_still_refuses_and_is_not_made_twice(tmp_path):
    docker = CountingDocker(fail=True)
    decision = plugin_for(tmp_path, docker).decide(create({"Image": "busybox"}))
    assert not decision.allow and decision.violations[0].rule == "request-state"
    assert docker.reads == Counter({("image", "busybox"): 1})


def test_a_missing_image_is_read_once_and_stays_missing_for_trust(tmp_path):
    docker = CountingDocker()
    decision = plugin_for(tmp_path, docker).decide(create({"Image": "busybox"}))
    assert docker.reads == Counter({("image", "busybox"): 1})
    assert ("user.root", "unknown") in {(f.kind, f.value) for f in decision.request.facts}
    # Trust was told "no such image" too, without asking again.
    assert [(i["image_id"], i["trust_rule"]) for i in decision.images] == [(None, RULE_NOT_LOCAL)]


def test_without_trust_a_create_reads_its_image_once(tmp_path):
    docker = CountingDocker(images={"busybox": image(IMAGE_A, user="1000")})
    plugin_for(tmp_path, docker, trust=False).decide(create({"Image": "busybox"}))
    assert docker.reads == Counter({("image", "busybox"): 1})


def test_trust_reading_another_dockerd_reads_it_itself(tmp_path):
    """The decision's reads serve image trust only when both read the same dockerd."""
    plugins_docker = CountingDocker(images={"busybox": image(IMAGE_A, user="1000")})
    trusts_docker = CountingDocker(images={"busybox": image(IMAGE_B, user="1000")})
    plugin = Plugin(Policy.load(SHIPPED), trust_for(tmp_path, trusts_docker), plugins_docker,
                    logger=Events(), threads=4)
    decision = plugin.decide(create({"Image": "busybox"}))
    assert plugins_docker.reads == trusts_docker.reads == Counter({("image", "busybox"): 1})
    assert [i["image_id"] for i in decision.images] == [IMAGE_B]


def test_answers_are_kept_by_kind_and_exact_name():
    docker = CountingDocker(images={"busybox": image(IMAGE_A)},
                            containers={"busybox": {"Id": CID, "Image": IMAGE_A}})
    reads = DecisionReads(docker, 4.0)
    for _ in range(3):
        assert reads.inspect_image("busybox")["Id"] == IMAGE_A
        assert reads.inspect_container("busybox", reads)["Id"] == CID
        assert reads.inspect_image("busybox:latest") is None
    assert docker.reads == Counter({("image", "busybox"): 1, ("container", "busybox"): 1,
                                    ("image", "busybox:latest"): 1})


def test_a_failure_is_raised_again_without_a_read():
    docker = CountingDocker(fail=True)
    reads = DecisionReads(docker, 4.0)
    for _ in range(2):
        with pytest.raises(DockerError):
            reads.inspect_volume("data")
    assert docker.reads == Counter({("volume", "data"): 1})


def test_state_reads_a_container_named_twice_once():
    """A container started and also taken --volumes-from in one decision: one read."""
    container = {"Id": CID, "Name": "/web", "Image": IMAGE_A, "Config": {"Image": "busybox"},
                 "HostConfig": {}, "Mounts": []}
    docker = CountingDocker(containers={CID: container})
    state = DockerState(Lookups(docker))
    state.acted_on(CID)
    state.volumes_from_facts(CID, "HostConfig.VolumesFrom[0]")
    assert docker.reads == Counter({("container", CID): 1})


def test_each_decision_has_its_own_reads():
    docker = CountingDocker(images={"busybox": image(IMAGE_A)})
    for _ in range(2):
        with Lookups(docker) as lookups:
            DockerState(lookups).image_default_facts(ImageDefaults("busybox", "Image", True,
                                                                   False, frozenset()))
    assert docker.reads == Counter({("image", "busybox"): 2})


def test_a_refused_read_keeps_its_message():
    with pytest.raises(RequestRefused, match="dockerd did not answer"):
        DockerState(Lookups(CountingDocker(fail=True))).image_default_facts(
            ImageDefaults("busybox", "Image", True, False, frozenset()))
