"""The monitor uses the traffic's own time: a replay, weeks later, of a Saturday and a Sunday
of logged impressions (each record sent with its event time, as ``ctr demo`` does) is
counted on those days and hours, not on the day it was replayed; a line written before
event times were logged counts on its receipt time; and the calendar fields are compared
with comparable calendar windows, so a weekday the training window lacks is no drift.

Real components: observations in the warehouse's Delta table, predictions appended by the
bidder's :class:`serving.predlog.PredictionLog`, :func:`monitoring.job.monitor_days` on the
session's Spark. Reference window: Sunday 2026-11-01 to Wednesday 2026-11-04, one
impression per hour.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from monitoring.drift import MISSING, OTHER, psi

pytestmark = pytest.mark.spark

REF_START = date(2026, 11, 1)  # Sunday
REF_DAYS = 4  # Sunday .. Wednesday
SAT = date(2026, 11, 7)  # not a weekday of the reference
SUN = date(2026, 11, 8)  # a weekday of the reference
REPLAYED = datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc)  # a Wednesday, weeks later
AS_OF = datetime(2026, 12, 3, tzinfo=timezone.utc)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def calendar(t: datetime) -> dict:
    return {"hour_of_day": t.hour, "day_of_week": t.weekday()}


@pytest.fixture(scope="module")
def replay(spark, tmp_path_factory):
    from feature_store import tables as warehouse
    from feature_store.reader import Window
    from monitoring.job import MonitorOptions, monitor_days
    from monitoring.live_metrics import MetricsConfig
    from serving.predlog import PredictionLog
    from shared import catalog
    from shared.config import load_settings
    from shared.openrtb import RAW_FIELD_NAMES

    settings = load_settings({"home": str(tmp_path_factory.mktemp("event_time_home"))}, env={})

    def obs(iid, t, label):
        raw = {n: None for n in RAW_FIELD_NAMES}
        raw.update(site_id="s1", **calendar(t))
        return {"impression_id": iid, "event_time": t, "label": label, "click_delay_s": 60.0 if label else None,
                **raw, "date": t.date()}

    rows = [obs(f"r{d}-{h}", at(REF_START + timedelta(days=d), h, 5), h % 2)
            for d in range(REF_DAYS) for h in range(24)]
    rows += [obs(f"sat-{h}", at(SAT, h, 5), int(h % 4 == 0)) for h in range(24)]  # 6 clicks in 24
    df = spark.createDataFrame(rows, catalog.OBSERVATIONS.ddl())
    df.write.format("delta").partitionBy("date").save(settings.table_path(warehouse.OBSERVATIONS))

    # The replay: Saturday's and Sunday's impressions in event-time order, batches of 10 (one
    # batch straddles midnight), each record with its own event time, all received on REPLAYED.
    events = [(f"sat-{h}", at(SAT, h, 5)) for h in range(24)] + [(f"sun-{h}", at(SUN, h, 5)) for h in range(24)]
    log = PredictionLog(settings.predictions_dir, flush_interval=0.05)
    for k in range(0, len(events), 10):
        chunk = events[k:k + 10]
        body = {"request_id": f"replay-{k}", "records": [
            {"id": iid, "event_time": t.isoformat(), "fields": {"site_id": "s1", **calendar(t)}} for iid, t in chunk]}
        assert log.submit_request(REPLAYED.timestamp(), f"replay-{k}", "score", "1", [0.25] * len(chunk),
                                  json.dumps(body).encode(), event_times=[t.timestamp() for _, t in chunk])
    log.close()
    # a line from before event times were logged: its one time (ts) is its receipt time
    with open(settings.predictions_dir / f"date={SAT.isoformat()}" / "hour=23.jsonl", "a") as f:
        f.write(json.dumps({"ts": "2026-11-07T23:40:00.000Z", "request_id": "old", "impression_id": "sat-old",
                            "endpoint": "openrtb", "model_version": "1", "ctr": 0.25,
                            "fields": {"site_id": "s1", **calendar(at(SAT, 23, 40))}}) + "\n")
    run = monitor_days(spark, settings, [SAT, SUN], MonitorOptions(
        metrics=MetricsConfig(slice_fields=("site_id",), as_of=AS_OF),
        reference_window=Window(REF_START, REF_START + timedelta(days=REF_DAYS)), param_drift=False, alerts=False))
    return settings, run


def test_the_log_is_filed_by_the_traffic_days(replay):
    settings, _ = replay
    folders = sorted(p.name for p in settings.predictions_dir.iterdir())
    assert folders == [f"date={SAT.isoformat()}", f"date={SUN.isoformat()}"]  # not the replay's day


def test_metrics_are_computed_on_the_traffic_days(replay):
    _, run = replay
    assert run.days == [SAT.isoformat(), SUN.isoformat()]
    rows = run.metrics.rows.to_pylist()
    day = [r for r in rows if r["window"] == "day" and r["slice_field"] == "overall"]
    assert sorted(r["window_start"] for r in day) == [at(SAT, 0), at(SUN, 0)]
    sat = next(r for r in day if r["window_start"] == at(SAT, 0))
    # 24 replayed + the old line; the straddling batch's Sunday records are not counted here
    assert (sat["predictions"], sat["impressions"], sat["unlabelled"], sat["clicks"]) == (25, 24, 1, 6)
    assert sat["calibration"] == pytest.approx(1.0)  # 0.25 predicted against 6 clicks in 24
    sun = next(r for r in day if r["window_start"] == at(SUN, 0))
    assert (sun["predictions"], sun["impressions"]) == (24, 0)
    hours = {r["window_start"]: r["predictions"] for r in rows if r["window"] == "hour"
             and r["slice_field"] == "overall"}
    assert hours[at(SAT, 13)] == 1 and hours[at(SAT, 23)] == 2 and at(REPLAYED.date(), 9) not in hours
    assert len(hours) == 48
    assert run.summaries[SAT.isoformat()].calibration == pytest.approx(1.0)
    assert run.metrics.excluded == {}


def test_calendar_fields_are_compared_with_comparable_calendar_windows(replay):
    _, run = replay
    drift = {(r["date"], r["field"]): r for r in run.feature_drift_rows}
    # Saturday: the reference (Sunday..Wednesday) has no Saturday: day_of_week is not compared
    # (against the whole reference it would be a PSI of ~17), and says why
    dow = drift[(SAT, "day_of_week")]
    assert dow["psi"] is None and dow["reference_rows"] == 0 and "no Saturday in the reference" in dow["reference"]
    assert dow["live_rows"] == 25
    # ... and the hours against every reference day's hours (4 per hour)
    hod = drift[(SAT, "hour_of_day")]
    assert "all weekdays (no Saturday in the reference)" in hod["reference"]
    assert hod["bins"] == [str(h) for h in range(24)] + [OTHER, MISSING] and hod["reference_rows"] == 96
    assert hod["psi"] == pytest.approx(psi([4] * 24 + [0, 0], [1] * 23 + [2, 0, 0]))
    assert hod["psi"] < 0.1  # stable: one hour holds two predictions
    # Sunday: compared with the reference's Sunday, where both calendar fields match exactly
    for name in ("day_of_week", "hour_of_day"):
        row = drift[(SUN, name)]
        assert row["psi"] == 0.0 and "same weekday (Sunday)" in row["reference"] and row["reference_rows"] == 24
    assert drift[(SUN, "day_of_week")]["bins"] == ["6", OTHER, MISSING]
    # the other fields still use the whole training window
    assert drift[(SAT, "site_id")]["reference_rows"] == 96 and drift[(SAT, "site_id")]["psi"] == 0.0
    summary = run.summaries[SAT.isoformat()]
    assert summary.max_psi is not None and summary.max_psi < 0.1
