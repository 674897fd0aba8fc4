"""The MLlib training path on the real local Spark session, against the scikit-learn path.

:func:`tiny_warehouse` (also used by the segment and back-test modules) writes a real
Delta ``observations`` table of a few thousand rows with a known logistic truth, and the
truth files ``best_possible_log_loss`` reads: writing rows directly is seconds, where the
raw-log ingest (tested in test_ingest.py) costs minutes on a shared 2-core machine.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.spark

START = date(2026, 3, 2)
DAYS = 5
ADVERTISERS = ("adv-a", "adv-b", "adv-c", "adv-d")
TINY = "adv-tiny"  # a handful of rows a day: too little data for its own model
_CACHE: dict = {}


def _day_frame(day: date, n: int, rng: np.random.Generator, truth: dict):
    import pandas as pd

    adv = rng.choice(len(ADVERTISERS), size=n, p=[0.35, 0.3, 0.2, 0.15])
    site = rng.integers(0, truth["site"].size, size=n)
    dev = rng.integers(0, 4, size=n)
    hour = rng.integers(0, 24, size=n)
    logit = (truth["base"] + truth["site"][site] + truth["adv"][adv] + truth["inter"][adv, site]
             + truth["dev"][dev] + 0.3 * np.sin(hour / 24 * 2 * np.pi))
    advertiser = np.array(ADVERTISERS, dtype=object)[adv]
    tiny = np.arange(n) < 4  # the first rows of each day belong to the tiny advertiser
    advertiser[tiny] = TINY
    logit[tiny] = truth["base"]
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < p).astype(np.int32)
    seconds = np.sort(rng.integers(0, 86_400, size=n))
    when = pd.to_datetime(datetime(day.year, day.month, day.day, tzinfo=timezone.utc)) + pd.to_timedelta(seconds, "s")
    segs = [[f"seg{k}" for k in rng.choice(12, size=rng.integers(0, 4), replace=False)] for _ in range(n)]
    devices = np.array([1, 2, 4, 5])[dev]
    frame = pd.DataFrame({
        "impression_id": [f"{day.isoformat()}-{i:06d}" for i in range(n)],
        "event_time": when,
        "label": y,
        "click_delay_s": np.where(y == 1, 20.0, np.nan),
        "inventory_type": "site",
        "publisher_id": [f"pub-{s % 7}" for s in site],
        "site_id": [f"site-{s}" for s in site],
        "domain": [f"site{s}.example" for s in site],
        "tag_id": [f"tag-{s % 5}" for s in site],
        "ad_format": "banner",
        "ad_size": np.where(site % 2 == 0, "300x250", "728x90"),
        "ad_pos": (site % 3).astype(np.int64),
        "bidfloor": np.round(0.05 + 0.1 * (site % 4), 2),
        "device_type": devices.astype(np.int64),
        "os": np.where(devices == 4, "iOS", "Android"),
        "make": np.where(devices == 4, "Apple", "Samsung"),
        "model": [f"m{d}" for d in devices],
        "connection_type": np.full(n, 2, dtype=np.int64),
        "country": np.where(site % 5 == 0, "DEU", "FRA"),
        "region": "R1",
        "user_id": [f"u{k}" for k in rng.integers(0, 500, size=n)],
        "user_segments": segs,
        "advertiser_id": advertiser,
        "campaign_id": [f"{a}-c{k}" for a, k in zip(advertiser, rng.integers(0, 2, size=n))],
        "creative_id": [f"{a}-cr{k}" for a, k in zip(advertiser, rng.integers(0, 3, size=n))],
        "creative_type": "banner",
        "hour_of_day": when.hour.astype(np.int64),
        "day_of_week": np.full(n, day.weekday(), dtype=np.int64),
        "date": day,
    })
    return frame, p


def write_tiny_warehouse(spark, settings, start: date = START, days: int = DAYS, rows_per_day: int = 1200,
                         seed: int = 0) -> None:
    """Observations for ``days`` days from ``start`` (real Delta table, one commit) and the
    generator-style truth files ``raw/truth/date=D/hour=00.parquet``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feature_store import tables

    truth_rng = np.random.default_rng(1000 + seed)
    truth = {"base": -3.0, "site": truth_rng.normal(0, 0.7, 20), "adv": truth_rng.normal(0, 0.4, len(ADVERTISERS)),
             "inter": truth_rng.normal(0, 0.8, (len(ADVERTISERS), 20)), "dev": truth_rng.normal(0, 0.3, 4)}
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(days):
        day = start + timedelta(days=k)
        frame, p = _day_frame(day, rows_per_day, rng, truth)
        folder = settings.raw_dir / "truth" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"impression_id": frame["impression_id"], "p_true": p}), folder / "hour=00.parquet")
        frames.append(frame)
    df = spark.createDataFrame(pd.concat(frames, ignore_index=True), schema=tables.observation_ddl())
    tables.replace_partitions(df, settings.table_path(tables.OBSERVATIONS), "date",
                              [(start + timedelta(days=k)).isoformat() for k in range(days)])


