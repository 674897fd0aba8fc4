"""Per-segment models on the real local Spark session: fan-out, fallback, the Delta table,
resuming a run id without refits, retries of failing segments, and the registered bundle."""

from __future__ import annotations

import numpy as np
import pytest

from test_training_distributed import START, TINY, tiny_spec, tiny_warehouse

pytestmark = pytest.mark.spark


def _table(spark, settings, run_id):
    from feature_store import tables
    from training.segments import SEGMENT_TABLE

    path = settings.table_path(SEGMENT_TABLE)
    rows = spark.read.format("delta").load(path).filter(f"run_id = '{run_id}'").collect()
    return tables.latest_version(spark, path), sorted((r.asDict() for r in rows), key=lambda r: r["segment"])


def test_segments_fallback_resume_without_refits_and_bundle(spark, tmp_path_factory, tmp_path, capsys):
    from feature_store.reader import read_window, to_arrow
    from shared.featurize import Featurizer
    from training.artifacts import ModelDirError, load_model_dir
    from training.metrics import evaluate
    from training.pipeline import Windows
    from training.segments import GLOBAL_KEY, load_bundle, train_segments_from_warehouse
    from training.tracking import download_model_dir

    settings = tiny_warehouse(tmp_path_factory, spark)
    spec, windows = tiny_spec(), Windows.consecutive(START, 3)
    kwargs = dict(run_id="seg-run-1", grid=[{"C": 0.3}, {"C": 3.0}], min_rows=100, min_positives=5,
                  global_engine="sklearn", model_name="segment-test")

    # 1. A job that stops before registering (as if it died after its last table commit).
    first = train_segments_from_warehouse(spark, settings, windows, "advertiser_id", spec, register=False, **kwargs)
    assert first.report.fitted == 4 and first.report.fallback == 1 and first.report.skipped == 0
    assert first.report.failed == [] and first.report.passes == 1
    version_before, rows_before = _table(spark, settings, "seg-run-1")
    by_segment = {r["segment"]: r for r in rows_before}
    assert set(by_segment) == {GLOBAL_KEY, "adv-a", "adv-b", "adv-c", "adv-d", TINY}
    assert by_segment[TINY]["status"] == "fallback" and "min_rows 100" in by_segment[TINY]["error"]
    for seg in ("adv-a", "adv-b", "adv-c", "adv-d"):
        r = by_segment[seg]
        assert r["status"] == "ok" and r["attempts"] == 1 and len(r["indices"]) == len(r["weights"]) > 0
        assert r["params"] in ('{"C": 0.3, "downsample_rate": 1.0, "l1_ratio": 0.5, "max_iter": 100, '
                               '"penalty": "l2", "tol": 0.0001}',
                               '{"C": 3.0, "downsample_rate": 1.0, "l1_ratio": 0.5, "max_iter": 100, '
                               '"penalty": "l2", "tol": 0.0001}')
        assert np.isfinite(r["val_log_loss"]) and np.isfinite(r["test_log_loss"])

    # 2. The same run id again: reads the table, fits nothing, writes nothing, registers.
    second = train_segments_from_warehouse(spark, settings, windows, "advertiser_id", spec, **kwargs)
    assert (second.report.fitted, second.report.fallback, second.report.attempts) == (0, 0, 0)
    assert second.report.skipped == 5
    assert _table(spark, settings, "seg-run-1") == (version_before, rows_before)
    assert second.n_segments == 4 and second.fallback == [TINY] and second.promoted

    # 3. A finished run id: the registered version, nothing else (here through `ctr train`).
    import argparse

    from training import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--start", START.isoformat(), "--train-days", "3", "--per-segment",
                              "advertiser_id", "--run-id", "seg-run-1", "--model-name", "segment-test"])
    assert args.func(args, settings) == 0
    assert f"run seg-run-1 is already registered as version {second.version}" in capsys.readouterr().out
    assert _table(spark, settings, "seg-run-1")[0] == version_before

    # The registered bundle: segment models where fitted, the global model for the tiny
    # advertiser; scoring it outside Spark reproduces the test metrics computed in Spark.
    bundle_dir = download_model_dir(settings, "segment-test", second.version, tmp_path / "dl")
    bundle = load_bundle(bundle_dir)
    assert bundle.keys.tolist() == ["adv-a", "adv-b", "adv-c", "adv-d"] and bundle.segment_column == "advertiser_id"
    test = to_arrow(read_window(spark, settings, windows.test)[0])
    X = Featurizer(spec).transform(test)
    segments = test.column("advertiser_id").to_pylist()
    p = bundle.score_batch(segments, X)
    assert evaluate(test.column("label").to_numpy(), p)["log_loss"] == pytest.approx(
        second.metrics["test"]["log_loss"], rel=1e-9)
    glob = load_model_dir(bundle_dir)  # the global model, as any model-directory reader sees it
    tiny = [i for i, s in enumerate(segments) if s == TINY]
    assert tiny and np.allclose(p[tiny], glob.score_batch(X[tiny]), rtol=1e-5)
    a = segments.index("adv-a")
    row = X[a]
    w = dict(zip(by_segment["adv-a"]["indices"], by_segment["adv-a"]["weights"]))
    z = by_segment["adv-a"]["intercept"] + sum(w.get(int(j), 0.0) * float(v) for j, v in zip(row.indices, row.data))
    assert bundle.score("adv-a", row.indices, row.data) == pytest.approx(1 / (1 + np.exp(-z)), rel=1e-9)
    assert p[a] == pytest.approx(1 / (1 + np.exp(-z)), rel=1e-9)

    # The segment files are under the directory's checksums.
    npz = bundle_dir / "segments.npz"
    data = bytearray(npz.read_bytes())
    data[-30] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="segments.npz"):
        load_bundle(bundle_dir)


