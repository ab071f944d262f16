"""The wire protocol and the decisions the Flask app answers, with the decision log."""

import base64
import json
from pathlib import Path

import pytest

from authz.app import create_app
from authz.plugin import PluginConfig

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture()
def plugin(tmp_path):
    policy = tmp_path / "policy"
    policy.mkdir()
    for name in ("model.conf", "rules.yaml"):  # no trust.yaml: image trust is tested elsewhere
        (policy / name).write_bytes((SHIPPED / name).read_bytes())
    log = tmp_path / "decisions.log"
    app = create_app(PluginConfig(policy_dir=policy, log_file=log, docker_host=None))

    class Plugin:
        client = app.test_client()

        def call(self, phase="AuthZReq", raw=None, **doc):
            data = raw if raw is not None else json.dumps(doc)
            response = self.client.post(f"/AuthZPlugin.{phase}", data=data)
            assert response.status_code == 200
            return json.loads(response.data)

        def decisions(self):
            return [json.loads(line) for line in log.read_text().splitlines()]

    return Plugin()


def create_call(body, **extra):
    data = json.dumps(body).encode()
    return dict(RequestMethod="POST", RequestUri="/v1.41/containers/create",
                RequestBody=base64.b64encode(data).decode(),
                RequestHeaders={"Content-Type": "application/json", "Content-Length": str(len(data))},
                **extra)


def test_activate(plugin):
    response = plugin.client.post("/Plugin.Activate")
    assert response.status_code == 200
    assert json.loads(response.data) == {"Implements": ["authz"]}


def test_benign_create_is_allowed(plugin):
    answer = plugin.call(**create_call({"Image": "busybox", "HostConfig": {"CapAdd": ["NET_BIND_SERVICE"]}}))
    assert answer == {"Allow": True, "Msg": "", "Err": ""}


def test_deny_lists_every_violation_with_fix(plugin):
    answer = plugin.call(**create_call({"Image": "busybox", "HostConfig": {
        "Privileged": True, "NetworkMode": "host", "CapAdd": ["SYS_ADMIN"], "Binds": ["/:/host"]}}))
    assert answer["Allow"] is False and answer["Err"] == ""
    for rule in ("privileged", "host-network", "capabilities", "host-path-protected",
                 "host-path-roots"):
        assert f"[{rule}]" in answer["Msg"]
    assert answer["Msg"].count("Fix:") == 5
    assert "5 violations" in answer["Msg"]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'"x"', b"null"])
def test_unreadable_calls_are_denied(plugin, raw):
    answer = plugin.call(raw=raw)
    assert answer["Allow"] is False


@pytest.mark.parametrize("doc", [
    {"RequestMethod": "POST", "RequestUri": "/containers/create", "RequestBody": "%%%"},
    {"RequestMethod": "POST", "RequestUri": 5},
    {"RequestMethod": "POST", "RequestUri": "/containers/create", "RequestHeaders": []},
    {"RequestMethod": "GET", "RequestUri": "/_ping", "ResponseStatusCode": "200"},
])
def test_malformed_fields_are_denied(plugin, doc):
    assert plugin.call(**doc)["Allow"] is False


def test_missing_fields_fail_closed(plugin):
    # No method, no URI: nothing can be routed.
    assert plugin.call()["Allow"] is False
    # A create without its body.
    assert plugin.call(RequestMethod="POST", RequestUri="/containers/create")["Allow"] is False


def test_reads_are_allowed_and_unknown_writes_denied(plugin):
    assert plugin.call(RequestMethod="GET", RequestUri="/v1.41/containers/json")["Allow"] is True
    answer = plugin.call(RequestMethod="POST", RequestUri="/v1.41/frobnicate",
                         RequestHeaders={"Content-Length": "0"})
    assert answer["Allow"] is False and "[unknown-write-endpoint]" in answer["Msg"]


def test_response_phase_records_status(plugin):
    answer = plugin.call("AuthZRes", RequestMethod="POST", RequestUri="/v1.41/containers/x/start",
                         ResponseStatusCode=204)
    assert answer["Allow"] is True
    entry = plugin.decisions()[-1]
    assert entry["phase"] == "response" and entry["status"] == 204
    assert entry["endpoint"] == "container.start"


