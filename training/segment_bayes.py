"""Bayesian per-segment logistic regression, shrunk toward the global model (issue 17).

Segment ``s`` with rows ``X`` (CSR, 2**bits columns) and labels ``y`` is fitted as

    logit p_i = o_i + b_s + x_i . delta_s,   b_s ~ N(0, sigma_b^2),  delta_s,j ~ N(0, sigma_w^2)

with ``o_i`` the global model's margin of row i (its intercept included): a segment with
little data stays at the global model, one with much data moves away, and no row threshold
is needed. Only the columns active in the segment's rows are fitted (any other keeps
``delta = 0`` and its prior, :mod:`shared.model.posterior` draws it when sampling).

The MAP is found by Newton's method with the exact Hessian and a backtracking line search
(the log posterior is strictly concave: it converges from any start, and tightly enough that
results do not depend on the start). The posterior is Laplace's: ``N(MAP, H^-1)``, ``H = X~' W X~
+ prior precision`` (``X~`` = [1, X on the active columns]).

Its stored form (:func:`factorize`) was chosen by measurement (``benchmarks/bench_bayes_segments.py``,
figures in ``docs/segments.md``): the diagonal of ``H^-1`` drops the negative correlation between
the intercept and each field's levels (one-hot fields make them nearly collinear) and gives
intervals too wide on large segments; the top 4 eigenvectors of ``H^-1`` plus the diagonal left
over match the full covariance within the binomial noise at a 26th of its storage. Default:
``lowrank`` with ``rank=4`` (re-measure when the feature set changes). The prior scales are
chosen per run by empirical Bayes (:func:`choose_prior_scales`). The dense Hessian costs
``(k + 1)^2`` floats for ``k`` active columns: fine for the segments measured (k up to ~360).
Not yet used by ``ctr train --per-segment`` or the bidder (issue 17 is open).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from shared.model.posterior import SegmentPosterior
from shared.model.scoring import sigmoid, sorted_pairs_margin
from training.params import Constraint, Interval, Options, validate_params
from training.segment_rows import SegmentRows

REPRESENTATIONS = ("lowrank", "full", "diagonal")
#: Empirical-Bayes grids (log-spaced, ~17 % steps; the search walks them, see :func:`choose_prior_scales`).
SIGMA_B_GRID = tuple(float(x) for x in np.geomspace(0.05, 2.0, 25))
SIGMA_W_GRID = tuple(float(x) for x in np.geomspace(0.02, 1.0, 25))

#: A segment's data: (CSR rows, 0/1 labels, offsets = the global model's margin per row).
SegmentData = tuple[sp.csr_matrix, np.ndarray, np.ndarray]


@dataclass
class _Fit:
    """MAP, Hessian and evidence of one segment on its active columns."""

    active: np.ndarray  # int64 [k], sorted columns
    theta: np.ndarray  # [k + 1]: intercept then weights
    precision: np.ndarray  # [k + 1, k + 1] Hessian of the negative log posterior at theta
    log_evidence: float  # Laplace's log marginal likelihood
    n_iter: int
    cholesky: np.ndarray = field(repr=False)  # lower factor of `precision`


def _design(X: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """(active columns, [1, X on them] as CSR float64)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    active = np.unique(X.indices).astype(np.int64)
    cols = np.searchsorted(active, X.indices) + 1
    n = X.shape[0]
    ones_at = X.indptr[:-1] + np.arange(n)  # each row: its intercept entry first
    indptr = X.indptr + np.arange(n + 1)
    data = np.empty(X.nnz + n)
    idx = np.empty(X.nnz + n, dtype=np.int64)
    data[ones_at], idx[ones_at] = 1.0, 0
    rest = np.ones(X.nnz + n, dtype=bool)
    rest[ones_at] = False
    data[rest], idx[rest] = X.data, cols
    return active, sp.csr_matrix((data, idx, indptr), shape=(n, active.size + 1))


