"""ImageTrust: the decisions the pipeline asks for -- may this image be pulled, may it run.

- ``check_pull(ref)``: ``POST /images/create?fromImage=...``. Resolve a tag to a digest at
  the registry and require a valid signature on that digest.
- ``check_service(ref)``: service create/update. Same as a pull, except that a bare name
  means ``:latest`` (a pull of a bare name fetches every tag).
- ``check_run(ref)``: container create. What runs is the *local* image, so a name proves
  nothing: ask dockerd for the image (id, repo digests), and require that the image id is
  the config of a registry manifest whose digest (or whose index's digest) carries a valid
  signature. A local tag, ``docker load``/``import``/``commit``/``build`` output has no such
  digest and is denied.

Pass references as the request carries them: ``check_run`` the container's ``Image``
string exactly (an id, an id prefix or a name: dockerd resolves it, and so does this
module); ``check_pull`` fromImage joined with tag as dockerd joins them (see
``reference.pull_reference``), keeping a bare name bare (it means every tag).

Every check ends within the policy's decision deadline (4 s by default): registry and
dockerd calls are bounded by it, and the check runs on a small pool so that the caller's
wait is bounded even if a socket misbehaves. Anything unexpected denies.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from authz.trust.cache import TTLCache
from authz.moby.ids import is_full_id, is_id_prefix
from authz.moby.client import DockerClient, DockerError
from authz.trust.credentials import credentials_mode_warning, load_credentials
from authz.trust.policy import ACCEPT, REJECT, Requirement, TrustPolicy
from authz.trust.policyfile import load_policy
from authz.moby.reference import (
    SHA256_DIGEST_RE,
    InvalidReference,
    Reference,
    is_image_id,
    manifest_tag_for_signature,
    parse_reference,
)
from authz.trust.registry import (
    Deadline,
    DeadlineExceeded,
    Manifest,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
)
from authz.trust.signatures import SignatureOutcome, verify_layers

log = logging.getLogger(__name__)

RULE_SIGNATURE = "image-signature"
RULE_REJECTED = "image-rejected"
RULE_EXCEPTION = "image-unsigned-exception"
RULE_ACCEPTED = "image-accepted"
RULE_NOT_LOCAL = "image-not-local"
RULE_REFERENCE = "image-reference"
RULE_ERROR = "image-trust-error"

MAX_INDEX_CHILDREN = 16
_POOL_WORKERS = 32


@dataclass(frozen=True)
class TrustResult:
    allowed: bool
    rule: str            # image-signature | image-rejected | image-unsigned-exception | ...
    reference: str       # normalized, e.g. "127.0.0.1:5000/team/app:1"
    digest: str | None   # resolved manifest digest
    key_fingerprint: str | None  # "sha256:..." of the DER SubjectPublicKeyInfo
    found: str           # what was found, one line
    fix: str             # how to fix; names trust.yaml and the line to add where relevant
    expected: str = ""   # what the policy asked for (key names/fingerprints, identity)
    key_name: str | None = None
    policy: str | None = None      # which rule decided: "rule '...' at /p/trust.yaml:14"
    image_id: str | None = None    # the local image (check_run)
    cached: bool = False           # allowed from a still-valid earlier verification

    @property
    def message(self) -> str:
        """One line for the client (the deny ``Msg``) and the log."""
        subject = f"image {self.reference}"
        if self.digest and self.digest not in self.reference:
            subject += f" ({self.digest})"
        if self.allowed:
            if self.key_fingerprint:
                return (f"{subject}: signed by {self.key_name} ({self.key_fingerprint})"
                        + (" [cached verification]" if self.cached else ""))
            return f"{subject}: {self.found}"
        parts = [subject + ":"]
        if self.expected:
            parts.append(f"expected {self.expected};")
        parts.append(f"found {self.found}.")
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return " ".join(parts)

    def log_fields(self) -> dict:
        """Fields for the decision log. Never contains credentials."""
        return {
            "trust_allowed": self.allowed,
            "trust_rule": self.rule,
            "image": self.reference,
            "image_digest": self.digest,
            "image_id": self.image_id,
            "key_fingerprint": self.key_fingerprint,
            "key_name": self.key_name,
            "trust_policy": self.policy,
            "trust_expected": self.expected,
            "trust_found": self.found,
            "trust_cached": self.cached,
        }


@dataclass(frozen=True)
class _Verified:
    key_name: str
    key_fingerprint: str
    identity: str
    signed_digest: str


class ImageTrust:
    def __init__(self, policy: TrustPolicy, docker_host: str | None, *,
                 credentials: dict | None = None, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.docker_host = docker_host
        if credentials is None:
            credentials = load_credentials(policy.credentials_file) if policy.credentials_file else {}
        self._registry = RegistryClient(policy.registry, credentials, policy.timeouts)
        self._docker = DockerClient(docker_host, timeout=min(2.0, policy.timeouts.decision)) \
            if docker_host else None
        self._cache: TTLCache[_Verified] = TTLCache(policy.cache.ttl_seconds,
                                                     policy.cache.max_entries, clock=clock)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_pid = None
        self._pool_lock = threading.Lock()

    @classmethod
    def load(cls, policy_dir: Path, docker_host: str | None) -> "ImageTrust":
        """Read ``policy_dir/trust.yaml`` (and the key/CA/credentials files it names);
        raises TrustPolicyError with ``file:line`` on any problem."""
        return cls(load_policy(Path(policy_dir)), docker_host)

    # ------------------------------------------------------------------ startup
    def startup_warnings(self) -> list[str]:
        p = self.policy
        out = []
        if not p.keys:
            out.append(f"image trust: no trusted key configured: every image will be denied "
                       f"(except the exceptions); add a key under {p.where_keys}")
        for req in p.rules:
            if req.action == ACCEPT:
                out.append(f"image trust: {req.label} accepts unsigned images: {req.reason}")
        for host, settings in sorted(p.registries.items()):
            if settings.insecure:
                out.append(f"image trust: registry {host} is reached over plain HTTP "
                           f"(insecure: true at {settings.source})")
        if p.credentials_file:
            warning = credentials_mode_warning(p.credentials_file)
            if warning:
                out.append(f"image trust: {warning}")
        if not self.docker_host:
            out.append("image trust: no docker host: container create is denied for every "
                       "image that needs a signature")
        return out

    # ------------------------------------------------------------------ public checks
    def check_pull(self, reference: str) -> TrustResult:
        """``POST /images/create?fromImage=`` (tag or digest joined); a bare name pulls
        every tag and is only allowed where no signature is required."""
        return self._bounded(reference, lambda d: self._check_registry(reference, d, all_tags=True))

    def check_service(self, reference: str) -> TrustResult:
        """Service create/update: the image nodes will pull (bare name = ``:latest``)."""
        return self._bounded(reference, lambda d: self._check_registry(reference, d, all_tags=False))

    def check_run(self, reference: str) -> TrustResult:
        """Container create: verify the local image dockerd resolves ``reference`` to."""
        return self._bounded(reference, lambda d: self._check_run(reference, d))

    # ------------------------------------------------------------------ bounding
    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_POOL_WORKERS, thread_name_prefix="pyauthz-trust")
                self._pool_pid = os.getpid()
            return self._pool

    def _bounded(self, reference: str, fn: Callable[[Deadline], TrustResult]) -> TrustResult:
        deadline = Deadline(self.policy.timeouts.decision)

        def run() -> TrustResult:
            try:
                return fn(deadline)
            except DeadlineExceeded as exc:
                return self._error(reference, str(exc))
            except Exception as exc:
                log.exception("image trust check failed")
                return self._error(reference, f"internal error ({type(exc).__name__}: {exc})")

        future = self._executor().submit(run)
        try:
            return future.result(timeout=deadline.total + 0.25)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return self._error(reference, f"no decision within the {deadline.total:g}s deadline")

    def _error(self, reference: str, why: str) -> TrustResult:
        return TrustResult(False, RULE_ERROR, _display(reference), None, None, why,
                           "retry; if it persists, check that the registry and dockerd answer "
                           "quickly (see timeouts: in trust.yaml)")

    # ------------------------------------------------------------------ policy outcomes
    def _policy_outcome(self, ref: Reference, req: Requirement, shown: str,
                        image_id: str | None = None) -> TrustResult | None:
        """The result for reject/accept rules and for 'no key', else None (verify)."""
        p = self.policy
        if req.action == REJECT:
            why = f" ({req.reason})" if req.reason else ""
            return TrustResult(False, RULE_REJECTED, shown, ref.digest, None,
                               f"{ref.repository} is rejected by the {req.label}{why}",
                               f"this registry/repository may not be used; change that rule in "
                               f"{p.path} if it should be", expected="another repository",
                               policy=req.label, image_id=image_id)
        if req.action == ACCEPT:
            rule = RULE_EXCEPTION if req.origin == "exception" else RULE_ACCEPTED
            return TrustResult(True, rule, shown, ref.digest, None,
                               f"accepted without signature by the {req.label}: {req.reason}",
                               "", policy=req.label, image_id=image_id)
        if not req.keys:
            return TrustResult(False, RULE_SIGNATURE, shown, ref.digest, None,
                               "no trusted key is configured, so no signature can be valid",
                               f"add your cosign public key (cosign.pub) under {p.where_keys}; "
                               f"or accept this image unsigned with "
                               f"`- {{pattern: {ref.repository}, reason: ...}}` under "
                               f"{p.where_exceptions}",
                               expected=f"a signature ({req.label})", policy=req.label,
                               image_id=image_id)
        return None

    def _expected(self, req: Requirement, repository: str) -> str:
        return (f"a cosign signature by {req.keys_text()} for identity "
                f"{req.identity.describe(repository)} ({req.label})")

    def _fix_for(self, outcome: SignatureOutcome | None, req: Requirement, repo: str,
                 digest: str | None) -> str:
        p = self.policy
        target = f"{repo}@{digest}" if digest else repo
        sign = f"cosign sign --key cosign.key --tlog-upload=false {target}"
        if outcome is not None and outcome.untrusted_only:
            return (f"if the security team trusts the key that signed it, add its public key "
                    f"under {p.where_keys}; else sign with a trusted key: {sign}")
        return (f"sign it with a trusted key: {sign}; or accept it unsigned with "
                f"`- {{pattern: {repo}, reason: ...}}` under {p.where_exceptions}")

    # ------------------------------------------------------------------ signatures
    def _verify_digest(self, repo: Reference, digest: str, req: Requirement,
                       deadline: Deadline) -> tuple[_Verified | None, SignatureOutcome | None, bool]:
        """(verified, failed outcome, cached). Raises RegistryError if unreachable."""
        key = ("sig", repo.repository, digest, req.cache_key)
        hit = self._cache.get(key)
        if hit is not None:
            return hit, None, True
        tag = manifest_tag_for_signature(digest)
        try:
            sig = self._registry.manifest(repo, tag, deadline)
        except RegistryNotFound:
            return None, SignatureOutcome(False, found=f"no signature ({repo.repository} has no "
                                                       f"tag {tag})"), False
        if sig.is_index:
            return None, SignatureOutcome(False, found=f"{repo.repository}:{tag} is an index, "
                                                       f"not a cosign signature manifest"), False
        outcome = verify_layers(sig.data,
                                lambda d, limit: self._registry.blob(repo, d, limit, deadline),
                                digest, repo.repository, req.keys, req.identity)
        if not outcome.ok:
            return None, outcome, False
        verified = _Verified(outcome.key.name, outcome.key.fingerprint, outcome.identity or "",
                             digest)
        self._cache.put(key, verified)
        return verified, None, False

    # ------------------------------------------------------------------ pull / service
    def _check_registry(self, reference: str, deadline: Deadline, all_tags: bool) -> TrustResult:
        try:
            ref = parse_reference(reference.removesuffix(":") if all_tags else reference)
        except InvalidReference as exc:
            return TrustResult(False, RULE_REFERENCE, _display(reference), None, None, str(exc),
                               "use a valid image reference")
        if not all_tags:
            ref = ref.with_default_tag()
        ref = ref.favor_digest() if ref.digest else ref
        shown = str(ref)
        req = self.policy.requirement_for(ref)
        decided = self._policy_outcome(ref, req, shown)
        if decided is not None:
            return decided
        repo = Reference(ref.domain, ref.path)
        expected = self._expected(req, repo.repository)
        if ref.name_only:
            return TrustResult(False, RULE_SIGNATURE, shown, None, None,
                               "a pull of every tag (no tag or digest), which cannot be "
                               "verified tag by tag", f"pull one tag or digest, e.g. {shown}:latest",
                               expected=expected, policy=req.label)
        digest = ref.digest
        if digest is None:
            try:
                manifest = self._registry.manifest(repo, ref.tag, deadline)
            except RegistryError as exc:
                return TrustResult(False, RULE_SIGNATURE, shown, None, None,
                                   f"tag {ref.tag} not resolved: {exc}",
                                   _registry_fix(exc, ref), expected=expected, policy=req.label)
            digest = manifest.digest
        if not SHA256_DIGEST_RE.match(digest):
            return TrustResult(False, RULE_SIGNATURE, shown, digest, None,
                               "a digest that is not sha256", "use a sha256 digest",
                               expected=expected, policy=req.label)
        try:
            verified, outcome, cached = self._verify_digest(repo, digest, req, deadline)
        except RegistryError as exc:
            return TrustResult(False, RULE_SIGNATURE, shown, digest, None,
                               f"signatures not readable: {exc}", _registry_fix(exc, ref, self),
                               expected=expected, policy=req.label)
        if verified is None:
            return TrustResult(False, RULE_SIGNATURE, shown, digest, None, outcome.found,
                               self._fix_for(outcome, req, repo.repository, digest),
                               expected=expected, policy=req.label)
        return TrustResult(True, RULE_SIGNATURE, shown, digest, verified.key_fingerprint,
                           f"valid signature by {verified.key_name} for {verified.identity}",
                           "", expected=expected, key_name=verified.key_name, policy=req.label,
                           cached=cached)

    # ------------------------------------------------------------------ run
    def _check_run(self, reference: str, deadline: Deadline) -> TrustResult:
        shown = _display(reference)
        if not reference or not isinstance(reference, str):
            return TrustResult(False, RULE_REFERENCE, shown, None, None, "no image named",
                               "name an image")
        if self._docker is None:
            return TrustResult(False, RULE_ERROR, shown, None, None,
                               "no docker host configured to resolve the local image",
                               "start pyauthz serve with --docker-host")
        ref = None
        if not is_image_id(reference):
            try:
                ref = parse_reference(reference)
            except InvalidReference:
                ref = None   # perhaps a short image id: dockerd decides
        try:
            info = self._docker.inspect_image(reference, deadline)
        except DockerError as exc:
            return TrustResult(False, RULE_ERROR, shown, None, None,
                               f"the local image could not be resolved: {exc}",
                               "retry; check that dockerd answers and that the policy allows "
                               "GET /images/*/json")
        if info is None and ref is not None:
            # A caller that normalized an image id as if it were a name ("e1aa26f1b185" ->
            # docker.io/library/e1aa26f1b185:latest) would hide the image dockerd runs:
            # look the id up too, and judge that image if there is one.
            alias = _id_behind_name(ref)
            if alias is not None:
                try:
                    info = self._docker.inspect_image(alias, deadline)
                except DockerError as exc:
                    return TrustResult(False, RULE_ERROR, shown, None, None,
                                       f"the local image could not be resolved: {exc}",
                                       "retry; check that dockerd answers")
                if info is not None:
                    ref = None
        if info is None:
            return TrustResult(True, RULE_NOT_LOCAL, str(ref.with_default_tag()) if ref else shown,
                               None, None, "no such local image: dockerd refuses the create, and "
                               "the client's pull is checked on its own", "")
        image_id = info["Id"]
        repo_digests = _parse_all(info.get("RepoDigests"))
        repo_tags = _parse_all(info.get("RepoTags"))
        if ref is not None and _resolved_by_name(ref, repo_tags, repo_digests):
            return self._run_as(ref.with_default_tag().favor_digest(), image_id, info,
                                repo_digests, deadline)
        # An image id (or id prefix): as trusted as the best of the names it has.
        names: list[Reference] = []
        seen = set()
        for r in repo_digests + repo_tags:
            if r.repository not in seen:
                seen.add(r.repository)
                names.append(r)
        if not names:
            return TrustResult(False, RULE_SIGNATURE, shown, None, None,
                               f"local image {image_id} has no name and no registry digest "
                               f"(built, loaded, imported or committed locally)",
                               "push it to a registry, sign it there, and run it as pulled "
                               "from there", expected="an image pulled from a registry with a "
                               "valid signature", image_id=image_id)
        denies = []
        for name in names:
            result = self._run_as(name, image_id, info, repo_digests, deadline, shown=shown)
            if result.allowed:
                return result
            denies.append(result)
        first = denies[0]
        found = "; ".join(f"as {n.repository}: {d.found}" for d, n in zip(denies, names, strict=True))
        return TrustResult(False, first.rule, shown, first.digest, None, found, first.fix,
                           expected=first.expected, policy=first.policy, image_id=image_id)

    def _run_as(self, name: Reference, image_id: str, info: dict, repo_digests: list[Reference],
                deadline: Deadline, shown: str | None = None) -> TrustResult:
        shown = shown or str(name)
        req = self.policy.requirement_for(name)
        decided = self._policy_outcome(name, req, shown, image_id=image_id)
        if decided is not None:
            return decided
        repo = Reference(name.domain, name.path)
        expected = (f"the local image {image_id[:19]}… to be a manifest in {repo.repository} "
                    f"with " + self._expected(req, repo.repository))
        digests = [r.digest for r in repo_digests if r.repository == repo.repository and r.digest]
        if not digests:
            return TrustResult(False, RULE_SIGNATURE, shown, None, None,
                               f"local image {image_id} has no digest from {repo.repository}: it "
                               f"was not pulled from there (a local tag, or docker load, import, "
                               f"commit or build output)",
                               f"pull the signed image: docker pull {repo.repository}@sha256:... "
                               f"(or the tag); or accept it unsigned with "
                               f"`- {{pattern: {repo.repository}, reason: ...}}` under "
                               f"{self.policy.where_exceptions}",
                               expected=expected, policy=req.label, image_id=image_id)
        reasons: list[str] = []
        last_outcome = None
        last_digest = digests[0]
        unreachable = None
        for digest in digests:
            run_key = ("run", repo.repository, digest, image_id, req.cache_key)
            hit = self._cache.get(run_key)
            if hit is not None:
                return self._run_allowed(shown, hit, image_id, expected, req, cached=True)
            try:
                candidates, why = self._signed_candidates(repo, digest, image_id, info, deadline)
                if not candidates:
                    reasons.append(why)
                    continue
                for cand in candidates:
                    verified, outcome, cached = self._verify_digest(repo, cand, req, deadline)
                    if verified is not None:
                        self._cache.put(run_key, verified)
                        return self._run_allowed(shown, verified, image_id, expected, req,
                                                 cached=cached)
                    last_outcome, last_digest = outcome, cand
                    reasons.append(f"{cand[:19]}…: {outcome.found}")
            except RegistryError as exc:
                if exc.unreachable:
                    unreachable = exc
                reasons.append(f"{digest[:19]}…: {exc}")
        found = "; ".join(reasons)
        if unreachable is not None:
            fix = _registry_fix(unreachable, repo, self)
        else:
            fix = self._fix_for(last_outcome, req, repo.repository, last_digest)
        return TrustResult(False, RULE_SIGNATURE, shown, last_digest, None, found, fix,
                           expected=expected, policy=req.label, image_id=image_id)

    def _run_allowed(self, shown, verified: _Verified, image_id, expected, req, cached):
        return TrustResult(True, RULE_SIGNATURE, shown, verified.signed_digest,
                           verified.key_fingerprint,
                           f"local image {image_id[:19]}… is {verified.signed_digest}, validly "
                           f"signed by {verified.key_name} for {verified.identity}", "",
                           expected=expected, key_name=verified.key_name, policy=req.label,
                           image_id=image_id, cached=cached)

    def _signed_candidates(self, repo: Reference, digest: str, image_id: str, info: dict,
                           deadline: Deadline) -> tuple[list[str], str]:
        """Digests whose signature vouches for the local image: the manifest whose config is
        the image id (and the index that lists it). Content-addressed: checked by hash."""
        if not SHA256_DIGEST_RE.match(digest):
            return [], f"{digest[:19]}…: not a sha256 digest"
        manifest = self._registry.manifest(repo, digest, deadline)
        if not manifest.is_index:
            if manifest.config_digest == image_id or digest == image_id:
                return [digest], ""
            return [], (f"{repo.repository}@{digest} has config {manifest.config_digest}, not "
                        f"the local image {image_id} (re-tagged or rebuilt locally?)")
        if digest == image_id:   # containerd image store: the id is the index digest
            return [digest], ""
        children = _order_children(manifest, info)[:MAX_INDEX_CHILDREN]
        for child in children:
            cdigest = child.get("digest")
            if not isinstance(cdigest, str) or not SHA256_DIGEST_RE.match(cdigest):
                continue
            if cdigest == image_id:
                return [cdigest, digest], ""
            sub = self._registry.manifest(repo, cdigest, deadline)
            if not sub.is_index and sub.config_digest == image_id:
                return [cdigest, digest], ""
        return [], (f"no platform manifest of index {repo.repository}@{digest} has config "
                    f"{image_id}")


# ---------------------------------------------------------------------- helpers

def _display(reference) -> str:
    text = str(reference) if reference is not None else ""
    try:
        if text and not is_image_id(text):
            return str(parse_reference(text))
    except InvalidReference:
        pass
    return text[:200]


def _id_behind_name(ref: Reference) -> str | None:
    """The image id (prefix) a Docker Hub official-image name may stand for when it was
    made from an id: ``library/<hex>[:latest]`` or ``library/sha256:<64 hex>``."""
    if ref.domain != "docker.io" or ref.digest or not ref.path.startswith("library/"):
        return None
    name = ref.path.removeprefix("library/")
    if name == "sha256" and ref.tag and is_full_id(ref.tag):
        return f"sha256:{ref.tag}"
    if is_id_prefix(name) and ref.tag in (None, "latest"):
        return name
    return None


def _parse_all(items) -> list[Reference]:
    out = []
    for item in items or []:
        if not isinstance(item, str) or item in ("<none>:<none>", "<none>@<none>"):
            continue
        try:
            out.append(parse_reference(item))
        except InvalidReference:
            continue
    return out


def _resolved_by_name(ref: Reference, repo_tags: list[Reference],
                      repo_digests: list[Reference]) -> bool:
    """Did dockerd find this image through its reference store (by name), not by id prefix?
    Like dockerd: a digest wins over a tag, a bare name means :latest."""
    if ref.digest:
        want = str(ref.favor_digest())
        return any(str(r) == want for r in repo_digests)
    want = str(ref.with_default_tag())
    return any(str(r) == want for r in repo_tags)


def _order_children(index: Manifest, info: dict) -> list[dict]:
    """Platform manifests, the local image's platform first."""
    os_ = info.get("Os")
    arch = info.get("Architecture")
    variant = info.get("Variant")

    def score(child):
        p = child.get("platform") if isinstance(child.get("platform"), dict) else {}
        return (p.get("os") == os_ and p.get("architecture") == arch,
                p.get("variant") == variant)

    return sorted(index.children(), key=score, reverse=True)


def _registry_fix(exc: Exception, ref: Reference, trust: "ImageTrust | None" = None) -> str:
    if getattr(exc, "unreachable", False):
        ttl = f" in the last {trust.policy.cache.ttl_seconds:g}s" if trust else ""
        return (f"the registry {ref.domain} must answer (no still-valid verification{ttl} "
                f"stands in); check its address, `registries:` settings and the network")
    return (f"check that {ref.repository} exists and that credentials_file has a login for "
            f"{ref.domain} if it needs one")
