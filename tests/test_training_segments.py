"""Per-segment models on the real local Spark session: fan-out, fallback, the Delta table,
resuming a run id without refits, retries of failing segments, and the registered bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from warehouse_support import START, TINY, tiny_spec, tiny_warehouse

pytestmark = pytest.mark.spark


def _table(spark, settings, run_id):
    from feature_store import tables
    from training.segment_table import SEGMENT_TABLE

    path = settings.table_path(SEGMENT_TABLE)
    rows = spark.read.format("delta").load(path).filter(f"run_id = '{run_id}'").collect()
    return tables.latest_version(spark, path), sorted((r.asDict() for r in rows), key=lambda r: r["segment"])


def test_segments_fallback_resume_without_refits_and_bundle(spark, tmp_path_factory, tmp_path, capsys):
    from feature_store.reader import read_window, to_arrow
    from shared.featurize import Featurizer
    from shared.model.bundle import load_bundle
    from training.artifacts import ModelDirError, load_model_dir
    from training.metrics import evaluate
    from training.pipeline import Windows
    from training.segment_table import GLOBAL_KEY
    from training.segments import train_segments_from_warehouse
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

    # The bidder serves the bundle over HTTP: each record scored by its advertiser's model
    # (the global one for the tiny advertiser), as bundle.score_batch scored it offline.
    from serving.server import ServeOptions
    from serving_support import Served

    keep = set(spec.input_columns) | {"advertiser_id"}
    picked = sorted(set(tiny[:3]) | {a} | set(range(min(40, test.num_rows))))
    records = [{k: v for k, v in row.items() if k in keep} for row in test.take(picked).to_pylist()]
    with Served(settings, ServeOptions(model_dir=bundle_dir, prediction_log=False)) as srv:
        info = srv.client.get("/v1/model").json()
        assert info["segment_column"] == "advertiser_id" and info["n_segments"] == 4
        r = srv.client.post("/v1/score", json={"records": [{"fields": f} for f in records]})
        assert r.status_code == 200, r.text
        got = [x["ctr"] for x in r.json()["predictions"]]
    assert got == pytest.approx(p[picked].tolist(), rel=1e-9)

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


def _segment_frame(seed: int = 11):
    """8 segments x 90 rows (70 train, 10 validation, 10 test) of 4 hashed features; segment
    "s3" has one training label 2, which makes its fit raise (labels must be 0 or 1)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for k in range(8):
        seg = f"s{k}"
        w = rng.normal(0, 1.0, 40)
        for i in range(90):
            cols = np.sort(rng.choice(40, size=4, replace=False)).astype(np.int32)
            label = int(rng.random() < 1 / (1 + np.exp(1.0 - w[cols].sum())))
            split = "train" if i < 70 else "validation" if i < 80 else "test"
            rows.append((seg, split, 2 if (seg == "s3" and i == 5) else label, cols,
                         np.ones(4, dtype=np.float32)))
    return pd.DataFrame(rows, columns=["_segment", "_split", "label", "indices", "values"])


