"""Local volume options and tmpfs options: what ``mount -t TYPE -o O DEVICE`` will mount,
judged as mount(2) reads it; and the volume driver of a container's volumes."""

from __future__ import annotations

import os
import stat
from typing import Any, Iterator

from authz.decoding import canonical
from authz.decoding.checks.drivers import driver_facts
from authz.decoding.checks.paths import MOUNT_PROPAGATION
from authz.decoding.checks.registry import (HOST_CONFIG, STORED_HOST_CONFIG, VOLUMES_FROM, check,
                                            inside)
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import MAX_ITEMS, GoObject, get_map, get_str

VOLUME_TYPE = fact_kind("volume-type", "the filesystem type of a local volume that mounts "
                        "something of the host")
VOLUME_DRIVER = fact_kind("volume-driver", "a volume driver other than local (a plugin decides "
                          "what is mounted)")

# The local volume driver: ``mount -t TYPE -o O DEVICE`` with the options as given (no
# cleaning, no trimming; moby/sys/mount splits O on ',' and passes every word that is not a
# mount flag to the filesystem as data; ``defaults`` and ``remount`` are data or refused
# here). pyauthz decides by allowing: a driver option, a filesystem type's data option or a
# flag it does not know is refused, because it cannot know whether it names a host path.
LOCAL_DRIVER_OPTIONS = frozenset({"type", "device", "o", "size"})
MOUNT_FLAGS = frozenset({
    "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync",
    "async", "dirsync", "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "bind",
    "rbind", "relatime", "norelatime", "strictatime", "nostrictatime", "private", "rprivate",
    "slave", "rslave", "shared", "rshared", "unbindable", "runbindable"})
_NFS = frozenset({
    "addr", "vers", "nfsvers", "minorversion", "proto", "port", "mountport", "mountproto",
    "mountvers", "hard", "soft", "softreval", "timeo", "retrans", "retry", "rsize", "wsize",
    "bsize", "ac", "noac", "acregmin", "acregmax", "acdirmin", "acdirmax", "actimeo", "lock",
    "nolock", "sec", "namlen", "lookupcache", "clientaddr", "local_lock", "rdirplus",
    "nordirplus", "resvport", "noresvport", "sharecache", "nosharecache", "cto", "nocto",
    "tcp", "udp", "rdma", "intr", "nointr", "bg", "fg", "nconnect", "max_connect"})
_CIFS = frozenset({
    "username", "user", "password", "pass", "domain", "dom", "workgroup", "vers", "uid",
    "gid", "forceuid", "forcegid", "noforceuid", "noforcegid", "file_mode", "dir_mode",
    "addr", "ip", "port", "sec", "seal", "iocharset", "nounix", "serverino", "noserverino",
    "cache", "actimeo", "rsize", "wsize", "nobrl", "mfsymlinks", "hard", "soft",
    "echo_interval", "noperm", "nocase", "multiuser", "nosharesock"})
# Data options each filesystem type may take: the value is no path, or (overlay) the
# options whose values are host directories, ':'-separated for lowerdir.
DATA_OPTIONS: dict[str, frozenset[str]] = {
    "tmpfs": frozenset({"size", "nr_blocks", "nr_inodes", "mode", "uid", "gid", "huge",
                        "mpol", "noswap"}),
    "nfs": _NFS,
    "nfs4": _NFS,
    "cifs": _CIFS,
    "smb3": _CIFS,
    "overlay": frozenset({"redirect_dir", "index", "metacopy", "xino", "userxattr",
                          "volatile", "nfs_export", "uuid", "verity"}),
}
OVERLAY_DIR_OPTIONS = frozenset({"lowerdir", "upperdir", "workdir", "lowerdir+", "datadir+"})
OVERLAY_MAX_STACK = 500  # the kernel's OVL_MAX_STACK: more lower layers never mount
MOUNT_DATA_MAX = 4096    # one page: what mount(2) copies of its data argument
# Filesystem types whose ``device`` is nothing of this host: memory and network
# filesystems, and overlay (whose host directories are judged one by one). Any other type
# (proc, sysfs, cgroup, ext4 on a host disk...), and the network ones, are reported as a
# ``volume-type`` fact.
NETWORK_OR_MEMORY_FS = frozenset({"tmpfs", "nfs", "nfs4", "cifs", "smb3"})
# ... of which these are reported as ``volume-type`` all the same (a policy may allow them).
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3"})


