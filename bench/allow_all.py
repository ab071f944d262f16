"""A plugin that allows everything: the floor of our serving stack.

It does what any trivial authz plugin must do: answer the handshake, read and parse
the JSON dockerd sends, answer ``{"Allow": true}``. It is served through
``authz.serve.serve`` with the same ``ServeOptions`` as pyauthz, except the worker class:
gunicorn's gthread by default, as a naive Flask plugin is served (issue 11's floor), or
``--worker-class authz.worker.PluginWorker``, pyauthz's (the ``floor-pw`` server: the floor
of pyauthz's own stack).

    python3 -m bench.allow_all --socket /tmp/x/floor.sock --workers 2 --threads 32

``--record FILE`` appends every call (path, headers, body) as JSON lines: that is how
``bench.capture`` recorded the workload from a real dockerd. Recording is off in
benchmarks.
"""

from __future__ import annotations

import argparse
import base64
import json
import threading

from flask import Flask, Response, request

ALLOW = json.dumps({"Allow": True, "Msg": "", "Err": ""})
IMPLEMENTS = json.dumps({"Implements": ["authz"]})


def create_app(record: str | None = None) -> Flask:
    """The floor's Flask app; with record, every call is appended to that file as a JSON line."""
    app = Flask("allow_all")
    lock = threading.Lock()

    def _record() -> None:
        """Append this call's path, headers and body (base64) to the record file, if any."""
        if record is None:
            return
        entry = {
            "path": request.path,
            "headers": dict(request.headers),
            "body_b64": base64.b64encode(request.get_data()).decode(),
        }
        with lock, open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    @app.post("/Plugin.Activate")
    def activate() -> Response:
        """The handshake: this plugin implements authz."""
        _record()
        return Response(IMPLEMENTS, mimetype="application/json")

    @app.post("/AuthZPlugin.AuthZReq")
    @app.post("/AuthZPlugin.AuthZRes")
    def authz() -> Response:
        """Parse the body as a plugin must, and allow."""
        # dockerd sets no Content-Type: parse the body ourselves, as a real plugin must.
        json.loads(request.get_data() or b"{}")
        _record()
        return Response(ALLOW, mimetype="application/json")

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the floor through authz.serve, like pyauthz."""
    from authz.serve import ServeOptions, serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--workers", type=int, default=ServeOptions.workers)
    parser.add_argument("--threads", type=int, default=ServeOptions.threads)
    parser.add_argument("--worker-class", default="gthread", help="gunicorn's worker class")
    parser.add_argument("--record", default=None, help="append every call to this file")
    args = parser.parse_args(argv)
    serve(lambda: create_app(args.record),
          ServeOptions(socket_path=args.socket, workers=args.workers, threads=args.threads,
                       worker_class=args.worker_class))


if __name__ == "__main__":
    main()
