"""dockerd's answers remembered across decisions (authz/moby/recall.py): used only while no
call that could change them has been made, only for what changes through the API alone, and
never where dockerd changes state unseen. Issue 11."""

import base64
import json
import threading
import multiprocessing
import os
from collections import Counter

import pytest

from authz.decoding import state_changes
from authz.decoding.routes import ENDPOINTS, ROUTES
from authz.decoding.uri import Query, Target
from authz.moby.recall import Recall, Shared
from authz.plugin import Plugin
from authz.policy import Policy
from authz.protocol import REQUEST_PHASE, RESPONSE_PHASE
from tests.unit.test_plugin import SHIPPED, Events
from tests.unit.test_reads_once import CID, IMAGE_A, IMAGE_B, CountingDocker, image, trust_for

INFO = {"DockerRootDir": "/var/lib/docker", "Swarm": {"LocalNodeState": "inactive"}}


class Dockerd(CountingDocker):
    """A counting dockerd that also answers GET /info (swarm state ``swarm``)."""

    def __init__(self, swarm="inactive", **kw):
        super().__init__(**kw)
        self.swarm = swarm

    def info(self, deadline):
        self.reads[("info", "")] += 1
        return {**INFO, "Swarm": {"LocalNodeState": self.swarm}}


def container(status="created", running=False, image_id=IMAGE_A, privileged=False):
    return {"Id": CID, "Name": "/web", "Image": image_id,
            "State": {"Status": status, "Running": running},
            "Config": {"Image": "busybox", "User": "1000"},
            "HostConfig": {"Privileged": privileged}, "Mounts": []}


def call(phase, method, uri, body=None, status=None, response=None):
    data = json.dumps(body).encode() if body is not None else b""
    doc = {"RequestMethod": method, "RequestUri": uri,
           "RequestHeaders": {"Content-Type": "application/json", "Content-Length": str(len(data))}}
    if data:
        doc["RequestBody"] = base64.b64encode(data).decode()
    if status is not None:
        doc["ResponseStatusCode"] = status
    if response is not None:
        doc["ResponseBody"] = base64.b64encode(response).decode()
    return json.dumps(doc).encode()


def req(method, uri, body=None):
    return call("request", method, uri, body)


def change(plugin, method, uri, body=None):
    """A state-changing call as dockerd makes it: allowed, acted on, then its response."""
    assert plugin.handle(REQUEST_PHASE, req(method, uri, body))["Allow"]
    plugin.handle(RESPONSE_PHASE, call("response", method, uri, body, status=200))


def run_session(plugin, name=CID):
    """The calls of a ``docker run``, as dockerd sends them: (allow, rule ids) of each Req."""
    out = []
    for phase, method, uri, body in [
            (REQUEST_PHASE, "POST", "/v1.41/containers/create", {"Image": "busybox"}),
            (RESPONSE_PHASE, "POST", "/v1.41/containers/create", {"Image": "busybox"}),
            (REQUEST_PHASE, "POST", f"/v1.41/containers/{name}/attach?stream=1&stdout=1", None),
            (REQUEST_PHASE, "POST", f"/v1.41/containers/{name}/wait?condition=removed", None),
            (REQUEST_PHASE, "POST", f"/v1.41/containers/{name}/start", None),
            (RESPONSE_PHASE, "POST", f"/v1.41/containers/{name}/start", None)]:
        answer = plugin.handle(phase, call(phase, method, uri, body,
                                           200 if phase == RESPONSE_PHASE else None))
        if phase == REQUEST_PHASE:
            out.append(answer["Allow"])
    return out


@pytest.fixture
def plugin_and_docker(tmp_path):
    docker = Dockerd(images={"busybox": image(IMAGE_A, user="1000"), IMAGE_A: image(IMAGE_A)},
                     containers={CID: container()})
    plugin = Plugin(Policy.load(SHIPPED), trust_for(tmp_path, docker), docker,
                    logger=Events(), threads=8)   # two lookup slots: one may read ahead
    plugin.recall = Recall(Shared(slots=16))
    return plugin, docker


