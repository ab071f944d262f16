"""check_run: the local image, resolved through (a stand-in for) dockerd's API, must be the
config of a registry manifest whose digest carries a valid signature. Local re-tags,
load/import/commit/build output and forged repo digests are denied."""

import json
import os
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote

import pytest

from authz.deadline import Deadline
from authz.moby.client import DockerClient, DockerError
from authz.moby.reference import InvalidReference, is_image_id, parse_reference
from authz.trust import ImageTrust
from tests.support.cosign import Key, write_trust_policy

NAME = "team/app"


class FakeDockerd:
    """``GET /images/{ref}/json`` over a unix socket, resolving like dockerd's GetImage:
    an id, then the reference store (a digest wins over a tag, bare name = :latest), then
    an id prefix."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.images: list[dict] = []
        self.status: tuple[int, str] | None = None   # force an error answer
        self.hang = False
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def address_string(self):
                return "unix"

            def do_GET(self):
                owner.requests.append({"path": self.path, "headers": dict(self.headers)})
                if owner.hang:
                    time.sleep(30)
                    return
                if owner.status:
                    code, msg = owner.status
                    return self._json(code, {"message": msg})
                if not (self.path.startswith("/images/") and self.path.endswith("/json")):
                    return self._json(404, {"message": "page not found"})
                image = owner.resolve(unquote(self.path[len("/images/"):-len("/json")]))
                if image is None:
                    return self._json(404, {"message": "No such image"})
                self._json(200, image)

            def _json(self, code, data):
                body = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(self.path, Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def add(self, image_id, tags=(), digests=(), arch="amd64"):
        self.images.append({"Id": image_id, "RepoTags": list(tags), "RepoDigests": list(digests),
                            "Os": "linux", "Architecture": arch})

    def resolve(self, ref: str):
        if is_image_id(ref):
            want = ref if ref.startswith("sha256:") else f"sha256:{ref}"
            return next((i for i in self.images if i["Id"] == want), None)
        try:
            r = parse_reference(ref)
        except InvalidReference:
            r = None
        if r is not None:
            if r.digest:
                want = str(r.favor_digest())
                found = [i for i in self.images
                         if want in (str(parse_reference(d)) for d in i["RepoDigests"])]
            else:
                want = str(r.with_default_tag())
                found = [i for i in self.images
                         if want in (str(parse_reference(t)) for t in i["RepoTags"])]
            if found:
                return found[0]
        prefix = ref.removeprefix("sha256:")
        hits = [i for i in self.images if i["Id"].removeprefix("sha256:").startswith(prefix)]
        return hits[0] if len(hits) == 1 else None

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


@pytest.fixture(scope="module")
def key():
    return Key()


@pytest.fixture
def dockerd(tmp_path):
    d = FakeDockerd(tmp_path / "docker.sock")
    yield d
    d.close()


def make_trust(tmp_path, registry, dockerd, key, extra="", **kw) -> ImageTrust:
    write_trust_policy(tmp_path / "p", keys={"team": key}, insecure=[registry.host], extra=extra,
                       **kw)
    return ImageTrust(ImageTrust.load(tmp_path / "p", None).policy, DockerClient(dockerd.host))


@pytest.fixture
def trust(tmp_path, registry, dockerd, key):
    return make_trust(tmp_path, registry, dockerd, key)


def pulled(registry, dockerd, img, tag="1"):
    """What dockerd records after `docker pull REG/team/app:TAG`."""
    repo = f"{registry.host}/{img.name}"
    dockerd.add(img.config_digest, tags=[f"{repo}:{tag}"], digests=[f"{repo}@{img.digest}"])


# ------------------------------------------------------------------ allowed

def test_signed_pulled_image_runs(registry, pusher, dockerd, trust, key):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    pulled(registry, dockerd, img)
    result = trust.check_run(f"{registry.host}/{NAME}:1")
    assert result.allowed, result.message
    assert result.rule == "image-signature"
    assert result.digest == img.digest
    assert result.image_id == img.config_digest
    assert result.key_fingerprint == key.fingerprint
    assert result.reference == f"{registry.host}/{NAME}:1"
    assert dockerd.requests[0]["path"] == f"/images/{registry.host}/{NAME}:1/json"
    # an ordinary request: nothing in it marks it as the plugin's own
    assert not any(h.lower().startswith("x-") for h in dockerd.requests[0]["headers"])


@pytest.mark.parametrize("how", ["full-id", "bare-hex", "short-id", "digest-ref"])
def test_signed_image_runs_by_id_or_digest(registry, pusher, dockerd, trust, key, how):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    pulled(registry, dockerd, img)
    hexid = img.config_digest.removeprefix("sha256:")
    reference = {"full-id": img.config_digest, "bare-hex": hexid, "short-id": hexid[:12],
                 "digest-ref": f"{registry.host}/{NAME}@{img.digest}"}[how]
    result = trust.check_run(reference)
    assert result.allowed, result.message
    assert result.digest == img.digest


def test_index_signed_or_platform_manifest_signed(registry, pusher, dockerd, trust, key):
    amd = pusher.push_image(NAME, None, seed="amd")
    arm = pusher.push_image(NAME, None, seed="arm", architecture="arm64")
    index = pusher.push_index(NAME, "multi", [(arm, "arm64"), (amd, "amd64")])
    repo = f"{registry.host}/{NAME}"
    dockerd.add(amd.config_digest, tags=[f"{repo}:multi"], digests=[f"{repo}@{index}"])
    denied = trust.check_run(f"{repo}:multi")
    assert not denied.allowed
    pusher.sign(NAME, amd.digest, key)                 # the platform manifest only
    ok = trust.check_run(f"{repo}:multi")
    assert ok.allowed and ok.digest == amd.digest, ok.message


def test_index_signature_covers_its_platform_manifests(tmp_path, registry, pusher, dockerd, key):
    trust = make_trust(tmp_path, registry, dockerd, key)
    amd = pusher.push_image(NAME, None, seed="amd")
    index = pusher.push_index(NAME, "multi", [(amd, "amd64")])
    pusher.sign(NAME, index, key)
    repo = f"{registry.host}/{NAME}"
    dockerd.add(amd.config_digest, tags=[f"{repo}:multi"], digests=[f"{repo}@{index}"])
    result = trust.check_run(f"{repo}:multi")
    assert result.allowed and result.digest == index, result.message


def test_containerd_store_id_is_the_manifest_digest(registry, pusher, dockerd, trust, key):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    repo = f"{registry.host}/{NAME}"
    dockerd.add(img.digest, tags=[f"{repo}:1"], digests=[f"{repo}@{img.digest}"])
    assert trust.check_run(f"{repo}:1").allowed


def test_second_repo_digest_may_be_the_signed_one(registry, pusher, dockerd, trust, key):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    repo = f"{registry.host}/{NAME}"
    bogus = "sha256:" + "0" * 64
    dockerd.add(img.config_digest, tags=[f"{repo}:1"],
                digests=[f"{repo}@{bogus}", f"{repo}@{img.digest}"])
    assert trust.check_run(f"{repo}:1").allowed


def test_image_not_present_locally_is_left_to_dockerd(registry, dockerd, trust):
    result = trust.check_run(f"{registry.host}/{NAME}:9")
    assert result.allowed and result.rule == "image-not-local"


def test_exception_by_name_for_a_local_image(tmp_path, registry, dockerd, key):
    trust = make_trust(tmp_path, registry, dockerd, key, extra=(
        "exceptions:\n  - pattern: docker.io/local/busybox\n    reason: test image, imported\n"))
    dockerd.add("sha256:" + "1" * 64, tags=["local/busybox:1"])
    result = trust.check_run("local/busybox:1")
    assert result.allowed and result.rule == "image-unsigned-exception"
    assert result.image_id == "sha256:" + "1" * 64
    by_id = trust.check_run("1" * 12)
    assert by_id.allowed and by_id.rule == "image-unsigned-exception"


# ------------------------------------------------------------------ denied

def test_unsigned_pulled_image(registry, pusher, dockerd, trust):
    img = pusher.push_image(NAME, "1")
    pulled(registry, dockerd, img)
    result = trust.check_run(f"{registry.host}/{NAME}:1")
    assert not result.allowed and "no signature" in result.found
    assert f"{registry.host}/{NAME}@{img.digest}" in result.fix
    assert result.image_id == img.config_digest


def test_local_retag_of_an_unsigned_image(registry, pusher, dockerd, trust, key):
    """docker tag evil REG/team/app:1 -- the name is signed elsewhere, the image is not."""
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    evil = "sha256:" + "e" * 64
    dockerd.add(evil, tags=[f"{registry.host}/{NAME}:1"])
    result = trust.check_run(f"{registry.host}/{NAME}:1")
    assert not result.allowed
    assert f"no digest from {registry.host}/{NAME}" in result.found
    assert "load, import, commit or build" in result.found
    assert result.image_id == evil


def test_retag_of_an_image_signed_for_another_repository(registry, pusher, dockerd, trust, key):
    other = pusher.push_image("team/other", "1", seed="other")
    pusher.sign("team/other", other.digest, key)
    repo_other = f"{registry.host}/team/other"
    dockerd.add(other.config_digest, tags=[f"{repo_other}:1", f"{registry.host}/{NAME}:1"],
                digests=[f"{repo_other}@{other.digest}"])
    as_app = trust.check_run(f"{registry.host}/{NAME}:1")
    assert not as_app.allowed and f"no digest from {registry.host}/{NAME}" in as_app.found
    # by its own name, or by id, it is the signed team/other image
    assert trust.check_run(f"{repo_other}:1").allowed
    assert trust.check_run(other.config_digest).allowed


def test_forged_repo_digest_does_not_match_the_config(registry, pusher, dockerd, trust, key):
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    evil = "sha256:" + "e" * 64
    repo = f"{registry.host}/{NAME}"
    dockerd.add(evil, tags=[f"{repo}:1"], digests=[f"{repo}@{img.digest}"])
    result = trust.check_run(f"{repo}:1")
    assert not result.allowed
    assert f"has config {img.config_digest}, not the local image {evil}" in result.found


def test_loaded_or_imported_image_without_digest(registry, dockerd, trust):
    dockerd.add("sha256:" + "2" * 64, tags=["local/busybox:1"])
    result = trust.check_run("local/busybox:1")
    assert not result.allowed and "no digest from docker.io/local/busybox" in result.found


def test_nameless_image_by_id(registry, dockerd, trust):
    dockerd.add("sha256:" + "3" * 64)
    result = trust.check_run("3" * 64)
    assert not result.allowed and "no name and no registry digest" in result.found


def test_platform_not_in_index(registry, pusher, dockerd, trust, key):
    amd = pusher.push_image(NAME, None, seed="amd")
    index = pusher.push_index(NAME, "multi", [(amd, "amd64")])
    pusher.sign(NAME, index, key)
    repo = f"{registry.host}/{NAME}"
    dockerd.add("sha256:" + "4" * 64, tags=[f"{repo}:multi"], digests=[f"{repo}@{index}"])
    result = trust.check_run(f"{repo}:multi")
    assert not result.allowed and "no platform manifest" in result.found


def test_rejected_name(tmp_path, registry, dockerd, key):
    trust = make_trust(tmp_path, registry, dockerd, key, extra=(
        "rules:\n  - pattern: docker.io\n    require: reject\n    reason: use the mirror\n"))
    dockerd.add("sha256:" + "5" * 64, tags=["busybox:latest"])
    result = trust.check_run("busybox")
    assert not result.allowed and result.rule == "image-rejected" and "use the mirror" in result.found


def test_dockerd_refuses_the_inspect(registry, dockerd, trust):
    dockerd.status = (403, "authorization denied by plugin pyauthz: nope")
    result = trust.check_run(f"{registry.host}/{NAME}:1")
    assert not result.allowed and result.rule == "image-trust-error"
    assert "GET /images/*/json" in result.found


def test_dockerd_missing(tmp_path, registry, key):
    write_trust_policy(tmp_path, keys={"team": key}, insecure=[registry.host])
    trust = ImageTrust.load(tmp_path, DockerClient(f"unix://{tmp_path}/nothing.sock"))
    result = trust.check_run("busybox")
    assert not result.allowed and "cannot reach dockerd" in result.found
    assert not ImageTrust.load(tmp_path, None).check_run("busybox").allowed


def test_dockerd_that_never_answers_ends_within_the_deadline(registry, dockerd, trust):
    """All plugin threads busy (or dockerd stuck): the inspect times out and the check
    denies -- it never waits for ever."""
    dockerd.hang = True
    started = time.monotonic()
    result = trust.check_run(f"{registry.host}/{NAME}:1")
    elapsed = time.monotonic() - started
    assert not result.allowed and "did not answer" in result.found
    assert elapsed < trust.policy.timeouts.decision + 1.0, elapsed


def test_dockerd_wait_is_bounded_by_the_decisions_deadline(registry, dockerd, trust):
    """The shared client's own timeout (2 s) is capped by what is left of the decision."""
    dockerd.hang = True
    started = time.monotonic()
    result = trust.check_run(f"{registry.host}/{NAME}:1", Deadline(0.5))
    elapsed = time.monotonic() - started
    assert not result.allowed and "did not answer within 0.5s" in result.found, result.found
    assert elapsed < 0.5 + 0.5, elapsed


