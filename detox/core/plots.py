"""Figures are written to files, never shown: one place sets matplotlib up for that."""


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed, safe in worker processes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