def reads_of(docker, kind):
    return sum(n for (k, _), n in docker.reads.items() if k == kind)


def test_a_docker_run_reads_its_container_and_image_once(plugin_and_docker):
    plugin, docker = plugin_and_docker
    assert run_session(plugin) == [True, True, True, True]
    # create: the image by name; attach: the container; start: both remembered (no call
    # between could change them), and image trust's read by id is the create's answer.
    assert docker.reads[("image", "busybox")] == 1
    assert docker.reads[("container", CID)] == 1
    assert docker.reads[("image", IMAGE_A)] == 0
    assert run_session(plugin) == [True, True, True, True]
    assert docker.reads[("image", "busybox")] == 1  # the next run's create: remembered too
    assert docker.reads[("container", CID)] == 2    # a create came between: read again


@pytest.mark.parametrize("between", [
    ("POST", f"/v1.41/containers/{CID}/update", {"Memory": 1 << 30}),
    ("POST", f"/v1.41/containers/{CID}/rename?name=x", None),
    ("DELETE", f"/v1.41/containers/{CID}", None),
    ("POST", "/v1.41/networks/n/connect", {"Container": CID}),
    ("POST", f"/v1.41/containers/{CID[:12]}/stop", None),
    ("POST", "/v1.41/images/create?fromImage=busybox&tag=latest", None),
    ("POST", "/v1.41/nosuchendpoint", None),
])
def test_a_state_changing_call_between_attach_and_start_makes_the_start_read_again(
        plugin_and_docker, between):
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 1
    plugin.handle(REQUEST_PHASE, req(*between))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 2


def test_the_response_phase_of_a_change_forgets_too(plugin_and_docker):
    """A read made between a change's request (decided) and dockerd acting on it must not
    outlive the change: its response phase forgets it."""
    plugin, docker = plugin_and_docker
    update = ("POST", f"/v1.41/containers/{CID}/update", {"Memory": 1 << 30})
    plugin.handle(REQUEST_PHASE, req(*update))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    plugin.handle(RESPONSE_PHASE, call("response", *update, status=200))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 2


def test_a_change_made_in_the_stored_config_is_seen_by_the_next_start(plugin_and_docker):
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    docker.containers[CID] = container(privileged=True)
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/update", {"CpuShares": 2}))
    answer = plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert answer["Allow"] is False and "privileged" in answer["Msg"]


def test_an_unreadable_call_forgets_everything(plugin_and_docker):
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert plugin.handle(REQUEST_PHASE, b"not json")["Allow"] is False
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 2


@pytest.mark.parametrize("state", [("running", True), ("exited", False), ("restarting", True),
                                   ("paused", True), ("dead", False)])
def test_only_containers_that_never_ran_are_remembered(plugin_and_docker, state):
    """A container that has run can exit and be auto-removed without an API call."""
    plugin, docker = plugin_and_docker
    docker.containers[CID] = container(*state)
    for _ in range(2):
        plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 2


def test_missing_objects_and_failed_reads_are_never_remembered(plugin_and_docker):
    plugin, docker = plugin_and_docker
    for _ in range(2):
        plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/nosuch/attach?stream=1"))
    assert docker.reads[("container", "nosuch")] == 2
    docker.fail = True
    for _ in range(2):
        answer = plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach"))
        assert answer["Allow"] is False
    assert docker.reads[("container", CID)] == 2


