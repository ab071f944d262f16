"""The worst inputs we can construct, and the CPU one decision costs on each (issue 7).

Each case is a request dockerd would forward (bodies up to 4 MiB, request lines up to 1 MiB),
decided in-process against the shipped policy with a stand-in dockerd that answers every
lookup at once. The aim: every case within 50 ms of CPU. From the repo root:

    python3 -m bench.worst_inputs [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from authz.plugin import Plugin
from authz.policy import Policy
from authz.protocol import AuthzRequest, Headers
from bench.paths import SHIPPED_POLICY_DIR

MIB = 1024 * 1024


class StandIn:
    """dockerd that knows nothing (every lookup: 404), answering at once."""

    docker_host = "unix:///nonexistent.sock"

    def server_pid(self):
        """No dockerd process to find."""
        return None

    def info(self, deadline):
        """dockerd's data root, as /info reports it."""
        return {"DockerRootDir": "/var/lib/docker"}

    def __getattr__(self, name):
        """Every inspect_* finds nothing."""
        if name.startswith("inspect_"):
            return lambda *a: None
        raise AttributeError(name)


def body_call(uri: str, doc, method: str = "POST") -> AuthzRequest:
    """An AuthZReq for uri with doc as its JSON body."""
    data = json.dumps(doc).encode()
    return AuthzRequest(phase="request", method=method, uri=uri, body=data,
                        headers=Headers({"Content-Type": "application/json",
                                         "Content-Length": str(len(data))}))


def cases() -> dict[str, AuthzRequest]:
    """The worst inputs, by what makes each expensive."""
    deep = "/srv/" + "/".join(["d"] * 2000)
    lower = ":".join(f"/srv/l{i}" for i in range(450))[:4000].rsplit(":", 1)[0]
    overlay = {"type": "overlay", "o": f"lowerdir={lower},upperdir=/srv/u,workdir=/srv/w"}
    return {
        "query string 1 MiB": AuthzRequest(
            phase="request", method="GET",
            uri="/v1.41/containers/json?" + "&".join(f"k{i}=v" for i in range(MIB // 8)),
            headers=Headers({})),
        "one path of 520,000 components": body_call("/containers/create", {
            "Image": "i", "HostConfig": {"Binds": ["/srv" + "/a" * 520_000 + ":/x"]}}),
        "256 binds of 2,000 components": body_call("/containers/create", {
            "Image": "i", "HostConfig": {"Binds": [f"{deep}{i}:/b{i}" for i in range(256)]}}),
        "256 mounts of ~450 overlay dirs": body_call("/containers/create", {
            "Image": "i", "HostConfig": {"Mounts": [
                {"Type": "volume", "Target": f"/m{i}",
                 "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": overlay}}}
                for i in range(256)]}}),
        "image name of 1 MiB": body_call("/containers/create", {"Image": "a" * MIB}),
        "4 MiB of JSON keys": body_call("/containers/create", {
            "Image": "i", "Labels": {f"k{i}": "v" for i in range(4 * MIB // 12)}}),
        "49,000 JSON members (just under the cap)": body_call("/containers/create", {
            "Image": "i", "Labels": {f"k{i}": "v" * 8 for i in range(49_000)}}),
        "1,023 query params of 1 KiB": AuthzRequest(
            phase="request", method="GET",
            uri="/v1.41/containers/json?" + "&".join(f"k{i}=" + "v" * 1000 for i in range(1023)),
            headers=Headers({})),
        "256 sysctls, 256 caps, 256 devices": body_call("/containers/create", {
            "Image": "i", "HostConfig": {
                "Sysctls": {f"net.x{i}": "1" for i in range(256)},
                "CapAdd": [f"CAP{i}" for i in range(256)],
                "Devices": [{"PathOnHost": f"/dev/x{i}", "PathInContainer": "/x"}
                            for i in range(256)]}}),
    }


def main(argv=None) -> None:
    """Decide each case --repeat times and print the least CPU it took and the outcome."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    policy = Policy.load(Path(SHIPPED_POLICY_DIR))
    plugin = Plugin(policy, None, StandIn(), threads=32)
    print(f"CPU per decision, shipped policy, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs (best of {args.repeat})")
    for name, call in cases().items():
        best, outcome = None, ""
        for _ in range(args.repeat):
            started = time.process_time()
            decision = plugin.decide(call)
            spent = (time.process_time() - started) * 1000
            best = spent if best is None else min(best, spent)
            outcome = "allow" if decision.allow else ",".join(
                sorted({v.rule for v in decision.violations}))
        print(f"  {name:40s} {best:8.1f} ms  {outcome}")


if __name__ == "__main__":
    main()
