"""Monitoring tables: names, Arrow schemas, and the one way rows are written.

Every monitoring job builds its (small, already aggregated) rows as a
:class:`pyarrow.Table` with the schema below, then

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
from shared.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

METRICS = "monitor_metrics"
FEATURE_DRIFT = "feature_drift"
PARAM_DRIFT = "param_drift"
ALERTS = "alerts"
SCHEDULE_DECISIONS = "schedule_decisions"

OVERALL = "overall"  # slice_field of the all-traffic rows (slice_value "all")
ALL = "all"
OTHER = "__other__"  # slice values / categories outside the top N
MISSING = "__missing__"

_TS = pa.timestamp("us", tz="UTC")
_F = pa.float64()
_L = pa.int64()
_S = pa.string()

METRICS_SCHEMA = pa.schema([
    ("model_version", _S),
    ("window", _S),  # "hour" | "day"
    ("window_start", _TS),
    ("window_end", _TS),
    ("slice_field", _S),  # "overall" or a raw field name
    ("slice_value", _S),  # "all", a value, "__other__" (outside the top N) or "__missing__"
    ("predictions", _L),  # every valid prediction logged in the window
    ("impressions", _L),  # predictions joined to an observed impression (labelled)
    ("unlabelled", _L),  # predictions with no observation (yet): not in the metrics below
    ("clicks", _L),
    ("ctr", _F),
    ("mean_predicted", _F),  # over the labelled predictions
    ("mean_predicted_all", _F),  # over every prediction, labelled or not
    ("calibration", _F),
    ("log_loss", _F),
    ("normalized_entropy", _F),
    ("auc", _F),
    ("rel_bin_lower", pa.list_(_F)),  # reliability diagram (training.metrics.reliability_curve)
    ("rel_bin_upper", pa.list_(_F)),
    ("rel_count", pa.list_(_L)),
    ("rel_mean_predicted", pa.list_(_F)),
    ("rel_observed_rate", pa.list_(_F)),
    ("mature", pa.bool_()),
    ("labels_final_at", _TS),  # when the last label in the window is final
    ("label_horizon", _TS),  # how far clicks had been ingested (capped at as_of)
    ("as_of", _TS),
    ("run_id", _S),
    ("computed_at", _TS),
    ("date", pa.date32()),  # partition: the day of window_start
])

FEATURE_DRIFT_SCHEMA = pa.schema([
    ("model_version", _S),
    ("window", _S),
    ("window_start", _TS),
    ("window_end", _TS),
    ("field", _S),
    ("kind", _S),  # "categorical" | "numeric" | "multivalued"
    ("psi", _F),
    ("reference", _S),  # e.g. "observations@v3 [2026-11-01, 2026-11-05)"
    ("reference_rows", _L),
    ("live_rows", _L),
    ("bins", pa.list_(_S)),
    ("reference_share", pa.list_(_F)),
    ("live_share", pa.list_(_F)),
    ("run_id", _S),
    ("computed_at", _TS),
    ("date", pa.date32()),
])

TOP_FEATURE = pa.struct([
    ("index", _L), ("name", _S), ("weight_from", _F), ("weight_to", _F), ("delta", _F),
])

PARAM_DRIFT_SCHEMA = pa.schema([
    ("from_version", _S),
    ("to_version", _S),
    ("from_created_at", _TS),
    ("to_created_at", _TS),
    ("basis", _S),  # "index" (same feature spec) | "keys" (specs differ: compared by feature name)
    ("n_nonzero_from", _L),
    ("n_nonzero_to", _L),
    ("l2_from", _F),
    ("l2_change", _F),
    ("relative_l2_change", _F),
    ("intercept_change", _F),
    ("appeared_share", _F),  # share of the new non-zeros that were zero before
    ("vanished_share", _F),  # share of the old non-zeros that are zero now
    ("top_features", pa.list_(TOP_FEATURE)),
    ("note", _S),
    ("run_id", _S),
    ("computed_at", _TS),
    ("model_name", _S),  # partition
])

ALERTS_SCHEMA = pa.schema([
    ("alert_id", _S),
    ("rule", _S),
    ("severity", _S),
    ("source", _S),  # the table the rule read
    ("model_version", _S),
    ("window", _S),
    ("window_start", _TS),
    ("slice_field", _S),
    ("slice_value", _S),
    ("metric", _S),
    ("value", _F),
    ("threshold", _S),
    ("message", _S),
    ("webhook_status", _S),  # "" (no webhook), "200", "error: ..."
    ("run_id", _S),
    ("fired_at", _TS),
    ("date", pa.date32()),
])

SCHEDULE_SCHEMA = pa.schema([
    ("decision_id", _S),
    ("model_name", _S),
    ("decided_at", _TS),
    ("action", _S),  # "retrain" | "wait" | "give_up" | "attempt"
    ("retrain", pa.bool_()),
    ("reasons", pa.list_(_S)),
    ("triggers", pa.list_(_S)),
    ("blockers", pa.list_(_S)),
    ("inputs_json", _S),
    ("estimated_cost", _F),
    ("expected_value", _F),
    ("retry_at", _TS),
    ("dry_run", pa.bool_()),
    ("attempt_status", _S),  # for action "attempt": "succeeded" | "failed"
    ("attempt_seconds", _F),
    ("attempt_version", _S),
    ("attempt_error", _S),
    ("command", _S),
    ("date", pa.date32()),  # partition: the day decided
])

SCHEMAS = {
    METRICS: METRICS_SCHEMA,
    FEATURE_DRIFT: FEATURE_DRIFT_SCHEMA,
    PARAM_DRIFT: PARAM_DRIFT_SCHEMA,
    ALERTS: ALERTS_SCHEMA,
    SCHEDULE_DECISIONS: SCHEDULE_SCHEMA,
}
PARTITION = {
    METRICS: "date", FEATURE_DRIFT: "date", PARAM_DRIFT: "model_name", ALERTS: "date",
    SCHEDULE_DECISIONS: "date",
}


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
    df = spark.createDataFrame(table) if table.num_rows else spark.createDataFrame([], _spark_ddl(name))
    if mode == "replace":
        version = warehouse.replace_partitions(df, path, column, [str(p) for p in partitions])
    elif mode == "append":
        if warehouse.table_exists(spark, path):
            version = warehouse.append(df, path)
        else:
            df.write.format("delta").partitionBy(column).save(path)
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
    out = df.select(*SCHEMAS[name].names).toArrow()
    return _conform(out, SCHEMAS[name])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Spark hands timestamps back without a zone (session zone UTC) and may relax
    nullability; cast to the declared schema."""
    cols = []
    for field in schema:
        col = table.column(field.name)
        if pa.types.is_timestamp(field.type) and col.type != field.type:
            col = col.cast(pa.timestamp("us")).cast(field.type) if col.type.tz is None else col.cast(field.type)
        cols.append(col.cast(field.type) if col.type != field.type else col)
    return pa.Table.from_arrays(cols, schema=schema)


_SPARK_TYPES = {
    pa.string(): "string", pa.int64(): "long", pa.float64(): "double", pa.bool_(): "boolean",
    pa.date32(): "date", _TS: "timestamp",
}


def _spark_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"array<{_spark_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {_spark_type(f.type)}" for f in t) + ">"
    return _SPARK_TYPES[t]


def _spark_ddl(name: str) -> str:
    return ", ".join(f"{f.name} {_spark_type(f.type)}" for f in SCHEMAS[name])


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