@pytest.mark.parametrize("endpoint_call", [
    ("POST", "/v1.41/session", None), ("POST", "/grpc", None),
    ("POST", "/v1.41/swarm/init", {"ListenAddr": "127.0.0.1"}),
    ("POST", "/v1.41/services/create", {"TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}),
])
def test_after_a_call_that_lets_dockerd_change_state_unseen_nothing_is_remembered(
        plugin_and_docker, endpoint_call):
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req(*endpoint_call))
    for _ in range(2):
        plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 2


@pytest.mark.parametrize("swarm", ["active", "pending", "locked", "error", None])
def test_on_a_swarm_node_or_when_not_known_nothing_is_remembered(plugin_and_docker, swarm):
    plugin, docker = plugin_and_docker
    docker.swarm = swarm
    for _ in range(3):
        plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 3


def test_answers_expire(plugin_and_docker):
    plugin, docker = plugin_and_docker
    now = [1000.0]
    plugin.recall.clock = lambda: now[0]
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    now[0] += 4.0
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 1
    now[0] += 2.0
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 2


def test_a_retagged_image_is_read_again(plugin_and_docker):
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create", {"Image": "busybox"}))
    docker.images["busybox"] = image(IMAGE_B, user="0")
    change(plugin, "POST", "/v1.41/images/other/tag?repo=busybox&tag=latest")
    plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create", {"Image": "busybox"}))
    assert docker.reads[("image", "busybox")] == 2
    # ... while container calls leave images remembered
    change(plugin, "POST", f"/v1.41/containers/{CID}/stop")
    change(plugin, "POST", "/v1.41/containers/web/rename?name=x")
    plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create", {"Image": "busybox"}))
    assert docker.reads[("image", "busybox")] == 2


def test_dockerd_activating_the_plugin_forgets_everything(tmp_path, plugin_and_docker):
    from authz.app import create_app
    from authz.plugin import PluginConfig

    plugin, docker = plugin_and_docker
    app = create_app(PluginConfig(policy_dir=SHIPPED, log_file=tmp_path / "d.log", docker_host=None))
    live = app.config["PYAUTHZ_PLUGIN"]
    live.recall = plugin.recall
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert app.test_client().post("/Plugin.Activate").status_code == 200
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 2


def test_state_changes_classifies_every_endpoint():
    writes = {r.endpoint for r in ROUTES if r.write}
    nothing = {"container.create", "container.attach", "container.resize", "exec.create",
               "exec.start", "exec.resize"}
    for endpoint in [None, *sorted(ENDPOINTS)]:
        containers, one, images, unseen = state_changes(endpoint)
        if endpoint in writes - nothing:
            assert containers, endpoint  # without a target, every write forgets containers
        if endpoint in (None, "unknown.read", "unknown.write", "image.import", "system.debug"):
            assert containers and images, endpoint
    target = Target(method="POST", path=f"/containers/{CID}/start", version="1.41",
                    explicit_version=True,
                    query=Query({}), raw_uri=f"/v1.41/containers/{CID}/start")
    assert state_changes("container.inspect") == (False, None, False, False)
    assert state_changes("container.create") == (False, None, False, False)
    assert state_changes("container.start", target) == (False, CID, False, False)
    assert state_changes("container.start") == (True, None, False, False)
    assert state_changes("container.rename") == (True, None, False, False)
    assert state_changes("image.tag") == (True, None, True, False)
    assert state_changes("build.grpc") == (True, None, True, True)


def _bump_in_child(shared):
    Recall(shared).changed(True, None, False)


def _die_holding_the_lock(shared):
    shared.lock.acquire()
    os._exit(0)


def _keep(recall, name=CID, answer=None):
    recall.keep("container", name, answer or container(), recall.stamp())


def test_answers_and_changes_are_shared_with_forked_workers():
    shared = Shared(slots=16)
    docker = Dockerd()
    parent = Recall(shared)
    _keep(parent)
    assert parent.lookup("container", CID, docker, None) is not None
    child = multiprocessing.get_context("fork").Process(target=_bump_in_child, args=(shared,))
    child.start()
    child.join(10)
    assert parent.lookup("container", CID, docker, None) is None  # the child's change counts


def test_one_workers_answer_serves_another():
    shared, docker = Shared(slots=16), Dockerd()
    _keep(Recall(shared))
    assert Recall(shared).lookup("container", CID, docker, None)["Id"] == CID


def _shared_with_a_dead_lock_holder(monkeypatch, wait: float) -> Shared:
    """Shared memory whose lock a forked worker took and died holding."""
    import authz.moby.recall as recall_module

    monkeypatch.setattr(recall_module, "LOCK_WAIT", wait)
    shared = Shared(slots=16)
    child = multiprocessing.get_context("fork").Process(target=_die_holding_the_lock,
                                                        args=(shared,))
    child.start()
    child.join(10)
    return shared


def test_a_worker_that_died_holding_the_lock_turns_remembering_off_without_a_hang(monkeypatch):
    recall = Recall(_shared_with_a_dead_lock_holder(monkeypatch, 0.1))
    assert recall.stamp() is None                   # not known: nothing is kept
    recall.changed(True, None, True)                 # not counted: off, for good
    docker = Dockerd(containers={CID: container()})
    assert recall.lookup("container", CID, docker, None) is None
    assert Counter(docker.reads) == Counter()


def test_a_call_on_one_container_by_full_id_forgets_only_that_container(plugin_and_docker):
    plugin, docker = plugin_and_docker
    other = "d" * 64
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{other}/stop"))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 1
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/stop"))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 2


def test_a_call_naming_a_container_otherwise_forgets_every_container(plugin_and_docker):
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/web/stop"))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 2


def test_what_could_be_an_id_prefix_is_never_remembered(plugin_and_docker):
    plugin, docker = plugin_and_docker
    docker.containers["abc123"] = container()
    for _ in range(2):
        plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/abc123/attach?stream=1"))
    assert docker.reads[("container", "abc123")] == 2


def test_nothing_read_while_a_change_is_under_way_is_kept(plugin_and_docker):
    """A change allowed (dockerd about to act) and not yet answered: what is read meanwhile
    may be stale when dockerd acts, and its response phase may never come (another
    authorization plugin after this one refused it)."""
    plugin, docker = plugin_and_docker
    load = ("POST", "/v1.41/images/load?quiet=1")
    plugin.handle(REQUEST_PHASE, req(*load))
    for _ in range(2):
        plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create", {"Image": "busybox"}))
    assert docker.reads[("image", "busybox")] == 2
    plugin.handle(RESPONSE_PHASE, call("response", *load, status=200))
    for _ in range(2):
        plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create", {"Image": "busybox"}))
    assert docker.reads[("image", "busybox")] == 3


def test_a_denied_change_opens_nothing(plugin_and_docker):
    plugin, docker = plugin_and_docker
    answer = plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create",
                                              {"Image": "busybox", "HostConfig": {"Privileged": True}}))
    assert answer["Allow"] is False
    for _ in range(2):
        plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    assert docker.reads[("container", CID)] == 1


