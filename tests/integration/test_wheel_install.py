"""The wheel, as a user without a checkout gets it (issue 10, item 1): built offline from a
clean copy of the repository, installed into a fresh virtual environment, and used from
there: `pyauthz --version`, `pyauthz policy init`, `pyauthz policy lint` and `policy test` on
the policy the wheel ships, and `pyauthz serve` with no --policy starting on the shipped
policy and answering dockerd's calls.

Offline: `pip wheel --no-deps --no-build-isolation --no-index` with the system's setuptools
(and wheel, a test extra); the venv has --system-site-packages so that the dependencies (and
pip) come from the system Python, and the wheel is installed with --no-deps --no-index
--ignore-installed (so that an editable install of the checkout in the system Python does
not count as installed in the venv)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from authz.cli import SYSTEM_POLICY_DIR
from authz.policytools.init import shipped_files
from authz.reload import STATE_DIR
from tests.support.dockerd import (REPO_ROOT, _stop, _wait_socket, build_request,
                                   unix_http_exchange)

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
SHIPPED = REPO_ROOT / "policies"


def clean_copy(dst: Path) -> Path:
    """The files a clean clone has (git's tracked files, as they are in the working tree;
    symlinks kept as symlinks), without build/, egg-info or caches."""
    dst.mkdir()
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True)
    if listed.returncode != 0:  # not a git checkout: everything but build leftovers
        shutil.rmtree(dst)
        shutil.copytree(REPO_ROOT, dst, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
        return dst
    for name in listed.stdout.decode().split("\0"):
        src = REPO_ROOT / name
        if not name or not os.path.lexists(src):
            continue  # deleted in the working tree
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
    return dst


def offline_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("PIP_")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_CONFIG_FILE=os.devnull,
               PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def run(cmd, cwd, **kwargs) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=offline_env(), capture_output=True,
                       text=True, timeout=kwargs.pop("timeout", 300), **kwargs)
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = clean_copy(work / "src")
    out = work / "dist"
    r = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-index", "-w", out, "."], cwd=src)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(out.glob("pyauthz_docker-*.whl"))
    assert len(wheels) == 1, (list(out.iterdir()), r.stdout)
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "env"
    # --without-pip: a Debian system Python has no ensurepip without python3-venv; the
    # system's pip, seen through --system-site-packages, installs into the venv.
    r = run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", root],
            cwd=root.parent)
    assert r.returncode == 0, r.stderr
    r = run([root / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index",
             "--ignore-installed", wheel], cwd=root.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def test_the_wheel_carries_the_policy_the_license_and_the_name(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for rel in shipped_files(SHIPPED):  # rules.yaml, trust.yaml, model.conf, tests/...
            member = f"authz/policies/{rel.as_posix()}"
            assert member in names, member
            info = z.getinfo(member)
            assert (info.external_attr >> 16) & 0o170000 != 0o120000, f"{member} is a symlink"
            assert z.read(member) == (SHIPPED / rel).read_bytes(), member
        assert any(n.startswith("authz/policies/tests/") and n.endswith(".yaml") for n in names)
        dist_info = f"pyauthz_docker-{VERSION}.dist-info"
        licenses = [n for n in names if n.startswith(dist_info) and "LICENSE" in n]
        assert licenses and z.read(licenses[0]) == (REPO_ROOT / "LICENSE").read_bytes()
        metadata = z.read(f"{dist_info}/METADATA").decode()
        assert "\nName: pyauthz-docker\n" in metadata and f"\nVersion: {VERSION}\n" in metadata
        assert "pyauthz = authz.cli:main" in z.read(f"{dist_info}/entry_points.txt").decode()


def test_the_installed_command_runs_from_the_venv_not_the_checkout(venv, tmp_path):
    r = run([venv / "bin" / "pyauthz", "--version"], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"pyauthz {VERSION} (pyauthz-docker)\n", r.stderr
    r = run([venv / "bin" / "python", "-c",
             "import authz, authz.cli; print(authz.__file__); print(authz.cli.shipped_policy_dir())"],
            cwd=tmp_path)
    package, shipped = r.stdout.split()
    assert package.startswith(str(venv)) and shipped.startswith(str(venv)), r.stdout + r.stderr
    assert not Path(shipped).is_symlink() and (Path(shipped) / "rules.yaml").is_file()


def test_policy_init_lint_and_test_from_the_wheel(venv, tmp_path):
    pyauthz = venv / "bin" / "pyauthz"
    shipped = run([venv / "bin" / "python", "-c",
                   "from authz.cli import shipped_policy_dir; print(shipped_policy_dir())"],
                  cwd=tmp_path).stdout.strip()
    r = run([pyauthz, "policy", "lint", shipped], cwd=tmp_path)
    assert r.returncode == 0 and "0 error(s)" in r.stdout + r.stderr, r.stdout + r.stderr

    copy = tmp_path / "etc" / "policies"
    r = run([pyauthz, "policy", "init", copy], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for rel in shipped_files(Path(shipped)):
        assert (copy / rel).read_bytes() == (Path(shipped) / rel).read_bytes(), rel
        assert (copy / rel).stat().st_mode & 0o777 == 0o644
    assert copy.stat().st_mode & 0o777 == 0o755 and (copy / "tests").is_dir()
    r = run([pyauthz, "policy", "init", copy], cwd=tmp_path)
    assert r.returncode == 1 and "not empty" in r.stderr, r.stdout + r.stderr

    r = run([pyauthz, "policy", "lint", copy], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([pyauthz, "policy", "test", copy], cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_serve_from_the_wheel_starts_on_the_shipped_policy(venv, tmp_path):
    sock = tmp_path / f"pyauthz-wheel-{os.getpid()}.sock"
    log = tmp_path / "decisions.jsonl"
    output = tmp_path / "serve.out"
    cmd = [str(venv / "bin" / "pyauthz"), "serve", "--socket", str(sock), "--workers", "1",
           "--threads", "4", "--log-file", str(log), "--docker-host", ""]
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=offline_env(PYTHONUNBUFFERED="1"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        assert _wait_socket(str(sock), proc, 60), output.read_text()
        activate = unix_http_exchange(str(sock), build_request("POST", "/Plugin.Activate", b""))
        assert activate.status == 200 and activate.json() == {"Implements": ["authz"]}
        call = {"RequestMethod": "POST", "RequestUri": "/v1.41/containers/create",
                "RequestHeaders": {"Content-Type": "application/json"},
                "RequestBody": base64.b64encode(json.dumps(
                    {"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()).decode()}
        answer = unix_http_exchange(str(sock), build_request("POST", "/AuthZPlugin.AuthZReq",
                                                             call)).json()
        assert answer["Allow"] is False and "[privileged]" in answer["Msg"], answer
    finally:
        _stop(proc)
        for leftover in STATE_DIR.glob(sock.name.removesuffix(".sock") + ".*"):
            leftover.unlink(missing_ok=True)
    started = output.read_text()
    assert f"pyauthz {VERSION}: serving on {sock}" in started, started
    site = str(venv)
    if SYSTEM_POLICY_DIR.is_dir():  # this host has its own policy: serve must prefer it
        assert f"with policy {SYSTEM_POLICY_DIR} (the host's policy" in started, started
    else:
        assert f"with policy {site}" in started and "/authz/policies (the default policy " \
            f"shipped with pyauthz {VERSION}" in started, started
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all(line["plugin_version"] == VERSION for line in lines), lines