def test_segments_sharing_a_task_match_fits_alone_and_a_failure_stays_put(spark, tmp_path_factory):
    """All segments in one Spark task (partitions=1), rows delivered shuffled over several
    input partitions: every segment's weights equal fitting that segment alone, and the one
    segment whose fit raises fails (and is retried) without taking its bucket-mates down.
    The first job is a fresh run (fit + append in one job), the re-run reads the table."""
    from training.distributed import SparseWeights, normalize_setting
    from training.segment_fit import fit_segment, fit_segment_rows
    from training.segment_rows import rows_from_pandas
    from training.segments import fit_segments

    settings = tiny_warehouse(tmp_path_factory, spark)
    pdf = _segment_frame()
    shuffled = pdf.sample(frac=1.0, random_state=3).reset_index(drop=True)
    data = spark.createDataFrame(
        [tuple(r[:3]) + (r[3].tolist(), r[4].tolist()) for r in shuffled.itertuples(index=False)],
        "_segment string, _split string, label int, indices array<int>, values array<float>").repartition(3)
    global_model = SparseWeights(indices_=np.array([3, 7], np.int64), weights_=np.array([0.2, -0.1]),
                                 raw_intercept_=-1.0, bits_=10, setting={}, engine="sklearn")
    grid = [{"C": 0.3}, {"C": 3.0}]
    report = fit_segments(spark, settings, data, run_id="bucket-run", global_model=global_model, grid=grid,
                          min_rows=20, min_positives=2, max_retries=1, partitions=1, fresh_run=True)
    assert report.fitted == 7 and report.failed == ["s3"] and report.fallback == 0
    assert report.passes == 2 and report.attempts == 9 and report.eligible == 8
    _, table = _table(spark, settings, "bucket-run")
    by_segment = {r["segment"]: r for r in table}
    assert set(by_segment) == {f"s{k}" for k in range(8)}
    bad = by_segment["s3"]
    assert (bad["status"], bad["attempts"]) == ("failed", 2) and "labels must be 0 or 1" in bad["error"]
    assert bad["indices"] == [] and bad["n_train"] == 80 and bad["n_test"] == 10

    settings_list = [normalize_setting(s) for s in grid]
    g = (global_model.indices_, global_model.weights_, global_model.intercept_)
    for seg, group in pdf.groupby("_segment"):
        if seg == "s3":
            continue
        r = by_segment[seg]
        assert r["status"] == "ok" and r["attempts"] == 1 and r["n_train"] == 80 and r["n_test"] == 10
        # the same segment alone: setting choice + refit, and the refit of the chosen setting
        [alone] = fit_segment_rows(rows_from_pandas(group), settings_list, 10, global_model=g, min_rows=20,
                                   min_positives=2)
        refit = fit_segment(group, json.loads(r["params"]), 10, global_model=g)
        for other in (alone, refit):
            assert other["status"] == "ok" and other["params"] == r["params"]
            assert np.array_equal(np.asarray(r["indices"]), other["indices"])
            assert np.array_equal(np.asarray(r["weights"]), other["weights"])
            assert r["intercept"] == other["intercept"] and r["test_log_loss"] == other["test_log_loss"]
            assert r["global_test_log_loss"] == other["global_test_log_loss"]
        assert r["val_log_loss"] == alone["val_log_loss"]

    # a re-run of the run id touches only the failed segment (and fails it again, alone)
    again = fit_segments(spark, settings, data, run_id="bucket-run", global_model=global_model, grid=grid,
                         min_rows=20, min_positives=2, max_retries=0, partitions=1)
    assert (again.skipped, again.fitted, again.attempts, again.failed) == (7, 0, 1, ["s3"])
    _, table = _table(spark, settings, "bucket-run")
    assert {(r["segment"], r["attempts"]) for r in table if r["status"] == "failed"} == {("s3", 3)}


def test_segment_rows_isolate_bad_rows_and_ignore_row_order():
    """Rows a segment cannot be fitted from (indices and values of different lengths, a null
    label) fail that segment only; the canonical order makes the fit independent of how the
    rows arrive."""
    from training.distributed import normalize_setting
    from training.segment_fit import fit_segment_rows
    from training.segment_rows import rows_from_pandas

    pdf = _segment_frame()
    pdf.loc[pdf["_segment"] == "s3", "label"] = 0
    pdf.loc[pdf.index[pdf["_segment"] == "s3"][:5], "label"] = 1
    pdf.at[pdf.index[pdf["_segment"] == "s5"][2], "values"] = np.ones(3, dtype=np.float32)  # 4 indices, 3 values
    pdf["label"] = pdf["label"].astype(object)
    pdf.at[pdf.index[pdf["_segment"] == "s6"][0], "label"] = None
    setting = [normalize_setting({})]
    results = {r["segment"]: r for r in fit_segment_rows(rows_from_pandas(pdf), setting, 10)}
    reversed_ = {r["segment"]: r for r in fit_segment_rows(rows_from_pandas(pdf.iloc[::-1]), setting, 10)}
    assert {s for s, r in results.items() if r["status"] == "failed"} == {"s5", "s6"}
    assert "different lengths" in results["s5"]["error"] and "null label" in results["s6"]["error"]
    for seg, r in results.items():
        if r["status"] == "ok":
            assert np.array_equal(r["weights"], reversed_[seg]["weights"]) and r["intercept"] == reversed_[seg]["intercept"]
    assert sum(r["status"] == "ok" for r in results.values()) == 6
