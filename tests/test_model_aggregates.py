"""The aggregate-feature snapshot travels with the model, checksummed like the weights."""

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from shared.featurize import load_spec
from training.artifacts import ModelDirError, load_model_dir, save_model_dir
from training.model import SparseLogisticRegression


def fitted():
    rng = np.random.default_rng(0)
    # ~5 random columns per row (sp.random would draw from all 400 * 2**18 cells: ~10 s)
    cols = np.random.default_rng(1).integers(0, 1 << 18, size=(400, 5))
    X = sp.csr_matrix((np.ones(cols.size, dtype=np.float32), (np.repeat(np.arange(400), 5), cols.ravel())),
                      shape=(400, 1 << 18))
    X.sum_duplicates()
    X.data[:] = 1.0
    y = (rng.random(400) < 0.2).astype(int)
    y[:2] = [0, 1]
    return SparseLogisticRegression(C=1.0).fit(X, y)


def snapshot_table():
    return pa.table({"entity": ["user", "user", "site"], "entity_key": ["u1", "u2", "s1"],
                     "imps_1d": [1, 2, 3], "clicks_1d": [0, 1, 0], "imps_7d": [5, 6, 7], "clicks_7d": [1, 2, 0]})


def test_snapshot_round_trip_and_tamper_refused(tmp_path):
    spec = load_spec("generated")
    spec_text = spec.to_toml().replace("bits = 22", "bits = 18")
    model_dir = save_model_dir(fitted(), spec_text, "fp", tmp_path / "m", aggregates=snapshot_table())
    loaded = load_model_dir(model_dir)
    snap = loaded.aggregate_snapshot()
    enriched = snap.enrich({"user_id": "u2", "site_id": "zz"})
    assert enriched["user_imps_7d"] == 6 and enriched["user_clicks_1d"] == 1
    assert enriched["site_imps_7d"] == 0  # unseen entity: zero counts, as in training

    plain = save_model_dir(fitted(), spec_text, "fp", tmp_path / "plain")
    assert load_model_dir(plain).aggregate_snapshot() is None

    with open(model_dir / "aggregates.parquet", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelDirError, match="checksum mismatch for aggregates.parquet"):
        load_model_dir(model_dir)


def test_bidder_scorer_enriches_records_from_the_snapshot(tmp_path):
    from serving.scorer import load_scorer
    from shared.featurize import Featurizer, FeatureSpec

    spec_text = load_spec("generated_agg").to_toml().replace("bits = 22", "bits = 18")
    spec = FeatureSpec.from_toml(spec_text)
    model_dir = save_model_dir(fitted(), spec_text, spec.fingerprint, tmp_path / "m", aggregates=snapshot_table())
    scorer = load_scorer(model_dir)
    record = {"user_id": "u2", "site_id": "s1", "advertiser_id": "a9"}
    got = scorer.score_records([record])[0]

    def ctr(features):
        idx, vals = Featurizer(spec).transform_record(features)
        z = scorer.intercept + float(np.dot(scorer.dense_weights[idx].astype(np.float64), vals))
        return 1.0 / (1.0 + np.exp(-z))

    want = ctr(load_model_dir(model_dir).aggregate_snapshot().enrich(record))
    assert got == pytest.approx(want, rel=1e-9)
    idx, _, _ = scorer.entries([record])
    enriched = Featurizer(spec).transform_record(load_model_dir(model_dir).aggregate_snapshot().enrich(record))[0]
    assert np.array_equal(np.sort(idx), enriched)
    assert not np.array_equal(np.sort(idx), Featurizer(spec).transform_record(record)[0])  # the snapshot changed them
