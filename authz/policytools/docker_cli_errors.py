"""The one error of the docker CLI translation (re-exported by ``docker_cli``)."""


class CliError(ValueError):
    """A docker command line that cannot be translated exactly into the API calls the
    docker CLI would make: an unknown command or flag, a bad value, or something the
    translation does not model. It never guesses."""
