"""The plugin's HTTP API (Flask): Plugin.Activate, AuthZPlugin.AuthZReq, AuthZPlugin.AuthZRes.

Every path out of a handler answers HTTP 200 with a JSON decision. Anything that goes
wrong is a deny with the reason; nothing is ever answered as an allow by default.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import json

from flask import Flask, Response, request

from authz import audit
from authz.decision import (Decision, decide_request, decide_response, new_decision_id,
                            refusal)
from authz.decoding.errors import RequestRefused
from authz.decoding.live import LiveState
from authz.moby.client import DockerClient
from authz.policy.engine import Policy, Violation
from authz.policy.floor import SYSTEM_FLOOR, ProtectedPath, protected
from authz.protocol import (IMPLEMENTS, REQUEST_PHASE, RESPONSE_PHASE, AuthzRequest,
                            ProtocolError, answer, parse_call)


@dataclass
class AppConfig:
    policy_dir: Path
    log_file: Path | None = None
    docker_host: str | None = "unix:///var/run/docker.sock"
    # Threads serving each worker. Decisions that wait on dockerd (whose reads come back
    # through this plugin) may hold at most a quarter of them, so that those reads find a
    # free thread; a decision that finds no slot within a second is refused.
    threads: int = 32
    # The socket the plugin serves (its directory is protected from binds, as are the
    # policy directory, the decision log's directory and dockerd's socket).
    socket_path: str | None = None


def own_paths(config: AppConfig) -> tuple[ProtectedPath, ...]:
    """pyauthz's own files, which no bind may reach: a container that can write the
    policy, the log, the socket directory (to put its own socket there), or the code the
    plugin runs owns the plugin."""
    # The code it runs as root: this package and the Python environment it runs in.
    paths = [str(config.policy_dir.resolve()), os.path.dirname(os.path.abspath(__file__)),
             sys.prefix]
    if config.log_file is not None:
        paths.append(str(config.log_file.resolve().parent))
    if config.socket_path:
        paths.append(os.path.dirname(os.path.abspath(config.socket_path)))
    if config.docker_host and config.docker_host.startswith("unix://"):
        paths.append(os.path.abspath(config.docker_host[len("unix://"):]))
    real = [os.path.realpath(p) for p in paths]
    return protected(dict.fromkeys(paths + real), "pyauthz's own files, or dockerd's socket")



def _json(payload: dict) -> Response:
    # dockerd reads the body whatever the type; say JSON anyway.
    return Response(json.dumps(payload), status=200, mimetype="application/json")


def load_trust(policy_dir: Path, docker_host: str | None):
    """Image trust, when the policy directory has a trust policy."""
    if not (policy_dir / "trust.yaml").is_file():
        return None
    from authz.trust import ImageTrust

    return ImageTrust.load(policy_dir, docker_host)


def create_app(config: AppConfig, bundle=None) -> Flask:
    """The plugin's app, deciding with ``bundle`` (a ``reload.Bundle`` the serving master
    loaded and validated), or with the policy directory loaded here."""
    if bundle is not None:
        policy, trust = bundle.policy, bundle.trust
    else:
        policy = Policy.load(config.policy_dir)
        trust = load_trust(config.policy_dir, config.docker_host)
    live = LiveState(DockerClient(config.docker_host)) if config.docker_host else None
    lookup_slots = threading.BoundedSemaphore(max(1, config.threads // 4))
    floor = SYSTEM_FLOOR + own_paths(config)
    log = audit.make_logger(config.log_file)
    warnings = list(policy.warnings)
    if live is None:
        warnings.append("no docker host: container starts are not re-checked against their "
                        "stored configuration, nor service networks named by id")
    if trust is not None:
        warnings += trust.startup_warnings()

    app = Flask("pyauthz")
    app.config["PYAUTHZ_REVISION"] = policy.revision
    app.config["PYAUTHZ_WARNINGS"] = warnings

    def handle(phase: str) -> Response:
        raw = request.get_data(cache=False)
        try:
            call = parse_call(raw, phase)
        except ProtocolError as exc:
            call = AuthzRequest(phase=phase)
            decision = Decision(id=new_decision_id(), phase=phase, allow=False)
            decision.violations = [refusal(RequestRefused("protocol", str(exc),
                                                          "Report this to the pyauthz maintainers."))]
        else:
            try:
                if phase == REQUEST_PHASE:
                    decision = decide_request(call, policy, trust, live, lookup_slots, floor)
                else:
                    decision = decide_response(call)
            except Exception as exc:  # noqa: BLE001 - fail closed, whatever it was
                decision = Decision(id=new_decision_id(), phase=phase, allow=False)
                decision.violations = [Violation(
                    "internal-error", f"{type(exc).__name__}: {str(exc)[:300]}",
                    "The plugin failed while deciding; it denies rather than guess.",
                    "Report the decision id to the pyauthz maintainers.")]
                app.logger.error("decision %s failed:\n%s", decision.id, traceback.format_exc())
        try:
            log.info("decision", **audit.decision_event(call, decision, policy.revision))
        except audit.LogUnavailable as exc:
            # A decision that cannot be logged is not made: auditors must see every one.
            # (The sink reports the cause itself, at most every 10 s.)
            return _json(answer(False, f"pyauthz: the decision log cannot be written ({exc}); "
                                       "denying"))
        except Exception:  # noqa: BLE001
            app.logger.error("cannot write the decision log:\n%s", traceback.format_exc())
            return _json(answer(False, "pyauthz: the decision log cannot be written; denying"))
        return _json(answer(decision.allow, decision.message(policy.revision)))

    @app.post("/Plugin.Activate")
    def activate() -> Response:
        return _json(IMPLEMENTS)

    @app.post("/AuthZPlugin.AuthZReq")
    def authz_request() -> Response:
        return handle(REQUEST_PHASE)

    @app.post("/AuthZPlugin.AuthZRes")
    def authz_response() -> Response:
        return handle(RESPONSE_PHASE)

    @app.errorhandler(Exception)
    def on_error(exc: Exception) -> Response:
        # Unknown plugin paths (404/405) and anything else: never an allow.
        code = getattr(exc, "code", 500)
        return Response(json.dumps(answer(False, f"pyauthz: {exc}")), status=code if
                        isinstance(code, int) else 500, mimetype="application/json")

    return app
