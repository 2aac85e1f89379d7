"""Figures for PNG files without pyplot, so plotting never changes a user's matplotlib backend."""

from __future__ import annotations


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=(6.4, 4.8), squeeze: bool = True):
    """A standalone ``matplotlib.figure.Figure`` and its axes (``Figure.subplots`` semantics).

    Unlike ``pyplot.subplots`` it registers nothing with pyplot and needs no backend switch:
    ``fig.savefig(path)`` renders with Agg, and the figure is freed with its last reference.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze)
    return fig, axes
