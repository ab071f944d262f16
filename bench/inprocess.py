"""Where the time goes: each workload call through the Flask apps in-process, no server.

Calls ``app.wsgi_app`` directly (no gunicorn, one thread) for every call of the session,
floor (allow_all) and pyauthz (decision log to a temp file, or /dev/null), and prints µs
per call by kind. pyauthz's own reads of dockerd go to ``bench.dockerd_standin`` without the
nested plugin calls (their cost is not in these figures; it is in bench.run's). Less
disturbed by a busy machine than bench.run, and it shows which calls are expensive. It is
not the benchmark: bench.run is. From the repo root:

    python3 -m bench.inprocess [--repeat 300] [--policy DIR] [--trust] [--devnull]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import allow_all, workload
from bench.paths import REPO_ROOT, SHIPPED_POLICY_DIR, child_env, module_argv


def environ_for(call: workload.Call) -> tuple[dict, bytes]:
    """The WSGI environ gunicorn would build for the call's HTTP request, and its body."""
    head, _, body = call.payload.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ")
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
           "SERVER_NAME": "localhost", "SERVER_PORT": "", "SERVER_PROTOCOL": "HTTP/1.1",
           "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
           "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
           "CONTENT_LENGTH": str(len(body))}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            key = "HTTP_" + key
        env[key] = value
    return env, body


def call_label(call: workload.Call) -> str:
    """'Req POST /v1.41/containers/create (deny)': the row a call is counted in."""
    return f"{call.phase[5:]} {call.what}" + (" (deny)" if call.deny else "")


def time_app(app, sessions, repeat: int) -> dict[str, list[float]]:
    """Wall-clock µs of each call of the sessions through app, repeat times, by label."""
    def start_response(status, headers, exc_info=None):
        return None

    per_kind: dict[str, list[float]] = {}
    prepared = [(call_label(c), *environ_for(c)) for s in sessions for c in s]
    for _ in range(repeat):
        for label, env, body in prepared:
            e = dict(env)
            e["wsgi.input"] = io.BytesIO(body)
            t0 = time.perf_counter_ns()
            out = app.wsgi_app(e, start_response)
            b"".join(out)
            if hasattr(out, "close"):
                out.close()
            dt = (time.perf_counter_ns() - t0) / 1000
            per_kind.setdefault(label, []).append(dt)
    return per_kind


def parse_args() -> argparse.Namespace:
    """--repeat, --policy, --trust, --devnull."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200, help="sessions timed per app (200)")
    ap.add_argument("--policy", default=SHIPPED_POLICY_DIR)
    ap.add_argument("--trust", action="store_true", help="keep trust.yaml (see bench.run)")
    ap.add_argument("--devnull", action="store_true", help="decision log to /dev/null")
    return ap.parse_args()


def start_standin(standin_socket: str) -> subprocess.Popen:
    """bench.dockerd_standin without a plugin to pass reads through, waited for (up to 5 s)."""
    standin = subprocess.Popen(module_argv("bench.dockerd_standin", "--socket", standin_socket),
                               cwd=REPO_ROOT, env=child_env())
    for _ in range(100):
        if os.path.exists(standin_socket):
            break
        time.sleep(0.05)
    return standin


def make_apps(args, tmp: str, standin_socket: str) -> dict:
    """The floor's Flask app and pyauthz's, on a copy of the policy (without trust.yaml unless --trust)."""
    from authz.app import create_app
    from authz.plugin import PluginConfig

    policy = os.path.join(tmp, "policies")
    shutil.copytree(args.policy, policy)
    if not args.trust and os.path.exists(os.path.join(policy, "trust.yaml")):
        os.unlink(os.path.join(policy, "trust.yaml"))
    log = Path("/dev/null") if args.devnull else Path(tmp) / "decisions.log"
    return {"floor": allow_all.create_app(),
            "pyauthz": create_app(PluginConfig(policy_dir=Path(policy), log_file=log,
                                            docker_host=f"unix://{standin_socket}"))}


def time_apps(apps: dict, sessions, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Each app warmed up on one session, then timed: {app: {label: [µs, ...]}}."""
    results = {}
    for name, app in apps.items():
        time_app(app, sessions[:1], 5)  # warm caches, imports
        results[name] = time_app(app, sessions, max(1, repeat // len(sessions)))
    return results


def print_table(results: dict, session: list[workload.Call], devnull: bool) -> None:
    """Median µs per call label for floor and pyauthz, and the mean over one session."""
    kinds = list(results["floor"])
    width = max(len(k) for k in kinds)
    # How often each kind occurs in one session (the ping occurs in each command).
    weight = {k: 0 for k in kinds}
    for call in session:
        weight[call_label(call)] += 1
    print(f"median µs per call, in-process (Python {sys.version.split()[0]}, "
          f"log {'/dev/null' if devnull else 'file'})")
    print(f"  {'call':<{width}} {'x':>2} {'floor':>8} {'pyauthz':>8} {'extra':>8}")
    total = {"floor": 0.0, "pyauthz": 0.0}
    for k in kinds:
        f = statistics.median(results["floor"][k])
        p = statistics.median(results["pyauthz"][k])
        total["floor"] += f * weight[k]
        total["pyauthz"] += p * weight[k]
        print(f"  {k:<{width}} {weight[k]:>2} {f:>8.0f} {p:>8.0f} {p - f:>+8.0f}")
    n = sum(weight.values())
    print(f"  {'mean per call of a session':<{width}} {n:>2} {total['floor'] / n:>8.0f} "
          f"{total['pyauthz'] / n:>8.0f} {(total['pyauthz'] - total['floor']) / n:>+8.0f}")


def main() -> None:
    """Time both apps in-process and print the table."""
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="pyauthz-inproc-")
    standin_socket = os.path.join(tmp, "dockerd.sock")
    standin = start_standin(standin_socket)
    try:
        apps = make_apps(args, tmp, standin_socket)
        sessions = workload.build(8)
        results = time_apps(apps, sessions, args.repeat)
    finally:
        standin.terminate()
        standin.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(results, sessions[0], args.devnull)


if __name__ == "__main__":
    main()
