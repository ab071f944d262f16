"""pyauthz policy replay against real traffic: a session of docker CLI commands is run
through a real dockerd and plugin under policy A (the shipped policy, with the test image's
trust exception) while the decision log records it; the log is replayed against candidate B
(A without rule host-pid, with two new rules and an exception scoped to container.create);
then the same session is run live under B. For every API call of every command, the
decision replay predicted (allow, deny rule ids, audit matches, exceptions applied) is the
one the live plugin made under B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from authz.policytools.replay_decide import Outcome
from tests.support.dockerd import BUSYBOX_IMAGE, REPO_ROOT

NEW_RULES = """
  - id: no-sys-chroot
    effect: deny
    match:
      fact: capability
      values: [SYS_CHROOT]
    message: replay test rule (lifted at create by chroot-at-create)
    fix: drop --cap-add SYS_CHROOT
  - id: no-mknod-at-start
    effect: deny
    match:
      fact: capability
      values: [MKNOD]
      endpoints: [container.start]
    message: replay test rule, judged on the stored configuration at start
    fix: drop --cap-add MKNOD
"""

NEW_EXCEPTION = """
  - id: chroot-at-create
    rules: [no-sys-chroot]
    subjects: ["*"]
    endpoints: [container.create]
    reason: lifted at create, and so at the container's start and exec (as at create)
