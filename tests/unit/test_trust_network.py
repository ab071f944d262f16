"""Registry access: deadlines (hanging, dripping, refusing registries), the verification
cache (TTL, registry down), TLS with a CA file, basic and token auth from the credentials
file, and credentials never leaking into messages or the log."""

import base64
import concurrent.futures
import json
import socket
import threading
import time

import pytest

from authz.deadline import Deadline
from authz.trust import ImageTrust
from authz.trust.cache import TTLCache
from tests.support.cosign import Key, Pusher, write_trust_policy
from tests.support.registry import FakeRegistry, HangServer, free_port, make_tls_cert

NAME = "team/app"


@pytest.fixture(scope="module")
def key():
    return Key()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# ------------------------------------------------------------------ TTL cache

def test_cache_ttl_and_bound():
    clock = Clock()
    cache = TTLCache(ttl_seconds=10, max_entries=3, clock=clock)
    cache.put("a", 1)
    assert cache.get("a") == 1
    clock.now += 9.9
    assert cache.get("a") == 1
    clock.now += 0.2
    assert cache.get("a") is None and len(cache) == 0
    for k in "abcd":
        cache.put(k, k)
    assert cache.get("a") is None and len(cache) == 3      # least recently used went
    cache.get("b")
    cache.put("e", "e")
    assert cache.get("b") == "b" and cache.get("c") is None


def test_cache_disabled_with_zero_ttl():
    cache = TTLCache(ttl_seconds=0, max_entries=3)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_cache_is_thread_safe():
    cache = TTLCache(ttl_seconds=60, max_entries=50)
    errors = []

    def work(n):
        try:
            for i in range(2000):
                cache.put((n, i % 80), i)
                cache.get((n, (i * 7) % 80))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) <= 50


# ------------------------------------------------------------------ cache and registry down

def signed_setup(tmp_path, key, clock=None, ttl=600):
    reg = FakeRegistry().start()
    pusher = Pusher(reg.url)
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    write_trust_policy(tmp_path, keys={"team": key}, insecure=[reg.host],
                       extra=f"cache:\n  ttl_seconds: {ttl}\n")
    trust = ImageTrust(ImageTrust.load(tmp_path, None).policy, None, clock=clock or time.monotonic)
    return reg, pusher, img, trust


def test_registry_down_with_cached_verification(tmp_path, key):
    clock = Clock()
    reg, _, img, trust = signed_setup(tmp_path, key, clock, ttl=600)
    by_digest = f"{reg.host}/{NAME}@{img.digest}"
    first = trust.check_pull(by_digest)
    assert first.allowed and not first.cached
    reg.stop()
    again = trust.check_pull(by_digest)
    assert again.allowed and again.cached, again.message
    assert again.key_fingerprint == key.fingerprint
    assert "cached" in again.message
    # a tag cannot be resolved while the registry is down
    by_tag = trust.check_pull(f"{reg.host}/{NAME}:1")
    assert not by_tag.allowed and "unreachable" in by_tag.found
    # after the TTL, the cached verification no longer stands in
    clock.now += 601
    late = trust.check_pull(by_digest)
    assert not late.allowed and "unreachable" in late.found
    assert "must answer" in late.fix


def test_registry_down_without_cached_verification(tmp_path, key):
    reg, _, img, trust = signed_setup(tmp_path, key)
    reg.stop()
    result = trust.check_pull(f"{reg.host}/{NAME}@{img.digest}")
    assert not result.allowed and "unreachable" in result.found
    assert result.digest == img.digest


def test_cache_hit_makes_no_registry_call(tmp_path, key):
    reg, _, img, trust = signed_setup(tmp_path, key)
    try:
        by_digest = f"{reg.host}/{NAME}@{img.digest}"
        assert trust.check_pull(by_digest).allowed
        n = len(reg.requests)
        assert trust.check_pull(by_digest).allowed
        assert len(reg.requests) == n
    finally:
        reg.stop()


