"""The model directory's declared parts: ignorable parts are verified and skipped by the real
scorer, unknown undeclared files are refused by name, and the engine state round-trips."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from serving.scorer import ModelLoadError, load_scorer
from shared.featurize import Featurizer, load_spec
from shared.model.format import (
    CHECKSUMS_FILE, ENGINE_STATE_FILE, META_FILE, MODEL_FILES, ModelDirError, UnknownPartsError, load_model_dir,
    sha256_file, write_model_dir,
)
from shared.model.scoring import dense_weights, sorted_pairs_margin, sparse_margin
from synthetic.sample import generate_impressions
from training.artifacts import load_engine_state, save_model_dir
from training.model import SparseLogisticRegression

STATE = {"z": np.linspace(-1.0, 1.0, 7), "n": np.arange(7, dtype=np.float32), "t": np.int64(42)}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(model, spec, records): a small real model on generated impressions."""
    imps = generate_impressions(600, seed=3, workdir=tmp_path_factory.mktemp("imps"))
    spec = load_spec("generated")
    records = [imp.fields for imp in imps]
    X = Featurizer(spec).transform_records(records)
    y = np.array([imp.clicked for imp in imps], dtype=np.int8)
    model = SparseLogisticRegression(C=0.5, max_iter=100, random_state=0).fit(X, y)
    return model, spec, records


def save(fitted, out: Path, **kwargs) -> Path:
    model, spec, _ = fitted
    return save_model_dir(model, spec.to_toml(), spec.fingerprint, out, **kwargs)


def reseal(d: Path, names) -> None:
    """Rewrite checksums.json over ``names`` (as a writer would)."""
    (d / CHECKSUMS_FILE).write_text(json.dumps({n: sha256_file(d / n) for n in names}))


def test_ignorable_engine_state_is_served_like_without_it(tmp_path, fitted):
    plain = save(fitted, tmp_path / "plain")
    with_state = save(fitted, tmp_path / "state", engine_state=STATE)
    meta = json.loads((with_state / META_FILE).read_text())
    assert meta["parts"] == {"weights.npz": "apply", "feature_spec.toml": "apply", "model.json": "apply",
                             ENGINE_STATE_FILE: "ignore"}
    assert ENGINE_STATE_FILE in json.loads((with_state / CHECKSUMS_FILE).read_text())
    assert load_model_dir(with_state).parts[ENGINE_STATE_FILE] == "ignore"

    a, b = load_scorer(plain), load_scorer(with_state)
    records = fitted[2][:50]
    assert a.score_records(records) == b.score_records(records)
    # alone or in a batch: the same bits
    assert [b.score_records([r])[0] for r in records[:10]] == b.score_records(records[:10])


def test_unknown_undeclared_file_is_refused_by_name(tmp_path, fitted):
    d = save(fitted, tmp_path / "m")
    (d / "posterior.npz").write_bytes(b"\x00" * 32)
    reseal(d, [*MODEL_FILES, "posterior.npz"])
    with pytest.raises(UnknownPartsError, match="posterior.npz") as e:
        load_model_dir(d)
    assert e.value.files == ["posterior.npz"]
    with pytest.raises(ModelLoadError, match="does not know how to apply posterior.npz") as e:
        load_scorer(d)
    assert e.value.reason == "unsupported_model_files"


def test_unknown_file_declared_ignorable_is_verified_then_skipped(tmp_path, fitted):
    """A newer writer's training-only file, declared ``ignore`` in model.json "parts"."""
    plain = save(fitted, tmp_path / "plain")
    d = save(fitted, tmp_path / "newer")
    (d / "posterior.npz").write_bytes(b"\x01" * 32)
    meta = json.loads((d / META_FILE).read_text())
    meta["parts"]["posterior.npz"] = "ignore"
    (d / META_FILE).write_text(json.dumps(meta))
    reseal(d, [*MODEL_FILES, "posterior.npz"])
    records = fitted[2][:20]
    assert load_scorer(d).score_records(records) == load_scorer(plain).score_records(records)

    # declared "apply": this reader cannot apply it, so refused
    meta["parts"]["posterior.npz"] = "apply"
    (d / META_FILE).write_text(json.dumps(meta))
    reseal(d, [*MODEL_FILES, "posterior.npz"])
    with pytest.raises(ModelLoadError, match="posterior.npz") as e:
        load_scorer(d)
    assert e.value.reason == "unsupported_model_files"

    # an ignorable file is still checksummed
    meta["parts"]["posterior.npz"] = "ignore"
    (d / META_FILE).write_text(json.dumps(meta))
    reseal(d, [*MODEL_FILES, "posterior.npz"])
    (d / "posterior.npz").write_bytes(b"\x02" * 32)
    with pytest.raises(ModelLoadError, match="checksum mismatch for posterior.npz"):
        load_scorer(d)


