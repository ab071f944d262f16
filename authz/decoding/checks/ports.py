"""Checks on the ports a container publishes on the host, and on which host addresses.

Values are written as ``docker ps`` writes them, ``HOSTIP:HOSTPORT->PORT/PROTO``
(``0.0.0.0:8080->80/tcp``, ``127.0.0.1:random->80/tcp``, ``:::8080->80/tcp``), so that a glob
matches an address: ``0.0.0.0:*`` is every IPv4 address of the host, ``:::*`` every IPv6
one. dockerd reads a binding's ``HostIp`` with Go's ``net.ParseIP``; an empty or unreadable
one is nil, and libnetwork then binds its default address (``0.0.0.0`` unless dockerd's
``--ip`` or the network's ``host_binding_ipv4`` says otherwise): reported as ``0.0.0.0``."""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Iterator

from authz.decoding.checks.registry import HOST_CONFIG, STORED_HOST_CONFIG, check, inside
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import MAX_ITEMS, GoObject, get_bool, get_map, get_str

PORT_PUBLISH = fact_kind("port.publish", "HOSTIP:HOSTPORT->PORT/PROTO, as docker ps writes it "
                         "(0.0.0.0:8080->80/tcp; HOSTPORT random when dockerd picks it)")
PORT_PUBLISH_ALL = fact_kind("port.publish-all", "true: -P publishes every exposed port on a "
                             "random host port")

# Every host address: what dockerd binds for an empty or unreadable HostIp (by default).
ANY_ADDRESS = "0.0.0.0"
_PART_MAX = 64
# The most published ports one request may report (all PortBindings together, or the
# exposed ports -P publishes): each is a fact every port rule judges. Real requests publish
# a handful; a body of 200 ports x 200 bindings would cost seconds.
MAX_PUBLISHED = 1024


def host_ip(text: str) -> str:
    """The host address a binding's ``HostIp`` binds, as Go's ``net.ParseIP`` reads it:
    ``0.0.0.0`` for an empty or unreadable one (nil: dockerd's default address); an
    IPv4-mapped IPv6 address as IPv4; IPv6 compressed, without brackets."""
    if not text or "%" in text:          # Go's ParseIP refuses zones
        return ANY_ADDRESS
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ANY_ADDRESS
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _split_proto_port(raw: str) -> tuple[str, str]:
    """moby's ``nat.SplitProtoPort``: ``(proto, port)``, ``tcp`` when no protocol is given."""
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1 or not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _cut(text: str) -> str:
    return text if len(text) <= _PART_MAX else text[:_PART_MAX]


def container_port(key: str) -> str:
    """``PORT/PROTO`` of a ``PortBindings`` or ``ExposedPorts`` key (``80`` is ``80/tcp``)."""
    proto, port = _split_proto_port(key)
    return f"{_cut(port) or '(empty)'}/{_cut(proto) or 'tcp'}"


def port_value(ip: str, host_port: str, key: str) -> str:
    """``HOSTIP:HOSTPORT->PORT/PROTO``; HOSTPORT ``random`` when dockerd picks it (empty, 0)."""
    _, port = _split_proto_port(host_port)
    port = "random" if port in ("", "0") else _cut(port)
    return f"{host_ip(ip)}:{port}->{container_port(key)}"


def _binding(value: Any, at: str) -> GoObject:
    if not isinstance(value, GoObject):
        raise RequestRefused("request-body-invalid", f"{at} is not an object",
                             "Send port bindings as objects with HostIp and HostPort.")
    return value


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(PORT_PUBLISH, PORT_PUBLISH_ALL), rank=160)
def check_port_bindings(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``-p [HOSTIP:][HOSTPORT:]PORT[/PROTO]`` (``PortBindings``: each binding is reported;
    dockerd publishes it when the port is exposed, by the create or its image) and ``-P``
    (``PublishAllPorts``: the exposed ports without a binding, see ``publish_all_facts``)."""
    bindings = get_map(hc, "PortBindings", where)
    total = sum(len(e) for e in bindings.values() if isinstance(e, list))
    if total > MAX_PUBLISHED:
        raise RequestRefused("request-body-invalid", f"{inside(where, 'PortBindings')} has "
                             f"{total} bindings (the plugin reads at most {MAX_PUBLISHED})",
                             f"Publish at most {MAX_PUBLISHED} ports in one container.")
    for key, entries in bindings.items():
        at = inside(where, f"PortBindings[{key[:_PART_MAX]!r}]")
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise RequestRefused("request-body-invalid", f"{at} is not an array",
                                 "Send each port's bindings as an array.")
        if len(entries) > MAX_ITEMS:
            raise RequestRefused("request-body-invalid", f"{at} has {len(entries)} bindings "
                                 f"(the plugin reads at most {MAX_ITEMS})",
                                 f"Send at most {MAX_ITEMS} bindings.")
        for i, entry in enumerate(entries):
            binding = _binding(entry, f"{at}[{i}]")
            ip = get_str(binding, "HostIp", f"{at}[{i}]")
            yield Fact("port.publish", port_value(ip, get_str(binding, "HostPort", f"{at}[{i}]"),
                                                  key), f"{at}[{i}]")
    if get_bool(hc, "PublishAllPorts", where):
        yield Fact("port.publish-all", "true", inside(where, "PublishAllPorts"))


def bound_ports(hc: GoObject | None, where: str) -> frozenset[str]:
    """The ``PortBindings`` keys with at least one binding: ``-P`` leaves them as bound."""
    return frozenset(key for key, entries in get_map(hc, "PortBindings", where).items()
                     if isinstance(entries, list) and entries)


def publish_all_facts(exposed: Iterable[str], covered: frozenset[str], where: str,
                      detail: str = "") -> list[Fact]:
    """``-P``: every exposed port without a binding (``covered``) is published on a random
    port of dockerd's default address (every address, by default)."""
    ports = [key for key in exposed if key not in covered]
    if len(ports) > MAX_PUBLISHED:
        raise RequestRefused("request-body-invalid", f"-P would publish {len(ports)} ports of "
                             f"{where} (the plugin reads at most {MAX_PUBLISHED})",
                             "Publish the ports the service needs with -p instead of -P.")
    return [Fact("port.publish", port_value("", "", key), f"{where}[{key[:_PART_MAX]!r}]", detail)
            for key in ports]
