"""The one sparse margin and sigmoid every stage scores with.

A model is ``P(click | x) = sigmoid(intercept + sum_j w[col_j] * val_j)`` over the
feature entries of a row. Training, the bidder, segment bundles and monitoring all call
these functions, so research and production compute the same number.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp


def sigmoid(z: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Numerically stable logistic function on arrays (no overflow for large |z|):
    ``exp(-log(1 + exp(-z)))`` with ``np.logaddexp``, one pass and no masks."""
    return np.exp(-np.logaddexp(0.0, np.negative(np.asarray(z, dtype=np.float64))))


def sparse_margin(col: np.ndarray, val: np.ndarray | None, row_ids: np.ndarray, n_rows: int,
                  dense_weights: np.ndarray) -> np.ndarray:
    """Per-row sums of ``dense_weights[col] * val`` (``val`` None = all 1.0), in float64 and
    in entry order (``np.bincount``): a row gets the same bits alone or in a batch."""
    w = dense_weights[col].astype(np.float64)
    if val is not None:
        w *= val
    return np.bincount(row_ids, weights=w, minlength=n_rows)


def dense_weights(indices: np.ndarray, weights: np.ndarray, n_features: int,
                  dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """The weight vector of length ``n_features`` from its non-zeros."""
    dense = np.zeros(n_features, dtype=dtype)
    dense[indices] = weights
    return dense


def csr_margin(X: sp.csr_matrix, indices: np.ndarray, weights: np.ndarray, n_features: int) -> np.ndarray:
    """``X @ w`` (no intercept) for a CSR matrix with ``n_features`` columns."""
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} columns, the model has {n_features}")
    return np.asarray(X @ dense_weights(indices, weights, n_features), dtype=np.float64).ravel()


def sorted_pairs_margin(col: np.ndarray, val: np.ndarray | None, row_ids: np.ndarray, n_rows: int,
                        w_idx: np.ndarray, w_val: np.ndarray) -> np.ndarray:
    """:func:`sparse_margin` for weights given as sorted (indices, values) pairs instead of a
    dense vector: a binary search per entry, for weight spaces too large to densify (a
    bundle's (segment, column) keys, weights kept sparse on Spark executors). An entry
    whose column has no weight adds nothing (its value is zeroed, so no weight copy)."""
    if w_idx.size == 0:
        return np.zeros(n_rows, dtype=np.float64)
    pos = np.minimum(np.searchsorted(w_idx, col), w_idx.size - 1)
    hit = w_idx[pos] == col
    v = hit.astype(np.float64) if val is None else np.where(hit, np.asarray(val, dtype=np.float64), 0.0)
    return sparse_margin(pos, v, row_ids, n_rows, w_val)
