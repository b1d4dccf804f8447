"""The one exception type for bad input: the library names the parameter, a front end names its own spelling of it."""
from __future__ import annotations


class InfolensError(ValueError):
    """A problem with the user's input (a file, a model, a value).

    `str(e)` is the reason, one line, in the library's terms; `param` is the API name of the parameter that fixes it
    (a key of `infolens.params.PARAMS`), or None.  The CLI prints the reason and that parameter's flag
    (`params.with_flag`); a server would name its request field.
    """

    def __init__(self, reason: str, param: str | None = None):
        super().__init__(reason)
        self.param = param
