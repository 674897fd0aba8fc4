"""The ingest job on real Spark and real Delta tables, over hand-written logs."""

from __future__ import annotations

import json
from datetime import date

import pytest

from feature_store import tables
from feature_store.ingest import ingest_day
from ingest_support import AD, click, imp, request, write

pytestmark = pytest.mark.spark

DAY1, DAY2 = date(2026, 1, 5), date(2026, 1, 6)


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark_settings):
    from dataclasses import replace

    home = tmp_path_factory.mktemp("ingest_home")
    settings = replace(spark_settings, home=home)
    raw = settings.raw_dir
    write(raw, "impressions", DAY1, 10, [
        imp("A", "2026-01-05T10:00:00.000Z"),
        imp("B", "2026-01-05T10:05:00.000Z"),
        "",  # blank lines are not records
        imp("C", "2026-01-05T23:50:00.000Z"),
        imp("D", "2026-01-05T10:10:00.000Z"),
        imp("E", "2026-01-05T10:20:00.000Z")[:57],                  # truncated
        '{"impression_id": "F", timestamp: 1}',                     # invalid JSON
        json.dumps({"timestamp": "2026-01-05T10:00:00Z", "bid_request": request(), "ad": AD}),  # no id
        imp("G", "yesterday at noon"),                               # bad timestamp
        imp("H", "2026-01-05T10:30:00.000Z", req=request(devicetype="phone")),  # wrong type
    ])
    write(raw, "impressions", DAY1, 11, [imp("B", "2026-01-05T10:05:00.000Z")])  # duplicate, later file
    write(raw, "clicks", DAY1, 10, [
        click("A", "2026-01-05T10:00:30.000Z"),
        click("A", "2026-01-05T10:02:00.000Z"),  # second click on A: still one positive
        click("ZZ", "2026-01-05T10:03:00.000Z"),  # click for an unknown impression
        '{"impression_id": "A", "click_time": ',  # broken click line
    ])
    write(raw, "clicks", DAY2, 11, [click("D", "2026-01-06T11:10:00.000Z")])  # 25h after D: outside the window
    write(raw, "impressions", DAY2, 0, [imp("B", "2026-01-05T10:05:00.000Z"), imp("K", "2026-01-06T00:01:00.000Z")])
    return settings


def partition(spark, settings, day, version=None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    df = reader.load(settings.table_path(tables.OBSERVATIONS)).filter(f"date = '{day.isoformat()}'")
    return {r.impression_id: r for r in df.collect()}


def test_first_ingest_conserves_counts_and_labels(spark, world):
    r = ingest_day(spark, world, DAY1)
    assert r.records_read == 10
    assert (r.observations, r.duplicates, r.quarantined) == (4, 1, 5)
    assert r.quarantine_reasons == {"truncated_json": 1, "invalid_json": 1, "missing_impression_id": 1,
                                    "bad_timestamp": 1, "wrong_type": 1}
    rows = partition(spark, world, DAY1)
    assert {k: v.label for k, v in rows.items()} == {"A": 1, "B": 0, "C": 0, "D": 0}
    assert rows["A"].click_delay_s == 30.0
    assert rows["D"].click_delay_s is None  # its click came 25h later
    assert r.clicks_outside_window == 1 and r.clicks_attributed == 2
    a = rows["A"]
    assert (a.site_id, a.ad_size, a.device_type, a.country, a.user_segments, a.hour_of_day) == \
        ("s1", "300x250", 4, "FRA", ["s9", "s3"], 10)

    q = spark.read.format("delta").load(world.table_path(tables.QUARANTINE)).collect()
    by_reason = {(x.source, x.reason): x for x in q}
    assert by_reason[("impressions", "truncated_json")].line_number == 6
    assert by_reason[("impressions", "truncated_json")].source_file.endswith("date=2026-01-05/hour=10.jsonl")
    assert by_reason[("impressions", "wrong_type")].message == "device.devicetype must be an integer, got str"
    assert ("clicks", "truncated_json") in by_reason and len(q) == 6

    runs = spark.read.format("delta").load(world.table_path(tables.INGEST_RUNS)).collect()
    assert [(x.records_read, x.observations, x.duplicates, x.quarantined) for x in runs] == [(10, 4, 1, 5)]


def test_rerun_is_idempotent_in_one_commit(spark, world):
    before_version = tables.latest_version(spark, world.table_path(tables.OBSERVATIONS))
    before = partition(spark, world, DAY1)
    ingest_day(spark, world, DAY1)
    after_version = tables.latest_version(spark, world.table_path(tables.OBSERVATIONS))
    assert after_version == before_version + 1
    assert partition(spark, world, DAY1) == before
    q = spark.read.format("delta").load(world.table_path(tables.QUARANTINE)).count()
    assert q == 6  # replaced, not appended


def test_late_click_updates_label_and_time_travel_keeps_the_old_one(spark, world):
    old_version = tables.latest_version(spark, world.table_path(tables.OBSERVATIONS))
    write(world.raw_dir, "clicks", DAY2, 0, [click("C", "2026-01-06T00:10:00.000Z")])  # next day's log
    ingest_day(spark, world, DAY1)
    assert partition(spark, world, DAY1)["C"].label == 1
    assert partition(spark, world, DAY1)["C"].click_delay_s == 1200.0
    assert partition(spark, world, DAY1, version=old_version)["C"].label == 0


def test_duplicate_of_previous_day_is_counted_not_stored(spark, world):
    r = ingest_day(spark, world, DAY2)
    assert (r.records_read, r.observations, r.duplicates, r.quarantined) == (2, 1, 1, 0)
    assert set(partition(spark, world, DAY2)) == {"K"}
    assert set(partition(spark, world, DAY1)) == {"A", "B", "C", "D"}  # other partitions untouched


def test_range_in_one_commit_equals_day_by_day(spark, world):
    from feature_store.ingest import ingest_days

    day_by_day = {d: partition(spark, world, d) for d in (DAY1, DAY2)}
    v = tables.latest_version(spark, world.table_path(tables.OBSERVATIONS))
    results = ingest_days(spark, world, [DAY1, DAY2])
    assert tables.latest_version(spark, world.table_path(tables.OBSERVATIONS)) == v + 1
    assert [(r.records_read, r.observations, r.duplicates, r.quarantined) for r in results] == \
        [(10, 4, 1, 5), (2, 1, 1, 0)]
    assert {d: partition(spark, world, d) for d in (DAY1, DAY2)} == day_by_day
