"""Who can change a file pyauthz trusts: a path is only as safe as every directory above it
(anyone who can write a directory can rename an entry away and put their own in its place,
unless the directory is sticky, as /tmp is), and as the file itself (its owner, or anyone
when it is writable by every user, can rewrite it), and as every symlink on the way to it.

``open_verified`` resolves a path as the kernel does, one component at a time from ``/``,
checking each directory, each symlink and the file itself, and returns the descriptor it
checked: what is read is what was checked, whatever is renamed or swapped meanwhile. The
files that decide (rules.yaml, model.conf, trust.yaml, and the keys, CA bundles and logins
trust.yaml names) are read that way, once per load, and only those bytes are used."""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator


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


class NotTrusted(OSError):
    """A file pyauthz would trust could be rewritten or replaced by someone else: ``why``."""

    def __init__(self, why: str):
        super().__init__(errno.EPERM, why)

    def __str__(self) -> str:
        return self.strerror


class TooLarge(OSError):
    """A file larger than pyauthz reads."""

    def __init__(self, why: str):
        super().__init__(errno.EFBIG, why)

    def __str__(self) -> str:
        return self.strerror


ROOT_ONLY = frozenset({0})
MAX_POLICY_FILE_BYTES = 16 * 1024 * 1024  # a policy file, a key, a CA bundle, logins
_AS_SERVED: ContextVar[bool] = ContextVar("pyauthz_as_served", default=False)


def trusted_owners() -> frozenset[int]:
    """Whose files this process may trust: root's, and its own (under ``pyauthz serve``, run
    as root, root's alone; a security team's ``policy test`` run as a user, theirs too),
    except within ``as_served()``: root's alone."""
    return ROOT_ONLY if _AS_SERVED.get() else frozenset({0, os.geteuid()})


@contextmanager
def as_served() -> Iterator[None]:
    """Judge files as ``pyauthz serve`` (root) does, whoever runs this: ``policy lint`` says
    what serve and a reload would refuse, even when a user runs it on their own files."""
    token = _AS_SERVED.set(True)
    try:
        yield
    finally:
        _AS_SERVED.reset(token)


MAX_LINKS = 40  # as the kernel's own limit on symlinks followed in one path
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def check_entry(info: os.stat_result, where: str, owners: frozenset[int]) -> None:
    """A directory, symlink or file met on the way: an owner's, and not open to others (a
    directory writable by every user must be sticky; a file must not be)."""
    if info.st_uid not in owners:
        raise NotTrusted(f"{where} belongs to uid {info.st_uid}, not root"
                         + (f" or uid {os.geteuid()}" if os.geteuid() in owners and
                            os.geteuid() != 0 else ""))
    if info.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(info.st_mode)
                                            and info.st_mode & stat.S_ISVTX):
        if not stat.S_ISLNK(info.st_mode):
            raise NotTrusted(f"{where} is writable by every user "
                             f"(mode {stat.S_IMODE(info.st_mode):04o})")


def open_verified(path: str, *, owners: frozenset[int] | None = None,
                  directory: bool = False, visited: list[str] | None = None) -> int:
    """Open ``path`` (a regular file, or with ``directory`` a directory) the way the kernel
    resolves it, one component at a time from ``/`` and never through a symlink it has not
    checked: every directory traversed, every symlink followed (wherever it leads) and the
    file itself must belong to ``owners`` and not be writable by every user (a directory may
    be, if sticky). What is opened is what was checked: the descriptor is returned, and
    nothing resolves the path again. NotTrusted otherwise (FileNotFoundError and other
    OSErrors as they come). ``owners``: ``trusted_owners()`` unless given. ``visited``
    gets the real path of every symlink followed and of what was opened (what a bind must
    never reach, nor a directory holding one: authz.plugin)."""
    owners = trusted_owners() if owners is None else owners
    if path.endswith("/") and not directory:
        raise NotADirectoryError(errno.ENOTDIR, f"{path}: a file name ends with '/'")
    try:
        return _open_verified(path, owners, directory, visited)
    except FileNotFoundError as exc:
        raise FileNotFoundError(errno.ENOENT, f"{exc.strerror} ({exc.filename!r} of {path})",
                                path) from None


def _open_verified(path: str, owners: frozenset[int], directory: bool,
                   visited: list[str] | None) -> int:
    parts = [p for p in os.path.join(os.getcwd(), path).split("/") if p][::-1]
    current, where, links = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), "/", 0
    try:
        check_entry(os.fstat(current), "/", owners)
        while parts:
            name = parts.pop()
            if name == ".":
                continue
            last = not parts
            if last and not directory:
                try:
                    found = os.open(name, _READ_FLAGS, dir_fd=current)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    found = os.open(name, _PATH_FLAGS, dir_fd=current)  # a symlink: follow it
            else:
                found = os.open(name, _PATH_FLAGS, dir_fd=current)
            info = os.fstat(found)
            if name == ".." and visited is not None:
                # The directory left decides where ".." leads (were it swapped for a
                # symlink, elsewhere): what a bind must not reach, as a symlink followed.
                visited.append(where)
            here = os.path.join(where, name) if name != ".." else os.path.dirname(where)
            try:
                check_entry(info, here, owners)
                if stat.S_ISLNK(info.st_mode):
                    if visited is not None:
                        visited.append(here)
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, f"too many symbolic links in {path}")
                    target = os.readlink("", dir_fd=found)
                    parts += [p for p in target.split("/") if p][::-1]
                    if target.startswith("/"):
                        os.close(current)
                        current, where = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), "/"
                    continue
                if last:
                    if visited is not None:
                        visited.append(here)
                    wanted = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
                    if not wanted:
                        raise NotTrusted(f"{here} is not a {'directory' if directory else 'regular file'}")
                    if directory:
                        opened = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                                         dir_fd=found)
                        os.close(found)
                        found = opened
                    os.close(current)
                    current, found = found, -1
                    return current
                if not stat.S_ISDIR(info.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, f"{here} is not a directory")
                os.close(current)
                current, found, where = found, -1, here
            finally:
                if found != -1:
                    os.close(found)
        # The path was "/" (or ended in "."/".."): the directory reached.
        if not directory:
            raise NotTrusted(f"{path} is not a regular file")
        opened = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=current)
        os.close(current)
        current = opened
        return current
    except BaseException:
        os.close(current)
        raise


def read_verified(path: str, limit: int = MAX_POLICY_FILE_BYTES, *,
                  owners: frozenset[int] | None = None,
                  visited: list[str] | None = None) -> bytes:
    """The bytes of the file ``path`` names, read from what ``open_verified`` checked: at
    most ``limit`` (larger: TooLarge)."""
    fd = open_verified(path, owners=owners, visited=visited)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge(f"{path} is larger than {limit} bytes")
    return data
