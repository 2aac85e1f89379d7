"""Multi-model forgetting metrics of a weight-sharing search (paper §4.2, Figure 3).

For every architecture sampled in an epoch, ``err1`` is its validation error on a fixed
validation batch right after it was trained and ``err2`` the same error at the end of the
epoch. Per epoch the paper reports, over the differences ``d = err2 − err1``:

* ``mean_diff = mean(d)`` over all sampled architectures,
* ``best5_diff = mean(d)`` over the 5 architectures with the lowest ``err1``,
* ``max_diff = max(d)``.

A positive difference means the architecture was forgotten. The reduction that WPL brings is
the paper's ratio of forgetting amounts, pooled over the epochs ``E`` with WPL active:
``1 − Σ_{e∈E} d_with[e] / Σ_{e∈E} d_without[e]`` (:func:`pooled_reduction`; NaN when
``Σ d_without <= 0``). The mean over epochs of the per-epoch ratios
``(d_without[e] − d_with[e]) / d_without[e]`` is also reported (``*_reduction_per_epoch``);
epochs with a tiny positive ``d_without`` dominate it and it can exceed 1.

Pure functions first (:func:`forgetting_differences`, :func:`forgetting_summary`,
:func:`mean_difference_se`, :func:`reduction`, :func:`pooled_reduction`,
:func:`reductions_over_epochs`, :func:`nan_reasons`, :func:`seed_spread`,
:func:`finite_mean`, :func:`seed_interval`, :func:`reductions_over_seeds`,
:func:`average_histories`), then a Figure-3-like plot (:func:`plot_forgetting`); last, the
Figure-4 analysis of NAO runs over output-dropout rates (:func:`epochs_after_start`, :func:`forgetting_by_rate`,
:func:`plot_figure4`).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from wpl_keras.utils.validation import check_number

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
    best_k = check_number("forgetting_summary: best_k", best_k, minimum=1, integer=True)
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


def mean_difference_se(err1: Sequence[float], err2: Sequence[float]) -> float:
    """Standard error of one epoch's ``mean_diff``: ``s / √n`` with ``s`` the sample standard
    deviation (``n − 1`` in the denominator) of the ``n`` differences ``d = err2 − err1``.

    It holds both noises of ``mean_diff``: which architectures were sampled, and the finite
    fixed validation batch (an error on ``m`` images moves in steps of ``100 / m`` points).
    NaN when ``n < 2``.
    """
    d = forgetting_differences(err1, err2)
    if d.size < 2:
        return math.nan
    return float(d.std(ddof=1) / math.sqrt(d.size))


def reduction(d_without: float, d_with: float) -> float:
    """``(d_without − d_with) / d_without``: the share of forgetting that WPL removed.

    1 means all forgetting removed, 0 none, negative more forgetting with WPL. Returns NaN
    when ``d_without <= 0`` or either value is NaN: without forgetting there is nothing to
    reduce, and a negative denominator would turn the sign of the ratio around.
    """
    d_without, d_with = float(d_without), float(d_with)
    if not d_without > 0.0 or math.isnan(d_with):
        return math.nan
    return (d_without - d_with) / d_without


def pooled_reduction(d_without: Sequence[float], d_with: Sequence[float]) -> float:
    """The paper's reduction of forgetting amounts: ``1 − Σ_e d_with[e] / Σ_e d_without[e]``.

    The sums run over the paired entries (epochs) where both values are finite; an entry
    with a NaN or Inf in either run is left out of both sums. Unlike the mean of per-epoch
    ratios, an epoch with a tiny positive ``d_without`` weighs in by its amount, not by its
    ratio, so one such epoch cannot dominate the result. Equal to
    ``reduction(mean(d_without), mean(d_with))`` over the kept entries.

    Args:
        d_without: forgetting ``err2 − err1`` per epoch without WPL.
        d_with: the same epochs' forgetting with WPL.

    Returns:
        The reduction; NaN when no entry is finite in both runs or
        ``Σ d_without <= 0`` (no forgetting without WPL to reduce; see :func:`nan_reasons`).

    Raises:
        ValueError: if the two sequences have different lengths.
    """
    a, b = _finite_pairs(d_without, d_with)
    if a.size == 0:
        return math.nan
    return reduction(float(a.sum()), float(b.sum()))


def _finite_pairs(d_without: Sequence[float], d_with: Sequence[float]):
    """The entries of both sequences (float64 arrays) where both are finite."""
    a = np.asarray(d_without, dtype=np.float64).reshape(-1)
    b = np.asarray(d_with, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(
            f"d_without has {a.size} values but d_with has {b.size}; pair them by epoch."
        )
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _nanmean(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _key_name(key: str) -> str:
    """``mean_diff`` → ``mean``: the prefix of the reduction keys of a difference key."""
    return key[: -len("_diff")] if key.endswith("_diff") else key


def _check_epochs(num_epochs: int, epochs: Optional[Iterable[int]]) -> List[int]:
    """``epochs`` as a list (default: all), each checked to lie in ``[0, num_epochs)``."""
    epochs = list(range(num_epochs) if epochs is None else epochs)
    if not epochs:
        raise ValueError("no epochs to average over.")
    for e in epochs:
        if not 0 <= e < num_epochs:
            raise ValueError(f"epoch {e} is outside the runs' {num_epochs} epochs.")
    return epochs


def reductions_over_epochs(
    without: Sequence[Mapping[str, float]],
    with_wpl: Sequence[Mapping[str, float]],
    epochs: Optional[Iterable[int]] = None,
    keys: Sequence[str] = DIFF_KEYS,
) -> Dict[str, float]:
    """Reductions of two runs' per-epoch forgetting summaries over some epochs.

    For each ``key`` in ``keys`` (e.g. ``mean_diff``), with ``E`` the given ``epochs`` where
    both runs' value is finite:

    * ``<name>_reduction`` (the headline, the paper's ratio of forgetting amounts):
      ``1 − Σ_{e∈E} with_wpl[e][key] / Σ_{e∈E} without[e][key]``
      (:func:`pooled_reduction`); NaN when ``E`` is empty or ``Σ_{e∈E} without[e][key] <= 0``;
    * ``<name>_reduction_epochs``: ``|E|``;
    * ``<name>_reduction_per_epoch``:
      ``mean_{e∈E⁺} (d_without[e] − d_with[e]) / d_without[e]``
      over ``E⁺ = {e ∈ E : d_without[e] > 0}`` (NaN when ``E⁺`` is empty). An epoch with a
      tiny positive ``d_without`` dominates this mean, which can exceed 1; it is kept for
      comparison with the headline;
    * ``<name>_reduction_per_epoch_epochs``: ``|E⁺|``;
    * ``<name>_without`` / ``<name>_with``: ``mean_{e∈E}`` of each run's difference, so that
      ``<name>_reduction = 1 − <name>_with / <name>_without`` when it is defined.

    ``<name>`` is the key without ``_diff`` (``mean``, ``best5``, ``max``). Every value is a
    float or an int; :func:`nan_reasons` says why a reduction is NaN.

    Args:
        without: per-epoch summaries of the run without WPL, indexed by epoch.
        with_wpl: per-epoch summaries of the run with WPL (same length).
        epochs: the epochs to average over (default: all), e.g. those with WPL active.
        keys: the difference keys of the summaries to reduce.

    Raises:
        ValueError: if the runs have different lengths, ``epochs`` is empty, or an epoch is
            outside the runs.
    """
    if len(without) != len(with_wpl):
        raise ValueError(
            f"runs have different lengths: {len(without)} epochs without WPL, "
            f"{len(with_wpl)} with."
        )
    epochs = _check_epochs(len(without), epochs)
    out: Dict[str, float] = {}
    for key in keys:
        name = _key_name(key)
        a, b = _finite_pairs([float(without[e][key]) for e in epochs],
                             [float(with_wpl[e][key]) for e in epochs])
        per_epoch = [reduction(x, y) for x, y in zip(a, b)]
        out[f"{name}_reduction"] = pooled_reduction(a, b)
        out[f"{name}_reduction_epochs"] = int(a.size)
        out[f"{name}_reduction_per_epoch"] = _nanmean(per_epoch)
        out[f"{name}_reduction_per_epoch_epochs"] = sum(1 for r in per_epoch if not math.isnan(r))
        out[f"{name}_without"] = float(a.mean()) if a.size else math.nan
        out[f"{name}_with"] = float(b.mean()) if b.size else math.nan
    return out


def nan_reasons(
    reductions: Mapping[str, float], keys: Sequence[str] = DIFF_KEYS
) -> Dict[str, str]:
    """Why each NaN reduction of :func:`reductions_over_epochs` is NaN.

    Args:
        reductions: the output of :func:`reductions_over_epochs` (same ``keys``).
        keys: the difference keys it was computed for.

    Returns:
        ``{"<name>_reduction" or "<name>_reduction_per_epoch": reason}`` for the NaN ones only
        (empty when every reduction is a number).
    """
    out: Dict[str, str] = {}
    for key in keys:
        name = _key_name(key)
        pooled = f"{name}_reduction"
        used = int(reductions[f"{pooled}_epochs"])
        if math.isnan(reductions[pooled]):
            if used == 0:
                out[pooled] = (f"no epoch has a finite {key} in both runs; "
                               "the runs diverged or recorded no architectures.")
            else:
                total = float(reductions[f"{name}_without"]) * used
                out[pooled] = (f"sum of {key} without WPL over {used} epochs is {total:.6g} "
                               "<= 0: no forgetting without WPL to reduce.")
        if math.isnan(reductions[f"{pooled}_per_epoch"]):
            out[f"{pooled}_per_epoch"] = (
                f"no epoch has {key} > 0 without WPL (and a finite {key} with WPL).")
    return out


def seed_spread(values: Sequence[float]) -> Dict[str, Any]:
    """Mean, spread and 95% interval of one figure over seeds, ignoring NaN seeds.

    With ``v`` the ``n`` finite values: ``mean = mean(v)``, ``std = sqrt(mean((v − mean)²))``
    (population standard deviation, as the two-model benchmark reports) and ``ci95`` the
    Student-t interval of the mean over seeds,
    ``mean ± t_{0.975, n−1} · s / √n`` with ``s`` the sample standard deviation
    (:func:`seed_interval`).

    Returns:
        ``{"mean", "std", "seeds", "ci95"}``: ``seeds = n``; ``mean`` is NaN when ``v`` is
        empty, ``std`` and both ends of ``ci95`` NaN when ``n < 2`` (one seed shows no
        spread).
    """
    v = _finite(values)
    return {
        "mean": finite_mean(v),
        "std": float(v.std()) if v.size >= 2 else math.nan,
        "seeds": int(v.size),
        "ci95": seed_interval(v),
    }


def _finite(values: Iterable[float]) -> np.ndarray:
    """The finite entries of ``values`` as a float64 array."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    return v[np.isfinite(v)]


def finite_mean(values: Iterable[float]) -> float:
    """The mean of the finite entries of ``values`` (NaN and ±inf left out); NaN if none."""
    v = _finite(values)
    return float(v.mean()) if v.size else math.nan


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> List[float]:
    """``[mean − h, mean + h]``, ``h = t_{(1+confidence)/2, n−1} · s / √n``: the Student-t
    confidence interval of the mean of ``n`` per-seed values (NaN ones left out), ``s`` their
    sample standard deviation (``n − 1`` in the denominator). ``[nan, nan]`` when ``n < 2``.
    """
    confidence = check_number("seed_interval: confidence", confidence, minimum=0,
                              exclusive_minimum=True, maximum=1, exclusive_maximum=True)
    v = _finite(values)
    if v.size < 2:
        return [math.nan, math.nan]
    # scipy.stats takes about a second to import: imported here, where it is used, not by
    # every process that imports the search driver (apps, search workers, subprocesses).
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2.0, v.size - 1) * v.std(ddof=1)
                 / math.sqrt(v.size))
    return [float(v.mean()) - half, float(v.mean()) + half]


