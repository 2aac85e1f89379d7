"""Multi-model forgetting metrics of a weight-sharing search (paper §4.2, Figure 3).

For every architecture sampled in an epoch, ``err1`` is its validation error on a fixed
validation batch right after it was trained and ``err2`` the same error at the end of the
epoch. Per epoch the paper reports, over the differences ``d = err2 − err1``:

* ``mean_diff = mean(d)`` over all sampled architectures,
* ``best5_diff = mean(d)`` over the 5 architectures with the lowest ``err1``,
* ``max_diff = max(d)``.

A positive difference means the architecture was forgotten. The reduction that WPL brings is
``(d_without − d_with) / d_without``.

Pure functions first (:func:`forgetting_differences`, :func:`forgetting_summary`,
:func:`reduction`, :func:`reductions_over_epochs`, :func:`average_histories`), then a
Figure-3-like plot (:func:`plot_forgetting`); last, the Figure-4 analysis of NAO runs over
output-dropout rates (:func:`epochs_after_start`, :func:`forgetting_by_rate`,
:func:`plot_figure4`).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DIFF_KEYS = ("mean_diff", "best5_diff", "max_diff")


def forgetting_differences(err1: Sequence[float], err2: Sequence[float]) -> np.ndarray:
    """``d = err2 − err1`` per architecture, as float64.

    Args:
        err1: error of each architecture right after its training.
        err2: error of the same architectures (same order) at the end of the epoch.

    Raises:
        ValueError: if the lengths differ, a list is empty, or a value is not finite.
    """
    a = np.asarray(err1, dtype=np.float64).reshape(-1)
    b = np.asarray(err2, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"err1 has {a.size} values but err2 has {b.size}; they must pair up.")
    if a.size == 0:
        raise ValueError("no architectures: err1 and err2 are empty.")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("err1/err2 contain NaN or Inf; the task diverged or returned no error.")
    return b - a


def forgetting_summary(
    err1: Sequence[float], err2: Sequence[float], *, best_k: int = 5
) -> Dict[str, float]:
    """Mean, best-k and max of ``d = err2 − err1`` for one epoch.

    ``best5_diff`` averages ``d`` over the ``best_k`` architectures with the lowest ``err1``
    (all of them when fewer were sampled; ties keep the sampling order).

    Returns:
        ``{"mean_diff", "best5_diff", "max_diff", "mean_err1", "mean_err2", "num_archs"}``.
    """
    if best_k < 1:
        raise ValueError(f"best_k must be >= 1, got {best_k}.")
    d = forgetting_differences(err1, err2)
    e1 = np.asarray(err1, dtype=np.float64).reshape(-1)
    best = np.argsort(e1, kind="stable")[:best_k]
    return {
        "mean_diff": float(d.mean()),
        "best5_diff": float(d[best].mean()),
        "max_diff": float(d.max()),
        "mean_err1": float(e1.mean()),
        "mean_err2": float(np.mean(err2)),
        "num_archs": int(d.size),
    }


def reduction(d_without: float, d_with: float) -> float:
    """``(d_without − d_with) / d_without``: the share of forgetting that WPL removed.

    1 means all forgetting removed, 0 none, negative more forgetting with WPL. Returns NaN
    when ``d_without <= 0``: without forgetting there is nothing to reduce, and a negative
    denominator would turn the sign of the ratio around.
    """
    d_without, d_with = float(d_without), float(d_with)
    if not d_without > 0.0:
        return math.nan
    return (d_without - d_with) / d_without


def _nanmean(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def reductions_over_epochs(
    without: Sequence[Mapping[str, float]],
    with_wpl: Sequence[Mapping[str, float]],
    epochs: Optional[Iterable[int]] = None,
    keys: Sequence[str] = DIFF_KEYS,
) -> Dict[str, float]:
    """Reductions of two runs' per-epoch forgetting summaries over some epochs.

    For each ``key`` in ``keys`` (e.g. ``mean_diff``):

    * ``<name>_reduction``: mean over ``epochs`` of the per-epoch
      ``reduction(without[e][key], with_wpl[e][key])``, skipping epochs where
      ``d_without <= 0`` (NaN when every epoch is skipped);
    * ``<name>_reduction_epochs``: how many epochs that mean used;
    * ``<name>_reduction_pooled``: ``reduction(mean_e without[e][key], mean_e with[e][key])``,
      the reduction of the epoch-averaged differences (less noisy; NaN unless the averaged
      ``d_without`` is positive);
    * ``<name>_without`` / ``<name>_with``: the epoch-averaged differences.

    ``<name>`` is the key without ``_diff`` (``mean``, ``best5``, ``max``).

    Args:
        without: per-epoch summaries of the run without WPL, indexed by epoch.
        with_wpl: per-epoch summaries of the run with WPL (same length).
        epochs: the epochs to average over (default: all).
    """
    if len(without) != len(with_wpl):
        raise ValueError(
            f"runs have different lengths: {len(without)} epochs without WPL, "
            f"{len(with_wpl)} with."
        )
    epochs = list(range(len(without)) if epochs is None else epochs)
    if not epochs:
        raise ValueError("no epochs to average over.")
    for e in epochs:
        if not 0 <= e < len(without):
            raise ValueError(f"epoch {e} is outside the runs' {len(without)} epochs.")
    out: Dict[str, float] = {}
    for key in keys:
        name = key[: -len("_diff")] if key.endswith("_diff") else key
        a = [float(without[e][key]) for e in epochs]
        b = [float(with_wpl[e][key]) for e in epochs]
        per_epoch = [reduction(x, y) for x, y in zip(a, b)]
        out[f"{name}_reduction"] = _nanmean(per_epoch)
        out[f"{name}_reduction_epochs"] = sum(1 for r in per_epoch if not math.isnan(r))
        out[f"{name}_reduction_pooled"] = reduction(float(np.mean(a)), float(np.mean(b)))
        out[f"{name}_without"] = float(np.mean(a))
        out[f"{name}_with"] = float(np.mean(b))
    return out


def average_histories(
    histories: Sequence[Sequence[Mapping[str, object]]],
    keys: Sequence[str] = DIFF_KEYS + ("mean_err1", "mean_err2"),
) -> List[Dict[str, float]]:
    """Per-epoch means over several runs (e.g. seeds) of the same schedule.

    ``out[e][k] = mean_r histories[r][e][k]`` for every ``k`` in ``keys``; ``out[e]["epoch"]``
    is ``e`` and ``out[e]["alpha"]`` the first run's ``alpha`` (equal across seeds). Averaging
    the per-epoch differences over seeds before taking reductions removes much of the
    per-seed noise of ``err2 − err1`` (which architectures were sampled, their order).

    Raises:
        ValueError: if there is no run, or the runs have different numbers of epochs.
    """
    if not histories:
        raise ValueError("no runs to average.")
    lengths = {len(h) for h in histories}
    if len(lengths) != 1:
        raise ValueError(f"runs have different numbers of epochs: {sorted(lengths)}.")
    out: List[Dict[str, float]] = []
    for e in range(lengths.pop()):
        record: Dict[str, float] = {"epoch": e, "alpha": histories[0][e].get("alpha", 0.0)}
        for key in keys:
            record[key] = float(np.mean([float(h[e][key]) for h in histories]))
        out.append(record)
    return out


def plot_forgetting(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    path: str,
    *,
    wpl_start_epoch: Optional[int] = None,
    title: Optional[str] = None,
    error_name: str = "error",
    first_epoch: int = 0,
) -> str:
    """Figure-3-like PNG: mean, best-5 and max of ``err2 − err1`` per epoch, one line per run.

    Args:
        runs: label → per-epoch summaries (dicts with ``epoch`` and the three diff keys).
        path: PNG path to write.
        wpl_start_epoch: draws a vertical line where WPL turns on.
        title: figure title.
        error_name: what the error is ("perplexity", "error (%)"), for the y labels.
        first_epoch: epochs before it are left out (the first epochs' differences are often
            orders of magnitude larger and would flatten the rest).

    Returns:
        ``path``.
    """
    if not runs:
        raise ValueError("plot_forgetting needs at least one run.")
    from wpl_keras.utils.plotting import new_figure

    fig, axes = new_figure(1, 3, figsize=(13, 3.6))
    panels = (("mean_diff", "(a) mean"), ("best5_diff", "(b) best 5"), ("max_diff", "(c) max"))
    for ax, (key, label) in zip(axes, panels):
        for run_label, records in runs.items():
            shown = [(int(r.get("epoch", i)), float(r[key])) for i, r in enumerate(records)
                     if int(r.get("epoch", i)) >= first_epoch]
            ax.plot([e for e, _ in shown], [d for _, d in shown], marker=".", label=run_label)
        ax.axhline(0.0, color="0.6", lw=0.8)
        if wpl_start_epoch is not None:
            ax.axvline(wpl_start_epoch, color="0.6", ls="--", lw=0.8)
        ax.set_title(f"{label} err2 − err1")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{error_name} difference")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def history_to_rows(history: Sequence[Mapping[str, object]]) -> List[Dict[str, object]]:
    """Flat per-epoch rows (scalars only) of a search history, for a CSV file."""
    rows = []
    for record in history:
        rows.append(
            {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Figure 4: forgetting of NAO runs with and without WPL, per output-dropout rate.


def epochs_after_start(history: Sequence[Dict[str, Any]], start: int) -> List[Dict[str, Any]]:
    """The records of ``history`` with ``epoch >= start`` (all of them if none qualify)."""
    kept = [r for r in history if int(r["epoch"]) >= start]
    return kept or list(history)


def forgetting_by_rate(
    runs: Dict[Tuple[float, bool], Sequence[Dict[str, Any]]], wpl_start_epoch: int
) -> Dict[str, Any]:
    """Figure-4 numbers from NAO runs keyed by ``(output_dropout, wpl)``.

    For each rate: ``best5_without`` / ``best5_with`` are the mean best-5 ``err2 − err1`` over
    the epochs from ``wpl_start_epoch`` on (before it both runs are plain NAO), likewise
    ``mean_ppl_*`` the mean ``err1`` (validation perplexity) over all epochs, and
    ``wpl_lower`` whether WPL's best-5 difference is lower. ``wpl_lower_at_all_rates`` is 1
    when it is at every rate.
    """
    rates = sorted({rate for rate, _ in runs})
    per_rate: Dict[str, Dict[str, float]] = {}
    lower = []
    for rate in rates:
        if (rate, False) not in runs or (rate, True) not in runs:
            raise ValueError(f"rate {rate} needs a run with and a run without WPL.")
        row: Dict[str, float] = {}
        for wpl, tag in ((False, "without"), (True, "with")):
            hist = runs[(rate, wpl)]
            after = epochs_after_start(hist, wpl_start_epoch)
            row[f"best5_{tag}"] = float(np.mean([r["best5_diff"] for r in after]))
            row[f"mean_diff_{tag}"] = float(np.mean([r["mean_diff"] for r in after]))
            row[f"mean_ppl_{tag}"] = float(np.mean([r["mean_err1"] for r in hist]))
        row["best5_reduction"] = reduction(row["best5_without"], row["best5_with"])
        row["wpl_lower"] = int(row["best5_with"] < row["best5_without"])
        lower.append(row["wpl_lower"])
        per_rate[f"{rate:g}"] = row
    return {"rates": per_rate, "wpl_lower_at_all_rates": int(bool(lower) and all(lower))}


def plot_figure4(
    runs: Dict[Tuple[float, bool], Sequence[Dict[str, Any]]],
    path: str,
    *,
    extra: Optional[Dict[str, Sequence[Dict[str, Any]]]] = None,
    error_name: str = "perplexity",
) -> str:
    """Figure-4-like PNG: per output-dropout rate (columns), mean validation error per epoch
    (top) and best-5 ``err2 − err1`` (bottom), with and without WPL.

    Args:
        runs: ``(rate, wpl) → history``.
        path: PNG to write.
        extra: label → history drawn in every column (e.g. ``"NAO + path dropping"``).
        error_name: the error's name for the y labels.
    """
    from wpl_keras.utils.plotting import new_figure

    rates = sorted({rate for rate, _ in runs})
    if not rates:
        raise ValueError("plot_figure4 needs at least one run.")
    fig, axes = new_figure(2, len(rates), figsize=(3.6 * len(rates), 6.0), squeeze=False)
    for col, rate in enumerate(rates):
        lines = {f"NAO{' + WPL' if wpl else ''}": runs[(rate, wpl)]
                 for wpl in (False, True) if (rate, wpl) in runs}
        lines.update(extra or {})
        for label, hist in lines.items():
            epochs = [int(r["epoch"]) for r in hist]
            axes[0, col].plot(epochs, [r["mean_err1"] for r in hist], marker=".", label=label)
            axes[1, col].plot(epochs, [r["best5_diff"] for r in hist], marker=".", label=label)
        axes[0, col].set_title(f"Dropout = {rate:.2f}")
        axes[0, col].set_ylabel(f"mean validation {error_name}")
        axes[0, col].set_yscale("log")
        axes[1, col].set_ylabel("best-5 err2 − err1")
        axes[1, col].axhline(0.0, color="0.6", lw=0.8)
        for row in (0, 1):
            axes[row, col].set_xlabel("epoch")
            axes[row, col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
