"""Known-probability synthetic data for the training tests (imported by the other
``test_training_*`` modules), and checks that it is what it claims to be."""

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


def test_problem_shape_and_rates():
    X, y, p = hashed_problem(20_000, bits=12, seed=3)
    assert X.shape == (20_000, 4096) and X.dtype == np.float32
    assert sp.isspmatrix_csr(X)
    assert set(np.unique(y)) == {0, 1}
    # Labels follow the stated probabilities: observed rate within 4 standard errors.
    se = np.sqrt(p.mean() * (1 - p.mean()) / y.size)
    assert abs(y.mean() - p.mean()) < 4 * se
    assert 0.02 < p.mean() < 0.15  # a CTR-like base rate


def test_same_model_across_seeds():
    X1, _, p1 = hashed_problem(50, seed=1)
    X2, _, p2 = hashed_problem(50, seed=2)
    assert X1.shape == X2.shape
    assert not np.allclose(p1, p2)  # different rows
    X1b, _, p1b = hashed_problem(50, seed=1)
    assert np.array_equal(p1, p1b) and (X1 != X1b).nnz == 0  # deterministic


_STORE = {}


def shared_store(tmp_path_factory):
    """Settings pointing at one real MLflow SQLite store for the whole test session
    (creating the schema takes seconds, so the training test modules share it)."""
    if "settings" not in _STORE:
        from shared.config import load_settings

        home = tmp_path_factory.mktemp("training_mlflow_home")
        _STORE["settings"] = load_settings({"home": str(home)}, env={})
    return _STORE["settings"]
