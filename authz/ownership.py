"""Who can change a file pyauthz trusts: a path is only as safe as every directory above it
(anyone who can write a directory can rename an entry away and put their own in its place,
unless the directory is sticky, as /tmp is)."""

from __future__ import annotations

import os
import stat


def unsafe_ancestor(path: str) -> str | None:
    """Why a directory above ``path`` (its real location) lets someone other than root
    replace it, or None: each must be root's, and not writable by others unless sticky."""
    current = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            info = os.stat(current)
        except OSError as exc:
            return f"{current} cannot be checked: {exc.strerror or exc}"
        if info.st_uid != 0:
            return f"{current} belongs to uid {info.st_uid}, not root"
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            return f"{current} is writable by every user (mode {stat.S_IMODE(info.st_mode):04o})"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
