"""Forgetting metrics on hand-made numbers."""

import math
import os

import numpy as np
import pytest

from wpl_keras.nas import metrics


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
              "mean_err2": 11.0, "alpha": 0.0},
             {"mean_diff": -4.0, "best5_diff": 0.0, "max_diff": 5.0, "mean_err1": 8.0,
              "mean_err2": 4.0, "alpha": 60.0}]
    seed1 = [{"mean_diff": 3.0, "best5_diff": 4.0, "max_diff": 1.0, "mean_err1": 20.0,
              "mean_err2": 23.0, "alpha": 0.0},
             {"mean_diff": 6.0, "best5_diff": 2.0, "max_diff": 7.0, "mean_err1": 6.0,
              "mean_err2": 12.0, "alpha": 60.0}]
    avg = metrics.average_histories([seed0, seed1])
    assert [r["epoch"] for r in avg] == [0, 1] and avg[1]["alpha"] == 60.0
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
    assert r["mean_reduction"] == pytest.approx((0.5 + 0.9) / 2)
    assert r["mean_reduction_pooled"] == pytest.approx((15.0 - 3.5) / 15.0)
    assert r["mean_without"] == pytest.approx(15.0) and r["mean_with"] == pytest.approx(3.5)
    # Epoch 2 has best5 d_without = 0 (NaN reduction), so only epoch 1 counts.
    assert r["best5_reduction"] == pytest.approx(0.75)
    assert r["best5_reduction_epochs"] == 1 and r["mean_reduction_epochs"] == 2
    assert r["max_reduction"] == pytest.approx(0.25)
    # Negative d_without (the errors improved) is skipped, not averaged in with a flipped sign.
    neg = metrics.reductions_over_epochs(
        [{"mean_diff": -4.0}, {"mean_diff": 2.0}], [{"mean_diff": -8.0}, {"mean_diff": 1.0}],
        keys=("mean_diff",),
    )
    assert neg["mean_reduction"] == pytest.approx(0.5) and neg["mean_reduction_epochs"] == 1
    assert math.isnan(neg["mean_reduction_pooled"])  # averaged d_without is -1
    with pytest.raises(ValueError, match="different lengths"):
        metrics.reductions_over_epochs(without, with_wpl[:2])
    with pytest.raises(ValueError, match="outside"):
        metrics.reductions_over_epochs(without, with_wpl, epochs=[3])


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
