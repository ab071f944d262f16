"""Policy test cases: the YAML format kept beside a policy (``DIR/tests/*.yaml``) and the
requests a case stands for.

A case file is read by the strict reader rules.yaml is read with (duplicate keys, merge keys
and non-text scalars where text is expected stop the load at their line)::

    cases:
      - name: a privileged container is denied
        docker: run --privileged -v /:/h busybox true   # a docker CLI line ("docker" optional)
        expect: deny                                    # allow | deny
        rules: [privileged, host-path-protected]        # the exact set of denying rule ids
      - name: a raw request
        request: {method: POST, uri: /v1.41/containers/create, body: {Image: busybox}}
        user: alice                                     # the subject (TLS client CN)
        expect: allow
        near_miss: [privileged]                         # the rules this allowed case comes close to

docs/policy.md ("Testing a policy: pyauthz policy test") documents every key.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.policy.yamlfile import LINE, StrictYaml
from authz.protocol import REQUEST_PHASE, AuthzRequest, Headers, ProtocolError, parse_call

OUTCOMES = ("allow", "deny")
STATE_KINDS = ("containers", "execs", "volumes", "networks", "plugins", "images")
CERTIFICATE_KEYS = ("o", "ou", "san", "issuer")
SAN_KINDS = ("dns", "email", "uri", "ip")
_CASE_KEYS = {"name", "docker", "request", "call", "api_version", "user", "certificate",
              "state", "expect", "rules", "audits", "exceptions", "near_miss"}
_REQUEST_KEYS = {"method", "uri", "headers", "body"}


class CaseError(ValueError):
    """A case file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class RawRequest:
    """A request as dockerd hands it to the plugin: method, URI, headers, body bytes."""

    method: str
    uri: str
    headers: dict[str, str]
    body: bytes | None
    label: str = "request"

    def call(self, user: str = "") -> AuthzRequest:
        return AuthzRequest(phase=REQUEST_PHASE, user=user, method=self.method, uri=self.uri,
                            body=self.body, headers=Headers(self.headers))


def with_identity(call: AuthzRequest, user: str,
                  certificate: dict[str, tuple[str, ...]] | None = None) -> AuthzRequest:
    """``call`` made by ``user`` as dockerd reports a caller: no user is ``anonymous`` (the
    unix socket); a user is a TLS client certificate's CN, with the certificate's other
    fields (o, ou, san as ``dns:NAME``/``email:ADDR``/``uri:URI``/``ip:ADDR``, issuer)."""
    if "identity" not in {f.name for f in dataclasses.fields(AuthzRequest)}:
        if certificate:
            raise ValueError("certificate fields need a pyauthz that reads them (authz.identity)")
        return dataclasses.replace(call, user=user)
    from authz.identity import Identity

    if not user or (user == Identity.anonymous().name and not certificate):
        return dataclasses.replace(call, user="", identity=Identity.anonymous())
    fields: dict[str, list[str]] = {"cn": [user]}
    for key, values in (certificate or {}).items():
        if key == "san":
            for value in values:
                kind, _, name = value.partition(":")
                fields.setdefault(f"san:{kind}", []).append(name)
        else:
            fields[key] = list(values)
    return dataclasses.replace(call, user=user, identity=Identity.build(user, fields))


@dataclass(frozen=True)
class Case:
    """One expectation about one docker command (or one raw API request)."""

    name: str
    file: Path
    line: int
    expect: str                         # allow | deny
    rules: frozenset[str]               # the exact set of denying rule ids
    docker: tuple[str, ...] = ()        # a docker CLI argv (without "docker"), or ()
    request: RawRequest | None = None   # or a raw API request
    call: str = ""                      # the label of the call the expectation is about
    api_version: str = "1.41"
    user: str = ""
    certificate: dict[str, tuple[str, ...]] = field(default_factory=dict)
    state: dict[str, tuple[dict, ...]] = field(default_factory=dict)
    audits: frozenset[str] | None = None       # exact set when given
    exceptions: frozenset[str] | None = None   # exact set when given
    near_miss: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def command(self) -> str:
        """How the case names its request, for tables and reports."""
        if self.request is not None:
            return f"{self.request.method} {self.request.uri}"
        return "docker " + shlex.join(self.docker)


