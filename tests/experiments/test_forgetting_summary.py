"""The forgetting benchmarks' figures on hand-made histories (hand-computed over WPL epochs)."""

import json
import math

import pytest

from wpl_keras.experiments import forgetting_summary as fs
from wpl_keras.nas.analysis import metrics
from wpl_keras.utils.strict_json import finite_or_null


def _history(mean, best5, maximum):
    return [{"epoch": e, "wpl_strength": 0.0, "mean_diff": a, "best5_diff": b, "max_diff": c,
             "mean_err1": 50.0, "mean_err2": 50.0 + a}
            for e, (a, b, c) in enumerate(zip(mean, best5, maximum))]


def test_summary_fields_report_seed_spread_per_rate():
    by_seed = {}
    # Best-5 over the WPL epochs 1..2: seed 0 (4+6 → 1+1: 0.8), seed 1 (2+2 → 1+2: 0.25) at
    # rate 0; at rate 0.5 seed 1 has no forgetting without WPL (NaN) and WPL is not lower.
    for seed, rate, without, with_wpl in ((0, 0.0, [9, 4, 6], [9, 1, 1]),
                                          (1, 0.0, [9, 2, 2], [9, 1, 2]),
                                          (0, 0.5, [9, 5, 5], [9, 2, 3]),
                                          (1, 0.5, [9, -1, 0], [9, 0, 0])):
        by_seed[(seed, rate, False)] = _history(without, without, without)
        by_seed[(seed, rate, True)] = _history(with_wpl, with_wpl, with_wpl)
    runs, fields = fs.summary_fields(by_seed, [0, 1], [0.0, 0.5], start_epoch=1)
    assert set(runs) == {(0.0, False), (0.0, True), (0.5, False), (0.5, True)}
    zero = fields["best5_diff_by_rate"]["0"]
    assert zero["reduction"] == pytest.approx(1.0 - 5.0 / 14.0)  # seed-averaged amounts
    assert zero["reduction_per_seed"] == {"0": pytest.approx(0.8), "1": pytest.approx(0.25)}
    assert zero["reduction_seed_mean"] == pytest.approx(0.525)
    assert zero["reduction_std"] == pytest.approx(0.275)
    assert zero["reduction_per_epoch"] == pytest.approx((1 - 1 / 3 + 1 - 1.5 / 4) / 2)
    half = fields["best5_diff_by_rate"]["0.5"]
    assert half["reduction_per_seed"] == {"0": pytest.approx(0.5), "1": None}
    assert half["reduction_std"] is None  # one finite seed: no spread
    assert fields["wpl_lower_at_all_rates"] == 1
    assert fields["wpl_lower_at_all_rates_per_seed"] == {"0": 1, "1": 0}
    assert fields["per_seed_best5"]["1"]["0.5"]["reduction"] is None
    json.dumps(fields, allow_nan=False)  # strict JSON: NaN became null


