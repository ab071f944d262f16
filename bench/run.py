"""Benchmark pyauthz against the floor of its own serving stack.

Starts, on unix sockets in a temp dir, the real plugin (``python -m authz serve``,
decision log to a file) and ``bench/allow_all.py`` (allows everything, same
``authz.serve`` and ``ServeOptions``), then drives each with N client processes, each
on one kept-alive connection, replaying the plugin calls of a recorded
``docker run`` / ``docker ps`` / denied ``docker run --privileged`` session
(``workload.py``). Reports decisions/s and p50/p99 latency per server and
concurrency, and pyauthz / floor.

    python bench/run.py                              # 1 and 8 clients, 3 rounds of 5 s
    python bench/run.py --concurrency 1,8 --duration 5 --rounds 3 --workers 2 --threads 16
    python bench/run.py --servers floor,pyauthz,pyauthz-devnull --json out.json

Rounds alternate the order of the servers, and figures are medians over rounds, so
that drift in the machine's load hits both sides alike. Exit status: 0, or 1 if a
server failed or a decision was not the expected one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import client as bench_client  # noqa: E402
import workload  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
AIM = 0.25  # decoding + policy + logging: at most a quarter above the floor

SERVER_KINDS = {
    # name: (description, checks denies)
    "floor": ("allow_all.py: parses the JSON, allows everything", False),
    "pyauthz": ("python -m authz serve, decision log to a file", True),
    "pyauthz-devnull": ("python -m authz serve, decision log to /dev/null", True),
}


# ---------------------------------------------------------------- servers

class Server:
    def __init__(self, name: str, kind: str, workers: int, threads: int, tmp: str, args):
        self.name = name
        self.kind = kind
        self.config = f"{workers}x{threads}"
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        self.socket = os.path.join(tmp, f"{safe}.sock")
        self.log = os.path.join(tmp, f"{safe}.stderr")
        self.decision_log = None
        common = ["--socket", self.socket, "--workers", str(workers), "--threads", str(threads)]
        self.standin_argv = None
        if kind == "floor":
            self.argv = [sys.executable, os.path.join(HERE, "allow_all.py"), *common]
        else:
            if kind == "pyauthz":
                self.decision_log = os.path.join(tmp, f"{safe}-decisions.log")
            else:
                self.decision_log = "/dev/null"
            self.argv = [sys.executable, "-m", "authz", "serve", *common,
                         "--policy", args.policy_copy, "--log-file", self.decision_log]
            self.standin_argv = None
            if args.docker_host:
                self.argv += ["--docker-host", args.docker_host]
            else:
                # pyauthz's own reads of dockerd go to a stand-in that passes them through
                # the plugin (nested AuthZReq/AuthZRes) and answers as dockerd did.
                standin_socket = os.path.join(tmp, f"{safe}-dockerd.sock")
                self.argv += ["--docker-host", f"unix://{standin_socket}"]
                self.standin_argv = [sys.executable, os.path.join(HERE, "dockerd_standin.py"),
                                     "--socket", standin_socket, "--plugin", self.socket]
        self.checks_denies = SERVER_KINDS[kind][1]
        self.proc: subprocess.Popen | None = None
        self.standin: subprocess.Popen | None = None
        self.workers = workers

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=err, stderr=err,
                                         start_new_session=True)
            if self.standin_argv:
                self.standin = subprocess.Popen(self.standin_argv, cwd=REPO, env=env,
                                                stdout=err, stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        # Up when every worker is forked and a handshake succeeds on a fresh connection.
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.stderr_tail())
            if self.standin is not None and self.standin.poll() is not None:
                raise RuntimeError(f"{self.name}'s dockerd stand-in exited:\n"
                                   + self.stderr_tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n"
                                   + self.stderr_tail())
            if len(self.worker_pids()) >= self.workers and self._handshake():
                break
            time.sleep(0.1)

    def _handshake(self) -> bool:
        try:
            conn = bench_client.RawConn(self.socket)
        except OSError:
            return False
        try:
            payload = (b"POST /Plugin.Activate HTTP/1.1\r\nHost: \r\n"
                       b"User-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\n"
                       b"Accept: application/vnd.docker.plugins.v1.2+json\r\n\r\n")
            call = workload.Call("activate", "Activate", "", payload, False)
            status, body = conn.roundtrip(call)
            return status == 200 and json.loads(body) == {"Implements": ["authz"]}
        except (OSError, ValueError, ConnectionError):
            return False
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []

    def stderr_tail(self, n: int = 30) -> str:
        try:
            with open(self.log, errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.standin is not None and self.standin.poll() is None:
            self.standin.terminate()
            self.standin.wait(10)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn master: graceful stop of workers
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only our processes
            self.proc.wait()


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy() -> float:
    """CPU seconds spent busy by the whole machine (all cores)."""
    with open("/proc/stat") as fh:
        parts = fh.readline().split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


# ---------------------------------------------------------------- one measurement

def percentile(sorted_values, p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(p * len(sorted_values)) - 1)
    return sorted_values[k]


def measure(server: Server, concurrency: int, sessions, args) -> dict:
    ctx = multiprocessing.get_context("fork")
    start = time.monotonic_ns() + int(0.3e9)  # time to fork and connect
    measure_from = start + int(args.warmup * 1e9)
    measure_to = measure_from + int(args.duration * 1e9)
    procs, pipes = [], []
    for i in range(concurrency):
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=bench_client.run_client,
                        args=(i, args.client, server.socket, sessions, server.checks_denies,
                              measure_from, measure_to, child_end), daemon=True)
        p.start()
        child_end.close()
        procs.append(p)
        pipes.append(parent_end)

    def sleep_until(t_ns: int) -> None:
        delay = (t_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)

    pids = [server.proc.pid, *server.worker_pids()]
    standin = server.standin.pid if server.standin else None
    sleep_until(measure_from)
    cpu0 = {pid: proc_cpu(pid) for pid in pids}
    standin0 = proc_cpu(standin) if standin else 0.0
    busy0 = system_busy()
    sleep_until(measure_to)
    cpu1 = {pid: proc_cpu(pid) for pid in pids}
    standin1 = proc_cpu(standin) if standin else 0.0
    busy1 = system_busy()
    standin_cpu = standin1 - standin0

    results = []
    for p, pipe in zip(procs, pipes):
        if pipe.poll(bench_client.TIMEOUT + 5):
            results.append(pipe.recv())
        else:
            results.append({"index": len(results), "ok": 0, "mismatch": 0, "errors": 1,
                            "first_problem": "client gave no result", "reconnects": 0,
                            "cpu_s": 0.0, "lat": b"", "kinds": b""})
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()

    lat, kinds = array("q"), array("H")
    for r in results:
        lat.frombytes(r.pop("lat"))
        kinds.frombytes(r.pop("kinds"))
    lat_ms = sorted(v / 1e6 for v in lat)
    by_kind: dict[int, list[float]] = {}
    for v, k in zip(lat, kinds):
        by_kind.setdefault(k, []).append(v / 1e6)
    per_call = []
    for k, values in sorted(by_kind.items()):
        values.sort()
        call = sessions[0][k]
        per_call.append({"call": f"{call.command} {call.phase} {call.what}",
                         "n": len(values), "p50_ms": round(percentile(values, 0.5), 3),
                         "p99_ms": round(percentile(values, 0.99), 3)})
    ok = sum(r["ok"] for r in results)
    server_cpu = sum(cpu1[pid] - cpu0[pid] for pid in pids)
    client_cpu = sum(r["cpu_s"] for r in results)
    worker_cpu = [round(cpu1[pid] - cpu0[pid], 2) for pid in pids[1:]]
    return {
        "server": server.name,
        "concurrency": concurrency,
        "decisions": ok,
        "decisions_per_s": ok / args.duration,
        "p50_ms": percentile(lat_ms, 0.50),
        "p99_ms": percentile(lat_ms, 0.99),
        "mean_ms": statistics.fmean(lat_ms) if lat_ms else float("nan"),
        "max_ms": lat_ms[-1] if lat_ms else float("nan"),
        "server_cpu_us_per_decision": server_cpu / ok * 1e6 if ok else float("nan"),
        "client_cpu_us_per_decision": client_cpu / ok * 1e6 if ok else float("nan"),
        "worker_cpu_s": worker_cpu,
        # CPU used by anything else on the machine during the window (other
        # sessions, the benchmark's parent): high values make figures noisy.
        # dockerd's share of pyauthz's own reads (the stand-in), apart from the plugin's.
        "standin_cpu_us_per_decision": standin_cpu / ok * 1e6 if ok else float("nan"),
        "foreign_cpu_pct": max(0.0, (busy1 - busy0) - server_cpu - client_cpu - standin_cpu)
                           / args.duration * 100,
        "per_client_decisions": [r["ok"] for r in results],
        "per_call": per_call,
        "mismatches": sum(r["mismatch"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "reconnects": sum(r["reconnects"] for r in results),
        "problems": [r["first_problem"] for r in results if r["first_problem"]],
    }


# ---------------------------------------------------------------- report

METRICS = ("decisions_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_decision")


def summarize(runs: list[dict], names: list[str], concurrencies: list[int]) -> dict:
    summary = {}
    for c in concurrencies:
        per = {}
        for name in names:
            mine = [r for r in runs if r["server"] == name and r["concurrency"] == c]
            per[name] = {m: statistics.median(r[m] for r in mine) for m in METRICS}
            per[name]["rounds"] = {m: [round(r[m], 3) for r in mine] for m in METRICS}
            per[name]["foreign_cpu_pct_max"] = max(r["foreign_cpu_pct"] for r in mine)
        summary[str(c)] = per
    return summary


def ratios(runs: list[dict], base: str, other: str) -> dict:
    """other / base, computed per round (the two were measured back to back, under the
    same background load), then the median over rounds."""
    out = {}
    for c in sorted({r["concurrency"] for r in runs}):
        pairs = []
        for rnd in sorted({r["round"] for r in runs}):
            b = [r for r in runs if (r["server"], r["concurrency"], r["round"]) == (base, c, rnd)]
            o = [r for r in runs if (r["server"], r["concurrency"], r["round"]) == (other, c, rnd)]
            if b and o and b[0]["decisions"] and o[0]["decisions"]:
                pairs.append((b[0], o[0]))
        if not pairs:
            continue
        per_round = {
            "throughput_ratio": [o["decisions_per_s"] / b["decisions_per_s"] for b, o in pairs],
            "p50_ratio": [o["p50_ms"] / b["p50_ms"] for b, o in pairs],
            "p99_ratio": [o["p99_ms"] / b["p99_ms"] for b, o in pairs],
            "cpu_ratio": [o["server_cpu_us_per_decision"] / b["server_cpu_us_per_decision"]
                          for b, o in pairs],
        }
        r = {k: statistics.median(v) for k, v in per_round.items()}
        r["per_round"] = {k: [round(x, 3) for x in v] for k, v in per_round.items()}
        # "Cost above the floor": time per decision (1 / throughput) and p99, relative.
        r["throughput_cost"] = 1 / r["throughput_ratio"] - 1
        r["p99_cost"] = r["p99_ratio"] - 1
        r["within_aim"] = r["throughput_cost"] <= AIM and r["p99_cost"] <= AIM
        out[str(c)] = r
    return out


def print_table(summary: dict, comparisons: dict, out=sys.stdout) -> None:
    w = max([len(n) for per in summary.values() for n in per] + [len(k) for k in comparisons])
    print("\n(figures: medians over rounds; ratios: medians of the per-round ratios)", file=out)
    for c, per in summary.items():
        print(f"\n{c} concurrent client{'s' if c != '1' else ''}", file=out)
        print(f"  {'server':<{w}} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'srv CPU µs/call':>16}", file=out)
        for name, m in per.items():
            print(f"  {name:<{w}} {m['decisions_per_s']:>12.0f} {m['p50_ms']:>8.3f} "
                  f"{m['p99_ms']:>8.3f} {m['server_cpu_us_per_decision']:>16.0f}", file=out)
        for label, comp in comparisons.items():
            r = comp.get(c)
            if not r:
                continue
            verdict = ("within aim" if r["within_aim"] else "OVER AIM") if r.get("aim_applies") \
                else "(no aim: not pyauthz against a floor)"
            print(f"  {label:<{w}} {r['throughput_ratio']:>11.2f}x {r['p50_ratio']:>7.2f}x "
                  f"{r['p99_ratio']:>7.2f}x {r['cpu_ratio']:>15.2f}x", file=out)
            print(f"  {'':<{w}}   cost above base: time/decision {r['throughput_cost']:+.0%}, "
                  f"p99 {r['p99_cost']:+.0%} (aim <= +{AIM:.0%}): {verdict}", file=out)


def per_call_table(runs: list[dict], names: list[str], out=sys.stdout) -> dict:
    """p50 latency of each call of the session, at the lowest concurrency (median over
    rounds): which calls make the tail."""
    c = min(r["concurrency"] for r in runs)
    table: dict[str, dict[str, float]] = {}
    for name in names:
        rows: dict[str, list[float]] = {}
        for r in runs:
            if r["server"] == name and r["concurrency"] == c:
                for row in r.get("per_call", []):
                    rows.setdefault(row["call"], []).append(row["p50_ms"])
        for call, values in rows.items():
            table.setdefault(call, {})[name] = statistics.median(values)
    if not table:
        return {}
    w = max(len(k) for k in table)
    print(f"\np50 ms of each call, {c} client{'s' if c != 1 else ''}", file=out)
    print(f"  {'call':<{w}} " + " ".join(f"{n:>16}" for n in names), file=out)
    for call, per in table.items():
        print(f"  {call:<{w}} " + " ".join(f"{per.get(n, float('nan')):>16.3f}" for n in names),
              file=out)
    return {"concurrency": c, "p50_ms": table}


def machine() -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": os.getloadavg(),
        "commit": _git_commit(),
    }


def _git_commit() -> str | None:
    """The checkout measured; '-dirty' when the work tree has changes (not counting bench/)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty.strip() else "")) or None


