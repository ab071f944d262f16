"""The check registry: each risk check states where it reads and which fact kinds it
reports; the registry is the one list of fact kinds and refuses an inconsistent set."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from authz.decoding import checks
from authz.decoding.canonical import path_budget
from authz.decoding.checks import registry
from authz.decoding.facts import FACT_KINDS, Fact, Kind, RegistryError, fact_kind, value_problem
from authz.moby.gojson import loads

ROOT = Path(__file__).resolve().parents[2]

# The fact kinds rules.yaml was validated against before the registry (a hand-written dict,
# issue 8), in that order: the registry builds exactly these.
KINDS_BEFORE_THE_REGISTRY = {
    "endpoint": "the canonical endpoint (container.create, image.pull, unknown.write...)",
    "privileged": "true: --privileged on create, start (API < 1.24), exec",
    "namespace.network": "host, or container (joins another container's)",
    "namespace.pid": "host, or container",
    "namespace.ipc": "host, or container",
    "namespace.uts": "host, or container",
    "namespace.userns": "host, or container",
    "namespace.cgroup": "host, or container",
    "capability": "upper case without CAP_: SYS_ADMIN, ALL",
    "device": "a host device path, cgroup-rule:RULE, request:DRIVER",
    "host-path": "a host path as the kernel opens it, and its symlink-resolved form",
    "volume-type": "the filesystem type of a local volume that mounts something of the host",
    "log-socket": "a host unix socket a log driver writes the container's output to",
    "log-driver": "a log driver that is not built into dockerd (a plugin)",
    "network-driver": "a network driver (or ipam:NAME) that is not built into dockerd (a plugin)",
    "host-interface": "a host interface a network takes over or attaches to (bridge name, parent)",
    "service-runtime": "a swarm service runtime other than container (plugin)",
    "service-rollback": "previous (rollback=previous), on-failure (UpdateConfig.FailureAction)",
    "cgroup-parent": "the cgroup a container is put under (--cgroup-parent)",
    "volume-driver": "a volume driver other than local (a plugin decides what is mounted)",
    "mount-propagation": "shared, rshared, slave, rslave",
    "mount-type": "a --mount type dockerd does not know",
    "seccomp": "unconfined, or custom:sha256:DIGEST",
    "apparmor": "unconfined, or the profile name",
    "selinux": "disable, type:T, level:L...",
    "masked-paths": "reduced, unconfined",
    "sysctl": "the name, '.'-separated",
    "plugin.privilege": "network=host, mount=/, capabilities=CAP_SYS_ADMIN, unknown",
    "plugin.remote": "the plugin image installed or upgraded to",
    "plugin.interface": "an interface the target plugin implements: docker.authz/1.0...",
    "target": "id, name, prefix, missing: how a request names the container or plugin it acts on",
    "image.write": "the reference an image is written under",
    "restart-policy": "always, unless-stopped, on-failure: dockerd restarts the container itself",
    "auto-restart": "the restart policy of a container that also mounts host paths",
    "checkpoint": "create, restore, remove, list: CRIU checkpoints (experimental dockerd)",
    "image": "the normalized reference a request runs or pulls",
}
# The kinds issue 9 added ("facts teams ask for"), pinned the same way.
KINDS_OF_ISSUE_9 = {
    "log.driver": "every log driver, built in or not (default: dockerd's log-driver setting)",
    "log.option": "the key of a log option, never its value (splunk-token...)",
    "user": ("the user a container or exec runs as, as given (user[:group]): the "
             "create's User, else its image's USER"),
    "user.root": ("true, false, unknown: whether that user is uid 0 (unknown: a name "
                  "other than root, which only the image's /etc/passwd resolves)"),
    "port.publish": ("HOSTIP:HOSTPORT->PORT/PROTO, as docker ps writes it "
                     "(0.0.0.0:8080->80/tcp; HOSTPORT random when dockerd picks it)"),
    "port.publish-all": "true: -P publishes every exposed port on a random host port",
    "readonly-rootfs": "true, false: --read-only (always reported)",
    "no-new-privileges": "true, false: --security-opt no-new-privileges (always reported)",
    "memory-limit": "set, unset: --memory (always reported)",
    "pids-limit": "set, unset: --pids-limit above 0 (always reported)",
    "runtime": "the OCI runtime (--runtime), default when the create names none",
    "label": "KEY=VALUE of a label the request sets (key cut at 128 characters, value at 256)",
}
KINDS_PINNED = {**KINDS_BEFORE_THE_REGISTRY, **KINDS_OF_ISSUE_9}


def test_the_registry_lists_the_same_fact_kinds_as_before():
    assert dict(FACT_KINDS) == KINDS_PINNED


def test_importing_facts_alone_lists_every_kind():
    """rules.py imports FACT_KINDS from facts.py: importing it declares every kind."""
    code = "import json; from authz.decoding.facts import FACT_KINDS; print(json.dumps(dict(FACT_KINDS)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == KINDS_PINNED


def test_kinds_with_value_rules_keep_their_order():
    """A rule value that fits none of its kinds is reported with the first kind's reason."""
    def ruled(kinds):
        return [kind for kind in kinds if value_problem(kind, "x")]

    assert ruled(FACT_KINDS) == ruled(KINDS_PINNED)


