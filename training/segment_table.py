"""The ``segment_models`` Delta table: the per-segment engine's state, one row per (run_id, segment).

A row is one segment's outcome in a run: ``ok`` (its weights), ``fallback`` (served by the
global model, never fitted) or ``failed`` (the error; ``attempts`` counts the tries). The
table is what makes a run resumable: completed rows (:data:`DONE`) are never refitted or
replaced, failed ones may be replaced by a later attempt. The global model is the row
:data:`GLOBAL_KEY`. Columns: :data:`shared.catalog.SEGMENT_MODELS`; ``indices``/``weights`` are the non-zero
weights (sorted column indices, float64), ``intercept`` is recalibrated for negative
downsampling, ``params`` the chosen setting (JSON). Design notes: ``docs/segments.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from feature_store.tables import committed
from shared import catalog
from shared.config import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

SEGMENT_TABLE = catalog.SEGMENT_MODELS.name
GLOBAL_KEY = "__global__"
OK, FALLBACK, FAILED = "ok", "fallback", "failed"
DONE = (OK, FALLBACK)

TABLE_COLUMNS = catalog.SEGMENT_MODELS.column_names


def fit_schema() -> "StructType":
    """The table's Spark schema without ``updated_at`` (stamped in Spark when rows are written)."""
    return catalog.SEGMENT_MODELS.drop("updated_at").spark_schema()


def arrow_batch(rows: list[dict[str, Any]], schema: "pa.Schema") -> "pa.RecordBatch":
    """Table rows (dicts of columns; list columns as arrays) as one Arrow batch of ``schema``."""
    import pyarrow as pa

    columns = []
    for f in schema:
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            cells = [np.asarray(r[f.name]) for r in rows]
            offsets = np.zeros(len(rows) + 1, dtype=np.int32)
            np.cumsum([c.size for c in cells], out=offsets[1:])
            flat = np.concatenate(cells) if cells else np.zeros(0)
            columns.append(pa.ListArray.from_arrays(pa.array(offsets),
                                                    pa.array(flat.astype(f.type.value_type.to_pandas_dtype()))))
        else:
            columns.append(pa.array([r[f.name] for r in rows], type=f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _table_exists(path: str) -> bool:
    """Whether the warehouse path holds a Delta table: its log has a commit or checkpoint.
    (The warehouse is a local directory; this check costs a directory listing, where
    ``DeltaTable.isDeltaTable`` costs about a second of snapshot loading.)"""
    log = Path(path) / "_delta_log"
    return log.is_dir() and any(f.name.endswith(".json") or ".checkpoint." in f.name for f in log.iterdir())


def _create_if_missing(spark: "SparkSession", path: str) -> None:
    if not _table_exists(path):
        spark.createDataFrame([], catalog.SEGMENT_MODELS.spark_schema()).write.format("delta").mode("ignore").save(path)


def read_segment_rows(spark: "SparkSession", settings: Settings, run_id: str, columns: Sequence[str] | None = None,
                      table: str = SEGMENT_TABLE) -> list:
    """The table's rows of ``run_id`` (selected columns), or [] when the table does not exist."""
    from pyspark.sql import functions as F

    path = settings.table_path(table)
    if not _table_exists(path):
        return []
    df = spark.read.format("delta").load(path).filter(F.col("run_id") == run_id)
    return df.select(*(columns or TABLE_COLUMNS)).collect()


def merge_rows(spark: "SparkSession", settings: Settings, rows: "DataFrame", table: str = SEGMENT_TABLE) -> None:
    """MERGE fit rows into the table in one commit: insert new keys, replace ``failed`` rows
    (``attempts`` counts up), never touch completed ones."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    path = settings.table_path(table)
    source = rows.withColumn("updated_at", F.current_timestamp()).select(*TABLE_COLUMNS)
    _create_if_missing(spark, path)
    updates: dict[str, str | Column] = {c: f"s.{c}" for c in TABLE_COLUMNS}
    updates["attempts"] = "t.attempts + s.attempts"
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(source.alias("s"), "t.run_id = s.run_id AND t.segment = s.segment")
     .whenMatchedUpdate(condition=f"t.status = '{FAILED}'", set=updates)
     .whenNotMatchedInsertAll()
     .execute())
    committed(path)


def append_new_rows(spark: "SparkSession", settings: Settings, rows: "DataFrame", *, run_id: str,
                    txn_version: int | None, table: str = SEGMENT_TABLE) -> None:
    """Append fit rows of segments that have no row for ``run_id`` yet, in one commit: what
    :func:`merge_rows` does for such rows (insert), in one write job instead of a MERGE's
    several. With ``txn_version`` (a run id other jobs may use too) the commit carries
    Delta's idempotent-write pair (``txnAppId`` = ``ctr-segments:<run_id>``, ``txnVersion``
    = ``txn_version``, derived by the caller from the run's rows it read): a second job of
    the same run id that read the same rows either finds its write already done (skipped)
    or fails with Delta's ``ConcurrentTransactionException``, so the table never gets two
    rows of one segment. ``None``: a run id only this job writes (looking the pair up costs
    Delta a state reconstruction, about half a second here)."""
    from pyspark.sql import functions as F

    path = settings.table_path(table)
    _create_if_missing(spark, path)
    writer = rows.withColumn("updated_at", F.current_timestamp()).select(*TABLE_COLUMNS).write.format("delta")
    if txn_version is not None:
        writer = writer.option("txnAppId", f"ctr-segments:{run_id}").option("txnVersion", int(txn_version))
    writer.mode("append").save(path)
    committed(path)
