"""TrustResult: one named constructor per outcome, one rendering into a policy violation."""

import pytest

from authz.policy.engine import Violation
from authz.trust import (
    RULE_ACCEPTED,
    RULE_ERROR,
    RULE_EXCEPTION,
    RULE_NOT_LOCAL,
    RULE_REFERENCE,
    RULE_REJECTED,
    RULE_SIGNATURE,
    TrustResult,
)

REF = "127.0.0.1:5000/team/app:1"
DIGEST = "sha256:" + "4f" * 32
IMAGE_ID = "sha256:" + "e1" * 32
FP = "sha256:" + "9f" * 32
LABEL = "rule '127.0.0.1:5000/team' at /p/trust.yaml:14"


def rendered_as_decision_did(result: TrustResult) -> Violation:
    """How decision.py's _evaluate built the violation before violation() existed."""
    found = f"image {result.reference}"
    if result.digest and result.digest not in result.reference:
        found += f" ({result.digest})"
    found += f": {result.found}"
    expected = f"Expected {result.expected}." if result.expected else ""
    return Violation(result.rule, found,
                     f"Only images signed by a trusted key may be pulled or run. {expected}".strip(),
                     result.fix)


DENIED = {
    "unsigned": TrustResult.unsigned(REF, digest=DIGEST, found="no signature", fix="sign it",
                                     expected="a cosign signature by team", policy=LABEL),
    "unsigned, no digest": TrustResult.unsigned(REF, found="tag 1 not resolved: 404",
                                                fix="check it", expected="a signature"),
    "unsigned, local": TrustResult.unsigned(REF, found="no registry digest", fix="push it",
                                            image_id=IMAGE_ID),
    "digest in the reference": TrustResult.unsigned(f"127.0.0.1:5000/team/app@{DIGEST}",
                                                    digest=DIGEST, found="bad", fix="sign it"),
    "rejected": TrustResult.rejected(REF, digest=None, found="rejected by the rule",
                                     fix="use another", expected="another repository",
                                     policy=LABEL, image_id=IMAGE_ID),
    "bad reference": TrustResult.bad_reference("UPPER", found="invalid reference format",
                                               fix="use a valid image reference"),
    "error": TrustResult.error(REF, found="no decision within the 4s deadline", fix="retry"),
}


@pytest.mark.parametrize("name", sorted(DENIED))
def test_violation_is_rendered_as_the_decision_rendered_it(name):
    result = DENIED[name]
    assert not result.allowed
    assert result.violation() == rendered_as_decision_did(result)


@pytest.mark.parametrize("result, rule", [
    (DENIED["unsigned"], RULE_SIGNATURE),
    (DENIED["rejected"], RULE_REJECTED),
    (DENIED["bad reference"], RULE_REFERENCE),
    (DENIED["error"], RULE_ERROR),
])
def test_denied_constructors_set_their_rule(result, rule):
    assert result.rule == rule and result.violation().rule == rule
    assert result.key_fingerprint is None and result.key_name is None and not result.cached


def test_violation_texts():
    v = DENIED["unsigned"].violation()
    assert v.found == f"image {REF} ({DIGEST}): no signature"
    assert v.message == ("Only images signed by a trusted key may be pulled or run. "
                         "Expected a cosign signature by team.")
    assert v.fix == "sign it" and v.effect == "deny"
    # a digest the reference shows is not repeated; no expectation, no "Expected"
    v = DENIED["digest in the reference"].violation()
    assert v.found == f"image 127.0.0.1:5000/team/app@{DIGEST}: bad"
    assert v.message == "Only images signed by a trusted key may be pulled or run."


def test_allowed_constructors():
    signed = TrustResult.signed(REF, digest=DIGEST, key_name="team", key_fingerprint=FP,
                                found="valid signature by team for x", expected="a signature",
                                policy=LABEL, cached=True)
    assert (signed.allowed, signed.rule, signed.fix) == (True, RULE_SIGNATURE, "")
    assert signed.message == f"image {REF} ({DIGEST}): signed by team ({FP}) [cached verification]"
    exception = TrustResult.accepted(REF, found="accepted without signature", exception=True,
                                     policy=LABEL)
    rule = TrustResult.accepted(REF, found="accepted without signature", exception=False,
                                policy=LABEL, image_id=IMAGE_ID)
    assert (exception.rule, rule.rule) == (RULE_EXCEPTION, RULE_ACCEPTED)
    assert exception.allowed and rule.allowed and rule.image_id == IMAGE_ID
    assert rule.message == f"image {REF}: accepted without signature"
    missing = TrustResult.not_local(REF, found="no such local image")
    assert missing.allowed and missing.rule == RULE_NOT_LOCAL


def test_message_of_a_denial():
    assert DENIED["unsigned"].message == (
        f"image {REF} ({DIGEST}): expected a cosign signature by team; found no signature. "
        f"Fix: sign it")


def test_log_fields_are_unchanged():
    fields = DENIED["rejected"].log_fields()
    assert fields == {
        "trust_allowed": False, "trust_rule": RULE_REJECTED, "image": REF,
        "image_digest": None, "image_id": IMAGE_ID, "key_fingerprint": None, "key_name": None,
        "trust_policy": LABEL, "trust_expected": "another repository",
        "trust_found": "rejected by the rule", "trust_cached": False,
    }
