"""The catalog of the platform's tables: each one's name, columns (name, type, nullability)
and partitioning, declared once.

Column types are one vocabulary (Spark DDL type names, see :data:`SCALARS`) mapped once to
Spark and Arrow types, so a table's Spark DDL, Spark ``StructType`` and Arrow schema all
come from its one declaration. Delta tables already written keep their schema: changing a
column here changes what jobs write, so only add columns (nullable, at the end).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import pyarrow as pa

from shared.openrtb import RAW_FIELDS

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructField, StructType

# ---------------------------------------------------------------------------------------
# The type vocabulary

#: The scalar types: vocabulary name -> (its ``pyspark.sql.types`` class, its Arrow type).
#: Composite types nest them: ``array<T>``, ``map<K,V>``, ``struct<name:T,...>``.
SCALARS: dict[str, tuple[str, pa.DataType]] = {
    "string": ("StringType", pa.string()),
    "boolean": ("BooleanType", pa.bool_()),
    "int": ("IntegerType", pa.int32()),
    "long": ("LongType", pa.int64()),
    "double": ("DoubleType", pa.float64()),
    "date": ("DateType", pa.date32()),
    "timestamp": ("TimestampType", pa.timestamp("us", tz="UTC")),  # Spark's (session zone UTC)
}


@dataclass(frozen=True)
class _Type:
    """A parsed vocabulary type: a scalar name, or ``array``/``map``/``struct`` of ``args``."""

    kind: str
    args: tuple["_Type", ...] = ()
    names: tuple[str, ...] = ()  # a struct's field names

    def text(self) -> str:
        if self.kind == "array":
            return f"array<{self.args[0].text()}>"
        if self.kind == "map":
            return f"map<{self.args[0].text()},{self.args[1].text()}>"
        if self.kind == "struct":
            return "struct<" + ",".join(f"{n}:{t.text()}" for n, t in zip(self.names, self.args)) + ">"
        return self.kind

    def spark(self) -> "DataType":
        from pyspark.sql import types as T

        if self.kind == "array":
            return T.ArrayType(self.args[0].spark(), containsNull=True)
        if self.kind == "map":
            return T.MapType(self.args[0].spark(), self.args[1].spark(), valueContainsNull=True)
        if self.kind == "struct":
            return T.StructType([T.StructField(n, t.spark(), nullable=True) for n, t in zip(self.names, self.args)])
        scalar: DataType = getattr(T, SCALARS[self.kind][0])()
        return scalar

    def arrow(self) -> pa.DataType:
        if self.kind == "array":
            return pa.list_(self.args[0].arrow())
        if self.kind == "map":
            return pa.map_(self.args[0].arrow(), self.args[1].arrow())
        if self.kind == "struct":
            return pa.struct([pa.field(n, t.arrow()) for n, t in zip(self.names, self.args)])
        return SCALARS[self.kind][1]


def _split(text: str) -> list[str]:
    """``text`` split at its top-level commas (not those inside ``<...>``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "<") - (ch == ">")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


@lru_cache(maxsize=None)
def parse_type(text: str) -> _Type:
    """The vocabulary type spelled ``text``; anything outside the vocabulary is a ValueError."""
    t = text.strip()
    outer, _, inner = t.partition("<")
    if t in SCALARS:
        return _Type(t)
    if inner.endswith(">"):
        args = _split(inner[:-1])
        if outer == "array" and len(args) == 1:
            return _Type("array", (parse_type(args[0]),))
        if outer == "map" and len(args) == 2:
            return _Type("map", (parse_type(args[0]), parse_type(args[1])))
        if outer == "struct" and all(":" in a for a in args):
            fields = [a.split(":", 1) for a in args]
            return _Type("struct", tuple(parse_type(ft) for _, ft in fields), tuple(n.strip() for n, _ in fields))
    raise ValueError(f"column type {text!r} is not in the catalog's vocabulary ({', '.join(SCALARS)}, "
                     "array<T>, map<K,V>, struct<name:T,...>)")


# ---------------------------------------------------------------------------------------
# Columns and tables


@dataclass(frozen=True)
class Column:
    """One column: its name, its vocabulary type and whether it may be null."""

    name: str
    type: str
    nullable: bool = True

    def __post_init__(self) -> None:
        parse_type(self.type)

    def ddl(self) -> str:
        """The column as Spark DDL (``name type``)."""
        return f"{self.name} {parse_type(self.type).text()}" + ("" if self.nullable else " NOT NULL")

    def spark_field(self) -> "StructField":
        """The column as a Spark ``StructField``."""
        from pyspark.sql.types import StructField

        return StructField(self.name, parse_type(self.type).spark(), nullable=self.nullable)

    def arrow_field(self) -> pa.Field:
        """The column as an Arrow field."""
        return pa.field(self.name, parse_type(self.type).arrow(), nullable=self.nullable)


