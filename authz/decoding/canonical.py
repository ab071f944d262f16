"""Values that dockerd hands to runc or the kernel unchanged, judged as the kernel reads them.

dockerd cleans bind sources itself, but passes these through byte for byte: the local volume
driver's ``device`` and ``o=`` options (mount(2)), a plugin's mount sources (runc), masked and
read-only paths (runc), AppArmor and SELinux names (the kernel trims them). The kernel
resolves a path component by component, a symlink *before* a later ``..``; overlayfs
unescapes ``\\`` in its directory options; runc skips a masked path that does not resolve.

pyauthz never cleans such a value and judges the cleaned form. A path must already be
canonical (absolute, no ``.``/``..``/empty components, no trailing ``/``, no ``\\``, no
whitespace or control character): then what the kernel opens is the path itself with its
symlinks resolved, which is exactly what is judged. Anything else is refused
(``request-noncanonical``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact

# Linux's PATH_MAX: mount(2) and open(2) refuse longer paths.
PATH_MAX = 4096
# Host paths, and path components, one decision may resolve on the host (a system call per
# component, and a few per path): a few milliseconds at most. Real requests resolve a few
# paths of a few components; 256 binds and 256 mounts are the most a body can carry.
PATHS_PER_DECISION = 600
PATH_COMPONENTS_PER_DECISION = 16384
_BUDGET: ContextVar[list[int] | None] = ContextVar("pyauthz_path_budget", default=None)


@contextmanager
def path_budget(components: int = PATH_COMPONENTS_PER_DECISION,
                paths: int = PATHS_PER_DECISION) -> Iterator[None]:
    """Bound the host path resolution of one decision (dockerd waits without a timeout)."""
    token = _BUDGET.set([components, paths])
    try:
        yield
    finally:
        _BUDGET.reset(token)


_BAD_CHAR = re.compile(r"[\\\s\x00-\x1f\x7f]")


def _bad_char(text: str) -> str | None:
    found = _BAD_CHAR.search(text)
    if found is None:
        return None
    if found.group() == "\\":
        return "a backslash (overlayfs and the mount options parser unescape it)"
    return "whitespace or a control character"


def noncanonical(found: str, fix: str) -> RequestRefused:
    return RequestRefused("request-noncanonical", found, fix)


def path_problem(raw: str) -> str | None:
    """Why ``raw`` is not a canonical absolute path, or None when it is."""
    if not raw.startswith("/"):
        return "it is not absolute"
    if len(raw.encode("utf-8", "surrogatepass")) >= PATH_MAX:
        return f"it is longer than PATH_MAX ({PATH_MAX})"
    bad = _bad_char(raw)
    if bad:
        return f"it holds {bad}"
    if raw == "/":
        return None
    if raw.endswith("/"):
        return "it ends in '/'"
    for part in raw[1:].split("/"):
        if part in ("", ".", ".."):
            return "it has an empty, '.' or '..' component (the kernel follows symlinks before '..')"
    return None


def require_path(raw: str, where: str, what: str) -> str:
    """``raw`` when it is a canonical absolute path; else the request is refused."""
    problem = path_problem(raw)
    if problem:
        raise noncanonical(f"{where}: {what} {raw[:200]!r} is not canonical: {problem}",
                           "Give the plain absolute path (no '.', '..', '//', trailing '/', "
                           "'\\' or spaces); resolve it yourself if it holds a symlink.")
    return raw


def require_name(raw: str, where: str, what: str) -> str:
    """A name the kernel or runc trims or reads raw (an AppArmor profile, an SELinux label):
    refused unless it is exactly what it will be read as."""
    if raw.strip() != raw:
        problem = "surrounding whitespace (the kernel trims it)"
    elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        problem = "a control character"
    else:
        return raw
    raise noncanonical(f"{where}: {what} {raw[:200]!r} holds {problem}",
                       f"Give the {what} without surrounding whitespace or control characters.")


def resolved(path: str) -> str:
    """An absolute path with its symlinks resolved on this host, by the kernel itself, one
    component at a time (``openat2(O_PATH)``: its own 40-symlink limit and semantics, a
    system call per component however symlinks are chained); the part that does not exist
    yet is kept as given. Magic links (``/proc/self/cwd``, ``/proc/PID/root``, fds) are
    refused: they resolve differently in runc than in this process. Charged to the
    decision's path budget."""
    parts = [p for p in path.split("/") if p]
    budget = _BUDGET.get()
    if budget is not None:
        budget[0] -= len(parts)
        budget[1] -= 1
        if budget[0] < 0 or budget[1] < 0:
            raise RequestRefused(
                "request-body-invalid",
                f"the request names more host paths ({PATHS_PER_DECISION}) or path components "
                f"({PATH_COMPONENTS_PER_DECISION}) than one decision resolves",
                "Send fewer or shorter host paths.")
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            try:
                step = _open_step(fd, part, path)
            except (FileNotFoundError, NotADirectoryError):
                if os.path.islink(_fd_path(fd) + "/" + part):
                    raise noncanonical(f"host path {path[:200]!r} holds a symlink that points "
                                       "nowhere", "Point it at an existing directory, or "
                                       "give the target itself.") from None
                head = _fd_path(fd)
                return (head.rstrip("/") + "/" + "/".join(parts[i:])) if head else path
            except OSError as exc:  # ELOOP (a loop, or a /proc magic link), EACCES...
                raise noncanonical(f"host path {path[:200]!r} cannot be resolved: "
                                   f"{exc.strerror} (a symlink loop, or a link through /proc)",
                                   "Give the plain path of a real directory.") from None
            os.close(fd)
            fd = step
        return _fd_path(fd) or path
    finally:
        os.close(fd)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437            # the same number on every architecture since Linux 5.6
_RESOLVE_NO_MAGICLINKS = 0x02
_LIBC = ctypes.CDLL(None, use_errno=True)
_OPENAT2: list[bool] = []     # probed once: does this kernel have openat2?


def _openat2(dirfd: int, name: str) -> int:
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_NO_MAGICLINKS)
    fd = _LIBC.syscall(_SYS_OPENAT2, dirfd, os.fsencode(name), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))  # FileNotFoundError... by errno
    return fd


def _open_step(dirfd: int, name: str, path: str) -> int:
    """One component, following symlinks as the kernel does but never a magic link. A
    kernel without openat2 (before 5.6) cannot tell magic links apart: any symlink there
    is refused."""
    if not _OPENAT2:
        try:
            os.close(_openat2(dirfd, "."))
            _OPENAT2.append(True)
        except OSError as exc:
            _OPENAT2.append(exc.errno != errno.ENOSYS)
    if _OPENAT2[0]:
        return _openat2(dirfd, name)
    try:
        os.readlink(name, dir_fd=dirfd)
    except OSError:
        return os.open(name, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dirfd)
    raise noncanonical(f"host path {path[:200]!r} passes through a symlink, and this kernel "
                       "(before 5.6, no openat2) cannot resolve it safely",
                       "Give the symlink's target itself.")


def _fd_path(fd: int) -> str:
    """Where an ``O_PATH`` descriptor points, as the kernel names it."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def kernel_path_facts(kind: str, raw: str, where: str, detail: str) -> list[Fact]:
    """Facts for a host path the kernel opens as given: the path, and its resolved form when
    a symlink makes it another."""
    path = require_path(raw, where, "host path")
    facts = [Fact(kind, path, where, detail)]
    real = resolved(path)
    if real != path:
        facts.append(Fact(kind, real, where, f"{detail}; {path!r} resolves here".lstrip("; ")))
    return facts
