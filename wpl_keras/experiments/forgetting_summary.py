"""The reported figures of the forgetting benchmarks: searches with and without WPL compared
over the epochs where WPL is on (paper Figure 3 for ENAS, Figure 4 for NAO).

A history is a search's per-epoch list of ``err2 − err1`` statistics (``mean_diff``,
``best5_diff``, ``max_diff``, ``mean_err1``, ...: :mod:`wpl_keras.nas.analysis.metrics`). With ``E`` the
epochs where WPL is on and ``d`` a difference averaged over the seeds, the headline reduction
is the paper's ratio of forgetting amounts ``1 − Σ_{e∈E} d_with[e] / Σ_{e∈E} d_without[e]``
(NaN, written as null, when ``Σ d_without <= 0``), with each seed's own reduction and their
spread beside it.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from wpl_keras.nas.analysis import metrics
from wpl_keras.utils.strict_json import finite_or_null

NAMES = ("mean", "best5", "max")
HISTORY_KEYS = ("mean_diff", "best5_diff", "max_diff", "mean_err1")


def reduction_fields(runs: dict, by_seed: dict, active: Sequence[int]) -> dict:
    """The ENAS forgetting benchmark's reduction and difference fields, in the order printed.

    Args:
        runs: ``{"without": history, "with": history}``, the seed-averaged histories.
        by_seed: seed → that seed's ``{"without": history, "with": history}``.
        active: the epochs with WPL active (the epochs every figure is taken over).

    Returns:
        For ``<name>`` in mean / best5 / max: ``<name>_reduction``
        ``= 1 − Σ_{e∈active} d_with / Σ_{e∈active} d_without`` of the seed-averaged
        differences (headline; NaN when the sum without WPL is ``<= 0``),
        ``reduction_epochs_used``, ``<name>_reduction_per_seed`` / ``_seed_mean`` / ``_std`` /
        ``_ci95`` (the Student-t 95% interval of the mean over seeds;
        :func:`wpl_keras.nas.analysis.metrics.reductions_over_seeds`),
        ``<name>_reduction_per_epoch`` (mean of per-epoch ratios over epochs with
        ``d_without > 0``) and ``reduction_per_epoch_epochs_used``, ``reduction_nan_reasons``,
        ``forgetting_is_real`` (seed-averaged) and ``forgetting_is_real_per_seed``,
        ``<name>_diff_without`` / ``_with`` (means over the epochs used), ``mean_diff_se``
        (``{"without", "with"}``: the standard error of one epoch's mean difference on one
        seed, averaged over the epochs used and the seeds; :func:`seed_figures`) and
        ``per_seed`` (each seed's own figures, :func:`seed_figures`). NaN stays NaN (pass the
        result through ``finite_or_null`` to write strict JSON).
    """
    red = metrics.reductions_over_epochs(runs["without"], runs["with"], epochs=active)
    spread = metrics.reductions_over_seeds(
        {str(seed): seed_runs for seed, seed_runs in by_seed.items()}, epochs=active)
    fields = {f"{k}_reduction": red[f"{k}_reduction"] for k in NAMES}
    fields["reduction_epochs_used"] = {k: red[f"{k}_reduction_epochs"] for k in NAMES}
    for k in NAMES:
        for suffix in ("per_seed", "seed_mean", "std", "ci95"):
            fields[f"{k}_reduction_{suffix}"] = spread[f"{k}_reduction_{suffix}"]
    fields.update({f"{k}_reduction_per_epoch": red[f"{k}_reduction_per_epoch"] for k in NAMES})
    fields["reduction_per_epoch_epochs_used"] = {
        k: red[f"{k}_reduction_per_epoch_epochs"] for k in NAMES}
    fields["reduction_nan_reasons"] = metrics.nan_reasons(red)
    fields["forgetting_is_real"] = red["mean_without"] > 0
    per_seed = {str(seed): seed_figures(seed_runs, active) for seed, seed_runs in by_seed.items()}
    fields["forgetting_is_real_per_seed"] = {
        seed: figures["forgetting_is_real"] for seed, figures in per_seed.items()}
    for k in NAMES:
        fields[f"{k}_diff_without"] = red[f"{k}_without"]
        fields[f"{k}_diff_with"] = red[f"{k}_with"]
    fields["mean_diff_se"] = {
        label: metrics.finite_mean(f[f"mean_diff_se_{label}"] for f in per_seed.values())
        for label in ("without", "with")}
    fields["per_seed"] = per_seed
    return fields


def seed_figures(runs: dict, active: Sequence[int]) -> dict:
    """One seed's reductions (pooled ``1 − Σ d_with / Σ d_without`` and per-epoch), its mean
    differences over the WPL epochs ``active``, and ``mean_diff_se_without`` / ``_with``: the
    standard error of an epoch's ``mean_diff``
    (:func:`wpl_keras.nas.analysis.metrics.mean_difference_se` of the epoch's ``err1`` and
    ``err2``) averaged over ``active`` (NaN where the records hold no per-architecture
    errors); ``runs`` is ``{"without": history, "with": history}``."""
    red = metrics.reductions_over_epochs(runs["without"], runs["with"], epochs=active)
    figures = {f"{k}_reduction": red[f"{k}_reduction"] for k in NAMES}
    figures.update({f"{k}_reduction_per_epoch": red[f"{k}_reduction_per_epoch"] for k in NAMES})
    for k in NAMES:
        figures[f"{k}_diff_without"] = red[f"{k}_without"]
        figures[f"{k}_diff_with"] = red[f"{k}_with"]
    for label in ("without", "with"):
        figures[f"mean_diff_se_{label}"] = _mean_se(runs[label], active)
    figures["forgetting_is_real"] = red["mean_without"] > 0
    return figures


def _mean_se(history: Sequence[dict], active: Sequence[int]) -> float:
    """The mean over the epochs ``active`` of each epoch's ``mean_diff`` standard error."""
    return metrics.finite_mean(
        metrics.mean_difference_se(history[e]["err1"], history[e]["err2"])
        for e in active if "err1" in history[e] and "err2" in history[e])