def test_every_kind_written_in_the_code_is_declared():
    written = set()
    for path in (ROOT / "authz").rglob("*.py"):
        written |= set(re.findall(r'(?:\bFact|_facts)\(\s*"([^"]+)"', path.read_text()))
    assert written and written - set(FACT_KINDS) == set()


def test_the_registry_refuses_an_inconsistent_set():
    capability = fact_kind("capability", FACT_KINDS["capability"])  # the same description

    def check_new(hc, where):
        """A check that is never registered."""
        return []

    def register(reads=(checks.HOST_CONFIG,), reports=(capability,), rank=999, function=check_new):
        checks.check(reads=reads, reports=reports, rank=rank)(function)

    with pytest.raises(RegistryError, match="described two ways"):
        fact_kind("capability", "lower case, with CAP_")
    with pytest.raises(RegistryError, match="registered already"):
        register(function=checks.check_capabilities)
    with pytest.raises(RegistryError, match="is no source"):
        register(reads=("Labels",))
    with pytest.raises(RegistryError, match="name each source once"):
        register(reads=())
    with pytest.raises(RegistryError, match="rank 10 of source 'HostConfig' is check_privileged"):
        register(rank=10)
    with pytest.raises(RegistryError, match="not declared"):
        register(reports=(Kind("capabilities", "a kind nobody declared"),))
    with pytest.raises(RegistryError, match="reports no fact kind"):
        register(reports=())
    assert "check_new" not in {c.name for c in registry.registered()}
    assert FACT_KINDS["capability"] == KINDS_BEFORE_THE_REGISTRY["capability"]


def names(source):
    return [function.__name__ for function in checks.checks_reading(source)]


def test_where_each_check_reads():
    """Create, the re-check of a stored configuration, update and services run the checks
    their registrations name, in rank order (a message lists violations in fact order)."""
    assert names(checks.HOST_CONFIG) == [
        "check_privileged", "check_host_namespaces", "check_cgroup_namespace",
        "check_capabilities", "check_devices", "check_binds", "check_mounts",
        "check_security_opt", "check_system_paths", "check_sysctls", "check_restart_policy",
        "check_volume_driver", "check_tmpfs", "check_log_config", "check_log_driver",
        "check_log_settings", "check_cgroup_parent", "check_port_bindings",
        "check_readonly_rootfs", "check_no_new_privileges", "check_resource_limits",
        "check_runtime"]
    # dockerd stores its own cgroup namespace default: judged at create only.
    assert names(checks.STORED_HOST_CONFIG) == [
        n for n in names(checks.HOST_CONFIG) if n != "check_cgroup_namespace"]
    assert names(checks.VOLUMES_FROM) == ["check_binds", "check_mounts", "check_volume_driver"]
    assert names(checks.RESOURCES) == ["check_devices", "check_update_pids_limit", "check_restart_policy"]
    assert names(checks.CONTAINER_SPEC) == [
        "check_mounts", "check_service_capabilities", "check_sysctls", "check_service_selinux",
        "check_service_seccomp", "check_service_apparmor", "check_service_user",
        "check_labels", "check_service_readonly_rootfs"]
    assert names(checks.TASK_TEMPLATE) == [
        "check_swarm_log_driver", "check_swarm_log_settings", "check_service_runtime",
        "check_service_restart", "check_service_limits"]
    assert names(checks.TASK_DEFAULTS) == ["check_swarm_log_driver", "check_swarm_log_settings"]
    assert names(checks.CONFIG) == ["check_user", "check_labels"]
    assert names(checks.STORED_CONFIG) == ["check_stored_user"]


def test_every_check_is_documented():
    for registered in registry.registered():
        assert registered.name.startswith("check_") and registered.function.__doc__, registered.name


# What Go's zero value of each source means: swarm's default restart condition, the facts
# issue 9 reports whether set or not (a container without limits, writable, as root...).
_HOST_CONFIG_ZERO = [
    Fact("log.driver", "default", "T.LogConfig.Type"),
    Fact("readonly-rootfs", "false", "T.ReadonlyRootfs"),
    Fact("no-new-privileges", "false", "T.SecurityOpt"),
    Fact("memory-limit", "unset", "T.Memory"), Fact("pids-limit", "unset", "T.PidsLimit"),
    Fact("runtime", "default", "T.Runtime")]