def _strip_lines(value: Any) -> Any:
    """A YAML value as plain JSON data (the strict reader's ``__line__`` keys removed)."""
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != LINE}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def body_bytes(body: Any) -> bytes | None:
    """A body given as text is sent as is (UTF-8); any other value is sent as JSON."""
    if body is None:
        return None
    if isinstance(body, str):
        return body.encode()
    return json.dumps(_strip_lines(body), separators=(",", ":")).encode()


def default_headers(body: bytes | None) -> dict[str, str]:
    """What the docker CLI sends: a JSON Content-Type with a body, Content-Length always."""
    if body is None:
        return {"Content-Length": "0"}
    return {"Content-Type": "application/json", "Content-Length": str(len(body))}


def raw_request(doc: Any, reader: StrictYaml) -> RawRequest:
    """``{method, uri, headers?, body?}``, or dockerd's own AuthZReq call
    (``RequestMethod``, ``RequestUri``, ``RequestHeaders``, ``RequestBody`` in base64)."""
    if not isinstance(doc, dict):
        raise reader.fail(None, "a request is a mapping: method, uri, headers, body")
    line = doc.get(LINE)
    if any(str(k).startswith("Request") for k in doc):
        try:
            call = parse_call(json.dumps(_strip_lines(doc)).encode(), REQUEST_PHASE)
        except ProtocolError as exc:
            raise reader.fail(line, f"not a dockerd AuthZReq call: {exc}") from None
        return RawRequest(call.method, call.uri, dict(call.headers.items()), call.body)
    reader.keys(doc, _REQUEST_KEYS, "a request", required={"method", "uri"})
    method, uri = doc["method"], doc["uri"]
    if not isinstance(method, str) or not isinstance(uri, str):
        raise reader.fail(line, "a request's method and uri must be text")
    body = body_bytes(doc.get("body"))
    headers = doc.get("headers")
    if headers is None:
        headers = default_headers(body)
    elif not isinstance(headers, dict) or not all(
            isinstance(v, str) for k, v in headers.items() if k != LINE):
        raise reader.fail(line, "headers: a mapping of header names to text values (quote "
                                "numbers: Content-Length: \"0\")")
    return RawRequest(method, uri, _strip_lines(headers), body)


def _argv(value: Any, reader: StrictYaml, line: int) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise reader.fail(line, f"docker: cannot split the command line: {exc}") from None
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        argv = list(value)
    else:
        raise reader.fail(line, "docker: a command line (text) or a list of arguments")
    if argv and argv[0] == "docker":
        argv = argv[1:]
    if not argv:
        raise reader.fail(line, "docker: an empty command")
    return tuple(argv)


def _ids(reader: StrictYaml, item: dict, key: str) -> frozenset[str] | None:
    if key not in item:
        return None
    return frozenset(reader.strings(item, key, default=[]))


def _certificate(reader: StrictYaml, item: dict, line: int) -> dict[str, tuple[str, ...]]:
    cert = item.get("certificate")
    if cert is None:
        return {}
    if not isinstance(cert, dict):
        raise reader.fail(line, "certificate: a mapping of o, ou, san, issuer")
    reader.keys(cert, set(CERTIFICATE_KEYS), "certificate")
    out = {key: reader.strings(cert, key) for key in CERTIFICATE_KEYS if key in cert}
    for san in out.get("san", ()):
        if san.partition(":")[0] not in SAN_KINDS or not san.partition(":")[2]:
            raise reader.fail(cert.get(LINE), f"certificate: san {san!r} is one of "
                                              + ", ".join(f"{k}:VALUE" for k in SAN_KINDS))
    return out


def read_state(reader: StrictYaml, item: dict, line: int | None) -> dict[str, tuple[dict, ...]]:
    state = item.get("state")
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise reader.fail(line, f"state: a mapping of {', '.join(STATE_KINDS)}")
    reader.keys(state, set(STATE_KINDS), "state")
    out = {}
    for kind in STATE_KINDS:
        objects = state.get(kind, [])
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise reader.fail(state.get(LINE), f"state: {kind} is a list of objects as dockerd's "
                                               "inspect answers them")
        out[kind] = tuple(_strip_lines(o) for o in objects)
    return out