def tiny_warehouse(tmp_path_factory, spark):
    """Settings of one shared tiny warehouse + MLflow store (built once per test session)."""
    if "settings" not in _CACHE:
        from shared.config import load_settings

        home = tmp_path_factory.mktemp("tiny_warehouse")
        settings = load_settings({"home": str(home), "spark_master": "local[2]"}, env={})
        write_tiny_warehouse(spark, settings)
        _CACHE["settings"] = settings
    return _CACHE["settings"]


def tiny_spec():
    from shared.featurize import load_spec

    return dataclasses.replace(load_spec("generated"), bits=18)


def _sklearn_frames(spark, settings, windows):
    """The three windows as Arrow tables, from one read of their span."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from feature_store.reader import Window, read_window, to_arrow

    span = to_arrow(read_window(spark, settings, Window(windows.train.start, windows.test.end))[0])
    out = {}
    for name in ("train", "validation", "test"):
        w = getattr(windows, name)
        mask = pc.and_(pc.greater_equal(span.column("date"), pa.scalar(w.start, pa.date32())),
                       pc.less(span.column("date"), pa.scalar(w.end, pa.date32())))
        out[name] = span.filter(mask)
    return out


def test_mllib_path_matches_sklearn_and_registers_a_servable_version(spark, tmp_path_factory, tmp_path):
    import scipy.sparse as sp

    from shared.featurize import Featurizer
    from training.artifacts import load_model_dir
    from training.distributed import train_mllib_from_warehouse
    from training.metrics import evaluate
    from training.model import SparseLogisticRegression
    from training.pipeline import Windows
    from training.tracking import download_model_dir

    settings = tiny_warehouse(tmp_path_factory, spark)
    spec = tiny_spec()
    windows = Windows.consecutive(START, 3)
    setting = {"penalty": "l2", "C": 0.5, "tol": 1e-4, "max_iter": 100}
    result = train_mllib_from_warehouse(spark, settings, windows, spec, grid=[setting], model_name="mllib-test")

    # The scikit-learn path on the same rows: batch featurizer, same objective, train + validation.
    frames = _sklearn_frames(spark, settings, windows)
    fz = Featurizer(spec)
    X = sp.vstack([fz.transform(frames["train"]), fz.transform(frames["validation"])]).tocsr()
    y = np.concatenate([frames[k].column("label").to_numpy() for k in ("train", "validation")])
    X_test, y_test = fz.transform(frames["test"]), frames["test"].column("label").to_numpy()
    sk = SparseLogisticRegression(penalty="l2", C=0.5).fit(X, y)
    sk_test = evaluate(y_test, sk.predict_proba(X_test)[:, 1])

    mllib_test = result.metrics["test"]
    assert result.rows == {k: frames[k].num_rows for k in frames}
    assert mllib_test["n"] == y_test.size
    assert abs(mllib_test["log_loss"] - sk_test["log_loss"]) / sk_test["log_loss"] < 0.02
    assert abs(mllib_test["auc"] - sk_test["auc"]) < 0.02
    assert mllib_test["log_loss"] < result.baseline_test_log_loss
    assert result.best_possible_test_log_loss is not None and 0 < result.best_possible_test_log_loss < 1

    # The registered version is the plain model directory the bidder reads, and scoring it
    # with the batch featurizer reproduces the metrics computed in Spark.
    assert result.promoted and result.version == "1"
    loaded = load_model_dir(download_model_dir(settings, "mllib-test", result.version, tmp_path))
    assert loaded.metadata["hyperparameters"]["engine"] == "mllib"
    n_fit = result.rows["train"] + result.rows["validation"]
    assert loaded.metadata["hyperparameters"]["mllib.regParam"] == pytest.approx(1.0 / (0.5 * n_fit))
    assert loaded.metadata["n_fit_rows"] == n_fit
    rescored = evaluate(y_test, loaded.score_batch(X_test))
    assert rescored["log_loss"] == pytest.approx(mllib_test["log_loss"], rel=1e-5)
