"""Bayesian per-segment models (training/segment_bayes.py) and their serving side
(shared/model/posterior.py): the MAP, the Laplace covariance, shrinkage, sampling,
aggregates with one draw per segment, empirical Bayes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shared.model.posterior import (PosteriorSet, SegmentPosterior, aggregate_clicks, point_logit, posterior_ctr,
                                    thompson_ctr)
from shared.model.scoring import sigmoid
from training.params import ParameterError
from training.segment_bayes import SegmentLaplace, choose_prior_scales, factorize, global_margin, laplace_fit

BITS = 10


def one_hot(levels: np.ndarray, vocab: int) -> sp.csr_matrix:
    """Rows of one-hot fields: field f level v is column f * vocab + v."""
    n, fields = levels.shape
    cols = (np.arange(fields)[None, :] * vocab + levels).ravel()
    return sp.csr_matrix((np.ones(n * fields), cols, np.arange(0, n * fields + 1, fields)), shape=(n, 1 << BITS))


def segment(n: int, seed: int, b: float = 0.5, fields: int = 3, vocab: int = 4):
    """(X, y, offset, true probabilities) of a segment of ``n`` rows around a random global model."""
    rng = np.random.default_rng(seed)
    X = one_hot(rng.integers(0, vocab, size=(n, fields)), vocab)
    offset = -1.5 + 0.3 * rng.standard_normal(n)
    delta = np.zeros(1 << BITS)
    delta[: fields * vocab] = rng.normal(0, 0.3, fields * vocab)
    p = sigmoid(offset + b + X @ delta)
    return X, (rng.random(n) < p).astype(float), offset, p


def neg_log_post(X, y, o, theta, active, sigma_b, sigma_w):
    """The objective written out densely, independently of the module."""
    Xa = np.column_stack([np.ones(X.shape[0]), X[:, active].toarray()])
    z = o + Xa @ theta
    prior = np.r_[1 / sigma_b ** 2, np.full(active.size, 1 / sigma_w ** 2)]
    return np.sum(np.logaddexp(0, z) - y * z) + 0.5 * prior @ theta ** 2, Xa, prior


def test_map_satisfies_the_gradient_condition():
    X, y, o, _ = segment(400, seed=1)
    m = SegmentLaplace(sigma_b=0.7, sigma_w=0.4).fit(X, y, o)
    theta = np.r_[m.intercept_, m.weights_]
    _, Xa, prior = neg_log_post(X, y, o, theta, m.indices_, 0.7, 0.4)
    grad = Xa.T @ (sigmoid(o + Xa @ theta) - y) + prior * theta
    assert np.abs(grad).max() < 1e-8
    assert m.indices_.tolist() == sorted(set(X.indices.tolist()))
    # deterministic: a second fit gives the same bits, and a warm start the same MAP
    again = SegmentLaplace(sigma_b=0.7, sigma_w=0.4).fit(X, y, o)
    assert np.array_equal(again.weights_, m.weights_) and again.intercept_ == m.intercept_
    warm = laplace_fit(X, y, o, 0.7, 0.4, start=theta + 0.5)
    assert np.allclose(warm.theta, theta, atol=1e-9)


def test_a_segment_without_rows_is_the_prior_and_scores_as_the_global_model():
    X = sp.csr_matrix((0, 1 << BITS))
    m = SegmentLaplace(sigma_b=0.4, sigma_w=0.2).fit(X, np.zeros(0), np.zeros(0))
    post = m.posterior()
    assert post.intercept == 0.0 and post.indices.size == 0 and post.sigma_w == 0.2
    assert np.allclose(post.covariance, [[0.16]])
    assert m.log_evidence_ == pytest.approx(0.0, abs=1e-12)
    assert np.array_equal(post.covariance, SegmentPosterior.prior(0.4, 0.2).covariance)
    rows, _, _, _ = segment(5, seed=2)
    glob = (np.arange(12, dtype=np.int64), np.linspace(-1, 1, 12), -2.0)
    rid = np.repeat(np.arange(5), np.diff(rows.indptr))
    pset = PosteriorSet.from_segments([post], BITS)
    logit = point_logit(pset, glob, np.zeros(5, np.int64), rows.indices, rows.data, rid)
    assert np.array_equal(logit, global_margin(rows, glob))  # exactly the global model at the mean


def test_shrinkage_grows_as_data_shrinks_and_a_large_segment_reaches_its_mle():
    rng = np.random.default_rng(3)
    ratios, gaps = [], []
    for n in (30, 300, 3000, 30000):
        y = (rng.random(n) < sigmoid(-1.0 + 0.8)).astype(float)  # true shift +0.8 over the global offset -1
        X = sp.csr_matrix((n, 1 << BITS))  # intercept-only: its MLE is logit(mean y) - offset exactly
        mle = np.log(y.mean() / (1 - y.mean())) + 1.0
        b = SegmentLaplace(sigma_b=0.3, sigma_w=0.3).fit(X, y, np.full(n, -1.0)).intercept_
        ratios.append(b / mle)
        gaps.append(abs(b - mle))
    assert all(0 < r < 1 for r in ratios)
    assert ratios == sorted(ratios)  # less data, more shrinkage toward the global model
    assert gaps[-1] < 0.01


def test_laplace_covariance_is_the_inverse_hessian_by_finite_differences():
    X, y, o, _ = segment(60, seed=4, fields=1, vocab=3)
    m = SegmentLaplace(sigma_b=0.8, sigma_w=0.5, representation="full").fit(X, y, o)
    theta = np.r_[m.intercept_, m.weights_]
    d, h = theta.size, 1e-4
    H = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            ei, ej = np.eye(d)[i] * h, np.eye(d)[j] * h

            def f(t):
                return neg_log_post(X, y, o, t, m.indices_, 0.8, 0.5)[0]

            H[i, j] = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej) + f(theta - ei - ej)) / (4 * h * h)
    assert np.allclose(m.precision_, H, rtol=1e-4, atol=1e-4)
    assert np.allclose(m.posterior().covariance, np.linalg.inv(H), rtol=1e-3, atol=1e-6)


def test_representations_keep_marginals_and_lowrank_of_full_rank_is_exact():
    X, y, o, _ = segment(200, seed=5)
    fit = laplace_fit(X, y, o, 0.5, 0.3)
    cov = np.linalg.inv(fit.precision)
    for rep, rank in (("diagonal", 0), ("lowrank", 3), ("full", 0)):
        F, d = factorize(fit, rep, rank)
        assert np.allclose(np.diag(F @ F.T) + d ** 2, np.diag(cov))  # exact marginal variances
    F, d = factorize(fit, "lowrank", fit.theta.size)
    assert np.allclose(F @ F.T + np.diag(d ** 2), cov)
    with pytest.raises(ParameterError):
        SegmentLaplace(representation="dense").fit(X, y, o)


def test_sampling_reproduces_mean_and_covariance_and_a_seed_reproduces_draws():
    X, y, o, _ = segment(150, seed=6, fields=2, vocab=3)
    post = SegmentLaplace(sigma_b=0.6, sigma_w=0.4, rank=2).fit(X, y, o).posterior()
    assert post.scale.any() and post.factor.shape[1] == 2  # low rank plus a diagonal
    draws = post.draw(40000, np.random.default_rng(0))
    sd = np.sqrt(np.diag(post.covariance))
    assert np.abs(draws.mean(0) - post.mean).max() < 4 * sd.max() / np.sqrt(40000)
    assert np.allclose(np.cov(draws.T), post.covariance, atol=0.03 * sd.max() ** 2 * 4)
    assert np.array_equal(draws, post.draw(40000, np.random.default_rng(0)))
    pset = PosteriorSet.from_segments([post], BITS)
    glob = (np.zeros(0, np.int64), np.zeros(0), -1.5)
    rid = np.repeat(np.arange(10), np.diff(X[:10].indptr))
    args = (pset, glob, np.zeros(10, np.int64), X[:10].indices, X[:10].data, rid)
    a, b = posterior_ctr(*args, seed=3), posterior_ctr(*args, seed=3)
    assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
    assert np.all(a.lower < a.mean) and np.all(a.mean < a.upper)
    assert np.array_equal(thompson_ctr(*args, seed=9), thompson_ctr(*args, seed=9))
    assert not np.array_equal(thompson_ctr(*args, seed=9), thompson_ctr(*args, seed=10))


def test_aggregates_share_one_draw_per_segment():
    post = SegmentPosterior(0.0, np.zeros(0, np.int64), np.zeros(0), np.zeros((1, 0)), np.array([0.5]), 0.1)
    glob = (np.zeros(0, np.int64), np.zeros(0), -1.0)
    col, val, rid = np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
    one = aggregate_clicks(PosteriorSet.from_segments([post], BITS), glob, [0, 0], col, val, rid, draws=20000)
    two = aggregate_clicks(PosteriorSet.from_segments([post, post], BITS), glob, [0, 1], col, val, rid, draws=20000)
    ratio = (one.upper - one.lower) / (two.upper - two.lower)
    assert 1.3 < ratio < 1.55  # perfectly correlated rows: sqrt(2) times the width of independent ones
    assert one.expected == pytest.approx(two.expected, rel=0.02)
    assert one.realised_upper - one.realised_lower >= 1


def test_aggregate_arithmetic_without_uncertainty_and_shared_unseen_columns():
    flat = SegmentPosterior(0.2, np.array([3], np.int64), np.array([0.5]), np.zeros((2, 0)), np.zeros(2), 0.0)
    glob = (np.array([3, 7], np.int64), np.array([0.1, -0.4]), -2.0)
    col, val, rid = np.array([3, 7, 7]), np.array([1.0, 2.0, 1.0]), np.array([0, 0, 1])
    pset = PosteriorSet.from_segments([flat], BITS)
    agg = aggregate_clicks(pset, glob, [0, -1], col, val, rid, draws=4000, seed=1)
    p = sigmoid([-2.0 + 0.1 - 0.8 + 0.2 + 0.5, -2.0 - 0.4])
    assert agg.expected == pytest.approx(p.sum()) and agg.lower == pytest.approx(agg.upper)
    assert agg.realised.mean() == pytest.approx(p.sum(), abs=0.05)
    # a column the segment never saw gets one prior draw, shared by the segment's rows that have it
    unseen = SegmentPosterior(0.0, np.zeros(0, np.int64), np.zeros(0), np.zeros((1, 0)), np.zeros(1), 0.7)
    pset = PosteriorSet.from_segments([unseen], BITS)
    s = thompson_ctr(pset, glob, [0, 0, 0], np.array([9, 9]), None, np.array([0, 1]), seed=4)
    assert s[0] == s[1] != sigmoid(-2.0) and s[2] == sigmoid(-2.0)


def test_empirical_bayes_recovers_a_known_prior_scale():
    rng = np.random.default_rng(8)
    true_b, true_w, data = 0.6, 0.3, []
    for _ in range(60):
        n = 500
        X = sp.csr_matrix((rng.random((n, 4)) < 0.5).astype(float), shape=(n, 4))
        X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(n, 1 << BITS))
        o = rng.normal(-1.0, 0.5, n)
        z = o + rng.normal(0, true_b) + X @ np.r_[rng.normal(0, true_w, 4), np.zeros((1 << BITS) - 4)]
        data.append((X, (rng.random(n) < sigmoid(z)).astype(float), o))
    grid = tuple(np.geomspace(0.05, 2.0, 13))
    choice = choose_prior_scales(data, sigma_b_grid=grid, sigma_w_grid=grid, strides=(2, 1), tol=1e-8)
    assert true_b / 1.6 < choice.sigma_b < true_b * 1.6
    assert true_w / 1.6 < choice.sigma_w < true_w * 1.6
    assert choice.log_evidence == max(choice.tried.values())