def summary_fields(by_seed: dict, seeds: Sequence[int], rates: Sequence[float],
                   start_epoch: int) -> Tuple[Dict[tuple, List[dict]], dict]:
    """The NAO forgetting benchmark's seed-averaged runs per rate and its forgetting fields.

    Args:
        by_seed: ``(seed, rate, wpl) → history``.
        seeds: the seeds run; rates: the output-dropout rates run.
        start_epoch: the first epoch with WPL.

    Returns:
        ``(runs, fields)``: ``runs[(rate, wpl)]`` the per-epoch differences averaged over the
        seeds (:func:`wpl_keras.nas.analysis.metrics.average_histories`), and ``fields``: per rate
        under ``best5_diff_by_rate`` the mean best-5 ``err2 − err1`` over the WPL epochs
        ``E`` without and with WPL, ``reduction = 1 − Σ_E best5_with / Σ_E best5_without`` of
        the seed-averaged differences (headline; null when the sum without WPL is ``<= 0``),
        ``reduction_per_seed`` (each seed's own pooled reduction), ``reduction_seed_mean``
        and ``reduction_std`` (population std over the seeds), ``reduction_ci95`` (Student-t
        95% interval of the seed mean), ``reduction_per_epoch`` (mean
        of the per-epoch ratios over epochs with a positive difference without WPL);
        ``mean_valid_ppl_by_rate``; ``wpl_lower_at_all_rates`` (seed-averaged) and
        ``wpl_lower_at_all_rates_per_seed``; ``per_seed_best5``. NaN as null.
    """
    runs = {(rate, wpl): metrics.average_histories(
                [by_seed[(s, rate, wpl)] for s in seeds], keys=HISTORY_KEYS)
            for rate in rates for wpl in (False, True)}
    summary = metrics.forgetting_by_rate(runs, start_epoch)
    seed_summaries = {str(s): metrics.forgetting_by_rate(
        {(r, w): by_seed[(s, r, w)] for r in rates for w in (False, True)}, start_epoch)
        for s in seeds}
    by_rate = {}
    for k, v in summary["rates"].items():
        per_seed = {s: seed_summaries[s]["rates"][k]["best5_reduction"] for s in seed_summaries}
        spread = metrics.seed_spread(list(per_seed.values()))
        by_rate[k] = {"without_wpl": v["best5_without"], "with_wpl": v["best5_with"],
                      "reduction": v["best5_reduction"], "reduction_per_seed": per_seed,
                      "reduction_seed_mean": spread["mean"], "reduction_std": spread["std"],
                      "reduction_ci95": spread["ci95"],
                      "reduction_per_epoch": v["best5_reduction_per_epoch"]}
    fields = {
        "best5_diff_by_rate": by_rate,
        "mean_valid_ppl_by_rate": {k: {"without_wpl": round(v["mean_ppl_without"], 1),
                                       "with_wpl": round(v["mean_ppl_with"], 1)}
                                   for k, v in summary["rates"].items()},
        "wpl_lower_at_all_rates": summary["wpl_lower_at_all_rates"],
        "wpl_lower_at_all_rates_per_seed": {
            s: v["wpl_lower_at_all_rates"] for s, v in seed_summaries.items()},
        "best5_averaged_over_epochs": f">= {start_epoch}",
        "per_seed_best5": {
            s: {k: {"best5_without": v["best5_without"], "best5_with": v["best5_with"],
                    "reduction": v["best5_reduction"]} for k, v in summ["rates"].items()}
            for s, summ in seed_summaries.items()},
    }
    return runs, finite_or_null(fields)


