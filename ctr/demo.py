"""The platform's main job, end to end on the embedded defaults (``make demo``).

Each stage prints its own summary; the demo ends with one screen saying what ran,
how long each step took and where the results are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlsplit

from feature_store.aggregates import build_aggregates
from feature_store.ingest import ingest_range
from feature_store.reader import Window, read_window, to_arrow
from monitoring.cli import DASHBOARD_PORT
from monitoring.job import MonitorOptions, monitor_days
from monitoring.schedule_job import run_schedule
from serving.server import ServeOptions, running_server
from shared import spark as spark_mod
from shared.config import Settings
from shared.errors import ConfigurationError
from shared.openrtb import RAW_FIELD_NAMES
from synthetic.config import GeneratorConfig
from synthetic.logs import generate_logs
from synthetic.oracle import TruthOracle
from training.pipeline import DEFAULT_MODEL_NAME, Windows, train_from_warehouse


@dataclass
class Report:
    """The demo's steps (name, seconds, detail), printed as they finish and summed at the end."""

    steps: list[tuple[str, float, str]] = field(default_factory=list)

    def step(self, name: str, seconds: float, detail: str) -> None:
        """Record a finished step and print its one-line progress message."""
        self.steps.append((name, seconds, detail))
        print(f"[demo] {name}: {detail} ({seconds:.1f}s)", flush=True)

    def render(self, settings: Settings) -> str:
        """The closing summary: each step's time and detail, the total, and where the data lives."""
        lines = ["", "=" * 72, "ctr-platform demo: summary", "=" * 72]
        for name, seconds, detail in self.steps:
            lines.append(f"{name:<14} {seconds:7.1f}s  {detail}")
        lines.append(f"{'total':<14} {sum(s for _, s, _ in self.steps):7.1f}s")
        lines += [
            "",
            f"data root       {settings.home}",
            f"warehouse       {settings.warehouse_dir}",
            f"MLflow store    {settings.mlflow_tracking_uri}",
            f"  browse it:    .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}",
            "=" * 72,
        ]
        return "\n".join(lines)


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def run(settings: Settings, days: int, per_day: int, seed: int) -> int:
    """generate logs -> ingest -> aggregate features -> train + register -> (serve, monitor as they land)."""


    if days < 4:
        raise ConfigurationError("the demo needs at least 4 days (train, validation, test and one more)")
    report = Report()
    settings.home.mkdir(parents=True, exist_ok=True)
    start = date(2026, 11, 1)
    cfg = GeneratorConfig(start_date=start, days=days, impressions_per_day=per_day, seed=seed)
    summary, secs = _timed(generate_logs, cfg, settings.raw_dir, overwrite=True, progress=None)
    report.step("generate", secs, f"{summary.impressions:,} impressions over {days} days, {summary.clicks:,} clicks, "
                f"{sum(summary.faulty_lines.values()):,} faulty lines, {summary.duplicates:,} duplicates "
                f"-> {settings.raw_dir}")

    spark, secs = _timed(spark_mod.get_spark, settings, "ctr-demo")
    report.step("spark", secs, f"Spark {spark.version} with Delta Lake on {settings.spark_master}")

    end = start + timedelta(days=days - 1)
    results, secs = _timed(ingest_range, spark, settings, start, end)
    tot = {k: sum(getattr(r, k) for r in results) for k in ("records_read", "observations", "duplicates",
                                                            "quarantined", "positives")}
    report.step("ingest", secs, f"read {tot['records_read']:,} = {tot['observations']:,} observations + "
                f"{tot['duplicates']:,} duplicates + {tot['quarantined']:,} quarantined "
                f"(CTR {tot['positives'] / max(tot['observations'], 1):.4f}) -> Delta v{results[-1].delta_version}")

    agg, secs = _timed(build_aggregates, spark, settings, start, end)
    report.step("features", secs, f"{agg.rows:,} entity-day aggregate rows (look-backs 1d, 7d), point-in-time")

    # The last day is held out for serving and monitoring; the three before it are train/validation/test.
    windows = Windows.consecutive(start, days - 3, 1, 1)
    trained, secs = _timed(train_from_warehouse, spark, settings, windows, "generated_agg", seed=seed,
                           progress=False, oracle=TruthOracle(settings.raw_dir))
    print(trained.summary(), flush=True)
    t = trained.metrics["test"]
    best = trained.best_possible_test_log_loss
    report.step("train", secs, f"v{trained.version} ({trained.best_params.get('engine', 'sklearn')} engine, default "
                f"search) {'promoted to champion' if trained.promoted else 'not promoted'}; "
                f"test log-loss {t['log_loss']:.5f} (best possible {best:.5f}, constant CTR "
                f"{trained.baseline_test_log_loss:.5f}), AUC {t['auc']:.3f}, calibration {t['calibration']:.3f}"
                if best is not None else f"v{trained.version}: test log-loss {t['log_loss']:.5f}")
    held_out = end  # the day after the test window: scored live through the bidder endpoint
    scored, secs = _timed(score_day_over_http, spark, settings, held_out)
    report.step("serve", secs, scored)

    monitored, secs = _timed(monitor_served, spark, settings)
    report.step("monitor", secs, monitored)


    outcome, secs = _timed(run_schedule, spark, settings, model_name=DEFAULT_MODEL_NAME, dry_run=True)
    decision = outcome.decision
    report.step("schedule", secs, f"decision: {decision.action} ({'; '.join(decision.reasons)})"
                + (f"; would run: {outcome.command}" if outcome.command else ""))

    print(report.render(settings))
    print(f"dashboards: .venv/bin/ctr --home {settings.home} dashboard   then open "
          f"http://{settings.host}:{DASHBOARD_PORT}/")
    return 0


