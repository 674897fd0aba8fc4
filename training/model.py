"""Sparse logistic regression for hashed CTR features, with negative downsampling.

:class:`SparseLogisticRegression` follows the scikit-learn estimator contract
(hyperparameters stored verbatim by ``__init__``, learned state in attributes
ending in ``_``, ``fit`` returns ``self``; ``sklearn.base.clone`` works) and
wraps scikit-learn's ``LogisticRegression`` solvers.

Negative downsampling (``downsample_rate``) and its recalibration, a shift of the
intercept by ``ln(downsample_rate)``, are :mod:`training.sampling`'s;
:meth:`SparseLogisticRegression.predict_proba_uncalibrated` gives the downsampled view.

Solver choice (``solver="auto"``): liblinear for l1 and l2 (it stops by itself at the
optimum), saga for elasticnet; liblinear's intercept is scaled by
``LIBLINEAR_INTERCEPT_SCALING`` so its penalty is negligible. Measured in
docs/training-engine.md (benchmarks/bench_solvers.py).
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state

from shared.model.scoring import csr_margin, sigmoid
from training.params import Constraint, Interval, Options, Seed, validate_params
from training.sampling import as_csr, as_labels, bits_of, negative_downsample, recalibrate  # noqa: F401

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

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "penalty": Options(PENALTIES),
        "C": Interval(1e-6, 1e4),
        "l1_ratio": Interval(0.0, 1.0),
        "downsample_rate": Interval(0.0, 1.0, open_low=True),
        "max_iter": Interval(1, 1000, integer=True),
        "tol": Interval(1e-8, 1e-1),
        "solver": Options(SOLVERS),
        "random_state": Seed(),
    }

    def _validated_solver(self) -> str:
        validate_params(self.get_params(deep=False), self._parameter_constraints)
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
        """Fit on CSR ``X`` and 0/1 ``y`` (negatives downsampled, intercept recalibrated); returns self."""
        started = time.perf_counter()
        solver = self._validated_solver()
        X = as_csr(X)
        y = as_labels(y, X.shape[0])
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
        self.bits_ = bits_of(self.n_features_in_)
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
        """The weights as a 1 x n_features sparse row, as scikit-learn exposes them."""
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
        return csr_margin(as_csr(X), self.indices_, self.weights_, self.n_features_in_)

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
        """Predicted class per row: 1 where the click probability exceeds 0.5."""
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
