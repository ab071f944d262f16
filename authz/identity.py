"""Who is asking: the caller's identity, read from its TLS client certificate.

dockerd (``--tlsverify``) verifies the client's certificate chain and forwards the
certificates the client presented (``RequestPeerCertificates``, leaf first) with ``User``, the
leaf's subject CN. Only the leaf is the caller's: the certificates after it are whatever the
client sent along (intermediates, or anything else), so no field is read from them. A caller
without a certificate (the unix socket, or TCP without ``--tlsverify``) is ``anonymous`` and
has no fields: nothing a local caller sends can give it one.

Policies name callers with **subjects** (docs/policy.md, "Who is asking"):

==========================  ===========================================================
``*``                       everyone
``role:NAME``               the members of a role (``roles:`` in rules.yaml)
``anonymous``               the caller without a certificate
``NAME`` (no ``:``)         a TLS caller whose certificate CN (dockerd's ``User``) is NAME
``cn:VALUE``                the same, for any CN (``cn:anonymous``, ``cn:host:1``)
``o:VALUE``, ``ou:VALUE``   one of the leaf's subject O (OU) attributes is VALUE
``san:dns:NAME``            a DNS subject alternative name (compared in lower case)
``san:email:ADDR``          an email (rfc822Name) subject alternative name
``san:uri:URI``             a URI subject alternative name (``spiffe://...``)
``san:ip:ADDR``             an IP address subject alternative name
``issuer:DN``               the leaf's issuer, as an RFC 4514 string (``CN=Corp CA,O=Acme``)
==========================  ===========================================================

Values match exactly, whole value against whole value, never as globs: a field is kept as
the list of its values, never joined into one string, so an O of ``Acme,OU=ops`` is that
one value and matches neither ``o:Acme`` nor ``ou:ops``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

ANONYMOUS = "anonymous"

# The certificate fields a subject can name, in the order the log lists them.
FIELD_KINDS = ("cn", "o", "ou", "san:dns", "san:email", "san:uri", "san:ip", "issuer")

# Bounds on what one certificate may bring (a verified client certificate has a handful).
MAX_VALUES_PER_FIELD = 64
MAX_VALUE_CHARS = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class IdentityError(ValueError):
    """A certificate, a logged identity or a subject that cannot be read."""


@dataclass(frozen=True)
class Identity:
    """The caller: ``name`` (the certificate's CN as dockerd reads it, or ``anonymous``),
    whether it presented a certificate, and the certificate fields subjects can match, each
    a tuple of values (``fields`` holds only kinds with at least one value, in
    ``FIELD_KINDS`` order)."""

    name: str
    certificate: bool = False
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def anonymous(cls) -> "Identity":
        """The caller without a certificate: no fields, never anyone else."""
        return _ANONYMOUS

    @classmethod
    def named(cls, name: str) -> "Identity":
        """A caller known only by name (a test, ``policy explain --user U``):
        ``anonymous`` is the caller without a certificate; any other name is a TLS caller
        whose certificate has that CN and no other field."""
        if name == ANONYMOUS:
            return _ANONYMOUS
        return cls.build(name, {"cn": [name]})

    @classmethod
    def build(cls, name: str, fields: Mapping[str, Iterable[str]]) -> "Identity":
        """A TLS caller with these certificate fields (values normalized as matched)."""
        out = []
        for kind in FIELD_KINDS:
            values = tuple(dict.fromkeys(_normalize(kind, v) for v in fields.get(kind, ())))
            if len(values) > MAX_VALUES_PER_FIELD:
                raise IdentityError(f"the certificate has more than {MAX_VALUES_PER_FIELD} "
                                    f"{kind} values")
            if values:
                out.append((kind, values))
        unknown = set(fields) - set(FIELD_KINDS)
        if unknown:
            raise IdentityError(f"unknown certificate fields: {', '.join(sorted(unknown))}")
        return cls(name=name, certificate=True, fields=tuple(out))

    def field(self, kind: str) -> tuple[str, ...]:
        for k, values in self.fields:
            if k == kind:
                return values
        return ()

    def matches(self, subject: "Subject") -> bool:
        """Whether this caller is ``subject`` (a parsed selector; roles are resolved by the
        policy, not here)."""
        if subject.kind == "*":
            return True
        if subject.kind == ANONYMOUS:
            return not self.certificate
        if not self.certificate:
            return False  # a caller without a certificate has no name and no field
        if subject.kind == "name":
            return self.name == subject.value
        return subject.value in self.field(subject.kind)

    def as_log(self) -> dict[str, Any]:
        """The decision log's ``identity``: ``{"name", "certificate", "fields"}``, fields
        mapping each kind to its list of values. No key material, nothing else."""
        return {"name": self.name, "certificate": self.certificate,
                "fields": {kind: list(values) for kind, values in self.fields}}

    @classmethod
    def from_log(cls, doc: Any) -> "Identity":
        """The identity a decision-log line recorded (``as_log``), exactly; IdentityError
        when it is not one."""
        if not isinstance(doc, dict) or set(doc) - {"name", "certificate", "fields"}:
            raise IdentityError("a logged identity is an object with name, certificate, fields")
        name, certificate, fields = doc.get("name"), doc.get("certificate"), doc.get("fields", {})
        if not isinstance(name, str) or not isinstance(certificate, bool):
            raise IdentityError("a logged identity needs a string name and a boolean certificate")
        if not isinstance(fields, dict) or not all(
                isinstance(v, list) and all(isinstance(s, str) for s in v) for v in fields.values()):
            raise IdentityError("a logged identity's fields map a kind to a list of strings")
        if not certificate:
            if name != ANONYMOUS or any(fields.values()):
                raise IdentityError("a logged identity without a certificate is anonymous, "
                                    "with no fields")
            return _ANONYMOUS
        identity = cls.build(name, fields)
        if identity.as_log() != {"name": name, "certificate": True,
                                 "fields": {k: v for k, v in fields.items() if v}}:
            raise IdentityError("a logged identity's fields are not in their normalized form")
        return identity


_ANONYMOUS = Identity(ANONYMOUS)


def _normalize(kind: str, value: str) -> str:
    """A field value as it is matched: DNS names in lower case, IP addresses in their
    compressed form; everything else as it is."""
    if not isinstance(value, str):
        raise IdentityError(f"a {kind} value is not a string")
    if len(value) > MAX_VALUE_CHARS:
        raise IdentityError(f"a {kind} value is longer than {MAX_VALUE_CHARS} characters")
    if kind == "san:dns":
        return value.lower()
    if kind == "san:ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise IdentityError(f"san:ip value {value!r} is not an IP address") from None
    return value


# ----------------------------------------------------------------------------- certificates

def from_certificates(ders: Iterable[bytes]) -> Identity:
    """The identity of a caller that presented these certificates (DER, leaf first, as
    dockerd forwards them): read from the leaf only. Every certificate must parse (one that
    does not is refused: IdentityError). No certificate: ``anonymous``."""
    from cryptography import x509

    ders = list(ders)
    if not ders:
        return _ANONYMOUS
    try:
        certificates = [x509.load_der_x509_certificate(der) for der in ders]
    except ValueError as exc:
        raise IdentityError(f"a peer certificate is not a valid X.509 certificate: {exc}") from None
    return _leaf_identity(certificates[0])


def _leaf_identity(cert) -> Identity:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    def attributes(oid) -> list[str]:
        values = [a.value for a in cert.subject.get_attributes_for_oid(oid)]
        if not all(isinstance(v, str) for v in values):
            raise IdentityError("a subject attribute of the certificate is not a string")
        return values

    try:
        common_names = attributes(NameOID.COMMON_NAME)
        fields: dict[str, list[str]] = {
            # Go (and so dockerd's User) reads the last CN of the subject.
            "cn": common_names[-1:],
            "o": attributes(NameOID.ORGANIZATION_NAME),
            "ou": attributes(NameOID.ORGANIZATIONAL_UNIT_NAME),
            "issuer": [cert.issuer.rfc4514_string()],
        }
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        if san is not None:
            fields["san:dns"] = san.get_values_for_type(x509.DNSName)
            fields["san:email"] = san.get_values_for_type(x509.RFC822Name)
            fields["san:uri"] = san.get_values_for_type(x509.UniformResourceIdentifier)
            fields["san:ip"] = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except (ValueError, TypeError) as exc:  # duplicate extensions, a malformed SAN...
        raise IdentityError(f"the client certificate cannot be read: {exc}") from None
    return Identity.build(common_names[-1] if common_names else "", fields)


# ----------------------------------------------------------------------------- subjects

@dataclass(frozen=True)
class Subject:
    """A parsed subject: ``kind`` is ``*``, ``role``, ``anonymous``, ``name`` or one of
    ``FIELD_KINDS``; ``value`` what it names."""

    kind: str
    value: str = ""


_PREFIXES = sorted((k for k in FIELD_KINDS), key=len, reverse=True)


def parse_subject(text: str) -> Subject:
    """Read one subject as written in rules.yaml (see the module's table); IdentityError
    says what is wrong."""
    if not isinstance(text, str) or not text:
        raise IdentityError("a subject is a non-empty string")
    if _CONTROL.search(text) or text != text.strip():
        raise IdentityError(f"subject {text!r} has surrounding whitespace or a control character")
    if text == "*":
        return Subject("*")
    if text == ANONYMOUS:
        return Subject(ANONYMOUS)
    if ":" not in text:
        return Subject("name", text)
    if text.startswith("role:"):
        if not text[5:]:
            raise IdentityError(f"subject {text!r} names no role")
        return Subject("role", text[5:])
    for kind in _PREFIXES:
        if text.startswith(kind + ":"):
            value = text[len(kind) + 1:]
            if not value or value != value.strip():
                raise IdentityError(f"subject {text!r}: the {kind} value is empty or has "
                                    "surrounding whitespace")
            try:
                return Subject(kind, _normalize(kind, value))
            except IdentityError as exc:
                raise IdentityError(f"subject {text!r}: {exc}") from None
    raise IdentityError(
        f"subject {text!r} is neither a name (no ':'), role:NAME, nor a certificate field "
        f"({', '.join(k + ':VALUE' for k in FIELD_KINDS)}); a CN with a ':' is written cn:VALUE")
