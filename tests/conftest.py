"""Shared fixtures.

Integration tests (everything under ``tests/integration/``) are marked ``integration``
automatically and skipped with a reason when this machine cannot run a dockerd (not root,
no ``dockerd``/``docker``, no static ``/bin/busybox``) or when ``PYAUTHZ_INTEGRATION=0``.

Fixtures (all integration ones are session-scoped: one dockerd for the whole run):

``plugin_and_dockerd`` (alias ``docker_env``)
    A :class:`tests.support.dockerd.DockerEnv`: the plugin serving a copy of the shipped
    ``policies/`` in front of a private dockerd, with ``local/busybox:1`` imported. The
    copy's ``trust.yaml`` gets an exception for the unsigned test image
    (``docker.io/local/busybox``); everything else is the shipped policy.
    ``.docker(*args, check=True, input=None)``, ``.api(method, path, body=None,
    headers=None, raw=False)``, ``.raw_request(bytes)``, ``.decisions(since=0)``,
    ``.log_mark()``, ``.containers_all()``, ``.containers_on_disk()``, ``.logs()``.

``control_dockerd``
    A dockerd with no authorization plugin at all (positive controls).

``start_docker_env``
    A factory ``start_docker_env(policy_dir=None, name=None) -> DockerEnv`` for a second
    (third...) pair, e.g. with a test policy directory; every pair it starts is stopped at
    the end of the session.

``bind_dir``
    A fresh directory under ``/srv`` (a bind root the shipped policy allows).

``policy_dir_copy``
    A fresh, writable copy of the shipped ``policies/`` (function-scoped) with the test
    image's trust exception added (as the default pair has), to add or change files before
    handing it to ``start_docker_env``. ``shipped_policy_dir_copy``: the same, untouched.

When an integration test fails, the tails of the plugin's and dockerd's output and of the
decision log of every running pair are attached to its report.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.support.dockerd import (  # noqa: E402
    SHIPPED_POLICIES,
    TEST_TRUST_EXCEPTIONS,
    DockerEnv,
    add_trust_exceptions,
    missing_requirements,
)

_INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
_ACTIVE: list[DockerEnv] = []


def _close_all() -> None:
    while _ACTIVE:
        env = _ACTIVE.pop()
        try:
            env.close()
        except Exception as exc:  # noqa: BLE001 - keep closing the others
            print(f"pyauthz tests: closing {env.name} failed: {exc}", file=sys.stderr)


atexit.register(_close_all)


def _sigterm_to_interrupt(signum, frame):
    # A SIGTERM'd pytest (CI timeout) would otherwise leave dockerd and the plugin running:
    # turn it into KeyboardInterrupt so that fixture teardown and atexit run.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


def pytest_collection_modifyitems(config, items):
    reason = None
    checked = False
    for item in items:
        try:
            is_integration = Path(item.path).resolve().is_relative_to(_INTEGRATION_DIR)
        except (OSError, ValueError):
            is_integration = False
        if not is_integration:
            continue
        item.add_marker(pytest.mark.integration)
        if not checked:
            reason, checked = missing_requirements(), True
            if reason and os.environ.get("CI"):
                # CI installs everything these tests need (.ci/run): a skip there would
                # hide a broken set-up behind a green run.
                raise pytest.UsageError(f"integration tests cannot run in CI: {reason}")
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _ACTIVE and item.get_closest_marker("integration"):
        for env in list(_ACTIVE):
            if not env.closed:
                rep.sections.append((f"pyauthz pair {env.name}", env.logs()))


def pytest_unconfigure(config):
    _close_all()


def _start(policy_dir=None, name=None, **options) -> DockerEnv:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    env = DockerEnv.start(policy_dir=policy_dir, name=name, **options)
    _ACTIVE.append(env)
    return env


def _finish(env: DockerEnv) -> None:
    try:
        env.close()
    finally:
        if env in _ACTIVE:
            _ACTIVE.remove(env)


@pytest.fixture(scope="session")
def plugin_and_dockerd():
    env = _start()
    try:
        yield env
    finally:
        _finish(env)


@pytest.fixture(scope="session")
def docker_env(plugin_and_dockerd):
    return plugin_and_dockerd


@pytest.fixture(scope="session")
def control_dockerd():
    """A dockerd without any authorization plugin: positive controls show that dockerd
    really acts on what the plugin denies."""
    env = _start(authz=False)
    try:
        yield env
    finally:
        _finish(env)


@pytest.fixture(scope="session")
def start_docker_env():
    started: list[DockerEnv] = []

    def start(policy_dir=None, name=None, **options) -> DockerEnv:
        env = _start(policy_dir=policy_dir, name=name, **options)
        started.append(env)
        return env

    try:
        yield start
    finally:
        for env in reversed(started):
            _finish(env)


ALLOWED_BIND_ROOT = Path("/srv")


@pytest.fixture
def bind_dir():
    """A fresh directory under /srv, a bind root the shipped policy allows (rule
    host-path-roots); removed afterwards."""
    import tempfile

    ALLOWED_BIND_ROOT.mkdir(exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="pyauthz-test-", dir=ALLOWED_BIND_ROOT))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def policy_dir_copy(tmp_path):
    dst = tmp_path / "policies"
    if SHIPPED_POLICIES.is_dir():
        shutil.copytree(SHIPPED_POLICIES, dst)
    else:
        dst.mkdir()
    add_trust_exceptions(dst, TEST_TRUST_EXCEPTIONS)
    return dst


@pytest.fixture
def shipped_policy_dir_copy(tmp_path):
    """An untouched copy of the shipped ``policies/`` (no test exceptions added)."""
    dst = tmp_path / "shipped-policies"
    if SHIPPED_POLICIES.is_dir():
        shutil.copytree(SHIPPED_POLICIES, dst)
    else:
        dst.mkdir()
    return dst


# --------------------------------------------------------------------------- image trust

@pytest.fixture
def registry():
    """An in-process registry (tests/support/registry.py's FakeRegistry) for trust tests."""
    from tests.support.registry import FakeRegistry

    with FakeRegistry() as reg:
        yield reg


@pytest.fixture
def pusher(registry):
    """Pushes images and cosign-format signatures to ``registry``."""
    from tests.support.cosign import Pusher

    return Pusher(registry.url)
