"""Metrics (authz/metrics.py): the counters a decision moves, bounded labels, sums across
processes (prometheus-client's multiprocess mode), the policy state, the listener."""

from __future__ import annotations

import json
import multiprocessing
import os
import urllib.error
import urllib.request

import pytest

from authz import audit, metrics
from authz.policy.engine import Violation
from authz.protocol import REQUEST_PHASE, RESPONSE_PHASE
from tests.unit.test_plugin import SHIPPED, plugin_with, raw_call

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402


@pytest.fixture
def on(tmp_path):
    directory = tmp_path / "multiproc"
    directory.mkdir(mode=0o700)
    metrics.enable(str(directory))
    try:
        yield directory
    finally:
        metrics.disable()


def scrape(directory) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def value(directory, name, **labels) -> float:
    return scrape(directory).get_sample_value(name, labels) or 0.0


def test_off_by_default_nothing_is_counted(tmp_path):
    assert metrics._on is None
    plugin, _ = plugin_with()
    assert plugin.handle(REQUEST_PHASE, raw_call("GET", "/v1.41/containers/json"))["Allow"]
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_decisions_by_phase_endpoint_outcome_and_rule(on):
    plugin, _ = plugin_with()
    for _ in range(3):
        assert plugin.handle(REQUEST_PHASE, raw_call("GET", "/v1.41/containers/json"))["Allow"]
    assert plugin.handle(RESPONSE_PHASE, raw_call("GET", "/v1.41/containers/json"))["Allow"]
    denied = plugin.handle(REQUEST_PHASE, raw_call(
        "POST", "/v1.41/containers/create",
        {"Image": "busybox", "HostConfig": {"Privileged": True, "NetworkMode": "host"}}))
    assert denied["Allow"] is False
    assert plugin.handle(REQUEST_PHASE, b"{not json")["Allow"] is False

    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="container.list",
                 outcome="allow") == 3
    assert value(on, "pyauthz_decisions_total", phase="response", endpoint="container.list",
                 outcome="allow") == 1
    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="container.create",
                 outcome="deny") == 1
    for rule in ("privileged", "host-network"):
        assert value(on, "pyauthz_decision_rules_total", phase="request",
                     endpoint="container.create", rule=rule, effect="deny") == 1
    # An unreadable call has no endpoint: the closed label value "invalid".
    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="invalid",
                 outcome="deny") == 1
    assert value(on, "pyauthz_decision_rules_total", phase="request", endpoint="invalid",
                 rule="protocol", effect="deny") == 1
    assert value(on, "pyauthz_decision_duration_seconds_count", phase="request") == 5
    assert value(on, "pyauthz_decision_duration_seconds_count", phase="response") == 1
    assert value(on, "pyauthz_decision_duration_seconds_bucket", phase="request", le="+Inf") == 5
    assert value(on, "pyauthz_decision_log_write_failures_total") == 0


def test_a_decision_that_cannot_be_logged_is_an_error_and_a_log_failure(on):
    class Unavailable:
        def info(self, event, **fields):
            raise audit.LogUnavailable("cannot write the decision log: No space left on device")

    class Broken:
        def info(self, event, **fields):
            raise OSError("something else")

    for logger in (Unavailable(), Broken()):
        plugin, _ = plugin_with()
        plugin.logger = logger
        assert plugin.handle(REQUEST_PHASE, raw_call("GET", "/v1.41/containers/json"))["Allow"] \
            is False
    assert value(on, "pyauthz_decision_log_write_failures_total") == 2
    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="container.list",
                 outcome="error") == 2
    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="container.list",
                 outcome="allow") == 0


def test_an_internal_error_is_an_error(on, monkeypatch):
    plugin, _ = plugin_with()
    monkeypatch.setattr(plugin, "_decide_request", lambda call, decision: 1 / 0)
    assert plugin.handle(REQUEST_PHASE, raw_call("GET", "/v1.41/info"))["Allow"] is False
    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="invalid",
                 outcome="error") == 1
    assert value(on, "pyauthz_decision_rules_total", phase="request", endpoint="invalid",
                 rule="internal-error", effect="deny") == 1


class _Decision:
    """What metrics reads of a decision, with any values."""

    def __init__(self, endpoint="container.create", allow=False, violations=(), audits=(),
                 exceptions=(), images=()):
        self.phase, self.endpoint, self.allow = REQUEST_PHASE, endpoint, allow
        self.violations, self.audits = list(violations), list(audits)
        self.exceptions_applied, self.images = list(exceptions), list(images)


