"""Checks on a container's labels: metadata that teams scope rules and exceptions by."""

from __future__ import annotations

from typing import Iterator

from authz.decoding.checks.registry import CONFIG, CONTAINER_SPEC, check, inside
from authz.decoding.errors import RequestRefused
from authz.decoding.facts import Fact, fact_kind
from authz.moby.gojson import GoObject, get_map

LABEL = fact_kind("label", "KEY=VALUE of a label the request sets (key cut at 128 characters, "
                  "value at 256)")

LABEL_KEY_MAX = 128
LABEL_VALUE_MAX = 256


@check(reads=(CONFIG, CONTAINER_SPEC), reports=(LABEL,), rank=140)
def check_labels(config: GoObject | None, where: str) -> Iterator[Fact]:
    """``--label KEY=VALUE`` (``Labels``; a service's ``ContainerSpec.Labels``): the labels
    the request sets, not those its image adds."""
    for key, value in get_map(config, "Labels", where).items():
        at = inside(where, f"Labels[{key[:LABEL_KEY_MAX]!r}]")
        if not isinstance(value, str):
            raise RequestRefused("request-body-invalid", f"{at} is not a string",
                                 "Send label values as strings.")
        yield Fact("label", f"{key[:LABEL_KEY_MAX]}={value[:LABEL_VALUE_MAX]}", at)
