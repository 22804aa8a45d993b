"""The one exception the analysis raises for input it cannot analyse."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Degenerate or malformed input (too few points, one budget, every run diverged, a missing column).

    The message names what is wrong and how to fix it. `arguments` are the names of the arguments it is about,
    written in the message as `name=value` (`name=True` for a switch) or `` `name` ``, so that the CLI can name
    its flags instead (analysis.cli.flag_message); the CLI prints it and exits with status 2.
    """

    def __init__(self, message: str, *arguments: str):
        super().__init__(message)
        self.arguments = arguments

    def __reduce__(self):  # a worker process's error keeps its arguments
        return type(self), (str(self), *self.arguments)
