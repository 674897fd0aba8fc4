"""``ctr monitor``: metrics, drift and alerts for logging days, in one Spark pass per day set.

:func:`monitor_days` reads the days' prediction logs once and

1. writes the live metrics (:mod:`monitoring.live_metrics`) to ``monitor_metrics``,
2. writes feature drift against each live version's training window to ``feature_drift``,
3. brings ``param_drift`` up to date for the registered versions,
4. evaluates the alert rules for the days and records the firings in ``alerts``;

each table replacing the days' partitions in one commit (re-running a day gives the same
tables). :func:`monitor_day` is the one-day entry point the demo calls; it also returns
the day's headline figures, with the best possible log-loss when the generator's truth
is there for the impressions scored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from feature_store.reader import Window
from monitoring import tables
from monitoring.alerts import AlertResult, RuleSet, load_rules, run_alerts
from monitoring.live_metrics import MetricsConfig, MetricsResult, compute_metrics
from shared.config import Settings
from shared.model.registry import DEFAULT_MODEL_NAME
from shared.oracle import Oracle
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession



@dataclass(frozen=True)
class MonitorOptions:
    metrics: MetricsConfig = MetricsConfig()
    model_name: str = DEFAULT_MODEL_NAME
    reference_window: Window | None = None  # drift reference for every version (default: its train window)
    feature_drift: bool = True
    param_drift: bool = True
    alerts: bool = True
    rules: RuleSet | None = None  # default: monitoring/alert_rules.toml
    webhook_url: str | None = None  # overrides the rules file's [webhook].url
    drift_top_k: int = 20
    drift_numeric_bins: int = 10
    predictions_dir: Path | None = None
    oracle: Oracle | None = None  # the best possible log-loss (generated data only: synthetic.oracle)


@dataclass
class DaySummary:
    """Headline figures of one day (day windows, overall slice, all versions together)."""

    date: str
    predictions: int = 0
    impressions: int = 0
    unlabelled: int = 0
    clicks: int = 0
    ctr: float | None = None
    mean_predicted: float | None = None
    calibration: float | None = None
    log_loss: float | None = None
    normalized_entropy: float | None = None
    auc_by_version: dict[str, float | None] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    mature: bool = False
    best_possible_log_loss: float | None = None
    calibration_vs_truth: float | None = None  # predicted clicks / true expected clicks (oracle)
    excluded_lines: dict[str, int] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    max_psi: float | None = None
    max_psi_field: str | None = None

    def line(self) -> str:
        f = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
        parts = [
            f"{self.date}: {self.predictions:,} predictions ({self.impressions:,} labelled, "
            f"{self.unlabelled:,} unlabelled) from version(s) {', '.join(self.versions) or '-'}",
            f"CTR {f(self.ctr, '.4f')}, predicted {f(self.mean_predicted, '.4f')}, calibration "
            f"{f(self.calibration, '.3f')}, log-loss {f(self.log_loss, '.5f')}, NE {f(self.normalized_entropy, '.4f')}",
        ]
        if self.best_possible_log_loss is not None:
            parts.append(f"best possible log-loss {self.best_possible_log_loss:.5f}")
        if self.calibration_vs_truth is not None:
            parts.append(f"calibration vs the true probabilities {self.calibration_vs_truth:.3f}")
        parts.append("labels mature" if self.mature else "labels NOT mature yet")
        if self.max_psi is not None:
            parts.append(f"max PSI {self.max_psi:.3f} ({self.max_psi_field})")
        if self.excluded_lines:
            parts.append("lines left out: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.excluded_lines.items())))
        parts.append(f"{len(self.alerts)} alert(s)")
        return "; ".join(parts)


@dataclass
class MonitorRun:
    run_id: str
    days: list[str]
    metrics: MetricsResult
    metrics_version: int
    summaries: dict[str, DaySummary]
    feature_drift_rows: list[dict] = field(default_factory=list)
    drift_skipped: dict[str, str] = field(default_factory=dict)
    param_drift_rows: list[dict] = field(default_factory=list)
    alerts: AlertResult = field(default_factory=AlertResult)
    seconds: dict[str, float] = field(default_factory=dict)


def _with_run_columns(rows: pa.Table, config: MetricsConfig, horizon: datetime | None, run_id: str,
                      now: datetime) -> pa.Table:
    n = rows.num_rows
    ts = pa.timestamp("us", tz="UTC")
    rows = rows.append_column("label_horizon", pa.array([horizon] * n, ts))
    rows = rows.append_column("as_of", pa.array([config.resolved_as_of()] * n, ts))
    rows = rows.append_column("run_id", pa.array([run_id] * n, pa.string()))
    rows = rows.append_column("computed_at", pa.array([now] * n, ts))
    day = pc.cast(pc.cast(rows.column("window_start"), pa.timestamp("us")), pa.date32())
    rows = rows.append_column("date", day)
    schema = tables.SCHEMAS[tables.METRICS]
    return rows.select(schema.names).cast(schema)


def _headline(day: str, rows: list[dict]) -> DaySummary:
    from training.metrics import binary_entropy

    s = DaySummary(date=day)
    overall = [r for r in rows if r["window"] == "day" and r["slice_field"] == tables.OVERALL]
    for r in overall:
        s.predictions += r["predictions"]
        s.impressions += r["impressions"]
        s.unlabelled += r["unlabelled"]
        s.clicks += r["clicks"]
        s.auc_by_version[r["model_version"]] = r["auc"]
    s.versions = sorted({r["model_version"] for r in overall})
    s.mature = bool(overall) and all(r["mature"] for r in overall)
    labelled = [r for r in overall if r["impressions"]]
    if s.impressions:
        s.ctr = s.clicks / s.impressions
        s.mean_predicted = sum(r["mean_predicted"] * r["impressions"] for r in labelled) / s.impressions
        s.calibration = s.mean_predicted / s.ctr if s.clicks else None
        # log-loss is a mean over rows: the union's is the impression-weighted mean
        s.log_loss = sum(r["log_loss"] * r["impressions"] for r in labelled) / s.impressions
        s.normalized_entropy = s.log_loss / binary_entropy(s.ctr) if 0 < s.clicks < s.impressions else None
    return s


def _day_rows(labelled: pa.Table | None, day: str) -> tuple[pa.Table, date, date] | None:
    """The day's labelled rows and the observation days [start, end) they were logged on."""
    if labelled is None:
        return None
    rows = labelled.filter(pc.equal(labelled.column("day"), day))
    if rows.num_rows == 0:
        return None
    obs_dates = sorted({d for d in rows.column("obs_date").to_pylist() if d})
    return rows, date.fromisoformat(obs_dates[0]), date.fromisoformat(obs_dates[-1]) + timedelta(days=1)


