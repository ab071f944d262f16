"""Decoders of the container endpoints: create, start, update, exec, attach, archive,
checkpoints, commit. Each fills ``Findings`` from one request; refusals raise
RequestRefused."""

from __future__ import annotations

from authz.decoding import canonical, checks
from authz.decoding.facts import Fact, fact_kind
from authz.decoding.findings import READ_METHODS, Body, Findings, ImageDefaults
from authz.decoding.uri import Target
from authz.moby.gojson import (GoObject, get_bool, get_map, get_obj, get_str,
                               get_strings)
from authz.decoding.decoders import common

# The fact kind these decoders report themselves (the checks they run declare theirs).
fact_kind("checkpoint", "create, restore, remove, list: CRIU checkpoints (experimental dockerd)")


def _host_config(doc: GoObject | None) -> tuple[GoObject | None, str]:
    """runconfig.ContainerConfigWrapper embeds *container.HostConfig, so HostConfig fields
    given at the top level are what dockerd uses when no (non-null) inner "HostConfig" is
    given; with one, the top level is ignored (but for a few resource limits)."""
    inner = get_obj(doc, "HostConfig")
    return (inner, "HostConfig") if inner is not None else (doc, "")


def _host_config_facts(doc: GoObject | None, out: Findings) -> list[Fact]:
    host_config, where = _host_config(doc)
    for i, spec in enumerate(get_strings(host_config, "VolumesFrom", where) or ()):
        name = spec.split(":", 1)[0]
        out.volumes_from.append((name, f"{where + '.' if where else ''}VolumesFrom[{i}]"))
    out.volumes += checks.named_volumes(host_config, where)
    facts = checks.run(checks.HOST_CONFIG, host_config, where)
    if where:
        # getHostConfig copies a top-level VolumeDriver (and a few resource limits) into an
        # inner HostConfig that leaves it empty.
        facts += checks.check_volume_driver(doc, "")
        facts = checks.top_level_memory(doc, facts)
    return facts


def _image_defaults(doc: GoObject | None, out: Findings) -> None:
    """What the create leaves to its image (dockerd's ``merge``): the user without ``User``,
    and with ``-P`` the exposed ports without a binding: the request's own here, the
    image's read through dockerd (state.py)."""
    host_config, where = _host_config(doc)
    publish_all = get_bool(host_config, "PublishAllPorts", where)
    covered = frozenset()
    if publish_all:
        exposed = get_map(doc, "ExposedPorts", "")
        bound = checks.bound_ports(host_config, where)
        out.facts += checks.publish_all_facts(exposed, bound, "ExposedPorts")
        covered = bound | frozenset(exposed)
    image = get_str(doc, "Image")
    need_user = not get_str(doc, "User")
    if image and (need_user or publish_all):
        out.image_defaults.append(ImageDefaults(image, "Image", need_user, publish_all, covered))


def create(target: Target, body: Body, out: Findings) -> None:
    doc = body.json(out.endpoint)
    out.facts += checks.run(checks.CONFIG, doc, "")
    out.facts += _host_config_facts(doc, out)
    _image_defaults(doc, out)
    networking = get_obj(doc, "NetworkingConfig")
    endpoints = get_map(networking, "EndpointsConfig", "NetworkingConfig")
    for name in endpoints:
        if name.lower() == "host":
            out.facts.append(Fact("namespace.network", "host",
                                  f"NetworkingConfig.EndpointsConfig[{name!r}]"))
    image = get_str(doc, "Image")
    out.runs.append(image)


def _checkpoint_facts(directory: str, checkpoint: str, where: str) -> list[Fact]:
    """A checkpoint directory on the host (CRIU writes or reads it as root) and the id
    dockerd joins to it: the directory must be canonical, the id a plain name."""
    if checkpoint and ("/" in checkpoint or checkpoint in (".", "..")):
        raise canonical.noncanonical(f"{where}: checkpoint id {checkpoint[:100]!r} is not a plain name",
                                     "Name the checkpoint without '/'.")
    if not directory:
        return []
    return canonical.kernel_path_facts("host-path", directory, where, "checkpoint directory")


