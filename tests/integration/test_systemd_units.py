"""The systemd units (issue 10): packaging/systemd/pyauthz.{socket,service} pass
`systemd-analyze verify`, and the service's own command lines, started the way the socket
unit starts them (`systemd-socket-activate` holding /run/docker/plugins/NAME.sock), serve a
real dockerd: its first call starts pyauthz, which decides on the inherited socket (never
replaced), reloads (ExecReload, SIGHUP) and stops cleanly (SIGTERM)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.dockerd import (
    PLUGIN_DIR,
    REPO_ROOT,
    SHIPPED_POLICIES,
    TEST_TRUST_EXCEPTIONS,
    DockerEnv,
    _stop,
    add_trust_exceptions,
    assert_cli_denied,
)

UNITS = REPO_ROOT / "packaging" / "systemd"
SERVICE = UNITS / "pyauthz.service"
SOCKET = UNITS / "pyauthz.socket"
UNIT_BINARY = "/usr/local/bin/pyauthz"      # the one path a packager or admin rewrites
UNIT_POLICY = "/etc/pyauthz/policies"


def unit_entries(path: Path) -> dict[str, list[str]]:
    """``Key`` -> every value, over all sections (enough for these two units)."""
    entries: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def installed_pyauthz() -> str:
    """The `pyauthz` command installed for this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).with_name("pyauthz")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("pyauthz")
    if found is None:
        pytest.skip("no installed `pyauthz` command (pip install -e .)")
    return found


def rewritten_units(directory: Path, binary: str) -> tuple[Path, Path]:
    """The units with their one binary path rewritten, as the README tells admins to."""
    out = []
    for unit in (SERVICE, SOCKET):
        target = directory / unit.name
        target.write_text(unit.read_text().replace(UNIT_BINARY, binary))
        out.append(target)
    return out[0], out[1]


# ----------------------------------------------------------------------------- the unit files

def test_units_say_what_issue_10_asks():
    sock, svc = unit_entries(SOCKET), unit_entries(SERVICE)
    assert sock["ListenStream"] == ["/run/docker/plugins/pyauthz.sock"]
    assert (sock["SocketMode"], sock["SocketUser"]) == (["0600"], ["root"])
    assert sock.get("Accept", ["no"]) == ["no"]
    assert "docker.service" in " ".join(sock["Before"]).split()
    assert "sockets.target" in sock["WantedBy"]
    assert "docker.service" in " ".join(svc["Before"]).split()
    assert svc["Requires"] == ["pyauthz.socket"] and svc["Type"] == ["notify"]
    assert svc["ExecStartPre"] == [f"{UNIT_BINARY} policy lint {UNIT_POLICY}"]
    assert svc["ExecStart"] == [f"{UNIT_BINARY} serve --policy {UNIT_POLICY}"]
    assert svc["ExecReload"] == [f"{UNIT_BINARY} reload"]
    # Every Exec line runs the one binary path (a packager's sed rewrites them all).
    execs = [v for k, vs in svc.items() if k.startswith("Exec") for v in vs]
    assert all(v.split()[0] == UNIT_BINARY for v in execs), execs
    # Hardening leaves what pyauthz needs: its state and log directories, dockerd's
    # socket (root's) and the host's own file system (bind sources are resolved on it).
    assert svc["ProtectSystem"] == ["strict"] and svc["RuntimeDirectory"] == ["pyauthz"]
    assert svc["LogsDirectory"] == ["pyauthz"] and svc["NoNewPrivileges"] == ["yes"]
    assert "PrivateTmp" not in svc and "PrivateDevices" not in svc
    assert svc.get("User", ["root"]) == ["root"]
    assert svc.get("StandardOutput") == ["journal"]


def test_one_sed_rewrites_the_binary_path():
    """What docs/operations.md tells a packager (/usr/bin) or a venv install to run."""
    result = subprocess.run(["sed", f"s#{UNIT_BINARY}#/usr/bin/pyauthz#g", str(SERVICE)],
                            capture_output=True, text=True, check=True).stdout
    execs = [line for line in result.splitlines() if line.startswith("Exec")]
    assert len(execs) == 3 and all(re.match(r"Exec\w+=/usr/bin/pyauthz ", e) for e in execs)
    assert UNIT_BINARY not in result


