"""Click-prediction metrics as pure functions of labels ``y`` (0/1) and predicted
click probabilities ``p``. Used by training, the promotion gate and monitoring.

Numerical safety: probabilities are clipped to ``[eps, 1 - eps]`` before any
logarithm, so a confident wrong prediction costs ``-ln(eps)`` instead of
``inf``. Quantities undefined on the given window (AUC with one class only,
normalized entropy or calibration with no clicks) are ``nan``, never an error,
so a monitoring job over a quiet window still produces a row.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

EPS = 1e-15


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.shape[0]} labels, {p.shape[0]} predictions")
    if y.size == 0:
        raise ValueError("metrics need at least one row")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError(f"predictions contain {int((~np.isfinite(p)).sum())} non-finite values")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"predictions must be probabilities in [0, 1], got range [{p.min()}, {p.max()}]")
    return y.astype(np.float64), p


def binary_entropy(rate: float, eps: float = EPS) -> float:
    """Entropy (nats) of a Bernoulli(rate): the log-loss of always predicting ``rate``."""
    r = min(max(float(rate), eps), 1.0 - eps)
    return -(r * math.log(r) + (1.0 - r) * math.log(1.0 - r))


def log_loss(y, p, eps: float = EPS) -> float:
    """Mean negative log-likelihood (nats) with ``p`` clipped to [eps, 1 - eps]."""
    y, p = _check(y, p)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def normalized_entropy(y, p, eps: float = EPS) -> float:
    """Log-loss divided by the entropy of the window's base CTR (He et al., 2014).

    Below 1 means better than predicting the base rate for everyone; ``nan`` when
    the window has no clicks or only clicks (the base-rate entropy is 0).
    """
    y, p = _check(y, p)
    base = float(y.mean())
    if base <= 0.0 or base >= 1.0:
        return math.nan
    return log_loss(y, p, eps) / binary_entropy(base, eps)


def auc(y, p) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties);
    ``nan`` when only one class is present."""
    y, p = _check(y, p)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(p, method="average")
    u = float(ranks[y == 1].sum()) - n_pos * (n_pos + 1.0) / 2.0
    return u / (n_pos * n_neg)


def calibration(y, p) -> float:
    """Mean predicted CTR / observed CTR (1.0 is calibrated); ``nan`` with no clicks."""
    y, p = _check(y, p)
    observed = float(y.mean())
    if observed == 0.0:
        return math.nan
    return float(p.mean()) / observed


def reliability_curve(y, p, n_bins: int = 10, strategy: str = "quantile") -> dict[str, list]:
    """Reliability-diagram data: per bin of predicted probability, the mean
    prediction and the observed click rate.

    ``strategy="uniform"`` uses equal-width bins on [0, 1]; ``"quantile"`` (default,
    better suited to CTRs that sit near 0) uses bins holding about the same
    number of rows, with duplicate edges merged. Empty bins are omitted. Returns
    JSON-able lists of equal length: ``bin_lower``, ``bin_upper``, ``count``,
    ``mean_predicted``, ``observed_rate``.
    """
    y, p = _check(y, p)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, int(n_bins) + 1)))
        if edges.size == 1:  # all predictions equal
            edges = np.array([edges[0], edges[0]])
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    # Bin i holds edges[i] <= p < edges[i+1]; the last bin also holds its upper edge.
    which = np.searchsorted(edges[1:-1], p, side="right")
    n = edges.size - 1
    count = np.bincount(which, minlength=n)
    sum_p = np.bincount(which, weights=p, minlength=n)
    sum_y = np.bincount(which, weights=y, minlength=n)
    keep = count > 0
    return {
        "bin_lower": edges[:-1][keep].tolist(),
        "bin_upper": edges[1:][keep].tolist(),
        "count": count[keep].astype(int).tolist(),
        "mean_predicted": (sum_p[keep] / count[keep]).tolist(),
        "observed_rate": (sum_y[keep] / count[keep]).tolist(),
    }


def evaluate(y, p, eps: float = EPS) -> dict[str, float]:
    """All scalar metrics for one window, as a flat dict of numbers (loggable as
    MLflow metrics): ``n``, ``positives``, ``base_ctr``, ``mean_predicted``,
    ``log_loss``, ``normalized_entropy``, ``auc``, ``calibration``."""
    y_, p_ = _check(y, p)
    return {
        "n": int(y_.size),
        "positives": int(y_.sum()),
        "base_ctr": float(y_.mean()),
        "mean_predicted": float(p_.mean()),
        "log_loss": log_loss(y_, p_, eps),
        "normalized_entropy": normalized_entropy(y_, p_, eps),
        "auc": auc(y_, p_),
        "calibration": calibration(y_, p_),
    }
