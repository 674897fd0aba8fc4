"""Helpers of the training tests (not a test module): known-probability synthetic data
(:func:`hashed_problem`, checked in ``test_training_data.py``) and the MLflow store the
training and serving test modules share (:func:`shared_store`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def hashed_problem(n: int, bits: int = 12, fields: int = 8, vocab: int = 40, base_logit: float = -3.5,
                   weight_sd: float = 0.6, seed: int = 0, weights_seed: int = 1234):
    """(X, y, p): ``fields`` one-hot categorical fields per row hashed into 2**bits
    columns (CSR float32, like the featurizer's output), labels drawn from the true
    probabilities ``p = sigmoid(base_logit + sum of the row's column weights)``.

    ``weights_seed`` fixes the true model, ``seed`` the rows: two calls with different
    ``seed`` are train and test draws from the same distribution.
    """
    n_cols = 1 << bits
    w_true = np.random.default_rng(weights_seed).normal(0.0, weight_sd, size=(fields, vocab))
    col_of = np.random.default_rng(weights_seed + 1).integers(0, n_cols, size=(fields, vocab))
    rng = np.random.default_rng(seed)
    values = rng.integers(0, vocab, size=(n, fields))
    f = np.arange(fields)[None, :]
    margin = base_logit + w_true[f, values].sum(axis=1)
    p = 1.0 / (1.0 + np.exp(-margin))
    y = (rng.random(n) < p).astype(np.int8)
    indptr = np.arange(0, n * fields + 1, fields)
    X = sp.csr_matrix((np.ones(n * fields, dtype=np.float32), col_of[f, values].ravel(), indptr),
                      shape=(n, n_cols))
    X.sum_duplicates()
    return X, y, p


_STORE = {}


def shared_store(tmp_path_factory):
    """Settings pointing at one real MLflow SQLite store for the whole test session
    (creating the schema takes seconds, so the training test modules share it)."""
    if "settings" not in _STORE:
        from shared.config import load_settings

        home = tmp_path_factory.mktemp("training_mlflow_home")
        _STORE["settings"] = load_settings({"home": str(home)}, env={})
    return _STORE["settings"]


def ftrl_fixed_space(l1: float = 0.5) -> str:
    """A search space of one fixed FTRL setting (a fast, deterministic ``ctr train``)."""
    return f"""
[budget]
trials = 1
wall_seconds = 60
[fixed]
engine = "ftrl"
alpha = 0.1
l2 = 1.0
l1 = {l1}
passes = 2
"""


#: ``ctr train`` without a search (fast, deterministic).
FTRL_FIXED_SPACE = ftrl_fixed_space()