def reductions_over_seeds(
    runs_by_seed: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]],
    epochs: Optional[Iterable[int]] = None,
    keys: Sequence[str] = DIFF_KEYS,
) -> Dict[str, Any]:
    """Each seed's headline (pooled) reductions, and their mean and spread over the seeds.

    For each ``key`` (``<name>`` as in :func:`reductions_over_epochs`), with ``r_s`` seed
    ``s``'s ``<name>_reduction = 1 − Σ_e d_with / Σ_e d_without`` over ``epochs``:

    * ``<name>_reduction_per_seed``: ``{s: r_s}``;
    * ``<name>_reduction_seed_mean``, ``<name>_reduction_std``, ``<name>_reduction_seeds``,
      ``<name>_reduction_ci95``: :func:`seed_spread` of the ``r_s`` (NaN seeds left out).

    The seed mean differs from the reduction of the seed-averaged histories (which pools the
    forgetting amounts of all seeds); the spread says how much one seed's figure can move.

    Args:
        runs_by_seed: seed (as a string) → ``{"without": history, "with": history}``.
        epochs: the epochs to pool over (default: all).
        keys: the difference keys to reduce.

    Raises:
        ValueError: if there is no seed, or a seed lacks a run.
    """
    if not runs_by_seed:
        raise ValueError("no seeds: runs_by_seed is empty.")
    epochs = None if epochs is None else list(epochs)
    per_seed: Dict[str, Dict[str, float]] = {}
    for seed, runs in runs_by_seed.items():
        if "without" not in runs or "with" not in runs:
            raise ValueError(f"seed {seed} needs a 'without' and a 'with' run, got {sorted(runs)}.")
        per_seed[str(seed)] = reductions_over_epochs(
            runs["without"], runs["with"], epochs=epochs, keys=keys)
    out: Dict[str, Any] = {}
    for key in keys:
        name = f"{_key_name(key)}_reduction"
        values = {s: red[name] for s, red in per_seed.items()}
        spread = seed_spread(list(values.values()))
        out[f"{name}_per_seed"] = values
        out[f"{name}_seed_mean"] = spread["mean"]
        out[f"{name}_std"] = spread["std"]
        out[f"{name}_seeds"] = spread["seeds"]
        out[f"{name}_ci95"] = spread["ci95"]
    return out