def test_load_takes_the_plugins_client_or_none(tmp_path, registry, dockerd, key):
    write_trust_policy(tmp_path, keys={"team": key}, insecure=[registry.host])
    client = DockerClient(dockerd.host)
    assert ImageTrust.load(tmp_path, client).docker is client
    without = ImageTrust.load(tmp_path, None)
    assert without.docker is None
    assert any("no docker host" in w for w in without.startup_warnings())
    assert not any("no docker host" in w for w in ImageTrust.load(tmp_path, client)
                   .startup_warnings())


def test_registry_down_uses_a_cached_run_verification(tmp_path, pusher, registry, dockerd, key):
    trust = make_trust(tmp_path, registry, dockerd, key)
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    pulled(registry, dockerd, img)
    assert trust.check_run(f"{registry.host}/{NAME}:1").allowed
    registry.stop()
    cached = trust.check_run(f"{registry.host}/{NAME}:1")
    assert cached.allowed and cached.cached
    fresh = make_trust(tmp_path, registry, dockerd, key)       # empty cache
    down = fresh.check_run(f"{registry.host}/{NAME}:1")
    assert not down.allowed and "unreachable" in down.found and "must answer" in down.fix


def test_no_key_configured_denies_with_where_to_add_it(tmp_path, registry, dockerd):
    write_trust_policy(tmp_path, keys={}, insecure=[registry.host])
    trust = ImageTrust.load(tmp_path, DockerClient(dockerd.host))
    dockerd.add("sha256:" + "6" * 64, tags=["local/busybox:1"])
    result = trust.check_run("local/busybox:1")
    assert not result.allowed and "no trusted key" in result.found
    assert f"{tmp_path / 'trust.yaml'} line 2" in result.fix


