"""Who can change a file pyauthz trusts: a path is only as safe as every directory above it
(anyone who can write a directory can rename an entry away and put their own in its place,
unless the directory is sticky, as /tmp is), and as the file itself (its owner, or anyone
when it is writable by every user, can rewrite it)."""

from __future__ import annotations

import os
import stat


def _unsafe_directory(path: str) -> str | None:
    """Why someone other than root can replace entries of directory ``path``, or None."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"{path} cannot be checked: {exc.strerror or exc}"
    if info.st_uid != 0:
        return f"{path} belongs to uid {info.st_uid}, not root"
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        return f"{path} is writable by every user (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _directories_above(path: str) -> list[str]:
    """Every directory above ``path``, nearest first."""
    found = []
    current = os.path.dirname(path)
    while True:
        found.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            return found
        current = parent


def unsafe_ancestor(path: str) -> str | None:
    """Why a directory above ``path`` (its real location) lets someone other than root
    replace it, or None: each must be root's, and not writable by others unless sticky."""
    for directory in _directories_above(os.path.realpath(path)):
        why = _unsafe_directory(directory)
        if why is not None:
            return why
    return None


def rewritable_by_others(path: str) -> str | None:
    """Why someone other than root could rewrite or replace the file ``path`` names (a key,
    a CA bundle, registry logins), or None: the file (symlinks followed) must be root's and
    not writable by every user, and so must every directory above it, both where it is named
    (a symlink there can be swapped) and where it really is."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"{path} cannot be checked: {exc.strerror or exc}"
    if info.st_uid != 0:
        return f"{path} belongs to uid {info.st_uid}, not root"
    if info.st_mode & stat.S_IWOTH:
        return f"{path} is writable by every user (mode {stat.S_IMODE(info.st_mode):04o})"
    for directory in _directories_above(os.path.abspath(path)):
        why = _unsafe_directory(directory)
        if why is not None:
            return why
    return unsafe_ancestor(path)
