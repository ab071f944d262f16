"""Policy evaluation with Casbin.

Each rule, with the exceptions that name it, becomes a small Casbin policy over the
shared model (``policies/model.conf``), so that an exception or an ``except:`` value can
only ever lift its own rule. Every fact of a request is put to the rules whose fact kind
matches it; Casbin's priority effect picks the first matching line: an exception, an
``except`` value, or the rule's deny.

Who is asking is resolved here, before Casbin: the caller's ``Identity`` (its certificate
CN and fields, authz/identity.py) becomes the set of the policy's own subject strings it is
(``alice``, ``ou:ops``, ``role:admins``...), and Casbin's matcher only asks whether a line's
subject is ``*`` or in that set (``subjectMatch``).

Facts repeat a lot across requests (the same image, the same capabilities), so each
answer is memoized per (subjects the caller is, endpoint, image, kind, value, rule) until
the policy is reloaded; Casbin is only asked on a miss.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import casbin

from authz.decoding.facts import Fact
from authz.identity import Identity, Subject, parse_subject
from authz.policy.matchers import image_match, subject_match, value_match
from authz.policy.rules import PolicyException, PolicyError, Rule, RuleSet, load_rules
from authz.ownership import MAX_POLICY_FILE_BYTES, NotTrusted, TooLarge, read_verified

MODEL_FILE = "model.conf"
RULES_FILE = "rules.yaml"

PRIORITY_EXCEPTION = "10"
PRIORITY_EXCEPT_VALUE = "20"
PRIORITY_RULE = "30"
_EXCEPT_VALUE_MARK = "#except"


@dataclass(frozen=True)
class Violation:
    """A rule a request breaks (or a request-level refusal, rule ``request-*``)."""

    rule: str
    found: str
    message: str
    fix: str
    reference: str = ""
    effect: str = "deny"      # deny | audit

    def as_log(self) -> dict:
        out = {"rule": self.rule, "found": self.found, "effect": self.effect}
        if self.reference:
            out["reference"] = self.reference
        return out


@dataclass(frozen=True)
class ExceptionApplied:
    """An exception that lifted a rule for one fact."""

    exception: str
    rule: str
    found: str

    def as_log(self) -> dict:
        return {"exception": self.exception, "rule": self.rule, "found": self.found}


@dataclass(frozen=True)
class Evaluation:
    violations: tuple[Violation, ...]
    exceptions_applied: tuple[ExceptionApplied, ...]
    matched_facts: tuple[Fact, ...]


# A policy directory holds a handful of files; more only makes every load slow.
MAX_REVISION_ENTRIES = 10_000
MAX_REVISION_BYTES = 64 * 1024 * 1024  # all of them together (real ones: a few hundred KB)


def policy_revision(directory: Path) -> str:
    """sha256 over every file of the policy directory (names and contents), each read as
    the files that decide are (``read_verified``: through a checked path, at most 16 MiB),
    at most MAX_REVISION_ENTRIES entries: whatever a symlink in it leads to, a load's cost
    stays bounded. OSError (NotTrusted, TooLarge...) otherwise."""
    digest = hashlib.sha256()
    files = []
    for count, path in enumerate(directory.rglob("*"), 1):
        if count > MAX_REVISION_ENTRIES:
            raise TooLarge(f"{directory} holds more than {MAX_REVISION_ENTRIES} entries")
        rel = path.relative_to(directory).as_posix()
        if not (rel.startswith(".") or "/." in rel) and path.is_file():
            files.append((rel, path))
    left = MAX_REVISION_BYTES
    for rel, path in sorted(files, key=lambda item: item[1]):  # Path order, as ever
        digest.update(rel.encode() + b"\0")
        try:
            data = read_verified(str(path), min(left, MAX_POLICY_FILE_BYTES))
        except NotTrusted as exc:
            raise NotTrusted(f"{path}: {exc}") from None
        except TooLarge:
            raise TooLarge(f"{directory}: its files hold more than {MAX_REVISION_BYTES} bytes "
                           f"together, or {path} more than {MAX_POLICY_FILE_BYTES}") from None
        left -= len(data)
        digest.update(data + b"\0")
    return digest.hexdigest()


class _RuleEnforcer:
    """One rule and its exceptions, as a Casbin enforcer, with memoized answers."""

    # The memo holds request-controlled strings: bounded by entries and by key size, so that
    # no sequence of requests grows a worker by more than about 2048 x 37 rules x ~0.7 KB.
    _CACHE_LIMIT = 2048
    _CACHE_KEY_BYTES = 512

    def __init__(self, rule: Rule, exceptions: list[PolicyException], model_text: str):
        self.rule = rule
        self.exceptions = {ex.id: ex for ex in exceptions}
        model = casbin.model.Model()
        model.load_model_from_text(model_text)
        self._enforcer = casbin.Enforcer(model, enable_log=False)
        self._enforcer.add_function("valueMatch", value_match)
        self._enforcer.add_function("imageMatch", image_match)
        self._enforcer.add_function("subjectMatch", subject_match)
        lines = self._lines(rule, exceptions)
        # The priority effect needs the lines in priority order; stable within a level.
        lines.sort(key=lambda line: int(line[0]))
        if lines:
            self._enforcer.add_policies(lines)
        self._cache: dict[tuple, str | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _lines(rule: Rule, exceptions: list[PolicyException]) -> list[list[str]]:
        lines: list[list[str]] = []
        for ex in exceptions:
            for sub in ex.subjects:
                for endpoint in ex.endpoints:
                    for image in ex.images:
                        for value in ex.values:
                            lines.append([PRIORITY_EXCEPTION, sub, endpoint, image, "*", value,
                                          "glob", "allow", ex.id])
        for value in rule.except_values:
            lines.append([PRIORITY_EXCEPT_VALUE, "*", "*", "*", "*", value, rule.except_op,
                          "allow", rule.id + _EXCEPT_VALUE_MARK])
        for sub in rule.subjects:
            for kind in rule.kinds:
                for endpoint in rule.endpoints:
                    for value in rule.values:
                        lines.append([PRIORITY_RULE, sub, endpoint, "*", kind, value, rule.op,
                                      "deny", rule.id])
        return lines

    def decide(self, subjects: frozenset[str], endpoint: str, image: str,
               fact: Fact) -> str | None:
        """The id of the deciding line (the rule, an exception), or None: not applicable.
        ``subjects``: the policy's subject strings the caller is (``Subjects.of``)."""
        key = (subjects, endpoint, image, fact.kind, fact.value)
        try:
            return self._cache[key]
        except KeyError:
            pass
        with self._lock:
            _, explain = self._enforcer.enforce_ex(subjects, endpoint, image, fact.kind,
                                                   fact.value)
        decided = explain[-1] if explain else None
        if decided is not None and decided.endswith(_EXCEPT_VALUE_MARK):
            decided = None
        # The subjects are the policy's own strings (bounded by it); the rest is the request's.
        if len(image) + len(fact.value) > self._CACHE_KEY_BYTES:
            return decided  # rare and long: not worth keeping
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = decided
        return decided

    def deciding_line(self, subjects: frozenset[str], endpoint: str, image: str,
                      fact: Fact) -> list[str]:
        """The policy line that decides ``fact`` (uncached, for ``policy explain``): its
        last field is the rule id, an exception id, or ``RULE#except`` for a value the rule
        ``except:``s (the value pattern is field 5); [] when the rule does not apply."""
        with self._lock:
            _, explain = self._enforcer.enforce_ex(subjects, endpoint, image, fact.kind,
                                                   fact.value)
        return list(explain)