def test_dockerd_restarting_makes_every_worker_ask_again_whether_it_is_a_swarm_node():
    shared = Shared(slots=16)
    docker = Dockerd(containers={CID: container()})
    worker_a, worker_b = Recall(shared), Recall(shared)
    _keep(worker_b)
    assert worker_b.lookup("container", CID, docker, None) is not None  # swarm checked: no
    docker.swarm = "active"          # dockerd restarted as a swarm node
    worker_a.forget_all()            # its Activate reached worker A
    _keep(worker_b)
    assert worker_b.lookup("container", CID, docker, None) is None
    assert docker.reads[("info", "")] == 2


def _created(plugin, status=201, response=None):
    body = {"Image": "busybox"}
    plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create", body))
    response = json.dumps({"Id": CID, "Warnings": []}).encode() if response is None else response
    plugin.handle(RESPONSE_PHASE, call("response", "POST", "/v1.41/containers/create", body,
                                       status=status, response=response))


def test_a_container_just_created_is_read_ahead_for_its_attach_and_start(plugin_and_docker):
    plugin, docker = plugin_and_docker
    _created(plugin)
    plugin.recall.wait_for_read_ahead("container", CID, 5.0)
    assert docker.reads[("container", CID)] == 1  # read ahead, before any call needs it
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 1  # the read ahead's, waited for and used
    assert plugin.slots._value == 2  # its lookup slot was given back


@pytest.mark.parametrize("status,response", [
    (400, None), (201, b"not json"), (201, b'{"Id": "abc"}'), (201, b'{"Id": 5}'),
    (201, b"[]"), (201, json.dumps({"Id": "C" * 64}).encode())])
