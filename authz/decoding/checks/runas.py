"""Checks on the user a container runs as: the create's ``User``, else its image's ``USER``
(read through dockerd by state.py), a container's stored user, a service's.

dockerd hands the user to runc's ``libcontainer/user.GetExecUser``, which reads
``user[:group]`` from the container's own /etc/passwd: the part before the first ``:`` is
the user; a part that Go's ``strconv.Atoi`` reads (``0``, ``00``, ``+0``, ``1000``) is a
uid, anything else a name looked up in /etc/passwd; an empty part is uid 0. pyauthz never
reads the image's /etc/passwd: a name other than ``root`` is ``unknown`` (as Kubernetes'
``runAsNonRoot`` refuses to verify named users)."""

from __future__ import annotations

import re
from typing import Iterator

from authz.decoding.checks.registry import CONFIG, CONTAINER_SPEC, STORED_CONFIG, check, inside
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, get_str

USER = fact_kind("user", "the user a container or exec runs as, as given (user[:group]): the "
                 "create's User, else its image's USER")
USER_ROOT = fact_kind("user.root", "true, false, unknown: whether that user is uid 0 (unknown: a "
                      "name other than root, which only the image's /etc/passwd resolves)")

# The longest user value a fact carries; user.root is judged on the whole value.
USER_MAX = 256
_GO_ATOI = re.compile(r"[+-]?[0-9]+\Z")
_INT64 = range(-(1 << 63), 1 << 63)
_MAX_UID = (1 << 31) - 1   # runc's maxId: a uid above it is refused (ErrRange)


def user_is_root(user: str) -> str:
    """``true``, ``false`` or ``unknown``: whether runc runs ``user[:group]`` as uid 0."""
    name = user.split(":", 1)[0]
    if name == "":
        return "true"          # no user: uid 0 (runc's default)
    # Go's Atoi fails on a number out of int64 (at most 20 characters with a sign): runc then
    # looks the text up as a name.
    if len(name) <= 20 and _GO_ATOI.match(name) and int(name) in _INT64:
        uid = int(name)
        if uid == 0:
            return "true"
        # A negative uid or one above 2^31-1 is refused by runc (ErrRange), unless the
        # image's /etc/passwd has such a uid: not judged.
        return "false" if 0 < uid <= _MAX_UID else "unknown"
    if name == "root":
        return "true"
    return "unknown"           # a name (or a number Atoi cannot read): /etc/passwd decides


def user_facts(user: str, where: str, detail: str = "") -> list[Fact]:
    """``user`` (when not empty: an empty user is root) and ``user.root``."""
    facts = []
    if user:
        value = user if len(user) <= USER_MAX else user[:USER_MAX]
        facts.append(Fact("user", value, where, detail))
    facts.append(Fact("user.root", user_is_root(user), where, detail))
    return facts


@check(reads=(CONFIG,), reports=(USER, USER_ROOT), rank=10)
def check_user(config: GoObject | None, where: str) -> Iterator[Fact]:
    """``docker run -u``: the create's ``User``. Without one the image's ``USER`` applies,
    which state.py reads through dockerd; with no image either, the container runs as root."""
    user = get_str(config, "User", where)
    if user:
        yield from user_facts(user, inside(where, "User"))
    elif not get_str(config, "Image", where):
        yield from user_facts("", inside(where, "User"), "no user and no image: uid 0")


@check(reads=(STORED_CONFIG,), reports=(USER, USER_ROOT), rank=10)
def check_stored_user(config: GoObject | None, where: str) -> Iterator[Fact]:
    """A container's stored ``Config.User``: dockerd merged its image's ``USER`` into it at
    create, so it is the user the container runs as (empty: root)."""
    yield from user_facts(get_str(config, "User", where), inside(where, "User"))


@check(reads=(CONTAINER_SPEC,), reports=(USER, USER_ROOT), rank=130)
def check_service_user(spec: GoObject | None, where: str) -> Iterator[Fact]:
    """A service's ``ContainerSpec.User``; without one, the image's ``USER`` on each node,
    which is not read: ``unknown``."""
    user = get_str(spec, "User", where)
    if user:
        yield from user_facts(user, inside(where, "User"))
    else:
        yield Fact("user.root", "unknown", inside(where, "User"),
                   "no user: the image's default user, on the nodes, is not read")
