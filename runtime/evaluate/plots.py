"""matplotlib for every evaluation plot: one place that picks the file-only backend and names the extra."""
from __future__ import annotations

from ..errors import InfolensError


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend; a one-line error naming the extra when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InfolensError("plots need matplotlib: pip install 'infolens[eval]'") from None
    return plt
