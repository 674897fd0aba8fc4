"""Sparse logistic regression for hashed CTR features, with negative downsampling.

:class:`SparseLogisticRegression` follows the scikit-learn estimator contract
(hyperparameters stored verbatim by ``__init__``, learned state in attributes
ending in ``_``, ``fit`` returns ``self``; ``sklearn.base.clone`` works) and
wraps scikit-learn's ``LogisticRegression`` solvers.

Negative downsampling
---------------------
With ``downsample_rate = w`` in (0, 1], ``fit`` keeps every positive and each
negative with probability ``w``. A model fitted on that sample predicts
``p`` = P(click | x, kept), which overstates the true rate. The true-rate
probability is recovered by

    q = p / (p + (1 - p) / w)

Since ``q / (1 - q) = w * p / (1 - p)``, this is exactly a shift of the logit by
``ln w``; so after fitting, ``intercept_ = raw_intercept_ + ln(w)`` and every
score computed from ``indices_``/``weights_``/``intercept_`` (here, in the
plain-file artifact, in the bidder) is already recalibrated. ``raw_intercept_``
keeps the intercept as fitted on the downsampled data, and
:meth:`SparseLogisticRegression.predict_proba_uncalibrated` gives ``p``;
:func:`recalibrate` is the formula above, applied to probabilities.

Solver choice (``solver="auto"``)
---------------------------------
Measured with ``benchmarks/bench_solvers.py``: a synthetic, well-specified hashed
CTR problem, 200,000 training rows x 2**20 columns, 40 non-zeros per row, base
CTR 3.5 %, negatives downsampled at w = 0.25 (~55,000 rows fitted, ~328,000
columns present), tol = 1e-4, log-loss on 50,000 held-out rows. The VM (2 vCPU)
was shared with other jobs (load average 5-6), so absolute seconds are inflated and
noisy; the l1 ranking held in all three runs made, the l2 one is closer.
Fit seconds (iterations, * = stopped by max_iter) / held-out log-loss:

    max_iter=100         C     liblinear        lbfgs            saga
    l2                   0.03   2.9 (18) .1289   4.6 (34) .1289  31.0 (100*) .1289
    l2                   0.1    8.7 (22) .1273  12.2 (44) .1273  15.0 (100*) .1273
    l1                   0.03   3.6 (16) .1384      -            15.6 (100*) .1384
    l1                   0.1    4.1 (17) .1319      -            26.3 (100*) .1319
    elasticnet (0.5)     0.03      -            -            28.8 (97)   .1350
    elasticnet (0.5)     0.1       -            -           110.1 (100*) .1296

    max_iter=30          C     liblinear        lbfgs            saga
    l2                   0.1    8.9 (22) .1273  12.8 (30*) .1277  2.3 (30*) .1273
    l1                   0.1    2.1 (17) .1319      -             7.7 (30*) .1319
    elasticnet (0.5)     0.1       -            -             13.9 (30*) .1296
    l1                   1     11.2 (18) .1408      -            79.0 (30*) .1359
    elasticnet (0.5)     1         -            -            359.4 (30*) .1369

liblinear reaches the optimum and
stops by itself, fastest for l1 (2-7x faster than saga) and for l2 under the default
max_iter; saga stops only at max_iter with tol = 1e-4 (30 epochs of it already match
the converged log-loss for l2, so with a small epoch budget ``solver="saga"`` is the
quicker l2 choice); it is the only elasticnet solver and slows down sharply when the
L1 part is weakly regularised. L-BFGS-B pays a per-iteration cost in the number of
columns (before compaction ~0.12 s per iteration at 2**18 columns even on 4,000
rows). Hence ``AUTO_SOLVER``: liblinear for l1 and l2, saga for elasticnet.

liblinear regularises the intercept as a synthetic feature of value
``intercept_scaling``. With the default 1, strongly regularised fits on few rows
lose calibration: 3,000 rows, w = 0.25, C = 0.003 gave mean predicted / true CTR
1.62 (l2) and 2.28 (l1); with ``LIBLINEAR_INTERCEPT_SCALING = 100`` the same fits
give 0.996 and 1.017 (at C = 0.1 on the 200k problem both settings are within
0.003 of each other). Calibration below 1 at small C in the tables above is
shrinkage, the same for every solver.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state

from training.artifacts import sigmoid

PENALTIES = ("l1", "l2", "elasticnet")
SOLVERS = ("auto", "saga", "liblinear", "lbfgs")
# Which solver handles which penalty (scikit-learn's own compatibility table).
SOLVER_PENALTIES = {
    "saga": frozenset(PENALTIES),
    "liblinear": frozenset({"l1", "l2"}),
    "lbfgs": frozenset({"l2"}),
}
# Chosen from the measurements in the module docstring.
AUTO_SOLVER = {"l2": "liblinear", "l1": "liblinear", "elasticnet": "saga"}
# liblinear appends a constant feature of this value and penalises its weight like
# any other; a large value makes the intercept's effective penalty negligible.
LIBLINEAR_INTERCEPT_SCALING = 100.0

# scikit-learn >= 1.8 deprecates ``penalty`` in favour of ``l1_ratio`` alone.
_SKLEARN_PENALTY_DEPRECATED = (
    inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"
)


def recalibrate(p, downsample_rate: float):
    """Map probabilities learned on negatively-downsampled data back to the true rate.

    ``q = p / (p + (1 - p) / w)``; ``w = 1`` is the identity. Works on scalars and arrays.
    """
    w = float(downsample_rate)
    if not 0.0 < w <= 1.0:
        raise ValueError(f"downsample_rate must be in (0, 1], got {downsample_rate!r}")
    p = np.asarray(p, dtype=np.float64)
    return p / (p + (1.0 - p) / w)


def negative_downsample(y: np.ndarray, rate: float, random_state=None) -> np.ndarray:
    """Row indices kept by negative downsampling: all positives, each negative with
    probability ``rate``. Sorted, so row order is preserved."""
    rs = check_random_state(random_state)
    y = np.asarray(y)
    if rate >= 1.0:
        return np.arange(y.shape[0])
    keep = (y == 1) | (rs.random_sample(y.shape[0]) < rate)
    return np.flatnonzero(keep)


def _as_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        X = X.tocsr()
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-dimensional, got shape {X.shape}")
        X = sp.csr_matrix(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    return X


def _as_labels(y, n_rows: int) -> np.ndarray:
    y = np.asarray(y).ravel()
    if y.shape[0] != n_rows:
        raise ValueError(f"y has {y.shape[0]} labels but X has {n_rows} rows")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"labels must be 0 or 1, found {bad.tolist()}")
    return y.astype(np.int8)


class SparseLogisticRegression(ClassifierMixin, BaseEstimator):
    """Binary logistic regression on sparse hashed features.

    Parameters
    ----------
    penalty : {"l1", "l2", "elasticnet"}
    C : float > 0, inverse regularisation strength (scikit-learn's convention: the
        loss is summed over rows, so the effective strength scales with 1 / n_rows).
    l1_ratio : float in [0, 1], elastic-net mixing (used only when penalty="elasticnet").
    downsample_rate : float in (0, 1], keep-rate of negatives at fit time; predictions
        are recalibrated to the true rate (see the module docstring).
    max_iter : int >= 1, solver iterations (epochs over the data for saga).
    tol : float > 0, solver stopping tolerance.
    solver : {"auto", "saga", "liblinear", "lbfgs"}; "auto" picks by penalty from
        measurements (``AUTO_SOLVER``).
    random_state : int, RandomState or None; drives downsampling and solver shuffling.

    Attributes (after ``fit``)
    --------------------------
    indices_ : int64 array, sorted column indices of the non-zero weights.
    weights_ : float64 array, the non-zero weights (same order as ``indices_``).
    coef_ : scipy.sparse.csr_matrix of shape (1, n_features_in_) built from the two above.
    intercept_ : float, recalibrated intercept (``raw_intercept_ + ln(downsample_rate)``).
    raw_intercept_ : float, intercept as fitted on the downsampled rows.
    n_nonzero_ : int, ``len(indices_)``.
    n_features_in_ : int; bits_ : int or None (log2 of n_features_in_ when a power of 2).
    classes_ : array([0, 1]).
    solver_ : str, the solver actually used; n_iter_ : int; converged_ : bool.
    n_train_rows_ : int rows given; n_fit_rows_ : int rows kept after downsampling.
    fit_seconds_ : float, wall time of ``fit``.
    """

    def __init__(
        self,
        penalty: str = "l2",
        C: float = 1.0,
        l1_ratio: float = 0.5,
        downsample_rate: float = 1.0,
        max_iter: int = 100,
        tol: float = 1e-4,
        solver: str = "auto",
        random_state=None,
    ):
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.downsample_rate = downsample_rate
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.random_state = random_state

    # -- parameter validation -------------------------------------------------
    def _validated_solver(self) -> str:
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if not isinstance(self.C, Real) or not (0 < float(self.C) < math.inf):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")
        if not isinstance(self.l1_ratio, Real) or not 0.0 <= float(self.l1_ratio) <= 1.0:
            raise ValueError(f"l1_ratio must be in [0, 1], got {self.l1_ratio!r}")
        if not isinstance(self.downsample_rate, Real) or not 0.0 < float(self.downsample_rate) <= 1.0:
            raise ValueError(f"downsample_rate must be in (0, 1], got {self.downsample_rate!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not isinstance(self.tol, Real) or not float(self.tol) > 0:
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        solver = AUTO_SOLVER[self.penalty] if self.solver == "auto" else self.solver
        if self.penalty not in SOLVER_PENALTIES[solver]:
            raise ValueError(
                f"solver {solver!r} does not support penalty {self.penalty!r}; "
                f"use one of {sorted(s for s, ps in SOLVER_PENALTIES.items() if self.penalty in ps)}"
            )
        return solver

    def _sklearn_estimator(self, solver: str, seed: int) -> LogisticRegression:
        l1_ratio = {"l1": 1.0, "l2": 0.0}.get(self.penalty, float(self.l1_ratio))
        kwargs = dict(
            C=float(self.C),
            solver=solver,
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            random_state=seed,
        )
        if _SKLEARN_PENALTY_DEPRECATED:
            kwargs["l1_ratio"] = l1_ratio
        else:  # scikit-learn < 1.8
            kwargs["penalty"] = self.penalty
            if self.penalty == "elasticnet":
                kwargs["l1_ratio"] = l1_ratio
        if solver == "liblinear":
            kwargs["intercept_scaling"] = LIBLINEAR_INTERCEPT_SCALING
        return LogisticRegression(**kwargs)

    # -- fitting ----------------------------------------------------------------
    def fit(self, X, y):
        started = time.perf_counter()
        solver = self._validated_solver()
        X = _as_csr(X)
        y = _as_labels(y, X.shape[0])
        rs = check_random_state(self.random_state)
        kept = negative_downsample(y, float(self.downsample_rate), rs)
        X_fit, y_fit = (X, y) if kept.size == y.size else (X[kept], y[kept])
        if np.unique(y_fit).size < 2:
            raise ValueError(
                "training data needs both clicks and non-clicks "
                f"(after downsampling: {int(y_fit.sum())} positives of {y_fit.size} rows)"
            )
        # Fit on the columns present in the rows only: an all-zero column's optimal weight is
        # exactly 0 under every penalty here, and every solver pays per iteration for each
        # column it carries (2**bits of them, mostly absent from a subsample).
        present, X_compact = _compact_columns(X_fit)
        est = self._sklearn_estimator(solver, int(rs.randint(np.iinfo(np.int32).max)))
        with warnings.catch_warnings():
            # Hitting max_iter is the expected way an epoch budget ends; recorded in converged_.
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X_compact, y_fit)

        coef = np.asarray(est.coef_, dtype=np.float64).ravel()
        nz = np.flatnonzero(coef)
        self.indices_ = present[nz].astype(np.int64)
        self.weights_ = coef[nz].astype(np.float64)
        self.raw_intercept_ = float(est.intercept_[0])
        self.intercept_ = self.raw_intercept_ + math.log(float(self.downsample_rate))
        self.n_features_in_ = int(X.shape[1])
        self.bits_ = _bits_of(self.n_features_in_)
        self.n_nonzero_ = int(nz.size)
        self.classes_ = np.array([0, 1])
        self.solver_ = solver
        self.n_iter_ = int(np.max(est.n_iter_))
        self.converged_ = self.n_iter_ < int(self.max_iter)
        self.n_train_rows_ = int(y.size)
        self.n_fit_rows_ = int(y_fit.size)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    # -- prediction -----------------------------------------------------------
    @property
    def coef_(self) -> sp.csr_matrix:
        self._check_fitted()
        return sp.csr_matrix(
            (self.weights_, self.indices_, np.array([0, self.indices_.size])),
            shape=(1, self.n_features_in_),
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "indices_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("SparseLogisticRegression is not fitted yet; call fit(X, y) first")

    def _margin(self, X) -> np.ndarray:
        """X @ w without the intercept."""
        self._check_fitted()
        X = _as_csr(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} columns, the model was fitted on {self.n_features_in_}")
        w = np.zeros(self.n_features_in_, dtype=np.float64)
        w[self.indices_] = self.weights_
        return np.asarray(X @ w, dtype=np.float64).ravel()

    def decision_function(self, X) -> np.ndarray:
        """Recalibrated logit of the click probability."""
        return self._margin(X) + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2) array: columns P(no click), P(click), at the true (recalibrated) rate."""
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict_proba_uncalibrated(self, X) -> np.ndarray:
        """P(click) as the downsampled fit sees it, before recalibration (1-d array)."""
        return sigmoid(self._margin(X) + self.raw_intercept_)

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)

    def hyperparameters(self) -> dict:
        """The constructor parameters as plain JSON-able values."""
        out = {}
        for k, v in self.get_params(deep=False).items():
            if isinstance(v, np.generic):
                v = v.item()
            elif not isinstance(v, (str, int, float, bool, type(None))):
                v = repr(v)
            out[k] = v
        return out


def _compact_columns(X: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """(present, X'): the sorted column indices that hold a stored entry, and X with
    its columns renumbered to 0..len(present)-1 in that order."""
    present = np.unique(X.indices)
    if present.size == 0:  # no stored entries at all: keep one (all-zero) column
        present = np.zeros(1, dtype=X.indices.dtype)
    if present.size == X.shape[1]:
        return present, X
    renumbered = np.searchsorted(present, X.indices).astype(X.indices.dtype, copy=False)
    return present, sp.csr_matrix((X.data, renumbered, X.indptr), shape=(X.shape[0], present.size))


def _bits_of(n: int) -> int | None:
    return n.bit_length() - 1 if n > 0 and n & (n - 1) == 0 else None