ZERO = {
    checks.HOST_CONFIG: _HOST_CONFIG_ZERO,
    checks.STORED_HOST_CONFIG: _HOST_CONFIG_ZERO,
    checks.CONFIG: [Fact("user.root", "true", "T.User", "no user and no image: uid 0")],
    checks.STORED_CONFIG: [Fact("user.root", "true", "T.User")],
    checks.CONTAINER_SPEC: [
        Fact("user.root", "unknown", "T.User",
             "no user: the image's default user, on the nodes, is not read"),
        Fact("readonly-rootfs", "false", "T.ReadOnly")],
    checks.TASK_TEMPLATE: [
        Fact("restart-policy", "any", "T.RestartPolicy.Condition"),
        Fact("memory-limit", "unset", "T.Resources.Limits.MemoryBytes"),
        Fact("pids-limit", "unset", "T.Resources.Limits.Pids")],
}


@pytest.mark.parametrize("source", list(registry.SOURCES))
def test_an_absent_object_is_gos_zero_value(source):
    """A check reads None as an empty object: swarm's default restart condition (``any``)
    follows from an absent task template, and the facts reported set or not say "not set"."""
    assert checks.run(source, None, "T") == ZERO.get(source, [])


MOUNTS = [
    {"Type": "bind", "Source": "/srv/data", "BindOptions": {"Propagation": "rshared"}},
    {"Type": "volume", "VolumeOptions": {"DriverConfig": {"Name": "vendor/v"}}},
    {"Type": "volume", "VolumeOptions": {"DriverConfig": {"Options": {
        "type": "ext4", "device": "/dev/pyauthz-test-disk"}}}},
    {"Type": "image"},
]
# One object per source in which every check of that source finds something to report.
RICH = {
    checks.HOST_CONFIG: {
        "Privileged": True, "NetworkMode": "host", "PidMode": "container:x", "IpcMode": "host",
        "UTSMode": "host", "UsernsMode": "host", "CgroupnsMode": "host", "CapAdd": "SYS_ADMIN",
        "Devices": [{"PathOnHost": "/dev/fuse"}], "Binds": ["/srv/data:/d:rshared"],
        "Mounts": MOUNTS, "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined",
                                          "label=disable", "systempaths=unconfined"],
        "MaskedPaths": [], "Sysctls": {"net.ipv4.ip_forward": "1"},
        "RestartPolicy": {"Name": "always"}, "VolumeDriver": "vendor/v",
        "Tmpfs": {"/run": "rshared"}, "CgroupParent": "/system.slice",
        "LogConfig": {"Type": "vendor/log", "Config": {"syslog-address": "unix:///dev/log"}},
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, "PublishAllPorts": True,
        "ReadonlyRootfs": True, "Memory": 1 << 30, "PidsLimit": 100, "Runtime": "runc"},
    checks.RESOURCES: {"Devices": [{"PathOnHost": "/dev/fuse"}], "RestartPolicy": {"Name": "always"},
                      "PidsLimit": -1},
    checks.CONTAINER_SPEC: {
        "Mounts": MOUNTS, "CapabilityAdd": ["SYS_ADMIN"], "Sysctls": {"net.ipv4.ip_forward": "1"},
        "Privileges": {"SELinuxContext": {"Disable": True}, "Seccomp": {"Mode": "unconfined"},
                       "AppArmor": {"Mode": "disabled"}},
        "User": "0", "Labels": {"team": "a"}, "ReadOnly": True},
    checks.TASK_TEMPLATE: {
        "LogDriver": {"Name": "vendor/log", "Options": {"fluentd-address": "unix:///s"}},
        "Runtime": "plugin", "PluginSpec": {"Privileges": [{"Name": "network", "Value": ["host"]}]},
        "Resources": {"Limits": {"MemoryBytes": 1 << 30, "Pids": 100}}},
    checks.CONFIG: {"User": "1000", "Labels": {"team": "a"}, "Image": "busybox"},
    checks.STORED_CONFIG: {"User": "root"},
}
RICH[checks.STORED_HOST_CONFIG] = RICH[checks.VOLUMES_FROM] = RICH[checks.HOST_CONFIG]
RICH[checks.TASK_DEFAULTS] = RICH[checks.TASK_TEMPLATE]


def test_each_check_reports_the_kinds_it_declares():
    """On an object where it finds everything, a check reports every kind it declares and
    no other."""
    assert set(RICH) == set(registry.SOURCES)
    for registered in registry.registered():
        reported = set()
        for source in registered.reads:
            with path_budget():
                facts = registered.function(loads(json.dumps(RICH[source]).encode()), source)
                reported |= {fact.kind for fact in facts}
        assert reported == {kind.name for kind in registered.reports}, registered.name
