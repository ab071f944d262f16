"""A property-based fuzz test of the app (issue 7): whatever dockerd's call holds, the answer
is HTTP 200 with a boolean Allow, in bounded time, and a write whose body cannot be read is
never allowed."""

import base64
import json
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from authz.app import create_app
from authz.plugin import PluginConfig

SHIPPED = Path(__file__).resolve().parents[2] / "policies"

_APP = {}


def client(tmp_path_factory):
    if "c" not in _APP:
        policy = tmp_path_factory.mktemp("fuzz") / "policy"
        policy.mkdir()
        for name in ("model.conf", "rules.yaml"):
            (policy / name).write_bytes((SHIPPED / name).read_bytes())
        app = create_app(PluginConfig(policy_dir=policy, log_file=policy.parent / "d.jsonl",
                                   docker_host=None))
        _APP["c"] = app.test_client()
    return _APP["c"]


methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "", "post"])
paths = st.sampled_from(["/containers/create", "/v1.41/containers/create", "/volumes/create",
                         "/plugins/x/set", "/services/create", "/networks/create",
                         "/images/create?fromSrc=-", "/containers/" + "c" * 64 + "/start",
                         "/v1.23/containers/x/start", "/build", "/_ping", "/x%zz", "//a/../b"])
bodies = st.one_of(st.none(), st.binary(max_size=300),
                   st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                                lambda c: st.lists(c, max_size=4) | st.dictionaries(
                                    st.sampled_from(["Image", "HostConfig", "Binds", "Privileged",
                                                     "privileged", "Mounts", "Options", "o", "x"]),
                                    c, max_size=4), max_leaves=20).map(lambda d: json.dumps(d).encode()))
headers = st.dictionaries(st.sampled_from(["Content-Type", "Content-Length", "X"]),
                          st.sampled_from(["application/json", "0", "12", "text/plain",
                                           "application/x-www-form-urlencoded", ""]), max_size=3)


@seed(20261129)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=methods, path=paths, body=bodies, hdrs=headers, garbage=st.booleans())
def test_any_call_gets_a_decision(tmp_path_factory, method, path, body, hdrs, garbage):
    c = client(tmp_path_factory)
    doc = {"RequestMethod": method, "RequestUri": path, "RequestHeaders": hdrs}
    if body is not None:
        doc["RequestBody"] = base64.b64encode(body).decode()
    raw = json.dumps(doc).encode() if not garbage else json.dumps(doc).encode()[:-3]
    started = time.monotonic()
    response = c.post("/AuthZPlugin.AuthZReq", data=raw)
    assert time.monotonic() - started < 2.0
    assert response.status_code == 200
    answer = json.loads(response.data)
    assert isinstance(answer["Allow"], bool)
    if garbage:
        assert answer["Allow"] is False
    if method == "POST" and path.endswith("/containers/create") and body is not None:
        try:
            readable = isinstance(json.loads(body), dict)
        except ValueError:
            readable = False
        if not readable:
            assert answer["Allow"] is False, (body, answer)