@dataclass
class _Problem:
    """One segment's data on its active columns, built once (empirical Bayes refits it often)."""

    active: np.ndarray  # int64 [k]
    Xt: sp.csr_matrix  # [n, k + 1]: intercept column first
    XtT: sp.csr_matrix  # its transpose
    y: np.ndarray
    o: np.ndarray

    @classmethod
    def of(cls, X: sp.csr_matrix, y: np.ndarray, offset: np.ndarray) -> "_Problem":
        active, Xt = _design(X)
        return cls(active, Xt, Xt.T.tocsr(), np.asarray(y, dtype=np.float64), np.asarray(offset, dtype=np.float64))

    def objective(self, prior: np.ndarray, theta: np.ndarray) -> tuple[float, float]:
        """(negative log posterior up to a constant, negative log likelihood) at ``theta``."""
        z = self.o + self.Xt @ theta
        nll = float(np.sum(np.logaddexp(0.0, z) - self.y * z))
        return nll + 0.5 * float(prior @ (theta * theta)), nll


def _map(pb: _Problem, prior: np.ndarray, theta: np.ndarray, tol: float,
         max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Newton with backtracking from ``theta``: (MAP, Hessian, its Cholesky, nll, iterations).
    Stops when the Newton decrement squared (the predicted decrease) is below ``tol``."""
    f, nll = pb.objective(prior, theta)
    decrement = math.inf
    for it in range(1, max_iter + 1):
        p = sigmoid(pb.o + pb.Xt @ theta)
        grad = pb.XtT @ (p - pb.y) + prior * theta
        H = (pb.XtT @ sp.diags(p * (1 - p)) @ pb.Xt).toarray()
        H[np.diag_indices_from(H)] += prior
        L = la.cholesky(H, lower=True)
        step = -la.cho_solve((L, True), grad)
        decrement = -float(grad @ step)
        if decrement < tol:
            return theta, H, L, nll, it
        t = 1.0
        while True:  # Armijo backtracking: a full Newton step is taken near the optimum
            cand = theta + t * step
            f_new, nll_new = pb.objective(prior, cand)
            if f_new <= f - 0.25 * t * decrement or t < 1e-10:
                break
            t *= 0.5
        theta, f, nll = cand, f_new, nll_new
    raise RuntimeError(f"Newton did not converge in {max_iter} iterations (decrement {decrement:.3g})")


def _fit(pb: _Problem, sigma_b: float, sigma_w: float, tol: float, max_iter: int,
         start: np.ndarray | None) -> _Fit:
    prior = np.r_[1 / sigma_b ** 2, np.full(pb.active.size, 1 / sigma_w ** 2)]
    theta0 = np.zeros(pb.active.size + 1) if start is None else np.asarray(start, dtype=np.float64)
    theta, H, L, nll, it = _map(pb, prior, theta0, tol, max_iter)
    logdet_h = 2 * float(np.sum(np.log(np.diag(L))))
    evidence = -nll - 0.5 * float(prior @ (theta * theta)) + 0.5 * (float(np.sum(np.log(prior))) - logdet_h)
    return _Fit(pb.active, theta, H, evidence, it, L)


def laplace_fit(X: sp.csr_matrix, y: np.ndarray, offset: np.ndarray, sigma_b: float, sigma_w: float, *,
                tol: float = 1e-12, max_iter: int = 100, start: np.ndarray | None = None) -> _Fit:
    """MAP, Hessian and Laplace log evidence of one segment (no rows: the prior, evidence 0).

    The evidence is ``log p(y | MAP) + log N(MAP; 0, P^-1) + (k + 1)/2 log 2 pi - 1/2 log|H|``,
    i.e. ``-nll - theta'P theta / 2 + (log|P| - log|H|) / 2``."""
    return _fit(_Problem.of(X, y, offset), sigma_b, sigma_w, tol, max_iter, start)


def factorize(fit: _Fit, representation: str = "lowrank", rank: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(factor F, diagonal scale d) of the Laplace covariance ``H^-1`` in the stored form:
    ``full``: F = L^-T (H = L L'), d = 0, exact; ``diagonal``: F empty, d = the marginal sds
    (exact marginals, correlations dropped); ``lowrank``: F = top-``rank`` eigenvectors of H^-1
    times the sqrt of their eigenvalues, d = sqrt of the diagonal left over (exact marginals,
    the ``rank`` widest directions exact)."""
    m = fit.theta.size
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {list(REPRESENTATIONS)}, got {representation!r}")
    linv = la.solve_triangular(fit.cholesky, np.eye(m), lower=True)  # L^-1
    if representation == "full":
        return np.ascontiguousarray(linv.T), np.zeros(m)
    var = np.einsum("ij,ij->j", linv, linv)  # diag(H^-1) = column norms of L^-1
    if representation == "diagonal" or rank == 0:
        return np.zeros((m, 0)), np.sqrt(var)
    r = min(int(rank), m)
    cov = linv.T @ linv
    vals, vecs = la.eigh(cov, driver="evd")  # all of them: robust to the prior's repeated eigenvalues
    top = np.arange(m - 1, m - r - 1, -1)  # the r largest, largest first
    F = vecs[:, top] * np.sqrt(np.maximum(vals[top], 0.0))
    F *= np.where(F[np.abs(F).argmax(axis=0), np.arange(r)] < 0, -1.0, 1.0)  # a deterministic sign
    return np.ascontiguousarray(F), np.sqrt(np.maximum(var - np.einsum("ij,ij->i", F, F), 0.0))


class SegmentLaplace(BaseEstimator):
    """One segment's Bayesian logistic regression around the global model (see the module
    docstring). ``fit(X, y, offset)`` with ``offset`` the global margin per row.

    Parameters: ``sigma_b`` / ``sigma_w`` prior sds of the intercept shift and of each
    weight shift; ``representation`` / ``rank`` the stored posterior form (:func:`factorize`);
    ``tol`` Newton-decrement stopping threshold; ``max_iter`` Newton iterations.

    Attributes after fit: ``indices_`` (int64 sorted active columns), ``intercept_`` and
    ``weights_`` (posterior means of b and delta), ``factor_``, ``scale_``, ``precision_``
    (dense Hessian), ``log_evidence_``, ``n_iter_``, ``fit_seconds_``."""

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "sigma_b": Interval(1e-3, 10.0),
        "sigma_w": Interval(1e-3, 10.0),
        "representation": Options(REPRESENTATIONS),
        "rank": Interval(0, 4096, integer=True),
        "tol": Interval(1e-16, 1e-4),
        "max_iter": Interval(1, 500, integer=True),
    }

    def __init__(self, sigma_b: float = 0.3, sigma_w: float = 0.1, representation: str = "lowrank",
                 rank: int = 4, tol: float = 1e-12, max_iter: int = 100):
        self.sigma_b = sigma_b
        self.sigma_w = sigma_w
        self.representation = representation
        self.rank = rank
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, y, offset) -> "SegmentLaplace":
        """Fit on CSR ``X``, 0/1 ``y`` and the global margins ``offset``; returns self."""
        started = time.perf_counter()
        validate_params(self.get_params(deep=False), self._parameter_constraints)
        X = sp.csr_matrix(X)
        y, offset = np.asarray(y, dtype=np.float64), np.asarray(offset, dtype=np.float64)
        if y.shape != (X.shape[0],) or offset.shape != y.shape or not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("y must be 0/1 and y, offset one entry per row of X")
        fit = laplace_fit(X, y, offset, float(self.sigma_b), float(self.sigma_w), tol=float(self.tol),
                          max_iter=int(self.max_iter))
        self.factor_, self.scale_ = factorize(fit, self.representation, int(self.rank))
        self.indices_, self.intercept_, self.weights_ = fit.active, float(fit.theta[0]), fit.theta[1:].copy()
        self.precision_, self.log_evidence_, self.n_iter_ = fit.precision, fit.log_evidence, fit.n_iter
        self.n_features_in_ = int(X.shape[1])
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def posterior(self) -> SegmentPosterior:
        """The fitted posterior as the serving side reads it."""
        return SegmentPosterior(self.intercept_, self.indices_, self.weights_, self.factor_, self.scale_,
                                float(self.sigma_w))

    def decision_function(self, X, offset) -> np.ndarray:
        """Logit at the posterior mean (the MAP): offset + intercept + X . weights."""
        X = sp.csr_matrix(X)
        row_ids = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        return np.asarray(offset, dtype=np.float64) + self.intercept_ + sorted_pairs_margin(
            X.indices.astype(np.int64), X.data, row_ids, X.shape[0], self.indices_, self.weights_)


@dataclass(frozen=True)
class PriorChoice:
    """Empirical Bayes' choice: the scales, their summed log evidence, every grid point tried
    ({(sigma_b, sigma_w): summed log evidence}) and the segments it was computed on."""

    sigma_b: float
    sigma_w: float
    log_evidence: float
    tried: dict[tuple[float, float], float]
    n_segments: int
    seconds: float


def choose_prior_scales(segments: Sequence[SegmentData], *, sigma_b_grid: Sequence[float] = SIGMA_B_GRID,
                        sigma_w_grid: Sequence[float] = SIGMA_W_GRID, max_segments: int = 400,
                        strides: Sequence[int] = (4, 2, 1), tol: float = 1e-6) -> PriorChoice:
    """The (sigma_b, sigma_w) of the grids maximising the sum over segments of the Laplace log
    marginal likelihood (empirical Bayes, one choice per run for all segments).

    ``segments``: every segment's (CSR rows, labels, global margins); at most ``max_segments``
    of them (evenly spaced in the given order, deterministic) are used. The search is a hill
    climb on the grid from its middle, coarse to fine: with each of ``strides`` in turn it moves
    to the best of the 8 neighbours ``stride`` grid steps away until none is better; each
    segment's MAP is warm-started from the previous point. The log evidence is smooth and
    unimodal in the log scales in practice, and ~30 of the 625 points are evaluated."""
    started = time.perf_counter()
    if not segments:
        raise ValueError("no segments to choose the prior scales on")
    pick = np.unique(np.linspace(0, len(segments) - 1, min(max_segments, len(segments))).round().astype(int))
    data = [_Problem.of(*segments[i]) for i in pick]
    starts: list[np.ndarray | None] = [None] * len(data)
    tried: dict[tuple[int, int], float] = {}

    def total(i: int, j: int) -> float:
        if (i, j) not in tried:
            s = 0.0
            for n, pb in enumerate(data):
                fit = _fit(pb, sigma_b_grid[i], sigma_w_grid[j], tol, 100, starts[n])
                starts[n] = fit.theta
                s += fit.log_evidence
            tried[(i, j)] = s
        return tried[(i, j)]

    cur = (len(sigma_b_grid) // 2, len(sigma_w_grid) // 2)
    for stride in strides:
        while True:
            around = [(cur[0] + a, cur[1] + b) for a in (-stride, 0, stride) for b in (-stride, 0, stride)
                      if 0 <= cur[0] + a < len(sigma_b_grid) and 0 <= cur[1] + b < len(sigma_w_grid)]
            best = max(around, key=lambda ij: (total(*ij), ij == cur))
            if best == cur:
                break
            cur = best
    return PriorChoice(float(sigma_b_grid[cur[0]]), float(sigma_w_grid[cur[1]]), tried[cur],
                       {(float(sigma_b_grid[i]), float(sigma_w_grid[j])): v for (i, j), v in tried.items()},
                       len(data), time.perf_counter() - started)


def global_margin(X: sp.csr_matrix, global_model: tuple[np.ndarray, np.ndarray, float]) -> np.ndarray:
    """The global model's logit per row of CSR ``X`` (its intercept included): the offsets."""
    g_idx, g_w, g_b = global_model
    X = sp.csr_matrix(X)
    row_ids = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    return float(g_b) + sorted_pairs_margin(X.indices.astype(np.int64), X.data, row_ids, X.shape[0],
                                            np.asarray(g_idx, dtype=np.int64), np.asarray(g_w, dtype=np.float64))


def segment_data(rows: SegmentRows, g: int, bits: int,
                 global_model: tuple[np.ndarray, np.ndarray, float]) -> SegmentData:
    """Segment ``g``'s training data for :func:`choose_prior_scales` and :class:`SegmentLaplace`:
    its train + validation rows (no setting is chosen on validation any more), labels and global
    margins."""
    a, _, t, _ = rows.spans(g)
    X = rows.csr(a, t, bits)
    return X, rows.label[a:t].astype(np.float64), global_margin(X, global_model)

