"""What one image trust check found: a ``TrustResult``, made by one named constructor per
kind of outcome, and rendered once into a policy ``Violation`` when it denies."""

from __future__ import annotations

from dataclasses import dataclass

from authz.moby.reference import InvalidReference, is_image_id, parse_reference
from authz.policy.engine import Violation

RULE_SIGNATURE = "image-signature"
RULE_REJECTED = "image-rejected"
RULE_EXCEPTION = "image-unsigned-exception"
RULE_ACCEPTED = "image-accepted"
RULE_NOT_LOCAL = "image-not-local"
RULE_REFERENCE = "image-reference"
RULE_ERROR = "image-trust-error"

VIOLATION_MESSAGE = "Only images signed by a trusted key may be pulled or run."


def display_reference(reference: object) -> str:
    """The reference as results show it: normalized when it parses, else as given (cut)."""
    text = str(reference) if reference is not None else ""
    try:
        if text and not is_image_id(text):
            return str(parse_reference(text))
    except InvalidReference:
        pass
    return text[:200]


@dataclass(frozen=True)
class TrustResult:
    """One check's outcome; build it with the named constructors below."""
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

    # ------------------------------------------------------------------ allowed
    @classmethod
    def signed(cls, reference: str, *, digest: str, key_name: str, key_fingerprint: str,
               found: str, expected: str, policy: str, image_id: str | None = None,
               cached: bool = False) -> TrustResult:
        """Allowed: ``digest`` carries a valid signature by a trusted key."""
        return cls(True, RULE_SIGNATURE, reference, digest, key_fingerprint, found, "",
                   expected=expected, key_name=key_name, policy=policy, image_id=image_id,
                   cached=cached)

    @classmethod
    def accepted(cls, reference: str, *, found: str, exception: bool, policy: str,
                 digest: str | None = None, image_id: str | None = None) -> TrustResult:
        """Allowed unsigned by a ``require: accept`` rule or an exception."""
        return cls(True, RULE_EXCEPTION if exception else RULE_ACCEPTED, reference, digest,
                   None, found, "", policy=policy, image_id=image_id)

    @classmethod
    def not_local(cls, reference: str, *, found: str) -> TrustResult:
        """Allowed: dockerd has no such image, so it refuses the create itself."""
        return cls(True, RULE_NOT_LOCAL, reference, None, None, found, "")

    # ------------------------------------------------------------------ denied
    @classmethod
    def unsigned(cls, reference: str, *, found: str, fix: str, expected: str = "",
                 policy: str | None = None, digest: str | None = None,
                 image_id: str | None = None) -> TrustResult:
        """Denied: no valid signature by a trusted key (or none could be verified)."""
        return cls(False, RULE_SIGNATURE, reference, digest, None, found, fix,
                   expected=expected, policy=policy, image_id=image_id)

    @classmethod
    def rejected(cls, reference: str, *, found: str, fix: str, expected: str, policy: str,
                 digest: str | None = None, image_id: str | None = None) -> TrustResult:
        """Denied by a ``require: reject`` rule, signed or not."""
        return cls(False, RULE_REJECTED, reference, digest, None, found, fix,
                   expected=expected, policy=policy, image_id=image_id)

    @classmethod
    def bad_reference(cls, reference: str, *, found: str, fix: str) -> TrustResult:
        """Denied: the request names no valid image reference."""
        return cls(False, RULE_REFERENCE, reference, None, None, found, fix)

    @classmethod
    def error(cls, reference: str, *, found: str, fix: str) -> TrustResult:
        """Denied: the check could not finish (deadline, dockerd, an internal error)."""
        return cls(False, RULE_ERROR, reference, None, None, found, fix)

    # ------------------------------------------------------------------ rendering
    @property
    def subject(self) -> str:
        """``image REF``, with the digest when the reference does not show it."""
        subject = f"image {self.reference}"
        if self.digest and self.digest not in self.reference:
            subject += f" ({self.digest})"
        return subject

    @property
    def message(self) -> str:
        """One line for the client (the deny ``Msg``) and the log."""
        if self.allowed:
            if self.key_fingerprint:
                return (f"{self.subject}: signed by {self.key_name} ({self.key_fingerprint})"
                        + (" [cached verification]" if self.cached else ""))
            return f"{self.subject}: {self.found}"
        parts = [self.subject + ":"]
        if self.expected:
            parts.append(f"expected {self.expected};")
        parts.append(f"found {self.found}.")
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return " ".join(parts)

    def violation(self) -> Violation:
        """The policy violation a denied result is reported as (rule, found, message, fix)."""
        expected = f"Expected {self.expected}." if self.expected else ""
        return Violation(self.rule, f"{self.subject}: {self.found}",
                         f"{VIOLATION_MESSAGE} {expected}".strip(), self.fix)

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
