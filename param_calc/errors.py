"""ParamCalcError: a bad input, reported by the CLI as one line and exit code 2."""


class ParamCalcError(ValueError):
    """A bad model name, config file, target or rank; the message is one line for the user."""
