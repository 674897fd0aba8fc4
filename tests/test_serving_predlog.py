"""The prediction log: every scored impression lands in hourly JSON-lines files, never
blocks a request, and overflow is dropped and counted. Real server over HTTP, real files."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from serving.metrics import ServingMetrics
from serving.predlog import PredictionLog, expand_line
from serving.server import ServeOptions
from shared.config import load_settings
from serving_support import Served, metric_value, openrtb_examples, score_body

HOUR_FILE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})\.jsonl")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_log(root: Path) -> list[dict]:
    """Every logged prediction, each read from its event date's folder (a request line
    spanning dates is in each of them: only the folder's records are taken from it)."""
    rows = []
    for f in sorted(root.rglob("*.jsonl")):
        m = HOUR_FILE.fullmatch(f.relative_to(root).as_posix())
        assert m, f
        for line in f.read_text().splitlines():
            row = json.loads(line)
            if "event_times" not in row:  # filed by its own event hour
                t = utc(row["event_time"])
                assert (t.strftime("%Y-%m-%d"), t.strftime("%H")) == m.groups()
            day_rows = expand_line(row, m.group(1))
            assert day_rows and all(utc(r["event_time"]).strftime("%Y-%m-%d") == m.group(1) for r in day_rows)
            rows += day_rows
    return rows


def test_every_scored_impression_is_logged(tmp_path, w):
    settings = load_settings({"home": str(tmp_path)}, env={})
    sent = {}
    with Served(settings, ServeOptions(model_dir=w.dirs["a"])) as srv:
        c = srv.client
        for k in range(5):
            body = score_body(w.fields[k * 10:(k + 1) * 10], request_id=f"r{k}")
            sent[f"r{k}"] = (body, c.post("/v1/score", json=body).json())
        r = c.post("/v1/score", json={"records": [{"fields": w.fields[99]}]})
        generated_id = r.json()["request_id"]
        request = json.loads(openrtb_examples()[0].read_bytes())
        ads = [w.impressions[0].ad, w.impressions[1].ad]
        rtb = c.post("/v1/openrtb", json={"bid_request": request, "ads": ads}).json()
        assert c.post("/v1/score", json={"records": []}).status_code == 422  # rejected: not logged
    # leaving the block stopped the server, which flushed the log
    lines = [json.loads(x) for f in settings.predictions_dir.rglob("*.jsonl") for x in f.read_text().splitlines()]
    assert sum(x["endpoint"] == "score" for x in lines) == 6  # one line per /v1/score request, body as sent
    assert {x["request"]["records"][0]["fields"]["site_id"] for x in lines if x.get("request_id") == "r0"} == \
        {w.fields[0]["site_id"]}
    rows = read_log(settings.predictions_dir)
    assert len(rows) == 5 * 10 + 1 + len(request["imp"]) * 2
    by_request = {}
    for row in rows:
        by_request.setdefault(row["request_id"], []).append(row)
    for rid, (body, response) in sent.items():
        logged = by_request[rid]
        assert [x["impression_id"] for x in logged] == [rec["id"] for rec in body["records"]]
        assert [x["fields"] for x in logged] == [rec["fields"] for rec in body["records"]]
        assert [x["ctr"] for x in logged] == [p["ctr"] for p in response["predictions"]]
        assert {x["model_version"] for x in logged} == {response["model_version"]}
        assert {x["endpoint"] for x in logged} == {"score"} and all("ad_index" not in x for x in logged)
    assert by_request[generated_id][0]["impression_id"] is None
    logged = by_request[request["id"]]
    assert [(x["impression_id"], x["ad_index"]) for x in logged] == [(imp["id"], j) for imp in request["imp"]
                                                                     for j in range(2)]
    assert [x["ctr"] for x in logged] == [a["ctr"] for imp in rtb["impressions"] for a in imp["ads"]]
    assert logged[1]["fields"]["creative_id"] == ads[1]["creative_id"]
    assert logged[0]["fields"]["site_id"] == request.get("site", request.get("app", {})).get("id")