def test_unknown_plugin_path_is_not_an_allow(plugin):
    response = plugin.client.post("/AuthZPlugin.Other", data="{}")
    assert json.loads(response.data)["Allow"] is False


def test_internal_error_denies(plugin, monkeypatch):
    import authz.plugin

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(authz.plugin, "decode", boom)
    answer = plugin.call(RequestMethod="GET", RequestUri="/_ping")
    assert answer["Allow"] is False and "[internal-error]" in answer["Msg"]


def test_decision_log_fields_and_no_secrets(plugin):
    plugin.call(User="alice", UserAuthNMethod="TLS", **create_call({
        "Image": "busybox", "Env": ["PASSWORD=hunter2-secret"],
        "HostConfig": {"Privileged": True}}))
    plugin.call(RequestMethod="POST", RequestUri="/v1.41/build?t=x&buildargs=%7B%22TOKEN%22%3A%22s3cr3t%22%7D",
                RequestHeaders={"Content-Type": "application/x-tar", "Content-Length": "10"})
    entries = plugin.decisions()
    first = entries[0]
    for key in ("time", "decision_id", "phase", "user", "auth_method", "method", "endpoint", "uri",
                "facts", "allow", "violations", "policy_revision", "duration_ms"):
        assert key in first, key
    assert first["user"] == "alice" and first["auth_method"] == "TLS"
    assert first["endpoint"] == "container.create" and first["allow"] is False
    assert [v["rule"] for v in first["violations"]] == ["privileged"]
    assert {"kind": "privileged", "value": "true", "where": "HostConfig.Privileged"} in first["facts"]
    assert len(first["policy_revision"]) == 64
    raw = json.dumps(entries)
    assert "hunter2-secret" not in raw and "s3cr3t" not in raw
    assert "buildargs=[redacted]" in entries[1]["uri"]


def test_log_survives_lone_surrogates_and_redacts_url_credentials(plugin):
    plugin.call(raw=b'{"RequestMethod":"GET","RequestUri":"/_ping\\ud800"}')
    plugin.call(RequestMethod="POST", RequestUri="/v1.41/build?remote=https://oauth2:TOKEN@example/x.git",
                RequestHeaders={"Content-Length": "0"})
    entries = plugin.decisions()
    assert len(entries) == 2
    assert "TOKEN" not in json.dumps(entries)


def test_refusals_still_name_the_endpoint(plugin):
    body = b'{"HostConfig":{"Privileged":false,"privileged":true}}'
    answer = plugin.call(RequestMethod="POST", RequestUri="/v1.41/containers/create",
                         RequestBody=base64.b64encode(body).decode(),
                         RequestHeaders={"Content-Type": "application/json", "Content-Length": str(len(body))})
    assert answer["Allow"] is False and "[request-ambiguous]" in answer["Msg"]
    assert "denied container.create" in answer["Msg"]
    entry = plugin.decisions()[-1]
    assert entry["endpoint"] == "container.create" and entry["path"] == "/containers/create"
    plugin.call(RequestMethod="POST", RequestUri="http://x/containers/create")
    assert plugin.decisions()[-1]["endpoint"] == "invalid"


def test_the_authz_routes_answer_outside_flask_and_stay_closed(plugin):
    """dockerd's two per-call routes are answered straight from WSGI (authz.app.AuthzRoutes);
    other methods and paths still go to Flask and are denied."""
    answer = plugin.call(**create_call({"Image": "busybox", "HostConfig": {"Privileged": True}}))
    assert answer["Allow"] is False and "[privileged]" in answer["Msg"]
    for method, path in (("GET", "/AuthZPlugin.AuthZReq"), ("POST", "/AuthZPlugin.AuthZReq/"),
                         ("POST", "/authzplugin.authzreq")):
        response = plugin.client.open(path, method=method, data=b"{}")
        assert response.status_code in (404, 405)
        assert json.loads(response.data)["Allow"] is False
    chunked = plugin.client.post("/AuthZPlugin.AuthZReq", data=b"not json",
                                 headers={"Transfer-Encoding": "chunked"})
    assert chunked.status_code == 200 and json.loads(chunked.data)["Allow"] is False