def test_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    service, sock = rewritten_units(tmp_path, installed_pyauthz())
    # --man=no: man:pyauthz(8) is installed by the Debian package, not by a checkout.
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(sock), str(service)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr
    # The hardening, as systemd scores it offline (exposure 2.7 of 10 when written;
    # --threshold counts in tenths): well inside "OK".
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=40",
                        str(service)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr


def test_verify_catches_a_missing_binary(tmp_path):
    """The check is real: the unshipped /usr/local/bin path of a machine without it fails."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    service, sock = rewritten_units(tmp_path, str(tmp_path / "no-such-pyauthz"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(sock), str(service)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0 and "no-such-pyauthz" in r.stdout + r.stderr


# ----------------------------------------------------------------------------- socket activation

def _unit_command(key: str, binary: str, policy_dir: Path, *extra: str) -> list[str]:
    """The service's own command line for ``key``, with the binary and policy directory of
    this test and ``extra`` arguments (the test's socket, log and dockerd)."""
    (line,) = unit_entries(SERVICE)[key]
    words = shlex.split(line.replace(UNIT_POLICY, str(policy_dir)))
    assert words[0] == UNIT_BINARY
    return [binary, *words[1:], *extra]


def _state(name: str) -> dict | None:
    try:
        return json.loads(Path(f"/run/pyauthz/{name}.state.json").read_text())
    except (OSError, ValueError):
        return None


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _listening(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)  # never made by the test before dockerd's call: it would start pyauthz
        return True
    except OSError:
        return False
    finally:
        s.close()


# A stand-in for the service's sandbox where systemd is not pid 1 (here): a mount namespace
# with every file system read-only (ProtectSystem=strict, ProtectHome=read-only) but the
# writable directories given (RuntimeDirectory=, LogsDirectory=), root with no capability but
# CAP_DAC_READ_SEARCH (CapabilityBoundingSet=), NoNewPrivileges=, the unit's TMPDIR. Not the
# seccomp filter nor the other Protect*= settings. Every step execs: the pid stays LISTEN_PID's.
SANDBOX = r"""
set -e
for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || mount --bind -o ro "$m" "$m" 2>/dev/null || true
done
while [ "$1" != "--" ]; do
  mount --bind "$1" "$1" && mount -o remount,bind,rw "$1"
  shift
done
shift
exec setpriv --bounding-set -all,+dac_read_search --inh-caps -all --no-new-privs "$@"
"""


def sandboxed(command: list[str], writable: list[str]) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox",
            *writable, "--", "env", "TMPDIR=/run/pyauthz", *command]