def test_denials_are_not_cached(tmp_path, key):
    reg = FakeRegistry().start()
    try:
        pusher = Pusher(reg.url)
        img = pusher.push_image(NAME, "1")
        write_trust_policy(tmp_path, keys={"team": key}, insecure=[reg.host])
        trust = ImageTrust.load(tmp_path, None)
        assert not trust.check_pull(f"{reg.host}/{NAME}:1").allowed
        pusher.sign(NAME, img.digest, key)
        assert trust.check_pull(f"{reg.host}/{NAME}:1").allowed
    finally:
        reg.stop()


def test_cache_is_per_requirement(tmp_path, key):
    """A verification under one key set does not count for a rule that asks for another."""
    reg, _, img, _ = signed_setup(tmp_path, key)
    try:
        other = Key()
        write_trust_policy(tmp_path, keys={"team": key, "other": other}, insecure=[reg.host],
                           extra=f"rules:\n  - pattern: {reg.host}/team/app\n"
                                 f"    require: signature\n    keys: [other]\n")
        trust = ImageTrust.load(tmp_path, None)
        assert not trust.check_pull(f"{reg.host}/{NAME}@{img.digest}").allowed
    finally:
        reg.stop()


# ------------------------------------------------------------------ deadlines

def policy_for(tmp_path, key, host, timeouts=""):
    write_trust_policy(tmp_path, keys={"team": key}, insecure=[host], timeouts=timeouts)
    return ImageTrust.load(tmp_path, None)


def test_hanging_registry_denies_within_the_deadline(tmp_path, key):
    with HangServer() as hang:
        trust = policy_for(tmp_path, key, hang.host)
        started = time.monotonic()
        result = trust.check_pull(f"{hang.host}/{NAME}:1")
        elapsed = time.monotonic() - started
    assert not result.allowed
    assert "timed out" in result.found or "deadline" in result.found, result.found
    assert elapsed < trust.policy.timeouts.decision + 1.0, elapsed


def test_deadline_caps_long_read_timeouts(tmp_path, key):
    with HangServer() as hang:
        trust = policy_for(tmp_path, key, hang.host,
                           "timeouts:\n  connect: 5\n  read: 10\n  decision: 1\n")
        started = time.monotonic()
        result = trust.check_pull(f"{hang.host}/{NAME}@sha256:{'a' * 64}")
        elapsed = time.monotonic() - started
    assert not result.allowed
    assert elapsed < 1.0 + 1.0, elapsed


def test_the_decisions_deadline_bounds_the_check(tmp_path, key):
    """A caller's deadline (what is left of the decision's budget) replaces the check's own
    timeouts.decision, and the caller's wait is bounded by what is left of it."""
    with HangServer() as hang:
        trust = policy_for(tmp_path, key, hang.host)      # timeouts.decision: 4 s
        assert trust.decision_seconds == trust.policy.timeouts.decision == 4.0
        for check in (trust.check_pull, trust.check_service):
            started = time.monotonic()
            result = check(f"{hang.host}/{NAME}:1", Deadline(0.5))
            elapsed = time.monotonic() - started
            assert not result.allowed and "timed out" in result.found, result.found
            assert 0.4 < elapsed < 0.5 + 0.5, elapsed


def test_a_spent_deadline_denies_at_once(tmp_path, key):
    with HangServer() as hang:
        trust = policy_for(tmp_path, key, hang.host)
        spent = Deadline(0.0)
        started = time.monotonic()
        result = trust.check_pull(f"{hang.host}/{NAME}:1", spent)
        assert time.monotonic() - started < 0.5
    assert not result.allowed and result.rule == "image-trust-error", result.found
    assert "decision deadline (0s) reached" in result.found, result.found


