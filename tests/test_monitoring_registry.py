"""Monitoring against a real MLflow registry: two versions registered by the training code,
parameter drift computed from their downloaded plain model directories into the Delta
table, and ``ctr schedule --dry-run`` deciding from the registry, MLflow runs and the
world's monitoring tables, recording its decision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitoring_support import fit_dir

pytestmark = pytest.mark.spark

MODEL = "monitoring-test-model"
TRAIN = "[2026-03-01, 2026-03-02)"


@pytest.fixture(scope="module")
def registered(world, tmp_path_factory):
    from shared.featurize import Featurizer, FeatureSpec
    from training.metrics import evaluate
    from training.tracking import log_training_run

    tmp = tmp_path_factory.mktemp("registered")
    out = []
    for name, flip in (("v1", False), ("v2", True)):
        loaded, recs = fit_dir(tmp, name, 18, flip)
        X = Featurizer(FeatureSpec.from_toml(loaded.spec_text)).transform_records(recs[:500])
        y = (np.arange(500) % 7 == 0).astype(np.int8)
        metrics = {"test": evaluate(y, loaded.score_batch(X))}
        ref = {"table": "observations", "delta_version": 0, "train_window": TRAIN,
               "windows": {"test": ["2026-03-02", "2026-03-03"]}}
        run = log_training_run(world.settings, loaded.path, model_name=MODEL, metrics=metrics, data_reference=ref,
                               log_pyfunc=False, run_name=f"train {TRAIN}")
        out.append((run.version, loaded))
    return out, recs[:300]


def test_registry_versions_carry_their_training_window(world, registered):
    from monitoring import registry

    infos = registry.versions(world.settings, MODEL)
    assert [v.version for v in infos] == [registered[0][0][0], registered[0][1][0]]
    assert str(infos[0].train_window) == TRAIN and infos[0].delta_version == 0
    assert registry.champion(infos) is not None
    runs = registry.training_runs(world.settings)
    assert [r.registered_version for r in runs] == [v.version for v in infos]
    assert all(r.seconds and r.seconds > 0 and r.status == "FINISHED" for r in runs)


def test_param_drift_from_registered_model_dirs(world, registered, spark):
    from monitoring import drift, tables
    from monitoring.drift import compare_models

    (va, a), (vb, b) = registered[0]
    recs = registered[1]
    rows, version = drift.param_drift(spark, world.settings, MODEL, records=recs)
    assert version is not None and len(rows) == 1
    stored = tables.read(spark, world.settings, tables.PARAM_DRIFT, f"model_name = '{MODEL}'").to_pylist()
    assert len(stored) == 1
    r = stored[0]
    assert (r["from_version"], r["to_version"], r["basis"]) == (va, vb, "index")
    expected = compare_models(a, b, recs)  # the same files, loaded from where training wrote them
    assert r["l2_change"] == pytest.approx(expected["l2_change"], rel=1e-12)
    assert r["appeared_share"] == pytest.approx(expected["appeared_share"])
    assert "site_id=s0" in r["top_features"][0]["name"]
    # nothing new to compare: no new commit
    again, again_version = drift.param_drift(spark, world.settings, MODEL, records=recs)
    assert again_version is None and len(again) == 1


def test_schedule_dry_run_decides_and_records(world, registered, spark, tmp_path, capsys):
    from monitoring import tables
    from ctr.cli import main

    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nmax_age_hours = 0.000001\nmin_hours_between_trainings = 0\n")
    rc = main(["--home", str(world.settings.home), "schedule", "--model-name", MODEL, "--dry-run",
               "--policy", str(policy), "--trials", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "decision: RETRAIN" in out and "model age" in out
    # the newest day whose clicks were all ingested is 2026-03-03: test on it, validate on the day
    # before, train on the 5 days before that
    assert ("would run: ctr train --start 2026-02-25 --train-days 5 --validation-days 1 --test-days 1 "
            f"--model-name {MODEL} --trials 3") in out
    rows = tables.read(spark, world.settings, tables.SCHEDULE_DECISIONS, f"model_name = '{MODEL}'").to_pylist()
    assert len(rows) == 1
    d = rows[0]
    assert d["action"] == "retrain" and d["retrain"] and d["dry_run"] and "age" in d["triggers"]
    assert d["command"].startswith("ctr train --start 2026-02-25")
    inputs = json.loads(d["inputs_json"])
    assert inputs["has_model"] and len(inputs["past_run_seconds"]) == 2
