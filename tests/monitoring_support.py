"""Helpers of the monitoring tests (not a test module): a tiny, hand-computable monitoring
world, built once per test session and served to the ``test_monitoring_*`` modules by
``conftest.py`` as the fixture ``world``; and real model directories for parameter drift
(:func:`fit_dir`).

Real components throughout: observations written as the warehouse's Delta table (its
DDL), ingest runs recorded by the ingest's own writer, predictions appended by the
bidder's :class:`serving.predlog.PredictionLog`, and the monitoring job run through
:func:`monitoring.job.monitor_days` on the session's Spark, with a real HTTP server on
127.0.0.1 receiving the alert webhook.

Days (UTC):

* 2026-03-01: 10 reference observations (the drift reference window), site shares
  s1 .5 / s2 .3 / s3 .2, bid floors 0.1, 0.2, ..., 1.0.
Label maturity is judged as of 2026-03-04 00:00 (``AS_OF``).

* 2026-03-02 ("A", labels mature): 10 predictions of model version "1", 6 of them
  observed (labels below), 4 never observed (unlabelled). Sites s1 x4, s2 x4, s3 x2.
* 2026-03-03 ("B", labels not mature: its impressions' attribution windows close on 03-04 09:00):
  j1 observed (label 1, version "1"), j2 a candidate ad (creative c9) whose impression
  was shown with another creative -> unlabelled, j3 version "2" observed (label 0),
  plus one malformed line and one line with a probability of 1.5 (both invalid).

The generator's truth files hold day A's observed impressions only, so day A has a best
possible log-loss and day B has none.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from synthetic.oracle import TruthOracle

DAY_A = date(2026, 3, 2)
DAY_B = date(2026, 3, 3)
REF_DAY = date(2026, 3, 1)
AS_OF = datetime(2026, 3, 4, tzinfo=timezone.utc)  # judge label maturity as of this time

# impression id -> (hour on day A, site, predicted CTR, label or None when never observed)
DAY_A_ROWS = {
    "a1": (10, "s1", 0.2, 1), "a2": (10, "s1", 0.4, 0), "a3": (10, "s2", 0.1, 0), "a4": (10, "s2", 0.5, 1),
    "a5": (11, "s1", 0.3, 0), "a6": (11, "s2", 0.6, 1),
    "a7": (11, "s2", 0.2, None), "a8": (11, "s1", 0.3, None), "a9": (11, "s3", 0.25, None),
    "a10": (11, "s3", 0.25, None),
}
REF_SITES = ["s1"] * 5 + ["s2"] * 3 + ["s3"] * 2
# the generator's "true" click probabilities, for day A's observed impressions only
TRUTH_A = {"a1": 0.5, "a2": 0.2, "a3": 0.1, "a4": 0.6, "a5": 0.2, "a6": 0.7}

RULES = """
[[rules]]
name = "calibration_out_of_range"
source = "metrics"
metric = "calibration"
kind = "range"
min = 0.9
max = 1.1
window = "day"
slices = ["overall"]
min_impressions = 0
severity = "critical"

[[rules]]
name = "feature_psi"
source = "feature_drift"
metric = "psi"
kind = "above"
threshold = 0.04

[webhook]
url = ""
"""


def ts(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_webhook() -> tuple[http.server.HTTPServer, str, list]:
    received: list = []
    handler = type("CollectingHook", (Hook,), {"received": received})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/alerts", received


def observation_rows():
    from shared.openrtb import RAW_FIELD_NAMES

    def obs(iid, t, label, site, creative="c1", device=1):
        raw = {n: None for n in RAW_FIELD_NAMES}
        raw.update(site_id=site, creative_id=creative, device_type=device, bidfloor=0.5, advertiser_id="adv1",
                   user_segments=["seg1"])
        return {"impression_id": iid, "event_time": t, "label": label,
                "click_delay_s": 60.0 if label else None, **raw, "date": t.date()}

    rows = [obs(f"r{k}", ts(REF_DAY, 9, k), k % 2, site) for k, site in enumerate(REF_SITES)]
    for k, row in enumerate(rows):
        row["bidfloor"] = (k + 1) / 10  # reference deciles 0.1 .. 0.9; every live bid floor is 0.5
    for iid, (hour, site, _, label) in DAY_A_ROWS.items():
        if label is not None:
            rows.append(obs(iid, ts(DAY_A, hour, 1), label, site))
    rows.append(obs("j1", ts(DAY_B, 9, 1), 1, "s1"))
    rows.append(obs("j2", ts(DAY_B, 9, 1), 0, "s2", creative="c1"))  # shown with c1; the prediction scored c9
    rows.append(obs("j3", ts(DAY_B, 9, 2), 0, "s1"))
    return rows


def write_observations(spark, settings) -> None:
    from feature_store import tables as warehouse
    from shared import catalog

    df = spark.createDataFrame(observation_rows(), catalog.OBSERVATIONS.ddl())
    df.write.format("delta").partitionBy("date").save(settings.table_path(warehouse.OBSERVATIONS))


def record_ingest_runs(spark, settings) -> None:
    """One ingest run per day, recorded by the ingest's own writer (24 h attribution): each
    day's clicks are read through the end of the next day."""
    from feature_store.ingest import IngestResult, _record_runs

    _record_runs(spark, settings, [IngestResult(run_id=f"run-{d}", date=d.isoformat())
                                   for d in (REF_DAY, DAY_A, DAY_B)])


