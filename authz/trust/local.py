"""The local path: container create and start. What runs is the *local* image, so a name
proves nothing: ask dockerd for the image (id, repo digests), and require that the image id
is the config of a registry manifest whose digest (or whose index's digest) carries a valid
signature. A local tag, ``docker load``/``import``/``commit``/``build`` output has no such
digest and is denied.

``check`` takes the container's ``Image`` string exactly (an id, an id prefix or a name):
dockerd resolves it, and so does this module. Given the decision's reads as its deadline
(``authz.moby.reads``), it reads the image through them: an image the decision has read
already (a create's default user) is not read again.
"""

from __future__ import annotations

from dataclasses import replace

from authz.deadline import Deadline
from authz.moby import views
from authz.moby.client import DockerClient, DockerError
from authz.moby.ids import is_full_id, is_id_prefix
from authz.moby.reads import DecisionReads
from authz.moby.reference import (
    SHA256_DIGEST_RE,
    InvalidReference,
    Reference,
    is_image_id,
    parse_reference,
)
from authz.trust.cache import TTLCache
from authz.trust.policy import Requirement, TrustPolicy
from authz.trust.registry import Manifest, RegistryError
from authz.trust.remote import RegistryTrust, Verified, registry_fix
from authz.trust.result import TrustResult, display_reference

MAX_INDEX_CHILDREN = 16


class NeedsRegistry(Exception):
    """An offline check (``LocalImageTrust.check(offline=True)``) must ask a registry."""


