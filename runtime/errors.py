"""The one exception type the CLI turns into a one-line message and exit code 2."""


class InfolensError(ValueError):
    """A problem with the user's input (file, model, flag); the message names it and the flag that fixes it."""