def _case(reader: StrictYaml, item: Any, index: int) -> Case:
    if not isinstance(item, dict):
        raise reader.fail(None, f"case {index + 1}: a mapping, please")
    line = item[LINE]
    reader.keys(item, _CASE_KEYS, "a case", required={"name", "expect"})
    name = reader.text(item, "name")
    if ("docker" in item) == ("request" in item):
        raise reader.fail(line, f"case {name!r}: give one of 'docker' (a CLI line) or 'request'")
    expect = item["expect"]
    if expect not in OUTCOMES:
        raise reader.fail(line, f"case {name!r}: expect is allow or deny")
    rules = frozenset(reader.strings(item, "rules", default=[]))
    if expect == "deny" and not rules:
        raise reader.fail(line, f"case {name!r}: a deny names the rules that deny ('rules:')")
    if expect == "allow" and rules:
        raise reader.fail(line, f"case {name!r}: an allow has no denying rules; audit-only "
                                "rules go under 'audits:'")
    near_miss = reader.strings(item, "near_miss", default=[])
    if set(near_miss) & rules:
        raise reader.fail(line, f"case {name!r}: a near miss of a rule it expects to deny")
    user = item.get("user", "")
    api_version = item.get("api_version", "1.41")
    call = item.get("call", "")
    for key, value in (("user", user), ("api_version", api_version), ("call", call)):
        if not isinstance(value, str):
            raise reader.fail(line, f"case {name!r}: {key} must be text (quote it)")
    if call and "request" in item:
        raise reader.fail(line, f"case {name!r}: 'call' chooses among a CLI line's calls")
    return Case(
        name=name, file=reader.path, line=line, expect=expect, rules=rules,
        docker=_argv(item["docker"], reader, line) if "docker" in item else (),
        request=raw_request(item["request"], reader) if "request" in item else None,
        call=call, api_version=api_version, user=user,
        certificate=_certificate(reader, item, line), state=read_state(reader, item, line),
        audits=_ids(reader, item, "audits"), exceptions=_ids(reader, item, "exceptions"),
        near_miss=near_miss)


def load_file(path: Path) -> list[Case]:
    """The cases of one file (``cases:``, a list); CaseError with file:line otherwise."""
    reader = StrictYaml(path, CaseError)
    doc = reader.load()
    if not isinstance(doc, dict):
        raise reader.fail(None, "a case file is a mapping with 'cases:' (a list)")
    reader.keys(doc, {"cases"}, "a case file", required={"cases"})
    items = doc["cases"]
    if not isinstance(items, list):
        raise reader.fail(doc.get(LINE), "'cases' is a list")
    cases = [_case(reader, item, i) for i, item in enumerate(items)]
    seen: dict[str, Case] = {}
    for case in cases:
        if case.name in seen:
            raise reader.fail(case.line, f"case {case.name!r} is also at line {seen[case.name].line}")
        seen[case.name] = case
    return cases


# Rule ids a case may name that are not in rules.yaml: the built-in floor's, and the
# refusals and image trust results the plugin itself reports.
BUILT_IN_IDS = frozenset({"host-path-protected", "authz-plugin-protected", "protocol",
                          "internal-error"})
BUILT_IN_PREFIXES = ("request-", "image-")


def check_near_misses(cases: list[Case], rule_ids) -> None:
    """``near_miss:`` is metadata (the shipped suite's coverage test reads it; ``policy
    test`` decides nothing from it), but a rule id it names must exist: the policy's
    rules, or a built-in id. CaseError with the case's ``file:line`` otherwise (a renamed or
    removed rule leaves the coverage it claims behind)."""
    known = set(rule_ids) | BUILT_IN_IDS
    for case in cases:
        unknown = [r for r in case.near_miss
                   if r not in known and not r.startswith(BUILT_IN_PREFIXES)]
        if unknown:
            raise CaseError(f"{case.where}: case {case.name!r}: near_miss names "
                            f"{', '.join(unknown)}, which the policy has no rule of")


def case_files(policy_dir: Path) -> list[Path]:
    """``DIR/tests/*.yaml`` (and ``*.yml``), in name order."""
    tests = Path(policy_dir) / "tests"
    return sorted(p for p in tests.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_cases(policy_dir: Path, files: list[Path] | None = None) -> list[Case]:
    """Every case kept beside the policy (or in ``files``)."""
    paths = files if files is not None else case_files(policy_dir)
    if not paths:
        raise CaseError(f"{Path(policy_dir) / 'tests'}: no case files (*.yaml)")
    return [case for path in paths for case in load_file(path)]
