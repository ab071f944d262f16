"""What several decoders share: bodies that must be empty or merely parse, and image
references written the way dockerd writes them."""

from __future__ import annotations

from authz.decoding.facts import fact_kind
from authz.decoding.findings import Body, Findings
from authz.decoding.uri import Target
from authz.moby.reference import InvalidReference, pull_reference

# Reported by the image decoders (objects.py: tag, import, build) and commit (containers.py).
fact_kind("image.write", "the reference an image is written under")


def no_body(target: Target, body: Body, out: Findings) -> None:
    """State-changing endpoints that take no body: a hidden one may be a form."""
    body.expect_none(out.endpoint)


def binary_body(target: Target, body: Body, out: Findings) -> None:
    """Endpoints that take a tar stream (never forwarded): nothing to read."""


def auth(target: Target, body: Body, out: Findings) -> None:
    """``docker login``: dockerd never forwards a body to a URI ending in ``/auth``, and
    this handler decodes JSON credentials only (no form values): nothing to judge."""


def body_json_optional(target: Target, body: Body, out: Findings) -> None:
    """Endpoints whose JSON body the policy does not read, but which must parse."""
    body.json(out.endpoint, required=False)


def image_ref(name: str, tag: str) -> str:
    """images/create, commit and tag: ``fromImage``/``repo`` + ``tag`` (which may be a
    digest), combined as dockerd does; the text as given when invalid."""
    try:
        return str(pull_reference(name, tag))
    except InvalidReference:
        return f"{name}:{tag}" if tag else name
