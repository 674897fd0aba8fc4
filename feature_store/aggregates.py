"""``ctr features build``: amortized, point-in-time aggregate features.

Per entity (``shared.aggregates.ENTITIES``) and day D, the impressions and clicks
of the look-back days [D - L, D - 1]: an impression on day D sees only days
before D. A click counts for its impression's day only if it happened before that
day ended, so no value depends on anything logged on or after D (late clicks of
day D - 1 that arrive during D are left out: slightly fewer clicks, never leakage).

Built incrementally: a run recomputes the partitions of its date range (reading
the look-back days before it) in one Delta commit, on the production job's own
schedule; training joins the table onto observations by (entity key, date) and
the bidder loads a snapshot of the latest values (:func:`export_snapshot`).
"""

from __future__ import annotations

import time
from functools import reduce
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Sequence

from feature_store import tables
from shared.aggregates import ENTITIES, KEY_SEPARATOR, LOOKBACK_DAYS
from shared.config import Settings
from shared.errors import ConfigurationError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

_COUNTS = ("imps", "clicks")


def key_column(entity: str) -> "Column":
    """Spark twin of :func:`shared.aggregates.entity_key` (NULL when a part is missing)."""
    from pyspark.sql import functions as F

    cols = [F.col(c).cast("string") for c in ENTITIES[entity]]
    present = reduce(lambda a, b: a & b, [c.isNotNull() & (c != "") for c in cols])
    return F.when(present, F.concat_ws(KEY_SEPARATOR, *cols))


def _day_number(col: str = "date") -> "Column":
    from pyspark.sql import functions as F

    return F.datediff(F.col(col), F.lit("1970-01-01").cast("date"))


def daily_counts(observations: "DataFrame", entity: str) -> "DataFrame":
    """(entity, entity_key, day, imps, clicks) for each entity and day it was seen."""
    from pyspark.sql import functions as F

    day_end = F.col("date").cast("timestamp") + F.expr("INTERVAL 1 DAY")
    known_click = (F.col("label") == 1) & (
        F.col("event_time") + F.make_dt_interval(secs=F.col("click_delay_s")) < day_end)
    return (
        observations.select(key_column(entity).alias("entity_key"), _day_number().alias("day"),
                            known_click.cast("int").alias("click"))
        .filter(F.col("entity_key").isNotNull())
        .groupBy("entity_key", "day")
        .agg(F.count("*").alias("imps"), F.sum("click").alias("clicks"))
        .withColumn("entity", F.lit(entity))
    )


def _all_daily_counts(observations: "DataFrame") -> "DataFrame":
    """:func:`daily_counts` of every entity, in one frame."""
    return reduce(lambda a, b: a.unionByName(b), [daily_counts(observations, entity) for entity in ENTITIES])


def _lookback_sums(daily: "DataFrame", lookbacks: Sequence[int]) -> "DataFrame":
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    out = daily
    for n in lookbacks:
        w = Window.partitionBy("entity", "entity_key").orderBy("day").rangeBetween(-n, -1)
        for kind in _COUNTS:
            out = out.withColumn(f"{kind}_{n}d", F.coalesce(F.sum(kind).over(w), F.lit(0)).cast("long"))
    return out


@dataclass
class BuildResult:
    """One aggregate build: its days, rows written, the Delta version made and the observations version read."""

    start: str
    end: str
    rows: int
    delta_version: int
    observations_version: int
    seconds: float


def build_aggregates(
    spark: "SparkSession",
    settings: Settings,
    start: date,
    end: date,
    lookbacks: Sequence[int] = LOOKBACK_DAYS,
    observations_version: int | None = None,
) -> BuildResult:
    """Recompute the aggregate partitions of [start, end] (inclusive) in one commit."""
    from pyspark.sql import functions as F

    from feature_store.reader import Window, read_window

    if end < start:
        raise ConfigurationError(f"end date {end} is before start date {start}")
    if not lookbacks or min(lookbacks) < 1:
        raise ConfigurationError("look-backs must be whole days >= 1")
    t0 = time.perf_counter()
    lookbacks = sorted(set(lookbacks))
    source = Window(start - timedelta(days=max(lookbacks)), end + timedelta(days=1))
    cols = sorted({"date", "event_time", "label", "click_delay_s"} | {c for e in ENTITIES.values() for c in e})
    obs, read = read_window(spark, settings, source, cols, version=observations_version)
    daily = _all_daily_counts(obs)
    first, last = (start - date(1970, 1, 1)).days, (end - date(1970, 1, 1)).days
    result = (
        _lookback_sums(daily, lookbacks)
        .filter(F.col("day").between(first, last))
        .withColumn("date", F.date_add(F.lit("1970-01-01").cast("date"), F.col("day")))
        .drop("day", *_COUNTS)
    )
    days = [(start + timedelta(days=k)).isoformat() for k in range((end - start).days + 1)]
    version = tables.replace_partitions(result, settings.table_path(tables.AGGREGATES), "date", days)
    rows = spark.read.format("delta").option("versionAsOf", version).load(
        settings.table_path(tables.AGGREGATES)).filter(F.col("date").cast("string").isin(days)).count()
    return BuildResult(start.isoformat(), end.isoformat(), rows, version, read.version, time.perf_counter() - t0)


def join_aggregates(observations: "DataFrame", aggregates: "DataFrame",
                    entities: Sequence[str] = tuple(ENTITIES)) -> "DataFrame":
    """Observations plus ``<entity>_<count>_<L>d`` columns, matched on (entity key, date); an
    entity with no row that day (never seen in the look-back) gets zeros."""
    from pyspark.sql import functions as F

    count_cols = [c for c in aggregates.columns if c not in ("entity", "entity_key", "date")]
    out = observations
    for entity in entities:
        side = aggregates.filter(F.col("entity") == entity).select(
            F.col("entity_key").alias(f"_k_{entity}"), F.col("date").alias(f"_d_{entity}"),
            *[F.col(c).alias(f"{entity}_{c}") for c in count_cols])
        out = (out.join(side, (key_column(entity) == F.col(f"_k_{entity}")) & (F.col("date") == F.col(f"_d_{entity}")),
                        "left")
               .drop(f"_k_{entity}", f"_d_{entity}")
               .fillna(0, subset=[f"{entity}_{c}" for c in count_cols]))
    return out


def export_snapshot(
    spark: "SparkSession", settings: Settings, as_of: date, lookbacks: Sequence[int] = LOOKBACK_DAYS,
    observations_version: int | None = None,
) -> "pa.Table":
    """The values a request on day ``as_of`` sees (from days [as_of - L, as_of - 1]), as
    Arrow: entity, entity_key, and one column per look-back count. Loaded by the bidder
    through :class:`shared.aggregates.AggregateSnapshot`."""
    from pyspark.sql import functions as F

    from feature_store.reader import Window, read_window

    lookbacks = sorted(set(lookbacks))
    source = Window(as_of - timedelta(days=max(lookbacks)), as_of)
    cols = sorted({"date", "event_time", "label", "click_delay_s"} | {c for e in ENTITIES.values() for c in e})
    obs, _ = read_window(spark, settings, source, cols, version=observations_version)
    today = (as_of - date(1970, 1, 1)).days
    daily = _all_daily_counts(obs)
    aggs = []
    for n in lookbacks:
        recent = F.col("day") >= today - n
        for kind in _COUNTS:
            aggs.append(F.sum(F.when(recent, F.col(kind)).otherwise(0)).cast("long").alias(f"{kind}_{n}d"))
    return daily.groupBy("entity", "entity_key").agg(*aggs).orderBy("entity", "entity_key").toArrow()
