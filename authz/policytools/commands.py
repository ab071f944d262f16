"""``pyauthz policy``: the command group; each subcommand lives in its own module and is
added here."""

from __future__ import annotations

import click


@click.group("policy")
def policy() -> None:
    """Lint, test, explain and replay policy (rules.yaml, trust.yaml)."""


def _add(module: str, name: str) -> None:
    import importlib

    policy.add_command(getattr(importlib.import_module(f"authz.policytools.{module}"), name))


_add("casetest", "test_command")
_add("explain", "explain_command")
_add("init", "init_command")
_add("lint", "lint_command")
_add("replay", "replay_command")
