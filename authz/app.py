"""The plugin's HTTP API (Flask): Plugin.Activate, AuthZPlugin.AuthZReq, AuthZPlugin.AuthZRes.

Flask only adapts ``authz.plugin.Plugin`` to HTTP: every path out of a handler answers
HTTP 200 with the plugin's JSON answer; an unknown path or method is answered with a deny.
"""

from __future__ import annotations

import json
from functools import partial

import orjson
from flask import Flask, Response, request

from authz.plugin import Plugin, PluginConfig
from authz.protocol import (IMPLEMENTS, MAX_CALL_BYTES, REQUEST_PHASE, RESPONSE_PHASE,
                            answer)


def _json(payload: dict, status: int = 200) -> Response:
    # dockerd reads the body whatever the type; say JSON anyway.
    return Response(json.dumps(payload), status=status, mimetype="application/json")


_AUTHZ_PATHS = {"/AuthZPlugin.AuthZReq": REQUEST_PHASE, "/AuthZPlugin.AuthZRes": RESPONSE_PHASE}


def encode_answer(payload: dict) -> bytes:
    """The answer's JSON (orjson; the standard library for what orjson refuses, such as a
    lone surrogate in a message quoting the request)."""
    try:
        return orjson.dumps(payload)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(payload).encode()


def answer_call(plugin: Plugin, phase: str, raw: bytes) -> bytes:
    """dockerd's call (its raw body) → the answer's JSON bytes."""
    return encode_answer(plugin.handle(phase, raw))


def plugin_calls(plugin: Plugin) -> dict:
    """The two per-call paths, each as a function of the raw body to the answer's JSON: what
    pyauthz's worker (authz.worker) answers without WSGI, for POSTs to these exact paths."""
    return {path: partial(answer_call, plugin, phase) for path, phase in _AUTHZ_PATHS.items()}


class AuthzRoutes:
    """The two calls dockerd makes for every API call, answered straight from WSGI: the
    plugin reads the raw body and answers JSON, and needs nothing of Flask's request and
    response objects. Every other path and method goes to the Flask app (which answers an
    unknown one with a deny)."""

    def __init__(self, plugin: Plugin, flask_wsgi):
        self.plugin = plugin
        self.flask_wsgi = flask_wsgi

    def __call__(self, environ, start_response):
        phase = _AUTHZ_PATHS.get(environ.get("PATH_INFO", ""))
        if phase is None or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_wsgi(environ, start_response)
        body = answer_call(self.plugin, phase, _read_body(environ))
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def _read_body(environ) -> bytes:
    """The request body as gunicorn gives it (a length, or chunked: read to the end), but
    never more than one byte past MAX_CALL_BYTES (such a call is refused: protocol.py)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    return stream.read(min(length, MAX_CALL_BYTES + 1) if length >= 0 else MAX_CALL_BYTES + 1)


def create_app(config: PluginConfig, bundle=None) -> Flask:
    """The plugin's app, deciding with ``bundle`` (a ``reload.Bundle`` the serving master
    loaded and validated), or with the policy directory loaded here."""
    plugin = Plugin.build(config, bundle)
    app = Flask("pyauthz")
    app.config["MAX_CONTENT_LENGTH"] = MAX_CALL_BYTES  # larger: 413, answered as a deny
    app.config["PYAUTHZ_PLUGIN"] = plugin
    app.config["PYAUTHZ_REVISION"] = plugin.policy.revision
    app.config["PYAUTHZ_WARNINGS"] = plugin.warnings()

    @app.post("/Plugin.Activate")
    def activate() -> Response:
        # dockerd (re)started: what it removed at its start (auto-remove containers) was
        # not an API call; nothing remembered of it counts (authz/moby/recall.py).
        plugin.recall.forget_all()
        return _json(IMPLEMENTS)

    # dockerd's per-call routes bypass Flask (the routes below stay for the test client's
    # sake and for any WSGI server that calls app.full_dispatch_request directly).
    app.wsgi_app = AuthzRoutes(plugin, app.wsgi_app)
    # ... and pyauthz's own worker answers them without building a WSGI request at all.
    app.plugin_calls = plugin_calls(plugin)

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
