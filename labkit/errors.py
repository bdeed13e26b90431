"""The one exception type that the CLI and the server turn into a one-line message."""


class UserError(Exception):
    """Bad input from the person at the keyboard: a wrong path, an impossible option."""
