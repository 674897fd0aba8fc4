"""What every training engine does to its input: check X and y, negative downsampling and
its recalibration.

Negative downsampling with keep-rate ``w`` in (0, 1] keeps every positive and each negative
with probability ``w``. A model fitted on that sample predicts ``p`` = P(click | x, kept);
the true rate is ``q = p / (p + (1 - p) / w)``, exactly a shift of the logit by ``ln w``,
so engines fold ``ln w`` into the intercept they save and every scorer is recalibrated.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state


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


def as_csr(X) -> sp.csr_matrix:
    """X as a float32/float64 CSR matrix (dense 2-d input is converted)."""
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


def as_labels(y, n_rows: int) -> np.ndarray:
    """y as int8 0/1 labels, one per row of X."""
    y = np.asarray(y).ravel()
    if y.shape[0] != n_rows:
        raise ValueError(f"y has {y.shape[0]} labels but X has {n_rows} rows")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"labels must be 0 or 1, found {bad.tolist()}")
    return y.astype(np.int8)


def bits_of(n: int) -> int | None:
    """log2(n) when n is a power of two, else None."""
    return n.bit_length() - 1 if n > 0 and n & (n - 1) == 0 else None
