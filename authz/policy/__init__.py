"""Policy: rules.yaml (what a security team edits) evaluated with Casbin."""

from authz.policy.engine import Evaluation, ExceptionApplied, Policy, Violation
from authz.policy.rules import PolicyError

__all__ = ["Evaluation", "ExceptionApplied", "Policy", "PolicyError", "Violation"]