@dataclass(frozen=True)
class Table:
    """A table (or an intermediate frame): its name, its columns in order, its partition columns."""

    name: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = self.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name} declares a column twice: {names}")
        missing = [c for c in self.partition_by if c not in names]
        if missing:
            raise ValueError(f"table {self.name} is partitioned by unknown column(s) {missing}")

    @property
    def column_names(self) -> tuple[str, ...]:
        """The column names, in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The column called ``name`` (KeyError when there is none)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")

    def drop(self, *names: str) -> "Table":
        """This table without the columns ``names`` (e.g. a timestamp stamped when rows are written)."""
        for n in names:
            self.column(n)
        return Table(self.name, tuple(c for c in self.columns if c.name not in names),
                     tuple(p for p in self.partition_by if p not in names))

    def ddl(self) -> str:
        """The Spark DDL string of the columns (``name type, ...``)."""
        return ", ".join(c.ddl() for c in self.columns)

    def spark_schema(self) -> "StructType":
        """The Spark schema."""
        from pyspark.sql.types import StructType

        return StructType([c.spark_field() for c in self.columns])

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema (timestamps ``timestamp[us, tz=UTC]``)."""
        return pa.schema([c.arrow_field() for c in self.columns])


def _columns(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, type_) for name, type_ in pairs)


# ---------------------------------------------------------------------------------------
# The warehouse (feature_store)

#: The observation key: what the ingest adds to an impression's raw feature fields.
OBSERVATION_KEY = _columns(
    ("impression_id", "string"),
    ("event_time", "timestamp"),
    ("label", "int"),
    ("click_delay_s", "double"),
)

#: One row per served impression: key, the shared OpenRTB raw fields, the logging day.
OBSERVATIONS = Table(
    "observations",
    OBSERVATION_KEY + _columns(*((f.name, f.dtype) for f in RAW_FIELDS)) + _columns(("date", "date")),
    partition_by=("date",),
)

#: Lines an import or ingest could not use, with the reason.
QUARANTINE = Table("quarantine", _columns(
    ("source", "string"), ("source_file", "string"), ("line_number", "long"), ("reason", "string"),
    ("message", "string"), ("raw", "string"), ("run_id", "string"), ("date", "date"),
), partition_by=("date",))

#: One row per public-data import (``ctr import``).
IMPORT_RUNS = Table("import_runs", _columns(
    ("run_id", "string"), ("source", "string"), ("finished_at", "timestamp"), ("seconds", "double"),
    ("source_file", "string"), ("layout", "string"), ("start_date", "string"), ("days", "int"),
    ("records_read", "long"), ("observations", "long"), ("duplicates", "long"), ("quarantined", "long"),
    ("quarantine_reasons", "map<string,long>"), ("positives", "long"), ("dates", "array<string>"),
    ("observations_version", "long"), ("quarantine_version", "long"),
))

_PARSED_LINE = _columns(("ok", "boolean"), ("source_file", "string"), ("line_number", "long"),
                        ("impression_id", "string"))
_LINE_ERROR = _columns(("reason", "string"), ("message", "string"), ("raw", "string"))

#: The ingest's intermediate frame (not stored): one parsed impression log line.
PARSED_IMPRESSIONS = Table(
    "parsed_impressions",
    _PARSED_LINE + _columns(("event_us", "long")) + _LINE_ERROR + _columns(*((f.name, f.dtype) for f in RAW_FIELDS)),
)

#: The ingest's intermediate frame (not stored): one parsed click log line.
PARSED_CLICKS = Table("parsed_clicks", _PARSED_LINE + _columns(("click_us", "long")) + _LINE_ERROR)

# ---------------------------------------------------------------------------------------
# Training

#: The per-segment engine's state, one row per (run_id, segment) (training.segment_table).
SEGMENT_MODELS = Table("segment_models", _columns(
    ("run_id", "string"), ("segment", "string"), ("status", "string"), ("attempts", "int"), ("error", "string"),
    ("params", "string"), ("n_train", "long"), ("n_validation", "long"), ("n_test", "long"),
    ("positives_train", "long"), ("val_log_loss", "double"), ("test_log_loss", "double"), ("test_auc", "double"),
    ("test_normalized_entropy", "double"), ("test_calibration", "double"), ("global_test_log_loss", "double"),
    ("intercept", "double"), ("raw_intercept", "double"), ("indices", "array<long>"), ("weights", "array<double>"),
    ("fit_seconds", "double"), ("bits", "int"), ("fingerprint", "string"), ("delta_version", "long"),
    ("meta", "string"), ("updated_at", "timestamp"),
))