class DripServer:
    """Answers 200 with a large Content-Length, then one byte every 0.2 s."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            while not self.stop.is_set():
                conn.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def test_dripping_registry_cannot_stretch_the_decision(tmp_path, key):
    drip = DripServer()
    try:
        trust = policy_for(tmp_path, key, drip.host, "timeouts:\n  decision: 1.5\n")
        started = time.monotonic()
        result = trust.check_pull(f"{drip.host}/{NAME}:1")
        elapsed = time.monotonic() - started
    finally:
        drip.close()
    assert not result.allowed and "deadline" in result.found, result.found
    assert elapsed < 1.5 + 1.0, elapsed


def test_refused_connection_denies_fast(tmp_path, key):
    host = f"127.0.0.1:{free_port()}"
    trust = policy_for(tmp_path, key, host)
    started = time.monotonic()
    result = trust.check_pull(f"{host}/{NAME}:1")
    assert not result.allowed and "unreachable" in result.found
    assert time.monotonic() - started < 1.0


def test_concurrent_checks_against_a_hanging_registry_all_end(tmp_path, key):
    with HangServer() as hang:
        trust = policy_for(tmp_path, key, hang.host, "timeouts:\n  decision: 1\n")
        results, started = [], time.monotonic()
        threads = [threading.Thread(target=lambda i=i: results.append(
            trust.check_pull(f"{hang.host}/{NAME}:{i}"))) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    assert len(results) == 20 and not any(r.allowed for r in results)
    assert elapsed < 1 + 1.5, elapsed


def test_environment_proxy_is_ignored(tmp_path, key, monkeypatch):
    reg, _, _, trust = signed_setup(tmp_path, key)
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert trust.check_pull(f"{reg.host}/{NAME}:1").allowed
    finally:
        reg.stop()


# ------------------------------------------------------------------ TLS

def test_https_with_ca_file(tmp_path, key):
    ca, cert, tls_key = make_tls_cert(tmp_path / "tls")
    with FakeRegistry(tls=(cert, tls_key)) as reg:
        pusher = Pusher(reg.url, verify=str(ca))
        img = pusher.push_image(NAME, "1")
        pusher.sign(NAME, img.digest, key)
        policy = tmp_path / "p"
        write_trust_policy(policy, keys={"team": key},
                           extra=f'registries:\n  "{reg.host}":\n    ca_file: {ca}\n')
        ok = ImageTrust.load(policy, None).check_pull(f"{reg.host}/{NAME}:1")
        assert ok.allowed, ok.message
        # without the CA: the certificate is not trusted, so deny
        write_trust_policy(policy, keys={"team": key})
        no_ca = ImageTrust.load(policy, None).check_pull(f"{reg.host}/{NAME}:1")
        assert not no_ca.allowed and "TLS verification" in no_ca.found, no_ca.found
        assert "ca_file" in no_ca.found


def test_https_is_the_default_and_plain_http_needs_insecure(tmp_path, key):
    with FakeRegistry() as reg:
        write_trust_policy(tmp_path, keys={"team": key})   # no `insecure: true`
        result = ImageTrust.load(tmp_path, None).check_pull(f"{reg.host}/{NAME}:1")
        assert not result.allowed and "TLS handshake" in result.found, result.found
        assert "insecure: true" in result.found
        assert not reg.requests          # no plain-HTTP request went out


# ------------------------------------------------------------------ auth

def creds_file(tmp_path, host, user, password):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {host: {
        "auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}))
    path.chmod(0o600)
    return path


def assert_no_secret(result, secret):
    assert secret not in result.message
    assert secret not in json.dumps(result.log_fields())
    assert secret not in repr(result)


@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_login_from_credentials_file(tmp_path, key, mode):
    with FakeRegistry(auth=mode, password="pw-never-logged") as reg:
        pusher = Pusher(reg.url, auth=(reg.user, reg.password))
        img = pusher.push_image(NAME, "1")
        pusher.sign(NAME, img.digest, key)
        creds = creds_file(tmp_path, reg.host, reg.user, reg.password)
        write_trust_policy(tmp_path / "with", keys={"team": key}, insecure=[reg.host],
                           extra=f"credentials_file: {creds}\n")
        ok = ImageTrust.load(tmp_path / "with", None).check_pull(f"{reg.host}/{NAME}:1")
        assert ok.allowed, ok.message
        assert_no_secret(ok, "pw-never-logged")
        write_trust_policy(tmp_path / "without", keys={"team": key}, insecure=[reg.host])
        denied = ImageTrust.load(tmp_path / "without", None).check_pull(f"{reg.host}/{NAME}:1")
        assert not denied.allowed and "without a login" in denied.found, denied.found
        bad = creds_file(tmp_path, reg.host, reg.user, "wrong-pw")
        write_trust_policy(tmp_path / "bad", keys={"team": key}, insecure=[reg.host],
                           extra=f"credentials_file: {bad}\n")
        wrong = ImageTrust.load(tmp_path / "bad", None).check_pull(f"{reg.host}/{NAME}:1")
        assert not wrong.allowed and "with a login" in wrong.found
        assert_no_secret(wrong, "wrong-pw")


def test_bearer_token_is_reused(tmp_path, key):
    with FakeRegistry(auth="bearer") as reg:
        pusher = Pusher(reg.url, auth=(reg.user, reg.password))
        img = pusher.push_image(NAME, "1")
        pusher.sign(NAME, img.digest, key)
        creds = creds_file(tmp_path, reg.host, reg.user, reg.password)
        write_trust_policy(tmp_path, keys={"team": key}, insecure=[reg.host],
                           extra=f"credentials_file: {creds}\ncache:\n  ttl_seconds: 0\n")
        trust = ImageTrust.load(tmp_path, None)
        before = len(reg.token_requests)
        assert trust.check_pull(f"{reg.host}/{NAME}:1").allowed
        assert trust.check_pull(f"{reg.host}/{NAME}:1").allowed
        assert len(reg.token_requests) - before == 1
        q = reg.token_requests[-1]["query"]
        assert q["scope"] == [f"repository:{NAME}:pull"] and q["service"] == ["fake-registry"]


def test_login_is_not_sent_to_a_plain_http_token_service_elsewhere(tmp_path, key):
    with FakeRegistry(auth="bearer") as reg, FakeRegistry(auth="bearer") as elsewhere:
        reg.realm = f"{elsewhere.url}/token"        # http, another host:port
        creds = creds_file(tmp_path, reg.host, reg.user, reg.password)
        write_trust_policy(tmp_path, keys={"team": key}, insecure=[reg.host],
                           extra=f"credentials_file: {creds}\n")
        result = ImageTrust.load(tmp_path, None).check_pull(f"{reg.host}/{NAME}:1")
        assert not result.allowed
        assert elsewhere.token_requests, "the token service was asked"
        assert all(t["authorization"] is None for t in elsewhere.token_requests)


def test_basic_login_not_sent_unless_challenged(tmp_path, key):
    with FakeRegistry() as reg:
        pusher = Pusher(reg.url)
        img = pusher.push_image(NAME, "1")
        pusher.sign(NAME, img.digest, key)
        creds = creds_file(tmp_path, reg.host, "alice", "pw")
        write_trust_policy(tmp_path, keys={"team": key}, insecure=[reg.host],
                           extra=f"credentials_file: {creds}\n")
        assert ImageTrust.load(tmp_path, None).check_pull(f"{reg.host}/{NAME}:1").allowed
        assert all(r["authorization"] is None for r in reg.requests if r["method"] == "GET")


def test_dripping_registry_does_not_pin_the_check_threads(tmp_path, key):
    """A registry that trickles bytes must not keep the checks' threads after the deadline:
    more such pulls than threads, then an unrelated check must still get its own answer."""
    drip = DripServer()
    try:
        trust = policy_for(tmp_path, key, drip.host, "timeouts:\n  decision: 1\n")
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            results = list(pool.map(lambda i: trust.check_pull(f"{drip.host}/{NAME}{i}:1"), range(40)))
        assert not any(r.allowed for r in results)
        time.sleep(2.5)  # a read of one recv ends within its 2 s timeout after the deadline
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))
        port = refused.getsockname()[1]
        refused.close()
        started = time.monotonic()
        result = trust.check_pull(f"127.0.0.1:{port}/{NAME}:1")
        assert not result.allowed
        assert "no decision within" not in result.found, result.found
        assert time.monotonic() - started < 1.0
    finally:
        drip.close()
