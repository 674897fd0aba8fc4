"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    EPS, auc, binary_entropy, calibration, evaluate, log_loss, normalized_entropy, reliability_curve,
)

Y = [1, 0, 1, 0]
P = [0.9, 0.2, 0.6, 0.4]
# -(ln .9 + ln .8 + ln .6 + ln .6) / 4
LL = (0.10536051565782628 + 0.2231435513142097 + 0.5108256237659907 + 0.5108256237659907) / 4


def test_log_loss_by_hand():
    assert log_loss(Y, P) == pytest.approx(LL, rel=1e-12)
    assert log_loss([1], [0.5]) == pytest.approx(math.log(2))


def test_log_loss_is_clipped_not_infinite():
    # A confident wrong prediction costs -ln(eps), not inf.
    # (rel 1e-3: 1 - 1e-15 is not exact in float64)
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(EPS), rel=1e-3)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)


def test_binary_entropy_and_normalized_entropy_by_hand():
    assert binary_entropy(0.5) == pytest.approx(math.log(2))
    # base CTR 0.25: -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.5623351446188083
    assert binary_entropy(0.25) == pytest.approx(0.5623351446188083)
    assert normalized_entropy(Y, P) == pytest.approx(LL / math.log(2))
    # Predicting the base rate for everyone gives NE = 1 exactly.
    y = [1, 0, 0, 0]
    assert normalized_entropy(y, [0.25] * 4) == pytest.approx(1.0)
    assert math.isnan(normalized_entropy([0, 0], [0.1, 0.2]))


def test_auc_by_hand_with_ties():
    assert auc(Y, P) == 1.0
    assert auc([0, 1], [0.9, 0.1]) == 0.0
    # positives .8 and .3, negatives .8 .5 .1: pairs won 0.5+1+1 + 0+0+1 = 3.5 of 6
    assert auc([1, 0, 1, 0, 0], [0.8, 0.8, 0.3, 0.5, 0.1]) == pytest.approx(3.5 / 6)
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    pos, neg = p[y == 1], p[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(y, p) == pytest.approx(pairwise, rel=1e-12)


def test_calibration_by_hand():
    # mean p = 2.5 / 5 = 0.5, observed 2 / 5 = 0.4
    assert calibration([1, 0, 1, 0, 0], [0.8, 0.8, 0.3, 0.5, 0.1]) == pytest.approx(1.25)
    assert math.isnan(calibration([0, 0], [0.1, 0.1]))


def test_reliability_curve_uniform_by_hand():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.15, 0.55, 0.95, 1.0]
    curve = reliability_curve(y, p, n_bins=2, strategy="uniform")
    # bin [0, .5): p .05 .15 .15, y 0 0 1; bin [.5, 1]: p .55 .95 1.0, y 1 1 0
    assert curve["bin_lower"] == [0.0, 0.5] and curve["bin_upper"] == [0.5, 1.0]
    assert curve["count"] == [3, 3]
    assert curve["mean_predicted"] == pytest.approx([0.35 / 3, 2.5 / 3])
    assert curve["observed_rate"] == pytest.approx([1 / 3, 2 / 3])


def test_reliability_curve_drops_empty_bins_and_quantile_bins_balance():
    curve = reliability_curve([0, 1], [0.01, 0.02], n_bins=10, strategy="uniform")
    assert curve["count"] == [2]
    rng = np.random.default_rng(1)
    p = rng.random(1000) * 0.1
    y = (rng.random(1000) < p).astype(int)
    q = reliability_curve(y, p, n_bins=4)
    assert len(q["count"]) == 4 and sum(q["count"]) == 1000
    assert all(240 <= c <= 260 for c in q["count"])
    flat = reliability_curve([0, 1, 0], [0.3, 0.3, 0.3])  # all predictions equal
    assert flat["count"] == [3]
    with pytest.raises(ValueError):
        reliability_curve(y, p, strategy="kmeans")


def test_evaluate_collects_everything():
    m = evaluate(Y, P)
    assert m == {
        "n": 4, "positives": 2, "base_ctr": 0.5, "mean_predicted": pytest.approx(0.525),
        "log_loss": pytest.approx(LL), "normalized_entropy": pytest.approx(LL / math.log(2)),
        "auc": 1.0, "calibration": pytest.approx(1.05),
    }
    quiet = evaluate([0, 0, 0], [0.1, 0.2, 0.1])  # a window without clicks still evaluates
    assert quiet["positives"] == 0 and math.isnan(quiet["auc"]) and math.isnan(quiet["calibration"])


@pytest.mark.parametrize("y, p, message", [
    ([1, 0], [0.5], "differ in length"),
    ([], [], "at least one row"),
    ([2, 0], [0.5, 0.5], "0 or 1"),
    ([1, 0], [float("nan"), 0.5], "non-finite"),
    ([1, 0], [1.5, 0.5], r"\[0, 1\]"),
])
def test_bad_inputs_raise(y, p, message):
    with pytest.raises(ValueError, match=message):
        evaluate(y, p)
