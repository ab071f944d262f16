"""The registry path: pulls and services. Resolve a tag to a digest at the registry and
require a valid cosign signature on that digest; also the signature verification (cached)
and the policy's own outcomes (reject, accept, no key) that the local path shares.

A pull passes ``fromImage`` joined with ``tag`` as dockerd joins them (see
``reference.pull_reference``), keeping a bare name bare: it pulls every tag, and is only
allowed where no signature is required. A service's bare name means ``:latest``.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.deadline import Deadline
from authz.moby.reference import (
    SHA256_DIGEST_RE,
    InvalidReference,
    Reference,
    manifest_tag_for_signature,
    parse_reference,
)
from authz.trust.cache import TTLCache
from authz.trust.policy import ACCEPT, REJECT, Requirement, TrustPolicy
from authz.trust.registry import RegistryClient, RegistryError, RegistryNotFound
from authz.trust.result import TrustResult, display_reference
from authz.trust.signatures import SignatureOutcome, verify_layers


@dataclass(frozen=True)
class Verified:
    """A signature that verified: by which key, for which identity, on which digest."""
    key_name: str
    key_fingerprint: str
    identity: str
    signed_digest: str


def registry_fix(exc: Exception, ref: Reference, cache_ttl: float | None = None) -> str:
    """How to fix a registry failure; ``cache_ttl`` when a cached verification could have
    stood in for an unreachable registry."""
    if getattr(exc, "unreachable", False):
        ttl = f" in the last {cache_ttl:g}s" if cache_ttl is not None else ""
        return (f"the registry {ref.domain} must answer (no still-valid verification{ttl} "
                f"stands in); check its address, `registries:` settings and the network")
    return (f"check that {ref.repository} exists and that credentials_file has a login for "
            f"{ref.domain} if it needs one")


class RegistryTrust:
    """Checks images at their registry, and verifies signatures for both paths."""

    def __init__(self, policy: TrustPolicy, registry: RegistryClient, cache: TTLCache[Verified]):
        self.policy = policy
        self.registry = registry
        self.cache = cache

    # ------------------------------------------------------------------ the checks
    def check(self, reference: str, deadline: Deadline, *, all_tags: bool) -> TrustResult:
        """A pull (``all_tags``: a bare name pulls every tag) or a service's image."""
        try:
            ref = parse_reference(reference.removesuffix(":") if all_tags else reference)
        except InvalidReference as exc:
            return TrustResult.bad_reference(display_reference(reference), found=str(exc),
                                             fix="use a valid image reference")
        if not all_tags:
            ref = ref.with_default_tag()
        ref = ref.favor_digest() if ref.digest else ref
        shown = str(ref)
        req = self.policy.requirement_for(ref)
        decided = self.decided_by_policy(ref, req, shown)
        if decided is not None:
            return decided
        if ref.name_only:
            return TrustResult.unsigned(
                shown, found="a pull of every tag (no tag or digest), which cannot be verified "
                             "tag by tag", fix=f"pull one tag or digest, e.g. {shown}:latest",
                expected=self.expected(req, ref.repository), policy=req.label)
        return self._check_at_registry(ref, req, deadline)

    def _check_at_registry(self, ref: Reference, req: Requirement,
                           deadline: Deadline) -> TrustResult:
        """Resolve ``ref``'s tag (unless it names a digest) and verify that digest."""
        repo = Reference(ref.domain, ref.path)
        shown, expected = str(ref), self.expected(req, repo.repository)
        digest = ref.digest
        if digest is None:
            try:
                digest = self.registry.manifest(repo, ref.tag, deadline).digest
            except RegistryError as exc:
                return TrustResult.unsigned(shown, found=f"tag {ref.tag} not resolved: {exc}",
                                            fix=registry_fix(exc, ref), expected=expected,
                                            policy=req.label)
        if not SHA256_DIGEST_RE.match(digest):
            return TrustResult.unsigned(shown, digest=digest, found="a digest that is not sha256",
                                        fix="use a sha256 digest", expected=expected,
                                        policy=req.label)
        try:
            verified, outcome, cached = self.verify(repo, digest, req, deadline)
        except RegistryError as exc:
            return TrustResult.unsigned(
                shown, digest=digest, found=f"signatures not readable: {exc}",
                fix=registry_fix(exc, ref, self.policy.cache.ttl_seconds), expected=expected,
                policy=req.label)
        if verified is None:
            return TrustResult.unsigned(shown, digest=digest, found=outcome.found,
                                        fix=self.signing_fix(outcome, req, repo.repository, digest),
                                        expected=expected, policy=req.label)
        return TrustResult.signed(
            shown, digest=digest, key_name=verified.key_name,
            key_fingerprint=verified.key_fingerprint,
            found=f"valid signature by {verified.key_name} for {verified.identity}",
            expected=expected, policy=req.label, cached=cached)

    # ------------------------------------------------------------------ signatures
    def verify(self, repo: Reference, digest: str, req: Requirement, deadline: Deadline
               ) -> tuple[Verified | None, SignatureOutcome | None, bool]:
        """(verified, failed outcome, cached). Raises RegistryError if unreachable."""
        key = ("sig", repo.repository, digest, req.cache_key)
        hit = self.cache.get(key)
        if hit is not None:
            return hit, None, True
        tag = manifest_tag_for_signature(digest)
        try:
            sig = self.registry.manifest(repo, tag, deadline)
        except RegistryNotFound:
            return None, SignatureOutcome(False, found=f"no signature ({repo.repository} has no "
                                                       f"tag {tag})"), False
        if sig.is_index:
            return None, SignatureOutcome(False, found=f"{repo.repository}:{tag} is an index, "
                                                       f"not a cosign signature manifest"), False
        outcome = verify_layers(sig.data,
                                lambda blob, limit: self.registry.blob(repo, blob, limit, deadline),
                                digest, repo.repository, req.keys, req.identity)
        if not outcome.ok:
            return None, outcome, False
        verified = Verified(outcome.key.name, outcome.key.fingerprint, outcome.identity or "",
                            digest)
        self.cache.put(key, verified)
        return verified, None, False

    # ------------------------------------------------------------------ the policy's own outcomes
    def decided_by_policy(self, ref: Reference, req: Requirement, shown: str,
                          image_id: str | None = None) -> TrustResult | None:
        """The result for reject/accept rules and for 'no key', else None (verify)."""
        if req.action == REJECT:
            why = f" ({req.reason})" if req.reason else ""
            return TrustResult.rejected(
                shown, digest=ref.digest, image_id=image_id, policy=req.label,
                found=f"{ref.repository} is rejected by the {req.label}{why}",
                fix=f"this registry/repository may not be used; change that rule in "
                    f"{self.policy.path} if it should be", expected="another repository")
        if req.action == ACCEPT:
            return TrustResult.accepted(
                shown, digest=ref.digest, image_id=image_id, policy=req.label,
                exception=req.origin == "exception",
                found=f"accepted without signature by the {req.label}: {req.reason}")
        if not req.keys:
            return TrustResult.unsigned(
                shown, digest=ref.digest, image_id=image_id, policy=req.label,
                found="no trusted key is configured, so no signature can be valid",
                fix=f"add your cosign public key (cosign.pub) under {self.policy.where_keys}; or "
                    f"accept this image unsigned with `- {{pattern: {ref.repository}, "
                    f"reason: ...}}` under {self.policy.where_exceptions}",
                expected=f"a signature ({req.label})")
        return None

    def expected(self, req: Requirement, repository: str) -> str:
        """What ``req`` asks of an image in ``repository``, for messages."""
        return (f"a cosign signature by {req.keys_text()} for identity "
                f"{req.identity.describe(repository)} ({req.label})")

    def signing_fix(self, outcome: SignatureOutcome | None, req: Requirement, repo: str,
                    digest: str | None) -> str:
        """How to get an unsigned (or wrongly signed) image accepted."""
        target = f"{repo}@{digest}" if digest else repo
        sign = f"cosign sign --key cosign.key --tlog-upload=false {target}"
        if outcome is not None and outcome.untrusted_only:
            return (f"if the security team trusts the key that signed it, add its public key "
                    f"under {self.policy.where_keys}; else sign with a trusted key: {sign}")
        return (f"sign it with a trusted key: {sign}; or accept it unsigned with "
                f"`- {{pattern: {repo}, reason: ...}}` under {self.policy.where_exceptions}")
