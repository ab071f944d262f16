"""The benchmark's workload: the plugin calls of a recorded docker session.

``session.json`` (written by ``capture.py`` from a real dockerd 20.10 driven by the
docker 28.2.2 CLI, with pyauthz in the chain) holds, for each command, the exact bodies
dockerd posted to the plugin. One benchmark *session* replays, in dockerd's order, the
calls caused by the docker CLI:

- ``docker run --rm local/busybox:1 true``: 10 calls (5 AuthZReq, 5 AuthZRes:
  ping, create, attach, wait, start);
- ``docker ps``: 4 calls (ping and containers/json, both phases);
- ``docker run --rm --privileged --network host -v /:/host local/busybox:1 true``:
  3 calls, up to the create's AuthZReq, which a policy must deny (dockerd answers 403
  and the CLI stops there).

17 calls, 8 of them AuthZRes, 1 expected deny. Each replayed session gets a fresh
container ID (in URIs and in the create's response body), as real sessions do, so
that nothing keyed on the request text can cache across sessions.

The calls caused by pyauthz's own reads of dockerd (``origin: plugin`` in the file: on a
start, an AuthZReq and an AuthZRes for ``GET /containers/ID/json``) are not replayed by
the clients: ``dockerd_standin.py`` makes them, nested inside the start's decision, as
dockerd does. A plugin that reads nothing (the floor) gets 17 calls a session, pyauthz 19.
"""

from __future__ import annotations

import base64
import json
import random
import re
from dataclasses import dataclass

from bench.paths import SESSION_FILE

SESSION_COMMANDS = ("run", "ps", "run_privileged")
_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Call:
    """One plugin call of a session, ready to write on the socket."""

    command: str        # run / ps / run_privileged
    phase: str          # AuthZReq / AuthZRes
    what: str           # "POST /v1.41/containers/create", for reports
    payload: bytes      # the whole HTTP request, as dockerd writes it
    deny: bool          # a policy must deny this call


def go_json(obj) -> str:
    """Encode like Go's json.Encoder: compact, HTML-escaped, newline-terminated."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                      ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, esc)
    return text + "\n"


def http_request(phase: str, headers: dict, body: bytes) -> bytes:
    """dockerd's POST /AuthZPlugin.PHASE with the recorded headers and this body."""
    lines = [f"POST /AuthZPlugin.{phase} HTTP/1.1"]
    for name, value in headers.items():  # recorded in dockerd's order
        if name.lower() == "content-length":
            value = str(len(body))
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def load_session(path: str = SESSION_FILE) -> dict:
    """session.json, checked: re-encoding each recorded body gives it back byte for byte."""
    with open(path, encoding="utf-8") as fh:
        session = json.load(fh)
    for command in session["commands"]:
        for call in command["calls"]:
            if go_json(json.loads(call["raw"])) != call["raw"]:
                raise ValueError(f"{path}: re-encoding a recorded body changes it")
    return session


def _with_id(raw: str, new_id: str) -> str:
    """The body with its container ID (in the URI and the response body) replaced by new_id."""
    body = json.loads(raw)
    old = _ID.search(body.get("RequestUri", "")) or _ID.search(
        base64.b64decode(body.get("ResponseBody") or "").decode("latin-1"))
    if not old:
        return raw
    old_id = old.group(0)
    body["RequestUri"] = body["RequestUri"].replace(old_id, new_id)
    if body.get("ResponseBody"):
        text = base64.b64decode(body["ResponseBody"]).replace(old_id.encode(), new_id.encode())
        body["ResponseBody"] = base64.b64encode(text).decode()
    return go_json(body)


def session_calls(session: dict, container_ids: tuple[str, str]) -> list[Call]:
    """One session's calls; container_ids: for the allowed run and the denied one."""
    calls: list[Call] = []
    ids = {"run": container_ids[0], "run_privileged": container_ids[1]}
    for command in session["commands"]:
        label = command["label"]
        if label not in SESSION_COMMANDS:
            continue
        for call in command["calls"]:
            if call.get("origin", "client") != "client":
                continue
            raw = call["raw"]
            if label in ids:
                raw = _with_id(raw, ids[label])
            body = json.loads(raw)
            what = f"{body.get('RequestMethod', '')} {_ID.sub('ID', body.get('RequestUri', ''))}"
            is_create = body.get("RequestUri", "").split("?")[0].endswith("/containers/create")
            deny = label == "run_privileged" and call["phase"] == "AuthZReq" and is_create
            calls.append(Call(label, call["phase"], what,
                              http_request(call["phase"], call["plugin_headers"], raw.encode()),
                              deny))
            if deny:
                break  # dockerd answers 403; the CLI makes no further call
    return calls


def build(n_sessions: int = 32, seed: int = 1, path: str = SESSION_FILE) -> list[list[Call]]:
    """n_sessions sessions, each with its own container IDs (deterministic)."""
    session = load_session(path)
    rng = random.Random(seed)
    out = []
    for _ in range(n_sessions):
        ids = (f"{rng.getrandbits(256):064x}", f"{rng.getrandbits(256):064x}")
        out.append(session_calls(session, ids))
    return out


def fixtures(session: dict) -> dict[str, tuple[bytes, str, dict]]:
    """dockerd's recorded answers to inspects: {"container"|"image": (body, id, headers)}.

    The container's comes from the AuthZRes of pyauthz's own read during the start, the
    image's from ``docker image inspect``.
    """
    out = {}
    for command in session["commands"]:
        for call in command["calls"]:
            body = call["body"]
            if call["phase"] != "AuthZRes" or body.get("ResponseStatusCode") != 200 \
                    or not body.get("ResponseBody"):
                continue
            path = re.sub(r"^/v[0-9.]+", "", body.get("RequestUri", "").split("?")[0])
            kind = "container" if re.fullmatch(r"/containers/[^/]+/json", path) and \
                path != "/containers/json" else "image" if \
                re.fullmatch(r"/images/.+/json", path) else None
            if kind and kind not in out:
                answer = base64.b64decode(body["ResponseBody"])
                doc = json.loads(answer)
                out[kind] = (answer, doc.get("Id", ""), body.get("ResponseHeaders") or {})
    return out


def describe(calls: list[Call]) -> str:
    """One line per call: command, phase, method and URI, and the expected denies."""
    rows = [f"  {c.command:<15} {c.phase:<9} {c.what}{'   -> deny' if c.deny else ''}"
            for c in calls]
    return "\n".join(rows)


if __name__ == "__main__":
    sessions = build(2)
    print(describe(sessions[0]))
    print(f"{len(sessions[0])} calls per session, "
          f"{sum(len(c.payload) for c in sessions[0])} bytes")
