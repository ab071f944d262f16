"""pyauthz: a Docker Engine authorization plugin.

Data flows one way: ``protocol`` (dockerd's wire format) -> ``decoding`` (the one
place that knows the Docker API) -> ``policy`` (Casbin) -> ``decision`` -> ``audit``.
``trust`` (image signatures), ``cli`` and ``serve`` sit beside that line.
"""

__version__ = "0.1.0"
