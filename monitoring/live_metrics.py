"""Live CTR, calibration and log-loss per model version x window x slice (``ctr monitor``).

For the logging days asked for, the job

1. reads the prediction log (:mod:`monitoring.predictions`), counting the lines left out
   (invalid or repeated) by reason;
2. joins each prediction to its observed impression (the observations table, by
   ``impression_id``; when the prediction names a creative — a candidate ad scored for
   an OpenRTB request — the observation's creative must match too, so the candidates
   that were not shown do not borrow the shown ad's label). A prediction with no such
   observation is *unlabelled*: counted in ``unlabelled``, left out of the metrics;
3. groups every prediction into (model version, window in {hour, day}, slice) where the
   slices are ``overall`` plus each configured field's top-N values by volume (the rest
   as ``__other__``, nulls as ``__missing__``), and computes each group's metrics with
   :func:`training.metrics.evaluate` and :func:`training.metrics.reliability_curve`
   inside ``applyInPandas`` — the same definitions training and the promotion gate use;
4. marks a window ``mature`` only when every label in it is final: a labelled
   prediction's label is final once ``event_time + attribution window`` lies behind both
   ``as_of`` and the clicks ingested for the observation's day (:func:`label_horizons`,
   from ``ingest_runs``); an unlabelled prediction's once its event time + attribution window lies
   behind both ``as_of`` and the newest clicks ingested for any day;
5. returns the rows as Arrow; :func:`monitoring.job.monitor_days` writes them, replacing
   the days' partitions in one commit.

Windows are the prediction's *event time* (``ts`` of :func:`monitoring.predictions.read_predictions`:
the impression's own time when the request gave one, else the receipt time), so the days and
hours are the traffic's, a replay of last week's impressions counts on last week's days, and
a day's windows are exactly the rows of that day's log folder.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from feature_store import tables as warehouse
from monitoring.tables import ALL, MISSING, OTHER, OVERALL
from shared.config import Settings
from shared.errors import ConfigurationError, MissingInputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_SLICES = ("site_id", "device_type", "advertiser_id")
GROUP_DDL = (
    "model_version string, window string, window_start timestamp, window_end timestamp, "
    "slice_field string, slice_value string, predictions long, impressions long, unlabelled long, "
    "clicks long, ctr double, mean_predicted double, mean_predicted_all double, calibration double, "
    "log_loss double, normalized_entropy double, auc double, rel_bin_lower array<double>, "
    "rel_bin_upper array<double>, rel_count array<long>, rel_mean_predicted array<double>, "
    "rel_observed_rate array<double>, mature boolean, labels_final_at timestamp"
)


@dataclass(frozen=True)
class MetricsConfig:
    """How live metrics are computed: slice fields, top-N, attribution window, ``as_of`` and bins."""

    slice_fields: tuple[str, ...] = DEFAULT_SLICES
    top_n: int = 20
    attribution_hours: float = 24.0
    as_of: datetime | None = None  # default: now
    label_lookback_days: int | None = None  # None: join against the whole observations table
    reliability_bins: int = 10

    def __post_init__(self):
        from shared.openrtb import RAW_FIELD_NAMES

        unknown = [f for f in self.slice_fields if f not in RAW_FIELD_NAMES]
        if unknown:
            raise ConfigurationError(f"unknown slice field(s) {', '.join(unknown)}; raw fields are: "
                                     f"{', '.join(RAW_FIELD_NAMES)}")
        if self.top_n < 1:
            raise ConfigurationError("top-N must be at least 1")
        if not self.attribution_hours > 0:
            raise ConfigurationError("the attribution window must be positive")
        if self.label_lookback_days is not None and self.label_lookback_days < 0:
            raise ConfigurationError("label look-back days must be >= 0")

    def resolved_as_of(self) -> datetime:
        """``as_of`` as an aware UTC time, now when not given."""
        t = self.as_of or datetime.now(timezone.utc)
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@dataclass
class MetricsResult:
    """Live metric rows for the days, with the lines read and left out per day and the label horizon."""

    days: list[str]
    rows: pa.Table  # monitor_metrics rows without the run columns
    lines_read: dict[str, int] = field(default_factory=dict)  # per log day
    excluded: dict[str, dict[str, int]] = field(default_factory=dict)  # per log day: reason -> lines
    top_values: dict[str, list[str]] = field(default_factory=dict)
    label_horizon: datetime | None = None
    labelled_rows: pa.Table | None = None  # impression_id, obs_date, label, p (when asked for)


# -- label horizon -------------------------------------------------------------------

def label_horizons(spark: "SparkSession", settings: Settings) -> tuple[dict[str, datetime], datetime | None]:
    """(observation date -> time up to which its clicks have been read, newest such time).

    The ingest labels a day ``D`` from the click logs of ``D`` through the day its
    attribution window closes, as they were when the run finished; so the clicks of
    ``D``'s latest ingest run are complete up to ``min(finished_at, end of the last click
    day it reads)``. Without an ingest-runs table, the newest ``event_time`` of the
    observations stands in for every date (labels taken as final up to the newest data).
    """
    from pyspark.sql import functions as F

    runs_path = settings.table_path(warehouse.INGEST_RUNS)
    per_date: dict[str, datetime] = {}
    if warehouse.table_exists(spark, runs_path):
        latest: dict[str, tuple] = {}
        for r in (spark.read.format("delta").load(runs_path)
                  .select("date", "finished_at", "attribution_window_hours").collect()):
            if r.date not in latest or r.finished_at > latest[r.date][0]:
                latest[r.date] = (r.finished_at, r.attribution_window_hours)
        for d, (finished, window_hours) in latest.items():
            start = datetime.fromisoformat(d).replace(tzinfo=timezone.utc)
            covered = start + timedelta(days=1 + math.ceil((window_hours or 24.0) / 24))
            per_date[d] = min(finished.replace(tzinfo=timezone.utc), covered)
        return per_date, (max(per_date.values()) if per_date else None)
    obs_path = settings.table_path(warehouse.OBSERVATIONS)
    if not warehouse.table_exists(spark, obs_path):
        return {}, None
    newest = warehouse.first_row(spark.read.format("delta").load(obs_path).agg(F.max("event_time")))[0]
    return {}, (newest.replace(tzinfo=timezone.utc) if newest is not None else None)


# -- the per-group computation (runs in the Python workers) ---------------------------------

def _nan_to_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _group_function(n_bins: int):
    def compute(key, pdf):
        import numpy as np
        import pandas as pd

        from training.metrics import evaluate, reliability_curve

        version, window, ws, we, sfield, svalue = key
        lab = pdf[pdf["labelled"]]
        n_all = int(len(pdf))
        n = int(len(lab))
        row = {
            "model_version": version, "window": window, "window_start": ws, "window_end": we,
            "slice_field": sfield, "slice_value": svalue, "predictions": n_all, "impressions": n,
            "unlabelled": n_all - n, "clicks": 0, "ctr": None, "mean_predicted": None,
            "mean_predicted_all": float(pdf["p"].mean()) if n_all else None,
            "calibration": None, "log_loss": None, "normalized_entropy": None, "auc": None,
            "rel_bin_lower": [], "rel_bin_upper": [], "rel_count": [], "rel_mean_predicted": [],
            "rel_observed_rate": [],
            "mature": bool(pdf["row_mature"].all()),
            "labels_final_at": pdf["final_at"].max(),
        }
        if n:
            y = lab["y"].to_numpy().astype(np.int64)
            p = lab["p"].to_numpy().astype(np.float64)
            m = evaluate(y, p)
            rel = reliability_curve(y, p, n_bins=n_bins)
            row.update(
                clicks=int(m["positives"]), ctr=m["base_ctr"], mean_predicted=m["mean_predicted"],
                calibration=_nan_to_none(m["calibration"]), log_loss=_nan_to_none(m["log_loss"]),
                normalized_entropy=_nan_to_none(m["normalized_entropy"]), auc=_nan_to_none(m["auc"]),
                rel_bin_lower=rel["bin_lower"], rel_bin_upper=rel["bin_upper"], rel_count=rel["count"],
                rel_mean_predicted=rel["mean_predicted"], rel_observed_rate=rel["observed_rate"],
            )
        return pd.DataFrame([row])

    return compute


# -- the job -------------------------------------------------------------------------

def _top_values(counts: list, fields: Sequence[str], top_n: int) -> dict[str, list[str]]:
    by_field: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for f, v, c in counts:
        by_field[f].append((-int(c), v))
    return {f: [v for _, v in sorted(by_field.get(f, []))[:top_n]] for f in fields}


def observations_for(spark: "SparkSession", settings: Settings, days: Sequence[date],
                     lookback_days: int | None, attribution_hours: float) -> "DataFrame":
    """The observation rows a day's predictions may join to (all of them by default)."""
    from pyspark.sql import functions as F

    path = settings.table_path(warehouse.OBSERVATIONS)
    if not warehouse.table_exists(spark, path):
        raise MissingInputError(f"no observations table at {path} (run `ctr ingest` first)")
    obs = spark.read.format("delta").load(path)
    if lookback_days is not None:
        lo = min(days) - timedelta(days=lookback_days)
        hi = max(days) + timedelta(days=1 + math.ceil(attribution_hours / 24))
        obs = obs.filter((F.col("date") >= F.lit(lo.isoformat())) & (F.col("date") <= F.lit(hi.isoformat())))
    return obs.select("impression_id", "event_time", "label", F.col("creative_id").alias("obs_creative_id"),
                      F.col("date").cast("string").alias("obs_date"))