def test_reduction_fields_have_headline_and_spread():
    by_seed = {
        0: {"without": _history([5, 1, 3], [5, 2, 2], [9, 4, 8]),
            "with": _history([5, 0, 1], [5, 1, 1], [9, 2, 8])},
        1: {"without": _history([5, 0.01, 1], [5, 1, 1], [9, 2, 2]),
            "with": _history([5, 0.5, 0.5], [5, 2, 2], [9, 2, 2])},
    }
    runs = {label: metrics.average_histories([by_seed[s][label] for s in (0, 1)])
            for label in ("without", "with")}
    fields = fs.reduction_fields(runs, by_seed, active=[1, 2])
    # Seed-averaged mean differences over epochs 1..2: without 0.505 + 2, with 0.25 + 0.75.
    assert fields["mean_reduction"] == pytest.approx(1.0 - 1.0 / 2.505)
    assert fields["reduction_epochs_used"] == {"mean": 2, "best5": 2, "max": 2}
    assert fields["mean_reduction_per_seed"] == {
        "0": pytest.approx(1.0 - 1.0 / 4.0), "1": pytest.approx(1.0 - 1.0 / 1.01)}
    assert fields["mean_reduction_seed_mean"] == pytest.approx((0.75 + 1.0 - 1.0 / 1.01) / 2)
    assert fields["mean_reduction_std"] == pytest.approx(abs(0.75 - (1.0 - 1.0 / 1.01)) / 2)
    # best5: seed 1 forgets more with WPL (2 against 1 per epoch).
    assert fields["best5_reduction_per_seed"]["1"] == pytest.approx(-1.0)
    assert fields["mean_reduction_per_epoch"] == pytest.approx(
        ((0.505 - 0.25) / 0.505 + (2 - 0.75) / 2) / 2)
    assert fields["reduction_per_epoch_epochs_used"]["mean"] == 2
    assert fields["reduction_nan_reasons"] == {}
    assert fields["forgetting_is_real"] is True
    assert fields["mean_diff_without"] == pytest.approx(1.2525)
    assert fields["per_seed"]["0"]["max_reduction"] == pytest.approx(1.0 - 10.0 / 12.0)
    assert fields["per_seed"]["1"]["mean_reduction_per_epoch"] == pytest.approx(
        ((0.01 - 0.5) / 0.01 + 0.5) / 2)
    assert not any(k.endswith("_pooled") for k in fields)
    json.dumps(finite_or_null(fields), allow_nan=False)
    # No forgetting without WPL: null headline, with the reason.
    flat = {0: {"without": _history([1, 0, -1], [1, 0, 0], [1, 0, 0]),
                "with": _history([1, 0, 0], [1, 0, 0], [1, 0, 0])}}
    nan_fields = fs.reduction_fields(
        {k: metrics.average_histories([flat[0][k]]) for k in ("without", "with")}, flat, [1, 2])
    assert math.isnan(nan_fields["mean_reduction"]) and not nan_fields["forgetting_is_real"]
    assert set(nan_fields["reduction_nan_reasons"]) == {
        f"{k}_reduction{s}" for k in ("mean", "best5", "max") for s in ("", "_per_epoch")}
    assert json.loads(json.dumps(finite_or_null(nan_fields)))["mean_reduction"] is None


def test_path_dropping_fields_against_plain_and_wpl_runs():
    """Path-dropping arms beside the dropout rates (hand-computed over WPL epochs 1..2)."""
    runs = {(0.0, False): _history([9, 4, 6], [9, 4, 6], [9, 4, 6]),   # best5 sum 10
            (0.0, True): _history([9, 1, 1], [9, 1, 1], [9, 1, 1]),    # best5 sum 2
            (0.5, False): _history([9, 2, 2], [9, 2, 2], [9, 2, 2]),   # best5 sum 4
            (0.5, True): _history([9, 3, 3], [9, 3, 3], [9, 3, 3])}    # best5 sum 6
    path_by_seed = {
        (0, 0.0, 0.9): _history([9, 2, 4], [9, 2, 4], [9, 2, 4]),
        (1, 0.0, 0.9): _history([9, 4, 2], [9, 4, 2], [9, 4, 2]),    # seed mean 3, 3: sum 6
        (0, 0.5, 0.9): _history([9, 1, 1], [9, 1, 1], [9, 1, 1]),
        (1, 0.5, 0.9): _history([9, 1, 1], [9, 1, 1], [9, 1, 1]),    # sum 2
    }
    fields = fs.path_dropping_fields(path_by_seed, runs, [0, 1], [0.0, 0.5], [0.9],
                                        start_epoch=1)
    keep = fields["keep_0.9"]
    zero, half = keep["by_rate"]["0"], keep["by_rate"]["0.5"]
    assert zero["best5_diff"] == pytest.approx(3.0) and half["best5_diff"] == pytest.approx(1.0)
    assert zero["reduction_vs_no_wpl"] == pytest.approx(1.0 - 6.0 / 10.0)
    assert half["reduction_vs_no_wpl"] == pytest.approx(1.0 - 2.0 / 4.0)
    assert (zero["best5_without_wpl"], zero["best5_with_wpl"]) == (pytest.approx(5.0),
                                                                   pytest.approx(1.0))
    assert keep["path_lower_than_no_wpl_at_all_rates"] == 1
    # WPL (1 per epoch) beats path dropping (3) at rate 0 but not at 0.5 (3 against 1).
    assert keep["wpl_lower_than_path_dropping_at_all_rates"] == 0
    json.dumps(fields, allow_nan=False)


