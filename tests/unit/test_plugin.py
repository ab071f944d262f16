"""The plugin without HTTP (authz/plugin.py): the one fail-closed place, one deadline and one
lookup slot per decision."""

import base64
import json
from pathlib import Path

from authz.plugin import Plugin
from authz.policy import Policy
from authz.protocol import (MAX_CALL_BYTES, REQUEST_PHASE, RESPONSE_PHASE, AuthzRequest,
                            Headers)
from tests.unit.test_state import FakeDocker

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
ID = "c" * 64


class Events:
    """A decision logger that keeps what it is given."""

    def __init__(self):
        self.lines = []

    def info(self, event, **fields):
        self.lines.append(fields)


def raw_call(method, uri, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    doc = {"RequestMethod": method, "RequestUri": uri,
           "RequestHeaders": {"Content-Type": "application/json",
                              "Content-Length": str(len(data))}}
    if data:
        doc["RequestBody"] = base64.b64encode(data).decode()
    return json.dumps(doc).encode()


def plugin_with(docker=None, trust=None, threads=4):
    events = Events()
    return Plugin(Policy.load(SHIPPED), trust, docker, logger=events, threads=threads), events


def test_an_unreadable_call_is_denied_and_logged():
    plugin, events = plugin_with()
    answer = plugin.handle(REQUEST_PHASE, b"{not json")
    assert answer["Allow"] is False and "[protocol]" in answer["Msg"]
    assert events.lines[0]["allow"] is False


def test_a_call_larger_than_dockerd_sends_is_denied_unread_and_logged():
    plugin, events = plugin_with()
    padded = raw_call("GET", "/v1.41/containers/json")[:-1] + b', "X": "' + \
        b"a" * MAX_CALL_BYTES + b'"}'
    answer = plugin.handle(REQUEST_PHASE, padded)
    assert answer["Allow"] is False and "[protocol]" in answer["Msg"]
    assert f"larger than {MAX_CALL_BYTES} bytes" in answer["Msg"]
    assert events.lines[0]["allow"] is False


def test_a_refusal_keeps_the_endpoint_decoding_found():
    plugin, events = plugin_with()
    answer = plugin.handle(REQUEST_PHASE, raw_call("POST", "/v1.41/containers/create", [1]))
    assert answer["Allow"] is False and "request-body-invalid" in answer["Msg"]
    assert "container.create" in answer["Msg"]
    assert events.lines[0]["endpoint"] == "container.create"


def test_a_log_that_cannot_be_written_denies():
    class Broken:
        def info(self, event, **fields):
            raise OSError("disk full")

    plugin = Plugin(Policy.load(SHIPPED), logger=Broken())
    answer = plugin.handle(REQUEST_PHASE, raw_call("GET", "/_ping"))
    assert answer["Allow"] is False and "cannot be written" in answer["Msg"]


def test_the_response_phase_allows_and_names_the_endpoint():
    plugin, events = plugin_with()
    assert plugin.handle(RESPONSE_PHASE, raw_call("GET", "/v1.41/containers/json"))["Allow"]
    assert events.lines[0]["endpoint"] == "container.list"


def test_a_lookup_slot_is_taken_only_by_decisions_that_read_state():
    docker = FakeDocker(containers={"web": {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64}})
    plugin, _ = plugin_with(docker, threads=4)   # one slot
    plugin.slots.acquire()                        # held by another decision
    ping = AuthzRequest(phase="request", method="GET", uri="/_ping", headers=Headers({}))
    assert plugin.decide(ping).allow
    start = AuthzRequest(phase="request", method="POST", uri=f"/containers/{ID}/start",
                         headers=Headers({"Content-Length": "0"}))
    decision = plugin.decide(start)
    assert [v.rule for v in decision.violations] == ["request-state"]
    assert decision.endpoint == "container.start"
    plugin.slots.release()
    assert plugin.decide(start).allow
    assert plugin.slots.acquire(blocking=False)   # given back after the decision


def test_dockerd_reads_and_image_trust_share_one_deadline():
    seen = []

    class Docker(FakeDocker):
        def inspect_container(self, name, deadline):
            seen.append(deadline)
            return super().inspect_container(name, deadline)

    class Result:
        allowed = True

        def log_fields(self):
            return {"trust_allowed": True}

    class Trust:
        decision_seconds = 7.0

        def check_run(self, reference, deadline=None):
            seen.append(deadline)
            return Result()

        check_pull = check_service = check_run

    docker = Docker(containers={"web": {"Id": ID, "Name": "/web", "Image": "sha256:" + "a" * 64}})
    plugin, _ = plugin_with(docker, Trust())
    call = AuthzRequest(phase="request", method="POST", uri=f"/containers/{ID}/start",
                        headers=Headers({"Content-Length": "0"}))
    assert plugin.decide(call).allow
    assert len(seen) == 2 and seen[0] is seen[1] and seen[0].total == 7.0


def test_without_dockerd_a_create_without_user_runs_as_an_unknown_user():
    plugin, _ = plugin_with(docker=None)
    call = AuthzRequest(phase="request", method="POST", uri="/containers/create",
                        body=b'{"Image": "busybox"}',
                        headers=Headers({"Content-Type": "application/json", "Content-Length": "20"}))
    facts = {(f.kind, f.value) for f in plugin.decide(call).request.facts}
    assert ("user.root", "unknown") in facts
    named = AuthzRequest(phase="request", method="POST", uri="/containers/create",
                         body=b'{"Image": "busybox", "User": "1000"}',
                         headers=Headers({"Content-Type": "application/json", "Content-Length": "36"}))
    assert ("user.root", "false") in {(f.kind, f.value) for f in plugin.decide(named).request.facts}


def test_a_null_body_is_gos_zero_value_not_a_refusal():
    """The docker 20.10 CLI's commit sends `null` when no config is given."""
    plugin, _ = plugin_with()
    call = AuthzRequest(phase="request", method="POST", uri="/v1.41/commit?container=c&repo=r",
                        body=b"null", headers=Headers({"Content-Type": "application/json",
                                                       "Content-Length": "4"}))
    decision = plugin.decide(call)
    assert decision.endpoint == "image.commit"
    assert not any(v.rule.startswith("request-") for v in decision.violations)


def test_decision_ids_differ_across_forked_workers_and_survive_random_seed():
    """Ids come from their own generator, reseeded from the OS in every forked worker: a
    worker (or a library) seeding ``random`` does not make two workers repeat them."""
    import multiprocessing
    import random

    from authz.decision import new_decision_id

    def ids(queue):
        random.seed(1)
        queue.put([new_decision_id() for _ in range(50)])

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=ids, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    got = [queue.get(timeout=10) for _ in children]
    for child in children:
        child.join(10)
    random.seed(1)
    mine = [new_decision_id() for _ in range(50)]
    assert len(set(got[0]) | set(got[1]) | set(mine)) == 150
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in mine)