@pytest.mark.parametrize("form", ["short", "full"])
def test_an_id_normalized_as_a_name_is_still_judged(registry, pusher, dockerd, trust, key, form):
    """A caller that turned `docker run e1aa26f1b185` into docker.io/library/e1aa26f1b185:latest
    must not make an unsigned local image look absent."""
    evil = "sha256:" + "ab12" * 16
    dockerd.add(evil)                      # nameless, unsigned
    hexid = evil.removeprefix("sha256:")
    normalized = {"short": f"docker.io/library/{hexid[:12]}:latest",
                  "full": f"docker.io/library/sha256:{hexid}"}[form]
    result = trust.check_run(normalized)
    assert not result.allowed and result.image_id == evil, result.message
    # a signed image reached that way runs
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    pulled(registry, dockerd, img)
    signed_hex = img.config_digest.removeprefix("sha256:")
    ok = trust.check_run({"short": f"docker.io/library/{signed_hex[:12]}:latest",
                          "full": f"docker.io/library/sha256:{signed_hex}"}[form])
    assert ok.allowed, ok.message
    # a real absent name is still left to dockerd
    assert trust.check_run("docker.io/library/nothing-here:1").rule == "image-not-local"


def test_a_run_check_the_policy_or_the_cache_decides_is_made_on_the_callers_thread(
        tmp_path, pusher, registry, dockerd, key):
    """No pool hand-over (two thread switches per create and start) unless a registry must
    be asked; a check that must ask one is made on the pool, bounded, as before."""
    trust = make_trust(tmp_path, registry, dockerd, key, extra=(
        "exceptions:\n  - pattern: docker.io/local/busybox\n    reason: test image, imported\n"))
    pooled = []
    bounded = trust._bounded
    trust._bounded = lambda *a: pooled.append(a[0]) or bounded(*a)
    dockerd.add("sha256:" + "1" * 64, tags=["local/busybox:1"])
    assert trust.check_run("local/busybox:1").allowed
    img = pusher.push_image(NAME, "1")
    pusher.sign(NAME, img.digest, key)
    pulled(registry, dockerd, img)
    assert trust.check_run(f"{registry.host}/{NAME}:1").allowed      # asks the registry
    assert pooled == [f"{registry.host}/{NAME}:1"]
    registry.stop()
    again = trust.check_run(f"{registry.host}/{NAME}:1")             # verified, cached
    assert again.allowed and again.cached
    assert pooled == [f"{registry.host}/{NAME}:1"] and trust._pool is not None