@pytest.mark.parametrize("sandbox", [False, True], ids=["plain", "sandboxed"])
def test_socket_activation_serves_a_real_dockerd(sandbox):
    activate_bin = shutil.which("systemd-socket-activate")
    if activate_bin is None:
        pytest.skip("systemd-socket-activate not installed")
    if sandbox and not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("unshare or setpriv not installed (util-linux)")
    binary = installed_pyauthz()
    workdir = Path(tempfile.mkdtemp(prefix="pz", dir="/tmp"))
    os.chmod(workdir, 0o711)
    name = f"pyauthz-sd-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    policy_dir = workdir / "policies"
    shutil.copytree(SHIPPED_POLICIES, policy_dir)
    add_trust_exceptions(policy_dir, TEST_TRUST_EXCEPTIONS)
    (workdir / "log").mkdir()  # the only writable directory of the sandbox but /run/pyauthz
    env = DockerEnv(name=name, workdir=workdir, policy_dir=policy_dir,
                    plugin_socket=str(PLUGIN_DIR / f"{name}.sock"),
                    docker_socket=str(workdir / "d.sock"),
                    decision_log=workdir / "log" / "decisions.jsonl",
                    plugin_output=workdir / "plugin.out",
                    dockerd_output=workdir / "dockerd.out", docker_config=workdir / "cli")
    env.docker_config.mkdir()
    environ = dict(os.environ, PYTHONUNBUFFERED="1")
    # The checkout under test first (the installed command may be another copy's).
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([environ["PYTHONPATH"]]
                                                                if environ.get("PYTHONPATH") else []))
    extra = ("--log-file", str(env.decision_log), "--docker-host", f"unix://{env.docker_socket}")
    Path("/run/pyauthz").mkdir(mode=0o755, exist_ok=True)  # RuntimeDirectory=
    writable = ["/run/pyauthz", str(workdir / "log")]

    def unit_cmd(key: str, *more: str) -> list[str]:
        cmd = _unit_command(key, binary, policy_dir, *more)
        return sandboxed(cmd, writable) if sandbox else cmd

    try:
        # ExecStartPre= first, as systemd runs it before every start.
        lint = subprocess.run(unit_cmd("ExecStartPre"),
                              capture_output=True, text=True, timeout=120, env=environ)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        assert not os.path.exists(env.plugin_socket)
        serve_cmd = unit_cmd("ExecStart", *extra)
        with open(env.plugin_output, "wb") as out:
            env.plugin_proc = subprocess.Popen(
                [activate_bin, "-l", env.plugin_socket, "--", *serve_cmd],
                env=environ, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        _wait(lambda: os.path.exists(env.plugin_socket), 10, "systemd-socket-activate's socket")
        os.chmod(env.plugin_socket, 0o600)  # what pyauthz.socket's SocketMode= makes it
        made = os.stat(env.plugin_socket)
        time.sleep(1.0)
        assert _state(name) is None, "pyauthz started before any connection"

        # dockerd's first call (it activates its authorization plugin while it starts)
        # starts pyauthz on the socket it was waiting on.
        env._start_dockerd()
        state = _wait(lambda: _state(name), 30, "pyauthz's state file")
        assert state["pid"] == env.plugin_proc.pid, "not the process systemd-socket-activate execed"
        master = int(Path(f"/run/pyauthz/{name}.pid").read_text())
        assert master == env.plugin_proc.pid, "gunicorn's master is not LISTEN_PID's process"
        assert "taking the listening socket" in env.plugin_output.read_text()
        if sandbox:  # the sandbox is really around the plugin
            status = Path(f"/proc/{master}/status").read_text()
            assert re.search(r"^CapBnd:\s*0*4$", status, re.M), status
            root = [line.split() for line in Path(f"/proc/{master}/mountinfo").read_text()
                    .splitlines() if line.split()[4] == "/"]
            assert root and all("ro" in fields[5].split(",") for fields in root), root

        env.import_busybox()
        assert env.docker("ps", "-q").returncode == 0
        r = env.docker("run", "--rm", "--privileged", "--network", "none", "local/busybox:1",
                       "/bin/busybox", "true", check=False)
        assert_cli_denied(env, r, "privileged")
        ps = [d for d in env.decisions() if d.get("endpoint") == "container.list"]
        assert ps and all(d.get("allow") for d in ps if d.get("phase") == "request"), ps[-3:]

        def unchanged():
            now = os.stat(env.plugin_socket)
            assert (now.st_ino, now.st_mode, now.st_uid) == (made.st_ino, made.st_mode,
                                                              made.st_uid), "socket replaced"
            assert stat.S_IMODE(now.st_mode) == 0o600

        unchanged()

        # ExecReload=: validates, SIGHUPs the master, reports the revision in force.
        reload_cmd = unit_cmd("ExecReload", "--socket", env.plugin_socket, "--timeout", "30")
        r = subprocess.run(reload_cmd, capture_output=True, text=True, timeout=60, env=environ)
        assert r.returncode == 0 and "in force" in r.stdout, r.stdout + r.stderr + env.logs()
        assert _state(name)["reloads"] == 1
        # A plain SIGHUP (what `kill -HUP $MAINPID` would send) reloads too.
        env.plugin_proc.send_signal(signal.SIGHUP)
        _wait(lambda: (_state(name) or {}).get("reloads") == 2, 30, "the SIGHUP reload")
        assert env.docker("ps", "-q").returncode == 0
        unchanged()
        assert env.plugin_proc.poll() is None

        # SIGTERM (systemctl stop, KillMode=mixed: the master only): a clean exit that
        # leaves systemd's socket file alone (RemoveOnStop= of the socket unit removes it).
        _stop(env.dockerd_proc)  # first: dockerd would retry the plugin on the way out
        env.plugin_proc.send_signal(signal.SIGTERM)
        assert env.plugin_proc.wait(timeout=30) == 0, env.logs()
        unchanged()
        assert not Path(f"/run/pyauthz/{name}.pid").exists()
        assert not _listening(env.plugin_socket)
    except BaseException:
        sys.stderr.write(env.logs())
        raise
    finally:
        env.close()
