"""Forgetting metrics on hand-made numbers."""

import math
import os

import numpy as np
import pytest

from wpl_keras.nas.analysis import metrics


def test_differences_are_err2_minus_err1():
    d = metrics.forgetting_differences([10.0, 20.0, 30.0], [12.0, 19.0, 36.0])
    np.testing.assert_allclose(d, [2.0, -1.0, 6.0])


def test_differences_reject_bad_input():
    with pytest.raises(ValueError, match="pair up"):
        metrics.forgetting_differences([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        metrics.forgetting_differences([], [])
    with pytest.raises(ValueError, match="NaN"):
        metrics.forgetting_differences([1.0, float("nan")], [1.0, 2.0])


def test_summary_mean_best5_max():
    err1 = [100.0, 50.0, 80.0, 60.0, 70.0, 90.0, 55.0]
    err2 = [101.0, 60.0, 80.0, 63.0, 74.0, 130.0, 57.0]
    # d = [1, 10, 0, 3, 4, 40, 2]; lowest err1: 50 (10), 55 (2), 60 (3), 70 (4), 80 (0)
    s = metrics.forgetting_summary(err1, err2)
    assert s["mean_diff"] == pytest.approx(60.0 / 7)
    assert s["best5_diff"] == pytest.approx((10 + 2 + 3 + 4 + 0) / 5)
    assert s["max_diff"] == pytest.approx(40.0)
    assert s["num_archs"] == 7
    assert s["mean_err1"] == pytest.approx(np.mean(err1))
    # Fewer than best_k architectures: best-k is the mean of all.
    s2 = metrics.forgetting_summary([1.0, 2.0], [2.0, 5.0], best_k=5)
    assert s2["best5_diff"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="best_k"):
        metrics.forgetting_summary([1.0], [1.0], best_k=0)


def test_reduction():
    assert metrics.reduction(10.0, 1.0) == pytest.approx(0.9)
    assert metrics.reduction(10.0, 10.0) == pytest.approx(0.0)
    assert metrics.reduction(4.0, 6.0) == pytest.approx(-0.5)
    assert math.isnan(metrics.reduction(0.0, 1.0))
    assert math.isnan(metrics.reduction(-5.0, -1.0))  # no forgetting: nothing to reduce


def test_average_histories_is_the_per_epoch_mean_over_runs():
    seed0 = [{"mean_diff": 1.0, "best5_diff": 2.0, "max_diff": 3.0, "mean_err1": 10.0,
              "mean_err2": 11.0, "wpl_strength": 0.0},
             {"mean_diff": -4.0, "best5_diff": 0.0, "max_diff": 5.0, "mean_err1": 8.0,
              "mean_err2": 4.0, "wpl_strength": 60.0}]
    seed1 = [{"mean_diff": 3.0, "best5_diff": 4.0, "max_diff": 1.0, "mean_err1": 20.0,
              "mean_err2": 23.0, "wpl_strength": 0.0},
             {"mean_diff": 6.0, "best5_diff": 2.0, "max_diff": 7.0, "mean_err1": 6.0,
              "mean_err2": 12.0, "wpl_strength": 60.0}]
    avg = metrics.average_histories([seed0, seed1])
    assert [r["epoch"] for r in avg] == [0, 1] and avg[1]["wpl_strength"] == 60.0
    assert avg[0]["mean_diff"] == pytest.approx(2.0) and avg[1]["mean_diff"] == pytest.approx(1.0)
    assert avg[1]["max_diff"] == pytest.approx(6.0) and avg[0]["mean_err1"] == pytest.approx(15.0)
    # One run averages to itself.
    assert metrics.average_histories([seed0])[1]["best5_diff"] == 0.0
    with pytest.raises(ValueError, match="different numbers of epochs"):
        metrics.average_histories([seed0, seed1[:1]])
    with pytest.raises(ValueError, match="no runs"):
        metrics.average_histories([])


def test_reductions_over_epochs():
    without = [
        {"mean_diff": 1.0, "best5_diff": 1.0, "max_diff": 1.0},
        {"mean_diff": 10.0, "best5_diff": 4.0, "max_diff": 20.0},
        {"mean_diff": 20.0, "best5_diff": 0.0, "max_diff": 40.0},
    ]
    with_wpl = [
        {"mean_diff": 1.0, "best5_diff": 1.0, "max_diff": 1.0},
        {"mean_diff": 5.0, "best5_diff": 1.0, "max_diff": 10.0},
        {"mean_diff": 2.0, "best5_diff": 3.0, "max_diff": 40.0},
    ]
    r = metrics.reductions_over_epochs(without, with_wpl, epochs=[1, 2])
    # Headline: 1 - sum(with) / sum(without) over epochs 1..2.
    assert r["mean_reduction"] == pytest.approx(1.0 - (5.0 + 2.0) / (10.0 + 20.0))
    assert r["mean_reduction_per_epoch"] == pytest.approx((0.5 + 0.9) / 2)
    assert r["mean_without"] == pytest.approx(15.0) and r["mean_with"] == pytest.approx(3.5)
    assert r["mean_reduction"] == pytest.approx(1.0 - r["mean_with"] / r["mean_without"])
    # best5: the pooled sums are 4 and 4 (no reduction); epoch 2 has d_without = 0, so the
    # per-epoch mean uses epoch 1 only.
    assert r["best5_reduction"] == pytest.approx(0.0) and r["best5_reduction_epochs"] == 2
    assert r["best5_reduction_per_epoch"] == pytest.approx(0.75)
    assert r["best5_reduction_per_epoch_epochs"] == 1 and r["mean_reduction_per_epoch_epochs"] == 2
    assert r["max_reduction"] == pytest.approx(1.0 - 50.0 / 60.0)
    assert r["max_reduction_per_epoch"] == pytest.approx(0.25)
    # The old "pooled" keys were the same quantity as the headline now: they are gone.
    assert not any(k.endswith("_pooled") for k in r)
    assert all(isinstance(v, (int, float)) for v in r.values())
    # Default epochs: all of them.
    all_epochs = metrics.reductions_over_epochs(without, with_wpl, keys=("mean_diff",))
    assert all_epochs["mean_reduction"] == pytest.approx(1.0 - 8.0 / 31.0)
    assert all_epochs["mean_reduction_epochs"] == 3
    with pytest.raises(ValueError, match="different lengths"):
        metrics.reductions_over_epochs(without, with_wpl[:2])
    with pytest.raises(ValueError, match="outside"):
        metrics.reductions_over_epochs(without, with_wpl, epochs=[3])
    with pytest.raises(ValueError, match="no epochs"):
        metrics.reductions_over_epochs(without, with_wpl, epochs=[])


def _runs(d_without, d_with, key="mean_diff"):
    return [{key: x} for x in d_without], [{key: y} for y in d_with]


def test_pooled_reduction_is_not_dominated_by_a_tiny_denominator():
    # Epoch 0 barely forgets without WPL (0.01) and forgets 1.0 with it: its per-epoch ratio is
    # -99 and drags the per-epoch mean to about -32.7; the pooled ratio weighs it by its amount.
    r = metrics.reductions_over_epochs(*_runs([0.01, 10.0, 10.0], [1.0, 5.0, 5.0]),
                                       keys=("mean_diff",))
    assert r["mean_reduction_per_epoch"] == pytest.approx((-99.0 + 0.5 + 0.5) / 3)
    assert r["mean_reduction"] == pytest.approx(1.0 - 11.0 / 20.01)
    # The other sign: WPL turns a tiny forgetting into a gain, the per-epoch mean exceeds 1
    # (201 and 0.5 average to 100.75) while the pooled reduction stays below 1.
    r = metrics.reductions_over_epochs(*_runs([0.01, 10.0], [-2.0, 5.0]), keys=("mean_diff",))
    assert r["mean_reduction_per_epoch"] == pytest.approx((201.0 + 0.5) / 2)
    assert r["mean_reduction"] == pytest.approx(1.0 - 3.0 / 10.01)
    assert r["mean_reduction"] < 1.0 < r["mean_reduction_per_epoch"]
    # Direct form, and its equality with the reduction of the epoch means.
    assert metrics.pooled_reduction([4.0, 6.0], [1.0, 2.0]) == pytest.approx(0.7)
    assert metrics.pooled_reduction([4.0, 6.0], [1.0, 2.0]) == pytest.approx(
        metrics.reduction(5.0, 1.5))
    # Removing more than all forgetting (WPL improves the errors) gives more than 1, by design.
    assert metrics.pooled_reduction([2.0, 2.0], [-1.0, -1.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="pair them by epoch"):
        metrics.pooled_reduction([1.0, 2.0], [1.0])


def test_pooled_reduction_is_nan_without_forgetting_and_says_why():
    # Sum without WPL is -2 (one epoch improved by 4, one forgot 2): nothing to reduce, even
    # though the one positive epoch alone gives a per-epoch reduction of 0.5.
    r = metrics.reductions_over_epochs(*_runs([-4.0, 2.0], [-8.0, 1.0]), keys=("mean_diff",))
    assert math.isnan(r["mean_reduction"]) and r["mean_reduction_epochs"] == 2
    assert r["mean_reduction_per_epoch"] == pytest.approx(0.5)
    assert r["mean_reduction_per_epoch_epochs"] == 1
    reasons = metrics.nan_reasons(r, keys=("mean_diff",))
    assert list(reasons) == ["mean_reduction"]
    assert "over 2 epochs is -2 <= 0" in reasons["mean_reduction"]
    # A sum of exactly zero is NaN too, and so is the per-epoch mean with no positive epoch.
    zero = metrics.reductions_over_epochs(*_runs([2.0, -2.0], [0.0, 0.0]), keys=("mean_diff",))
    assert math.isnan(zero["mean_reduction"]) and zero["mean_reduction_per_epoch"] == 1.0
    none = metrics.reductions_over_epochs(*_runs([-1.0, 0.0], [0.0, 0.0]), keys=("mean_diff",))
    assert math.isnan(none["mean_reduction"]) and math.isnan(none["mean_reduction_per_epoch"])
    assert none["mean_reduction_per_epoch_epochs"] == 0
    assert "no epoch has mean_diff > 0" in metrics.nan_reasons(
        none, keys=("mean_diff",))["mean_reduction_per_epoch"]
    assert math.isnan(metrics.pooled_reduction([0.0], [0.0]))
    assert math.isnan(metrics.pooled_reduction([], []))
    # Numbers everywhere: no reason.
    assert metrics.nan_reasons(metrics.reductions_over_epochs(
        *_runs([2.0], [1.0]), keys=("mean_diff",)), keys=("mean_diff",)) == {}


def test_nan_epochs_are_left_out_of_both_sums():
    nan, inf = float("nan"), float("inf")
    # Epoch 1 has no value without WPL, epoch 2 none with it, epoch 4 an Inf: only epochs 0
    # and 3 pair up: 1 - (4 + 2) / (10 + 4).
    r = metrics.reductions_over_epochs(
        *_runs([10.0, nan, 6.0, 4.0, inf], [4.0, 1.0, nan, 2.0, 1.0]), keys=("mean_diff",))
    assert r["mean_reduction"] == pytest.approx(1.0 - 6.0 / 14.0)
    assert r["mean_reduction_epochs"] == 2
    assert r["mean_reduction_per_epoch"] == pytest.approx((0.6 + 0.5) / 2)
    assert r["mean_reduction_per_epoch_epochs"] == 2
    assert (r["mean_without"], r["mean_with"]) == (7.0, 3.0)
    assert metrics.pooled_reduction([10.0, nan, 4.0], [4.0, 1.0, 2.0]) == pytest.approx(
        1.0 - 6.0 / 14.0)
    # Every epoch NaN in one of the runs: NaN, with the reason.
    bad = metrics.reductions_over_epochs(*_runs([nan, 3.0], [1.0, nan]), keys=("mean_diff",))
    assert math.isnan(bad["mean_reduction"]) and bad["mean_reduction_epochs"] == 0
    assert math.isnan(bad["mean_without"]) and math.isnan(bad["mean_with"])
    reasons = metrics.nan_reasons(bad, keys=("mean_diff",))
    assert "no epoch has a finite mean_diff in both runs" in reasons["mean_reduction"]
    assert "mean_reduction_per_epoch" in reasons
    assert math.isnan(metrics.reduction(5.0, nan))


def test_seed_spread_is_mean_and_population_std_of_finite_seeds():
    s = metrics.seed_spread([0.2, 0.6])
    assert s["mean"] == pytest.approx(0.4) and s["std"] == pytest.approx(0.2) and s["seeds"] == 2
    s = metrics.seed_spread([float("nan"), 0.3, 0.5, 0.7])
    assert s["mean"] == pytest.approx(0.5) and s["seeds"] == 3
    assert s["std"] == pytest.approx(math.sqrt(((0.2) ** 2 + 0 + 0.2 ** 2) / 3))
    one = metrics.seed_spread([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["std"]) and one["seeds"] == 1
    empty = metrics.seed_spread([float("nan")])
    assert math.isnan(empty["mean"]) and math.isnan(empty["std"]) and empty["seeds"] == 0


def test_finite_mean_leaves_out_nan_and_inf():
    assert metrics.finite_mean([float("nan"), float("inf"), 1.0, 3.0]) == 2.0
    assert metrics.finite_mean(x for x in (4.0, -float("inf"))) == 4.0  # any iterable
    assert math.isnan(metrics.finite_mean([])) and math.isnan(metrics.finite_mean([math.nan]))


def test_mean_difference_se_is_the_sample_std_over_root_n():
    # d = [2, 0, 5]: mean 7/3, sample variance ((1/3)² + (7/3)² + (8/3)²) / 2 = 19/3.
    got = metrics.mean_difference_se([10, 20, 30], [12, 20, 35])
    assert got == pytest.approx(math.sqrt(19.0 / 3.0) / math.sqrt(3.0))
    assert metrics.mean_difference_se([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert math.isnan(metrics.mean_difference_se([10.0], [12.0]))  # one architecture
    with pytest.raises(ValueError, match="they must pair up"):
        metrics.mean_difference_se([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        metrics.mean_difference_se([1.0, float("nan")], [1.0, 2.0])


def test_seed_interval_is_the_student_t_interval_of_the_mean():
    # Five seeds: mean 0.36, sample std 0.2408..., t(0.975, 4) = 2.7764451051977987.
    values = [0.1, 0.5, 0.3, 0.7, 0.2]
    s = math.sqrt(sum((v - 0.36) ** 2 for v in values) / 4)
    half = 2.7764451051977987 * s / math.sqrt(5)
    assert metrics.seed_interval(values) == [pytest.approx(0.36 - half),
                                             pytest.approx(0.36 + half)]
    # A NaN seed is left out; 90% uses t(0.95, 1) = 6.313751514675041.
    lo, hi = metrics.seed_interval([0.2, float("nan"), 0.6], confidence=0.9)
    half = 6.313751514675041 * (0.4 / math.sqrt(2)) / math.sqrt(2)
    assert (lo, hi) == (pytest.approx(0.4 - half), pytest.approx(0.4 + half))
    assert all(math.isnan(x) for x in metrics.seed_interval([0.5, float("nan")]))
    assert metrics.seed_spread(values)["ci95"] == metrics.seed_interval(values)
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="seed_interval: confidence"):
            metrics.seed_interval(values, confidence=bad)


def test_reductions_over_seeds():
    def pair(without, with_wpl):
        w, v = _runs(without, with_wpl)
        return {"without": w, "with": v}

    by_seed = {"0": pair([10.0, 10.0], [2.0, 4.0]),  # 1 - 6/20 = 0.7
               "1": pair([1.0, 3.0], [1.0, 2.0]),  # 1 - 3/4 = 0.25
               "2": pair([-1.0, 0.0], [0.0, 0.0])}  # sum without <= 0: NaN, left out
    r = metrics.reductions_over_seeds(by_seed, keys=("mean_diff",))
    assert r["mean_reduction_per_seed"]["0"] == pytest.approx(0.7)
    assert r["mean_reduction_per_seed"]["1"] == pytest.approx(0.25)
    assert math.isnan(r["mean_reduction_per_seed"]["2"])
    assert r["mean_reduction_seed_mean"] == pytest.approx(0.475)
    assert r["mean_reduction_std"] == pytest.approx(0.225) and r["mean_reduction_seeds"] == 2
    assert r["mean_reduction_ci95"] == metrics.seed_interval([0.7, 0.25])
    # Restricted to epoch 1: 1 - 4/10 and 1 - 2/3.
    r1 = metrics.reductions_over_seeds(by_seed, epochs=[1], keys=("mean_diff",))
    assert r1["mean_reduction_per_seed"]["0"] == pytest.approx(0.6)
    assert r1["mean_reduction_per_seed"]["1"] == pytest.approx(1.0 / 3.0)
    # The headline on seed-averaged differences pools the amounts of all seeds (0.625 here),
    # which is not the mean of the seeds' reductions (0.475).
    avg = {label: metrics.average_histories([by_seed[s][label] for s in ("0", "1")],
                                            keys=("mean_diff",))
           for label in ("without", "with")}
    pooled = metrics.reductions_over_epochs(avg["without"], avg["with"], keys=("mean_diff",))
    assert pooled["mean_reduction"] == pytest.approx(1.0 - 4.5 / 12.0)
    # Default keys give every spread key; errors name the problem.
    full = metrics.reductions_over_seeds(
        {"7": {"without": [{"mean_diff": 2.0, "best5_diff": 2.0, "max_diff": 4.0}],
               "with": [{"mean_diff": 1.0, "best5_diff": 0.0, "max_diff": 1.0}]}})
    assert full["best5_reduction_per_seed"] == {"7": 1.0}
    assert full["max_reduction_seed_mean"] == pytest.approx(0.75)
    assert math.isnan(full["max_reduction_std"]) and full["mean_reduction_seeds"] == 1
    with pytest.raises(ValueError, match="no seeds"):
        metrics.reductions_over_seeds({})
    with pytest.raises(ValueError, match="seed 3 needs a 'without' and a 'with' run"):
        metrics.reductions_over_seeds({"3": {"without": []}})


def test_plot_forgetting_writes_png(tmp_path, monkeypatch):
    recs = [{"epoch": e, "mean_diff": e, "best5_diff": 1.0, "max_diff": 2.0 * e} for e in range(3)]
    path = metrics.plot_forgetting(
        {"without WPL": recs, "with WPL": recs}, str(tmp_path / "fig3.png"), wpl_start_epoch=1
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # first_epoch leaves the early epochs out of the drawn lines.
    import matplotlib.figure

    drawn = []
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn.extend(list(line.get_xdata()) for ax in fig.axes for line in ax.get_lines()
                     if line.get_label() == "without WPL")
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    metrics.plot_forgetting({"without WPL": recs}, str(tmp_path / "late.png"), first_epoch=1)
    assert len(drawn) == 3 and all(x == [1, 2] for x in drawn)
    with pytest.raises(ValueError):
        metrics.plot_forgetting({}, str(tmp_path / "x.png"))


def test_forgetting_by_rate_and_plot(tmp_path):
    def hist(best5):
        return [{"epoch": e, "best5_diff": b, "mean_diff": b, "mean_err1": 100.0 - e}
                for e, b in enumerate(best5)]

    runs = {(0.0, False): hist([9, 4, 4]), (0.0, True): hist([9, 1, 3]),
            (0.5, False): hist([9, 2, 2]), (0.5, True): hist([9, 3, 3])}
    out = metrics.forgetting_by_rate(runs, wpl_start_epoch=1)
    assert out["rates"]["0"]["best5_without"] == 4.0
    assert out["rates"]["0"]["best5_with"] == 2.0
    assert out["rates"]["0"]["wpl_lower"] == 1
    assert out["rates"]["0.5"]["wpl_lower"] == 0
    assert out["wpl_lower_at_all_rates"] == 0
    path = metrics.plot_figure4(runs, str(tmp_path / "fig4.png"))
    assert os.path.getsize(path) > 1000
    with pytest.raises(ValueError, match="with and a run without"):
        metrics.forgetting_by_rate({(0.0, True): hist([1])}, 0)


def test_epochs_after_start_keeps_later_epochs_or_all():
    hist = [{"epoch": e} for e in range(4)]
    assert [r["epoch"] for r in metrics.epochs_after_start(hist, 2)] == [2, 3]
    assert [r["epoch"] for r in metrics.epochs_after_start(hist, 0)] == [0, 1, 2, 3]
    # No epoch qualifies: every record is kept (a run shorter than the WPL start).
    assert [r["epoch"] for r in metrics.epochs_after_start(hist, 9)] == [0, 1, 2, 3]


def test_forgetting_by_rate_reduction_and_all_rates(tmp_path):
    def hist(best5, mean):
        return [{"epoch": e, "best5_diff": b, "mean_diff": m, "mean_err1": 50.0}
                for e, (b, m) in enumerate(zip(best5, mean))]

    runs = {(0.25, False): hist([0, 4, 8], [1, 2, 2]), (0.25, True): hist([0, 1, 3], [1, 1, 0])}
    row = metrics.forgetting_by_rate(runs, wpl_start_epoch=1)["rates"]["0.25"]
    # Without WPL the best-5 mean over epochs 1..2 is 6, with WPL 2: reduction (6 - 2) / 6.
    assert (row["best5_without"], row["best5_with"]) == (6.0, 2.0)
    assert row["best5_reduction"] == pytest.approx(4.0 / 6.0)
    assert (row["mean_diff_without"], row["mean_diff_with"]) == (2.0, 0.5)
    assert row["mean_ppl_without"] == row["mean_ppl_with"] == 50.0
    assert metrics.forgetting_by_rate(runs, 1)["wpl_lower_at_all_rates"] == 1
    with pytest.raises(ValueError, match="at least one run"):
        metrics.plot_figure4({}, str(tmp_path / "none.png"))


def test_forgetting_by_rate_pools_over_paired_epochs():
    def hist(best5, mean, first=0):
        return [{"epoch": first + e, "best5_diff": b, "mean_diff": m, "mean_err1": 80.0 + e}
                for e, (b, m) in enumerate(zip(best5, mean))]

    # Epochs 1..3 count; epoch 2 is NaN in the run with WPL, so it is left out of both sums.
    runs = {(0.5, False): hist([9, 0.01, 5, 10], [9, 4, 4, 6]),
            (0.5, True): hist([9, 1.0, float("nan"), 5], [9, 1, 1, 3])}
    row = metrics.forgetting_by_rate(runs, wpl_start_epoch=1)["rates"]["0.5"]
    assert row["best5_reduction"] == pytest.approx(1.0 - 6.0 / 10.01)
    assert row["best5_reduction_per_epoch"] == pytest.approx((-99.0 + 0.5) / 2)
    assert (row["best5_without"], row["best5_with"]) == (pytest.approx(10.01 / 2), 3.0)
    assert row["mean_reduction"] == pytest.approx(1.0 - 5.0 / 14.0)
    assert row["mean_reduction_per_epoch"] == pytest.approx((0.75 + 0.75 + 0.5) / 3)
    assert row["wpl_lower"] == 1
    # A rate whose runs without forgetting: reduction NaN, and WPL is not lower.
    flat = {(0.0, False): hist([0, -1, -1], [0, 0, 0]), (0.0, True): hist([0, -1, -1], [0, 0, 0])}
    out = metrics.forgetting_by_rate(flat, wpl_start_epoch=1)
    assert math.isnan(out["rates"]["0"]["best5_reduction"])
    assert out["rates"]["0"]["wpl_lower"] == 0 and out["wpl_lower_at_all_rates"] == 0
    # The two runs of a rate must cover the same epochs from the WPL start on.
    with pytest.raises(ValueError, match="cover different epochs"):
        metrics.forgetting_by_rate({(0.0, False): hist([1, 2, 3], [1, 2, 3]),
                                    (0.0, True): hist([1, 2], [1, 2])}, wpl_start_epoch=1)
