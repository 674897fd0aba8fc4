"""FTRL-Proximal logistic regression on hashed sparse features, compiled with numba.

The per-coordinate adaptive online learner of McMahan et al. (2013), "Ad Click
Prediction: a View from the Trenches", Algorithm 1, with L1 and L2, one coordinate
per hashed column plus an unregularised intercept. By default (``shuffle``) each pass
visits short runs of rows in a seeded random order across all the blocks it is given; with
``shuffle=False`` in the order given, and then continuing a saved state over new rows
(:meth:`partial_fit`) is exactly the same computation as one longer pass: A then B
equals A + B. Why shuffled: a feature constant over a stretch of time (``day_of_week``,
a campaign's first hours) learned in time order takes the level of that stretch, not
its own effect; docs/training-engine.md has the measurement. After the passes the
intercept is set to its exact optimum given the weights on the rows just fitted
(``exact_intercept``): an online learner's last iterate carries the noise of its last
rows, and the predicted clicks of the rows fitted then equal their clicks.

The state (``z``, ``n`` per coordinate) is what :class:`FTRLState` carries and the
model directory stores as its ignorable ``engine_state.npz`` part; the served
weights are the closed form ``w = -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2)``
where ``|z| > l1``, else 0. Why this solver and its defaults: docs/training-engine.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from numba import njit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from shared.model.scoring import csr_margin, dense_weights, sigmoid
from training.params import Constraint, Interval, Options, Seed, validate_params
from training.sampling import as_csr, as_labels, bits_of, negative_downsample

#: Rows per compiled call in order, and rows between two checks of the deadline.
CHUNK_ROWS = 1 << 16
#: With ``shuffle``, every pass visits the runs in a permutation drawn from this seed.
SHUFFLE_SEED = 20130811
#: With ``shuffle``, rows are visited in runs of this many consecutive rows of one block, the
#: runs of all blocks in a random order: a shuffle across blocks without stacking or copying them.
SHUFFLE_RUN_ROWS = 512


@njit(nogil=True, cache=True)
def _ftrl_rows(indptr, indices, data, y, order, start, stop, z, n, alpha, beta, l1, l2, wbuf):  # pragma: no cover
    """FTRL-Proximal updates for rows ``order[start:stop]``; returns the summed
    progressive (before-update) log-loss. The intercept is coordinate ``len(z) - 1``."""
    bias = z.shape[0] - 1
    loss = 0.0
    for t in range(start, stop):
        r = order[t]
        s = indptr[r]
        e = indptr[r + 1]
        m = 0.0
        for k in range(s, e):
            i = indices[k]
            zi = z[i]
            if abs(zi) <= l1:
                w = 0.0
            else:
                w = (math.copysign(l1, zi) - zi) / ((beta + math.sqrt(n[i])) / alpha + l2)
            wbuf[k - s] = w
            m += w * data[k]
        wb = -z[bias] / ((beta + math.sqrt(n[bias])) / alpha)
        m += wb
        if m >= 0.0:
            p = 1.0 / (1.0 + math.exp(-m))
            loss += math.log1p(math.exp(-m)) if y[r] == 1 else m + math.log1p(math.exp(-m))
        else:
            em = math.exp(m)
            p = em / (1.0 + em)
            loss += math.log1p(em) - m if y[r] == 1 else math.log1p(em)
        g = p - y[r]
        for k in range(s, e):
            i = indices[k]
            gi = g * data[k]
            ni = n[i]
            nn = ni + gi * gi
            z[i] += gi - (math.sqrt(nn) - math.sqrt(ni)) / alpha * wbuf[k - s]
            n[i] = nn
        nb = n[bias]
        nn = nb + g * g
        z[bias] += g - (math.sqrt(nn) - math.sqrt(nb)) / alpha * wb
        n[bias] = nn
    return loss


@njit(nogil=True, cache=True)
def _margins(indptr, indices, data, order, w):  # pragma: no cover
    """``X @ w`` (no intercept) for rows ``order`` of a CSR matrix's arrays."""
    out = np.empty(order.size)
    for t in range(order.size):
        r = order[t]
        m = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            m += w[indices[k]] * data[k]
        out[t] = m
    return out


