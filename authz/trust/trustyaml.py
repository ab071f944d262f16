"""trust.yaml read by the strict reader rules.yaml is read with (``policy/yamlfile.py``:
duplicate and merge keys refused, mappings carry ``__line__``), which here also records
where each key, its value and its list items are, so that every error names the line of
what is wrong, as ``file:line:``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import Node, SequenceNode

from authz.policy.yamlfile import LINE, AmbiguousKey, StrictYaml
from authz.policy.yamlfile import LineLoader as StrictLoader
from authz.trust.policy import POLICY_FILE, TrustPolicyError
from authz.ownership import NotTrusted, read_verified

POSITIONS = "__positions__"


@dataclass(frozen=True)
class Position:
    """Where one key of a mapping is: its line, its value's line, its list items' lines."""
    key: int
    value: int
    items: tuple[int, ...] = ()


def _line(node: Node) -> int:
    """A node's 1-based line."""
    return node.start_mark.line + 1


class _PositionLoader(StrictLoader):
    """The strict loader; each mapping also maps its keys to their ``Position``s."""

    root_line = 1

    def construct_document(self, node: Node) -> Any:
        """The document; its root's line is kept for ``trust.yaml must be a mapping``."""
        self.root_line = _line(node)
        return super().construct_document(node)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """A value; one YAML resolves but cannot build (a date 2024-13-01) fails at its line."""
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:
            raise ConstructorError(None, None, str(exc), node.start_mark) from None

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        """A mapping, strictly (``__line__``), with ``__positions__`` added."""
        mapping = super().construct_mapping(node, deep=deep)
        mapping[POSITIONS] = {
            self.construct_object(key, deep=True): Position(
                _line(key), _line(value),
                tuple(_line(item) for item in value.value) if isinstance(value, SequenceNode)
                else ())
            for key, value in node.value}
        return mapping