def test_one_seed_headline_is_that_seeds_own_figures():
    by_seed = {3: {"without": _history([5, 2, 4], [5, 3, 3], [9, 6, 6]),
                   "with": _history([5, 1, 1], [5, 3, 0], [9, 6, 9])}}
    runs = {k: metrics.average_histories([by_seed[3][k]]) for k in ("without", "with")}
    fields = fs.reduction_fields(runs, by_seed, active=[1, 2])
    own = fs.seed_figures(by_seed[3], [1, 2])
    assert fields["per_seed"] == {"3": own}
    for k in fs.NAMES:
        assert fields[f"{k}_reduction"] == pytest.approx(own[f"{k}_reduction"])
    assert own["mean_reduction"] == pytest.approx(1.0 - 2.0 / 6.0)
    assert own["best5_reduction"] == pytest.approx(0.5)
    assert own["max_reduction"] == pytest.approx(1.0 - 15.0 / 12.0)  # WPL forgot more: < 0
    assert math.isnan(fields["mean_reduction_std"])  # one finite seed: no spread
    # Only the epochs given count: epoch 2 alone.
    assert fs.seed_figures(by_seed[3], [2])["mean_reduction"] == pytest.approx(0.75)


def test_reduction_fields_give_a_seed_interval_the_epochs_standard_error_and_each_seed_verdict():
    """Three seeds with per-architecture errors: the Student-t 95% interval of the seeds'
    reductions, the standard error of an epoch's mean difference (hand-computed), and
    ``forgetting_is_real`` per seed."""

    def history(diffs_per_epoch):
        out = []
        for e, diffs in enumerate(diffs_per_epoch):
            err1 = [50.0 + k for k in range(len(diffs))]
            err2 = [a + d for a, d in zip(err1, diffs)]
            s = metrics.forgetting_summary(err1, err2)
            out.append({"epoch": e, "wpl_strength": 0.0, **s, "err1": err1, "err2": err2})
        return out

    # Epoch 0 before WPL; epochs 1, 2 with WPL. Seed 2 has no forgetting without WPL.
    by_seed = {
        0: {"without": history([[9, 9], [2, 0, 4], [4, 4, 4]]),     # mean d 2, 4: sum 6
            "with": history([[9, 9], [1, 1, 1], [0, 0, 3]])},         # 1, 1: sum 2 → 2/3
        1: {"without": history([[9, 9], [4, 4, 4], [1, 3, 2]]),     # 4, 2: sum 6
            "with": history([[9, 9], [3, 3, 3], [0, 0, 0]])},         # 3, 0: sum 3 → 1/2
        2: {"without": history([[9, 9], [0, 0, -3], [0, 0, 0]]),    # -1, 0: not real
            "with": history([[9, 9], [0, 0, 0], [0, 0, 0]])},
    }
    runs = {label: metrics.average_histories([by_seed[s][label] for s in by_seed])
            for label in ("without", "with")}
    fields = fs.reduction_fields(runs, by_seed, active=[1, 2])
    assert fields["forgetting_is_real_per_seed"] == {"0": True, "1": True, "2": False}
    # Seeds 0 and 1 (seed 2's reduction is NaN): mean 7/12, t(0.975, 1) = 12.7062047...
    r = [2.0 / 3.0, 0.5]
    half = 12.706204736174707 * (abs(r[0] - r[1]) / math.sqrt(2.0)) / math.sqrt(2.0)
    lo, hi = fields["mean_reduction_ci95"]
    assert (lo, hi) == (pytest.approx(7 / 12 - half), pytest.approx(7 / 12 + half))
    # Per-epoch standard error s/√n of the differences: [2, 0, 4] → s = 2, se = 2/√3;
    # [4, 4, 4] → 0; seed 0 without WPL averages them.
    seed0 = fields["per_seed"]["0"]
    assert seed0["mean_diff_se_without"] == pytest.approx((2.0 / math.sqrt(3.0) + 0.0) / 2)
    assert seed0["mean_diff_se_with"] == pytest.approx((0.0 + math.sqrt(3.0) / math.sqrt(3.0)) / 2)
    ses = [fields["per_seed"][s]["mean_diff_se_without"] for s in ("0", "1", "2")]
    assert fields["mean_diff_se"]["without"] == pytest.approx(sum(ses) / 3)
    json.dumps(finite_or_null(fields), allow_nan=False)
    # Histories without per-architecture errors (older runs) give NaN standard errors.
    plain = fs.seed_figures({"without": _history([5, 2, 4], [5, 3, 3], [9, 6, 6]),
                             "with": _history([5, 1, 1], [5, 3, 0], [9, 6, 9])}, [1, 2])
    assert math.isnan(plain["mean_diff_se_without"]) and math.isnan(plain["mean_diff_se_with"])
