"""Checks on where dockerd sends a container's output: a log driver that is a plugin, and
log addresses that name a host socket."""

from __future__ import annotations

from typing import Any, Iterator

from authz.decoding.checks.drivers import BUILTIN_LOG_DRIVERS, driver_facts
from authz.decoding.checks.registry import (HOST_CONFIG, STORED_HOST_CONFIG, TASK_DEFAULTS,
                                            TASK_TEMPLATE, check, inside)
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, get_map, get_obj, get_str

LOG_SOCKET = fact_kind("log-socket", "a host unix socket a log driver writes the container's output to")
LOG_DRIVER = fact_kind("log-driver", "a log driver that is not built into dockerd (a plugin)")
ANY_LOG_DRIVER = fact_kind("log.driver", "every log driver, built in or not (default: dockerd's "
                           "log-driver setting)")
LOG_OPTION = fact_kind("log.option", "the key of a log option, never its value (splunk-token...)")

_NAME_MAX = 100


def log_address_path(value: str) -> str | None:
    """The host socket a log address names, as Go's ``url.Parse`` reads it for dockerd's
    syslog and fluentd drivers (``unix:///p``, ``unix:/p``, ``unix://host/p`` are all the
    path ``/p``; the scheme is case-insensitive), or None for a network address."""
    scheme, sep, rest = value.partition(":")
    if not sep or scheme.lower() not in ("unix", "unixgram"):
        return None
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        rest = rest[slash:] if slash >= 0 else ""
    return rest or "(empty)"


def log_option_facts(options: dict[str, Any], at: str) -> Iterator[Fact]:
    """Log driver options that name a host socket: dockerd connects there and writes the
    container's output, as root."""
    for key, value in options.items():
        if not isinstance(value, str):
            raise RequestRefused("request-body-invalid", f"{at}[{key[:100]!r}] is not a string",
                                 "Send log options as strings.")
        path = log_address_path(value)
        if path is not None:
            yield Fact("log-socket", path, f"{at}[{key[:100]!r}]",
                       "dockerd writes the container's output there")


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(LOG_SOCKET,), rank=130)
def check_log_config(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--log-opt syslog-address=unix:///path`` and the like (``log_option_facts``)."""
    log = get_obj(hc, "LogConfig", where)
    yield from log_option_facts(get_map(log, "Config", inside(where, "LogConfig")),
                                inside(where, "LogConfig.Config"))


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(LOG_DRIVER,), rank=140)
def check_log_driver(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--log-driver``: a log driver that is not built in is a plugin."""
    log = get_obj(hc, "LogConfig", where)
    yield from driver_facts("log-driver", get_str(log, "Type", inside(where, "LogConfig")),
                            BUILTIN_LOG_DRIVERS, inside(where, "LogConfig.Type"),
                            "a log driver plugin")


@check(reads=(TASK_TEMPLATE, TASK_DEFAULTS), reports=(LOG_DRIVER, LOG_SOCKET), rank=10)
def check_swarm_log_driver(holder: GoObject | None, where: str) -> Iterator[Fact]:
    """A swarm ``LogDriver`` (service task templates, swarm task defaults)."""
    driver = get_obj(holder, "LogDriver", where)
    at = inside(where, "LogDriver")
    yield from driver_facts("log-driver", get_str(driver, "Name", at), BUILTIN_LOG_DRIVERS,
                            f"{at}.Name", "a log driver plugin")
    yield from log_option_facts(get_map(driver, "Options", at), f"{at}.Options")


def log_settings_facts(driver: str, options: dict[str, Any], at: str, driver_at: str,
                       options_at: str) -> list[Fact]:
    """``log.driver`` and the key of every log option: option values can be credentials
    (``splunk-token``, ``awslogs-credentials-endpoint``) and never become facts."""
    facts = [Fact("log.driver", driver[:_NAME_MAX], driver_at)] if driver else []
    facts += [Fact("log.option", key[:_NAME_MAX], f"{options_at}[{key[:_NAME_MAX]!r}]")
              for key in options]
    return facts


@check(reads=(HOST_CONFIG, STORED_HOST_CONFIG), reports=(ANY_LOG_DRIVER, LOG_OPTION), rank=145)
def check_log_settings(hc: GoObject | None, where: str) -> Iterator[Fact]:
    """``--log-driver`` (every driver: ``default`` when the create names none; dockerd stores
    the one it resolved) and the keys of ``--log-opt``."""
    log = get_obj(hc, "LogConfig", where)
    at = inside(where, "LogConfig")
    yield from log_settings_facts(get_str(log, "Type", at) or "default", get_map(log, "Config", at),
                                  at, f"{at}.Type", f"{at}.Config")


@check(reads=(TASK_TEMPLATE, TASK_DEFAULTS), reports=(ANY_LOG_DRIVER, LOG_OPTION), rank=15)
def check_swarm_log_settings(holder: GoObject | None, where: str) -> Iterator[Fact]:
    """A swarm ``LogDriver``'s name and option keys, when one is given (without one, each
    node's dockerd uses its own log-driver setting)."""
    driver = get_obj(holder, "LogDriver", where)
    at = inside(where, "LogDriver")
    yield from log_settings_facts(get_str(driver, "Name", at), get_map(driver, "Options", at),
                                  at, f"{at}.Name", f"{at}.Options")
