"""The Debian package (issue 10, item 3), end to end, as root: packaging/deb/build.sh builds it
offline; its metadata and contents are checked (dpkg-deb --info/--contents); ``dpkg -i``
installs it; ``/usr/bin/pyauthz`` runs the package's own code whatever PYTHONPATH or the
current directory hold; ``man -l`` renders pyauthz(8); the installed pyauthz.service's
ExecStartPre and ExecStart (specifiers, Environment= and the Exec prefixes applied as systemd
would) run under ``systemd-socket-activate -l /run/docker/plugins/NAME.sock`` (what
pyauthz.socket does) in front of a real dockerd (``--authorization-plugin=NAME``, loopback
and unix sockets only): ``docker ps`` is allowed, ``docker run --privileged`` denied by rule
privileged, the decision logged to the service's output (the journal, under systemd); then
``dpkg --purge`` leaves nothing behind.

The package is always purged at the end, also when a step fails, and the editable install
of the checkout (``python3 -m authz``, the ``pyauthz`` on PATH) is left as it was: the
package's Python code lives under /usr/lib/pyauthz/lib, which no other Python reads.
One run at a time per machine (a lock in /run/lock): dpkg's database is the machine's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dockerd import REPO_ROOT, DockerEnv, assert_cli_denied

BUILD = REPO_ROOT / "packaging" / "deb" / "build.sh"
UNIT_DIR = Path("/lib/systemd/system")
SERVICE = UNIT_DIR / "pyauthz.service"
SOCKET_UNIT = UNIT_DIR / "pyauthz.socket"
POLICY_DIR = Path("/etc/pyauthz/policies")
# Everything the package installs lies in or is one of these; none may exist after a purge.
PACKAGE_PATHS = [Path("/usr/bin/pyauthz"), Path("/usr/lib/pyauthz"), Path("/etc/pyauthz"),
                 SERVICE, SOCKET_UNIT, Path("/usr/share/man/man8/pyauthz.8.gz"),
                 Path("/usr/share/doc/pyauthz")]
LOCK = Path("/run/lock/pyauthz-deb-package-test.lock")


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"the package test cannot run in CI: {reason}")
        pytest.skip(reason)


def run(*cmd, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{shlex.join(map(str, cmd))} exited {r.returncode}\n"
                             f"stdout: {r.stdout[-4000:]}\nstderr: {r.stderr[-4000:]}")
    return r


def package_status() -> str:
    r = run("dpkg-query", "-W", "-f=${Status}", "pyauthz", check=False)
    return r.stdout.strip() if r.returncode == 0 else "not-installed"


@contextlib.contextmanager
def machine_lock():
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the unit

def unit_section(path: Path, section: str) -> list[tuple[str, str]]:
    """(key, value) pairs of one section, continuation lines joined, comments dropped."""
    out, current, pending = [], None, ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section and "=" in line:
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


def expand_specifiers(value: str) -> str:
    """The systemd specifiers a system unit's Exec line may use here (%t, %%); others fail."""
    def one(m):
        spec = m.group(1)
        if spec == "%":
            return "%"
        if spec == "t":
            return "/run"
        raise AssertionError(f"specifier %{spec} in {value!r}: teach this test what it means")
    return re.sub(r"%(.)", one, value)


