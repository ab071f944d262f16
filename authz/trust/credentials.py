"""Registry logins for image trust: ``credentials_file`` in trust.yaml, a docker
``config.json``-style file. A login is never printed, logged or put in an error."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path

from authz.moby.reference import DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAINS
from authz.trust.policy import TrustPolicyError


class Credential:
    """A registry login. Never printed: ``repr`` hides it."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: str):
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return "Credential(<redacted>)"

    __str__ = __repr__


def _login_host(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/x`` -> ``h:5000``."""
    host = re.sub(r"^[a-z]+://", "", key.strip(), flags=re.I).split("/", 1)[0].lower()
    return DEFAULT_DOMAIN if host in LEGACY_DEFAULT_DOMAINS else host


def load_credentials(path: Path, raw: bytes | None = None) -> dict[str, Credential]:
    """Read a docker ``config.json``-style file: ``{"auths": {HOST: {"auth": b64(user:pw)}}}``
    (or ``username``/``password``); ``raw``: its bytes, already read. Error messages never
    contain the file's content."""
    if raw is None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TrustPolicyError(f"credentials_file {path}: cannot read: "
                                   f"{exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise TrustPolicyError(f"credentials_file {path}: not valid JSON") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise TrustPolicyError(f"credentials_file {path}: expected an object with `auths`")
    out: dict[str, Credential] = {}
    for key, entry in auths.items():
        host = _login_host(str(key))
        if not isinstance(entry, dict):
            raise TrustPolicyError(f"credentials_file {path}: entry for {host} is not an object")
        user = entry.get("username")
        pw = entry.get("password")
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise TrustPolicyError(f"credentials_file {path}: `auth` of {host} is not "
                                       f"base64 of user:password") from None
        if not isinstance(user, str) or not isinstance(pw, str) or not user:
            raise TrustPolicyError(f"credentials_file {path}: entry for {host} has no "
                                   f"username/password (`auth` or `username`+`password`; "
                                   f"identity tokens are not supported)")
        out[host] = Credential(user, pw)
    return out


def credentials_mode_warning(path: Path) -> str | None:
    """A warning when the file is readable by anyone but its owner, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"credentials_file {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
    return None
