"""Host paths as the kernel will open them, and the propagation of what is mounted there:
shared by the checks of binds, mounts and local volumes."""

from __future__ import annotations

import posixpath

from authz.decoding import canonical
from authz.decoding.facts import Fact, fact_kind

HOST_PATH = fact_kind("host-path", "a host path as the kernel opens it, and its symlink-resolved form")
MOUNT_PROPAGATION = fact_kind("mount-propagation", "shared, rshared, slave, rslave")


def host_paths(raw: str) -> list[str]:
    """A host path as the kernel will see it: lexically cleaned, and also with symlinks
    resolved on this host (``/tmp/link -> /etc`` binds ``/etc``). Both are returned when
    they differ; rules match either."""
    cleaned = posixpath.normpath(raw)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    paths = [cleaned]
    resolved = canonical.resolved(cleaned)
    if resolved != cleaned:
        paths.append(resolved)
    return paths


def host_path_facts(kind: str, raw: str, where: str, detail: str = "") -> list[Fact]:
    """One fact per form of host path ``raw`` (``host_paths``), saying where it came from."""
    return [Fact(kind, p, where, detail if p == raw else (detail or f"from {raw!r}"))
            for p in host_paths(raw)]
