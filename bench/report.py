"""What a benchmark run prints and writes: the machine, each measurement, medians, ratios, --json.

Figures are medians over rounds; a ratio between two servers is computed per round (the two
were measured back to back, under the same background load), then its median taken.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from bench.paths import REPO_ROOT
from bench.servers import Server

AIM = 0.25  # decoding + policy + logging: at most a quarter above the floor
METRICS = ("decisions_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_decision")
RATIO_OF = {  # ratio name: the metric it divides
    "throughput_ratio": "decisions_per_s",
    "p50_ratio": "p50_ms",
    "p99_ratio": "p99_ms",
    "cpu_ratio": "server_cpu_us_per_decision",
}


# ---------------------------------------------------------------- the run's context

def machine() -> dict:
    """The date, machine, Python and checkout of this run."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": os.getloadavg(),
        "commit": git_commit(),
    }


def git_commit() -> str | None:
    """The checkout measured; '-dirty' when the work tree has changes (not counting bench/)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty.strip() else "")) or None


def repo_relative(path: str) -> str:
    """path relative to the repo root when it lies inside it (by prefix), else as given."""
    return os.path.relpath(path, REPO_ROOT) if path.startswith(REPO_ROOT) else path


def print_header(info: dict, servers: list[Server], args) -> None:
    """The lines that open a run: machine, servers, workload, policy."""
    print(f"pyauthz bench: {info['date']}, commit {info['commit']}, {info['nproc']} CPUs, "
          f"Python {info['python']}; "
          f"gunicorn workers x threads (worker class): "
          f"{', '.join(f'{x.name} {x.config} ({x.worker_class})' for x in servers)}; "
          f"{args.client} client; "
          f"{args.rounds} rounds x ({args.warmup:g} s warm-up + {args.duration:g} s)", flush=True)
    print(f"workload: {info['calls_per_session']} calls per session (docker run, docker ps, "
          f"denied docker run --privileged), {args.sessions} distinct sessions", flush=True)
    if any(s.kind.startswith("pyauthz") for s in servers):
        print(f"pyauthz policy: {info['policy']}, image trust "
              f"{'on' if args.trust else 'off (trust.yaml left out of the copy)'}", flush=True)


# ---------------------------------------------------------------- while measuring

def problem_flag(r: dict) -> str:
    """'  !! N wrong, M errors: [first problem]' when the measurement went wrong, else ''."""
    if not (r["mismatches"] or r["errors"]):
        return ""
    return f"  !! {r['mismatches']} wrong, {r['errors']} errors: {r['problems'][:1]}"


def print_measurement(r: dict, rnd: int, c: int, server: Server) -> None:
    """One line per measurement, as it is made."""
    print(f"  round {rnd} c={c:<2} {server.name:<18} "
          f"{r['decisions_per_s']:7.0f}/s p50 {r['p50_ms']:.3f} "
          f"p99 {r['p99_ms']:.3f} ms  srv "
          f"{r['server_cpu_us_per_decision']:.0f} µs/call  client "
          f"{r['client_cpu_us_per_decision']:.0f} µs/call  "
          + (f"dockerd stand-in {r['standin_cpu_us_per_decision']:.0f} "
             f"µs/call  " if server.standin else "") +
          f"workers {r['worker_cpu_s']}  "
          f"foreign {r['foreign_cpu_pct']:.0f}%{problem_flag(r)}", flush=True)


# ---------------------------------------------------------------- medians and ratios

def summarize(runs: list[dict], names: list[str], concurrencies: list[int]) -> dict:
    """Per concurrency and server: the median of each metric over rounds, and each round's."""
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


def paired_rounds(runs: list[dict], base: str, other: str, c: int) -> list[tuple[dict, dict]]:
    """(base, other) measurements of the same round at concurrency c, both with decisions."""
    pairs = []
    for rnd in sorted({r["round"] for r in runs}):
        b = [r for r in runs if (r["server"], r["concurrency"], r["round"]) == (base, c, rnd)]
        o = [r for r in runs if (r["server"], r["concurrency"], r["round"]) == (other, c, rnd)]
        if b and o and b[0]["decisions"] and o[0]["decisions"]:
            pairs.append((b[0], o[0]))
    return pairs


def ratio_of_pairs(pairs: list[tuple[dict, dict]]) -> dict:
    """The medians of the per-round ratios other / base, the rounds' own, and the cost above base."""
    per_round = {name: [o[metric] / b[metric] for b, o in pairs] for name, metric in RATIO_OF.items()}
    r = {k: statistics.median(v) for k, v in per_round.items()}
    r["per_round"] = {k: [round(x, 3) for x in v] for k, v in per_round.items()}
    # "Cost above the floor": time per decision (1 / throughput) and p99, relative.
    r["throughput_cost"] = 1 / r["throughput_ratio"] - 1
    r["p99_cost"] = r["p99_ratio"] - 1
    r["within_aim"] = r["throughput_cost"] <= AIM and r["p99_cost"] <= AIM
    return r