def test_failing_segments_are_retried_capped_then_refit_on_rerun(spark, tmp_path_factory):
    """A segment task that raises is recorded as failed and retried at most max_retries
    times; a later job with the same run id refits exactly the failed segments."""
    from training.distributed import SparseWeights
    from training.segments import fit_segments

    settings = tiny_warehouse(tmp_path_factory, spark)
    rng = np.random.default_rng(5)
    rows = []
    for seg in ("s1", "s2"):
        for i in range(60):
            split = "test" if i >= 50 else "train"
            cols = sorted(rng.choice(64, size=3, replace=False).tolist())
            rows.append((seg, split, int(i % 10 == 0), cols, [1.0, 1.0, 1.0]))
    data = spark.createDataFrame(rows, "_segment string, _split string, label int, indices array<int>, "
                                       "values array<float>")
    empty_global = SparseWeights(indices_=np.zeros(0), weights_=np.zeros(0), raw_intercept_=-2.0, bits_=18,
                                 setting={}, engine="sklearn")
    # downsample_rate 1e-4 keeps no non-click of 45: the fit raises, every time
    report = fit_segments(spark, settings, data, run_id="retry-run", global_model=empty_global,
                          grid=[{"downsample_rate": 1e-4}], min_rows=20, min_positives=2, max_retries=1)
    assert report.failed == ["s1", "s2"] and report.passes == 2 and report.attempts == 4 and report.fitted == 0
    _, table = _table(spark, settings, "retry-run")
    assert [(r["segment"], r["status"], r["attempts"]) for r in table] == [("s1", "failed", 2), ("s2", "failed", 2)]
    assert all("needs both clicks and non-clicks" in r["error"] for r in table)

    report = fit_segments(spark, settings, data, run_id="retry-run", global_model=empty_global,
                          grid=[{"C": 1.0}], min_rows=20, min_positives=2, max_retries=1)
    assert report.fitted == 2 and report.skipped == 0 and report.failed == [] and report.passes == 1
    _, table = _table(spark, settings, "retry-run")
    assert [(r["segment"], r["status"], r["attempts"], r["error"]) for r in table] == [
        ("s1", "ok", 3, ""), ("s2", "ok", 3, "")]
    assert all(np.isfinite(r["global_test_log_loss"]) and r["n_test"] == 10 for r in table)