def unknown_option(where: str, what: str) -> RequestRefused:
    """The refusal of a volume or tmpfs option pyauthz does not know."""
    return RequestRefused(
        "request-volume-option", f"{where}: {what}",
        "Use only the local driver options pyauthz knows (type, device, o, size) and, in "
        "o=, mount flags and the data options of tmpfs, nfs, cifs or overlay; see "
        "docs/policy.md (local volumes).")


def _walked(device: str) -> str:
    """The path mount(2) walks for a local ``device``: relative to dockerd's working
    directory, ``/``."""
    return device if device.startswith("/") else "/" + device


def local_device_facts(device: str, where: str, detail: str) -> list[Fact]:
    """A local path given as a volume's ``device`` or overlay directory (mount(2) reads it
    raw): a device node or anything under /dev is a ``device``, anything else a
    ``host-path``."""
    facts: list[Fact] = []
    for fact in canonical.kernel_path_facts("host-path", _walked(device), where, detail):
        path = fact.value
        try:
            mode = os.stat(path).st_mode
            is_device = stat.S_ISBLK(mode) or stat.S_ISCHR(mode)
        except (OSError, ValueError):
            is_device = False
        if is_device or path == "/dev" or path.startswith("/dev/"):
            facts.append(Fact("device", path, fact.where, fact.detail))
        else:
            facts.append(fact)
    return facts


def local_volume_facts(driver: str, options: dict[str, Any], where: str) -> list[Fact]:
    """A volume of the ``local`` driver with options is ``mount -t TYPE -o O DEVICE``:
    with ``o=bind`` it is a bind mount of ``device`` in disguise, an overlay names host
    directories in ``o``, a kernel filesystem (proc, sysfs, cgroup...) or a disk
    filesystem mounts the host's own. Every value is judged as mount(2) reads it."""
    if driver not in ("", "local"):
        # A volume plugin answers Mount with a path inside its own rootfs, which dockerd
        # joins lexically and runc mounts following symlinks: it can be any host path.
        return driver_facts("volume-driver", driver, frozenset(), where,
                            "a volume plugin decides what is mounted")
    _require_known_options(options, where)
    device = options.get("device", "")
    fstype = options.get("type", "")
    mount_opts = options.get("o", "")
    if not (fstype or device or mount_opts):
        return []  # a plain named volume: a directory under dockerd's data root
    words = _mount_words(fstype, mount_opts, where)
    flags = [w for w in words if w in MOUNT_FLAGS]
    is_bind = "bind" in flags or "rbind" in flags
    facts, allowed = _mounted_facts(fstype, device, is_bind, where)
    facts += _data_option_facts([w for w in words if w not in MOUNT_FLAGS], fstype, is_bind,
                                allowed, where)
    for flag in flags:
        if flag in ("shared", "rshared"):
            facts.append(Fact("mount-propagation", flag, inside(where, "o")))
    return facts


def _require_known_options(options: dict[str, Any], where: str) -> None:
    """Only the local driver's own options, each a string."""
    for key, value in options.items():
        if key not in LOCAL_DRIVER_OPTIONS:
            raise unknown_option(inside(where, f"{key[:100]!r}"), "the local volume driver "
                                 f"option {key[:100]!r} is not one pyauthz knows")
        if not isinstance(value, str):
            raise RequestRefused("request-body-invalid", f"{inside(where, key)} is not a string",
                                 "Send driver options as strings.")


def _mount_words(fstype: str, mount_opts: str, where: str) -> list[str]:
    """The words of ``o=`` (a plain filesystem type, at most a page of options)."""
    if fstype:
        canonical.require_name(fstype, inside(where, "type"), "filesystem type")
    if mount_opts.count(",") >= MAX_ITEMS:
        raise unknown_option(inside(where, "o"), f"more than {MAX_ITEMS} mount options")
    if len(mount_opts.encode("utf-8", "surrogatepass")) >= MOUNT_DATA_MAX:
        # mount(2) copies one page of options and drops the rest.
        raise canonical.noncanonical(f"{inside(where, 'o')}: {MOUNT_DATA_MAX} bytes or more of "
                                     "mount options (mount(2) reads one page and drops the rest)",
                                     "Send shorter mount options.")
    return [w for w in mount_opts.split(",") if w]


