"""The MLflow pyfunc: raw fields in, the same probabilities as the plain-file scorer
(and as the bidder's record path), with no pickle in the saved model."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from shared.featurize import FeatureSpec, Featurizer
from training_support import shared_store
from training.artifacts import load_model_dir, save_model_dir
from training.metrics import evaluate
from training.model import SparseLogisticRegression
from training.pyfunc import OUTPUT_COLUMN, save_pyfunc_model
from training.tracking import CHAMPION, log_training_run

SPEC = """
version = 1
name = "pyfunc-unit"
bits = 18
seed = 7
missing_token = "__missing__"

[[fields]]
name = "site_id"
kind = "categorical"

[[fields]]
name = "advertiser_id"
kind = "categorical"

[[fields]]
name = "user_segments"
kind = "multivalued"

[[fields]]
name = "bidfloor"
kind = "numeric"
transform = "buckets"
boundaries = [0.1, 0.5, 1.0]

[[crosses]]
fields = ["site_id", "advertiser_id"]
"""


def raw_frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    site = rng.integers(0, 25, n)
    adv = rng.integers(0, 6, n)
    site_effect = np.random.default_rng(99).normal(0, 0.8, 25)
    logit = -2.5 + site_effect[site] + 0.3 * adv
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({
        "site_id": [f"site-{s}" for s in site],
        "advertiser_id": [f"adv-{a}" for a in adv],
        "user_segments": [[f"seg{j}" for j in rng.choice(12, rng.integers(0, 3), replace=False)] for _ in range(n)],
        "bidfloor": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 0.3, n)),
    })
    frame.loc[3, "site_id"] = None  # a missing value goes through the missing token
    return frame, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    spec = FeatureSpec.from_toml(SPEC)
    frame, y = raw_frame(4000, seed=1)
    X = Featurizer(spec).transform(frame)
    model = SparseLogisticRegression(C=1.0, downsample_rate=0.5, max_iter=100, random_state=0).fit(X, y)
    d = save_model_dir(model, SPEC, spec.fingerprint, tmp_path_factory.mktemp("pyfunc") / "model")
    return spec, model, d


def test_pyfunc_scores_raw_fields_like_the_plain_files(trained, tmp_path):
    spec, model, model_dir = trained
    out = save_pyfunc_model(model_dir, tmp_path / "mlflow_model")
    # Logged as code: no pickle file anywhere in the MLflow model.
    assert not [p for p in out.rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert "python_model.pkl" not in (out / "MLmodel").read_text()

    frame, _ = raw_frame(300, seed=2)
    pred = mlflow.pyfunc.load_model(str(out)).predict(frame)
    assert list(pred.columns) == [OUTPUT_COLUMN] and len(pred) == 300
    fz = Featurizer(spec)
    np.testing.assert_allclose(pred[OUTPUT_COLUMN].to_numpy(), model.predict_proba(fz.transform(frame))[:, 1],
                               rtol=1e-5)
    # The bidder's path: one record -> (indices, values) -> plain-file score.
    loaded = load_model_dir(model_dir)
    for i, record in enumerate(frame.head(25).to_dict("records")):
        idx, vals = fz.transform_record(record)
        assert loaded.score(idx, vals) == pytest.approx(pred[OUTPUT_COLUMN].iloc[i], rel=1e-5)


def test_pyfunc_refuses_weights_for_another_spec(trained, tmp_path):
    _, model, _ = trained
    wrong = save_model_dir(model, SPEC, "0" * 64, tmp_path / "wrong")  # fingerprint of some other spec
    out = save_pyfunc_model(wrong, tmp_path / "mlflow_wrong")
    with pytest.raises(Exception, match="fingerprint"):
        mlflow.pyfunc.load_model(str(out))


def test_registered_champion_serves_through_pyfunc(trained, tmp_path_factory):
    store = shared_store(tmp_path_factory)
    spec, model, model_dir = trained
    frame, y = raw_frame(1000, seed=3)
    metrics = {"test": evaluate(y, model.predict_proba(Featurizer(spec).transform(frame))[:, 1])}
    run = log_training_run(store, model_dir, model_name="pyfunc-served", metrics=metrics,
                           data_reference={"table_path": "/w/obs", "delta_version": 1,
                                           "windows": {"test": ["2024-01-01", "2024-01-02"]}})
    assert run.decision.promoted and run.model_uri.startswith("models:/")
    served = mlflow.pyfunc.load_model(f"models:/pyfunc-served@{CHAMPION}")
    pred = served.predict(frame.head(50))[OUTPUT_COLUMN].to_numpy()
    np.testing.assert_allclose(pred, model.predict_proba(Featurizer(spec).transform(frame.head(50)))[:, 1],
                               rtol=1e-5)