def compute_metrics(spark: "SparkSession", settings: Settings, preds: "DataFrame", days: Sequence[date],
                    config: MetricsConfig, *, keep_labelled_rows: bool = False) -> MetricsResult:
    """Metric rows for the predictions ``preds`` (:func:`monitoring.predictions.read_predictions`)."""
    from pyspark.sql import functions as F

    as_of = config.resolved_as_of()
    day_strings = sorted(d.isoformat() for d in days)
    fields = list(config.slice_fields)

    # 1. one pass for the line verdicts and the slice values' volumes
    status = F.struct(F.concat(F.lit("__status__:"), F.col("log_date")).alias("f"),
                      F.coalesce("reason", F.lit("ok")).alias("v"))
    slice_structs = [
        F.struct(F.lit(f).alias("f"),
                 F.when(F.col("reason").isNull(), F.coalesce(F.col(f"fields.{f}"), F.lit(MISSING))).alias("v"))
        for f in fields
    ]
    counts = (preds.select(F.explode(F.array(status, *slice_structs)).alias("s"))
              .filter(F.col("s.v").isNotNull())
              .groupBy("s.f", "s.v").count().collect())
    excluded: dict[str, dict[str, int]] = {}
    lines_read: dict[str, int] = {}
    for f, v, c in counts:
        if f.startswith("__status__:"):
            day = f.split(":", 1)[1]
            lines_read[day] = lines_read.get(day, 0) + int(c)
            if v != "ok":
                excluded.setdefault(day, {})[v] = int(c)
    top = _top_values([tuple(r) for r in counts if not r[0].startswith("__status__:")], fields, config.top_n)

    # 2. label horizons
    per_date, newest = label_horizons(spark, settings)
    global_horizon = min(as_of, newest) if newest is not None else None
    attr = F.expr(f"INTERVAL {int(round(config.attribution_hours * 3600))} SECONDS")

    # 3. join, label, maturity
    valid = preds.filter(F.col("reason").isNull())
    obs = observations_for(spark, settings, days, config.label_lookback_days, config.attribution_hours)
    joined = valid.join(obs, "impression_id", "left")
    shown = (F.col("obs_creative_id").isNull() | F.col("fields.creative_id").isNull()
             | (F.col("obs_creative_id") == F.col("fields.creative_id")))
    labelled = F.col("event_time").isNotNull() & shown
    horizon_rows = [(d, h) for d, h in per_date.items()]
    if horizon_rows:
        hz = spark.createDataFrame(horizon_rows, "obs_date string, horizon timestamp")
        joined = joined.join(F.broadcast(hz), "obs_date", "left")
    else:
        joined = joined.withColumn("horizon", F.lit(None).cast("timestamp"))
    as_of_lit = F.lit(as_of).cast("timestamp")
    global_lit = F.lit(global_horizon).cast("timestamp") if global_horizon else F.lit(None).cast("timestamp")
    rows = joined.select(
        "model_version", "ts", "p", "fields", "impression_id", "obs_date",
        labelled.alias("labelled"),
        F.when(labelled, F.col("label")).otherwise(F.lit(0)).alias("y"),
        F.when(labelled, F.col("event_time") + attr).otherwise(F.col("ts") + attr).alias("final_at"),
        F.when(labelled, F.least(as_of_lit, F.coalesce("horizon", global_lit))).otherwise(
            F.least(as_of_lit, global_lit)).alias("_limit"),
    ).withColumn("row_mature", F.coalesce(F.col("final_at") <= F.col("_limit"), F.lit(False)))

    def capped(f: str):
        v = F.coalesce(F.col(f"fields.{f}"), F.lit(MISSING))
        return F.when(v.isin(top[f]), v).otherwise(F.lit(OTHER)) if top[f] else F.lit(OTHER)

    slices = F.array(
        F.struct(F.lit(OVERALL).alias("slice_field"), F.lit(ALL).alias("slice_value")),
        *[F.struct(F.lit(f).alias("slice_field"), capped(f).alias("slice_value")) for f in fields],
    )
    hour = F.date_trunc("hour", "ts")
    day = F.date_trunc("day", "ts")
    windows = F.array(
        F.struct(F.lit("hour").alias("window"), hour.alias("window_start"),
                 (hour + F.expr("INTERVAL 1 HOUR")).alias("window_end")),
        F.struct(F.lit("day").alias("window"), day.alias("window_start"),
                 (day + F.expr("INTERVAL 1 DAY")).alias("window_end")),
    )
    grouped = (
        rows.select("model_version", "ts", "p", "y", "labelled", "row_mature", "final_at",
                    F.explode(slices).alias("s"))
        .select("*", F.explode(windows).alias("w"))
        .select("model_version", "w.window", "w.window_start", "w.window_end", "s.slice_field", "s.slice_value",
                "p", "y", "labelled", "row_mature", "final_at")
        .groupBy("model_version", "window", "window_start", "window_end", "slice_field", "slice_value")
        .applyInPandas(_group_function(config.reliability_bins), GROUP_DDL)
    )
    out = _utc(grouped.toArrow())
    labelled_rows = None
    if keep_labelled_rows:
        labelled_rows = rows.filter("labelled").select(
            "impression_id", "obs_date", F.date_format("ts", "yyyy-MM-dd").alias("day"),
            F.col("y").alias("label"), "p").toArrow()
    return MetricsResult(days=day_strings, rows=out, lines_read=lines_read, excluded=excluded, top_values=top,
                         label_horizon=global_horizon, labelled_rows=labelled_rows)


def _utc(table: pa.Table) -> pa.Table:
    """Spark returns zone-less timestamps in the session zone (UTC): mark them UTC."""
    cols, names = [], []
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            col = pc.assume_timezone(col.cast(pa.timestamp("us")), "UTC")
        cols.append(col)
        names.append(f.name)
    return pa.Table.from_arrays(cols, names=names)
