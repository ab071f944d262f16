"""Reloads never stop the plugin (issue 7, part 1): a policy that does not load keeps the
running revision deciding, through a real dockerd under load; `pyauthz reload` validates,
signals, waits and reports."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from tests.support.dockerd import REPO_ROOT


def pyauthz_reload(env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "authz", "reload", "--socket", env.plugin_socket,
                           "--timeout", "20"], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT)


class Load:
    """`docker ps` and `docker run --rm` in a loop in the background; counts failures."""

    def __init__(self, env):
        self.env, self.calls, self.failures, self.stop = env, 0, [], False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop:
            if self.calls % 4 == 3:
                r = self.env.docker("run", "--rm", "--network", "none", "local/busybox:1",
                                    "/bin/busybox", "true", check=False, timeout=60)
            else:
                r = self.env.docker("ps", "-q", check=False, timeout=60)
            self.calls += 1
            if r.returncode != 0:
                self.failures.append(r.stderr.strip())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=90)


def revisions(env, since: int) -> set[str]:
    return {d["policy_revision"] for d in env.decisions(since) if d.get("phase") == "request"}


def test_broken_policy_reload_keeps_the_running_revision(start_docker_env, policy_dir_copy):
    env = start_docker_env(policy_dir=policy_dir_copy)
    rules = policy_dir_copy / "rules.yaml"
    good = rules.read_text()
    old = next(iter(revisions(env, 0)))
    rules.write_text(good.replace("  - id: privileged\n    effect: deny\n",
                                  "  - id: privileged\n    effect: deny\n    effect: audit\n", 1))
    with Load(env) as load:
        r = pyauthz_reload(env)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "duplicate key 'effect'" in r.stderr and "keeps deciding" in r.stderr
        # A plain SIGHUP (what systemd's ExecReload would send) must not stop it either.
        mark = env.log_mark()
        env.reload_policy(settle=3.0)
        time.sleep(1.0)
    assert load.calls > 5 and load.failures == [], load.failures
    assert env.plugin_proc.poll() is None
    assert revisions(env, mark) == {old}
    assert "reload failed" in env.plugin_output.read_text()
    # --privileged is still denied (the audit-only typo never took effect).
    r = env.docker("create", "--privileged", "local/busybox:1", "/bin/busybox", "true", check=False)
    assert r.returncode != 0 and "[privileged]" in r.stderr


def test_valid_reload_switches_revision_without_a_failed_call(start_docker_env, policy_dir_copy):
    env = start_docker_env(policy_dir=policy_dir_copy)
    rules = policy_dir_copy / "rules.yaml"
    old = next(iter(revisions(env, 0)))
    rules.write_text(rules.read_text().replace("outside: [/srv]", "outside: [/srv, /opt/data]"))
    with Load(env) as load:
        r = pyauthz_reload(env)
        assert r.returncode == 0, r.stdout + r.stderr
        new = r.stdout.split("revision ")[1].split()[0]
        assert new != old
        time.sleep(2.0)  # old workers finish; new ones decide
        mark = env.log_mark()
        env.docker("ps")
    assert load.failures == [], load.failures
    assert revisions(env, mark) == {new}
