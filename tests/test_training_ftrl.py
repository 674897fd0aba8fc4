"""The FTRL-Proximal engine: its optimum against scikit-learn, determinism, warm-start
continuation, downsampling recalibration, state round trip through the model files, and the
work budget."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from training_support import hashed_problem
from training.artifacts import load_engine_state, load_model_dir, save_model_dir
from training.ftrl import FTRLLogisticRegression, FTRLState
from training.params import ParameterError


def _objective(X, y, w, b, lam):
    m = X @ w + b
    return float(np.sum(np.logaddexp(0.0, m) - y * m) + 0.5 * lam * w @ w)


def test_l2_optimum_matches_scikit_learn():
    """P passes of FTRL with l2 = lam * P minimise sum-loss + lam/2 |w|^2 (the gradients of
    P passes add up P times): the same problem as LogisticRegression(C = 1 / lam)."""
    rng = np.random.default_rng(0)
    X = sp.random(3000, 64, density=0.15, random_state=1, format="csr", dtype=np.float64)
    X.data[:] = 1.0
    p = 1.0 / (1.0 + np.exp(-(X @ rng.normal(0.0, 1.0, 64) - 1.0)))
    y = (rng.random(3000) < p).astype(int)
    lam, passes = 2.0, 200
    ref = LogisticRegression(C=1.0 / lam, tol=1e-10, max_iter=10_000).fit(X, y)
    est = FTRLLogisticRegression(alpha=0.5, l2=lam * passes, passes=passes).fit(X, y)
    w = np.zeros(64)
    w[est.indices_] = est.weights_
    best = _objective(X, y, ref.coef_.ravel(), ref.intercept_[0], lam)
    assert _objective(X, y, w, est.raw_intercept_, lam) <= best * 1.01
    assert np.abs(est.predict_proba(X)[:, 1] - ref.predict_proba(X)[:, 1]).mean() < 0.03


def test_deterministic_for_a_seed():
    X, y, _ = hashed_problem(5000, seed=3)
    a = FTRLLogisticRegression(passes=2, downsample_rate=0.5, random_state=7).fit(X, y)
    b = FTRLLogisticRegression(passes=2, downsample_rate=0.5, random_state=7).fit(X, y)
    c = FTRLLogisticRegression(passes=2, downsample_rate=0.5, random_state=8).fit(X, y)
    assert np.array_equal(a.indices_, b.indices_) and np.array_equal(a.weights_, b.weights_)
    assert a.intercept_ == b.intercept_
    assert not np.array_equal(a.state_.z, c.state_.z)  # another seed keeps other negatives


def test_one_pass_over_a_then_b_equals_one_pass_over_a_plus_b():
    """The plain online learner (rows in the order given, no exact intercept): continuing a
    state is one longer pass."""
    X, y, _ = hashed_problem(6000, seed=4)
    plain = dict(alpha=0.2, l1=0.5, l2=1.0, shuffle=False, exact_intercept=False)
    whole = FTRLLogisticRegression(**plain).fit(X, y)
    part = FTRLLogisticRegression(**plain).fit(X[:3500], y[:3500])
    part.partial_fit(X[3500:], y[3500:])
    assert np.array_equal(whole.state_.z, part.state_.z) and np.array_equal(whole.state_.n, part.state_.n)
    assert np.array_equal(whole.weights_, part.weights_) and whole.intercept_ == part.intercept_
    assert part.state_.rows_seen == 6000


def test_downsampling_is_recalibrated():
    X, y, p = hashed_problem(60_000, seed=5)
    full = FTRLLogisticRegression(alpha=0.1, l2=1.0, passes=2).fit(X, y)
    down = FTRLLogisticRegression(alpha=0.1, l2=1.0, passes=2, downsample_rate=0.2, random_state=0).fit(X, y)
    assert down.n_fit_rows_ < 0.3 * down.n_train_rows_
    assert down.intercept_ == pytest.approx(down.raw_intercept_ + math.log(0.2))
    # the recalibrated mean prediction matches the click rate; the raw one would overstate it ~4x
    mean_down = down.predict_proba(X)[:, 1].mean()
    assert mean_down == pytest.approx(y.mean(), rel=0.1)
    assert mean_down == pytest.approx(full.predict_proba(X)[:, 1].mean(), rel=0.1)


def test_state_round_trips_through_the_model_files(tmp_path):
    X, y, _ = hashed_problem(4000, seed=6)
    est = FTRLLogisticRegression(alpha=0.1, l1=0.2, passes=2).fit(X[:2000], y[:2000])
    d = save_model_dir(est, "version = 1\nname = \"t\"\nbits = 12\n[[fields]]\nname = \"a\"\nkind = \"categorical\"\n",
                       "fp", tmp_path / "m", engine_state=est.state_.to_arrays())
    arrays = load_engine_state(d)
    back = FTRLLogisticRegression.from_state(FTRLState.from_arrays(arrays), alpha=0.1, l1=0.2, passes=2)
    assert np.array_equal(back.weights_, est.weights_) and back.intercept_ == est.intercept_
    loaded = load_model_dir(d)
    assert np.array_equal(loaded.indices, est.indices_)
    # continuing the round-tripped state equals continuing the original
    back.partial_fit(X[2000:], y[2000:])
    est.partial_fit(X[2000:], y[2000:])
    assert np.array_equal(back.state_.z, est.state_.z)


def test_work_budget_stops_a_fit():
    X, y, _ = hashed_problem(200_000, seed=7)
    est = FTRLLogisticRegression(passes=1000).fit(X, y, deadline=time.monotonic() + 0.2)
    assert est.stopped_early_ and not est.converged_
    assert est.state_.rows_seen < 1000 * 200_000
    assert not FTRLLogisticRegression(passes=1).fit(X[:1000], y[:1000]).stopped_early_


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0.0), "alpha"), (dict(l2=-1.0), "l2"), (dict(passes=0), "passes"),
    (dict(passes=2.5), "passes"), (dict(downsample_rate=0.0), "downsample_rate"), (dict(shuffle=3), "shuffle"),
])
def test_parameters_checked_against_their_declared_constraints(kwargs, message):
    X, y, _ = hashed_problem(200, seed=1)
    with pytest.raises(ParameterError, match=message):
        FTRLLogisticRegression(**kwargs).fit(X, y)


def test_blocks_and_row_selections_fit_as_the_stacked_matrix_would():
    X, y, _ = hashed_problem(5000, seed=11)
    stacked = FTRLLogisticRegression(passes=3, downsample_rate=0.5, random_state=3, shuffle=False).fit(X, y)
    blocks = FTRLLogisticRegression(passes=3, downsample_rate=0.5, random_state=3, shuffle=False).fit(
        [X[:1200], X[1200:4000], X[4000:]], [y[:1200], y[1200:4000], y[4000:]])
    assert np.array_equal(stacked.state_.z, blocks.state_.z) and stacked.intercept_ == blocks.intercept_
    rows = np.sort(np.random.default_rng(0).choice(5000, 2000, replace=False))
    copied = FTRLLogisticRegression(passes=2).fit(X[rows], y[rows])
    selected = FTRLLogisticRegression(passes=2).fit(X, y, rows=rows)
    assert np.array_equal(copied.state_.z, selected.state_.z)
    with pytest.raises(ValueError, match="sorted"):
        FTRLLogisticRegression().fit(X, y, rows=rows[::-1])


def test_shuffled_passes_learn_a_feature_constant_over_a_stretch_of_time():
    """Seven 'days' in time order, each with its own day indicator and click rate, and a
    feature whose effect is the same every day. Visited in time order, the intercept and the
    other weights follow each day's level and the day weights do not take it: the fitted
    model is miscalibrated per day on its own training rows. Shuffled (the default), each
    day's predicted clicks match its clicks, and the fit is deterministic."""
    rng = np.random.default_rng(5)
    day_effect = np.array([0.0, 0.3, 0.3, 0.0, -0.2, -0.5, -0.4])
    per_day, blocks, labels = 20_000, [], []
    for d, e in enumerate(day_effect):
        other = rng.integers(0, 50, per_day)
        logit = -3.5 + e + 0.02 * (other - 25)
        labels.append((rng.random(per_day) < 1.0 / (1.0 + np.exp(-logit))).astype(int))
        cols = np.stack([np.full(per_day, d), 7 + other], axis=1).ravel()
        blocks.append(sp.csr_matrix((np.ones(2 * per_day), cols, np.arange(0, 2 * per_day + 1, 2)), shape=(per_day, 64)))

    def worst_day(est):
        return max(abs(est.predict_proba(Xd)[:, 1].sum() / yd.sum() - 1.0) for Xd, yd in zip(blocks, labels))

    params = dict(alpha=0.1, l2=1.0, passes=2)
    in_order = FTRLLogisticRegression(**params, shuffle=False).fit(blocks, labels)
    shuffled = FTRLLogisticRegression(**params).fit(blocks, labels)
    assert worst_day(shuffled) < 0.05 < worst_day(in_order)
    again = FTRLLogisticRegression(**params).fit(blocks, labels)
    assert np.array_equal(again.state_.z, shuffled.state_.z)
    # the exact intercept: over all the rows fitted, predicted clicks = clicks
    predicted = sum(shuffled.predict_proba(Xd)[:, 1].sum() for Xd in blocks)
    assert predicted == pytest.approx(sum(int(yd.sum()) for yd in labels), rel=1e-9)
    online = FTRLLogisticRegression(**params, exact_intercept=False).fit(blocks, labels)
    assert abs(sum(online.predict_proba(Xd)[:, 1].sum() for Xd in blocks) / predicted - 1.0) > 1e-4
