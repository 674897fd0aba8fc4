"""Reading the bidder's prediction log (:mod:`serving.predlog`) with Spark.

Files: ``<predictions_dir>/date=YYYY-MM-DD/hour=HH.jsonl``, filed by the predictions'
event time, one JSON object per scored impression (``received_at``, ``event_time``,
``request_id``, ``impression_id``, optional ``ad_index``, ``endpoint``, ``model_version``,
``ctr``, ``fields``), or per ``/v1/score`` request (``ctrs`` and the raw ``request`` body:
``ctrs[i]`` belongs to ``request.records[i]``, whose event time is ``event_times[i]`` when
the line has them, else the line's ``event_time``), which is expanded here into the same
per-impression rows. Lines written before event times were logged have one ``ts`` (the
receipt time), taken for both times. A day is the traffic's day: a row counts on the UTC
date of its event time, and a request line (filed in each date folder its records' event
times touch) contributes to a folder only the records of that folder's date. The raw ``fields`` are read as
strings whatever their JSON type (a number's text, an array's JSON text), because
``/v1/score`` accepts loosely typed fields and a typed schema would turn a record
with a string ``device_type`` into a corrupt line. Lines that are not JSON, or lack
a time, a model version or a probability in [0, 1], are counted by reason and left out, as
are repeats of a logged record (reason ``duplicate``).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from shared.config import Settings
from shared.errors import MissingInputError
from shared.openrtb import RAW_FIELD_NAMES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FIELDS_DDL = ", ".join(f"{n}: string" for n in RAW_FIELD_NAMES)
LOG_DDL = (
    "ts string, received_at string, event_time string, request_id string, impression_id string, ad_index long, "
    f"endpoint string, model_version string, ctr double, fields struct<{FIELDS_DDL}>, fields_error string, "
    "ctrs array<double>, event_times array<string>, "
    f"request struct<records: array<struct<id: string, fields: struct<{FIELDS_DDL}>>>>, "
    "_corrupt_record string"
)
# Invalid-line reasons, in the order they are checked.
REASONS = ("malformed_json", "bad_time", "no_model_version", "bad_ctr", "duplicate")


def day_files(predictions_dir: Path, day: date) -> list[str]:
    """The hourly prediction-log files of one day, sorted."""
    folder = Path(predictions_dir) / f"date={day.isoformat()}"
    return sorted(str(p) for p in folder.glob("hour=*.jsonl")) if folder.is_dir() else []


def read_predictions(spark: "SparkSession", settings: Settings, days: Iterable[date],
                     predictions_dir: Path | None = None) -> "DataFrame":
    """Every logged prediction of ``days`` (the traffic's days) with a validity verdict.

    Columns: ``reason`` (null for a line to use, else one of :data:`REASONS`), ``ts``
    (timestamp: the prediction's event time, its receipt time for an old line),
    ``received_at`` (timestamp), ``log_date`` (string, from the file's folder: the event
    time's date), ``request_id``, ``impression_id``, ``ad_index``, ``model_version``, ``p``
    (the predicted CTR) and ``fields`` (struct of strings). Repeats of a valid record (same
    request, impression, ad index and model version) after the first received get the
    reason ``duplicate``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    root = Path(predictions_dir or settings.predictions_dir)
    files = [f for d in sorted(set(days)) for f in day_files(root, d)]
    if not files:
        raise MissingInputError(f"no prediction logs for {', '.join(d.isoformat() for d in sorted(set(days)))} "
                                f"under {root}")
    lines = (spark.read.schema(LOG_DDL).option("mode", "PERMISSIVE")
             .option("columnNameOfCorruptRecord", "_corrupt_record").json(files)
             .withColumn("_file", F.col("_metadata.file_path"))
             .withColumn("received_at", F.coalesce("received_at", "ts"))
             .withColumn("event_time", F.coalesce("event_time", "ts")))
    # Request lines: one row per record, paired with its CTR (and event time) by position
    # (arrays_zip pads a shorter array with nulls, so a count mismatch shows up as bad_ctr rows).
    no_times = F.array().cast("array<string>")
    per_record = F.arrays_zip(F.col("request.records").alias("rec"), F.col("ctrs").alias("p"),
                              F.coalesce("event_times", no_times).alias("t"))
    expanded = (lines.where(F.col("ctrs").isNotNull() & F.col("_corrupt_record").isNull())
                .select("received_at", "event_time", "request_id", "endpoint", "model_version", "_file",
                        "_corrupt_record", F.explode_outer(per_record).alias("_r"))
                .select("received_at", F.coalesce("_r.t", "event_time").alias("event_time"), "request_id",
                        F.col("_r.rec.id").alias("impression_id"),
                        F.lit(None).cast("long").alias("ad_index"), "endpoint", "model_version",
                        F.col("_r.p").alias("ctr"), F.col("_r.rec.fields").alias("fields"), "_file",
                        "_corrupt_record"))
    raw = (lines.where(F.col("ctrs").isNull() | F.col("_corrupt_record").isNotNull())
           .select("received_at", "event_time", "request_id", "impression_id", "ad_index", "endpoint",
                   "model_version", "ctr", "fields", "_file", "_corrupt_record")
           .unionByName(expanded))
    ts = F.to_timestamp("event_time")
    received = F.coalesce(F.to_timestamp("received_at"), ts)
    log_date = F.regexp_extract(F.col("_file"), r"date=(\d{4}-\d{2}-\d{2})", 1)
    reason = (F.when(F.col("_corrupt_record").isNotNull(), F.lit("malformed_json"))
              .when(ts.isNull(), F.lit("bad_time"))
              .when(F.col("model_version").isNull() | (F.trim("model_version") == ""), F.lit("no_model_version"))
              .when(F.col("ctr").isNull() | F.isnan("ctr") | (F.col("ctr") < 0) | (F.col("ctr") > 1),
                    F.lit("bad_ctr")))
    df = raw.select(
        reason.alias("reason"),
        ts.alias("ts"),
        received.alias("received_at"),
        log_date.alias("log_date"),
        "request_id", "impression_id", "ad_index", "model_version", F.col("ctr").alias("p"), "fields",
    # a request line filed under several dates gives each folder the records of its own date only
    ).filter(F.col("ts").isNull() | (F.date_format("ts", "yyyy-MM-dd") == F.col("log_date")))
    # One row per (request, impression, ad, version): a re-delivered request is not two predictions.
    key = F.coalesce(F.col("impression_id"), F.monotonically_increasing_id().cast("string"))
    first = F.row_number().over(Window.partitionBy("request_id", "_k", "ad_index", "model_version")
                                .orderBy("received_at", "ts"))
    valid = (df.filter(F.col("reason").isNull()).withColumn("_k", key)
             .withColumn("reason", F.when(first > 1, F.lit("duplicate"))).drop("_k"))
    return valid.unionByName(df.filter(F.col("reason").isNotNull()))
