"""Image trust: only images with a valid cosign signature by a trusted key are pulled and run.

See docs/trust.md. The plugin calls ``ImageTrust.load(policy_dir, docker)`` once per policy
load (``docker``: its one ``DockerClient``, or None), then ``check_pull`` / ``check_service`` /
``check_run`` per image, passing the decision's ``Deadline`` (sized with
``decision_seconds``); each returns a ``TrustResult`` (``allowed``, ``message``,
``log_fields()``, and ``violation()`` when it denies).

Layout: ``service.py`` (the ``ImageTrust`` facade: loading, warnings, the bounded pool),
``remote.py`` (pulls and services: the registry and the signatures), ``local.py`` (create
and start: the local image), ``result.py``, ``policy.py`` (the policy model),
``policyfile.py`` and ``trustyaml.py`` (reading trust.yaml), ``credentials.py``, ``keys.py``,
``signatures.py`` (cosign), ``registry.py`` (the OCI client), ``cache.py``.
"""

from authz.moby.reference import InvalidReference, Reference, parse_reference, pull_reference
from authz.trust.keys import TrustedKey, fingerprint
from authz.trust.policy import TrustPolicy, TrustPolicyError
from authz.trust.policyfile import load_policy
from authz.trust.result import (
    RULE_ACCEPTED,
    RULE_ERROR,
    RULE_EXCEPTION,
    RULE_NOT_LOCAL,
    RULE_REFERENCE,
    RULE_REJECTED,
    RULE_SIGNATURE,
    TrustResult,
)
from authz.trust.service import ImageTrust

__all__ = [
    "ImageTrust", "TrustResult", "TrustPolicy", "TrustPolicyError", "TrustedKey", "Reference",
    "InvalidReference", "fingerprint", "load_policy", "parse_reference", "pull_reference",
    "RULE_SIGNATURE", "RULE_REJECTED", "RULE_EXCEPTION", "RULE_ACCEPTED", "RULE_NOT_LOCAL",
    "RULE_REFERENCE", "RULE_ERROR",
]
