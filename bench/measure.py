"""One measurement: N client processes against one server for a fixed window, and its figures.

The clients (``bench.client.run_client``) start together, warm up, then record the latency
of every call that starts and ends inside the window. The server's CPU (master and workers),
its dockerd stand-in's and the whole machine's are read from /proc at the window's edges.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import time
from array import array

from bench import client as bench_client
from bench.servers import Server
from bench.workload import Call

CLK_TCK = os.sysconf("SC_CLK_TCK")
FORK_AND_CONNECT_NS = int(0.3e9)  # clients' time to fork and connect before the warm-up


def percentile(sorted_values, p: float) -> float:
    """The p-th percentile (0..1, nearest rank) of sorted values; NaN when there are none."""
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(p * len(sorted_values)) - 1)
    return sorted_values[k]


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


def sleep_until(t_ns: int) -> None:
    """Sleep until the monotonic clock reads t_ns."""
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def per_unit(total: float, count: int) -> float:
    """total / count in millionths (µs per decision), NaN when count is 0."""
    return total / count * 1e6 if count else float("nan")


class CpuSnapshot:
    """CPU seconds used so far by the server's processes, its stand-in and the machine."""

    def __init__(self, pids: list[int], standin: int | None):
        self.server = {pid: proc_cpu(pid) for pid in pids}
        self.standin = proc_cpu(standin) if standin else 0.0
        self.machine = system_busy()


def start_clients(server: Server, concurrency: int, sessions: list[list[Call]], client_kind: str,
                  measure_from: int, measure_to: int) -> list[tuple]:
    """Fork the client processes; each reports on its pipe: [(process, pipe), ...]."""
    ctx = multiprocessing.get_context("fork")
    clients = []
    for i in range(concurrency):
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=bench_client.run_client,
                        args=(i, client_kind, server.socket, sessions, server.checks_denies,
                              measure_from, measure_to, child_end), daemon=True)
        p.start()
        child_end.close()
        clients.append((p, parent_end))
    return clients


def no_result(index: int) -> dict:
    """What a client that sent nothing back counts as: one error."""
    return {"index": index, "ok": 0, "mismatch": 0, "errors": 1,
            "first_problem": "client gave no result", "reconnects": 0,
            "cpu_s": 0.0, "lat": b"", "kinds": b""}


def collect_results(clients: list[tuple]) -> list[dict]:
    """Each client's report (or no_result), and every client process ended."""
    results = []
    for i, (p, pipe) in enumerate(clients):
        if pipe.poll(bench_client.TIMEOUT + 5):
            results.append(pipe.recv())
        else:
            results.append(no_result(i))
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    return results


def pooled_latencies(results: list[dict]) -> tuple[array, array]:
    """All clients' latencies (ns) and, beside each, which call of the session it was."""
    lat, kinds = array("q"), array("H")
    for r in results:
        lat.frombytes(r.pop("lat"))
        kinds.frombytes(r.pop("kinds"))
    return lat, kinds


def per_call_latencies(lat: array, kinds: array, session: list[Call]) -> list[dict]:
    """p50 and p99 (ms) of each call of the session, in session order."""
    by_kind: dict[int, list[float]] = {}
    for v, k in zip(lat, kinds, strict=True):
        by_kind.setdefault(k, []).append(v / 1e6)
    per_call = []
    for k, values in sorted(by_kind.items()):
        values.sort()
        call = session[k]
        per_call.append({"call": f"{call.command} {call.phase} {call.what}",
                         "n": len(values), "p50_ms": round(percentile(values, 0.5), 3),
                         "p99_ms": round(percentile(values, 0.99), 3)})
    return per_call


def measure(server: Server, concurrency: int, sessions: list[list[Call]], client_kind: str,
            warmup_s: float, duration_s: float) -> dict:
    """Drive server with concurrency clients for warmup_s, then duration_s measured: the figures."""
    start = time.monotonic_ns() + FORK_AND_CONNECT_NS
    measure_from = start + int(warmup_s * 1e9)
    measure_to = measure_from + int(duration_s * 1e9)
    clients = start_clients(server, concurrency, sessions, client_kind, measure_from, measure_to)
    pids = [server.proc.pid, *server.worker_pids()]
    standin = server.standin.pid if server.standin else None
    sleep_until(measure_from)
    before = CpuSnapshot(pids, standin)
    sleep_until(measure_to)
    after = CpuSnapshot(pids, standin)
    results = collect_results(clients)
    lat, kinds = pooled_latencies(results)
    return figures(server, concurrency, duration_s, results, lat,
                   per_call_latencies(lat, kinds, sessions[0]), pids, before, after)


def figures(server: Server, concurrency: int, duration_s: float, results: list[dict], lat: array,
            per_call: list[dict], pids: list[int], before: CpuSnapshot, after: CpuSnapshot) -> dict:
    """The record of one measurement, as printed and written to --json."""
    lat_ms = sorted(v / 1e6 for v in lat)
    ok = sum(r["ok"] for r in results)
    server_cpu = sum(after.server[pid] - before.server[pid] for pid in pids)
    client_cpu = sum(r["cpu_s"] for r in results)
    standin_cpu = after.standin - before.standin
    worker_cpu = [round(after.server[pid] - before.server[pid], 2) for pid in pids[1:]]
    return {
        "server": server.name,
        "concurrency": concurrency,
        "decisions": ok,
        "decisions_per_s": ok / duration_s,
        "p50_ms": percentile(lat_ms, 0.50),
        "p99_ms": percentile(lat_ms, 0.99),
        "mean_ms": statistics.fmean(lat_ms) if lat_ms else float("nan"),
        "max_ms": lat_ms[-1] if lat_ms else float("nan"),
        "server_cpu_us_per_decision": per_unit(server_cpu, ok),
        "client_cpu_us_per_decision": per_unit(client_cpu, ok),
        "worker_cpu_s": worker_cpu,
        # dockerd's share of pyauthz's own reads (the stand-in), apart from the plugin's.
        "standin_cpu_us_per_decision": per_unit(standin_cpu, ok),
        # CPU used by anything else on the machine during the window (other
        # sessions, the benchmark's parent): high values make figures noisy.
        "foreign_cpu_pct": max(0.0, (after.machine - before.machine) - server_cpu - client_cpu
                               - standin_cpu) / duration_s * 100,
        "per_client_decisions": [r["ok"] for r in results],
        "per_call": per_call,
        "mismatches": sum(r["mismatch"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "reconnects": sum(r["reconnects"] for r in results),
        "problems": [r["first_problem"] for r in results if r["first_problem"]],
    }