class Subjects:
    """Which of the policy's subjects a caller is: every subject string that rules and
    exceptions name (``*`` aside), each parsed once; roles resolved through their members
    (names, certificate fields, other roles)."""

    def __init__(self, ruleset: RuleSet):
        named = {s for rule in ruleset.rules for s in rule.subjects}
        named |= {s for ex in ruleset.exceptions for s in ex.subjects}
        self._named: tuple[tuple[str, Subject], ...] = tuple(
            (text, parse_subject(text)) for text in sorted(named) if text != "*")
        self._roles: dict[str, tuple[Subject, ...]] = {
            role: tuple(parse_subject(m) for m in members)
            for role, members in ruleset.roles.items()}

    def roles_of(self, identity: Identity) -> frozenset[str]:
        """The roles ``identity`` is a member of, directly or through another role."""
        roles: set[str] = set()
        grew = True
        while grew:
            grew = False
            for role, members in self._roles.items():
                if role not in roles and any(self._is(identity, m, roles) for m in members):
                    roles.add(role)
                    grew = True
        return frozenset(roles)

    def of(self, identity: Identity) -> frozenset[str]:
        """The subject strings of the policy that ``identity`` is."""
        roles = self.roles_of(identity)
        return frozenset(text for text, subject in self._named
                         if self._is(identity, subject, roles))

    @staticmethod
    def _is(identity: Identity, subject: Subject, roles: set[str] | frozenset[str]) -> bool:
        if subject.kind == "role":
            return subject.value in roles
        return identity.matches(subject)


