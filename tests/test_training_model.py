"""SparseLogisticRegression: estimator contract, downsampling recalibration, solvers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from training_support import hashed_problem
from training.model import AUTO_SOLVER, SparseLogisticRegression, negative_downsample, recalibrate


@pytest.fixture(scope="module")
def train():
    return hashed_problem(60_000, seed=10)


@pytest.fixture(scope="module")
def test():
    return hashed_problem(60_000, seed=11)


def test_recalibrate_formula():
    # q = p / (p + (1 - p) / w), checked by hand: p = 0.5, w = 0.1 -> 0.5 / (0.5 + 5) = 1/11
    assert recalibrate(0.5, 0.1) == pytest.approx(1 / 11)
    assert recalibrate(0.2, 1.0) == pytest.approx(0.2)
    np.testing.assert_allclose(recalibrate(np.array([0.0, 1.0]), 0.3), [0.0, 1.0])
    with pytest.raises(ValueError):
        recalibrate(0.5, 0.0)


def test_downsampled_fit_is_calibrated_after_recalibration(train, test):
    X, y, _ = train
    Xt, _, pt = test
    w = 0.1
    model = SparseLogisticRegression(penalty="l2", C=10.0, downsample_rate=w, max_iter=200,
                                     random_state=0).fit(X, y)
    # About w of the negatives and every positive were used.
    n_pos = int(y.sum())
    assert model.n_fit_rows_ - n_pos == pytest.approx(w * (y.size - n_pos), rel=0.1)
    q = model.predict_proba(Xt)[:, 1]
    raw = model.predict_proba_uncalibrated(Xt)
    # Recalibrated: the mean prediction matches the true mean probability on fresh rows.
    assert q.mean() / pt.mean() == pytest.approx(1.0, abs=0.05)
    # Without recalibration the downsampled model overstates CTR several-fold.
    assert raw.mean() / pt.mean() > 3.0
    # The intercept shift is the formula, exactly.
    np.testing.assert_allclose(recalibrate(raw, w), q, rtol=1e-9)
    assert model.intercept_ == pytest.approx(model.raw_intercept_ + math.log(w))
    # And it learned the signal: predictions track the true probabilities.
    assert np.corrcoef(np.log(q), np.log(pt))[0, 1] > 0.9


def test_no_downsampling_keeps_every_row(train):
    X, y, _ = train
    model = SparseLogisticRegression(C=1.0, max_iter=50).fit(X[:5000], y[:5000])
    assert model.n_fit_rows_ == model.n_train_rows_ == 5000
    assert model.intercept_ == model.raw_intercept_


def test_negative_downsample_keeps_all_positives():
    y = np.array([1, 0] * 5000)
    kept = negative_downsample(y, 0.2, random_state=0)
    assert (y[kept] == 1).sum() == 5000
    assert (y[kept] == 0).sum() == pytest.approx(1000, rel=0.15)
    assert np.all(np.diff(kept) > 0)


@pytest.mark.parametrize("penalty", ["l1", "l2", "elasticnet"])
def test_each_penalty_fits_with_auto_and_saga(train, test, penalty):
    X, y, _ = train
    Xt, yt, _ = test
    # auto, and saga explicitly when auto picks something else
    for solver in ("auto",) if AUTO_SOLVER[penalty] == "saga" else ("auto", "saga"):
        m = SparseLogisticRegression(penalty=penalty, C=0.5, l1_ratio=0.5, downsample_rate=0.5,
                                     max_iter=30, solver=solver, random_state=0).fit(X[:8000], y[:8000])
        assert m is not None and m.solver_ == (AUTO_SOLVER[penalty] if solver == "auto" else "saga")
        assert m.indices_.dtype == np.int64 and m.weights_.dtype == np.float64
        assert m.n_nonzero_ == m.indices_.size == m.weights_.size > 0
        assert np.all(m.weights_ != 0) and np.all(np.diff(m.indices_) > 0)
        assert m.coef_.shape == (1, X.shape[1]) and m.coef_.nnz == m.n_nonzero_
        assert m.fit_seconds_ > 0 and m.bits_ == 12
        proba = m.predict_proba(Xt)
        assert proba.shape == (Xt.shape[0], 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_l1_is_sparser_than_l2(train):
    X, y, _ = train
    l1 = SparseLogisticRegression(penalty="l1", C=0.05, max_iter=100, random_state=0).fit(X, y)
    l2 = SparseLogisticRegression(penalty="l2", C=0.05, max_iter=100, random_state=0).fit(X, y)
    assert l1.n_nonzero_ < l2.n_nonzero_


def test_estimator_contract(train):
    X, y, _ = train
    est = SparseLogisticRegression(penalty="elasticnet", C=0.3, l1_ratio=0.2, downsample_rate=0.5,
                                   max_iter=7, random_state=3)
    params = est.get_params()
    assert params == dict(penalty="elasticnet", C=0.3, l1_ratio=0.2, downsample_rate=0.5, max_iter=7,
                          tol=1e-4, solver="auto", random_state=3)
    twin = clone(est)
    assert twin.get_params() == params and not hasattr(twin, "indices_")
    with pytest.raises(NotFittedError):
        est.predict_proba(X[:2])
    assert est.fit(X[:3000], y[:3000]) is est
    # Same random_state, same data: identical fits.
    twin.fit(X[:3000], y[:3000])
    np.testing.assert_array_equal(est.indices_, twin.indices_)
    np.testing.assert_allclose(est.weights_, twin.weights_)
    assert est.predict(X[:10]).shape == (10,)
    assert set(np.unique(est.predict(X[:500]))) <= {0, 1}


@pytest.mark.parametrize("kwargs, message", [
    (dict(penalty="l3"), "penalty"),
    (dict(C=0.0), "C must"),
    (dict(C=float("inf")), "C must"),
    (dict(l1_ratio=1.5), "l1_ratio"),
    (dict(downsample_rate=0.0), "downsample_rate"),
    (dict(downsample_rate=1.2), "downsample_rate"),
    (dict(max_iter=0), "max_iter"),
    (dict(solver="newton"), "solver"),
    (dict(penalty="elasticnet", solver="liblinear"), "does not support"),
    (dict(penalty="l1", solver="lbfgs"), "does not support"),
])
def test_invalid_hyperparameters_rejected_at_fit(train, kwargs, message):
    X, y, _ = train
    with pytest.raises(ValueError, match=message):
        SparseLogisticRegression(**kwargs).fit(X[:100], y[:100])


def test_bad_inputs(train):
    X, y, _ = train
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        SparseLogisticRegression().fit(X[:10], np.arange(10))
    with pytest.raises(ValueError, match="both clicks and non-clicks"):
        SparseLogisticRegression().fit(X[:10], np.zeros(10))
    with pytest.raises(ValueError, match="labels"):
        SparseLogisticRegression().fit(X[:10], y[:9])
    m = SparseLogisticRegression(max_iter=20).fit(X[:2000], y[:2000])
    with pytest.raises(ValueError, match="columns"):
        m.predict_proba(X[:5, :100])


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_strong_regularisation_keeps_calibration_with_liblinear(test, penalty):
    # liblinear penalises its intercept; without a large intercept_scaling a strongly
    # regularised fit on few rows overstates CTR by 60 % or more.
    X, y, _ = hashed_problem(3000, seed=10)
    Xt, _, pt = test
    m = SparseLogisticRegression(penalty=penalty, C=0.003, downsample_rate=0.25, random_state=0).fit(X, y)
    assert m.solver_ == "liblinear"
    assert m.predict_proba(Xt)[:, 1].mean() / pt.mean() == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("penalty, solver", [("l2", "lbfgs"), ("l1", "liblinear")])
def test_fitting_on_present_columns_matches_the_full_problem(penalty, solver):
    # fit() drops columns absent from the rows and maps the weights back; the solution
    # must be the full problem's (a mapping error would put weights on wrong columns).
    from sklearn.linear_model import LogisticRegression

    X, y, _ = hashed_problem(4000, bits=12, seed=40)
    assert np.unique(X.indices).size < X.shape[1] / 4  # most columns absent
    ours = SparseLogisticRegression(penalty=penalty, C=0.5, max_iter=1000, tol=1e-6,
                                    solver=solver, random_state=0).fit(X, y)
    ref = LogisticRegression(C=0.5, l1_ratio=1.0 if penalty == "l1" else 0.0, solver=solver, max_iter=1000,
                             tol=1e-6, intercept_scaling=100.0 if solver == "liblinear" else 1.0, random_state=0)
    ref.fit(X.astype(np.float64), y)
    ref_coef = ref.coef_.ravel()
    np.testing.assert_allclose(ours.coef_.toarray().ravel(), ref_coef, atol=3e-3)
    if penalty == "l1":
        assert set(ours.indices_) ^ set(np.flatnonzero(np.abs(ref_coef) > 1e-6)) <= set(
            np.flatnonzero(np.abs(ref_coef) < 1e-3))  # same support, up to near-zero weights
    assert ours.raw_intercept_ == pytest.approx(ref.intercept_[0], abs=3e-3)
    np.testing.assert_allclose(ours.predict_proba_uncalibrated(X), ref.predict_proba(X)[:, 1], atol=1e-3)
