"""Reading the bidder's prediction log (:mod:`serving.predlog`) with Spark.

Files: ``<predictions_dir>/date=YYYY-MM-DD/hour=HH.jsonl``, one JSON object per scored
impression (``ts``, ``request_id``, ``impression_id``, optional ``ad_index``,
``endpoint``, ``model_version``, ``ctr``, ``fields``), or per ``/v1/score`` request
(``ctrs`` and the raw ``request`` body: ``ctrs[i]`` belongs to ``request.records[i]``),
which is expanded here into the same per-impression rows. The raw ``fields`` are read as
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
    "ts string, request_id string, impression_id string, ad_index long, endpoint string, "
    f"model_version string, ctr double, fields struct<{FIELDS_DDL}>, fields_error string, "
    f"ctrs array<double>, request struct<records: array<struct<id: string, fields: struct<{FIELDS_DDL}>>>>, "
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
    """Every logged line of ``days`` with a validity verdict.

    Columns: ``reason`` (null for a line to use, else one of :data:`REASONS`), ``ts``
    (timestamp), ``log_date`` (string, from the file's folder), ``request_id``,
    ``impression_id``, ``ad_index``, ``model_version``, ``p`` (the predicted CTR) and
    ``fields`` (struct of strings). Repeats of a valid record (same request, impression,
    ad index and model version) after the first get the reason ``duplicate``.
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
             .withColumn("_file", F.col("_metadata.file_path")))
    # Request lines: one row per record, paired with its CTR by position (zip_with pads a
    # shorter array with nulls, so a count mismatch shows up as bad_ctr rows).
    per_record = F.zip_with("request.records", "ctrs", lambda rec, p: F.struct(
        rec["id"].alias("impression_id"), rec["fields"].alias("fields"), p.alias("ctr")))
    expanded = (lines.where(F.col("ctrs").isNotNull() & F.col("_corrupt_record").isNull())
                .select("ts", "request_id", "endpoint", "model_version", "_file", "_corrupt_record",
                        F.explode_outer(per_record).alias("_r"))
                .select("ts", "request_id", F.col("_r.impression_id").alias("impression_id"),
                        F.lit(None).cast("long").alias("ad_index"), "endpoint", "model_version",
                        F.col("_r.ctr").alias("ctr"), F.col("_r.fields").alias("fields"), "_file",
                        "_corrupt_record"))
    raw = (lines.where(F.col("ctrs").isNull() | F.col("_corrupt_record").isNotNull())
           .select("ts", "request_id", "impression_id", "ad_index", "endpoint", "model_version", "ctr",
                   "fields", "_file", "_corrupt_record")
           .unionByName(expanded))
    ts = F.to_timestamp("ts")
    reason = (F.when(F.col("_corrupt_record").isNotNull(), F.lit("malformed_json"))
              .when(ts.isNull(), F.lit("bad_time"))
              .when(F.col("model_version").isNull() | (F.trim("model_version") == ""), F.lit("no_model_version"))
              .when(F.col("ctr").isNull() | F.isnan("ctr") | (F.col("ctr") < 0) | (F.col("ctr") > 1),
                    F.lit("bad_ctr")))
    df = raw.select(
        reason.alias("reason"),
        ts.alias("ts"),
        F.regexp_extract(F.col("_file"), r"date=(\d{4}-\d{2}-\d{2})", 1).alias("log_date"),
        "request_id", "impression_id", "ad_index", "model_version", F.col("ctr").alias("p"), "fields",
    )
    # One row per (request, impression, ad, version): a re-delivered request is not two predictions.
    key = F.coalesce(F.col("impression_id"), F.monotonically_increasing_id().cast("string"))
    first = F.row_number().over(Window.partitionBy("request_id", "_k", "ad_index", "model_version").orderBy("ts"))
    valid = (df.filter(F.col("reason").isNull()).withColumn("_k", key)
             .withColumn("reason", F.when(first > 1, F.lit("duplicate"))).drop("_k"))
    return valid.unionByName(df.filter(F.col("reason").isNotNull()))
