"""Prometheus metrics and ``/health`` for ``pyauthz serve --metrics-listen HOST:PORT``.

Off unless ``--metrics-listen`` is given: then ``serve`` calls ``start()`` in the gunicorn
master before any worker is forked. It makes a private directory (mode 0700, new and empty)
for prometheus-client's multiprocess mode and names it in ``PROMETHEUS_MULTIPROC_DIR``;
every worker writes its counters there (one small mmap'ed file per process and kind), the
master marks a worker that exits as dead (``child_exit``), and ``/metrics``, answered by a
thread of the master on its own TCP listener (never the plugin socket), sums the files of
all workers, live and dead, at each scrape. The directory is removed when the master exits.

The decision path pays one check when metrics are off (``decided()`` returns at once), and
when on, a few mmap writes per decision. Labels are closed sets: the phase, the endpoint name
(``authz.decoding.routes.ENDPOINTS``, else ``invalid``), the outcome, rule ids (the policy's,
the floor's, image trust's and the built-in refusals: bounded by the policy), image trust's
result rule. Never a subject, an image, a path or a decision id.

Policy metrics (the revision in force, reload results) are the master's own state
(``authz.reload.PolicyHolder``), read at scrape time: the master is where the policy is
loaded and where ``/metrics`` is answered.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any

DECISION_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0)
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_LOOPBACK_NAMES = ("localhost",)

# The master's policy state (PolicyHolder.state()), whatever process holds it; only the
# master's is read, by the scrape.
_policy_state: dict[str, Any] = {}
# The worker-side metric objects while metrics are on (None: off, the hot path returns).
_on: "_Metrics | None" = None


def note_policy(state: dict[str, Any]) -> None:
    """The policy holder's state after a load or reload (revision, reload counts)."""
    global _policy_state
    _policy_state = dict(state)


def decided(decision, started: float, logged: bool = True) -> None:
    """Count one answered decision; ``started`` is ``time.perf_counter()`` at the call's
    start; ``logged`` False: its line could not be written, so it was answered deny."""
    m = _on
    if m is not None:
        m.decided(decision, time.perf_counter() - started, logged)


class _Metrics:
    """The metric objects (created after multiprocess mode is switched on)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        from authz.decoding.routes import ENDPOINTS

        self.endpoints = ENDPOINTS
        self.decisions = Counter(
            "pyauthz_decisions", "Decisions answered, by phase, endpoint and outcome "
            "(allow, deny, error: the plugin failed to decide or to log the decision).",
            ["phase", "endpoint", "outcome"], registry=None)
        self.rules = Counter(
            "pyauthz_decision_rules", "Rules found in decisions, by phase, endpoint, rule "
            "and effect (deny: it denied; audit: a would-be deny in audit mode; exempted: an "
            "exception lifted it).", ["phase", "endpoint", "rule", "effect"], registry=None)
        self.latency = Histogram(
            "pyauthz_decision_duration_seconds", "Time from dockerd's call read to the answer "
            "(decoding, dockerd reads, policy, image trust, the log write), by phase.",
            ["phase"], buckets=DECISION_BUCKETS, registry=None)
        self.trust = Counter(
            "pyauthz_image_trust_checks", "Image trust checks, by result (allow, deny) and "
            "the trust rule that decided.", ["result", "rule"], registry=None)
        self.log_failures = Counter(
            "pyauthz_decision_log_write_failures", "Decisions answered deny because their "
            "decision-log line could not be written (full disk, read-only, blocked sink...).",
            registry=None)
        self._children: dict[tuple, Any] = {}
        self._rule_names: dict[str, str] = {}

    def _child(self, metric, labels: tuple):
        key = (id(metric),) + labels
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _rule(self, rule: str) -> str:
        name = self._rule_names.get(rule)
        if name is None:
            name = rule if _RULE_ID.fullmatch(rule) else "other"
            if len(self._rule_names) < 4096:
                self._rule_names[rule] = name
        return name

    def decided(self, decision, seconds: float, logged: bool) -> None:
        phase = decision.phase
        endpoint = decision.endpoint if decision.endpoint in self.endpoints else "invalid"
        violations = decision.violations
        if not logged:
            outcome = "error"
            self.log_failures.inc()
        elif decision.allow:
            outcome = "allow"
        elif violations and violations[0].rule == "internal-error":
            outcome = "error"
        else:
            outcome = "deny"
        self._child(self.decisions, (phase, endpoint, outcome)).inc()
        self._child(self.latency, (phase,)).observe(seconds)
        for effect, found in (("deny", violations), ("audit", decision.audits),
                              ("exempted", decision.exceptions_applied)):
            for v in found:
                self._child(self.rules, (phase, endpoint, self._rule(v.rule), effect)).inc()
        for image in decision.images:
            result = "allow" if image.get("trust_allowed") else "deny"
            rule = self._rule(str(image.get("trust_rule") or "none"))
            self._child(self.trust, (result, rule)).inc()


class _PolicyCollector:
    """The master's policy state as metrics, read at each scrape."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = _policy_state
        if not state:
            return
        info = GaugeMetricFamily("pyauthz_policy_revision_info",
                                 "The policy revision new decisions are made with (value 1).",
                                 labels=["revision"])
        info.add_metric([str(state.get("revision", ""))[:12]], 1)
        yield info
        reloads, failed = int(state.get("reloads", 0)), int(state.get("failed_reloads", 0))
        counter = CounterMetricFamily("pyauthz_policy_reloads",
                                      "Policy reloads (SIGHUP, pyauthz reload), by result: ok "
                                      "(the new revision decides) or failed (the running one "
                                      "keeps deciding).", labels=["result"])
        counter.add_metric(["ok"], reloads - failed)
        counter.add_metric(["failed"], failed)
        yield counter
        yield GaugeMetricFamily("pyauthz_policy_last_reload_ok",
                                "1 when the last load or reload of the policy succeeded, 0 "
                                "when it failed.", value=0 if state.get("last_error") else 1)
        yield GaugeMetricFamily("pyauthz_policy_last_load_timestamp_seconds",
                                "When the policy was last loaded or a reload was tried "
                                "(Unix time).", value=float(state.get("time", 0)))