def _mounted_facts(fstype: str, device: str, is_bind: bool,
                   where: str) -> tuple[list[Fact], frozenset[str]]:
    """What the volume mounts of this host, and the data options its type may take."""
    if is_bind:
        if not device:
            raise unknown_option(inside(where, "device"), "a bind without a device")
        facts = canonical.kernel_path_facts("host-path", _walked(device), inside(where, "device"),
                                            "local volume o=bind")
        return facts, frozenset()  # mount(2) ignores data for a bind
    if fstype in NETWORK_OR_MEMORY_FS or fstype == "overlay":
        facts = []  # nothing of this host in ``device``
        if fstype in NETWORK_FS:
            # A network filesystem can point back at this host (addr=127.0.0.1, or one of
            # its own addresses) and reach its exports past the roots and the floor.
            facts.append(Fact("volume-type", fstype, inside(where, "type"),
                              f"mounts {device[:200] or 'nothing'} over the network"))
        return facts, DATA_OPTIONS[fstype]
    facts = [Fact("volume-type", fstype or "(none)", inside(where, "type"),
                  f"mounts {device[:200] or 'nothing'} as {fstype or 'an unnamed type'}")]
    if device:
        facts += local_device_facts(device, inside(where, "device"), f"local volume type {fstype}")
    return facts, frozenset()


def _data_option_facts(data: list[str], fstype: str, is_bind: bool, allowed: frozenset[str],
                       where: str) -> list[Fact]:
    """The data words of ``o=``: known options of the type, overlay directories as paths."""
    at = inside(where, "o")
    # cifs options carry credentials (password=...; a ',' in one splits it): never echo an
    # unknown word of a network filesystem into the message and the log.
    shown = (lambda key: "(not shown)") if fstype in NETWORK_FS else (lambda key: repr(key[:60]))
    facts: list[Fact] = []
    for word in data:
        key, sep, value = word.partition("=")
        bad = canonical.path_problem("/" + key) if key else "empty"
        if bad:
            raise unknown_option(at, f"a mount option {shown(key)} that is not canonical")
        if not is_bind and fstype == "overlay" and key in OVERLAY_DIR_OPTIONS and sep:
            parts = value.split(":") if key == "lowerdir" else [value]
            if len(parts) > OVERLAY_MAX_STACK:
                raise unknown_option(at, f"more than {OVERLAY_MAX_STACK} overlay layers "
                                     "(the kernel's limit)")
            for part in parts:
                if not part.startswith("/"):  # "::" (data-only layers), relative dirs
                    raise canonical.noncanonical(
                        f"{at}: overlay {key} entry {part[:200]!r} is not an absolute path",
                        "List absolute, canonical directories separated by single ':'.")
                facts += local_device_facts(part, at, f"overlay {key}")
        elif key not in allowed:
            raise unknown_option(at, f"the mount option {shown(key)} is not one pyauthz "
                                 f"knows for {'a bind' if is_bind else fstype or 'no type'}")
    return facts


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG, VOLUMES_FROM), reports=(VOLUME_DRIVER,), rank=110)
def check_volume_driver(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--volume-driver``: the driver of the named and anonymous volumes the container
    creates (see ``local_volume_facts``)."""
    yield from driver_facts("volume-driver", get_str(hc, "VolumeDriver", where),
                            frozenset({"", "local"}), inside(where, "VolumeDriver"),
                            "a volume plugin decides what is mounted")


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(MOUNT_PROPAGATION,), rank=120)
def check_tmpfs(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--tmpfs /dst:opts``: runc reads the options as mount flags, ``bind`` and
    propagation included."""
    for dst, options in get_map(hc, "Tmpfs", where).items():
        at = inside(where, f"Tmpfs[{dst[:100]!r}]")
        if not isinstance(options, str):
            raise RequestRefused("request-body-invalid", f"{at} is not a string",
                                 "Send tmpfs options as a string.")
        for word in options.split(","):
            if word in ("bind", "rbind", "remount", "move"):
                raise unknown_option(at, f"the tmpfs option {word!r} is not a tmpfs option")
            if word in ("shared", "rshared"):
                yield Fact("mount-propagation", word, at)