def test_a_failure_on_the_callers_thread_denies(trust):
    def broken(reference, deadline, offline=False):
        raise RuntimeError("boom")
    trust._local.check = broken
    result = trust.check_run("local/busybox:1")
    assert not result.allowed and "internal error (RuntimeError: boom)" in result.found


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_dockerd_trickling_its_answer_cannot_stretch_the_deadline(tmp_path, part, transport):
    """Every read of dockerd's answer ends by the decision's deadline, not only each read
    (red team, this session: one byte every 0.3 s kept an inline run check for a minute)."""
    if transport == "unix":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(tmp_path / "trickle.sock"))
        host = f"unix://{tmp_path / 'trickle.sock'}"
    else:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        host = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.listen(4)
    done = threading.Event()

    def answer():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            body = b'{"Id": "sha256:' + b"1" * 64 + b'", "RepoTags": ["local/busybox:1"]}'
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
            slow = head + b"\r\n" + body
            fast = len(head) if part == "body" else 0
            try:
                conn.sendall(slow[:fast])
                for byte in slow[fast:]:
                    if done.wait(0.3):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                pass

    threading.Thread(target=answer, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(DockerError, match="did not answer"):
            DockerClient(host).inspect_image("local/busybox:1", Deadline(1.0))
        assert time.monotonic() - started < 1.6
    finally:
        done.set()
        server.close()