def write_predictions(settings) -> None:
    """/v1/score requests as the server logs them (one line per request with its raw body),
    one /v1/openrtb impression line, then a corrupt line and an out-of-range CTR."""
    from serving.predlog import PredictionLog

    log = PredictionLog(settings.predictions_dir, flush_interval=0.05)

    def score(when, request_id, version, ids, ctrs, fields):
        body = json.dumps({"request_id": request_id,
                           "records": [{"id": i, "fields": f} for i, f in zip(ids, fields)]}, indent=1)
        assert log.submit_request(when.timestamp(), request_id, "score", version, ctrs, body.encode())

    rows_a = list(DAY_A_ROWS.items())
    fields_a = [{"site_id": site, "device_type": 1, "bidfloor": 0.5, "advertiser_id": "adv1",
                 "user_segments": ["seg1"], "creative_id": "c1"} for _, (_, site, _, _) in rows_a]
    for k, (iid, (hour, site, p, _)) in enumerate(rows_a):
        if k % 2 == 0:  # two impressions of the same hour per request where possible
            pair = [j for j in (k, k + 1) if j < len(rows_a) and rows_a[j][1][0] == hour]
            score(ts(DAY_A, hour, 0), f"req-{iid}", "1", [rows_a[j][0] for j in pair],
                  [rows_a[j][1][2] for j in pair], [fields_a[j] for j in pair])
        elif rows_a[k - 1][1][0] != hour:
            score(ts(DAY_A, hour, 0), f"req-{iid}", "1", [iid], [p], [fields_a[k]])
    score(ts(DAY_A, 10, 0), f"req-{rows_a[0][0]}", "1", [rows_a[0][0]], [rows_a[0][1][2]],
          [fields_a[0]])  # a re-delivered request: counted once
    b = {"site_id": "s1", "device_type": "2", "bidfloor": 0.5, "creative_id": "c1"}
    score(ts(DAY_B, 9, 0), "req-j1", "1", ["j1"], [0.3], [b])
    log.submit(ts(DAY_B, 9, 0).timestamp(), "req-j2", "openrtb", "1", ["j2"], [0.1],
               [{**b, "site_id": "s2", "creative_id": "c9"}], ad_index=[1])
    score(ts(DAY_B, 9, 0), "req-j3", "2", ["j3"], [0.05], [b])
    log.close()
    hour_b = settings.predictions_dir / f"date={DAY_B.isoformat()}" / "hour=09.jsonl"
    with open(hour_b, "a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"ts": "2026-03-03T09:30:00.000Z", "request_id": "bad", "impression_id": "x",
                            "endpoint": "score", "model_version": "1", "ctr": 1.5, "fields": {}}) + "\n")


def write_truth(settings) -> None:
    """Truth files in the generator's layout (truth/date=D/hour=HH.parquet) for day A."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = settings.raw_dir / "truth" / f"date={DAY_A.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"impression_id": list(TRUTH_A), "p_true": list(TRUTH_A.values())}),
                   folder / "hour=10.parquet")


@dataclass
class World:
    settings: object
    run: object
    rules_path: Path
    webhook_url: str
    received: list
    server: object
    extra: dict = field(default_factory=dict)


_WORLD: dict = {}


def monitoring_world(spark, tmp_path_factory) -> World:
    """Build (once per session) the data above and run the monitoring job over days A and B."""
    if "world" in _WORLD:
        return _WORLD["world"]
    from feature_store.reader import Window
    from monitoring.alerts import load_rules
    from monitoring.job import MonitorOptions, monitor_days
    from monitoring.live_metrics import MetricsConfig
    from shared.config import load_settings

    home = tmp_path_factory.mktemp("monitoring_home")
    settings = load_settings({"home": str(home), "spark_master": "local[2]"}, env={})
    write_observations(spark, settings)
    record_ingest_runs(spark, settings)
    write_predictions(settings)
    write_truth(settings)
    rules_path = home / "rules.toml"
    rules_path.write_text(RULES)
    server, url, received = start_webhook()
    run = monitor_days(spark, settings, [DAY_A, DAY_B], MonitorOptions(
        metrics=MetricsConfig(slice_fields=("site_id",), top_n=2, as_of=AS_OF),
        reference_window=Window(REF_DAY, REF_DAY + timedelta(days=1)), param_drift=False,
        rules=load_rules(rules_path), webhook_url=url, oracle=TruthOracle(settings.raw_dir),
    ))
    _WORLD["world"] = World(settings, run, rules_path, url, received, server)
    return _WORLD["world"]


# -- model directories for parameter drift ------------------------------------------------

SPEC = """
version = 1
name = "unit"
bits = {bits}
seed = 0
missing_token = "__missing__"

[[fields]]
name = "site_id"
kind = "categorical"

[[fields]]
name = "device_type"
kind = "categorical"
"""


def records_and_labels(n: int, seed: int, flip_s0: bool):
    rng = np.random.default_rng(seed)
    recs = [{"site_id": f"s{rng.integers(10)}", "device_type": int(rng.integers(1, 4))} for _ in range(n)]
    logit = np.array([(2.0 if r["site_id"] == "s0" else -1.0) * (-1 if flip_s0 else 1)
                      + 0.3 * r["device_type"] - 1.0 for r in recs])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return recs, y


def fit_dir(tmp_path, name: str, bits: int, flip_s0: bool):
    from shared.featurize import Featurizer, FeatureSpec
    from training.artifacts import load_model_dir, save_model_dir
    from training.model import SparseLogisticRegression

    text = SPEC.format(bits=bits)
    spec = FeatureSpec.from_toml(text)
    recs, y = records_and_labels(3000, 5, flip_s0)
    model = SparseLogisticRegression(C=10.0, max_iter=200, random_state=0).fit(
        Featurizer(spec).transform_records(recs), y)
    return load_model_dir(save_model_dir(model, text, spec.fingerprint, tmp_path / name)), recs
