"""``pyauthz policy init DIR``: copy the policy shipped in the package out for editing.

The copy is the shipped directory as it is (rules.yaml, trust.yaml, model.conf, the policy's
own test cases in tests/, keys/ when there are any), written with modes a policy directory
should have whatever the umask or the installed files' modes: files 0644, directories 0755
(an existing DIR keeps its own mode). A new DIR is filled under a temporary name beside it
and renamed into place, so a plugin pointed at DIR never reads half a policy. A non-empty
DIR is refused unless --force, which writes the shipped files over their namesakes (each
replaced in one rename) and leaves every other file in DIR alone; it writes through directory
descriptors opened without following symlinks, so a directory of DIR swapped for a symlink
after the check is refused, not written through. DIR (or, for a new DIR, the directory above
it) is opened through a path only root or the caller could change (authz.ownership): the
copy is often written as root, and a local user must not decide where it goes.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import click

from authz.ownership import NotTrusted, check_entry, open_verified, trusted_owners

FILE_MODE = 0o644
DIR_MODE = 0o755


class InitRefused(Exception):
    """DIR cannot take the copy (not empty without force, not a directory, the source)."""


def shipped_files(source: Path) -> list[Path]:
    """Every regular file of the shipped policy, relative to it, sorted (hidden files,
    caches and symlinks left out)."""
    out = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in files:
            path = Path(root) / name
            if not name.startswith(".") and path.is_file() and not path.is_symlink():
                out.append(path.relative_to(source))
    return sorted(out)


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _write(source: Path, directory: int, name: str) -> None:
    """Copy one file to ``name`` in the open ``directory``, in one rename, mode FILE_MODE
    whatever the umask (a rename replaces a symlink at ``name``; it never follows it)."""
    for _ in range(100):
        tmp = f".{name}.{os.urandom(6).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=directory)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {name}")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
            os.fchmod(out.fileno(), FILE_MODE)
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=directory)
        except OSError:
            pass
        raise


def _subdirectory(parent: int, name: str) -> int:
    """The directory ``name`` in ``parent``, opened (made DIR_MODE when missing); never
    through a symlink, whatever is swapped in meanwhile (the copy is written as root)."""
    try:
        os.mkdir(name, DIR_MODE, dir_fd=parent)
        made = True
    except FileExistsError:
        made = False
    try:
        fd = os.open(name, _NOFOLLOW_DIR, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InitRefused(f"{name} is a symbolic link or not a directory: writing "
                              "through it would put files elsewhere") from None
        raise
    try:
        # One that was there (or appeared between the mkdir and the open: a sticky parent
        # lets anyone make entries) must be root's or the caller's, not writable by others.
        check_entry(os.fstat(fd), name, trusted_owners())
    except NotTrusted as exc:
        os.close(fd)
        raise InitRefused(f"{exc}; nothing more written") from None
    if made:
        os.fchmod(fd, DIR_MODE)  # not the umask's
    return fd


def _fill(source: Path, files: list[Path], top: int) -> None:
    """Write ``files`` into the open directory ``top``."""
    for rel in files:
        opened = [top]
        try:
            for part in rel.parent.parts:
                opened.append(_subdirectory(opened[-1], part))
            _write(source / rel, opened[-1], rel.name)
        finally:
            for fd in opened[1:]:
                os.close(fd)


def _open_checked(path: Path) -> int:
    """The directory ``path`` names, opened through a path only root or the caller could
    change (authz.ownership): the copy is written as root, often, and what a local user can
    rename or swap on the way (DIR as a symlink into another policy, a directory above it)
    must not decide where it goes."""
    try:
        return open_verified(str(path), directory=True)
    except NotTrusted as exc:
        raise InitRefused(f"{path} can be changed by others than root or you ({exc}); "
                          "nothing written. Choose a directory that only root (or you) "
                          "can write, on a path no one else can change") from None


def init_policy(target: Path, source: Path, force: bool = False) -> tuple[list[Path], list[Path]]:
    """Copy the policy at source into target; return (files written, files already in target
    that were overwritten)."""
    files = shipped_files(source)
    if not files:
        raise InitRefused(f"{source} holds no policy to copy")
    if ".." in target.parts:  # the kernel resolves it after symlinks, not on paper
        raise InitRefused(f"{target}: give DIR without '..' components")
    real_source = source.resolve()
    real_target = target.resolve()
    if real_target == real_source or real_source in real_target.parents:
        raise InitRefused(f"{target} is the shipped policy itself")
    if target.exists() and not target.is_dir():
        raise InitRefused(f"{target} exists and is not a directory")
    if target.is_dir():
        top = _open_checked(target)
        try:
            present = os.listdir(top)
            if present and not force:
                raise InitRefused(f"{target} is not empty ({len(present)} entries); nothing "
                                  "written. --force writes the shipped files over their "
                                  "namesakes and leaves the other files alone")
            linked = sorted({str(target / parent) for rel in files for parent in rel.parents
                             if parent != Path(".") and _is_link(top, parent)}
                            | {str(target / rel) for rel in files if _is_link(top, rel)})
            if linked:
                raise InitRefused(f"{linked[0]} is a symbolic link: writing through it would "
                                  "put files elsewhere; nothing written")
            replaced = [rel for rel in files if _exists(top, rel)]
            _fill(source, files, top)
        finally:
            os.close(top)
        return files, replaced
    # A new directory: made under a temporary name in its (checked) parent, filled, then
    # renamed into place; all through the parent's descriptor.
    parent = _make_parents(target.parent)
    staging = f".{target.name}.init.{os.urandom(6).hex()}"
    try:
        os.mkdir(staging, 0o700, dir_fd=parent)
        try:
            top = os.open(staging, _NOFOLLOW_DIR, dir_fd=parent)
            try:
                os.fchmod(top, DIR_MODE)
                _fill(source, files, top)
            finally:
                os.close(top)
            os.rename(staging, target.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True, dir_fd=parent)
            raise
    finally:
        os.close(parent)
    return files, []


def _make_parents(path: Path) -> int:
    """``path`` opened as a directory, the missing levels made (DIR_MODE) through the
    descriptor of the nearest existing one, which is opened through a checked path: nothing
    is made before the path to it is known to be root's or the caller's."""
    missing = []
    existing = Path(os.path.abspath(path))
    while not os.path.lexists(existing) and existing != existing.parent:
        missing.append(existing.name)
        existing = existing.parent
    fd = _open_checked(existing)
    try:
        for name in reversed(missing):
            fd_next = _subdirectory(fd, name)
            os.close(fd)
            fd = fd_next
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(top: int, rel: Path) -> bool:
    try:
        return stat.S_ISLNK(os.stat(str(rel), dir_fd=top, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _exists(top: int, rel: Path) -> bool:
    try:
        os.stat(str(rel), dir_fd=top, follow_symlinks=False)
        return True
    except OSError:
        return False


@click.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True,
              help="Write into a non-empty DIRECTORY: the shipped files replace their "
                   "namesakes, other files stay.")
def init_command(directory: Path, force: bool) -> None:
    """Copy the default policy shipped with pyauthz into DIRECTORY to edit it (files 0644,
    directories 0755). Refuses a non-empty DIRECTORY unless --force. `pyauthz serve` uses
    /etc/pyauthz/policies by default whenever it exists."""
    from authz import __version__
    from authz.cli import shipped_policy_dir

    source = shipped_policy_dir()
    try:
        files, replaced = init_policy(directory, source, force)
    except (InitRefused, OSError) as exc:
        raise click.ClickException(f"policy init: {exc}") from None
    click.echo(f"pyauthz policy init: wrote the default policy of pyauthz {__version__} to "
               f"{directory} ({len(files)} files"
               + (f", {len(replaced)} of them over existing ones" if replaced else "") + ")")
    click.echo(f"  Next: edit {directory / 'rules.yaml'} and {directory / 'trust.yaml'}, check\n"
               f"  pyauthz policy lint {directory} && pyauthz policy test {directory}\n"
               f"  pyauthz serve --policy {directory}   (or pyauthz reload, when it is "
               "the running plugin's)")