class LocalImageTrust:
    """Judges the local image dockerd resolves a reference to."""

    def __init__(self, policy: TrustPolicy, docker: DockerClient | None, remote: RegistryTrust,
                 cache: TTLCache[Verified]):
        self.policy = policy
        self.docker = docker
        self.remote = remote
        self.cache = cache

    def check(self, reference: str, deadline: Deadline, offline: bool = False) -> TrustResult:
        """Container create or start: verify the local image ``reference`` resolves to.
        ``offline``: raise ``NeedsRegistry`` where a registry would be asked (the check is
        then made again on the pool: ``service.py``); dockerd is read either way."""
        shown = display_reference(reference)
        if not reference or not isinstance(reference, str):
            return TrustResult.bad_reference(shown, found="no image named", fix="name an image")
        if self.docker is None:
            return TrustResult.error(shown, found="no docker host configured to resolve the "
                                                  "local image",
                                     fix="start pyauthz serve with --docker-host")
        ref = None if is_image_id(reference) else _name_or_none(reference)
        docker = self._reader(deadline)
        try:
            info = docker.inspect_image(reference, deadline)
        except DockerError as exc:
            return _unresolved(shown, exc, "retry; check that dockerd answers and that the "
                                           "policy allows GET /images/*/json")
        if info is None and ref is not None:
            # A caller that normalized an image id as if it were a name ("e1aa26f1b185" ->
            # docker.io/library/e1aa26f1b185:latest) would hide the image dockerd runs:
            # look the id up too, and judge that image if there is one.
            alias = _id_behind_name(ref)
            if alias is not None:
                try:
                    info = docker.inspect_image(alias, deadline)
                except DockerError as exc:
                    return _unresolved(shown, exc, "retry; check that dockerd answers")
                if info is not None:
                    ref = None
        if info is None:
            return TrustResult.not_local(
                str(ref.with_default_tag()) if ref else shown,
                found="no such local image: dockerd refuses the create, and the client's pull "
                      "is checked on its own")
        return self._judge(views.Image.of(info), ref, shown, deadline, offline)

    def _reader(self, deadline: Deadline):
        """What the local image is read through: the decision's reads when the deadline
        carries them and they read this same dockerd (each image read once per decision),
        else the client."""
        if isinstance(deadline, DecisionReads) and deadline.reads_from(self.docker):
            return deadline
        return self.docker

    def _judge(self, image: views.Image, ref: Reference | None, shown: str,
               deadline: Deadline, offline: bool) -> TrustResult:
        """The image as the name dockerd found it by, or else as any name it has."""
        if not image.id:
            # dockerd always sends the id; an answer without one is not judged.
            return TrustResult.error(shown, found="dockerd described the local image without "
                                                  "an Id", fix="retry; check that dockerd answers")
        repo_digests = _parse_all(image.repo_digests)
        repo_tags = _parse_all(image.repo_tags)
        if ref is not None and _resolved_by_name(ref, repo_tags, repo_digests):
            return self._run_as(ref.with_default_tag().favor_digest(), image, repo_digests,
                                deadline, offline)
        return self._run_as_any_name(image, repo_digests, repo_tags, shown, deadline, offline)

    def _run_as_any_name(self, image: views.Image, repo_digests: list[Reference],
                         repo_tags: list[Reference], shown: str,
                         deadline: Deadline, offline: bool) -> TrustResult:
        """An image id (or id prefix): as trusted as the best of the names it has."""
        names: list[Reference] = []
        seen = set()
        for r in repo_digests + repo_tags:
            if r.repository not in seen:
                seen.add(r.repository)
                names.append(r)
        if not names:
            return TrustResult.unsigned(
                shown, image_id=image.id,
                found=f"local image {image.id} has no name and no registry digest (built, "
                      f"loaded, imported or committed locally)",
                fix="push it to a registry, sign it there, and run it as pulled from there",
                expected="an image pulled from a registry with a valid signature")
        denies = []
        for name in names:
            result = self._run_as(name, image, repo_digests, deadline, offline, shown=shown)
            if result.allowed:
                return result
            denies.append(result)
        found = "; ".join(f"as {n.repository}: {d.found}" for d, n in zip(denies, names, strict=True))
        return replace(denies[0], reference=shown, found=found, image_id=image.id)

    def _run_as(self, name: Reference, image: views.Image, repo_digests: list[Reference],
                deadline: Deadline, offline: bool, shown: str | None = None) -> TrustResult:
        """The local image judged as ``name``: its digests from that repository, verified."""
        shown = shown or str(name)
        req = self.policy.requirement_for(name)
        decided = self.remote.decided_by_policy(name, req, shown, image_id=image.id)
        if decided is not None:
            return decided
        repo = Reference(name.domain, name.path)
        expected = (f"the local image {image.id[:19]}… to be a manifest in {repo.repository} "
                    f"with " + self.remote.expected(req, repo.repository))
        digests = [r.digest for r in repo_digests if r.repository == repo.repository and r.digest]
        if not digests:
            return TrustResult.unsigned(
                shown, expected=expected, policy=req.label, image_id=image.id,
                found=f"local image {image.id} has no digest from {repo.repository}: it was not "
                      f"pulled from there (a local tag, or docker load, import, commit or build "
                      f"output)",
                fix=f"pull the signed image: docker pull {repo.repository}@sha256:... (or the "
                    f"tag); or accept it unsigned with `- {{pattern: {repo.repository}, reason: "
                    f"...}}` under {self.policy.where_exceptions}")
        return self._match_signed(repo, digests, image, req, shown, expected, deadline, offline)

    def _match_signed(self, repo: Reference, digests: list[str], image: views.Image,
                      req: Requirement, shown: str, expected: str,
                      deadline: Deadline, offline: bool) -> TrustResult:
        """Allowed when one of ``digests`` vouches for the image with a valid signature."""
        reasons: list[str] = []
        last_outcome = None
        last_digest = digests[0]
        unreachable = None
        for digest in digests:
            run_key = ("run", repo.repository, digest, image.id, req.cache_key)
            hit = self.cache.get(run_key)
            if hit is not None:
                return _signed(shown, hit, image.id, expected, req, cached=True)
            if offline:  # nothing cached for this digest: a registry must be asked
                raise NeedsRegistry(repo.repository)
            try:
                candidates, why = self._signed_candidates(repo, digest, image, deadline)
                if not candidates:
                    reasons.append(why)
                    continue
                for candidate in candidates:
                    verified, outcome, cached = self.remote.verify(repo, candidate, req, deadline)
                    if verified is not None:
                        self.cache.put(run_key, verified)
                        return _signed(shown, verified, image.id, expected, req, cached=cached)
                    last_outcome, last_digest = outcome, candidate
                    reasons.append(f"{candidate[:19]}…: {outcome.found}")
            except RegistryError as exc:
                if exc.unreachable:
                    unreachable = exc
                reasons.append(f"{digest[:19]}…: {exc}")
        if unreachable is not None:
            fix = registry_fix(unreachable, repo, self.policy.cache.ttl_seconds)
        else:
            fix = self.remote.signing_fix(last_outcome, req, repo.repository, last_digest)
        return TrustResult.unsigned(shown, digest=last_digest, found="; ".join(reasons), fix=fix,
                                    expected=expected, policy=req.label, image_id=image.id)

    def _signed_candidates(self, repo: Reference, digest: str, image: views.Image,
                           deadline: Deadline) -> tuple[list[str], str]:
        """Digests whose signature vouches for the local image: the manifest whose config is
        the image id (and the index that lists it). Content-addressed: checked by hash."""
        if not SHA256_DIGEST_RE.match(digest):
            return [], f"{digest[:19]}…: not a sha256 digest"
        registry = self.remote.registry
        manifest = registry.manifest(repo, digest, deadline)
        if not manifest.is_index:
            if manifest.config_digest == image.id or digest == image.id:
                return [digest], ""
            return [], (f"{repo.repository}@{digest} has config {manifest.config_digest}, not "
                        f"the local image {image.id} (re-tagged or rebuilt locally?)")
        if digest == image.id:   # containerd image store: the id is the index digest
            return [digest], ""
        for child in _order_children(manifest, image)[:MAX_INDEX_CHILDREN]:
            child_digest = child.get("digest")
            if not isinstance(child_digest, str) or not SHA256_DIGEST_RE.match(child_digest):
                continue
            if child_digest == image.id:
                return [child_digest, digest], ""
            sub = registry.manifest(repo, child_digest, deadline)
            if not sub.is_index and sub.config_digest == image.id:
                return [child_digest, digest], ""
        return [], (f"no platform manifest of index {repo.repository}@{digest} has config "
                    f"{image.id}")