"""


def candidate_of(policy_a: Path, target: Path) -> Path:
    """B: a copy of A with rule host-pid removed, two rules and one exception added."""
    import shutil

    shutil.copytree(policy_a, target)
    rules = target / "rules.yaml"
    text = rules.read_text()
    start, end = text.index("  - id: host-pid\n"), text.index("  - id: host-ipc\n")
    text = text[:start] + text[end:]
    assert "\nexceptions:\n" in text
    text = text.replace("\nexceptions:\n", NEW_RULES + "\nexceptions:\n" + NEW_EXCEPTION, 1)
    rules.write_text(text)
    return target


def session(env) -> list[tuple[str, int, int]]:
    """The same docker CLI session on ``env``: (command, log offset before, after) each."""
    windows: list[tuple[str, int, int]] = []
    ids: dict[str, str] = {}

    def docker(label: str, *args: str) -> str:
        mark = env.log_mark()
        result = env.docker(*args, check=False)
        windows.append((label, mark, env.log_mark()))
        return result.stdout.strip() if result.returncode == 0 else ""

    sleeper = [BUSYBOX_IMAGE, "/bin/busybox", "sleep", "300"]
    ids["plain"] = docker("create plain", "create", "--network", "none", *sleeper)
    docker("start plain", "start", ids["plain"])
    docker("exec plain", "exec", ids["plain"], "/bin/busybox", "true")
    docker("create --pid host", "create", "--network", "none", "--pid", "host", *sleeper)
    ids["chroot"] = docker("create chroot", "create", "--network", "none", "--cap-add",
                           "SYS_CHROOT", *sleeper)
    docker("start chroot", "start", ids["chroot"])
    docker("exec chroot", "exec", ids["chroot"], "/bin/busybox", "true")
    ids["mknod"] = docker("create mknod", "create", "--network", "none", "--cap-add", "MKNOD",
                          *sleeper)
    docker("start mknod", "start", ids["mknod"])
    docker("create --privileged", "create", "--network", "none", "--privileged", *sleeper)
    docker("create --cap-add SYS_ADMIN", "create", "--network", "none", "--cap-add",
           "SYS_ADMIN", *sleeper)
    docker("start by name", "start", "--", ids["plain"][:12] or "nothing")
    docker("ps", "ps", "-a")
    assert all(ids.values()), f"a create that both policies allow failed: {ids}"
    return windows


_INSPECTS = {"container.inspect", "image.inspect", "system.info", "volume.inspect",
             "network.inspect", "exec.inspect", "plugin.inspect"}


def own_read(doc: dict) -> bool:
    """The plugin's own read of dockerd (unversioned paths; the docker CLI versions its own).
    Whether it is made depends on what the plugin still remembers (authz/moby/recall.py)."""
    return (doc["method"] == "GET" and doc["endpoint"] in _INSPECTS
            and not doc["uri"].startswith("/v"))


def request_lines(env, start: int, end: int) -> list[dict]:
    """The request-phase decisions on the session's own calls (not the plugin's reads)."""
    with open(env.decision_log, "rb") as log:
        log.seek(start)
        data = log.read(end - start)
    docs = [json.loads(line) for line in data.splitlines() if line.strip()]
    return [d for d in docs if d.get("event") == "decision" and d.get("phase") == "request"
            and not own_read(d)]


def as_compared(outcome: dict) -> tuple:
    return (outcome["allow"], tuple(outcome["rules"]), tuple(sorted(outcome["audits"])),
            tuple(sorted(map(tuple, outcome["exemptions"]))))


def test_replay_predicts_the_live_decisions_of_the_candidate(start_docker_env, policy_dir_copy,
                                                              tmp_path):
    policy_a = policy_dir_copy
    policy_b = candidate_of(policy_a, tmp_path / "candidate")

    env_a = start_docker_env(policy_dir=policy_a)
    windows_a = session(env_a)
    env_b = start_docker_env(policy_dir=policy_b)
    windows_b = session(env_b)

    replayed = subprocess.run(
        [sys.executable, "-m", "authz", "policy", "replay", "--policy", str(policy_b),
         "--json", "--decisions", "--examples", "5", str(env_a.decision_log)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 1, replayed.stderr   # something is newly denied
    report = json.loads(replayed.stdout)
    summary = report["summary"]
    assert summary["not_replayed"] == {"other_vocabulary": {}, "incomplete": 0, "unreadable": 0}
    assert summary["newly_denied"] >= 1 and summary["newly_allowed"] >= 1
    predicted = {d["decision_id"]: d for d in report["decisions"]}

    compared = 0
    for (label, a_start, a_end), (label_b, b_start, b_end) in zip(windows_a, windows_b,
                                                                  strict=True):
        assert label == label_b
        recorded_a = request_lines(env_a, a_start, a_end)
        live_b = request_lines(env_b, b_start, b_end)
        calls_a = [(d["method"], d["endpoint"]) for d in recorded_a]
        calls_b = [(d["method"], d["endpoint"]) for d in live_b]
        assert calls_a == calls_b, f"{label}: the two runs made different calls"
        for a, b in zip(recorded_a, live_b, strict=True):
            guess = predicted[a["decision_id"]]["predicted"]
            assert as_compared(guess) == as_compared(Outcome.recorded(b).as_json()), \
                f"{label}: {a['method']} {a['endpoint']}: replay {guess}, live {b}"
            compared += 1
    assert compared >= 20

    def live_b_outcome(label: str, endpoint: str) -> dict:
        window = next(w for w in windows_b if w[0] == label)
        return next(d for d in request_lines(env_b, window[1], window[2])
                    if d["endpoint"] == endpoint)

    # What the session shows, under B (and so replay predicted):
    pid = live_b_outcome("create --pid host", "container.create")
    assert pid["allow"]                                                      # newly allowed
    mknod = live_b_outcome("start mknod", "container.start")
    assert [v["rule"] for v in mknod["violations"]] == ["no-mknod-at-start"]  # newly denied
    chroot = live_b_outcome("exec chroot", "exec.create")
    assert chroot["allow"] and {"exception": "chroot-at-create", "rule": "no-sys-chroot",
                                "found": chroot["exemptions"][0]["found"]} in chroot["exemptions"]
    groups = {(g["rule"], g["endpoint"]) for g in report["changes"]["newly_denied"]}
    assert ("no-mknod-at-start", "container.start") in groups
    groups = {(g["rule"], g["endpoint"]) for g in report["changes"]["newly_allowed"]}
    assert ("host-pid", "container.create") in groups

    text = subprocess.run(
        [sys.executable, "-m", "authz", "policy", "replay", "--policy", str(policy_b),
         str(env_a.decision_log)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert text.returncode == 1 and "Newly denied" in text.stdout, text.stdout + text.stderr
    same = subprocess.run(
        [sys.executable, "-m", "authz", "policy", "replay", "--policy", str(policy_a),
         str(env_a.decision_log)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert same.returncode == 0, same.stdout + same.stderr
