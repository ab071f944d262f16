"""The ``pyauthz`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from authz.serve import DEFAULT_SOCKET, ServeOptions, SocketInUse, serve


def default_policy_dir() -> Path:
    """The shipped ``policies/`` beside the package (source checkout or editable install),
    else ``/etc/pyauthz/policies`` (the Docker image copies it there)."""
    here = Path(__file__).resolve().parent.parent / "policies"
    if (here / "rules.yaml").is_file():
        return here
    return Path("/etc/pyauthz/policies")


@click.group()
def main() -> None:
    """pyauthz: a Docker Engine authorization plugin."""


@main.command("serve")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              help="Unix socket to listen on; dockerd finds /run/docker/plugins/NAME.sock by NAME.")
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Policy directory (default: the shipped policies/).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=32, show_default=True, type=click.IntRange(1, 256),
              help="Threads per worker.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the decision log here (JSON lines) instead of stdout.")
@click.option("--docker-host", default="unix:///var/run/docker.sock", show_default=True,
              help="dockerd's API socket: read to resolve local images for signature checks, "
                   "to judge containers, execs, plugins and volumes on their stored state, and "
                   "for dockerd's own roots ('' turns these reads off).")
def serve_command(socket_path, policy_dir, workers, threads, log_file, docker_host) -> None:
    """Serve the plugin on a unix socket until SIGTERM (SIGHUP reloads the policy)."""
    from authz.app import AppConfig, create_app

    config = AppConfig(
        policy_dir=policy_dir or default_policy_dir(),
        log_file=log_file,
        docker_host=docker_host,
        threads=threads,
        socket_path=socket_path,
    )
    # Load once in the master so that a broken policy stops the start with a clear
    # message, instead of workers that crash in a loop.
    try:
        startup = create_app(config)
    except Exception as exc:  # noqa: BLE001 - any load failure stops the start
        raise click.ClickException(f"cannot load the policy from {config.policy_dir}: {exc}")
    for warning in startup.config["PYAUTHZ_WARNINGS"]:
        click.echo(f"pyauthz: warning: {warning}", err=True)
    click.echo(f"pyauthz: serving on {socket_path} with policy {config.policy_dir} "
               f"(revision {startup.config['PYAUTHZ_REVISION']})", err=True)
    try:
        serve(lambda: create_app(config),
              ServeOptions(socket_path=socket_path, workers=workers, threads=threads))
    except SocketInUse as exc:
        raise click.ClickException(str(exc))


@main.command("check-policy")
@click.argument("policy_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
                required=False)
def check_policy_command(policy_dir) -> None:
    """Load a policy directory as `serve` would, and report problems (exit 1) or a summary.

    Run it before sending SIGHUP to a running plugin: a policy that does not load stops the
    plugin's workers, and dockerd then fails every call until it is fixed."""
    from authz.app import AppConfig, _load_trust
    from authz.policy import Policy

    directory = policy_dir or default_policy_dir()
    try:
        policy = Policy.load(directory)
        trust = _load_trust(AppConfig(policy_dir=directory))  # serve's default docker host
    except Exception as exc:  # noqa: BLE001
        raise click.ClickException(str(exc))
    ruleset = policy.ruleset
    click.echo(f"{directory}: revision {policy.revision}")
    click.echo(f"  {len(ruleset.rules)} rules, {len(ruleset.exceptions)} exceptions, "
               f"{len(ruleset.roles)} roles")
    warnings = policy.warnings + (trust.startup_warnings() if trust is not None else [])
    for warning in warnings:
        click.echo(f"  warning: {warning}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
