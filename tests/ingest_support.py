"""Hand-written bidder and click log lines for the ingest tests (batch and streaming)."""

from __future__ import annotations

import json


def request(devicetype=4):
    return {
        "id": "req", "imp": [{"id": "1", "tagid": "t1", "bidfloor": 0.5, "banner": {"w": 300, "h": 250, "pos": 1}}],
        "site": {"id": "s1", "domain": "a.com", "publisher": {"id": "p1"}},
        "device": {"devicetype": devicetype, "os": "iOS", "make": "Apple", "model": "iPhone",
                   "connectiontype": 2, "geo": {"country": "FRA", "region": "IDF"}},
        "user": {"id": "u1", "data": [{"id": "dp", "segment": [{"id": "s9"}, {"id": "s3"}]}]},
    }


AD = {"advertiser_id": "a1", "campaign_id": "c1", "creative_id": "cr1", "creative_type": "banner"}


def imp(iid, ts, **kw):
    return json.dumps({"impression_id": iid, "timestamp": ts, "imp_id": "1", "bid_request": kw.get("req", request()),
                       "ad": AD})


def click(iid, ts):
    return json.dumps({"impression_id": iid, "click_time": ts})


def write(raw, kind, day, hour, lines):
    folder = raw / kind / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"hour={hour:02d}.jsonl").write_text("\n".join(lines) + "\n")