def parse_listen(value: str, allow_any: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port). A host that is not loopback
    is refused unless ``allow_any``: /metrics and /health have no authentication."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"expected HOST:PORT (127.0.0.1:9102), not {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in _LOOPBACK_NAMES
    if not loopback and not allow_any:
        raise ValueError(f"{host} is not a loopback address: /metrics and /health have no "
                         "authentication; use 127.0.0.1 or [::1], or add --metrics-listen-any "
                         "to listen on it anyway")
    return host, int(port)


class MetricsServer:
    """The master's ``/metrics`` and ``/health`` listener and the multiprocess directory."""

    def __init__(self, host: str, port: int, socket_path: str, directory: str):
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        from authz import health

        self.directory = directory
        self.owner = os.getpid()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        registry.register(_PolicyCollector())

        probe = health.CachedCheck(socket_path)

        class Handler(health.QuietHandler):
            def do_GET(self):
                path = self.path.partition("?")[0]
                if path == "/metrics":
                    status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(registry)
                elif path == "/health":
                    # The one probe `pyauthz health` makes: a real decision, made and logged.
                    result = probe()
                    status, ctype, body = (200 if result.ok else 503, "application/json",
                                           result.as_json())
                else:
                    self.send_error(404)
                    return
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(health.BoundedHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.httpd = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="pyauthz-metrics",
                                       daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def post_fork(self) -> None:
        """In a worker: let go of the master's listener (a worker that outlives its master
        must not keep the port from the next one)."""
        self.httpd.socket.close()

    def child_exit(self, pid: int) -> None:
        """In the master, for each worker that exited: its live gauges are dropped; its
        counters stay in the sums."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.directory)

    def stop(self) -> None:
        """In the master, at exit: stop answering and remove the directory. (A no-op in a
        worker, which unwinds through the same frames when it exits.)"""
        if os.getpid() != self.owner:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


def multiproc_parent() -> str | None:
    """Where the private directory is made: /run/pyauthz (root), else the temp directory."""
    from authz.reload import STATE_DIR

    try:
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        if os.access(STATE_DIR, os.W_OK):
            return str(STATE_DIR)
    except OSError:
        pass
    return None


def _sweep(parent: str, prefix: str) -> None:
    """Remove the directories that masters which died without cleaning up left behind
    (named ``PREFIX.PID.*``; a live PID's is kept)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for entry in names:
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix):].partition(".")[0]
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        path = os.path.join(parent, entry)
        if os.path.isdir(path) and not os.path.islink(path) and os.stat(path).st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


def enable(directory: str) -> None:
    """Switch this process (and the workers it forks) to multiprocess metrics in
    ``directory``, and make the metric objects."""
    global _on
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # prometheus-client reads the variable when it is first imported; it may have been
    # imported before: choose the mmap'ed values now, before any metric is made.
    values.ValueClass = values.MultiProcessValue()
    _on = _Metrics()


def disable() -> None:
    """Back to no metrics (tests)."""
    global _on
    from prometheus_client import values

    _on = None
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    values.ValueClass = values.MutexValue


def start(host: str, port: int, socket_path: str) -> MetricsServer:
    """In the master, before gunicorn forks: the private directory, multiprocess mode, the
    listener (bound now, so that a busy port stops the start) and its thread."""
    name = os.path.basename(socket_path).removesuffix(".sock") or "pyauthz"
    parent = multiproc_parent() or tempfile.gettempdir()
    _sweep(parent, f"{name}.metrics.")
    # mkdtemp: a new directory, empty, mode 0700, a name no one else could have made first.
    directory = tempfile.mkdtemp(prefix=f"{name}.metrics.{os.getpid()}.", dir=parent)
    try:
        enable(directory)
        server = MetricsServer(host, port, socket_path, directory)
    except BaseException:
        disable()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    server.thread.start()
    print(f"pyauthz: metrics on http://{host if ':' not in host else f'[{host}]'}:"
          f"{server.address[1]}/metrics and /health", file=sys.stderr, flush=True)
    return server
