"""Run logging, registration, the promotion gate and rollback on a real MLflow
SQLite store (shared by the training tests; one registered model name per test)."""

from __future__ import annotations

import json

import mlflow
import pytest

from training_support import hashed_problem, shared_store
from training.artifacts import load_model_dir, save_model_dir
from training.metrics import evaluate, log_loss
from training.model import SparseLogisticRegression
from training.tracking import (
    CHAMPION, champion_version, download_model_dir, git_commit, list_versions, log_training_run,
    promote, rollback, holdout_window_id,
)

SPEC = 'version = 1\nname = "unit"\nbits = 12\nseed = 0\nmissing_token = "m"\n'
WINDOW = {"table_path": "/warehouse/observations", "delta_version": 4,
          "windows": {"train": ["2024-03-01", "2024-03-08"], "validation": ["2024-03-08", "2024-03-09"],
                      "test": ["2024-03-09", "2024-03-10"]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def data():
    train = hashed_problem(12_000, seed=21)
    test = hashed_problem(6_000, seed=22)
    return train, test


@pytest.fixture(scope="module")
def models(data):
    """Three real models of clearly different quality on the same test rows."""
    (X, y, _), (Xt, yt, _) = data
    fit = lambda C: SparseLogisticRegression(C=C, max_iter=100, random_state=0).fit(X, y)  # noqa: E731
    out = {name: fit(C) for name, C in (("weak", 1e-4), ("ok", 1e-2), ("good", 1.0))}
    lls = {k: log_loss(yt, m.predict_proba(Xt)[:, 1]) for k, m in out.items()}
    assert lls["good"] < lls["ok"] * 0.97 and lls["ok"] < lls["weak"] * 0.97  # the premise of the tests
    return out


def _log(store, tmp_path, data, model, name, tag, data_reference=WINDOW, **kw):
    _, (Xt, yt, _) = data
    test_metrics = evaluate(yt, model.predict_proba(Xt)[:, 1])
    d = save_model_dir(model, SPEC, "fp-" + tag, tmp_path / tag,
                       extra={"metrics": {"test": test_metrics}, "data_reference": data_reference})
    return log_training_run(store, d, model_name=name, metrics={"test": test_metrics},
                            data_reference=data_reference, log_pyfunc=False, run_name=tag, **kw)


def test_gate_promotes_only_better_models_and_records_why(store, tmp_path, data, models):
    name = "gate"
    first = _log(store, tmp_path, data, models["ok"], name, "v1")
    assert first.decision.promoted and first.decision.reason == "no current champion"
    assert champion_version(store, name) == first.version

    worse = _log(store, tmp_path, data, models["weak"], name, "v2")
    assert not worse.decision.promoted
    assert champion_version(store, name) == first.version  # champion unchanged
    mv = mlflow.MlflowClient().get_model_version(name, worse.version)
    assert mv.tags["gate.decision"] == "rejected"
    assert mv.tags["gate.champion_version"] == first.version
    assert float(mv.tags["gate.champion_test_log_loss"]) == pytest.approx(first.decision.candidate_log_loss)
    assert float(mv.tags["gate.candidate_test_log_loss"]) == pytest.approx(worse.decision.candidate_log_loss)
    assert mv.tags["gate.champion_log_loss_source"] == "recorded"
    assert float(mv.tags["gate.relative_improvement"]) < 0

    better = _log(store, tmp_path, data, models["good"], name, "v3")
    assert better.decision.promoted and better.decision.relative_improvement > 0.03
    assert champion_version(store, name) == better.version
    mv3 = mlflow.MlflowClient().get_model_version(name, better.version)
    assert mv3.tags["gate.decision"] == "promoted" and mv3.tags["champion.previous"] == first.version

    # Equal log-loss does not clear the margin.
    same = _log(store, tmp_path, data, models["good"], name, "v4", margin=0.01)
    assert not same.decision.promoted and same.decision.relative_improvement == pytest.approx(0.0, abs=1e-12)
    assert "margin" in same.decision.reason

    versions = list_versions(store, name)
    assert [v["version"] for v in versions] == [first.version, worse.version, better.version, same.version]
    assert [v["aliases"] for v in versions] == [[], [], [CHAMPION], []]
    assert [v["tags"]["gate.decision"] for v in versions] == ["promoted", "rejected", "promoted", "rejected"]


def test_rollback_restores_previous_champion_and_records_it(store, tmp_path, data, models):
    name = "rollback"
    v1 = _log(store, tmp_path, data, models["weak"], name, "v1").version
    v2 = _log(store, tmp_path, data, models["ok"], name, "v2").version
    v3 = _log(store, tmp_path, data, models["good"], name, "v3").version
    assert champion_version(store, name) == v3

    assert rollback(store, name, reason="bad calibration online") == v2
    assert champion_version(store, name) == v2
    client = mlflow.MlflowClient()
    assert client.get_model_version(name, v3).tags["rollback.replaced_by"] == v2
    restored = client.get_model_version(name, v2).tags
    assert restored["rollback.restored_from"] == v3 and restored["rollback.reason"] == "bad calibration online"
    last = json.loads(client.get_registered_model(name).tags["last_rollback"])
    assert last["from"] == v3 and last["to"] == v2

    assert rollback(store, name) == v1  # walks further back
    with pytest.raises(ValueError, match="no previous champion"):
        rollback(store, name)

    # Manual promotion records the champion it replaces, so rollback undoes it.
    assert promote(store, name, v3, reason="manual re-promotion") == v1
    assert champion_version(store, name) == v3
    assert rollback(store, name) == v1


def test_champion_on_another_window_needs_rescoring(store, tmp_path, data, models):
    name = "window"
    (_, _, _), (Xt, yt, _) = data
    _log(store, tmp_path, data, models["ok"], name, "v1")
    moved = json.loads(json.dumps(WINDOW))
    moved["windows"]["test"] = ["2024-03-10", "2024-03-11"]
    moved["delta_version"] = 5

    blind = _log(store, tmp_path, data, models["good"], name, "v2", data_reference=moved)
    assert not blind.decision.promoted and "another window" in blind.decision.reason
    assert blind.decision.test_window == holdout_window_id(moved) != holdout_window_id(WINDOW)

    seen = []

    def rescore(champion):  # the champion, read back from the registry's plain files
        seen.append(champion.fingerprint)
        return log_loss(yt, champion.score_batch(Xt))

    fair = _log(store, tmp_path, data, models["good"], name, "v3", data_reference=moved, champion_scorer=rescore)
    assert seen == ["fp-v1"]
    assert fair.decision.promoted and fair.decision.champion_log_loss_source == "rescored"
    assert fair.decision.champion_log_loss == pytest.approx(
        log_loss(yt, models["ok"].predict_proba(Xt)[:, 1]), rel=1e-5)


def test_run_records_provenance_and_plain_model_files(store, tmp_path, data, models):
    name = "provenance"
    run = _log(store, tmp_path, data, models["good"], name, "v1", params={"trainer": "unit-test"})
    got = mlflow.MlflowClient().get_run(run.run_id)
    assert got.data.tags["git_commit"] == git_commit() and len(git_commit()) in (40, 7)
    assert got.data.tags["pkg.mlflow"] == mlflow.__version__
    assert got.data.tags["pkg.scikit-learn"] not in ("", "not-installed")
    assert got.data.tags["feature_fingerprint"] == "fp-v1"
    assert got.data.params["data.table_path"] == "/warehouse/observations"
    assert got.data.params["data.delta_version"] == "4"
    assert json.loads(got.data.params["data.windows.test"]) == ["2024-03-09", "2024-03-10"]
    assert got.data.params["model.C"] == "1.0" and got.data.params["trainer"] == "unit-test"
    assert got.data.metrics["test_log_loss"] == pytest.approx(run.decision.candidate_log_loss)
    assert {"test_auc", "test_normalized_entropy", "test_calibration", "fit_seconds"} <= got.data.metrics.keys()
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.run_id)}
    assert {"model_dir", "data_reference.json", "environment.json", "gate_decision.json"} <= arts

    local = download_model_dir(store, name, CHAMPION, tmp_path / "dl")
    loaded = load_model_dir(local)  # checksums verified after the round trip through MLflow
    _, (Xt, _, _) = data
    assert loaded.score_batch(Xt[:50]) == pytest.approx(models["good"].predict_proba(Xt[:50])[:, 1], rel=1e-5)


def test_test_metrics_are_required(store, tmp_path, models):
    d = save_model_dir(models["ok"], SPEC, "fp", tmp_path / "m")
    with pytest.raises(ValueError, match="test"):
        log_training_run(store, d, model_name="x", metrics={"validation": {"log_loss": 0.1}},
                         data_reference=WINDOW, log_pyfunc=False)