def test_overflow_is_dropped_and_counted_without_blocking(tmp_path, w):
    """Capacity 8 records; the writer only wakes when the queue is full (high-water = 8) or
    in a minute: 3 singles fit, a batch of 6 does not (dropped), a batch of 5 fills it."""
    settings = load_settings({"home": str(tmp_path)}, env={})
    options = ServeOptions(model_dir=w.dirs["a"], log_capacity=8, log_high_water=8, log_flush_interval=60)
    with Served(settings, options) as srv:
        c = srv.client
        for k in range(3):
            assert c.post("/v1/score", json=score_body([w.fields[k]], request_id=f"single-{k}")).status_code == 200
        t0 = time.perf_counter()
        r = c.post("/v1/score", json=score_body(w.fields[10:16], request_id="dropped"))
        assert r.status_code == 200 and len(r.json()["predictions"]) == 6  # scored and answered all the same
        assert time.perf_counter() - t0 < 2.0
        assert srv.state.predlog.dropped == 6
        text = srv.metrics()
        assert metric_value(text, "ctr_prediction_log_dropped_total") == 6
        assert metric_value(text, "ctr_prediction_log_queue_records") == 3
        assert c.post("/v1/score", json=score_body(w.fields[20:25], request_id="fills")).status_code == 200
        # the full queue woke the writer
        deadline = time.monotonic() + 10
        while metric_value(srv.metrics(), "ctr_prediction_log_written_total") < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric_value(srv.metrics(), "ctr_prediction_log_written_total") == 8
    rows = read_log(settings.predictions_dir)
    assert sorted({r["request_id"] for r in rows}) == ["fills", "single-0", "single-1", "single-2"]
    assert len(rows) == 8


def test_hour_partitioning_and_flush_on_close(tmp_path):
    metrics = ServingMetrics()
    plog = PredictionLog(tmp_path, capacity=100, flush_interval=60, metrics=metrics)
    plog.start()
    t1 = datetime(2026, 11, 21, 23, 59, 59, 999000, tzinfo=timezone.utc).timestamp()
    t2 = datetime(2026, 11, 22, 0, 0, 0, 1000, tzinfo=timezone.utc).timestamp()
    assert plog.submit(t1, "a", "score", "7", ["i1", "i2"], [0.1, 0.2], [{"site_id": "s"}, {}])
    assert plog.submit(t2, "b", "openrtb", "7", ["i3"], [0.3], [{"user_segments": ["x", "y"]}], [0])
    plog.close()  # flushes although the writer would sleep for a minute
    first = (tmp_path / "date=2026-11-21" / "hour=23.jsonl").read_text().splitlines()
    second = (tmp_path / "date=2026-11-22" / "hour=00.jsonl").read_text().splitlines()
    assert [json.loads(x)["impression_id"] for x in first] == ["i1", "i2"]
    assert json.loads(first[0]) == {"received_at": "2026-11-21T23:59:59.999Z", "event_time": "2026-11-21T23:59:59.999Z",
                                    "request_id": "a", "impression_id": "i1", "endpoint": "score",
                                    "model_version": "7", "ctr": 0.1, "fields": {"site_id": "s"}}
    assert json.loads(second[0])["ad_index"] == 0 and json.loads(second[0])["event_time"] == "2026-11-22T00:00:00.001Z"
    assert plog.written == 3 and metric_value(metrics.exposition()[0].decode(), "ctr_prediction_log_written_total") == 3
    assert not plog.submit(t1, "late", "score", "7", ["i"], [0.5], [{}])  # closed: refused and counted
    assert plog.dropped == 1


def test_unwritable_directory_is_counted_not_raised(tmp_path):
    blocker = tmp_path / "predictions"
    blocker.write_text("a file where the directory should be")
    metrics = ServingMetrics()
    plog = PredictionLog(blocker, capacity=10, metrics=metrics)
    plog.start()
    assert plog.submit(time.time(), "r", "score", "1", [None], [0.5], [{}])
    plog.close()
    assert plog.write_errors == 1 and plog.written == 0
    assert metric_value(metrics.exposition()[0].decode(), "ctr_prediction_log_write_errors_total") == 1


