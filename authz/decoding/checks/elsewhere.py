"""Fact kinds reported by code that is neither a check nor a decoder, declared here so
that ``FACT_KINDS`` lists them (each with the module that reports it)."""

from __future__ import annotations

from authz.decoding.facts import fact_kind

# The route table (routes.py): every request's endpoint, and the image it runs or pulls.
ENDPOINT = fact_kind("endpoint", "the canonical endpoint (container.create, image.pull, unknown.write...)")
IMAGE = fact_kind("image", "the normalized reference a request runs or pulls")
# dockerd's state (state.py): how a request names what it acts on, and what a plugin is.
TARGET = fact_kind("target", "id, name, prefix, missing: how a request names the container or plugin "
                   "it acts on")
PLUGIN_INTERFACE = fact_kind("plugin.interface", "an interface the target plugin implements: "
                             "docker.authz/1.0...")
