"""The shape issue 8 promised, kept: small modules, one-way imports."""

import ast
from pathlib import Path

import pytest

AUTHZ = Path(__file__).resolve().parents[2] / "authz"
MODULES = sorted(p for p in AUTHZ.rglob("*.py") if "policies" not in p.parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(AUTHZ)))
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_trust_never_imports_decoding():
    for path in (AUTHZ / "trust").glob("*.py"):
        assert not any(m.startswith("authz.decoding") for m in imports(path)), path


def test_the_neutral_package_imports_neither_decoding_nor_trust():
    for path in (AUTHZ / "moby").glob("*.py"):
        assert not any(m.startswith(("authz.decoding", "authz.trust", "authz.policy"))
                       for m in imports(path)), path


def test_decision_uses_only_decodings_public_names():
    found = {m for m in imports(AUTHZ / "decision.py") if m.startswith("authz.decoding")}
    assert found <= {"authz.decoding"}, found