# ---------------------------------------------------------------------- helpers

def _signed(shown: str, verified: Verified, image_id: str, expected: str, req: Requirement,
            cached: bool) -> TrustResult:
    """Allowed: the local image is ``verified.signed_digest`` (or listed by it)."""
    return TrustResult.signed(
        shown, digest=verified.signed_digest, key_name=verified.key_name,
        key_fingerprint=verified.key_fingerprint, expected=expected, policy=req.label,
        image_id=image_id, cached=cached,
        found=f"local image {image_id[:19]}… is {verified.signed_digest}, validly signed by "
              f"{verified.key_name} for {verified.identity}")


def _unresolved(shown: str, exc: DockerError, fix: str) -> TrustResult:
    """Denied: dockerd did not say which image ``shown`` is."""
    return TrustResult.error(shown, found=f"the local image could not be resolved: {exc}", fix=fix)


def _name_or_none(reference: str) -> Reference | None:
    """``reference`` as a name, or None: perhaps a short image id, which dockerd decides."""
    try:
        return parse_reference(reference)
    except InvalidReference:
        return None


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


def _parse_all(items: tuple[str, ...]) -> list[Reference]:
    """The names dockerd lists (``RepoTags``, ``RepoDigests``), parsed; ``<none>`` skipped."""
    out = []
    for item in items:
        if item in ("<none>:<none>", "<none>@<none>"):
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


def _order_children(index: Manifest, image: views.Image) -> list[dict]:
    """Platform manifests, the local image's platform first."""
    # A field dockerd left out reads as None, as a child's missing platform field does.
    wanted_os, arch, variant = image.os or None, image.architecture or None, image.variant or None

    def score(child: dict) -> tuple[bool, bool]:
        """(same os and architecture, same variant)."""
        platform = child.get("platform") if isinstance(child.get("platform"), dict) else {}
        return (platform.get("os") == wanted_os and platform.get("architecture") == arch,
                platform.get("variant") == variant)

    return sorted(index.children(), key=score, reverse=True)
