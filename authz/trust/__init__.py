"""Image trust: only images with a valid cosign signature by a trusted key are pulled and run.

See docs/trust.md. The pipeline calls ``ImageTrust.load(policy_dir, docker_host)`` once per
worker, then ``check_pull`` / ``check_service`` / ``check_run`` per request; each returns a
``TrustResult`` (``allowed``, ``message``, ``log_fields()``).
"""

from authz.trust.keys import TrustedKey, fingerprint
from authz.trust.policy import TrustPolicy, TrustPolicyError
from authz.trust.policyfile import load_policy
from authz.moby.reference import InvalidReference, Reference, parse_reference, pull_reference
from authz.trust.service import (
    RULE_ACCEPTED,
    RULE_ERROR,
    RULE_EXCEPTION,
    RULE_NOT_LOCAL,
    RULE_REFERENCE,
    RULE_REJECTED,
    RULE_SIGNATURE,
    ImageTrust,
    TrustResult,
)

__all__ = [
    "ImageTrust", "TrustResult", "TrustPolicy", "TrustPolicyError", "TrustedKey", "Reference",
    "InvalidReference", "fingerprint", "load_policy", "parse_reference", "pull_reference",
    "RULE_SIGNATURE", "RULE_REJECTED", "RULE_EXCEPTION", "RULE_ACCEPTED", "RULE_NOT_LOCAL",
    "RULE_REFERENCE", "RULE_ERROR",
]