def test_no_read_ahead_without_a_full_id_from_a_created_container(plugin_and_docker, status,
                                                                   response):
    plugin, docker = plugin_and_docker
    _created(plugin, status, response)
    assert reads_of(docker, "container") == 0


def test_a_read_ahead_is_made_only_with_a_free_lookup_slot(plugin_and_docker):
    plugin, docker = plugin_and_docker
    while plugin.slots.acquire(blocking=False):
        pass
    _created(plugin)
    assert reads_of(docker, "container") == 0


def test_reads_ahead_run_side_by_side(tmp_path):
    """Containers created together are read ahead together, not one after another: each
    read here waits until the others are in flight too."""
    ids = [f"{i:064x}" for i in range(1, 4)]
    in_flight = threading.Barrier(len(ids), timeout=5)

    class Slow(Dockerd):
        def inspect_container(self, name, deadline):
            in_flight.wait()  # raises BrokenBarrierError (no answer kept) if read one by one
            return super().inspect_container(name, deadline)

    docker = Slow(containers={i: {**container(), "Id": i} for i in ids})
    plugin = Plugin(Policy.load(SHIPPED), None, docker, logger=Events(), threads=32)
    plugin.recall = Recall(Shared(slots=16))
    for cid in ids:
        plugin.handle(RESPONSE_PHASE, call("response", "POST", "/v1.41/containers/create",
                                           {"Image": "busybox"}, status=201,
                                           response=json.dumps({"Id": cid}).encode()))
    for cid in ids:
        plugin.recall.wait_for_read_ahead("container", cid, 5.0)
    assert [docker.reads[("container", cid)] for cid in ids] == [1, 1, 1]
    for cid in ids:  # each answer was kept: the attach reads nothing more
        plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{cid}/attach?stream=1"))
    assert [docker.reads[("container", cid)] for cid in ids] == [1, 1, 1]
    assert len(plugin._readers) == len(ids)