def _oracle_figures(oracle: Oracle, labelled: pa.Table | None, day: str) -> tuple[float | None, float | None]:
    """(best possible log-loss, calibration against the true probabilities) of a day's rows."""
    found = _day_rows(labelled, day)
    if found is None:
        return None, None
    rows, start, end = found
    best = oracle.best_log_loss(rows.select(["impression_id", "label"]), start, end)
    true_clicks = oracle.true_click_sum(rows.select(["impression_id"]), start, end)
    predicted = float(pc.sum(rows.column("p")).as_py() or 0.0)
    return best, (predicted / true_clicks if true_clicks else None)


def monitor_days(spark: "SparkSession", settings: Settings, days: Sequence[date],
                 options: MonitorOptions = MonitorOptions()) -> MonitorRun:
    """Compute and write metrics, drift and alerts for the logging ``days`` (see the module docstring)."""
    from pyspark import StorageLevel

    from monitoring import drift, registry
    from monitoring.predictions import read_predictions

    days = sorted(set(days))
    if not days:
        raise ConfigurationError("no days to monitor")
    run_id = uuid.uuid4().hex
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    preds = read_predictions(spark, settings, days, options.predictions_dir).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        result = compute_metrics(spark, settings, preds, days, options.metrics, keep_labelled_rows=options.oracle is not None)
        now = datetime.now(timezone.utc)
        rows = _with_run_columns(result.rows, options.metrics, result.label_horizon, run_id, now)
        rows = rows.sort_by([("date", "ascending"), ("model_version", "ascending"), ("window", "ascending"),
                             ("window_start", "ascending"), ("slice_field", "ascending"),
                             ("slice_value", "ascending")])
        day_strings = [d.isoformat() for d in days]
        metrics_version = tables.write(spark, settings, tables.METRICS, rows, day_strings)
        seconds["metrics"] = time.perf_counter() - t0
        run = MonitorRun(run_id=run_id, days=day_strings, metrics=result, metrics_version=metrics_version,
                         summaries={})
        pylist = rows.to_pylist()
        live_versions = sorted({r["model_version"] for r in pylist})
        infos = None
        if options.feature_drift or options.param_drift:
            infos = registry.versions(settings, options.model_name)
        if options.feature_drift:
            t0 = time.perf_counter()
            fd = drift.feature_drift(spark, settings, preds, live_versions, model_name=options.model_name,
                                     reference_window=options.reference_window, top_k=options.drift_top_k,
                                     numeric_bins=options.drift_numeric_bins, run_id=run_id,
                                     registry_versions=infos)
            tables.write(spark, settings, tables.FEATURE_DRIFT,
                         tables.arrow_table(tables.FEATURE_DRIFT, fd.rows), day_strings)
            run.feature_drift_rows, run.drift_skipped = fd.rows, fd.skipped
            seconds["feature_drift"] = time.perf_counter() - t0
        if options.param_drift and infos and len(infos) > 1:
            t0 = time.perf_counter()
            run.param_drift_rows, _ = drift.param_drift(spark, settings, options.model_name,
                                                        registry_versions=infos, run_id=run_id)
            seconds["param_drift"] = time.perf_counter() - t0
        if options.alerts:
            t0 = time.perf_counter()
            ruleset = options.rules or load_rules()
            run.alerts = run_alerts(
                spark, settings, days, ruleset, webhook_url=options.webhook_url, run_id=run_id, metrics=pylist,
                feature_drift=run.feature_drift_rows if options.feature_drift else None,
                param_drift=run.param_drift_rows if options.param_drift and infos and len(infos) > 1 else None)
            seconds["alerts"] = time.perf_counter() - t0
    finally:
        preds.unpersist()
    for d in day_strings:
        s = _headline(d, [r for r in pylist if r["date"].isoformat() == d])
        s.excluded_lines = dict(result.excluded.get(d, {}))
        if options.oracle is not None:
            s.best_possible_log_loss, s.calibration_vs_truth = _oracle_figures(options.oracle, result.labelled_rows, d)
        day_drift = [r for r in run.feature_drift_rows if r["date"].isoformat() == d and r["psi"] is not None]
        if day_drift:
            top = max(day_drift, key=lambda r: r["psi"])
            s.max_psi, s.max_psi_field = top["psi"], top["field"]
        s.alerts = [a["message"] for a in run.alerts.alerts if a["date"].isoformat() == d]
        run.summaries[d] = s
    run.seconds = seconds
    return run


def monitor_day(spark: "SparkSession", settings: Settings, day: date, **options: Any) -> DaySummary:
    """Monitor one logging day (metrics, drift, alerts) and return its headline figures,
    with the best possible log-loss when given an ``oracle``."""
    opts = MonitorOptions(**options)
    return monitor_days(spark, settings, [day], opts).summaries[day.isoformat()]