def _violation(rule):
    return Violation(rule, "found", "message", "fix")


def test_labels_are_closed_sets(on):
    # An endpoint name outside the route table, a rule id that is not an id: never labels.
    metrics.decided(_Decision(endpoint="/v1.41/containers/abc/start",
                              violations=[_violation("x" * 500), _violation("a b\nc")]), 0.0)
    samples = [s for m in scrape(on).collect() for s in m.samples]
    endpoints = {s.labels.get("endpoint") for s in samples} - {None}
    rules = {s.labels.get("rule") for s in samples} - {None}
    assert endpoints == {"invalid"} and rules == {"other"}


def test_audit_exemptions_and_image_trust(on):
    class Applied:
        rule = "run-as-root"

    metrics.decided(_Decision(
        allow=True, audits=[_violation("no-memory-limit")], exceptions=[Applied()],
        images=[{"trust_allowed": True, "trust_rule": "image-signature", "image": "a/b:1"},
                {"trust_allowed": False, "trust_rule": "image-signature", "image": "c/d:2"},
                {"trust_allowed": True, "trust_rule": "image-unsigned-exception"}]), 0.002)
    assert value(on, "pyauthz_decision_rules_total", phase="request", endpoint="container.create",
                 rule="no-memory-limit", effect="audit") == 1
    assert value(on, "pyauthz_decision_rules_total", phase="request", endpoint="container.create",
                 rule="run-as-root", effect="exempted") == 1
    assert value(on, "pyauthz_image_trust_checks_total", result="allow",
                 rule="image-signature") == 1
    assert value(on, "pyauthz_image_trust_checks_total", result="deny",
                 rule="image-signature") == 1
    assert value(on, "pyauthz_image_trust_checks_total", result="allow",
                 rule="image-unsigned-exception") == 1
    text = prometheus_client.generate_latest(scrape(on)).decode()
    assert "a/b" not in text and "c/d" not in text  # never an image in a label


def _decide_in_child(n):
    plugin, _ = plugin_with()
    for _ in range(n):
        plugin.handle(REQUEST_PHASE, raw_call("GET", "/v1.41/containers/json"))


def test_sums_across_processes(on):
    """Two forked processes (as gunicorn's workers are) and this one: one sum."""
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_decide_in_child, args=(n,)) for n in (4, 6)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    _decide_in_child(1)
    assert len([f for f in os.listdir(on) if f.startswith("counter_")]) == 3
    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="container.list",
                 outcome="allow") == 11
    # A dead worker's counters stay in the sum (they are totals since the start).
    for child in children:
        metrics.MetricsServer.child_exit(type("S", (), {"directory": str(on)})(), child.pid)
    assert value(on, "pyauthz_decisions_total", phase="request", endpoint="container.list",
                 outcome="allow") == 11


def test_policy_state_is_read_at_scrape_time(tmp_path):
    metrics.note_policy({"revision": "ab" * 32, "reloads": 5, "failed_reloads": 2,
                         "last_error": "rules.yaml: bad", "time": 1700000000.0})
    registry = CollectorRegistry()
    registry.register(metrics._PolicyCollector())
    get = registry.get_sample_value
    assert get("pyauthz_policy_revision_info", {"revision": "ab" * 6}) == 1
    assert get("pyauthz_policy_reloads_total", {"result": "ok"}) == 3
    assert get("pyauthz_policy_reloads_total", {"result": "failed"}) == 2
    assert get("pyauthz_policy_last_reload_ok") == 0
    assert get("pyauthz_policy_last_load_timestamp_seconds") == 1700000000.0
    metrics.note_policy({"revision": "cd" * 32, "reloads": 6, "failed_reloads": 2,
                         "last_error": "", "time": 1700000100.0})
    assert get("pyauthz_policy_revision_info", {"revision": "ab" * 6}) is None
    assert get("pyauthz_policy_revision_info", {"revision": "cd" * 6}) == 1
    assert get("pyauthz_policy_last_reload_ok") == 1


def test_the_policy_holder_reports_its_state(tmp_path, monkeypatch):
    from authz import reload

    monkeypatch.setattr(reload, "STATE_DIR", tmp_path)
    holder = reload.PolicyHolder(SHIPPED, None, str(tmp_path / "p.sock"))
    assert metrics._policy_state["revision"] == holder.bundle.policy.revision
    assert metrics._policy_state["reloads"] == 0


