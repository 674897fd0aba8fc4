"""``ctr backtest`` on the real local Spark session: rolling windows, one row per test day in
the Delta table ``backtest_metrics``, printed as a table."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import timedelta

import pytest

from synthetic.oracle import TruthOracle
from warehouse_support import START, tiny_warehouse

pytestmark = pytest.mark.spark


def test_backtest_cli_rolls_windows_and_writes_one_row_per_test_day(spark, tmp_path_factory, tmp_path, capsys):
    from feature_store import tables
    from shared.featurize import load_spec
    from training import cli
    from training.backtest import BACKTEST_TABLE, write_metrics

    settings = tiny_warehouse(tmp_path_factory, spark)
    spec_path = tmp_path / "spec.toml"  # the shipped spec at the tests' hash size, as a TOML file
    spec_path.write_text(dataclasses.replace(load_spec("generated"), bits=18).to_toml())
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["backtest", "--start", START.isoformat(), "--days", "2", "--train-days", "3",
                              "--spec", str(spec_path), "--param", "C=0.5", "--param", "penalty=l2",
                              "--run-id", "bt-test"])
    args.oracle = TruthOracle(settings.raw_dir)  # what the application root (ctr.cli) gives generated data
    assert args.func(args, settings) == 0
    printed = capsys.readouterr().out
    day1, day2 = START + timedelta(days=3), START + timedelta(days=4)
    assert f"{day1.isoformat()}  [{START.isoformat()}, {day1.isoformat()})" in printed
    assert f"{day2.isoformat()}  [{(START + timedelta(days=1)).isoformat()}, {day2.isoformat()})" in printed

    path = settings.table_path(BACKTEST_TABLE)
    df = spark.read.format("delta").load(path).filter("run_id = 'bt-test'")
    rows = sorted(df.collect(), key=lambda r: r.test_date)
    assert [r.test_date for r in rows] == [day1, day2]
    obs = spark.read.format("delta").load(settings.table_path(tables.OBSERVATIONS))
    per_day = {r["date"]: r["count"] for r in obs.groupBy("date").count().collect()}
    for r in rows:
        assert r.rows == per_day[r.test_date]
        assert r.train_rows == sum(per_day[r.test_date - timedelta(days=k)] for k in (1, 2, 3))
        assert r.train_end == r.test_date and r.train_start == r.test_date - timedelta(days=3)
        assert r.engine == "sklearn" and '"C": 0.5' in r.params
        # generated-style truth exists for every day: the true probabilities beat the fitted
        # model, which beats the constant training-window CTR
        assert r.best_possible_log_loss is not None
        assert r.best_possible_log_loss < r.log_loss < r.baseline_log_loss
        assert 0.5 < r.auc < 1 and 0.5 < r.calibration < 2 and 0 < r.normalized_entropy < 1
        assert f"{r.log_loss:.5f}" in printed

    # Writing the same run id again replaces its rows (MERGE on run_id, test_date).
    version = tables.latest_version(spark, path)
    write_metrics(spark, settings, [{**rows[0].asDict(), "log_loss": 0.5}])
    assert tables.latest_version(spark, path) == version + 1
    again = {r.test_date: r.log_loss for r in spark.read.format("delta").load(path)
             .filter("run_id = 'bt-test'").collect()}
    assert again == {day1: 0.5, day2: rows[1].log_loss}


def test_backtest_days_are_training_job_runs_with_the_online_engine_and_register_nothing(spark, tmp_path_factory):
    """Each back-test day is one unregistered run of the training job: the FTRL engine's day
    equals a job run by hand on the same windows, and the registry gains no version."""
    from feature_store.reader import Window
    from shared.featurize import load_spec
    from training.backtest import run_backtest
    from training.job import TrainingJob
    from training.pipeline import LocalEngine
    from shared.model.registry import DEFAULT_MODEL_NAME
    from training.tracking import list_versions

    settings = tiny_warehouse(tmp_path_factory, spark)
    spec = dataclasses.replace(load_spec("generated"), bits=18)
    before = {name: len(list_versions(settings, name)) for name in (DEFAULT_MODEL_NAME,)}
    setting = {"alpha": 0.1, "l2": 1.0, "passes": 2}
    result = run_backtest(None, settings, START, 2, 3, spec, setting=setting, engine="ftrl", write=False)
    assert [r["test_date"] for r in result.rows] == [START + timedelta(days=3), START + timedelta(days=4)]
    assert all(r["engine"] == "ftrl" and r["log_loss"] < r["baseline_log_loss"] for r in result.rows)

    day = result.rows[1]
    job = TrainingJob(settings, {"train": Window(day["train_start"], day["train_end"]),
                                 "test": Window(day["test_date"], day["test_date"] + timedelta(days=1))}, spec)
    by_hand = job.run(LocalEngine(setting={"engine": "ftrl", **setting}), register=False)
    assert by_hand.metrics["test"]["log_loss"] == day["log_loss"]
    assert by_hand.rows == {"train": day["train_rows"], "test": day["rows"]}
    assert {name: len(list_versions(settings, name)) for name in before} == before


def test_backtest_refuses_an_unknown_engine_setting(spark, tmp_path_factory):
    from shared.errors import ConfigurationError
    from training.backtest import run_backtest

    settings = tiny_warehouse(tmp_path_factory, spark)
    with pytest.raises(ConfigurationError, match="C"):
        run_backtest(None, settings, START, 1, 3, "generated", setting={"C": 1.0}, engine="ftrl", write=False)