@pytest.mark.parametrize("threads", [4, 8, 16, 32])
def test_reads_ahead_never_take_more_than_half_the_lookup_slots(tmp_path, threads):
    """Containers created together while dockerd is slow: the decisions that wait on
    dockerd (a start, an exec) still find a lookup slot at once (red team, this session:
    at 16 threads, four reads ahead took all four slots and a start was refused busy)."""
    release = threading.Event()

    class Stuck(Dockerd):
        def inspect_container(self, name, deadline):
            release.wait(5)
            return super().inspect_container(name, deadline)

    ids = [f"{i:064x}" for i in range(1, 9)]
    docker = Stuck(containers={i: {**container(), "Id": i} for i in ids})
    plugin = Plugin(Policy.load(SHIPPED), None, docker, logger=Events(), threads=threads)
    plugin.recall = Recall(Shared(slots=64))
    slots = max(1, threads // 4)
    try:
        for cid in ids:
            plugin.handle(RESPONSE_PHASE, call("response", "POST", "/v1.41/containers/create",
                                               {"Image": "busybox"}, status=201,
                                               response=json.dumps({"Id": cid}).encode()))
        assert plugin.slots._value == slots - min(4, slots // 2)
        assert plugin.slots._value >= (slots + 1) // 2
    finally:
        release.set()
    for cid in ids:
        plugin.recall.wait_for_read_ahead("container", cid, 5.0)
    assert plugin.slots._value == slots


# Red team (round 2) findings, as regressions.

HEX_NAME = "0123456789abcdef" * 4   # a valid container *name* of 64 hex digits
PIDS_AT_START = """
  - id: start-needs-pids-limit
    effect: deny
    match:
      fact: pids-limit
      values: [unset]
      endpoints: [container.start]
    message: containers started must keep a pids limit
    fix: keep --pids-limit
    reference: test
"""


def _policy_with(tmp_path, edit):
    import shutil

    d = tmp_path / "pol"
    shutil.copytree(SHIPPED, d)
    text = (d / "rules.yaml").read_text()
    edited = edit(text)
    assert edited != text
    (d / "rules.yaml").write_text(edited)
    return d


@pytest.mark.parametrize("named_by", ["id", "hex name", "name"])
def test_a_change_to_a_container_named_by_a_64_hex_name_is_seen(tmp_path, named_by):
    """dockerd finds a path name by full id, then by name: a change naming a container by a
    name of 64 hex digits must forget what was kept under its real id."""
    other = "d" * 64
    kept = container()
    kept["Id"], kept["Name"] = other, "/" + (HEX_NAME if named_by != "name" else "web")
    kept["HostConfig"]["PidsLimit"] = 100
    docker = Dockerd(containers={other: kept, HEX_NAME: kept, "web": kept})
    pol = _policy_with(tmp_path, lambda t: t.replace("\nrules:\n", "\nrules:\n" + PIDS_AT_START, 1))
    plugin = Plugin(Policy.load(pol), None, docker, logger=Events(), threads=4)
    plugin.recall = Recall(Shared(slots=16))
    assert plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{other}/attach"))["Allow"]
    name = {"id": other, "hex name": HEX_NAME, "name": "web"}[named_by]
    change(plugin, "POST", f"/v1.41/containers/{name}/update", {"PidsLimit": -1})
    kept["HostConfig"]["PidsLimit"] = -1          # dockerd acted on it
    answer = plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{other}/start"))
    assert docker.reads[("container", other)] == 2 and answer["Allow"] is False


def test_a_response_phase_that_cannot_be_read_closes_no_change(tmp_path):
    """dockerd resends a call that failed on a closed connection with an empty body: that
    must not end the protection of a change still under way."""
    pol = _policy_with(tmp_path, lambda t: t.replace("id: run-as-root\n    effect: audit",
                                                     "id: run-as-root\n    effect: deny"))
    docker = Dockerd(images={"busybox": image(IMAGE_A, user="1000")})
    plugin = Plugin(Policy.load(pol), None, docker, logger=Events(), threads=4)
    plugin.recall = Recall(Shared(slots=16))
    pull = ("POST", "/v1.41/images/create?fromImage=busybox&tag=latest")
    assert plugin.handle(REQUEST_PHASE, req(*pull))["Allow"]
    plugin.handle(RESPONSE_PHASE, b"")
    create = ("POST", "/v1.41/containers/create", {"Image": "busybox"})
    assert plugin.handle(REQUEST_PHASE, req(*create))["Allow"]
    docker.images["busybox"] = image(IMAGE_B, user="")   # the pull lands: a root image
    assert plugin.handle(REQUEST_PHASE, req(*create))["Allow"] is False


def test_after_a_dead_lock_holder_reads_cost_nothing_extra(monkeypatch):
    import time as time_module

    shared = _shared_with_a_dead_lock_holder(monkeypatch, 0.2)
    recall, docker = Recall(shared), Dockerd(containers={CID: container()})
    recall.stamp()                       # the first wait for the lock: off from now on
    started = time_module.monotonic()
    for _ in range(5):
        assert recall.stamp() is None
        recall.wait_for_read_ahead("container", CID, 1.0)
        assert recall.lookup("container", CID, docker, None) is None
        recall.changed(True, None, True)
    assert time_module.monotonic() - started < 0.1


def test_a_read_ahead_mark_never_carries_over_to_another_key():
    shared = Shared(slots=1)             # every key in the same slot
    recall = Recall(shared)
    assert recall.reading_ahead("container", CID)
    recall.keep("image", "busybox", image(IMAGE_A), recall.stamp())
    recall.read_ahead_done("container", CID)
    other = Recall(shared)               # another worker: it would poll the shared mark
    import time as time_module

    started = time_module.monotonic()
    other.wait_for_read_ahead("image", IMAGE_A, 1.0)  # the slot now holds the image by id
    other.wait_for_read_ahead("image", "nosuch", 1.0)
    assert time_module.monotonic() - started < 0.1


def test_a_failure_to_record_a_change_turns_remembering_off_and_answers_as_decided(
        plugin_and_docker, monkeypatch):
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))

    def broken(*args, **kwargs):
        raise RuntimeError("shared memory gone")

    monkeypatch.setattr(plugin.recall, "changed", broken)
    answer = plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/update",
                                              {"CpuShares": 2}))
    assert answer["Allow"] is True                  # the decision stands
    monkeypatch.undo()
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 2    # nothing remembered is used any more