def start(target: Target, body: Body, out: Findings) -> None:
    out.starts.append(out.params.get("name", ""))
    if target.query.get("checkpoint"):
        out.facts.append(Fact("checkpoint", "restore", "query checkpoint",
                              "CRIU restores the process state it finds there, as root"))
    out.facts += _checkpoint_facts(target.query.get("checkpoint-dir"),
                                   target.query.get("checkpoint"), "query checkpoint-dir")
    if not target.version_below("1.24"):
        body.expect_none(out.endpoint)
        return
    # API < 1.24: a body (ContainerConfigWrapper) replaces the container's HostConfig, but
    # only one of more than 7 bytes (postContainersStart reads none shorter: `{}`, `null`
    # change nothing, and the stored HostConfig is judged from dockerd's state).
    if body.data is not None and len(body.data) <= 7:
        return
    doc = body.json(out.endpoint, required=False)
    if doc is not None:
        out.facts += _host_config_facts(doc, out)


def checkpoint_list(target: Target, body: Body, out: Findings) -> None:
    """dockerd creates and lists ``dir`` on the host, as root."""
    out.facts.append(Fact("checkpoint", "list", "path"))
    out.facts += _checkpoint_facts(target.query.get("dir"), "", "query dir")


def checkpoint_remove(target: Target, body: Body, out: Findings) -> None:
    """dockerd removes ``dir/CHECKPOINT`` on the host, recursively, as root."""
    body.expect_none(out.endpoint)
    out.facts.append(Fact("checkpoint", "remove", "path"))
    out.facts += _checkpoint_facts(target.query.get("dir"), out.params.get("checkpoint", ""),
                                   "query dir")


def checkpoint_create(target: Target, body: Body, out: Findings) -> None:
    doc = body.json(out.endpoint)
    out.facts.append(Fact("checkpoint", "create", "path"))
    out.acts_on.append(out.params.get("name", ""))
    out.facts += _checkpoint_facts(get_str(doc, "CheckpointDir"), get_str(doc, "CheckpointID"),
                                   "CheckpointDir")


def restart(target: Target, body: Body, out: Findings) -> None:
    body.expect_none(out.endpoint)
    out.starts.append(out.params.get("name", ""))


def update(target: Target, body: Body, out: Findings) -> None:
    doc = body.json(out.endpoint)
    facts = checks.run(checks.RESOURCES, doc, "")
    out.facts += facts
    if any(f.kind == "restart-policy" for f in facts):
        # A restart policy on a container that mounts host paths: read what it mounts.
        out.acts_on.append(out.params.get("name", ""))


def exec_create(target: Target, body: Body, out: Findings) -> None:
    doc = body.json(out.endpoint)
    out.acts_on.append(out.params.get("name", ""))
    if get_bool(doc, "Privileged"):
        out.facts.append(Fact("privileged", "true", "Privileged", "docker exec --privileged"))
    user = get_str(doc, "User")
    if user:
        # docker exec -u: the exec runs as this user (without one, as its container's,
        # reported from the container's stored configuration).
        out.facts += checks.user_facts(user, "User", "docker exec -u")


def exec_start(target: Target, body: Body, out: Findings) -> None:
    """Starts an exec made earlier (perhaps under another policy): its container's stored
    configuration and the exec's own privileges are checked (dockerd finds it by exact id)."""
    body.json(out.endpoint, required=False)
    out.execs.append(out.params.get("name", ""))


def acts_inside(target: Target, body: Body, out: Findings) -> None:
    """attach, archive get/head: act inside a container with what it was created with."""
    if target.method not in READ_METHODS:
        body.expect_none(out.endpoint)
    out.acts_on.append(out.params.get("name", ""))


def archive_put(target: Target, body: Body, out: Findings) -> None:
    """docker cp into a container (a tar body, never forwarded; its form values only move
    the copy within the container): judged on the container's stored state."""
    out.acts_on.append(out.params.get("name", ""))


def copy(target: Target, body: Body, out: Findings) -> None:
    """The pre-1.24 ``copy``: a file out of the container, through its mounts."""
    body.json(out.endpoint, required=False)
    out.acts_on.append(out.params.get("name", ""))


def commit(target: Target, body: Body, out: Findings) -> None:
    # The body (optional) is the new image's Config; it starts nothing itself.
    body.json(out.endpoint, required=False)
    repo = target.query.get("repo")
    if repo:
        out.facts.append(Fact("image.write", common.image_ref(repo, target.query.get("tag")), "query repo"))