# ---------------------------------------------------------------- main

def core_available() -> str | None:
    """None if `python -m authz serve` can run, else why not."""
    if not os.path.exists(os.path.join(REPO, "authz", "app.py")):
        return "authz/app.py does not exist yet"
    done = subprocess.run([sys.executable, "-m", "authz", "serve", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"python -m authz serve --help failed: {done.stderr.strip()[-300:]}"
    return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    p.add_argument("--concurrency", default="1,8", help="client counts (default 1,8)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurements per server and concurrency; medians reported (3)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers, both servers (2)")
    p.add_argument("--threads", type=int, default=16, help="threads per worker, both (16)")
    p.add_argument("--servers", default="floor,pyauthz",
                   help="comma list of KIND or KIND@WORKERSxTHREADS, KIND one of floor, "
                        "pyauthz, pyauthz-devnull (default floor,pyauthz). Ratios compare "
                        "each server with the floor of the same WxT, else with the first "
                        "server; repeating one (floor,floor) measures the noise")
    p.add_argument("--policy", default=os.path.join(REPO, "policies"),
                   help="policy dir for pyauthz (default: the repo's policies/); "
                        "copied to the temp dir")
    p.add_argument("--trust", action="store_true",
                   help="keep the policy's trust.yaml (image signatures; needs a dockerd "
                        "at --docker-host and keys that accept local/busybox:1). Default: "
                        "left out of the copy, so the figures are decoding + policy + log")
    p.add_argument("--docker-host", default=None,
                   help="dockerd for pyauthz's own reads (pyauthz serve --docker-host). "
                        "Default: bench/dockerd_standin.py, one per pyauthz server, which "
                        "passes each read through that plugin as dockerd does")
    p.add_argument("--client", choices=sorted(bench_client.CLIENTS), default="raw",
                   help="HTTP client in the load processes (default raw)")
    p.add_argument("--sessions", type=int, default=32,
                   help="distinct sessions (container IDs) replayed in a cycle (32)")
    p.add_argument("--max-foreign", type=float, default=25.0, metavar="PCT",
                   help="measure a round again when other processes used more than PCT%% "
                        "of a CPU during it (25)")
    p.add_argument("--retries", type=int, default=2,
                   help="at most this many repeats of a busy round (2)")
    p.add_argument("--json", metavar="FILE", help="also write all figures as JSON ('-': stdout)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    specs = []
    for spec in (s.strip() for s in args.servers.split(",") if s.strip()):
        kind, _, config = spec.partition("@")
        if kind not in SERVER_KINDS:
            p.error(f"unknown server {kind!r}; choose from {', '.join(SERVER_KINDS)}")
        workers, threads = args.workers, args.threads
        if config:
            try:
                workers, threads = (int(x) for x in config.lower().split("x"))
            except ValueError:
                p.error(f"{spec!r}: write KIND@WORKERSxTHREADS, e.g. pyauthz@2x4")
        if not (1 <= workers <= 16 and 1 <= threads <= 64):
            p.error(f"{spec!r}: workers within 1..16, threads within 1..64")
        specs.append((spec, kind, workers, threads))
    args.servers = specs
    if not all(1 <= c <= 64 for c in args.concurrency):
        p.error("concurrency must be within 1..64")
    if not (0 < args.duration <= 120 and 0 <= args.warmup <= 60 and 1 <= args.rounds <= 20):
        p.error("duration within (0, 120] s, warmup within [0, 60] s, rounds within 1..20")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if any(kind.startswith("pyauthz") for _, kind, _, _ in args.servers):
        why = core_available()
        if why:
            print(f"run.py: cannot benchmark pyauthz: {why}. "
                  f"Try --servers floor,floor.", file=sys.stderr)
            return 2
    sessions = workload.build(args.sessions)
    calls_per_session = len(sessions[0])
    tmp = tempfile.mkdtemp(prefix="pyauthz-bench-")
    args.policy_copy = os.path.join(tmp, "policies")
    shutil.copytree(args.policy, args.policy_copy)
    trust_file = os.path.join(args.policy_copy, "trust.yaml")
    if not args.trust and os.path.exists(trust_file):
        os.unlink(trust_file)
    names, servers = [], []
    for i, (spec, kind, workers, threads) in enumerate(args.servers):
        seen = [s[0] for s in args.servers[:i]].count(spec)
        name = spec if seen == 0 else f"{spec}({seen + 1})"
        names.append(name)
        servers.append(Server(name, kind, workers, threads, tmp, args))
    info = machine()
    info.update({
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "workers": args.workers, "threads": args.threads, "client": args.client,
        "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
        "calls_per_session": calls_per_session,
        "policy": os.path.relpath(args.policy, REPO) if args.policy.startswith(REPO) else args.policy,
        "image_trust": bool(args.trust),
        "servers": {s.name: " ".join(os.path.relpath(a, REPO) if a.startswith(REPO) else a
                                     for a in s.argv[1:]) for s in servers},
    })
    print(f"pyauthz bench: {info['date']}, commit {info['commit']}, {info['nproc']} CPUs, "
          f"Python {info['python']}; "
          f"gunicorn gthread, workers x threads: "
          f"{', '.join(f'{x.name} {x.config}' for x in servers)}; {args.client} client; "
          f"{args.rounds} rounds x ({args.warmup:g} s warm-up + {args.duration:g} s)", flush=True)
    print(f"workload: {calls_per_session} calls per session (docker run, docker ps, "
          f"denied docker run --privileged), {args.sessions} distinct sessions", flush=True)
    if any(s.kind.startswith("pyauthz") for s in servers):
        print(f"pyauthz policy: {info['policy']}, image trust "
              f"{'on' if args.trust else 'off (trust.yaml left out of the copy)'}", flush=True)
    runs = []
    failed = False
    try:
        for s in servers:
            s.start()
        for rnd in range(args.rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for c in args.concurrency:
                for attempt in range(args.retries + 1):
                    batch = []
                    for s in order:
                        r = measure(s, c, sessions, args)
                        r["round"] = rnd + 1
                        r["attempt"] = attempt + 1
                        batch.append(r)
                        flag = ""
                        if r["mismatches"] or r["errors"]:
                            failed = True
                            flag = f"  !! {r['mismatches']} wrong, {r['errors']} errors: " \
                                   f"{r['problems'][:1]}"
                        print(f"  round {rnd + 1} c={c:<2} {s.name:<18} "
                              f"{r['decisions_per_s']:7.0f}/s p50 {r['p50_ms']:.3f} "
                              f"p99 {r['p99_ms']:.3f} ms  srv "
                              f"{r['server_cpu_us_per_decision']:.0f} µs/call  client "
                              f"{r['client_cpu_us_per_decision']:.0f} µs/call  "
                              + (f"dockerd stand-in {r['standin_cpu_us_per_decision']:.0f} "
                                 f"µs/call  " if s.standin else "") +
                              f"workers {r['worker_cpu_s']}  "
                              f"foreign {r['foreign_cpu_pct']:.0f}%{flag}", flush=True)
                        if s.proc.poll() is not None:
                            raise RuntimeError(f"{s.name} died:\n{s.stderr_tail()}")
                    busiest = max(r["foreign_cpu_pct"] for r in batch)
                    if busiest <= args.max_foreign or attempt == args.retries:
                        break
                    print(f"  (other processes used {busiest:.0f}% of a CPU: "
                          f"measuring round {rnd + 1} c={c} again)", flush=True)
                runs.extend(batch)
    except RuntimeError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        failed = True
    finally:
        for s in servers:
            s.stop()
        if args.keep_tmp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not runs:
        return 1
    done_names = [n for n in names if any(r["server"] == n for r in runs)]
    summary = summarize(runs, done_names, sorted({r["concurrency"] for r in runs}))
    by_name = {s.name: s for s in servers}
    comparisons = {}
    for n in done_names[1:]:
        same = [m for m in done_names if m != n and by_name[m].kind == "floor"
                and by_name[m].config == by_name[n].config]
        base = same[0] if same and by_name[n].kind != "floor" else done_names[0]
        comparisons[f"{n} / {base}"] = ratios(runs, base, n)
        for r in comparisons[f"{n} / {base}"].values():
            r["aim_applies"] = by_name[n].kind != "floor" and by_name[base].kind == "floor"
    print_table(summary, comparisons)
    per_call = per_call_table(runs, done_names)
    noisy = max(r["foreign_cpu_pct"] for r in runs)
    if noisy > 10:
        print(f"\nnote: up to {noisy:.0f}% of a CPU was used by other processes during a "
              f"measurement; figures are noisy.")
    if args.json:
        doc = {"machine": info, "summary": summary, "comparisons": comparisons,
               "per_call": per_call, "runs": runs}
        if args.json == "-":
            json.dump(doc, sys.stdout, indent=1)
            print()
        else:
            with open(args.json, "w") as fh:
                json.dump(doc, fh, indent=1)
                fh.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
