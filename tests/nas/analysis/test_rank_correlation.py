"""Kendall's τ_b and Spearman's ρ against hand-computed cases and scipy."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from wpl_keras.nas.analysis.rank_correlation import average_ranks, kendall_tau, spearman_rho


def test_hand_computed_case_without_ties():
    # x ranks 1 2 3 4 5, y ranks 3 1 2 5 4. Pairs (10): discordant (1,2) (1,3) (4,5) -> D = 3,
    # C = 7, tau = 4/10. Rank differences 2 1 1 1 1 -> sum d^2 = 8, rho = 1 - 6*8/(5*24) = 0.6.
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [30.0, 10.0, 20.0, 50.0, 40.0]
    assert kendall_tau(x, y) == pytest.approx(0.4)
    assert spearman_rho(x, y) == pytest.approx(0.6)


def test_hand_computed_case_with_ties():
    # x = 1 2 2 3, y = 1 3 2 2. Pairs by index:
    # (0,1): dx+ dy+ C; (0,2): C; (0,3): C; (1,2): dx 0, dy - -> tie x only;
    # (1,3): dx+ dy- D; (2,3): dx+ dy 0 -> tie y only.
    # tau_b = (3 - 1) / sqrt((4 + 1)(4 + 1)) = 0.4.
    x = [1.0, 2.0, 2.0, 3.0]
    y = [1.0, 3.0, 2.0, 2.0]
    assert kendall_tau(x, y) == pytest.approx(0.4)
    # ranks x: 1 2.5 2.5 4; y: 1 4 2.5 2.5; centred: -1.5 0 0 1.5 / -1.5 1.5 0 0.
    # rho = 2.25 / sqrt(4.5 * 4.5) = 0.5.
    assert spearman_rho(x, y) == pytest.approx(0.5)
    np.testing.assert_allclose(average_ranks([5.0, 1.0, 5.0, 3.0]), [3.5, 1.0, 3.5, 2.0])


def test_same_and_reversed_order_and_scale_invariance():
    x = [0.3, 0.1, 0.9, 0.5]
    assert kendall_tau(x, [3, 1, 9, 5]) == pytest.approx(1.0)
    assert spearman_rho(x, np.exp(np.array(x))) == pytest.approx(1.0)
    assert kendall_tau(x, [-v for v in x]) == pytest.approx(-1.0)
    assert spearman_rho(x, [-v for v in x]) == pytest.approx(-1.0)


def test_constant_scoring_has_no_order():
    assert math.isnan(kendall_tau([1, 2, 3], [4, 4, 4]))
    assert math.isnan(spearman_rho([1, 2, 3], [4, 4, 4]))


@pytest.mark.parametrize("x, y, match", [
    ([1, 2, 3], [1, 2], "one length"),
    ([1], [1], "at least 2"),
    ([1, float("nan")], [1, 2], "finite"),
    ([1, 2], [1, float("inf")], "finite"),
    ([[1, 2], [3, 4]], [[1, 2], [3, 4]], "1-D"),
])
def test_bad_input_is_refused(x, y, match):
    with pytest.raises(ValueError, match=match):
        kendall_tau(x, y)
    with pytest.raises(ValueError, match=match):
        spearman_rho(x, y)


def test_agrees_with_scipy_on_random_scorings_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 15))
        x = rng.integers(0, 5, n).astype(float)
        y = rng.integers(0, 5, n).astype(float)
        want_tau = stats.kendalltau(x, y).statistic
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on a constant input (NaN result)
            want_rho = stats.spearmanr(x, y).statistic
        got_tau, got_rho = kendall_tau(x, y), spearman_rho(x, y)
        if math.isnan(want_tau):
            assert math.isnan(got_tau)
        else:
            assert got_tau == pytest.approx(want_tau)
        if math.isnan(want_rho):
            assert math.isnan(got_rho)
        else:
            assert got_rho == pytest.approx(want_rho)