# The matcher pyauthz compiles rules for: a model.conf without it (one from before subjects
# could name certificate fields) would match no exception's subject.
MODEL_SUBJECT_MATCH = "subjectMatch(r.sub, p.sub)"


def as_identity(subject: Identity | str) -> Identity:
    """A caller given by name only (``"anonymous"``, a CN) as an Identity."""
    return subject if isinstance(subject, Identity) else Identity.named(subject)


class Policy:
    """The loaded policy directory: rules (Casbin) and its revision."""

    def __init__(self, directory: Path, ruleset: RuleSet, revision: str,
                 today: dt.date | None = None,
                 clock: Callable[[], dt.date] = dt.date.today):
        self.directory = directory
        self.ruleset = ruleset
        self.revision = revision
        self.warnings: list[str] = []
        self._clock = (lambda: today) if today is not None else clock
        roles = ruleset.roles
        for ex in ruleset.exceptions:
            for subject in ex.subjects:
                if subject.startswith("role:") and subject[5:] not in roles:
                    raise PolicyError(f"{ruleset.path}:{ex.line}: exception {ex.id}: no role "
                                      f"{subject[5:]!r} under 'roles:'")
        model = directory / MODEL_FILE
        # Read once, through a path only root (or whoever runs this) could change; every
        # build (at each exception's expiry, in every worker) compiles this text, never the
        # file as it is then.
        try:
            self.model_text = read_verified(str(model)).decode("utf-8")
        except NotTrusted as exc:
            raise PolicyError(f"{model}: someone other than root could rewrite it: {exc}; "
                              "make it and the directories above it root's, not writable "
                              "by every user") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{model}: cannot read: {exc.strerror or exc}"
                              if isinstance(exc, OSError) else f"{model}: cannot read: {exc}") from None
        if MODEL_SUBJECT_MATCH not in self.model_text:
            raise PolicyError(f"{model}: its matcher does not use {MODEL_SUBJECT_MATCH} (a "
                              "model.conf from an older pyauthz); copy the shipped one")
        self.subjects = Subjects(ruleset)
        self._rebuild_lock = threading.Lock()
        self._build(self._clock())

    def _build(self, today: dt.date) -> None:
        """Compile the rules with the exceptions still in force on ``today``; remember when
        the next one expires, so that it stops applying at that time, not at a reload."""
        by_rule: dict[str, list[PolicyException]] = {r.id: [] for r in self.ruleset.rules}
        warnings, next_expiry = [], None
        for ex in self.ruleset.exceptions:
            if ex.expired(today):
                warnings.append(f"exception {ex.id} ({self.ruleset.path}:{ex.line}) expired on "
                                f"{ex.expires}; it no longer applies")
                continue
            if ex.expires is not None and (next_expiry is None or ex.expires < next_expiry):
                next_expiry = ex.expires
            for rule_id in ex.rules:
                by_rule[rule_id].append(ex)
        enforcers = [_RuleEnforcer(rule, by_rule[rule.id], self.model_text)
                     for rule in self.ruleset.rules]
        self._state: tuple[list[_RuleEnforcer], dict] = (enforcers, {})
        self._next_expiry = next_expiry
        self.warnings = warnings

    def _current(self) -> None:
        """Drop exceptions that expired since the last build (checked on every evaluation:
        one comparison; the rebuild happens once per expiry)."""
        if self._next_expiry is None:
            return
        today = self._clock()
        if today > self._next_expiry:
            with self._rebuild_lock:
                if self._next_expiry is not None and today > self._next_expiry:
                    self._build(today)

    @classmethod
    def load(cls, directory: Path) -> "Policy":
        directory = Path(directory)
        if not (directory / MODEL_FILE).is_file():
            raise PolicyError(f"{directory}: no {MODEL_FILE}")
        ruleset = load_rules(directory / RULES_FILE)
        policy = cls(directory, ruleset, "")
        try:
            policy.revision = policy_revision(directory)
        except NotTrusted as exc:
            raise PolicyError(f"{directory}: someone other than root could rewrite a file of "
                              f"the policy: {exc}") from None
        except OSError as exc:
            raise PolicyError(f"{directory}: cannot read: {exc.strerror or exc}") from None
        return policy

    @staticmethod
    def _candidates(state: tuple[list[_RuleEnforcer], dict], kind: str) -> tuple[_RuleEnforcer, ...]:
        enforcers, by_kind = state
        found = by_kind.get(kind)
        if found is None:
            found = tuple(e for e in enforcers
                          if any(fnmatch.fnmatchcase(kind, k) for k in e.rule.kinds))
            by_kind[kind] = found
        return found

    def evaluate(self, subject: Identity | str, endpoint: str, image: str,
                 facts: Iterable[Fact]) -> Evaluation:
        """Every fact against the rules, for the caller ``subject`` (an Identity; a plain
        string is a name, see ``Identity.named``)."""
        subjects = self.subjects.of(as_identity(subject))
        self._current()
        state = self._state  # one compiled set for the whole evaluation
        violations: list[Violation] = []
        applied: list[ExceptionApplied] = []
        matched: list[Fact] = []
        for fact in facts:
            hit = False
            for enforcer in self._candidates(state, fact.kind):
                decided = enforcer.decide(subjects, endpoint, image, fact)
                if decided is None:
                    continue
                hit = True
                rule = enforcer.rule
                if decided == rule.id:
                    violations.append(Violation(rule.id, fact.describe(), rule.message, rule.fix,
                                                rule.reference, rule.effect))
                else:
                    applied.append(ExceptionApplied(decided, rule.id, fact.describe()))
            if hit:
                matched.append(fact)
        return Evaluation(tuple(violations), tuple(applied), tuple(matched))

    def explain_fact(self, subject: Identity | str, endpoint: str, image: str,
                     fact: Fact) -> list[tuple[Rule, str, str]]:
        """Every rule ``fact`` is put to, and what decided it, as ``policy explain`` shows:
        ``(rule, "deny" | "audit", "")`` the rule matched; ``(rule, "exception", ID)``
        lifted by that exception; ``(rule, "except", VALUE)`` left alone by the rule's own
        ``except:`` value; ``(rule, "", "")`` it did not match."""
        subjects = self.subjects.of(as_identity(subject))
        self._current()
        out = []
        for enforcer in self._candidates(self._state, fact.kind):
            rule, line = enforcer.rule, enforcer.deciding_line(subjects, endpoint, image, fact)
            decided = line[-1] if line else ""
            if not decided:
                out.append((rule, "", ""))
            elif decided == rule.id:
                out.append((rule, rule.effect, ""))
            elif decided.endswith(_EXCEPT_VALUE_MARK):
                out.append((rule, "except", line[5]))
            else:
                out.append((rule, "exception", decided))
        return out
