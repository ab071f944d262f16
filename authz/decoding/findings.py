"""What a decoder works with and fills in: the request body as dockerd forwarded it, and
the findings of one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact
from authz.decoding.uri import Target
from authz.moby.gojson import GoObject, loads
from authz.moby.reference import InvalidReference, parse_reference

READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class ImageDefaults:
    """A create that leaves something to its image, read through dockerd (state.py): the
    user it runs as (no ``User`` given), the ports ``-P`` publishes (the image's exposed
    ports, but for those the request exposes or binds itself: ``covered``)."""

    image: str                  # Config.Image, as dockerd resolves it at the create
    where: str
    user: bool
    publish_all: bool
    covered: frozenset[str] = frozenset()


@dataclass
class Findings:
    """What a decoder finds in one request: its facts, the images it names, and what
    deciding must still read through dockerd (``state.py``)."""

    endpoint: str
    write: bool
    params: dict[str, str] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)
    # Image references as the request gives them: pulled (as dockerd builds the reference
    # from fromImage+tag; a bare name pulls every tag), run from the local store (the raw
    # Image: a name, an id or an id prefix), or run by swarm services (nodes pull them).
    pulls: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    # Containers started (by name or id): their stored configuration and image are checked
    # again (state.py).
    starts: list[str] = field(default_factory=list)
    # Containers a request acts inside with their stored privileges (exec, attach, archive,
    # copy): their stored configuration is checked again, as for a start.
    acts_on: list[str] = field(default_factory=list)
    # Exec instances started (exact ids): their container and their own privileges.
    execs: list[str] = field(default_factory=list)
    # Plugins acted on (enable, disable, remove, upgrade, set): read through dockerd.
    plugins: list[str] = field(default_factory=list)
    # plugin set: the settings, resolved against the plugin's config as dockerd does.
    plugin_settings: list[str] = field(default_factory=list)
    # Containers whose mounts a create takes over (--volumes-from NAME[:ro|rw]), and where.
    volumes_from: list[tuple[str, str]] = field(default_factory=list)
    # Named volumes a create mounts, and where: their options are looked up (state.py).
    volumes: list[tuple[str, str]] = field(default_factory=list)
    # Service network targets other than "host" (a name, an id or an id prefix), and where.
    network_targets: list[tuple[str, str]] = field(default_factory=list)
    # network create --config-from NAME: (NAME, the new network's driver, where).
    network_configs: list[tuple[str, str, str]] = field(default_factory=list)
    # A create's image, when its defaults decide a fact (the user, -P's ports).
    image_defaults: list[ImageDefaults] = field(default_factory=list)

    def needs_state(self) -> bool:
        """Whether deciding reads dockerd's state (state.py)."""
        return bool(self.starts or self.acts_on or self.execs or self.plugins or self.volumes
                    or self.volumes_from or self.network_targets or self.network_configs
                    or self.image_defaults)

    @property
    def image(self) -> str:
        """The image the policy's ``images:`` patterns are matched against."""
        for ref in self.runs + self.services:
            return normalize_image(ref, default_tag=True)
        for ref in self.pulls:
            return normalize_image(ref, default_tag=False)
        return ""


@dataclass(frozen=True)
class Body:
    """The request body as forwarded by dockerd, and whether one may exist unseen."""

    data: bytes | None
    # dockerd forwards a body only when Content-Type is JSON, 0 < Content-Length < 1 MiB
    # and the URI does not end in "/auth". When none arrived, one may still exist
    # (chunked, too big, another type): only a Content-Length of 0 proves there is none.
    maybe_hidden: bool

    def json(self, endpoint: str, required: bool = True) -> GoObject | None:
        if not self.data:
            if required or self.maybe_hidden:
                raise RequestRefused(
                    "request-body-missing",
                    f"{endpoint} needs its JSON body inspected, and dockerd forwarded none "
                    "(body over 1 MiB, chunked, not application/json, or a URI ending in '/auth')",
                    "Send the body as Content-Type: application/json with a Content-Length, "
                    "under 1 MiB, and without '/auth' at the end of the URI.",
                )
            return None
        doc = loads(self.data)
        if doc is None:
            # Go decodes `null` into a struct as its zero value (the docker CLI's commit
            # sends `null` when no --change config is given): no field set.
            return GoObject([])
        if not isinstance(doc, GoObject):
            raise RequestRefused("request-body-invalid", f"{endpoint} body is not a JSON object",
                                 "Send a JSON object.")
        return doc

    def expect_none(self, endpoint: str) -> None:
        if self.data or self.maybe_hidden:
            raise RequestRefused(
                "request-body-missing",
                f"{endpoint} takes no body, and this request has one the plugin cannot see "
                "(dockerd may read it as form values)",
                "Send no body (Content-Length: 0).",
            )


Decoder = Callable[[Target, Body, Findings], None]


def normalize_image(text: str, *, default_tag: bool) -> str:
    """The normalized reference (``docker.io/library/busybox:latest``), or the text as given
    when it is not a name (an image id) or not valid (dockerd will refuse it)."""
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return text
    return str(ref.with_default_tag() if default_tag else ref)