def test_request_lines_keep_the_body_as_sent_on_one_line(tmp_path):
    """A /v1/score request is one line holding its raw body (pretty-printed JSON included:
    its newlines are whitespace) and one CTR per record; expand_line gives per-impression rows."""
    plog = PredictionLog(tmp_path, capacity=100, flush_interval=60)
    plog.start()
    t = datetime(2026, 11, 21, 8, 0, 0, tzinfo=timezone.utc).timestamp()
    body = json.dumps({"request_id": "x", "records": [{"id": "a", "fields": {"site_id": "s\nt", "ad_pos": 1}},
                                                      {"fields": {"user_segments": ["1", "2"]}}]}, indent=2)
    assert b"\n" in body.encode()
    assert plog.submit_request(t, "x", "score", "4", [0.25, 0.5], body.encode())
    plog.close()
    (line,) = (tmp_path / "date=2026-11-21" / "hour=08.jsonl").read_text().splitlines()
    row = json.loads(line)
    assert row["request"] == json.loads(body) and row["ctrs"] == [0.25, 0.5]
    t_iso = "2026-11-21T08:00:00.000Z"
    assert expand_line(row) == [
        {"received_at": t_iso, "request_id": "x", "event_time": t_iso, "impression_id": "a", "endpoint": "score",
         "model_version": "4", "ctr": 0.25, "fields": {"site_id": "s\nt", "ad_pos": 1}},
        {"received_at": t_iso, "request_id": "x", "event_time": t_iso, "impression_id": None, "endpoint": "score",
         "model_version": "4", "ctr": 0.5, "fields": {"user_segments": ["1", "2"]}}]
    assert plog.written == 2
    # a line written before event times were logged: its one time stands for both
    old = {"ts": t_iso, "request_id": "o", "impression_id": "i", "endpoint": "openrtb", "model_version": "4",
           "ctr": 0.5, "fields": {}}
    assert expand_line(old) == [{"received_at": t_iso, "event_time": t_iso, **{k: v for k, v in old.items()
                                                                               if k != "ts"}}]


def test_event_times_file_each_record_under_its_own_date(tmp_path):
    """A request whose records carry their own event times: the one line goes to each UTC
    date's folder (the hour of that date's first record), received_at stays the receipt time."""
    plog = PredictionLog(tmp_path, capacity=100, flush_interval=60)
    received = datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc).timestamp()
    t1 = datetime(2026, 11, 7, 23, 59, 30, tzinfo=timezone.utc).timestamp()
    t2 = datetime(2026, 11, 8, 0, 0, 30, tzinfo=timezone.utc).timestamp()
    body = json.dumps({"records": [{"id": "a", "fields": {}}, {"id": "b", "fields": {}},
                                   {"id": "c", "fields": {}}]}).encode()
    assert plog.submit_request(received, "r", "score", "4", [0.1, 0.2, 0.3], body, event_time=t1,
                               event_times=[t1, t2, t1])
    plog.close()
    sat = (tmp_path / "date=2026-11-07" / "hour=23.jsonl").read_text().splitlines()
    sun = (tmp_path / "date=2026-11-08" / "hour=00.jsonl").read_text().splitlines()
    assert sat == sun and len(sat) == 1 and not (tmp_path / "date=2026-12-02").exists()
    row = json.loads(sat[0])
    assert row["received_at"] == "2026-12-02T09:30:00.000Z" and row["event_time"] == "2026-11-07T23:59:30.000Z"
    assert row["event_times"] == ["2026-11-07T23:59:30.000Z", "2026-11-08T00:00:30.000Z", "2026-11-07T23:59:30.000Z"]
    assert [(r["impression_id"], r["ctr"]) for r in expand_line(row, "2026-11-07")] == [("a", 0.1), ("c", 0.3)]
    assert [(r["impression_id"], r["event_time"]) for r in expand_line(row, "2026-11-08")] == \
        [("b", "2026-11-08T00:00:30.000Z")]
    assert plog.written == 3