def test_a_change_answered_deny_because_it_could_not_be_logged_opens_nothing(plugin_and_docker):
    from authz import audit

    plugin, docker = plugin_and_docker

    class Failing:
        def info(self, *args, **kwargs):
            raise audit.LogUnavailable("disk full")

    logger, plugin.logger = plugin.logger, Failing()
    answer = plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/images/load"))
    assert answer["Allow"] is False
    plugin.logger = logger
    for _ in range(2):  # images can still be remembered: nothing is under way
        plugin.handle(REQUEST_PHASE, req("POST", "/v1.41/containers/create", {"Image": "busybox"}))
    assert docker.reads[("image", "busybox")] == 1


def test_names_that_are_not_valid_utf_8_never_fail_a_decision(plugin_and_docker):
    """A path escape dockerd decodes to bytes that are not UTF-8 reaches recall as a lone
    surrogate: keys and counters take it; an answer holding one is not kept (orjson refuses
    it), so it is read each time."""
    plugin, docker = plugin_and_docker
    odd = "web\udc80"
    docker.containers[odd] = {**container(), "Name": "/" + odd}
    recall = plugin.recall
    recall.keep("container", odd, docker.containers[odd], recall.stamp())
    assert recall.lookup("container", odd, docker, None) is None
    recall.changed(False, odd, False, opens=True)
    recall.changed(False, odd, False, closes=True)
    recall.wait_for_read_ahead("container", odd, 0.01)
    assert recall.reading_ahead("container", odd)
    recall.read_ahead_done("container", odd)
    recall.keep("container", "web", {**container(), "Name": "/web"}, recall.stamp())
    assert recall.lookup("container", "web", docker, None)["Name"] == "/web"


@pytest.mark.parametrize("action,body", [("update", {"PidsLimit": -1}), ("kill", None),
                                         ("stop", None), ("pause", None), ("unpause", None)])
def test_a_change_through_a_link_alias_forgets_every_container(plugin_and_docker, action, body):
    """dockerd registers "/bb/al" as a name of the container linked into bb as al: a call to
    /containers/bb/al/... acts on that container (red team, round 3)."""
    plugin, docker = plugin_and_docker
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/attach?stream=1"))
    change(plugin, "POST", f"/v1.41/containers/bb/al/{action}", body)
    plugin.handle(REQUEST_PHASE, req("POST", f"/v1.41/containers/{CID}/start"))
    assert docker.reads[("container", CID)] == 2


def test_an_answer_read_through_a_link_alias_is_not_kept(plugin_and_docker):
    plugin, docker = plugin_and_docker
    recall = plugin.recall
    recall.keep("container", "bb/al", container(), recall.stamp())
    recall.keep("container", "/bb/al", container(), recall.stamp())
    assert recall.lookup("container", "bb/al", docker, None) is None
    assert recall.lookup("container", "/bb/al", docker, None) is None


def test_a_read_ahead_that_cannot_start_gives_its_slots_back(plugin_and_docker):
    """Whatever fails between taking a lookup slot and handing the read to a thread (here
    marking it in the shared memory, then starting a thread), the slots come back."""
    plugin, docker = plugin_and_docker
    slots = plugin.slots._value

    def broken(*args):
        raise MemoryError("no memory")

    plugin.recall.reading_ahead = broken
    _created(plugin)
    assert (plugin.slots._value, plugin._ahead_slots._value) == (slots, 1)
    plugin.recall = Recall(Shared(slots=16))  # the failure turned remembering off
    tried = []
    plugin._reader_for_one = lambda: tried.append(1) or broken()
    _created(plugin)
    assert tried and (plugin.slots._value, plugin._ahead_slots._value) == (slots, 1)
