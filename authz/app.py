"""The plugin's HTTP API (Flask): Plugin.Activate, AuthZPlugin.AuthZReq, AuthZPlugin.AuthZRes.

Flask only adapts ``authz.plugin.Plugin`` to HTTP: every path out of a handler answers
HTTP 200 with the plugin's JSON answer; an unknown path or method is answered with a deny.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request

from authz.plugin import Plugin, PluginConfig
from authz.protocol import IMPLEMENTS, REQUEST_PHASE, RESPONSE_PHASE, answer


def _json(payload: dict, status: int = 200) -> Response:
    # dockerd reads the body whatever the type; say JSON anyway.
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def create_app(config: PluginConfig, bundle=None) -> Flask:
    """The plugin's app, deciding with ``bundle`` (a ``reload.Bundle`` the serving master
    loaded and validated), or with the policy directory loaded here."""
    plugin = Plugin.build(config, bundle)
    app = Flask("pyauthz")
    app.config["PYAUTHZ_PLUGIN"] = plugin
    app.config["PYAUTHZ_REVISION"] = plugin.policy.revision
    app.config["PYAUTHZ_WARNINGS"] = plugin.warnings()

    @app.post("/Plugin.Activate")
    def activate() -> Response:
        return _json(IMPLEMENTS)

    @app.post("/AuthZPlugin.AuthZReq")
    def authz_request() -> Response:
        return _json(plugin.handle(REQUEST_PHASE, request.get_data(cache=False)))

    @app.post("/AuthZPlugin.AuthZRes")
    def authz_response() -> Response:
        return _json(plugin.handle(RESPONSE_PHASE, request.get_data(cache=False)))

    @app.errorhandler(Exception)
    def on_error(exc: Exception) -> Response:
        # Unknown plugin paths (404/405) and anything else: never an allow.
        code = getattr(exc, "code", 500)
        return _json(answer(False, f"pyauthz: {exc}"), code if isinstance(code, int) else 500)

    return app
