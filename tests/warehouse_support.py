"""A tiny real warehouse with a known logistic truth, shared by the MLlib, segment and back-test
tests: a Delta ``observations`` table of a few thousand rows plus the truth files
``best_possible_log_loss`` reads (writing rows directly is seconds; the raw-log ingest costs minutes)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

import numpy as np

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
    from shared import catalog

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
    df = spark.createDataFrame(pd.concat(frames, ignore_index=True), schema=catalog.OBSERVATIONS.ddl())
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
