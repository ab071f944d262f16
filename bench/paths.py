"""Where the benchmark's files are, and how it starts its own modules as processes."""

from __future__ import annotations

import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
SHIPPED_POLICY_DIR = os.path.join(REPO_ROOT, "policies")
SESSION_FILE = os.path.join(BENCH_DIR, "session.json")


def module_argv(module: str, *args: str) -> list[str]:
    """The command line of ``python -m MODULE ARGS`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env() -> dict[str, str]:
    """This process's environment with the repo root first on PYTHONPATH (for bench and authz)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