def path_dropping_fields(path_by_seed: dict, runs: dict, seeds: Sequence[int],
                         rates: Sequence[float], keeps: Sequence[float],
                         start_epoch: int) -> dict:
    """The NAO benchmark's path-dropping arms' forgetting beside the dropout rates' runs.

    Args:
        path_by_seed: ``(seed, rate, keep) → history`` of the searches with path dropping.
        runs: ``(rate, wpl) → history`` averaged over the seeds (:func:`summary_fields`).
        seeds, rates, keeps: what was run; start_epoch: the first epoch with WPL.

    Returns:
        ``{"keep_<k>": {"by_rate": {rate: {...}}, "path_lower_than_no_wpl_at_all_rates",
        "wpl_lower_than_path_dropping_at_all_rates"}}``; per rate ``best5_diff`` (mean over
        the WPL epochs ``E`` of the seed-averaged best-5 ``err2 − err1`` with path
        dropping), ``reduction_vs_no_wpl`` ``= 1 − Σ_E best5_path / Σ_E best5_without``
        (null when the sum without is ``<= 0``), ``best5_without_wpl``, ``best5_with_wpl``
        and ``mean_valid_ppl``; NaN as null.
    """
    fields = {}
    for keep in keeps:
        path = {rate: metrics.average_histories(
            [path_by_seed[(s, rate, keep)] for s in seeds], keys=HISTORY_KEYS) for rate in rates}
        against_plain = metrics.forgetting_by_rate(
            {**{(r, False): runs[(r, False)] for r in rates},
             **{(r, True): path[r] for r in rates}}, start_epoch)
        against_wpl = metrics.forgetting_by_rate(
            {**{(r, False): path[r] for r in rates},
             **{(r, True): runs[(r, True)] for r in rates}}, start_epoch)
        by_rate = {
            k: {"best5_diff": v["best5_with"], "reduction_vs_no_wpl": v["best5_reduction"],
                "best5_without_wpl": v["best5_without"],
                "best5_with_wpl": against_wpl["rates"][k]["best5_with"],
                "mean_valid_ppl": round(v["mean_ppl_with"], 1)}
            for k, v in against_plain["rates"].items()}
        fields[f"keep_{keep:g}"] = {
            "by_rate": by_rate,
            "path_lower_than_no_wpl_at_all_rates": against_plain["wpl_lower_at_all_rates"],
            "wpl_lower_than_path_dropping_at_all_rates": against_wpl["wpl_lower_at_all_rates"],
        }
    return finite_or_null(fields)
