"""Benchmark pyauthz against the floor of its own serving stack.

Starts, on unix sockets in a temp dir, the real plugin (``python -m authz serve``,
decision log to a file) and ``bench.allow_all`` (allows everything, same
``authz.serve`` and ``ServeOptions``), then drives each with N client processes, each
on one kept-alive connection, replaying the plugin calls of a recorded
``docker run`` / ``docker ps`` / denied ``docker run --privileged`` session
(``bench.workload``). Reports decisions/s and p50/p99 latency per server and
concurrency, and pyauthz / floor. From the repo root:

    python3 -m bench.run                             # 1 and 8 clients, 3 rounds of 5 s
    python3 -m bench.run --concurrency 1,8 --duration 5 --rounds 3 --servers floor,pyauthz@2x32
    python3 -m bench.run --servers floor,pyauthz,pyauthz-devnull --json out.json

Rounds alternate the order of the servers, and figures are medians over rounds, so
that drift in the machine's load hits both sides alike. Exit status: 0, or 1 if a
server failed or a decision was not the expected one.

The parts: ``bench.servers`` (the processes), ``bench.measure`` (one measurement),
``bench.report`` (what is printed and written); this module reads the options and
runs the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from bench import client as bench_client
from bench import report, workload
from bench.measure import measure
from bench.paths import REPO_ROOT, SHIPPED_POLICY_DIR
from bench.servers import SERVER_KINDS, Server, ServerSpec

from authz.serve import ServeOptions

# Issue 11's floor: a naive Flask plugin that allows everything, under gunicorn's gthread
# with 2 workers x 32 threads.
FLOOR_CONFIG = (2, 32)


def core_available() -> str | None:
    """None if `python -m authz serve` can run, else why not."""
    if not os.path.exists(os.path.join(REPO_ROOT, "authz", "app.py")):
        return "authz/app.py does not exist yet"
    done = subprocess.run([sys.executable, "-m", "authz", "serve", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"python -m authz serve --help failed: {done.stderr.strip()[-300:]}"
    return None


def option_parser() -> argparse.ArgumentParser:
    """The command line's options, as `--help` shows them."""
    p = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    p.add_argument("--concurrency", default="1,8", help="client counts (default 1,8)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurements per server and concurrency; medians reported (3)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"gunicorn workers, every server (default: the floor {FLOOR_CONFIG[0]}, "
                        f"as issue 11's naive Flask plugin; the others {ServeOptions.workers}, "
                        "as pyauthz serve ships)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"threads per worker, every server (default: the floor "
                        f"{FLOOR_CONFIG[1]}; the others {ServeOptions.threads})")
    p.add_argument("--servers", default="floor,pyauthz",
                   help="comma list of KIND or KIND@WORKERSxTHREADS, KIND one of floor, "
                        "floor-pw, pyauthz, pyauthz-devnull (default floor,pyauthz). Ratios compare "
                        "each server with the floor of the same WxT, else with the first "
                        "server; repeating one (floor,floor) measures the noise")
    p.add_argument("--policy", default=SHIPPED_POLICY_DIR,
                   help="policy dir for pyauthz (default: the repo's policies/); "
                        "copied to the temp dir")
    p.add_argument("--trust", action="store_true",
                   help="keep the policy's trust.yaml (image signatures; needs a dockerd "
                        "at --docker-host and keys that accept local/busybox:1). Default: "
                        "left out of the copy, so the figures are decoding + policy + log")
    p.add_argument("--docker-host", default=None,
                   help="dockerd for pyauthz's own reads (pyauthz serve --docker-host). "
                        "Default: bench.dockerd_standin, one per pyauthz server, which "
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
    return p


def parse_server_spec(p: argparse.ArgumentParser, spec: str, workers: int | None,
                      threads: int | None) -> ServerSpec:
    """One KIND or KIND@WORKERSxTHREADS of --servers (exits on a bad one)."""
    kind, _, config = spec.partition("@")
    if kind not in SERVER_KINDS:
        p.error(f"unknown server {kind!r}; choose from {', '.join(SERVER_KINDS)}")
    default = FLOOR_CONFIG if kind == "floor" else (ServeOptions.workers, ServeOptions.threads)
    workers = default[0] if workers is None else workers
    threads = default[1] if threads is None else threads
    if config:
        try:
            workers, threads = (int(x) for x in config.lower().split("x"))
        except ValueError:
            p.error(f"{spec!r}: write KIND@WORKERSxTHREADS, e.g. pyauthz@2x4")
    if not (1 <= workers <= 16 and 1 <= threads <= 64):
        p.error(f"{spec!r}: workers within 1..16, threads within 1..64")
    return ServerSpec(spec, kind, workers, threads)


def parse_args(argv=None) -> argparse.Namespace:
    """The options, checked; --concurrency as ints, --servers as ServerSpecs."""
    p = option_parser()
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.servers = [parse_server_spec(p, spec, args.workers, args.threads)
                    for spec in (s.strip() for s in args.servers.split(",") if s.strip())]
    if not all(1 <= c <= 64 for c in args.concurrency):
        p.error("concurrency must be within 1..64")
    if not (0 < args.duration <= 120 and 0 <= args.warmup <= 60 and 1 <= args.rounds <= 20):
        p.error("duration within (0, 120] s, warmup within [0, 60] s, rounds within 1..20")
    return args


def copy_policy(source: str, tmp: str, keep_trust: bool) -> str:
    """Copy the policy dir into tmp, without trust.yaml unless keep_trust: the copy's path."""
    copy = os.path.join(tmp, "policies")
    shutil.copytree(source, copy)
    trust_file = os.path.join(copy, "trust.yaml")
    if not keep_trust and os.path.exists(trust_file):
        os.unlink(trust_file)
    return copy


def make_servers(args, tmp: str, policy_dir: str) -> list[Server]:
    """One Server per --servers entry; a repeated entry is named 'SPEC(2)', 'SPEC(3)'..."""
    servers = []
    for i, (spec, kind, workers, threads) in enumerate(args.servers):
        seen = [s.spec for s in args.servers[:i]].count(spec)
        name = spec if seen == 0 else f"{spec}({seen + 1})"
        servers.append(Server(name, kind, workers, threads, tmp, policy_dir, args.docker_host))
    return servers


def run_info(args, argv, servers: list[Server], calls_per_session: int) -> dict:
    """The machine and the run's settings, as the header prints them and --json writes them."""
    info = report.machine()
    info.update({
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "workers": args.workers, "threads": args.threads, "client": args.client,
        "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
        "calls_per_session": calls_per_session,
        "policy": report.repo_relative(args.policy),
        "image_trust": bool(args.trust),
        "servers": {s.name: " ".join(report.repo_relative(a) for a in s.argv[1:]) for s in servers},
    })
    return info


def measure_batch(order: list[Server], c: int, rnd: int, attempt: int, sessions, args) -> list[dict]:
    """Measure each server once at concurrency c, printing each; RuntimeError if one died."""
    batch = []
    for s in order:
        r = measure(s, c, sessions, args.client, args.warmup, args.duration)
        r["round"] = rnd
        r["attempt"] = attempt
        batch.append(r)
        report.print_measurement(r, rnd, c, s)
        if s.proc.poll() is not None:
            raise RuntimeError(f"{s.name} died:\n{s.stderr_tail()}")
    return batch


def measure_rounds(servers: list[Server], sessions, args, runs: list[dict]) -> bool:
    """Every round and concurrency, appended to runs as measured: True if a decision went wrong."""
    failed = False
    for rnd in range(1, args.rounds + 1):
        order = servers if rnd % 2 == 1 else servers[::-1]
        for c in args.concurrency:
            for attempt in range(1, args.retries + 2):
                batch = measure_batch(order, c, rnd, attempt, sessions, args)
                failed = failed or any(r["mismatches"] or r["errors"] for r in batch)
                busiest = max(r["foreign_cpu_pct"] for r in batch)
                if busiest <= args.max_foreign or attempt == args.retries + 1:
                    break
                print(f"  (other processes used {busiest:.0f}% of a CPU: "
                      f"measuring round {rnd} c={c} again)", flush=True)
            runs.extend(batch)
    return failed


def report_runs(runs: list[dict], names: list[str], servers: list[Server], info: dict, args) -> None:
    """The tables of medians, ratios and per-call p50s, the noise note, and --json."""
    done_names = [n for n in names if any(r["server"] == n for r in runs)]
    summary = report.summarize(runs, done_names, sorted({r["concurrency"] for r in runs}))
    comparisons = report.compare(runs, done_names, {s.name: s for s in servers})
    report.print_table(summary, comparisons)
    per_call = report.per_call_table(runs, done_names)
    report.print_noise_note(runs)
    if args.json:
        report.write_json({"machine": info, "summary": summary, "comparisons": comparisons,
                           "per_call": per_call, "runs": runs}, args.json)


def main(argv=None) -> int:
    """Run the benchmark; the exit status."""
    args = parse_args(argv)
    if any(spec.kind.startswith("pyauthz") for spec in args.servers):
        why = core_available()
        if why:
            print(f"run.py: cannot benchmark pyauthz: {why}. "
                  f"Try --servers floor,floor.", file=sys.stderr)
            return 2
    sessions = workload.build(args.sessions)
    tmp = tempfile.mkdtemp(prefix="pyauthz-bench-")
    servers = make_servers(args, tmp, copy_policy(args.policy, tmp, args.trust))
    info = run_info(args, argv, servers, len(sessions[0]))
    report.print_header(info, servers, args)
    runs: list[dict] = []
    try:
        for s in servers:
            s.start()
        failed = measure_rounds(servers, sessions, args, runs)
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
    report_runs(runs, [s.name for s in servers], servers, info, args)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
