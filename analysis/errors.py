"""The one exception the analysis raises for input it cannot analyse."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Degenerate or malformed input (too few points, one budget, every run diverged, a missing column).

    The message names what is wrong and how to fix it; the CLI prints it and exits with status 2.
    """