def test_tampered_ignorable_part_is_refused(tmp_path, fitted):
    d = save(fitted, tmp_path / "m", engine_state=STATE)
    path = d / ENGINE_STATE_FILE
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match=f"checksum mismatch for {ENGINE_STATE_FILE}") as e:
        load_scorer(d)
    assert e.value.reason == "checksum_mismatch"
    with pytest.raises(ModelDirError, match=f"checksum mismatch for {ENGINE_STATE_FILE}"):
        load_engine_state(d)


def test_declared_part_without_checksum_is_refused(tmp_path, fitted):
    d = save(fitted, tmp_path / "m", engine_state=STATE)
    reseal(d, MODEL_FILES)  # engine_state.npz declared in model.json but not checksummed
    with pytest.raises(ModelDirError, match=f"declares {ENGINE_STATE_FILE}"):
        load_model_dir(d)


def test_model_dir_without_parts_still_loads(tmp_path, fitted):
    """Directories written before model.json had "parts"."""
    d = save(fitted, tmp_path / "old", engine_state=STATE)
    meta = json.loads((d / META_FILE).read_text())
    del meta["parts"]
    (d / META_FILE).write_text(json.dumps(meta))
    reseal(d, [*MODEL_FILES, ENGINE_STATE_FILE])
    loaded = load_model_dir(d)
    assert loaded.parts[ENGINE_STATE_FILE] == "ignore"
    records = fitted[2][:10]
    assert load_scorer(d).score_records(records) == load_scorer(save(fitted, tmp_path / "p")).score_records(records)


def test_engine_state_round_trip_without_pickle(tmp_path, fitted, monkeypatch):
    d = save(fitted, tmp_path / "m", engine_state=STATE)

    def no_pickle(*a, **k):
        raise AssertionError("pickle used while reading the engine state")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    state = load_engine_state(d)
    assert sorted(state) == sorted(STATE)
    for k, v in STATE.items():
        np.testing.assert_array_equal(state[k], v)
        assert state[k].dtype == np.asarray(v).dtype
    assert load_engine_state(save(fitted, tmp_path / "none")) is None
    with pytest.raises(TypeError, match="object array"):
        save(fitted, tmp_path / "obj", engine_state={"x": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "obj").exists()


def test_writer_takes_declared_parts_only(tmp_path):
    with pytest.raises(ValueError, match="not an optional part"):
        write_model_dir(tmp_path / "m", indices=np.zeros(0, np.int64), weights=np.zeros(0), intercept=0.0, bits=4,
                        spec=b"", meta={}, parts={"posterior.npz": lambda p: p.write_bytes(b"")})
    with pytest.raises(ValueError, match="format's own"):
        write_model_dir(tmp_path / "m", indices=np.zeros(0, np.int64), weights=np.zeros(0), intercept=0.0, bits=4,
                        spec=b"", meta={"parts": {}})
    assert not any(tmp_path.iterdir())


def test_sorted_pairs_margin_is_sparse_margin():
    rng = np.random.default_rng(0)
    n_features, n_rows = 1 << 10, 40
    w_idx = np.sort(rng.choice(n_features, 200, replace=False)).astype(np.int64)
    w_val = rng.normal(size=200)
    col = rng.integers(0, n_features, 500)
    val = rng.normal(size=500)
    rows = np.sort(rng.integers(0, n_rows, 500))
    dense = dense_weights(w_idx, w_val, n_features)
    assert np.array_equal(sorted_pairs_margin(col, val, rows, n_rows, w_idx, w_val),
                          sparse_margin(col, val, rows, n_rows, dense))
    assert np.array_equal(sorted_pairs_margin(col, None, rows, n_rows, w_idx, w_val),
                          sparse_margin(col, None, rows, n_rows, dense))
    assert np.array_equal(sorted_pairs_margin(col, val, rows, n_rows, w_idx[:0], w_val[:0]), np.zeros(n_rows))

