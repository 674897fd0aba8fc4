"""The premise of the serving tests' shared set-up (:mod:`serving_support`)."""

from __future__ import annotations

import numpy as np

from serving_support import serving_world
from training.artifacts import load_model_dir


def test_offline_models_differ(tmp_path_factory):
    """The premise of the swap tests: the two models give clearly different scores."""
    w = serving_world(tmp_path_factory)
    a, b = w.offline["a"].ctrs(w.fields[:200]), w.offline["b"].ctrs(w.fields[:200])
    assert np.median(np.abs(np.log(a) - np.log(b))) > 0.01
    assert load_model_dir(w.dirs["mismatch"]).fingerprint == "0" * 64
