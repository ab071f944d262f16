"""pyauthz: a Docker Engine authorization plugin.

Data flows one way: ``protocol`` (dockerd's wire format) -> ``decoding`` (the one
place that knows the Docker API) -> ``policy`` (Casbin) -> ``decision`` -> ``audit``.
``trust`` (image signatures), ``cli`` and ``serve`` sit beside that line.

Distributed on PyPI as ``pyauthz-docker`` (the name ``pyauthz`` there is an unrelated
project); the command is ``pyauthz`` and the import package ``authz``. The default policy
ships inside the package (``authz/policies``, package data; in a checkout a symlink to the
repository's ``policies/``).
"""

DISTRIBUTION = "pyauthz-docker"


def _version() -> str:
    """The installed distribution's version; in a checkout run without installing it,
    pyproject.toml's; else ``0+unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    try:
        import tomllib
        from pathlib import Path

        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project", {})
        if project.get("name") == DISTRIBUTION and isinstance(project.get("version"), str):
            return project["version"]
    except (OSError, ValueError):
        pass
    return "0+unknown"


__version__ = _version()