def exec_argv(value: str, environment: dict[str, str]) -> list[str]:
    """An Exec line as systemd runs it: prefixes (-@:+!) dropped, $VAR and ${VAR} expanded."""
    value = re.sub(r"^[-@:+!]+", "", value)
    words = []
    for word in shlex.split(expand_specifiers(value)):
        if re.fullmatch(r"\$\{?\w+\}?", word):  # a lone $VAR is split into words
            words.extend(environment.get(word.strip("${}"), "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: environment.get(m.group(1), ""), word))
    return words


def service_commands() -> tuple[list[list[str]], list[str], dict[str, str], list[str]]:
    """(ExecStartPre argvs, ExecStart argv, Environment, RuntimeDirectory) of the installed
    pyauthz.service."""
    service = unit_section(SERVICE, "Service")
    environment: dict[str, str] = {}
    for key, value in service:
        if key == "Environment":
            for assignment in shlex.split(expand_specifiers(value)):
                name, _, val = assignment.partition("=")
                environment[name] = val
    pre = [exec_argv(v, environment) for k, v in service if k == "ExecStartPre"]
    starts = [exec_argv(v, environment) for k, v in service if k == "ExecStart"]
    assert len(starts) == 1, f"pyauthz.service has {len(starts)} ExecStart lines"
    runtime = [d for k, v in service if k == "RuntimeDirectory" for d in v.split()]
    return pre, starts[0], environment, runtime


def retarget(argv: list[str], unit_socket: str, test_socket: str, docker_host: str) -> list[str]:
    """The unit's command for the test: its socket path, if it names one, becomes the test's;
    dockerd is the test's private one (--docker-host, last given wins)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--docker-host":
            skip = True
            continue
        if word.startswith("--docker-host="):
            continue
        out.append(word.replace(unit_socket, test_socket))
    return out + ["--docker-host", docker_host]


# --------------------------------------------------------------------------- the checks

def build(out_dir: Path) -> Path:
    r = run(BUILD, env={**os.environ, "OUT_DIR": str(out_dir)}, cwd=REPO_ROOT, timeout=180)
    debs = sorted(out_dir.glob("pyauthz_*.deb"))
    assert len(debs) == 1 and r.stdout.strip() == str(debs[0]), (r.stdout, debs)
    return debs[0]


def check_metadata(deb: Path) -> list[str]:
    """Control fields, maintainer scripts, conffiles and contents; returns the Debian
    packages it depends on."""
    info = run("dpkg-deb", "--info", deb).stdout
    for field in ("Package: pyauthz", "Version: ", "Architecture: ", "Depends: ", "Description: "):
        assert f" {field}" in info, info
    for script in ("postinst", "prerm", "postrm", "conffiles", "md5sums"):
        assert script in info, info
    listed = set(run("dpkg-deb", "--info", deb, "conffiles").stdout.split())
    assert {f"/etc/pyauthz/policies/{n}" for n in ("rules.yaml", "trust.yaml", "model.conf")} <= listed
    assert all(p.startswith("/etc/pyauthz/") for p in listed), listed
    contents = run("dpkg-deb", "--contents", deb).stdout.splitlines()
    paths = {line.split()[5].lstrip(".") for line in contents}
    owners = {line.split()[1] for line in contents}
    assert owners == {"root/root"}, owners
    for required in ("/usr/bin/pyauthz", "/lib/systemd/system/pyauthz.service",
                     "/lib/systemd/system/pyauthz.socket", "/usr/share/man/man8/pyauthz.8.gz",
                     "/usr/share/doc/pyauthz/copyright", "/usr/lib/pyauthz/lib/authz/cli.py",
                     "/etc/pyauthz/policies/rules.yaml"):
        assert required in paths, f"{required} not in the package"
    assert set(listed) == {p for p in paths if p.startswith("/etc/") and not p.endswith("/")}
    own = ("/usr/bin/pyauthz", "/usr/lib/pyauthz/", "/etc/pyauthz/", "/lib/systemd/system/pyauthz.",
           "/usr/share/man/man8/pyauthz", "/usr/share/doc/pyauthz/")
    shared_dirs = ("/", "/etc/", "/lib/", "/lib/systemd/", "/lib/systemd/system/", "/usr/", "/usr/bin/",
                   "/usr/lib/", "/usr/share/", "/usr/share/man/", "/usr/share/man/man8/", "/usr/share/doc/")
    stray = [p for p in paths if not p.startswith(own) and p not in shared_dirs]
    assert not stray, f"files outside pyauthz's own paths: {stray[:10]}"
    depends = run("dpkg-deb", "-f", deb, "Depends").stdout
    return sorted({re.split(r"[\s(]", alt.strip())[0] for alt in re.split(r"[,|]", depends) if alt.strip()})


def editable_state() -> dict:
    """What the checkout's own install looks like: must be the same after the package left."""
    r = run(sys.executable, "-c", "import authz; print(authz.__file__)", cwd="/")
    which = shutil.which("pyauthz")
    state = {"authz": r.stdout.strip(), "which": which}
    local = Path("/usr/local/bin/pyauthz")
    if local.is_file():
        state["local"] = hashlib.sha256(local.read_bytes()).hexdigest()
    if which and which != "/usr/bin/pyauthz":
        state["version_rc"] = run(which, "--version", check=False).returncode
    return state


def check_command_isolated(tmp_path: Path) -> None:
    """/usr/bin/pyauthz imports the package's code: an `authz` (or sitecustomize) that
    PYTHONPATH or the current directory offers is not looked at."""
    poison = tmp_path / "poison"
    for module in ("authz/__init__.py", "sitecustomize.py", "flask/__init__.py"):
        (poison / module).parent.mkdir(parents=True, exist_ok=True)
        (poison / module).write_text("raise SystemExit('shadowed by ' + __file__)\n")
    env = {**os.environ, "PYTHONPATH": f"{poison}:{REPO_ROOT}"}
    r = run("/usr/bin/pyauthz", "--version", env=env, cwd=poison)
    assert r.stdout.startswith("pyauthz "), r.stdout
    assert run("head", "-1", "/usr/bin/pyauthz").stdout.startswith("#!/usr/bin/python3 -I")


def check_man_page() -> None:
    env = {**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat", "LC_ALL": "C.UTF-8"}
    page = run("man", "-l", "/usr/share/man/man8/pyauthz.8.gz", env=env).stdout
    assert "PYAUTHZ(8)" in page and "/etc/pyauthz/policies" in page, page[:2000]
    commands = run("/usr/bin/pyauthz", "--help").stdout.split("Commands:", 1)[1].split()
    for command in ("serve", "reload", "health", "policy"):
        assert command in commands
        assert f"pyauthz {command}" in page, f"pyauthz {command} missing from the man page"
    # groff's own complaints (unknown macros, bad escapes) would be on stderr.
    troff = run("sh", "-c", "zcat /usr/share/man/man8/pyauthz.8.gz | groff -man -Tutf8 -ww -z")
    assert troff.stderr == "", troff.stderr


def serve_socket_activated(tmp_path: Path, monkeypatch) -> None:
    name = f"pyauthz-deb-{os.getpid()}"
    pre, start, environment, runtime = service_commands()
    assert start[:2] == ["/usr/bin/pyauthz", "serve"], start
    listen = [v for k, v in unit_section(SOCKET_UNIT, "Socket") if k == "ListenStream"]
    assert listen == ["/run/docker/plugins/pyauthz.sock"], listen
    for directory in runtime:
        Path("/run", directory).mkdir(mode=0o755, parents=True, exist_ok=True)
    child_env = {**os.environ, **environment}
    for argv in pre:  # ExecStartPre: the policy lint
        run(*argv, env=child_env, timeout=60)
    # The plugin command the harness starts: systemd-socket-activate listens on the test's
    # socket at once (dockerd finds it) and execs the unit's command on the first connection,
    # handing over the socket as fd 3 (LISTEN_FDS), as systemd does for pyauthz.socket.
    template = ["systemd-socket-activate", "-l", "{socket}"]
    for key, value in environment.items():
        template += ["-E", f"{key}={value}".replace("{", "{{").replace("}", "}}")]
    command = retarget(start, listen[0], "{socket}", "{docker_host}")
    template += [w if w in ("{socket}", "{docker_host}") else w.replace("{", "{{").replace("}", "}}")
                 for w in command]
    monkeypatch.setenv("PYAUTHZ_PLUGIN_CMD", shlex.join(template))
    env = DockerEnv.start(policy_dir=POLICY_DIR, name=name, trust_exceptions=())
    try:
        r = env.docker("ps")
        assert r.returncode == 0, env.logs()
        r = env.docker("run", "--rm", "--privileged", "--network", "none", "local/busybox:1",
                       "/bin/busybox", "true", check=False)
        assert_cli_denied(env, r, "privileged")
        # The process serving is the one systemd-socket-activate exec'd: the installed command
        # on Debian's python3, its code from /usr/lib/pyauthz/lib only.
        pid = env.plugin_proc.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:3] == [b"/usr/bin/python3", b"-IS", b"/usr/bin/pyauthz"], cmdline
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/usr/lib/pyauthz/lib/" in maps
        for foreign in (str(REPO_ROOT), "/usr/local/lib/python3", "/.pyenv/", "site-packages"):
            assert foreign not in maps, f"{foreign} mapped into the packaged plugin"
        decisions = [json.loads(line) for line in env.plugin_output.read_text().splitlines()
                     if line.startswith("{")]
        assert any(d.get("allow") is False and "privileged" in json.dumps(d) for d in decisions), (
            env.logs())
    finally:
        env.close()
    for leftover in (env.plugin_socket, f"/run/pyauthz/{name}.state.json", f"/run/pyauthz/{name}.pid"):
        assert not os.path.exists(leftover), leftover


# --------------------------------------------------------------------------- the test

def test_deb_builds_installs_serves_through_the_socket_unit_and_purges(tmp_path, monkeypatch):
    _need(os.geteuid() == 0, "installs a package: needs root")
    for tool in ("dpkg", "dpkg-deb", "systemd-socket-activate", "man", "groff"):
        _need(shutil.which(tool) is not None, f"`{tool}` not found")
    _need(Path("/usr/bin/python3").is_file(), "/usr/bin/python3 (Debian's python3) missing")
    with machine_lock():
        status = package_status()
        _need(status in ("not-installed", "unknown ok not-installed", "deinstall ok config-files"),
              f"a pyauthz package is on this machine ({status}); this test installs and purges "
              "its own: dpkg --purge pyauthz first")
        deb = build(tmp_path / "dist")
        depends = check_metadata(deb)
        missing = [p for p in depends
                   if run("dpkg-query", "-W", "-f=${Status}", p, check=False).stdout
                   != "install ok installed"]
        _need(not missing, f"the package depends on {missing}: apt-get install {' '.join(missing)} "
                           "(.ci/run does)")
        before = editable_state()
        try:
            run("dpkg", "-i", deb)
            assert package_status() == "install ok installed"
            check_command_isolated(tmp_path)
            check_man_page()
            run("/usr/bin/pyauthz", "policy", "lint", POLICY_DIR)
            serve_socket_activated(tmp_path, monkeypatch)
        finally:
            purged = run("dpkg", "--purge", "pyauthz", check=False)
        assert purged.returncode == 0, purged.stdout + purged.stderr
        assert package_status() in ("not-installed", "unknown ok not-installed")
        leftovers = [str(p) for p in PACKAGE_PATHS if p.exists() or p.is_symlink()]
        assert not leftovers, f"left after the purge: {leftovers}"
        assert editable_state() == before


def test_maintainer_scripts_touch_systemd_only_while_it_runs(tmp_path):
    """postinst/prerm/postrm with a recording systemctl, in a private mount namespace whose
    /run has (or lacks) /run/systemd/system, the mark of a running systemd."""
    _need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    scripts = REPO_ROOT / "packaging" / "deb"
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "log"
    (fake / "systemctl").write_text(f"#!/bin/sh\necho \"systemctl $*\" >> {log}\n")
    (fake / "systemctl").chmod(0o755)
    steps = [("postinst", "configure", ""), ("postinst", "configure", "0.0.9"),
             ("prerm", "upgrade", "0.1.1"), ("prerm", "remove", ""), ("postrm", "remove", ""),
             ("postrm", "purge", "")]

    def calls(systemd_running: bool) -> dict[str, list[str]]:
        log.write_text("")
        # /var/log too: postrm purge removes an empty /var/log/pyauthz, the host's stays.
        lines = ["mount -t tmpfs none /run", "mount -t tmpfs none /var/log"]
        lines += ["mkdir -p /run/systemd/system"] if systemd_running else []
        for script, *args in steps:
            lines.append(f"echo '== {script} {' '.join(args).strip()}' >> {log}")
            lines.append(f"{scripts / script} {' '.join(shlex.quote(a) for a in args)}")
        run("unshare", "-m", "sh", "-ec", "\n".join(lines),
            env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
        out: dict[str, list[str]] = {}
        for line in log.read_text().splitlines():
            if line.startswith("== "):
                key = line[3:]
                out[key] = []
            else:
                out[key].append(line)
        return out

    assert calls(True) == {
        "postinst configure": ["systemctl daemon-reload", "systemctl enable pyauthz.socket",
                               "systemctl start pyauthz.socket"],
        "postinst configure 0.0.9": ["systemctl daemon-reload", "systemctl try-restart pyauthz.service"],
        "prerm upgrade 0.1.1": [],
        "prerm remove": ["systemctl stop pyauthz.socket pyauthz.service",
                         "systemctl disable pyauthz.socket pyauthz.service"],
        "postrm remove": ["systemctl daemon-reload"],
        "postrm purge": ["systemctl daemon-reload"],
    }
    # Without systemd nothing is enabled, started or reloaded; removal still drops the
    # enablement links an earlier boot may have made.
    assert calls(False) == {
        "postinst configure": [], "postinst configure 0.0.9": [], "prerm upgrade 0.1.1": [],
        "prerm remove": ["systemctl disable pyauthz.socket pyauthz.service"],
        "postrm remove": [], "postrm purge": [],
    }