#: Back-test figures, one row per (run_id, test_date) (training.backtest).
BACKTEST_METRICS = Table("backtest_metrics", _columns(
    ("run_id", "string"), ("test_date", "date"), ("train_start", "date"), ("train_end", "date"), ("rows", "long"),
    ("positives", "long"), ("log_loss", "double"), ("normalized_entropy", "double"), ("auc", "double"),
    ("calibration", "double"), ("best_possible_log_loss", "double"), ("baseline_log_loss", "double"),
    ("train_rows", "long"), ("engine", "string"), ("params", "string"), ("delta_version", "long"),
    ("fit_seconds", "double"), ("created_at", "timestamp"),
))

# ---------------------------------------------------------------------------------------
# Monitoring (monitoring.tables)

#: Prediction quality per window and slice.
MONITOR_METRICS = Table("monitor_metrics", _columns(
    ("model_version", "string"),
    ("window", "string"),  # "hour" | "day"
    ("window_start", "timestamp"),
    ("window_end", "timestamp"),
    ("slice_field", "string"),  # "overall" or a raw field name
    ("slice_value", "string"),  # "all", a value, "__other__" (outside the top N) or "__missing__"
    ("predictions", "long"),  # every valid prediction logged in the window
    ("impressions", "long"),  # predictions joined to an observed impression (labelled)
    ("unlabelled", "long"),  # predictions with no observation (yet): not in the metrics below
    ("clicks", "long"),
    ("ctr", "double"),
    ("mean_predicted", "double"),  # over the labelled predictions
    ("mean_predicted_all", "double"),  # over every prediction, labelled or not
    ("calibration", "double"),
    ("log_loss", "double"),
    ("normalized_entropy", "double"),
    ("auc", "double"),
    ("rel_bin_lower", "array<double>"),  # reliability diagram (training.metrics.reliability_curve)
    ("rel_bin_upper", "array<double>"),
    ("rel_count", "array<long>"),
    ("rel_mean_predicted", "array<double>"),
    ("rel_observed_rate", "array<double>"),
    ("mature", "boolean"),
    ("labels_final_at", "timestamp"),  # when the last label in the window is final
    ("label_horizon", "timestamp"),  # how far clicks had been ingested (capped at as_of)
    ("as_of", "timestamp"),
    ("run_id", "string"),
    ("computed_at", "timestamp"),
    ("date", "date"),  # partition: the day of window_start
), partition_by=("date",))

#: Feature drift (PSI) of live traffic against the training reference.
FEATURE_DRIFT = Table("feature_drift", _columns(
    ("model_version", "string"),
    ("window", "string"),
    ("window_start", "timestamp"),
    ("window_end", "timestamp"),
    ("field", "string"),
    ("kind", "string"),  # "categorical" | "numeric" | "multivalued"
    ("psi", "double"),
    ("reference", "string"),  # e.g. "observations@v3 [2026-11-01, 2026-11-05)"
    ("reference_rows", "long"),
    ("live_rows", "long"),
    ("bins", "array<string>"),
    ("reference_share", "array<double>"),
    ("live_share", "array<double>"),
    ("run_id", "string"),
    ("computed_at", "timestamp"),
    ("date", "date"),
), partition_by=("date",))

#: One weight that moved between two model versions (an element of ``top_features``).
TOP_FEATURE = "struct<index:long,name:string,weight_from:double,weight_to:double,delta:double>"

#: Parameter drift between consecutive model versions.
PARAM_DRIFT = Table("param_drift", _columns(
    ("from_version", "string"),
    ("to_version", "string"),
    ("from_created_at", "timestamp"),
    ("to_created_at", "timestamp"),
    ("basis", "string"),  # "index" (same feature spec) | "keys" (specs differ: compared by feature name)
    ("n_nonzero_from", "long"),
    ("n_nonzero_to", "long"),
    ("l2_from", "double"),
    ("l2_change", "double"),
    ("relative_l2_change", "double"),
    ("intercept_change", "double"),
    ("appeared_share", "double"),  # share of the new non-zeros that were zero before
    ("vanished_share", "double"),  # share of the old non-zeros that are zero now
    ("top_features", f"array<{TOP_FEATURE}>"),
    ("note", "string"),
    ("run_id", "string"),
    ("computed_at", "timestamp"),
    ("model_name", "string"),  # partition
), partition_by=("model_name",))

