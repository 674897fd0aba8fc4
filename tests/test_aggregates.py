"""Point-in-time aggregate features on real Spark and Delta tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pytest

from feature_store import tables
from feature_store.aggregates import build_aggregates, export_snapshot, join_aggregates
from shared import catalog
from shared.aggregates import AggregateSnapshot, entity_key
from shared.openrtb import RAW_FIELD_NAMES

pytestmark = pytest.mark.spark


def obs(iid, ts, label, delay=None, user="u1", site="s1", adv="a1"):
    t = datetime.fromisoformat(ts).replace(tzinfo=timezone.utc)
    row = {n: None for n in RAW_FIELD_NAMES}
    row.update(user_id=user, site_id=site, advertiser_id=adv, creative_id="c1")
    return {"impression_id": iid, "event_time": t, "label": label, "click_delay_s": delay, **row,
            "date": t.date()}


ROWS = [
    obs("1", "2026-03-01T10:00:00", 1, 10.0),
    obs("2", "2026-03-01T11:00:00", 0),
    obs("3", "2026-03-01T23:59:50", 1, 30.0),   # clicked on 03-02: must not count for 03-02's features
    obs("4", "2026-03-02T09:00:00", 1, 5.0),
    obs("5", "2026-03-03T09:00:00", 0),
    obs("6", "2026-03-03T09:00:00", 0, user="u2", site=None),  # no site: no site/site_advertiser key
]


@pytest.fixture(scope="module")
def built(spark, spark_settings, tmp_path_factory):
    settings = replace(spark_settings, home=tmp_path_factory.mktemp("agg_home"))
    df = spark.createDataFrame(ROWS, catalog.OBSERVATIONS.ddl())
    df.write.format("delta").partitionBy("date").save(settings.table_path(tables.OBSERVATIONS))
    result = build_aggregates(spark, settings, date(2026, 3, 1), date(2026, 3, 3))
    agg = spark.read.format("delta").load(settings.table_path(tables.AGGREGATES))
    return settings, result, {(r.entity, r.entity_key, r.date.isoformat()): r for r in agg.collect()}


def test_values_use_only_days_before(built):
    _, result, rows = built
    assert rows[("user", "u1", "2026-03-01")].imps_7d == 0  # nothing before the first day
    d2 = rows[("user", "u1", "2026-03-02")]
    assert (d2.imps_1d, d2.imps_7d) == (3, 3)   # day 2's own impression is not counted
    assert d2.clicks_1d == 1  # impression 3's click happened on day 2: leaving it out avoids leakage
    d3 = rows[("user", "u1", "2026-03-03")]
    assert (d3.imps_1d, d3.clicks_1d, d3.imps_7d, d3.clicks_7d) == (1, 1, 4, 2)
    assert ("site", None, "2026-03-03") not in rows and ("user", "u2", "2026-03-03") in rows
    assert rows[("site_advertiser", "s1\x1fa1", "2026-03-03")].imps_7d == 4


def test_rebuild_is_idempotent(spark, built):
    settings, first, rows = built
    again = build_aggregates(spark, settings, date(2026, 3, 1), date(2026, 3, 3))
    assert again.rows == first.rows and again.delta_version == first.delta_version + 1
    agg = spark.read.format("delta").load(settings.table_path(tables.AGGREGATES))
    assert {(r.entity, r.entity_key, r.date.isoformat()): r for r in agg.collect()} == rows


def test_join_and_snapshot_agree_with_the_shared_key(spark, built):
    settings, _, _ = built
    observations = spark.read.format("delta").load(settings.table_path(tables.OBSERVATIONS))
    agg = spark.read.format("delta").load(settings.table_path(tables.AGGREGATES))
    joined = {r.impression_id: r for r in join_aggregates(observations, agg).collect()}
    assert joined["5"].user_imps_7d == 4 and joined["5"].user_clicks_7d == 2
    assert joined["6"].site_imps_7d == 0  # missing key -> zeros, as at serving time

    snap = AggregateSnapshot.from_arrow(export_snapshot(spark, settings, date(2026, 3, 4)))
    record = {"user_id": "u1", "site_id": "s1", "advertiser_id": "a1", "creative_id": "c1"}
    enriched = snap.enrich(record)
    assert (enriched["user_imps_1d"], enriched["user_imps_7d"], enriched["user_clicks_7d"]) == (1, 5, 2)
    assert enriched["site_advertiser_imps_7d"] == 5
    assert snap.enrich({"user_id": "nobody"})["user_imps_7d"] == 0
    assert entity_key(record, "site_advertiser") == "s1\x1fa1"