def average_histories(
    histories: Sequence[Sequence[Mapping[str, object]]],
    keys: Sequence[str] = DIFF_KEYS + ("mean_err1", "mean_err2"),
) -> List[Dict[str, float]]:
    """Per-epoch means over several runs (e.g. seeds) of the same schedule.

    ``out[e][k] = mean_r histories[r][e][k]`` for every ``k`` in ``keys``; ``out[e]["epoch"]``
    is ``e`` and ``out[e]["wpl_strength"]`` the first run's ``wpl_strength`` (``α``, equal across
    seeds). Averaging
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
        record: Dict[str, float] = {"epoch": e,
                                    "wpl_strength": histories[0][e].get("wpl_strength", 0.0)}
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

    For each rate, over the epochs ``E`` from ``wpl_start_epoch`` on (before it both runs are
    plain NAO; :func:`epochs_after_start`) where both runs' value is finite:

    * ``best5_without`` / ``best5_with``: ``mean_{e∈E}`` best-5 ``err2 − err1``, likewise
      ``mean_diff_without`` / ``mean_diff_with`` for the mean difference;
    * ``best5_reduction`` (headline) ``= 1 − Σ_E best5_with / Σ_E best5_without`` and
      ``mean_reduction`` the same for the mean difference (NaN when the sum without WPL is
      ``<= 0``); ``best5_reduction_per_epoch`` / ``mean_reduction_per_epoch`` the mean of the
      per-epoch ratios (:func:`reductions_over_epochs`);
    * ``mean_ppl_without`` / ``mean_ppl_with``: mean ``err1`` (validation perplexity) over all
      epochs;
    * ``wpl_lower``: 1 when ``best5_with < best5_without``.

    ``wpl_lower_at_all_rates`` is 1 when ``wpl_lower`` is 1 at every rate.

    Raises:
        ValueError: if a rate lacks a run with or without WPL, or its two runs' epochs from
            ``wpl_start_epoch`` on differ.
    """
    rates = sorted({rate for rate, _ in runs})
    per_rate: Dict[str, Dict[str, float]] = {}
    lower = []
    for rate in rates:
        if (rate, False) not in runs or (rate, True) not in runs:
            raise ValueError(f"rate {rate} needs a run with and a run without WPL.")
        after = [epochs_after_start(runs[(rate, wpl)], wpl_start_epoch) for wpl in (False, True)]
        epochs = [[int(r["epoch"]) for r in hist] for hist in after]
        if epochs[0] != epochs[1]:
            raise ValueError(
                f"rate {rate}: the runs without and with WPL cover different epochs from "
                f"{wpl_start_epoch} on ({epochs[0]} and {epochs[1]}); run both to the same "
                "number of epochs.")
        red = reductions_over_epochs(after[0], after[1], keys=("best5_diff", "mean_diff"))
        row: Dict[str, float] = {
            "best5_without": red["best5_without"], "best5_with": red["best5_with"],
            "mean_diff_without": red["mean_without"], "mean_diff_with": red["mean_with"],
        }
        for wpl, tag in ((False, "without"), (True, "with")):
            row[f"mean_ppl_{tag}"] = float(np.mean([r["mean_err1"] for r in runs[(rate, wpl)]]))
        for name in ("best5", "mean"):
            row[f"{name}_reduction"] = red[f"{name}_reduction"]
            row[f"{name}_reduction_per_epoch"] = red[f"{name}_reduction_per_epoch"]
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
