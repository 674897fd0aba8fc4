"""Plain-file model directory: round trip without pickle, tampering refused."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from training_support import hashed_problem
from training.artifacts import (
    CHECKSUMS_FILE, META_FILE, SPEC_FILE, WEIGHTS_FILE, ModelDirError, load_model_dir, save_model_dir,
    sha256_file,
)
from training.model import SparseLogisticRegression

SPEC_TEXT = """# a spec, byte for byte
version = 1
name = "unit"
bits = 12
seed = 0
missing_token = "__missing__"

[[fields]]
name = "site_id"
kind = "categorical"
"""
FINGERPRINT = "f" * 64


@pytest.fixture(scope="module")
def data():
    return hashed_problem(8000, bits=12, seed=5)


@pytest.fixture(scope="module")
def model(data):
    X, y, _ = data
    return SparseLogisticRegression(penalty="l1", C=0.5, downsample_rate=0.3, max_iter=100,
                                    random_state=0).fit(X, y)


@pytest.fixture
def model_dir(tmp_path, model):
    return save_model_dir(model, SPEC_TEXT, FINGERPRINT, tmp_path / "m",
                          extra={"metrics": {"test": {"log_loss": 0.2, "auc": float("nan")}},
                                 "data_reference": {"table_path": "/w/obs", "delta_version": 3}})


def test_round_trip_without_pickle(model_dir, model, data, monkeypatch):
    def no_pickle(*a, **k):
        raise AssertionError("pickle used while loading a model directory")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)

    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        [WEIGHTS_FILE, SPEC_FILE, META_FILE, CHECKSUMS_FILE])
    loaded = load_model_dir(model_dir)
    assert loaded.n_features == 4096 and loaded.bits == 12
    np.testing.assert_array_equal(loaded.indices, model.indices_)
    np.testing.assert_array_equal(loaded.weights, model.weights_)
    assert loaded.intercept == model.intercept_  # recalibrated intercept stored
    assert loaded.dense_weights.dtype == np.float32 and loaded.dense_weights.shape == (4096,)
    assert (model_dir / SPEC_FILE).read_text() == SPEC_TEXT and loaded.spec_text == SPEC_TEXT
    assert loaded.fingerprint == FINGERPRINT

    X, _, _ = data
    expected = model.predict_proba(X[:300])[:, 1]
    np.testing.assert_allclose(loaded.score_batch(X[:300]), expected, rtol=1e-5)
    for i in range(20):
        row = X[i]
        assert loaded.score(row.indices, row.data) == pytest.approx(expected[i], rel=1e-5)
    # values default to 1.0 (one-hot rows)
    assert loaded.score(X[0].indices) == pytest.approx(expected[0], rel=1e-5)

    meta = json.loads((model_dir / META_FILE).read_text())
    assert meta["fingerprint"] == FINGERPRINT and meta["downsample_rate"] == 0.3
    assert meta["hyperparameters"]["penalty"] == "l1" and meta["hyperparameters"]["C"] == 0.5
    assert meta["raw_intercept"] == pytest.approx(model.raw_intercept_)
    assert meta["metrics"]["test"] == {"log_loss": 0.2, "auc": None}  # NaN -> null: standard JSON
    assert meta["data_reference"]["delta_version"] == 3
    assert meta["created_at"].endswith("+00:00")
    checks = json.loads((model_dir / CHECKSUMS_FILE).read_text())
    assert checks == {n: sha256_file(model_dir / n) for n in (WEIGHTS_FILE, SPEC_FILE, META_FILE)}
    # The weights file is a plain npz that numpy reads with pickling disabled.
    with np.load(model_dir / WEIGHTS_FILE, allow_pickle=False) as z:
        assert sorted(z.files) == ["bits", "indices", "intercept", "n_features", "weights"]


def test_spec_given_as_path_is_copied_verbatim(tmp_path, model):
    spec = tmp_path / "spec.toml"
    spec.write_bytes(SPEC_TEXT.encode() + b"# trailing comment\n")
    out = save_model_dir(model, spec, FINGERPRINT, tmp_path / "m2")
    assert (out / SPEC_FILE).read_bytes() == spec.read_bytes()
    out3 = save_model_dir(model, str(spec), FINGERPRINT, tmp_path / "m3")
    assert (out3 / SPEC_FILE).read_bytes() == spec.read_bytes()


@pytest.mark.parametrize("name", [WEIGHTS_FILE, SPEC_FILE, META_FILE])
def test_tampered_file_is_refused_by_name(model_dir, name):
    path = model_dir / name
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelDirError, match=rf"checksum mismatch for {name}"):
        load_model_dir(model_dir)


def test_missing_files_are_refused(model_dir):
    (model_dir / SPEC_FILE).unlink()
    with pytest.raises(ModelDirError, match=f"{SPEC_FILE} is missing"):
        load_model_dir(model_dir)
    (model_dir / CHECKSUMS_FILE).unlink()
    with pytest.raises(ModelDirError, match=f"{CHECKSUMS_FILE} is missing"):
        load_model_dir(model_dir)


def test_checksums_file_must_cover_every_model_file(model_dir):
    checks = json.loads((model_dir / CHECKSUMS_FILE).read_text())
    del checks[WEIGHTS_FILE]
    (model_dir / CHECKSUMS_FILE).write_text(json.dumps(checks))
    with pytest.raises(ModelDirError, match=f"no checksum for {WEIGHTS_FILE}"):
        load_model_dir(model_dir)


def test_consistent_checksums_do_not_excuse_bad_weights(model_dir):
    # Rewrite the weights with an out-of-range index and fix up the checksum: still refused.
    with np.load(model_dir / WEIGHTS_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["indices"] = arrays["indices"].copy()
    arrays["indices"][-1] = 1 << 20
    np.savez(model_dir / WEIGHTS_FILE, **arrays)
    checks = json.loads((model_dir / CHECKSUMS_FILE).read_text())
    checks[WEIGHTS_FILE] = sha256_file(model_dir / WEIGHTS_FILE)
    (model_dir / CHECKSUMS_FILE).write_text(json.dumps(checks))
    with pytest.raises(ModelDirError, match="within"):
        load_model_dir(model_dir)


def test_save_refuses_existing_dir_reserved_keys_and_unfitted(tmp_path, model, model_dir):
    with pytest.raises(FileExistsError):
        save_model_dir(model, SPEC_TEXT, FINGERPRINT, model_dir)
    with pytest.raises(ValueError, match="reserved"):
        save_model_dir(model, SPEC_TEXT, FINGERPRINT, tmp_path / "x", extra={"fingerprint": "other"})
    with pytest.raises(ValueError, match="fingerprint"):
        save_model_dir(model, SPEC_TEXT, "", tmp_path / "y")
    with pytest.raises(Exception, match="not fitted"):
        save_model_dir(SparseLogisticRegression(), SPEC_TEXT, FINGERPRINT, tmp_path / "z")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dirs left behind


def test_score_input_checks(model_dir):
    loaded = load_model_dir(model_dir)
    with pytest.raises(ValueError, match="out of range"):
        loaded.score([5000], [1.0])
    with pytest.raises(ValueError, match="values"):
        loaded.score([1, 2], [1.0])
    with pytest.raises(TypeError, match="integers"):
        loaded.score([1.5], [1.0])
    with pytest.raises(TypeError):
        loaded.score_batch(np.zeros((2, 4096)))
    assert loaded.score([], []) == pytest.approx(1 / (1 + np.exp(-loaded.intercept)))