def monitor_served(spark, settings: Settings) -> str:
    """Metrics, drift and alerts for every day the prediction log holds (the traffic's days:
    the log files each prediction under its event time; the job also writes the dashboards'
    export)."""


    days = sorted(date.fromisoformat(p.name.split("=", 1)[1]) for p in settings.predictions_dir.glob("date=*"))
    run = monitor_days(spark, settings, days, MonitorOptions(oracle=TruthOracle(settings.raw_dir)))
    return " | ".join(s.line() for s in run.summaries.values())


def _utc(t: datetime) -> str:
    """An event time as ISO-8601 with its UTC offset (Spark hands timestamps back without one)."""
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()


def score_day_over_http(spark, settings: Settings, day, batch: int = 100) -> str:
    """Start the bidder endpoint on the champion, replay every observation of ``day`` through
    HTTP in batches, in event-time order, each record with its impression's own ``event_time``
    (so the prediction log files it, and the monitor counts it, on ``day``, not on the day of
    the replay), stop it."""
    import http.client

    import orjson


    df, _ = read_window(spark, settings, Window(day, day + timedelta(days=1)),
                        ["impression_id", "event_time", *RAW_FIELD_NAMES])
    rows = to_arrow(df.orderBy("event_time", "impression_id")).to_pylist()
    ctrs: list[float] = []
    latencies: list[float] = []
    with running_server(settings, ServeOptions(poll_seconds=3600)) as url:
        conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)  # netloc: host:port
        version = None
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            body = orjson.dumps({"request_id": f"demo-{day.isoformat()}-{start // batch}",
                                 "records": [{"id": r.pop("impression_id"), "event_time": _utc(r.pop("event_time")),
                                              "fields": r} for r in chunk]})
            t0 = time.perf_counter()
            conn.request("POST", "/v1/score", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = orjson.loads(resp.read())
            latencies.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise RuntimeError(f"scoring failed with HTTP {resp.status}: {payload}")
            version = payload["model_version"]
            ctrs += [p["ctr"] for p in payload["predictions"]]
        conn.close()
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
    return (f"champion v{version} scored {len(ctrs):,} held-out impressions of {day} over HTTP in "
            f"{len(latencies):,} batches of {batch} (p99 {p99:.1f} ms, mean predicted CTR "
            f"{sum(ctrs) / max(len(ctrs), 1):.4f}); prediction log in {settings.predictions_dir}")