def ratios(runs: list[dict], base: str, other: str) -> dict:
    """other / base per concurrency (see ratio_of_pairs); concurrencies with no pair left out."""
    out = {}
    for c in sorted({r["concurrency"] for r in runs}):
        pairs = paired_rounds(runs, base, other, c)
        if pairs:
            out[str(c)] = ratio_of_pairs(pairs)
    return out


def compare(runs: list[dict], names: list[str], by_name: dict[str, Server]) -> dict:
    """Each server after the first against the floor of the same WxT, else against the first."""
    comparisons = {}
    for n in names[1:]:
        same = [m for m in names if m != n and by_name[m].kind == "floor"
                and by_name[m].config == by_name[n].config]
        base = same[0] if same and by_name[n].kind != "floor" else names[0]
        comparisons[f"{n} / {base}"] = ratios(runs, base, n)
        for r in comparisons[f"{n} / {base}"].values():
            r["aim_applies"] = by_name[n].kind != "floor" and by_name[base].kind == "floor"
    return comparisons


# ---------------------------------------------------------------- tables

def print_table(summary: dict, comparisons: dict, out=sys.stdout) -> None:
    """Per concurrency: each server's medians, then each comparison's ratios and verdict."""
    w = max([len(n) for per in summary.values() for n in per] + [len(k) for k in comparisons])
    print("\n(figures: medians over rounds; ratios: medians of the per-round ratios)", file=out)
    for c, per in summary.items():
        print(f"\n{c} concurrent client{'s' if c != '1' else ''}", file=out)
        print_server_rows(per, w, out)
        for label, comp in comparisons.items():
            if comp.get(c):
                print_comparison_rows(label, comp[c], w, out)


def print_server_rows(per: dict, w: int, out) -> None:
    """The column heads and one row of medians per server."""
    print(f"  {'server':<{w}} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'srv CPU µs/call':>16}", file=out)
    for name, m in per.items():
        print(f"  {name:<{w}} {m['decisions_per_s']:>12.0f} {m['p50_ms']:>8.3f} "
              f"{m['p99_ms']:>8.3f} {m['server_cpu_us_per_decision']:>16.0f}", file=out)


def print_comparison_rows(label: str, r: dict, w: int, out) -> None:
    """One comparison's ratios, then its cost above the base against the aim."""
    verdict = ("within aim" if r["within_aim"] else "OVER AIM") if r.get("aim_applies") \
        else "(no aim: not pyauthz against a floor)"
    print(f"  {label:<{w}} {r['throughput_ratio']:>11.2f}x {r['p50_ratio']:>7.2f}x "
          f"{r['p99_ratio']:>7.2f}x {r['cpu_ratio']:>15.2f}x", file=out)
    print(f"  {'':<{w}}   cost above base: time/decision {r['throughput_cost']:+.0%}, "
          f"p99 {r['p99_cost']:+.0%} (aim <= +{AIM:.0%}): {verdict}", file=out)


def per_call_medians(runs: list[dict], names: list[str], c: int) -> dict[str, dict[str, float]]:
    """{call: {server: median over rounds of that call's p50 ms}} at concurrency c."""
    table: dict[str, dict[str, float]] = {}
    for name in names:
        rows: dict[str, list[float]] = {}
        for r in runs:
            if r["server"] == name and r["concurrency"] == c:
                for row in r.get("per_call", []):
                    rows.setdefault(row["call"], []).append(row["p50_ms"])
        for call, values in rows.items():
            table.setdefault(call, {})[name] = statistics.median(values)
    return table


def per_call_table(runs: list[dict], names: list[str], out=sys.stdout) -> dict:
    """p50 latency of each call of the session, at the lowest concurrency (median over
    rounds): which calls make the tail."""
    c = min(r["concurrency"] for r in runs)
    table = per_call_medians(runs, names, c)
    if not table:
        return {}
    w = max(len(k) for k in table)
    print(f"\np50 ms of each call, {c} client{'s' if c != 1 else ''}", file=out)
    print(f"  {'call':<{w}} " + " ".join(f"{n:>16}" for n in names), file=out)
    for call, per in table.items():
        print(f"  {call:<{w}} " + " ".join(f"{per.get(n, float('nan')):>16.3f}" for n in names),
              file=out)
    return {"concurrency": c, "p50_ms": table}


def print_noise_note(runs: list[dict]) -> None:
    """A note when other processes used more than 10% of a CPU during a measurement."""
    noisy = max(r["foreign_cpu_pct"] for r in runs)
    if noisy > 10:
        print(f"\nnote: up to {noisy:.0f}% of a CPU was used by other processes during a "
              f"measurement; figures are noisy.")


def write_json(doc: dict, target: str) -> None:
    """doc as indented JSON to the file target, or to stdout when target is '-'."""
    if target == "-":
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        with open(target, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