def test_event_time_over_http_is_logged_with_the_receipt_time(tmp_path, w):
    """A replay sends the impressions' own times: /v1/score per request and per record
    (ISO-8601 or epoch seconds), /v1/openrtb in the envelope (where it also sets the
    calendar fields). Each prediction is filed and logged under its event time, with the
    receipt time beside it; without an event time both are the receipt time."""
    from shared.openrtb import impression_fields

    settings = load_settings({"home": str(tmp_path)}, env={})
    sat = datetime(2026, 11, 7, 13, 45, 0, 123000, tzinfo=timezone.utc)  # a Saturday, weeks ago
    sun = datetime(2026, 11, 8, 0, 30, tzinfo=timezone.utc)
    request = json.loads(openrtb_examples()[0].read_bytes())
    ads = [w.impressions[0].ad, w.impressions[1].ad]
    with Served(settings, ServeOptions(model_dir=w.dirs["a"])) as srv:
        c = srv.client
        before = datetime.now(timezone.utc)
        body = {"request_id": "replay", "event_time": sat.isoformat(),
                "records": [{"id": "x", "fields": w.fields[0]},
                            {"id": "y", "event_time": sun.timestamp(), "fields": w.fields[1]},
                            {"id": "z", "event_time": "2026-11-07T14:45:00+01:00", "fields": w.fields[2]}]}
        scored = c.post("/v1/score", json=body)
        assert scored.status_code == 200, scored.text
        assert c.post("/v1/score", json=score_body([w.fields[3]], request_id="live")).status_code == 200
        rtb_time = "2026-11-07T14:45:00+01:00"  # 13:45 UTC, Saturday
        rtb = c.post("/v1/openrtb", json={"bid_request": request, "ads": ads, "event_time": rtb_time})
        assert rtb.status_code == 200, rtb.text
        after = datetime.now(timezone.utc)
    rows = read_log(settings.predictions_dir)
    by_id = {(r["request_id"], r["impression_id"], r.get("ad_index")): r for r in rows}
    iso = "2026-11-07T13:45:00.123Z"
    assert by_id[("replay", "x", None)]["event_time"] == iso  # the request's
    assert by_id[("replay", "y", None)]["event_time"] == "2026-11-08T00:30:00.000Z"  # its own (epoch)
    assert by_id[("replay", "z", None)]["event_time"] == "2026-11-07T13:45:00.000Z"  # its own, offset applied
    assert [by_id[("replay", i, None)]["ctr"] for i in "xyz"] == [p["ctr"] for p in scored.json()["predictions"]]
    for r in rows:
        assert before - timedelta(seconds=1) <= utc(r["received_at"]) <= after + timedelta(seconds=1)
    live = by_id[("live", "imp-0", None)]
    assert live["event_time"] == live["received_at"]
    assert (settings.predictions_dir / "date=2026-11-07" / "hour=13.jsonl").is_file()
    assert (settings.predictions_dir / "date=2026-11-08" / "hour=00.jsonl").is_file()
    # OpenRTB: the envelope's time is the event time and sets hour_of_day / day_of_week
    t = utc("2026-11-07T13:45:00Z")
    for n, imp in enumerate(request["imp"]):
        for j, ad in enumerate(ads):
            logged = by_id[(request["id"], imp["id"], j)]
            assert logged["event_time"] == "2026-11-07T13:45:00.000Z"
            assert (logged["fields"]["hour_of_day"], logged["fields"]["day_of_week"]) == (13, 5)
            expected = w.offline["a"].ctr(impression_fields(request, imp, ad, t))
            assert logged["ctr"] == pytest.approx(expected, rel=1e-6)
            assert rtb.json()["impressions"][n]["ads"][j]["ctr"] == logged["ctr"]
