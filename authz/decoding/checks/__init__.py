"""One small, named check per risk, each reading one part of a container's configuration
the way dockerd reads it and returning facts (after kubernetes' pod-security-admission
``policy/check_*.go``).

A check never decides: it reports what the request asks for (``capability=SYS_ADMIN``),
and the policy says whether that is allowed, for whom, on which image.

Each check is registered beside its function (``registry.check``) with the sources it reads
(container create's ``HostConfig``, a container's stored HostConfig re-checked at start,
container update's ``Resources``, a swarm service's ``ContainerSpec`` and ``TaskTemplate``...)
and the fact kinds it reports. Decoders and dockerd's state reads run every check of a
source: ``run(HOST_CONFIG, obj, where)``. Adding a check is one function in one module:

- ``privileges``: ``--privileged``, host namespaces, capabilities, devices, cgroup parent;
- ``mounts`` (and ``paths``): binds, ``--mount``, named volumes;
- ``volumes``: local volume and tmpfs options, the volume driver;
- ``confinement``: seccomp, AppArmor, SELinux, masked paths, sysctls;
- ``restart``: restart policies, and a restarting container that mounts host paths;
- ``logs``: log drivers and log sockets;
- ``drivers``: driver and plugin names, network options, a service's plugin runtime;
- ``runas``: the user a container runs as (``user``, ``user.root``);
- ``ports``: published ports and the host addresses they are bound to;
- ``hardening``: read-only root filesystem, no-new-privileges, memory and pids limits, runtime;
- ``labels``: the labels a request sets;
- ``elsewhere``: the fact kinds only the route table and dockerd's state report.
"""

from __future__ import annotations

from authz.decoding.checks.registry import (CONFIG, CONTAINER_SPEC, HOST_CONFIG, RESOURCES,
                                            SOURCES, STORED_CONFIG, STORED_HOST_CONFIG,
                                            TASK_DEFAULTS, TASK_TEMPLATE, VOLUMES_FROM, Check,
                                            CheckFunction, check, checks_reading, inside,
                                            registered, run)
from authz.decoding.checks.privileges import (check_capabilities, check_cgroup_namespace,
                                              check_cgroup_parent, check_devices,
                                              check_host_namespaces, check_privileged,
                                              check_service_capabilities, namespace_facts,
                                              normalize_capability)
from authz.decoding.checks.paths import host_path_facts, host_paths
from authz.decoding.checks.drivers import (BUILTIN_IPAM_DRIVERS, BUILTIN_LOG_DRIVERS,
                                           BUILTIN_NETWORK_DRIVERS, HOST_INTERFACE_OPTIONS,
                                           NETWORK_OPTIONS, check_service_runtime, driver_facts,
                                           network_option_facts, plugin_name)
from authz.decoding.checks.volumes import (DATA_OPTIONS, LOCAL_DRIVER_OPTIONS, MOUNT_DATA_MAX,
                                           MOUNT_FLAGS, NETWORK_FS, NETWORK_OR_MEMORY_FS,
                                           OVERLAY_DIR_OPTIONS, OVERLAY_MAX_STACK,
                                           check_tmpfs, check_volume_driver, local_device_facts,
                                           local_volume_facts)
from authz.decoding.checks.mounts import (check_binds, check_mounts, mount_facts, named_volumes,
                                          parse_bind)
from authz.decoding.checks.confinement import (DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS,
                                               check_security_opt, check_service_apparmor,
                                               check_service_seccomp, check_service_selinux,
                                               check_sysctls, check_system_paths, seccomp_value)
from authz.decoding.checks.restart import (auto_restart_facts, check_restart_policy,
                                           check_service_restart)
from authz.decoding.checks.logs import (check_log_config, check_log_driver,
                                        check_log_settings, check_swarm_log_driver,
                                        check_swarm_log_settings, log_address_path,
                                        log_option_facts)
# Declared before the kinds of issue 9: kinds are listed in declaration order, which decides
# which kind's reason a rule value that fits none of them gets.
from authz.decoding.checks import elsewhere  # noqa: F401 (declares its fact kinds)
from authz.decoding.checks.runas import (check_service_user, check_stored_user, check_user,
                                         user_facts, user_is_root)
from authz.decoding.checks.ports import (bound_ports, check_port_bindings, host_ip,
                                         port_value, publish_all_facts)
from authz.decoding.checks.hardening import (check_no_new_privileges, check_readonly_rootfs,
                                             check_resource_limits, check_runtime,
                                             check_service_limits,
                                             check_service_readonly_rootfs, no_new_privileges,
                                             top_level_memory)
from authz.decoding.checks.labels import check_labels

__all__ = [
    "CONFIG", "STORED_CONFIG", "bound_ports", "check_labels", "check_no_new_privileges",
    "check_port_bindings", "check_readonly_rootfs", "check_resource_limits", "check_runtime",
    "check_service_limits", "check_service_readonly_rootfs", "check_service_user",
    "check_stored_user", "check_user", "host_ip", "no_new_privileges", "port_value",
    "publish_all_facts", "top_level_memory", "user_facts", "user_is_root",
    "check_log_settings", "check_swarm_log_settings",
    "BUILTIN_IPAM_DRIVERS", "BUILTIN_LOG_DRIVERS", "BUILTIN_NETWORK_DRIVERS", "CONTAINER_SPEC",
    "DATA_OPTIONS", "DEFAULT_MASKED_PATHS", "DEFAULT_READONLY_PATHS", "HOST_CONFIG",
    "HOST_INTERFACE_OPTIONS", "LOCAL_DRIVER_OPTIONS", "MOUNT_DATA_MAX",
    "MOUNT_FLAGS", "NETWORK_FS", "NETWORK_OPTIONS", "NETWORK_OR_MEMORY_FS",
    "OVERLAY_DIR_OPTIONS", "OVERLAY_MAX_STACK", "RESOURCES", "SOURCES",
    "STORED_HOST_CONFIG", "TASK_DEFAULTS", "TASK_TEMPLATE", "VOLUMES_FROM", "Check",
    "CheckFunction", "auto_restart_facts", "check", "check_binds", "check_capabilities",
    "check_cgroup_namespace", "check_cgroup_parent", "check_devices", "check_host_namespaces",
    "check_log_config", "check_log_driver", "check_mounts", "check_privileged",
    "check_restart_policy", "check_security_opt", "check_service_apparmor",
    "check_service_capabilities", "check_service_restart", "check_service_runtime",
    "check_service_seccomp", "check_service_selinux", "check_swarm_log_driver",
    "check_sysctls", "check_system_paths", "check_tmpfs", "check_volume_driver",
    "checks_reading", "driver_facts", "host_path_facts", "host_paths", "inside",
    "local_device_facts", "local_volume_facts", "log_address_path", "log_option_facts",
    "mount_facts", "named_volumes", "namespace_facts", "network_option_facts",
    "normalize_capability", "parse_bind", "plugin_name", "registered", "run",
    "seccomp_value",
]