@pytest.mark.parametrize("given, expected", [
    ("127.0.0.1:9102", ("127.0.0.1", 9102)),
    ("127.0.0.5:1", ("127.0.0.5", 1)),
    ("[::1]:9102", ("::1", 9102)),
    ("localhost:9102", ("localhost", 9102)),
])
def test_loopback_addresses(given, expected):
    assert metrics.parse_listen(given) == expected


@pytest.mark.parametrize("given", ["0.0.0.0:9102", "10.1.2.3:9102", "[::]:9102",
                                   "metrics.example:9102"])
def test_other_addresses_need_the_explicit_flag(given):
    with pytest.raises(ValueError, match="--metrics-listen-any"):
        metrics.parse_listen(given)
    assert metrics.parse_listen(given, allow_any=True)[1] == 9102


@pytest.mark.parametrize("given", ["9102", "127.0.0.1", "127.0.0.1:", ":9102", "127.0.0.1:0",
                                   "127.0.0.1:70000", "127.0.0.1:x"])
def test_malformed_addresses(given):
    with pytest.raises(ValueError):
        metrics.parse_listen(given)


def test_the_listener(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "multiproc_parent", lambda: str(tmp_path))
    stale = tmp_path / "p.metrics.999999999.abc"  # left by a master that died
    stale.mkdir()
    server = metrics.start("127.0.0.1", 0, str(tmp_path / "p.sock"))
    try:
        assert not stale.exists()
        directory = server.directory
        assert os.path.dirname(directory) == str(tmp_path)
        assert os.stat(directory).st_mode & 0o777 == 0o700
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory
        metrics.note_policy({"revision": "ef" * 32, "reloads": 0, "failed_reloads": 0,
                             "last_error": "", "time": 1.0})
        plugin, _ = plugin_with()
        plugin.handle(REQUEST_PHASE, raw_call("GET", "/v1.41/containers/json"))
        base = f"http://127.0.0.1:{server.address[1]}"
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        assert ('pyauthz_decisions_total{endpoint="container.list",outcome="allow",'
                'phase="request"} 1.0') in text
        assert 'pyauthz_policy_revision_info{revision="efefefefefef"} 1.0' in text
        # No plugin on the socket: unhealthy, with the reason.
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/health", timeout=10)
        assert err.value.code == 503
        assert json.loads(err.value.read())["healthy"] is False
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/AuthZPlugin.AuthZReq", timeout=10)
        assert err.value.code == 404
    finally:
        server.stop()
        metrics.disable()
    assert not os.path.exists(directory)


def test_a_worker_leaving_does_not_remove_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "multiproc_parent", lambda: str(tmp_path))
    server = metrics.start("127.0.0.1", 0, str(tmp_path / "p.sock"))
    try:
        server.owner = -1  # as in a worker, which unwinds through serve() when it exits
        server.stop()
        assert os.path.isdir(server.directory)
    finally:
        server.owner = os.getpid()
        server.stop()
        metrics.disable()


def test_serve_refuses_a_non_loopback_metrics_address_before_anything(tmp_path):
    from click.testing import CliRunner

    from authz.cli import main

    r = CliRunner().invoke(main, ["serve", "--socket", str(tmp_path / "x.sock"),
                                  "--metrics-listen", "0.0.0.0:9102"])
    assert r.exit_code == 2 and "--metrics-listen-any" in r.output
    assert not (tmp_path / "x.sock").exists()


def test_gunicorn_hooks_when_metrics_are_on(tmp_path):
    from authz.serve import ServeOptions, _GunicornApp

    class Fake:
        def __init__(self):
            self.calls = []

        def post_fork(self):
            self.calls.append("post_fork")

        def child_exit(self, pid):
            self.calls.append(("child_exit", pid))

    fake = Fake()
    app = _GunicornApp(lambda: None, ServeOptions(socket_path=str(tmp_path / "s.sock")), fake)
    worker = type("W", (), {"pid": 4242})()
    app.cfg.post_fork(None, worker)
    app.cfg.child_exit(None, worker)
    assert fake.calls == ["post_fork", ("child_exit", 4242)]
    plain = _GunicornApp(lambda: None, ServeOptions(socket_path=str(tmp_path / "s.sock")))
    plain.cfg.child_exit(None, worker)  # gunicorn's default: nothing
