"""The ``pyauthz`` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from authz import DISTRIBUTION, __version__
from authz.serve import DEFAULT_SOCKET, ServeOptions, SocketInUse, serve


# The host's policy: used by default whenever the directory exists (made with
# `pyauthz policy init /etc/pyauthz/policies`, or by a package).
SYSTEM_POLICY_DIR = Path("/etc/pyauthz/policies")


def shipped_policy_dir() -> Path:
    """The default policy shipped inside the package (``authz/policies``, package data; in
    a checkout a symlink to the repository's ``policies/``, returned resolved)."""
    return (Path(__file__).resolve().parent / "policies").resolve()


def default_policy_dir() -> Path:
    """``/etc/pyauthz/policies`` when it exists (even a broken one: serve then refuses to
    start rather than quietly deciding with another policy), else the shipped one."""
    # lexists: a dangling or looping symlink, or a file, there is the host's (broken) policy,
    # never a reason to decide with the shipped one.
    return SYSTEM_POLICY_DIR if _host_policy_entry() else shipped_policy_dir()


def _host_policy_entry() -> bool:
    """Whether anything is at /etc/pyauthz/policies, or could be: only a clean absence
    (/etc/pyauthz is missing, or a real directory without it) means the shipped policy;
    a broken /etc/pyauthz (a dangling link, a loop, a file) is the host's, broken."""
    try:
        os.lstat(SYSTEM_POLICY_DIR)
        return True
    except FileNotFoundError:
        parent = SYSTEM_POLICY_DIR.parent
        if not os.path.lexists(parent):
            return False
        return not os.path.isdir(parent)
    except OSError:
        return True


def policy_origin(given: Path | None, used: Path) -> str:
    """Which policy serve uses and why, for its start message."""
    if given is not None:
        return "given with --policy"
    if used == SYSTEM_POLICY_DIR:
        return f"the host's policy: {SYSTEM_POLICY_DIR} exists"
    return (f"the default policy shipped with pyauthz {__version__}: {SYSTEM_POLICY_DIR} does "
            f"not exist; `pyauthz policy init {SYSTEM_POLICY_DIR}` copies it there to edit")


@click.group()
@click.version_option(__version__, "--version", prog_name="pyauthz",
                      message=f"%(prog)s %(version)s ({DISTRIBUTION})")
def main() -> None:
    """pyauthz: a Docker Engine authorization plugin."""


def _add_policy_group() -> None:
    from authz.policytools.commands import policy

    main.add_command(policy)


_add_policy_group()


@main.command("serve")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              help="Unix socket to listen on; dockerd finds /run/docker/plugins/NAME.sock by NAME.")
@click.option("--policy", "policy_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Policy directory (default: /etc/pyauthz/policies when it "
                                 "exists, else the policy shipped in the package).")
@click.option("--workers", default=ServeOptions.workers, show_default=True,
              type=click.IntRange(1, 64), help="Worker processes (the default: twice the cores "
                                               "of the 2-vCPU host measured, bench/README.md).")
@click.option("--threads", default=ServeOptions.threads, show_default=True,
              type=click.IntRange(1, 256), help="Threads per worker.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the decision log here (JSON lines) instead of stdout.")
@click.option("--docker-host", default="unix:///var/run/docker.sock", show_default=True,
              help="dockerd's API socket: read to resolve local images for signature checks, "
                   "to judge containers, execs, plugins and volumes on their stored state, and "
                   "for dockerd's own roots ('' turns these reads off).")
@click.option("--metrics-listen", default=None, metavar="HOST:PORT",
              help="Serve Prometheus /metrics and /health on this loopback TCP address "
                   "(never the plugin socket; off by default).")
@click.option("--metrics-listen-any", is_flag=True,
              help="Let --metrics-listen take a non-loopback address (no authentication).")