#: Alerts the rules fired.
ALERTS = Table("alerts", _columns(
    ("alert_id", "string"),
    ("rule", "string"),
    ("severity", "string"),
    ("source", "string"),  # the table the rule read
    ("model_version", "string"),
    ("window", "string"),
    ("window_start", "timestamp"),
    ("slice_field", "string"),
    ("slice_value", "string"),
    ("metric", "string"),
    ("value", "double"),
    ("threshold", "string"),
    ("message", "string"),
    ("webhook_status", "string"),  # "" (no webhook), "200", "error: ..."
    ("run_id", "string"),
    ("fired_at", "timestamp"),
    ("date", "date"),
), partition_by=("date",))

#: The retraining scheduler's decisions log.
SCHEDULE_DECISIONS = Table("schedule_decisions", _columns(
    ("decision_id", "string"),
    ("model_name", "string"),
    ("decided_at", "timestamp"),
    ("action", "string"),  # "retrain" | "wait" | "give_up" | "attempt"
    ("retrain", "boolean"),
    ("reasons", "array<string>"),
    ("triggers", "array<string>"),
    ("blockers", "array<string>"),
    ("inputs_json", "string"),
    ("estimated_cost", "double"),
    ("expected_value", "double"),
    ("retry_at", "timestamp"),
    ("dry_run", "boolean"),
    ("attempt_status", "string"),  # for action "attempt": "running", then "succeeded" | "failed"
    ("attempt_seconds", "double"),
    ("attempt_version", "string"),
    ("attempt_error", "string"),
    ("command", "string"),
    ("attempt_owner", "string"),  # for a running attempt: "<host> <pid> <process start ticks>"
    ("date", "date"),  # partition: the day decided
), partition_by=("date",))

#: One row per batch ingest run and day: its files and counts (``ctr ingest``).
INGEST_RUNS = Table("ingest_runs", _columns(
    ("run_id", "string"), ("date", "string"), ("finished_at", "timestamp"), ("seconds", "double"),
    ("impression_files", "array<string>"), ("click_files", "array<string>"), ("attribution_window_hours", "double"),
    ("records_read", "long"), ("observations", "long"), ("duplicates", "long"), ("quarantined", "long"),
    ("quarantine_reasons", "map<string,long>"), ("positives", "long"), ("clicks_read", "long"),
    ("clicks_quarantined", "long"), ("clicks_attributed", "long"), ("clicks_outside_window", "long"),
    ("observations_version", "long"),
))

#: Valid clicks read by the stream (the click-impression join's state), by click-file day.
STREAM_CLICKS = Table("stream_clicks", _columns(
    ("impression_id", "string"), ("click_us", "long"), ("source_file", "string"), ("line_number", "long"),
    ("query_id", "string"), ("batch_id", "long"), ("date", "date"),
), partition_by=("date",))

#: One row per streaming micro-batch: its files, its counts, its click watermark.
STREAM_BATCHES = Table("stream_ingest_batches", _columns(
    ("query_id", "string"), ("batch_id", "long"), ("finished_at", "timestamp"), ("seconds", "double"),
    ("impression_files", "array<string>"), ("click_files", "array<string>"),
    ("attribution_window_hours", "double"), ("lateness_minutes", "double"),
    ("records_read", "long"), ("observations", "long"), ("duplicates", "long"), ("quarantined", "long"),
    ("quarantine_reasons", "map<string,long>"), ("positives", "long"),
    ("clicks_read", "long"), ("clicks_quarantined", "long"), ("clicks_attributed", "long"),
    ("clicks_outside_window", "long"), ("clicks_after_final", "long"), ("clicks_unmatched", "long"),
    ("labels_updated", "long"),
    ("click_watermark", "timestamp"), ("labels_final_before", "timestamp"),
    ("observations_version", "long"),
))

#: The monitoring tables, in the dashboard's order.
MONITORING: tuple[Table, ...] = (MONITOR_METRICS, FEATURE_DRIFT, PARAM_DRIFT, ALERTS, SCHEDULE_DECISIONS)

#: Every stored table of the catalog, by name.
TABLES: dict[str, Table] = {t.name: t for t in (
    OBSERVATIONS, QUARANTINE, INGEST_RUNS, STREAM_CLICKS, STREAM_BATCHES, IMPORT_RUNS, SEGMENT_MODELS,
    BACKTEST_METRICS, *MONITORING)}

#: The intermediate frames (declared like tables, never stored), by name.
FRAMES: dict[str, Table] = {t.name: t for t in (PARSED_IMPRESSIONS, PARSED_CLICKS)}


def table(name: str) -> Table:
    """The stored table called ``name``."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no table {name!r} in the catalog (it has: {', '.join(TABLES)})") from None
