"""The floor: what no policy can open, whatever its rules, allow-list roots or exceptions say.

A deny list of host paths is never complete, so the shipped policy allows bind sources only
under the roots it names (rule ``host-path-roots``). Beneath that sits this floor, built in:

- ``host-path-protected``: a host path that is, lies in, or contains a system directory,
  dockerd's or containerd's data and exec roots (as the running dockerd reports them), or
  pyauthz's own files (its policy directory, decision log, socket directory, the docker
  socket it reads). Binding any of them is root on the host, or the end of the audit trail.
- ``authz-plugin-protected``: no API request may disable, remove, upgrade or reconfigure a
  managed plugin that implements authorization (``docker.authz/1.0``): dockerd would drop
  it from the chain.

Exceptions cannot name these rules, and rules.yaml cannot define rules with their ids.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Iterable

from authz.decoding.facts import Fact
from authz.policy.engine import Violation
from authz.policy.matchers import path_overlaps, path_under

HOST_PATH_RULE = "host-path-protected"
AUTHZ_PLUGIN_RULE = "authz-plugin-protected"

# System directories (root's files, the package manager's state whose maintainer scripts run
# as root, kernel interfaces, services' control sockets) and the default locations of
# dockerd, containerd and pyauthz. The running dockerd's own roots are added at run time.
SYSTEM_PATHS: tuple[str, ...] = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/sbin", "/sys", "/usr", "/snap",
    "/var/lib/dpkg", "/var/lib/apt", "/var/lib/rpm", "/var/lib/dnf", "/var/lib/yum",
    "/var/lib/snapd", "/var/spool/cron", "/var/lib/systemd", "/run/systemd", "/var/run/systemd",
    "/run/dbus", "/var/run/dbus", "/var/lib/kubelet",
    "/var/lib/docker", "/run/docker", "/var/run/docker", "/run/docker.sock",
    "/var/run/docker.sock", "/run/containerd", "/var/run/containerd", "/var/lib/containerd",
    "/etc/pyauthz", "/var/log/pyauthz",
)

AUTHZ_INTERFACE = "docker.authz/1.0"
# Requests that would take an authorization plugin out of dockerd's chain or change it.
GUARDED_PLUGIN_ENDPOINTS = frozenset({"plugin.disable", "plugin.remove", "plugin.upgrade",
                                      "plugin.set"})


def is_authz_interface(kind: str) -> bool:
    """As moby reads ``PluginInterfaceType`` (``prefix.capability/version``) and picks authz
    plugins (``FilterByCap``): prefix ``docker``, capability ``authz``, any version."""
    prefix, _, rest = kind.split("/", 1)[0].partition(".")
    return prefix == "docker" and rest == "authz"


@dataclass(frozen=True)
class ProtectedPath:
    path: str
    why: str
    # False for an entry on the way to a file pyauthz trusts (a symlink followed, a
    # directory a ".." steps out of, the file itself): only a bind that is or contains it
    # can swap it; a bind inside it cannot change where the way leads, and stays allowed.
    inside_too: bool = True

    def reached_by(self, path: str) -> bool:
        """Whether binding ``path`` reaches this protected path."""
        if self.inside_too:
            return path_overlaps(path, self.path)
        return path_under(self.path, posixpath.normpath(path) if path.startswith("/") else path)


def protected(paths: Iterable[str], why: str, *,
              inside_too: bool = True) -> tuple[ProtectedPath, ...]:
    return tuple(ProtectedPath(p, why, inside_too) for p in paths
                 if p and p.startswith("/") and p != "/")


SYSTEM_FLOOR = protected(SYSTEM_PATHS, "a system directory, or a default location of dockerd, "
                                       "containerd or pyauthz")


def floor_violations(endpoint: str, facts: Iterable[Fact],
                     paths: Iterable[ProtectedPath]) -> list[Violation]:
    """Every fact that goes through the floor, as a violation no exception lifts."""
    paths = tuple(paths)
    out: list[Violation] = []
    for fact in facts:
        if fact.kind == "host-path" and fact.value.startswith("/"):
            hit = next((p for p in paths if p.reached_by(fact.value)), None)
            if hit is not None:
                out.append(Violation(
                    HOST_PATH_RULE, fact.describe(),
                    f"It is, lies in or contains {hit.path} ({hit.why}); binding it gives root "
                    "on the host or reaches pyauthz's own files. No policy or exception can "
                    "open it.",
                    "Bind a dedicated directory under an allowed root (rule host-path-roots), "
                    "or use a named volume (for the time zone, pass -e TZ=... instead of "
                    "binding /etc/localtime).",
                    "CIS Docker Benchmark 5.5, 5.31; Pod Security Standards (baseline) "
                    "HostPath Volumes"))
        elif (fact.kind == "plugin.interface" and is_authz_interface(fact.value)
              and endpoint in GUARDED_PLUGIN_ENDPOINTS):
            out.append(Violation(
                AUTHZ_PLUGIN_RULE, fact.describe(),
                "This plugin authorizes dockerd's API calls; disabling, removing, upgrading or "
                "reconfiguring it through the API would take it out of the chain.",
                "Change authorization plugins on the host (daemon.json, the plugin's package), "
                "not through dockerd's API.",
                "pyauthz design note (docs/design.md, the plugin protects itself)"))
    return out