def _blocks(X, y, rows) -> list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]]:
    """(matrix, labels, row numbers to visit) per block; a single matrix is one block."""
    Xs, ys = (list(X), list(y)) if isinstance(X, (list, tuple)) else ([X], [y])
    if not Xs or len(Xs) != len(ys):
        raise ValueError(f"give as many label arrays as matrices ({len(Xs)} and {len(ys)})")
    if rows is not None and len(Xs) != 1:
        raise ValueError("rows selects rows of a single matrix")
    out: list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]] = []
    for Xb, yb in zip(Xs, ys):
        Xb = as_csr(Xb)
        yb = as_labels(yb, Xb.shape[0])
        if out and Xb.shape[1] != out[0][0].shape[1]:
            raise ValueError(f"blocks have {Xb.shape[1]} and {out[0][0].shape[1]} columns")
        r = np.arange(Xb.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if r.size and (r.min() < 0 or r.max() >= Xb.shape[0] or np.any(np.diff(r) < 0)):
            raise ValueError("rows must be sorted row numbers of X")
        out.append((Xb, yb, r))
    return out


def _nonzero_weights(z: np.ndarray, n: np.ndarray, alpha: float, beta: float, l1: float, l2: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero weights (intercept excluded) of an FTRL state, as (indices, values): the
    closed form. Only updated coordinates can have one (small temporaries)."""
    touched = np.flatnonzero(n[:-1])
    nz = touched[np.abs(z[touched]) > l1]
    w = (np.copysign(l1, z[nz]) - z[nz]) / ((beta + np.sqrt(n[nz])) / alpha + l2)
    keep = w != 0.0
    return nz[keep].astype(np.int64), w[keep].astype(np.float64)


def _exact_intercept_z(work: list, z: np.ndarray, n: np.ndarray, alpha: float, beta: float, l1: float,
                       l2: float) -> float:
    """The intercept's ``z`` for which the intercept is the exact (unregularised) log-likelihood
    optimum on the fitted rows, the weights held: Newton on ``sum sigmoid(m + b) = sum y``."""
    w = dense_weights(*_nonzero_weights(z, n, alpha, beta, l1, l2), z.shape[0] - 1)
    margins, labels = [], []
    for indptr, indices, data, y, order, _ in work:
        if order.size:
            margins.append(_margins(indptr, indices, data, order, w))
            labels.append(y[order])
    scale = (beta + math.sqrt(n[-1])) / alpha
    if not margins:
        return float(z[-1])
    m, y = np.concatenate(margins), np.concatenate(labels)
    clicks = float(y.sum())
    if clicks == 0.0 or clicks == y.size:  # no finite optimum: keep the online intercept
        return float(z[-1])
    b = -float(z[-1]) / scale
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(m + b)))
        g, h = float(p.sum()) - clicks, float((p * (1.0 - p)).sum())
        step = g / max(h, 1e-12)
        b -= max(-5.0, min(5.0, step))
        if abs(step) < 1e-10:
            break
    return -b * scale


def _visit_plan(orders: list[np.ndarray], shuffler: np.random.Generator | None) -> list[tuple[int, int, int]]:
    """One pass's runs ``(block, start, stop)`` of each block's row order, in visiting order:
    blocks in turn in chunks of ``CHUNK_ROWS``, or with a ``shuffler`` runs of
    ``SHUFFLE_RUN_ROWS`` consecutive rows from all blocks in a random order (rows inside a run
    stay in order, so memory is read in runs: shuffled at a fraction of a row permutation's cost)."""
    size = CHUNK_ROWS if shuffler is None else SHUFFLE_RUN_ROWS
    runs = [(b, s, min(o.size, s + size)) for b, o in enumerate(orders) for s in range(0, o.size, size)]
    return runs if shuffler is None else [runs[i] for i in shuffler.permutation(len(runs))]


@dataclass(frozen=True)
class FTRLState:
    """Per-coordinate accumulators of a fit: ``z`` and ``n`` of length n_features + 1
    (the last entry is the intercept), and the rows seen so far."""

    z: np.ndarray
    n: np.ndarray
    rows_seen: int

    @classmethod
    def zeros(cls, n_features: int) -> "FTRLState":
        """The state before any row: all accumulators zero for ``n_features`` weights and the intercept."""
        return cls(np.zeros(n_features + 1), np.zeros(n_features + 1), 0)

    @property
    def n_features(self) -> int:
        """Number of feature weights (the intercept excluded)."""
        return int(self.z.shape[0] - 1)

    def to_arrays(self) -> dict[str, np.ndarray | np.int64]:
        """Sparse form for the model directory: only coordinates that were ever updated."""
        touched = np.flatnonzero(self.n > 0)
        return {"coords": touched.astype(np.int64), "z": self.z[touched], "n": self.n[touched],
                "n_features": np.int64(self.n_features), "rows_seen": np.int64(self.rows_seen)}

    @classmethod
    def from_arrays(cls, arrays) -> "FTRLState":
        """Inverse of :meth:`to_arrays`; raises ValueError on inconsistent arrays."""
        n_features = int(arrays["n_features"])
        coords = np.asarray(arrays["coords"], dtype=np.int64)
        z, n = np.asarray(arrays["z"], dtype=np.float64), np.asarray(arrays["n"], dtype=np.float64)
        if not (coords.shape == z.shape == n.shape) or (coords.size and (coords.min() < 0 or coords.max() > n_features)):
            raise ValueError("engine state arrays are inconsistent (coords, z, n differ or leave the feature range)")
        if not (np.isfinite(z).all() and np.isfinite(n).all() and (n >= 0).all()):
            raise ValueError("engine state holds non-finite or negative accumulators")
        state = cls.zeros(n_features)
        state.z[coords], state.n[coords] = z, n
        return cls(state.z, state.n, int(arrays["rows_seen"]))


class FTRLLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression fitted by FTRL-Proximal over rows in order.

    Parameters
    ----------
    alpha, beta : per-coordinate learning rate ``alpha / (beta + sqrt(sum g^2))``.
    l1, l2 : regularisation (summed-loss scale, like the paper's lambda_1, lambda_2).
    passes : passes over the rows.
    shuffle : visit the rows in a new seeded random order each pass, across blocks (default);
        ``False``: in the order given, as an online learner over a log would.
    downsample_rate : keep-rate of negatives; predictions are recalibrated to the true
        rate by shifting the intercept by ``ln(downsample_rate)`` (see :mod:`training.model`).
    exact_intercept : after the passes, solve the intercept exactly (Newton) on the rows of
        this fit with the weights held, and write it back into the state (default); with
        ``shuffle=False`` and this off, the fit is the plain online learner.
    random_state : drives negative downsampling only.

    ``fit`` starts from zero; ``partial_fit`` continues the current (or a loaded) state
    for ``passes`` more passes over new rows. ``deadline`` (a ``time.monotonic()`` value)
    stops a fit between chunks of rows: ``stopped_early_`` says so.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "alpha": Interval(1e-4, 10.0, open_low=False),
        "beta": Interval(0.0, 100.0),
        "l1": Interval(0.0, 1e3),
        "l2": Interval(0.0, 1e4),
        "passes": Interval(1, 1000, integer=True),
        "shuffle": Options((False, True)),
        "exact_intercept": Options((False, True)),
        "downsample_rate": Interval(0.0, 1.0, open_low=True),
        "random_state": Seed(),
    }

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, l1: float = 0.0, l2: float = 1.0,
                 passes: int = 1, shuffle: bool = True, exact_intercept: bool = True, downsample_rate: float = 1.0,
                 random_state=None):
        self.alpha = alpha
        self.beta = beta
        self.l1 = l1
        self.l2 = l2
        self.passes = passes
        self.shuffle = shuffle
        self.exact_intercept = exact_intercept
        self.downsample_rate = downsample_rate
        self.random_state = random_state

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X, y, *, rows: np.ndarray | None = None, deadline: float | None = None, progress=None):
        """Fit from a zero state. ``X``/``y`` may be lists of blocks (CSR matrices and their
        labels) visited in order, as one matrix stacked would be, without stacking them;
        ``rows`` (sorted row numbers of a single matrix) fits those rows without copying."""
        blocks = _blocks(X, y, rows)
        self.state_ = FTRLState.zeros(blocks[0][0].shape[1])
        return self._run(blocks, deadline, progress)

    def partial_fit(self, X, y, *, rows: np.ndarray | None = None, deadline: float | None = None, progress=None):
        """Continue the current state (from ``fit``, ``partial_fit`` or :meth:`from_state`)."""
        blocks = _blocks(X, y, rows)
        if not hasattr(self, "state_"):
            self.state_ = FTRLState.zeros(blocks[0][0].shape[1])
        elif blocks[0][0].shape[1] != self.state_.n_features:
            raise ValueError(f"X has {blocks[0][0].shape[1]} columns, the state has {self.state_.n_features}")
        return self._run(blocks, deadline, progress)

    @classmethod
    def from_state(cls, state: FTRLState, **params) -> "FTRLLogisticRegression":
        """An estimator continuing ``state`` (its weights are available at once)."""
        est = cls(**params)
        validate_params(est.get_params(deep=False), cls._parameter_constraints)
        est.state_ = FTRLState(state.z.copy(), state.n.copy(), state.rows_seen)
        est._finish(0, 0, 0.0, False, math.nan)
        return est

    def _run(self, blocks: list, deadline, progress):
        started = time.perf_counter()
        validate_params(self.get_params(deep=False), self._parameter_constraints)
        n_given = sum(int(r.size) for _, _, r in blocks)
        # downsampling draws once over all rows in order, so blocks give what one matrix would
        y_all = np.concatenate([y[r] for _, y, r in blocks])
        kept = negative_downsample(y_all, float(self.downsample_rate), check_random_state(self.random_state))
        work, offset = [], 0
        for X, y, r in blocks:
            mine = kept[(kept >= offset) & (kept < offset + r.size)] - offset
            offset += r.size
            order = r if mine.size == r.size else r[mine]
            width = int(np.diff(X.indptr).max()) if X.shape[0] else 0
            work.append((X.indptr.astype(np.int64, copy=False), X.indices.astype(np.int32, copy=False),
                         X.data if X.dtype in (np.float32, np.float64) else X.data.astype(np.float64),
                         y.astype(np.float64), order.astype(np.int64, copy=False), width))
        wbuf = np.empty(max([w[-1] for w in work] + [1]))
        z, n = self.state_.z, self.state_.n
        args = (float(self.alpha), float(self.beta), float(self.l1), float(self.l2), wbuf)
        n_fit = sum(int(w[4].size) for w in work)
        shuffler = np.random.default_rng(SHUFFLE_SEED)
        stopped, loss, done, checked = False, 0.0, 0, 0
        for p in range(int(self.passes)):
            loss = 0.0
            for b, start, stop in _visit_plan([w[4] for w in work], shuffler if self.shuffle else None):
                if deadline is not None and done - checked >= CHUNK_ROWS:  # between chunks of rows
                    checked = done
                    if time.monotonic() > deadline:
                        stopped = True  # work remains and the budget is spent
                        break
                indptr, indices, data, yy, order, _ = work[b]
                loss += _ftrl_rows(indptr, indices, data, yy, order, start, stop, z, n, *args)
                done += stop - start
            if progress is not None:
                progress(p + 1, loss / max(n_fit, 1))
            if stopped:
                break
        if self.exact_intercept and not stopped:
            z[-1] = _exact_intercept_z(work, z, n, float(self.alpha), float(self.beta), float(self.l1),
                                       float(self.l2))
        self.state_ = FTRLState(z, n, self.state_.rows_seen + done)
        self._finish(n_given, n_fit, time.perf_counter() - started, stopped, loss / max(n_fit, 1))
        return self

    def _finish(self, n_train: int, n_fit: int, seconds: float, stopped: bool, last_loss: float) -> None:
        z, n = self.state_.z, self.state_.n
        alpha, beta, l1, l2 = float(self.alpha), float(self.beta), float(self.l1), float(self.l2)
        self.indices_, self.weights_ = _nonzero_weights(z, n, alpha, beta, l1, l2)
        self.raw_intercept_ = float(-z[-1] / ((beta + math.sqrt(n[-1])) / alpha))
        self.intercept_ = self.raw_intercept_ + math.log(float(self.downsample_rate))
        self.n_features_in_ = self.state_.n_features
        self.bits_ = bits_of(self.n_features_in_)
        self.n_nonzero_ = int(self.indices_.size)
        self.classes_ = np.array([0, 1])
        self.solver_ = "ftrl"
        self.n_iter_ = int(self.passes)
        self.converged_ = not stopped
        self.stopped_early_ = stopped
        self.n_train_rows_ = n_train
        self.n_fit_rows_ = n_fit
        self.fit_seconds_ = seconds
        self.progressive_log_loss_ = last_loss

    # -- prediction ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "indices_"):
            raise NotFittedError("FTRLLogisticRegression is not fitted yet; call fit(X, y) first")

    def decision_function(self, X) -> np.ndarray:
        """Recalibrated logit of the click probability."""
        self._check_fitted()
        return csr_margin(as_csr(X), self.indices_, self.weights_, self.n_features_in_) + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2) array: P(no click), P(click) at the true (recalibrated) rate."""
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        """1 where the recalibrated click probability exceeds 0.5."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def hyperparameters(self) -> dict:
        """The constructor parameters as plain JSON-able values."""
        return {k: (v.item() if isinstance(v, np.generic) else v if isinstance(v, (str, int, float, bool, type(None)))
                    else repr(v)) for k, v in self.get_params(deep=False).items()}
