"""The known-probability synthetic data of the training tests (:func:`training_support.hashed_problem`)
is what it claims to be."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training_support import hashed_problem


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