def serve_command(socket_path, policy_dir, workers, threads, log_file, docker_host,
                  metrics_listen, metrics_listen_any) -> None:
    """Serve the plugin on a unix socket until SIGTERM (SIGHUP reloads the policy)."""
    from authz.metrics import parse_listen

    try:
        metrics_address = parse_listen(metrics_listen, metrics_listen_any) if metrics_listen else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-listen") from None
    from authz.app import create_app
    from authz.plugin import PluginConfig
    from authz.serve import InheritedSocketError, inherited_socket

    # Started by systemd (pyauthz.socket) or systemd-socket-activate: serve on the socket it
    # passed (LISTEN_FDS), at its path; an explicit --socket must name that path.
    explicit = (click.get_current_context().get_parameter_source("socket_path")
                is not click.core.ParameterSource.DEFAULT)
    try:
        inherited = inherited_socket(socket_path if explicit else None)
    except InheritedSocketError as exc:
        raise click.ClickException(str(exc)) from None
    if inherited is not None:
        socket_path = inherited.path
        click.echo(f"pyauthz: taking the listening socket {socket_path} from systemd", err=True)
    config = PluginConfig(
        policy_dir=policy_dir or default_policy_dir(),
        log_file=log_file,
        docker_host=docker_host,
        threads=threads,
        socket_path=socket_path,
    )
    from authz.reload import PolicyHolder, pid_path

    if log_file is not None:
        try:  # a log problem is reported as one, not as a policy that does not load
            log_file.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise click.ClickException(f"cannot open the decision log {log_file}: "
                                       f"{exc.strerror or exc}") from None

    # The master loads the policy; workers are forked with it (a broken policy stops the
    # start with a clear message; a broken reload keeps the running one).
    try:
        holder = PolicyHolder(config.policy_dir, docker_host, socket_path)
        startup = create_app(config, holder.bundle)
    except Exception as exc:  # noqa: BLE001 - any load failure stops the start
        raise click.ClickException(f"cannot load the policy from {config.policy_dir}: {exc}") from None
    for warning in startup.config["PYAUTHZ_WARNINGS"]:
        click.echo(f"pyauthz: warning: {warning}", err=True)
    click.echo(f"pyauthz {__version__}: serving on {socket_path} with policy {config.policy_dir} "
               f"({policy_origin(policy_dir, config.policy_dir)}; revision "
               f"{startup.config['PYAUTHZ_REVISION']})", err=True)
    try:
        serve(lambda: create_app(config, holder.bundle),
              ServeOptions(socket_path=socket_path, workers=workers, threads=threads,
                           on_reload=holder.reload, pidfile=str(pid_path(socket_path)),
                           inherited=inherited is not None,
                           metrics_listen=metrics_address))
    except (SocketInUse, InheritedSocketError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # the metrics listener's address is taken or cannot be bound
        if metrics_address is None:
            raise
        raise click.ClickException(f"cannot listen on {metrics_listen} for metrics: "
                                   f"{exc.strerror or exc}") from None


@main.command("reload")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              help="The socket of the running pyauthz to reload.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds to wait for the running plugin to report the reload.")
def reload_command(socket_path, timeout) -> None:
    """Validate the running plugin's policy directory, make it reload (SIGHUP), wait, and
    report the revision in force. Exit 0: the new revision decides; 1: the policy does not
    load (nothing was signalled) or the reload failed (the old revision keeps deciding);
    2: the plugin is not running or did not answer in time."""
    import time

    from authz.reload import load_bundle, read_state

    before = read_state(socket_path)
    if before is None:
        click.echo(f"pyauthz reload: no running pyauthz for {socket_path} (no state file)", err=True)
        sys.exit(2)
    directory = Path(before["policy_dir"])
    try:
        validated = load_bundle(directory, None)
        expected = validated.policy.revision
    except Exception as exc:  # noqa: BLE001 - report and leave the plugin alone
        click.echo(f"pyauthz reload: {directory} does not load, nothing reloaded; revision "
                   f"{before['revision'][:12]} keeps deciding:\n{exc}", err=True)
        sys.exit(1)
    try:
        _signal_master(before, socket_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        click.echo(f"pyauthz reload: cannot signal the plugin: {exc}", err=True)
        sys.exit(2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = read_state(socket_path)
        if after is not None and after.get("reloads", 0) > before.get("reloads", 0):
            if after.get("last_error"):
                click.echo(f"pyauthz reload: failed, revision {after['revision'][:12]} keeps "
                           f"deciding: {after['last_error']}", err=True)
                sys.exit(1)
            click.echo(f"pyauthz reload: revision {after['revision']} in force")
            if validated.trust is None:
                from authz.plugin import TRUST_OFF

                click.echo(f"pyauthz reload: warning: {TRUST_OFF}", err=True)
            sys.exit(0 if after["revision"] == expected else 1)
        time.sleep(0.1)
    click.echo(f"pyauthz reload: no answer from the plugin within {timeout:g}s", err=True)
    sys.exit(2)


def _signal_master(state: dict, socket_path: str) -> None:
    """SIGHUP to the master the state file names, and to no other process: the pid is held
    (a pidfd) before it is checked to be the very process that wrote the file (its start,
    not just its number: a pid is reused once its process exits), so it cannot be reused
    between the check and the signal."""
    import errno
    import os
    import signal

    from authz.reload import process_identity

    named = state.get("socket")
    if named is not None and named != os.path.abspath(socket_path):
        raise OSError(f"the state file for {socket_path} was written by the pyauthz serving "
                      f"{named} (two sockets with one name share /run/pyauthz/); nothing "
                      "signalled: give each socket its own file name")
    pid = int(state["pid"])
    stale = OSError(f"no pyauthz is running for {socket_path}: process {pid} of its state "
                    "file has exited (a stale state file)")
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        raise stale from None
    except OSError as exc:  # no pidfd (Linux before 5.3): check, then signal by pid
        if exc.errno != errno.ENOSYS:
            raise
        if state.get("started") is None or process_identity(pid) != state["started"]:
            raise stale from None
        os.kill(pid, signal.SIGHUP)
        return
    try:
        started = state.get("started")
        if started is not None:
            if process_identity(pid) != started:
                raise stale
        else:  # a state file written before pyauthz recorded its start: the name only
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"authz" not in f.read():  # "python -m authz serve", "gunicorn: master [pyauthz]"
                    raise OSError(f"process {pid} is not pyauthz (a stale state file?)")
        signal.pidfd_send_signal(handle, signal.SIGHUP)
    finally:
        os.close(handle)


@main.command("health")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              help="The socket of the running pyauthz to check.")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Serve GET /health on this localhost address instead of checking once.")
def health_command(socket_path, listen) -> None:
    """Check that the running plugin makes and logs decisions (exit 0), or not (exit 1): one
    real decision through its socket. With --listen, serve that check over HTTP."""
    from authz.health import check, serve_health

    if listen:
        host, _, port = listen.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
            raise click.ClickException("--listen takes a loopback HOST:PORT (127.0.0.1:9901)")
        serve_health(socket_path, host.strip("[]"), int(port))
        return
    health = check(socket_path)
    click.echo(("healthy: " if health.ok else "unhealthy: ") + health.detail,
               err=not health.ok)
    sys.exit(0 if health.ok else 1)


def _add_check_policy() -> None:
    """`pyauthz check-policy [DIR]`: the first name of `pyauthz policy lint`, kept as an alias
    (same options, output and exit status)."""
    from authz.policytools.lint import lint_command

    main.add_command(lint_command, "check-policy")


_add_check_policy()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