class TrustYaml(StrictYaml):
    """trust.yaml: the strict reader with ``TrustPolicyError``, and checks by line."""

    def __init__(self, path: Path):
        super().__init__(path, TrustPolicyError, verified=True)
        self.root_line = 1
        # Every file read for this trust.yaml (itself, keys, CA bundles, logins): as named,
        # and where each symlink on the way sat and where it led (authz.ownership).
        self.files: list[str] = [str(path)]
        # sha256 of each file trust.yaml names, as read (the policy's revision covers them).
        self.digests: list[tuple[str, str]] = []

    def load(self, text: str | None = None) -> Any:
        """The document (mappings are dicts with ``__line__`` and ``__positions__``)."""
        if text is None:
            text = self._read()
        loader = _PositionLoader(text)
        try:
            document = loader.get_single_data()
            self.root_line = loader.root_line
            return document
        except AmbiguousKey as exc:
            raise self.fail(exc.line, str(exc)) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.fail(mark.line + 1 if mark is not None else None,
                            f"not valid YAML: {problem}") from None
        finally:
            loader.dispose()

    def _read(self) -> str:
        """The file's text."""
        try:
            visited: list[str] = []
            text = read_verified(str(self.path), visited=visited).decode("utf-8")
            self.files += visited
            return text
        except NotTrusted as exc:
            raise self.fail(None, f"someone other than root could rewrite it: {exc}; make it "
                                  "and the directories above it root's, not writable by "
                                  "every user") from None
        except FileNotFoundError:
            raise self.fail(None, f"missing (the image trust policy; the shipped "
                                  f"policies/{POLICY_FILE} denies every unsigned image)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self.fail(None, f"cannot read: {exc}") from None

    def section(self, value: Any, line: int, what: str, allowed: set[str],
                required: frozenset[str] | set[str] = frozenset()) -> Section:
        """``value`` as a mapping with only ``allowed`` keys and every ``required`` one."""
        if not isinstance(value, dict):
            raise self.fail(line, f"{what} must be a mapping")
        for key, position in value[POSITIONS].items():
            if not isinstance(key, str):
                raise self.fail(position.key, f"{what}: keys must be plain strings")
            if key not in allowed:
                raise self.fail(position.key, f"{what}: unknown key {key!r} "
                                              f"(allowed: {', '.join(sorted(allowed))})")
        for key in sorted(set(required) - value[POSITIONS].keys()):
            raise self.fail(value[LINE], f"{what}: missing required key {key!r}")
        return Section(self, value, what)

    def string(self, value: Any, line: int, what: str) -> str:
        """Text, not empty; YAML 1.1 booleans, numbers and dates are refused."""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(line, f"{what} must be a non-empty string")
        return value

    def boolean(self, value: Any, line: int, what: str) -> bool:
        """``true`` or ``false``."""
        if not isinstance(value, bool):
            raise self.fail(line, f"{what} must be true or false")
        return value

    def number(self, value: Any, line: int, what: str, lo: float, hi: float) -> float:
        """A number from ``lo`` to ``hi``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.fail(line, f"{what} must be a number between {lo} and {hi}")
        return float(value)

    def sequence(self, value: Any, line: int, what: str) -> list:
        """A list (empty when the value is left empty)."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(line, f"{what} must be a list")
        return value


class Section:
    """One mapping of trust.yaml (the file, a key, a rule...), its keys already checked;
    each accessor fails at the line of the value it reads."""

    def __init__(self, reader: TrustYaml, data: dict, what: str):
        self.reader = reader
        self.data = data
        self.what = what

    @property
    def where(self) -> str:
        """``file:line`` of the mapping."""
        return f"{self.reader.path}:{self.data[LINE]}"

    def __contains__(self, key: str) -> bool:
        return key in self.data[POSITIONS]

    def position(self, key: str) -> Position:
        """Where ``key`` and its value are."""
        return self.data[POSITIONS][key]

    def value(self, key: str) -> Any:
        """The value as YAML read it."""
        return self.data[key]

    def fail(self, text: str) -> TrustPolicyError:
        """An error at the mapping's line."""
        return self.reader.fail(self.data[LINE], text)

    def fail_key(self, key: str, text: str) -> TrustPolicyError:
        """An error at ``key``'s line."""
        return self.reader.fail(self.position(key).key, text)

    def fail_value(self, key: str, text: str) -> TrustPolicyError:
        """An error at the line of ``key``'s value."""
        return self.reader.fail(self.position(key).value, text)

    def section(self, key: str, what: str, allowed: set[str],
                required: frozenset[str] | set[str] = frozenset()) -> Section:
        """The mapping under ``key``."""
        return self.reader.section(self.data[key], self.position(key).value, what, allowed,
                                   required)

    def string(self, key: str, what: str) -> str:
        """The text under ``key``."""
        return self.reader.string(self.data[key], self.position(key).value, what)

    def boolean(self, key: str, what: str) -> bool:
        """The boolean under ``key``."""
        return self.reader.boolean(self.data[key], self.position(key).value, what)

    def number(self, key: str, what: str, lo: float, hi: float) -> float:
        """The number under ``key``, from ``lo`` to ``hi``."""
        return self.reader.number(self.data[key], self.position(key).value, what, lo, hi)

    def entries(self, key: str, expected: str) -> list[tuple[Any, Any, Position]]:
        """The mapping under ``key`` whose keys are its own (registry hosts), as (key, value,
        position); empty when left empty; else ``key must be {expected}``."""
        value, line = self.data[key], self.position(key).value
        if value is None:
            return []
        if not isinstance(value, dict):
            raise self.reader.fail(line, f"{key} must be {expected}")
        return [(name, value[name], position) for name, position in value[POSITIONS].items()]

    def items(self, key: str, what: str) -> list[tuple[Any, int]]:
        """The list under ``key``, each item with its line."""
        position = self.position(key)
        values = self.reader.sequence(self.data[key], position.value, what)
        return list(zip(values, position.items, strict=True))
