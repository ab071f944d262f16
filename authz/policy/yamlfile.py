"""The strict YAML reader both policy files (rules.yaml, trust.yaml) are read with.

A policy that silently means something else than it says is worse than none, so the
reader refuses what YAML would accept quietly: a key given twice in one mapping (YAML
keeps the last: ``effect: deny`` then ``effect: audit`` would load as audit-only), merge
keys (``<<``: values overridden silently), and, where text is expected, YAML 1.1 scalars
that are not text (``on``, ``no``, ``0777``). Every mapping carries its line as the key
``__line__``, and every error starts with ``file:line:``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from authz.ownership import NotTrusted, read_verified

LINE = "__line__"


class AmbiguousKey(yaml.YAMLError):
    def __init__(self, text: str, line: int):
        super().__init__(text)
        self.line = line


class LineLoader(yaml.SafeLoader):
    """Records each mapping's line as ``__line__``; refuses duplicate and merge keys."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise AmbiguousKey("a merge key (<<): its values can be overridden silently; "
                                   "write the entries out", line)
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                first = None
            if first is not None:
                raise AmbiguousKey(f"duplicate key {key!r} (first at line {first}); YAML would "
                                   "keep the last one silently", line)
            try:
                seen[key] = line
            except TypeError:
                pass
        mapping = super().construct_mapping(node, deep=deep)
        mapping[LINE] = node.start_mark.line + 1
        return mapping


class StrictYaml:
    """One policy file, read strictly; errors are ``error`` (a ValueError subclass) with
    ``file:line:`` first. ``verified``: a file that decides (rules.yaml), read only through
    a path no one but root (or whoever runs this) could change (authz.ownership)."""

    def __init__(self, path: Path, error: type[ValueError], *, verified: bool = False):
        self.path = path
        self.error = error
        self.verified = verified

    def load(self, text: str | None = None) -> Any:
        """The document (mappings are dicts with ``__line__``)."""
        try:
            if text is None:
                text = (read_verified(str(self.path)).decode("utf-8") if self.verified
                        else self.path.read_text(encoding="utf-8"))
            return yaml.load(text, Loader=LineLoader)
        except NotTrusted as exc:
            raise self.error(f"{self.path}: someone other than root could rewrite it: {exc}; "
                             "make it and the directories above it root's, not writable "
                             "by every user") from None
        except OSError as exc:
            raise self.error(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise self.error(f"{self.path}: not UTF-8 text") from None
        except AmbiguousKey as exc:
            raise self.error(f"{self.path}:{exc.line}: {exc}") from None
        except yaml.YAMLError as exc:
            raise self.error(f"{self.path}: not valid YAML: {exc}") from None

    def fail(self, line: int | None, text: str) -> ValueError:
        where = f"{self.path}:{line}" if line else str(self.path)
        return self.error(f"{where}: {text}")

    def keys(self, item: dict, allowed: set[str], what: str,
             required: frozenset[str] | set[str] = frozenset()) -> None:
        """``item`` has only ``allowed`` keys, and every ``required`` one."""
        unknown = set(item) - allowed - {LINE}
        if unknown:
            raise self.fail(item.get(LINE), f"unknown key(s) in {what}: "
                                            f"{', '.join(sorted(map(str, unknown)))} "
                                            f"(allowed: {', '.join(sorted(allowed))})")
        missing = set(required) - set(item)
        if missing:
            raise self.fail(item.get(LINE), f"{what}: '{sorted(missing)[0]}' is required")

    def strings(self, item: dict, key: str, *, default: Any = None,
                required: bool = False) -> tuple[str, ...]:
        """A string or a list of strings; YAML 1.1 booleans and numbers are refused."""
        value = item.get(key, default)
        line = item.get(LINE)
        if value is None:
            if required:
                raise self.fail(line, f"'{key}' is required")
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            # YAML 1.1 reads on/off/yes/no as booleans and 0777 as 511: quote such values.
            raise self.fail(line, f"'{key}' must be a string or a list of strings (quote "
                                  "values such as \"true\", \"on\", \"no\" or numbers)")
        out = tuple(value)
        if required and not out:
            raise self.fail(line, f"'{key}' must not be empty")
        return out

    def text(self, item: dict, key: str, *, required: bool = True) -> str:
        """Prose (a message, a reason), whitespace folded."""
        value = item.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise self.fail(item.get(LINE), f"'{key}' is required")
            return ""
        if not isinstance(value, str):
            raise self.fail(item.get(LINE), f"'{key}' must be text")
        return " ".join(value.split())
