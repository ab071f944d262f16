"""Crafted raw requests that try to get a dangerous request past the plugin.

Each case is a request that dockerd (20.10 here) would act on as a privileged / host-bound
container, written so that a plugin reading the raw text naively would see something
harmless (or nothing). Each must be answered 403 by the plugin, and afterwards no stored
container may be privileged or bind a sensitive host path.

Every request goes over dockerd's socket byte for byte (``api(..., raw=True)`` or
``raw_request``), so the exact path, headers and body are what the test says.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.dockerd import (
    BUSYBOX_IMAGE,
    assert_api_denied,
    chunked,
    dangerous_containers,
)

BB = BUSYBOX_IMAGE
JSON = [("Content-Type", "application/json")]
PRIV = '{"Image":"%s","Cmd":["/bin/busybox","true"],"HostConfig":{"Privileged":true}}' % BB


@pytest.fixture(scope="module")
def env(plugin_and_dockerd):
    return plugin_and_dockerd


@pytest.fixture
def guarded(env):
    """After the test: no new container, and nothing dangerous stored at all."""
    before = {c["id"] for c in env.containers_on_disk()}
    yield
    bad = dangerous_containers(env)
    new = [c for c in env.containers_on_disk() if c["id"] not in before]
    # Clean up before asserting, so that one failure does not spill into the next test.
    for c in new:
        env.api("DELETE", f"/containers/{c['id']}?force=1")
    assert bad == [], f"dangerous containers stored: {bad}"
    assert not new, f"a crafted request created container(s) {[c['id'][:12] for c in new]}"


def body_of(*parts: str) -> bytes:
    return "".join(parts).encode("utf-8")


# --------------------------------------------------------------------------- paths

@pytest.mark.parametrize("path", [
    "/v1.41/containers/create",
    "/v1.40/containers/create",
    "/v1.25/containers/create",
    "/containers/create",
    "/containers%2Fcreate",
    "/%63ontainers/create",
    "/v1.41/%63ontainers/%63reate",
    "/v1.41/containers/create?name=" + "x" * 8,
    # dockerd compares the version numerically: these are all routed to create.
    "/v1.41.0/containers/create",
    "/v01.41/containers/create",
    "/v1.23/containers/create",
])
def test_path_variants(env, guarded, path):
    resp = env.api("POST", path, PRIV, JSON, raw=True)
    assert_api_denied(env, resp, "privileged", "request-uri")


def test_absolute_form_target(env, guarded):
    resp = env.api("POST", "http://docker/v1.41/containers/create", PRIV, JSON, raw=True)
    assert_api_denied(env, resp, "privileged", "request-uri")


def test_absolute_form_target_other_host(env, guarded):
    resp = env.api("POST", "http://plugin.moby.localhost/containers/create?x=1", PRIV, JSON,
                   raw=True)
    assert_api_denied(env, resp, "privileged", "request-uri")


# --------------------------------------------------------------------------- JSON keys

@pytest.mark.parametrize("body,rules", [
    pytest.param('{"image":"%s","hostconfig":{"privileged":true}}' % BB,
                 ["privileged"], id="lowercase"),
    pytest.param('{"IMAGE":"%s","HOSTCONFIG":{"PRIVILEGED":true}}' % BB,
                 ["privileged"], id="uppercase"),
    pytest.param('{"Image":"%s","hostConfig":{"pRiViLeGeD":true}}' % BB,
                 ["privileged"], id="oddcase"),
    pytest.param('{"Image":"%s","HostConfig":{"Privileged":false,"Privileged":true}}' % BB,
                 ["privileged", "request-ambiguous"], id="duplicate-last-wins"),
    pytest.param('{"Image":"%s","HostConfig":{"Privileged":false,"privileged":true}}' % BB,
                 ["privileged", "request-ambiguous"], id="duplicate-case-variant"),
    # A repeated object key merges into the struct decoded so far (Go reuses the pointer):
    # the first HostConfig's Privileged survives the second, harmless-looking one.
    pytest.param('{"Image":"%s","HostConfig":{"Privileged":true},"HostConfig":{"Memory":0}}' % BB,
                 ["privileged", "request-ambiguous"], id="duplicate-object-merge"),
    # ContainerConfigWrapper embeds HostConfig: top-level fields count when there is no
    # inner HostConfig (or it is null).
    pytest.param('{"Image":"%s","Privileged":true}' % BB, ["privileged"], id="toplevel"),
    pytest.param('{"Image":"%s","Privileged":true,"HostConfig":null}' % BB,
                 ["privileged"], id="toplevel-null-inner"),
    pytest.param('{"Image":"%s","Binds":["/:/host"]}' % BB,
                 ["host-path-protected"], id="toplevel-binds"),
    # Go folds U+017F (long s) to s and U+212A (Kelvin) to k when matching keys.
    pytest.param('{"Image":"%s","HostConfig":{"Bind\u017f":["/:/host"]}}' % BB,
                 ["host-path-protected"], id="long-s-binds"),
    pytest.param('{"Image":"%s","HostConfig":{"Networ\u212aMode":"host"}}' % BB,
                 ["host-network"], id="kelvin-networkmode"),
    pytest.param('{"Image":"%s","HostConfig":{"\u017fecurityOpt":["seccomp=unconfined"]}}' % BB,
                 ["seccomp-unconfined"], id="long-s-securityopt"),
    pytest.param('{"Image":"%s","HostConfig":{"Binds":["/:/host"],"Bind\u017f":[]}}' % BB,
                 ["host-path-protected", "request-ambiguous"], id="long-s-duplicate"),
    # JSON escapes in keys are decoded before matching.
    pytest.param('{"Image":"%s","HostConfig":{"\\u0050rivileged":true}}' % BB,
                 ["privileged"], id="escaped-key"),
])
def test_json_key_tricks(env, guarded, body, rules):
    resp = env.api("POST", "/containers/create", body_of(body), JSON, raw=True)
    assert_api_denied(env, resp, *rules)


# --------------------------------------------------------------------------- content types

@pytest.mark.parametrize("ctype", [
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/json ;charset=UTF-8",
])
def test_json_media_type_variants_are_inspected(env, guarded, ctype):
    resp = env.api("POST", "/containers/create", PRIV, [("Content-Type", ctype)], raw=True)
    assert_api_denied(env, resp, "privileged")


def test_no_content_type(env, guarded):
    # The plugin gets no body (no JSON media type). dockerd 20.10 then refuses the create
    # itself (400); a plugin deny (request-body-missing) is welcome but not required.
    resp = env.api("POST", "/containers/create", PRIV, [], raw=True)
    if resp.status != 403:
        assert resp.status == 400, f"dockerd accepted it: {resp.status} {resp.text}"
    else:
        assert_api_denied(env, resp, "privileged", "request-body-missing")


def test_form_content_type_on_create(env, guarded):
    resp = env.api("POST", "/containers/create", PRIV,
                   [("Content-Type", "application/x-www-form-urlencoded")], raw=True)
    assert_api_denied(env, resp, "request-form-body", "request-body-missing")


def test_form_body_overrides_fromimage(env, guarded):
    # Go's ParseForm merges a urlencoded body into the query values, body first:
    # dockerd would pull the body's fromImage, not the query's.
    resp = env.api("POST", "/images/create?fromImage=local/busybox&tag=1",
                   "fromImage=127.0.0.1:5999/evil&tag=latest",
                   [("Content-Type", "application/x-www-form-urlencoded")], raw=True)
    assert_api_denied(env, resp, "request-form-body")


def test_two_content_type_headers(env, guarded):
    # The plugin sees only the last value of a repeated header; dockerd reads the first.
    resp = env.api("POST", "/containers/create", PRIV,
                   [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
                   raw=True)
    if resp.status != 403:
        assert resp.status >= 400, f"dockerd accepted it: {resp.status} {resp.text}"
    else:
        assert_api_denied(env, resp, "privileged", "request-body-missing", "request-ambiguous")


# --------------------------------------------------------------------------- body not forwarded

@pytest.mark.parametrize("uri", ["/containers/create?x=/auth", "/containers/create?/auth"])
def test_auth_suffix_in_query(env, guarded, uri):
    # dockerd does not forward bodies of /auth endpoints. dockerd 20.10.24 decides on the
    # parsed path (so it does forward these); other versions compared the raw URI.
    resp = env.api("POST", uri, PRIV, JSON, raw=True)
    assert_api_denied(env, resp, "request-body-missing", "request-uri", "privileged")


def test_chunked_body(env, guarded):
    # Without a Content-Length: older dockerd forwards no body; 20.10.24 (CVE-2024-41110
    # fix) forwards it. Either way the create must be denied.
    resp = env.api("POST", "/containers/create", chunked(PRIV.encode(), 16),
                   JSON + [("Transfer-Encoding", "chunked")], raw=True)
    assert_api_denied(env, resp, "request-body-missing", "privileged")


def test_body_over_one_mib(env, guarded):
    pad = "A" * (1024 * 1024 + 16)
    body = ('{"Image":"%s","Labels":{"pad":"%s"},"HostConfig":{"Privileged":true}}'
            % (BB, pad)).encode()
    assert len(body) > 1024 * 1024
    resp = env.api("POST", "/containers/create", body, JSON, raw=True, timeout=60)
    assert_api_denied(env, resp, "request-body-missing", "privileged")


def test_body_just_under_one_mib_is_inspected(env, guarded):
    head = '{"Image":"%s","Labels":{"pad":"' % BB
    tail = '"},"HostConfig":{"Privileged":true}}'
    pad = "A" * (1024 * 1024 - 1 - len(head) - len(tail))
    body = (head + pad + tail).encode()
    assert len(body) == 1024 * 1024 - 1
    resp = env.api("POST", "/containers/create", body, JSON, raw=True, timeout=60)
    assert_api_denied(env, resp, "privileged")


# --------------------------------------------------------------------------- legacy start

@pytest.fixture
def created_container(env):
    resp = env.api("POST", "/containers/create",
                   {"Image": BB, "Cmd": ["/bin/busybox", "true"],
                    "HostConfig": {"NetworkMode": "none"}})
    assert resp.status == 201, resp.text
    cid = resp.json()["Id"]
    yield cid
    env.api("DELETE", f"/containers/{cid}?force=1")


@pytest.mark.parametrize("body", [
    '{"Privileged":true}',
    '{"Binds":["/:/host"]}',
    '{"privileged":true}',
])
def test_legacy_start_with_hostconfig(env, created_container, body):
    # API < 1.24: dockerd 20.10 applies a HostConfig sent with start.
    resp = env.api("POST", f"/v1.23/containers/{created_container}/start", body, JSON, raw=True)
    assert_api_denied(env, resp, "privileged", "host-path-protected", "request-uri")
    hc = next(c["hostconfig"] for c in env.containers_on_disk() if c["id"] == created_container)
    assert not hc.get("Privileged")
    assert not hc.get("Binds")
    assert dangerous_containers(env) == []


def test_current_start_without_body_allowed(env, created_container):
    resp = env.api("POST", f"/containers/{created_container}/start")
    assert resp.status == 204, resp.text


# --------------------------------------------------------------------------- sanity

def test_benign_raw_create_minimal_body_allowed(env):
    """The crafted bodies above carry no "Cmd": a harmless one like them is created."""
    resp = env.api("POST", "/containers/create", '{"Image":"%s"}' % BB, JSON, raw=True)
    assert resp.status == 201, resp.text
    env.api("DELETE", f"/containers/{resp.json()['Id']}?force=1")


def test_benign_raw_create_allowed(env):
    """The same raw channel lets a harmless create through (the tests above are not vacuous)."""
    name = f"raw-{uuid.uuid4().hex[:8]}"
    body = '{"Image":"%s","Cmd":["/bin/busybox","true"],"HostConfig":{"Privileged":false}}' % BB
    resp = env.api("POST", f"/v1.41/containers/create?name={name}", body,
                   [("Content-Type", "application/json; charset=utf-8")], raw=True)
    assert resp.status == 201, resp.text
    env.api("DELETE", f"/containers/{name}?force=1")


def test_nothing_dangerous_left(env):
    assert dangerous_containers(env) == []
