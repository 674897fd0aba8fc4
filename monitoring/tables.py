"""Monitoring tables: names, and the one way rows are written.

Every monitoring job builds its (small, already aggregated) rows as a
:class:`pyarrow.Table` with the table's schema (declared in :mod:`shared.catalog`), then

1. writes it to the Delta table, replacing the rows' partitions in one commit
   (:func:`feature_store.tables.replace_partitions`), so re-running a day gives the
   same table; and
2. mirrors the same rows into the dashboard's export (:func:`mirror`), one Parquet file
   per partition, so the dashboard reads them with pyarrow (:mod:`monitoring.export`,
   which also rebuilds the export from the Delta tables) and never needs a JVM.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store import tables as warehouse
from shared import catalog
from shared.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Schemas and partitioning: shared.catalog (catalog.MONITORING).
METRICS = catalog.MONITOR_METRICS.name
FEATURE_DRIFT = catalog.FEATURE_DRIFT.name
PARAM_DRIFT = catalog.PARAM_DRIFT.name
ALERTS = catalog.ALERTS.name
SCHEDULE_DECISIONS = catalog.SCHEDULE_DECISIONS.name

OVERALL = "overall"  # slice_field of the all-traffic rows (slice_value "all")
ALL = "all"
OTHER = "__other__"  # slice values / categories outside the top N
MISSING = "__missing__"

SCHEMAS = {t.name: t.arrow_schema() for t in catalog.MONITORING}
PARTITION = {t.name: t.partition_by[0] for t in catalog.MONITORING}


def arrow_table(name: str, rows: list[dict]) -> pa.Table:
    """Rows (dicts keyed by column) as an Arrow table with ``name``'s schema; a missing
    key is null, an unknown key is an error (a typo would silently drop a column)."""
    schema = SCHEMAS[name]
    unknown = {k for r in rows for k in r} - set(schema.names)
    if unknown:
        raise ValueError(f"{name}: unknown column(s) {sorted(unknown)}")
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)


def write(spark: "SparkSession", settings: Settings, name: str, table: pa.Table,
          partitions: Iterable[str], *, mode: str = "replace") -> int:
    """Write ``table`` to the Delta table ``name`` and mirror it to the dashboard export.

    ``mode="replace"``: the ``partitions`` (values of the table's partition column) are
    replaced in one commit — partitions given but absent from ``table`` end up empty.
    ``mode="append"``: rows are appended (the decisions log). Returns the Delta version.
    """
    if table.schema != SCHEMAS[name]:
        table = table.cast(SCHEMAS[name])
    column = PARTITION[name]
    path = settings.table_path(name)
    df = spark.createDataFrame(table) if table.num_rows else spark.createDataFrame([], catalog.table(name).spark_schema())
    if mode == "replace":
        version = warehouse.replace_partitions(df, path, column, [str(p) for p in partitions])
    elif mode == "append":
        if warehouse.table_exists(spark, path):
            version = warehouse.append(df, path, add_columns=True)  # e.g. schedule_decisions.attempt_owner
        else:
            df.write.format("delta").partitionBy(column).save(path)
            warehouse.committed(path)
            version = warehouse.latest_version(spark, path)
    else:
        raise ValueError(f"mode must be 'replace' or 'append', got {mode!r}")
    mirror(settings, name, table, [str(p) for p in partitions], mode=mode)
    return version


def read(spark: "SparkSession", settings: Settings, name: str, where: str | None = None) -> pa.Table:
    """The rows of monitoring table ``name`` (optionally filtered by a SQL predicate) as
    Arrow with the table's schema; an empty table when it does not exist yet."""
    path = settings.table_path(name)
    if not warehouse.table_exists(spark, path):
        return SCHEMAS[name].empty_table()
    df = spark.read.format("delta").load(path)
    if where:
        df = df.filter(where)
    out = df.select(*(c for c in SCHEMAS[name].names if c in df.columns)).toArrow()
    return _conform(out, SCHEMAS[name])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Spark hands timestamps back without a zone (session zone UTC) and may relax
    nullability; cast to the declared schema (a column added since the table was written
    reads as nulls)."""
    cols = []
    for field in schema:
        if field.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if pa.types.is_timestamp(field.type) and col.type != field.type:
            col = col.cast(pa.timestamp("us")).cast(field.type) if col.type.tz is None else col.cast(field.type)
        cols.append(col.cast(field.type) if col.type != field.type else col)
    return pa.Table.from_arrays(cols, schema=schema)


# -- the dashboard's export (read by monitoring.export) ---------------------------------------------

def export_dir(settings: Settings) -> Path:
    """The export's root: ``<home>/monitoring/export/<table>/<partition column>=<value>/*.parquet``."""
    return settings.home / "monitoring" / "export"


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file that appears whole (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mirror(settings: Settings, name: str, table: pa.Table, partitions: Iterable[str], *, mode: str) -> None:
    """Mirror rows just written to Delta table ``name`` (by :func:`write`) into the export:
    ``mode="replace"`` rewrites each partition's folder as one file, ``"append"`` adds a file."""
    column = PARTITION[name]
    root = export_dir(settings) / name
    values = table.column(column).to_pylist() if table.num_rows else []
    for part in sorted(set(partitions) | {str(v) for v in values}):
        folder = root / f"{column}={part}"
        rows = table.filter(pc.equal(table.column(column).cast(pa.string()), part)) \
            if table.num_rows else table
        if mode == "replace":
            if rows.num_rows:
                _write_atomic(rows, folder / "data.parquet")
                for old in folder.glob("*.parquet"):
                    if old.name != "data.parquet":
                        old.unlink(missing_ok=True)
            elif folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
        elif rows.num_rows:
            _write_atomic(rows, folder / f"part-{uuid.uuid4().hex}.parquet")
