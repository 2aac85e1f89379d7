"""Rank correlations between two scorings of the same architectures (e.g. a supernet's error
and the error after training from scratch), as the NAS literature judges weight sharing.

* Kendall's τ_b over the ``n(n−1)/2`` pairs, ``C`` concordant and ``D`` discordant, ``T_x`` /
  ``T_y`` pairs tied only in ``x`` / only in ``y`` (pairs tied in both count in neither):

      ``τ_b = (C − D) / sqrt((C + D + T_x) (C + D + T_y))``

* Spearman's ρ: Pearson's correlation of the ranks, ties given their average rank:

      ``ρ = cov(r(x), r(y)) / (σ(r(x)) σ(r(y)))``

Both lie in ``[−1, 1]``; 1 means the same order. Both are NaN when one scoring is constant
(no order to compare). They equal ``scipy.stats.kendalltau`` (its default τ_b) and
``scipy.stats.spearmanr``.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np


def _checked(x: Sequence[float], y: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"rank correlation needs two 1-D sequences of one length, got shapes "
                         f"{x.shape} and {y.shape}.")
    if len(x) < 2:
        raise ValueError(f"rank correlation needs at least 2 items, got {len(x)}.")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("rank correlation needs finite scores; got NaN or infinity in "
                         f"{x.tolist()} / {y.tolist()}.")
    return x, y


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ_b of two scorings of the same items (see the module docstring).

    Raises:
        ValueError: for sequences of different lengths, fewer than 2 items, or a non-finite
            score.
    """
    x, y = _checked(x, y)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu(np.ones_like(dx, dtype=bool), k=1)
    product = (dx * dy)[upper]
    concordant = int(np.sum(product > 0))
    discordant = int(np.sum(product < 0))
    tied_x_only = int(np.sum((dx[upper] == 0) & (dy[upper] != 0)))
    tied_y_only = int(np.sum((dy[upper] == 0) & (dx[upper] != 0)))
    denominator = math.sqrt((concordant + discordant + tied_x_only)
                            * (concordant + discordant + tied_y_only))
    if denominator == 0:
        return float("nan")
    return (concordant - discordant) / denominator


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``x`` in ascending order, tied values sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ of two scorings of the same items (see the module docstring).

    Raises:
        ValueError: as :func:`kendall_tau`.
    """
    x, y = _checked(x, y)
    rx = average_ranks(x) - (len(x) + 1) / 2.0
    ry = average_ranks(y) - (len(y) + 1) / 2.0
    denominator = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    if denominator == 0:
        return float("nan")
    return float(np.sum(rx * ry)) / denominator
