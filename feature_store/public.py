"""``ctr import criteo|avazu``: the two standard public CTR layouts -> observation tables.

Each import reads ONE file with Spark's line reader (``spark.read.text``: splittable,
so the same job runs on a cluster; ``.gz`` works too) and splits and validates every
line with Spark SQL expressions. Lines are numbered exactly, whatever the splits: a
first small job counts the lines of every file split (``_metadata.file_block_start``)
and each line's number is its split's offset plus its position within the split. No
quoting is supported: neither dataset quotes fields.

Layouts
-------
* **Criteo** (Display Advertising Challenge). Canonical form (``train.txt``,
  ``dac_sample.txt``): no header, tab-separated, ``label, I1..I13, C1..C26``. Also
  accepted: the Kaggle CSV form (header ``Id,Label,I1,...,C26``, comma-separated, the
  ``Id`` column optional) and any file whose first line is such a header. The layout is
  read from line 1: the delimiter is a tab if line 1 holds one, else a comma; line 1 is
  a header if its first field is ``Id`` or ``Label`` (any case), and header columns are
  matched by name; without a header line 1 must have the 40 fields (so a file in another
  layout, e.g. the unlabelled ``test.txt``, is refused before anything is written instead
  of being quarantined row by row). An empty field is a missing value (null).
* **Avazu** (Click-Through Rate Prediction): CSV with a header naming ``id, click, hour,
  C1, banner_pos, site_id, site_domain, site_category, app_id, app_domain,
  app_category, device_id, device_ip, device_model, device_type, device_conn_type,
  C14..C21`` (any order; the unlabelled ``test`` file, which has no ``click``, is
  refused).

Tables (warehouse, Delta, partitioned by ``date``)
--------------------------------------------------
``criteo_observations``: ``impression_id`` (``<file name>:<event_index>``),
``event_index`` (long), ``kaggle_id`` (long, the Kaggle ``Id`` when the file has one),
``label`` (int 0/1), ``i1..i13`` (long), ``c1..c26`` (string), ``source_file``,
``line_number``, ``date``.

Criteo has no timestamps. ``event_index`` is the 0-based row number within the file
(line number - 1, minus 1 more when the file has a header; every line after the header
counts, quarantined ones included, so a row's index never depends on other rows'
validity). The Kaggle train set is 7 consecutive days in chronological order, so row
``i`` of ``n`` rows (n = rows read from the file) is given
``date = start_date + floor(days * i / n)`` days, with ``days`` = 7 and
``start_date`` = 2014-01-01 by default (both options: the real dates are not published;
2014-01-01 is a placeholder). Each file is mapped on its own: to keep a later file
(e.g. a chronological validation split) after an earlier one, import it with a
``start_date`` past the earlier file's last day.

``avazu_observations``: ``impression_id`` (Avazu's ``id``, a string: ids exceed 2**63),
``event_time`` (timestamp, UTC, from ``hour`` = YYMMDDHH), ``label`` (int, from
``click``), ``hour_of_day`` (0-23) and ``day_of_week`` (0 = Monday), both long, the
other columns under the avazu spec's (lower-case) names: ``c1, banner_pos,
device_type, device_conn_type, c14..c21`` as long, ``site_*``, ``app_*``,
``device_id``, ``device_ip``, ``device_model`` as string; then ``source_file``,
``line_number``, ``date`` (the UTC date of ``hour``).

Both carry ``impression_id``, ``label`` and ``date``, so ``ctr train --table
criteo_observations --spec criteo`` (or avazu) reads them like the ingest's table.

Bad rows and counts
-------------------
Bad lines go to ``criteo_quarantine`` / ``avazu_quarantine`` (the schema of
:data:`shared.catalog.QUARANTINE`, ``source`` = ``criteo`` / ``avazu``), with
file, line number, reason, message and the raw line (clipped). They are separate
tables, not the ingest's ``quarantine`` table, because the ingest replaces whole
``date`` partitions of that table regardless of ``source``. Reasons, first that applies:
``line_too_long`` (over ``MAX_IMPORT_LINE_BYTES``); ``blank_line``; ``wrong_column_count``;
``missing_id`` (Avazu); ``bad_label`` (label /
click not exactly ``0`` or ``1``); ``bad_hour`` (Avazu: not a valid YYMMDDHH);
``bad_integer`` (a non-empty value of an integer column, Criteo's ``Id`` included, that
is not a 64-bit integer; the message names the first such column). Criteo quarantine rows
carry their position-derived date; Avazu rows carry the date of their ``hour`` when it
parses, else null.

Avazu rows are deduplicated by ``id`` within the file (the first valid line is kept, the
others are counted as duplicates, not stored); Criteo rows have no id and are not.
``rows read`` = every line after the header = observations + duplicates + quarantined,
checked before anything is written.

Idempotence
-----------
Observations and quarantine are each replaced in one Delta commit with ``replaceWhere``
``date IN (<dates the file's rows fall on>) OR source_file = '<this file>'``: the
partitions the file covers are replaced, and so is anything an earlier import of the
same file left elsewhere (after a different ``start_date``, or an edited file), so
importing a file twice leaves the tables as after one import. One import owns the
dates it covers: import whole days. A row per import goes to ``import_runs``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

from feature_store.parse import RAW_LINE_LIMIT
from shared import catalog
from shared.config import Settings
from shared.errors import ConfigurationError, InputError
from shared.limits import KiB, format_size

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CRITEO, AVAZU = "criteo", "avazu"
SOURCES = (CRITEO, AVAZU)
IMPORT_RUNS = catalog.IMPORT_RUNS.name
DEFAULT_START_DATE = date(2014, 1, 1)
DEFAULT_DAYS = 7

CRITEO_INTS = tuple(f"i{k}" for k in range(1, 14))
CRITEO_CATS = tuple(f"c{k}" for k in range(1, 27))
#: The canonical (headerless, tab-separated) column order.
CRITEO_COLUMNS = ("label",) + CRITEO_INTS + CRITEO_CATS

AVAZU_INTS = ("c1", "banner_pos", "device_type", "device_conn_type") + tuple(f"c{k}" for k in range(14, 22))
AVAZU_STRINGS = ("site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
                 "device_id", "device_ip", "device_model")
#: The columns of the Kaggle ``train`` file, in its order (lower-cased).
AVAZU_COLUMNS = ("id", "click", "hour", "c1", "banner_pos") + AVAZU_STRINGS + \
    ("device_type", "device_conn_type") + tuple(f"c{k}" for k in range(14, 22))

#: Longest line imported (a Criteo or Avazu line is a few hundred bytes): a longer data line is
#: quarantined as ``line_too_long``; a longer line 1 refuses the file before anything is written.
MAX_IMPORT_LINE_BYTES = 64 * KiB

_INTEGER = r"^[+-]?[0-9]+$"
_HOUR = r"^[0-9]{8}$"


def observations_table(source: str) -> str:
    """Observation table of a public dataset: ``criteo_observations`` or ``avazu_observations``."""
    return f"{source}_observations"


def quarantine_table(source: str) -> str:
    """Quarantine table of a public dataset: ``criteo_quarantine`` or ``avazu_quarantine``."""
    return f"{source}_quarantine"


class LayoutError(InputError):
    """A file that is not in the expected layout at all (its header); nothing is written."""


@dataclass(frozen=True)
class Layout:
    """How a file's lines split: delimiter, whether line 1 is a header, the column names
    (lower case) in file order."""

    source: str
    delimiter: str
    header: bool
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        """Short layout name for messages and the import result, e.g. ``criteo-csv-header``."""
        sep = "tsv" if self.delimiter == "\t" else "csv"
        return f"{self.source}-{sep}{'-header' if self.header else ''}"

    def index(self, column: str) -> int:
        """Position of ``column`` in the file's lines."""
        return self.columns.index(column)


def _names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _header_names(fields: list[str], source: str, required: tuple[str, ...], optional: tuple[str, ...]):
    names = tuple(f.strip().lower() for f in fields)
    dupes = sorted({n for n in names if names.count(n) > 1})
    unknown = [n for n in names if n not in required + optional]
    missing = [n for n in required if n not in names]
    problems = []
    if missing:
        problems.append(f"missing column(s) {_names(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {_names(unknown)}")
    if dupes:
        problems.append(f"repeated column(s) {_names(dupes)}")
    if problems:
        label = "click" if source == AVAZU else "label"
        hint = (f" (the {source} test file has no labels and cannot be imported)"
                if missing == [label] and not unknown else "")
        raise LayoutError(f"not the {source} layout: the header has {'; '.join(problems)}{hint}")
    return names


def detect_layout(source: str, first_line: str | None) -> Layout:
    """The layout of a file from its first line (raises :class:`LayoutError`).

    A headerless Criteo file must have 40 fields on line 1: a file in some other layout
    is refused here rather than quarantined row by row (which would replace the dates it
    maps onto with nothing)."""
    if source not in SOURCES:
        raise ConfigurationError(f"unknown source {source!r} (expected one of {', '.join(SOURCES)})")
    if first_line is None:
        raise LayoutError(f"the {source} file is empty")
    if len(first_line.encode("utf-8", "replace")) > MAX_IMPORT_LINE_BYTES:
        raise LayoutError(f"line 1 is longer than the {format_size(MAX_IMPORT_LINE_BYTES)} line limit: not a "
                          f"{source} text file (MAX_IMPORT_LINE_BYTES)")
    line = first_line.lstrip("\ufeff")
    if source == AVAZU:
        names = _header_names(line.split(","), AVAZU, AVAZU_COLUMNS, ())
        return Layout(AVAZU, ",", True, names)
    delimiter = "\t" if "\t" in line or "," not in line else ","
    fields = line.split(delimiter)
    if fields[0].strip().lower() in ("id", "label"):
        return Layout(CRITEO, delimiter, True, _header_names(fields, CRITEO, CRITEO_COLUMNS, ("id",)))
    if len(fields) != len(CRITEO_COLUMNS):
        sep = "tab" if delimiter == "\t" else "comma"
        hint = " (Criteo's test.txt has no labels and cannot be imported)" if len(fields) == 39 else ""
        raise LayoutError(f"not the criteo layout: line 1 has {len(fields)} {sep}-separated fields, expected "
                          f"{len(CRITEO_COLUMNS)} (label, I1..I13, C1..C26) or a header line{hint}")
    return Layout(CRITEO, delimiter, False, CRITEO_COLUMNS)


@dataclass
class ImportResult:
    """What one import read and wrote. ``records_read`` = ``observations`` + ``duplicates``
    + ``quarantined`` always holds (checked before anything is written)."""

    run_id: str
    source: str
    source_file: str = ""
    layout: str = ""
    start_date: str | None = None
    days: int | None = None
    records_read: int = 0
    observations: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    positives: int = 0
    dates: list[str] = field(default_factory=list)
    observations_version: int = -1
    quarantine_version: int = -1
    seconds: float = 0.0

    @property
    def conserved(self) -> bool:
        """Whether every line read is accounted for: observations + duplicates + quarantined."""
        return self.records_read == self.observations + self.duplicates + self.quarantined

    def line(self) -> str:
        """The import's one-line summary: counts, quarantine reasons, CTR, dates, Delta version and time."""
        span = f"{self.dates[0]}..{self.dates[-1]}" if self.dates else "no dates"
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantine_reasons.items()))
        return (
            f"{self.source} ({self.layout}): read {self.records_read:,} = {self.observations:,} observations + "
            f"{self.duplicates:,} duplicates + {self.quarantined:,} quarantined"
            f"{' (' + reasons + ')' if reasons else ''}; "
            f"CTR {self.positives / max(self.observations, 1):.4f}; {len(self.dates)} date(s) {span}; "
            f"Delta v{self.observations_version} ({self.seconds:.1f}s)"
        )


# ---------------------------------------------------------------------------------------
# Reading lines with exact numbers


def _numbered_lines(spark: "SparkSession", path: str) -> tuple["DataFrame", str, int, str | None]:
    """(lines [source_file, line_number (1-based), value], the file's URI as Spark names it,
    number of lines, line 1).

    ``monotonically_increasing_id`` is (partition << 33) + position in the partition and a
    file split's lines are contiguous in its partition, so per split ``min(pos)`` and the
    split's line count turn ``pos`` into the line number. The scan is deterministic, so
    the second pass sees the same positions."""
    from pyspark.sql import functions as F

    lines = spark.read.text(path).select(
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("block"),
        F.monotonically_increasing_id().alias("pos"),
        "value",
    )
    stats = (lines.groupBy("source_file", "block")
             .agg(F.min("pos").alias("first_pos"), F.count("*").alias("n"),
                  # line 1 goes to the driver: at most MAX_IMPORT_LINE_BYTES + 1 characters of it
                  F.min_by(F.substring("value", 1, MAX_IMPORT_LINE_BYTES + 1), "pos").alias("first_line"))
             .collect())
    files = sorted({r.source_file for r in stats})
    if len(files) > 1:
        raise LayoutError(f"{path} is {len(files)} files; import one file at a time")
    if not stats:
        return lines.select("source_file", F.col("pos").alias("line_number"), "value"), path, 0, None
    base, offset = [], 0
    for r in sorted(stats, key=lambda r: r.block):
        base.append((r.block, offset + 1 - r.first_pos))
        offset += r.n
    first_line = min(stats, key=lambda r: r.block).first_line
    bases = spark.createDataFrame(base, "block long, base long")
    numbered = (lines.join(F.broadcast(bases), "block")
                .select("source_file", (F.col("pos") + F.col("base")).alias("line_number"), "value"))
    return numbered, files[0], offset, first_line


# ---------------------------------------------------------------------------------------
# Validation expressions


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _field(layout: Layout, name: str) -> "Column":
    from pyspark.sql import functions as F

    return F.get(F.col("_f"), layout.index(name))


def _bad_integer(value: "Column") -> "Column":
    """A non-empty value that is not a 64-bit integer (empty = missing, allowed)."""
    return (value != "") & ~(value.rlike(_INTEGER) & value.try_cast("long").isNotNull())


def _as_long(value: "Column") -> "Column":
    from pyspark.sql import functions as F

    return F.when(value != "", value.try_cast("long"))


def _as_string(value: "Column") -> "Column":
    from pyspark.sql import functions as F

    return F.when(value != "", value)


def _with_first_bad_integer(df: "DataFrame", layout: Layout, names: tuple[str, ...]) -> "DataFrame":
    """``df`` plus ``_bad_int``: 1-based position in ``names`` of the first column holding a bad
    integer, 0 if none (each value is checked once, in one array)."""
    from pyspark.sql import functions as F

    flags = F.array(*[_bad_integer(_field(layout, n)) for n in names])
    return df.withColumn("_bad_int", F.array_position(flags, True).cast("int"))


def _bad_integer_rule(layout: Layout, names: tuple[str, ...]) -> tuple["Column", str, "Column"]:
    """The ``bad_integer`` rule over a frame made by :func:`_with_first_bad_integer`."""
    from pyspark.sql import functions as F

    k = F.col("_bad_int")
    name = F.try_element_at(F.array(*[F.lit(n) for n in names]), k)
    value = F.get(F.col("_f"), F.try_element_at(F.array(*[F.lit(layout.index(n)) for n in names]), k))
    return k > 0, "bad_integer", F.format_string("%s is not an integer: '%s'", name, value)


def _shape_checks(layout: Layout) -> list[tuple["Column", str, "Column"]]:
    """(condition, reason, message) rules every layout starts with: line length, blank line, column count."""
    from pyspark.sql import functions as F

    sep = "tab" if layout.delimiter == "\t" else "comma"
    k = len(layout.columns)
    return [
        (F.octet_length("value") > MAX_IMPORT_LINE_BYTES, "line_too_long",
         F.format_string(f"line is %d bytes, over the {format_size(MAX_IMPORT_LINE_BYTES)} limit",
                         F.octet_length("value"))),
        (F.trim(F.col("value")) == "", "blank_line", F.lit("blank line")),
        (F.size("_f") != k, "wrong_column_count",
         F.format_string(f"expected {k} {sep}-separated fields, got %d", F.size("_f"))),
    ]


def _label_check(layout: Layout, name: str) -> tuple["Column", str, "Column"]:
    from pyspark.sql import functions as F

    value = _field(layout, name)
    return ~value.isin("0", "1"), "bad_label", F.format_string(f"{name} must be 0 or 1, got '%s'", value)


def _classify(rules: list[tuple["Column", str, "Column"]]) -> tuple["Column", "Column"]:
    """(reason, message) columns: the first rule whose condition holds, else null. ``rules``
    is never empty (every layout has the shape checks)."""
    from pyspark.sql import functions as F

    first_cond, first_name, first_msg = rules[0]
    reason, message = F.when(first_cond, F.lit(first_name)), F.when(first_cond, first_msg)
    for cond, name, msg in rules[1:]:
        reason = reason.when(cond, F.lit(name))
        message = message.when(cond, msg)
    return reason, message


def _parse_criteo(lines: "DataFrame", layout: Layout, n_rows: int, start_date: date, days: int,
                  file_name: str) -> "DataFrame":
    from pyspark.sql import functions as F

    first = 2 if layout.header else 1
    df = (lines.filter(F.col("line_number") >= first)
          .withColumn("_f", F.split("value", layout.delimiter, -1))
          .withColumn("event_index", F.col("line_number") - first))
    rules = _shape_checks(layout) + [_label_check(layout, "label")]
    if "id" in layout.columns:
        idv = _field(layout, "id")
        rules.append((_bad_integer(idv), "bad_integer", F.format_string("id is not an integer: '%s'", idv)))
    df = _with_first_bad_integer(df, layout, CRITEO_INTS)
    rules.append(_bad_integer_rule(layout, CRITEO_INTS))
    reason, message = _classify(rules)
    # reason and message as columns of their own: each is one big expression, referenced below
    df = df.select("_f", "event_index", "source_file", "line_number", "value",
                   reason.alias("reason"), message.alias("message"))
    day = F.expr(f"CAST(({int(days)} * event_index) DIV {int(n_rows)} AS INT)")
    ok = F.col("reason").isNull()
    return df.select(
        F.concat(F.lit(file_name + ":"), F.col("event_index").cast("string")).alias("impression_id"),
        "event_index",
        (F.when(ok, _as_long(_field(layout, "id"))) if "id" in layout.columns
         else F.lit(None).cast("long")).alias("kaggle_id"),
        F.when(ok, _field(layout, "label").try_cast("int")).alias("label"),
        *[F.when(ok, _as_long(_field(layout, c))).alias(c) for c in CRITEO_INTS],
        *[F.when(ok, _as_string(_field(layout, c))).alias(c) for c in CRITEO_CATS],
        "source_file", "line_number",
        F.date_add(F.lit(start_date.isoformat()).cast("date"), day).alias("date"),
        "reason", "message", "value",
    )


def _parse_avazu(lines: "DataFrame", layout: Layout) -> "DataFrame":
    from pyspark.sql import functions as F

    df = lines.filter(F.col("line_number") >= 2).withColumn("_f", F.split("value", ",", -1))
    hour = _field(layout, "hour")
    hh = F.substring(hour, 7, 2).try_cast("int")
    day = F.try_to_date(F.substring(hour, 1, 6), "yyMMdd")
    hour_ok = hour.rlike(_HOUR) & day.isNotNull() & (hh <= 23)
    click = _field(layout, "click")
    rules = _shape_checks(layout) + [
        (_field(layout, "id") == "", "missing_id", F.lit("id is empty")),
        _label_check(layout, "click"),
        (~hour_ok, "bad_hour", F.format_string("hour must be YYMMDDHH (UTC), got '%s'", hour)),
    ]
    df = _with_first_bad_integer(df, layout, AVAZU_INTS)
    rules.append(_bad_integer_rule(layout, AVAZU_INTS))
    reason, message = _classify(rules)
    whole = F.size("_f") == len(layout.columns)
    df = df.select("_f", "source_file", "line_number", "value", reason.alias("reason"), message.alias("message"),
                   F.when(whole & hour_ok, day).alias("_day"), F.when(whole & hour_ok, hh).alias("_hh"),
                   F.when(whole, _as_string(_field(layout, "id"))).alias("impression_id"))
    ok = F.col("reason").isNull()
    day, hh = F.col("_day"), F.col("_hh")
    return df.select(
        "impression_id",
        F.when(ok, F.timestamp_seconds(F.unix_date(day).cast("long") * 86400 + hh * 3600)).alias("event_time"),
        F.when(ok, click.try_cast("int")).alias("label"),
        F.when(ok, hh.cast("long")).alias("hour_of_day"),
        F.when(ok, F.weekday(day).cast("long")).alias("day_of_week"),
        *[F.when(ok, _as_long(_field(layout, c))).alias(c) for c in AVAZU_INTS],
        *[F.when(ok, _as_string(_field(layout, c))).alias(c) for c in AVAZU_STRINGS],
        "source_file", "line_number",
        day.alias("date"),
        "reason", "message", "value",
    )


OBSERVATION_COLUMNS = {
    CRITEO: ("impression_id", "event_index", "kaggle_id", "label", *CRITEO_INTS, *CRITEO_CATS,
             "source_file", "line_number", "date"),
    AVAZU: ("impression_id", "event_time", "label", "hour_of_day", "day_of_week", *AVAZU_INTS, *AVAZU_STRINGS,
            "source_file", "line_number", "date"),
}


# ---------------------------------------------------------------------------------------
# Writing


def _replace(df: "DataFrame", path: str, dates: list[str], source_file: str) -> int:
    """Replace, in one Delta commit, the ``dates`` partitions and every row of ``source_file``."""
    from feature_store import tables

    predicate = f"source_file = {_sql_string(source_file)}"
    if dates:
        predicate = f"date IN ({', '.join(_sql_string(d) for d in dates)}) OR {predicate}"
    (df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
     .partitionBy("date").save(path))
    tables.committed(path)
    return tables.latest_version(df.sparkSession, path)


def _record_run(spark: "SparkSession", settings: Settings, r: ImportResult) -> None:
    from feature_store import tables

    row = asdict(r) | {"finished_at": datetime.now(timezone.utc)}
    runs = catalog.IMPORT_RUNS
    tables.append(spark.createDataFrame([tuple(row[n] for n in runs.column_names)], runs.ddl()),
                  settings.table_path(IMPORT_RUNS))


def import_file(
    spark: "SparkSession",
    settings: Settings,
    source: str,
    path: str,
    start_date: date = DEFAULT_START_DATE,
    days: int = DEFAULT_DAYS,
) -> ImportResult:
    """Import one Criteo or Avazu file (idempotent; one commit per table)."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if source not in SOURCES:
        raise ConfigurationError(f"unknown source {source!r} (expected one of {', '.join(SOURCES)})")
    if days < 1:
        raise ConfigurationError(f"days must be at least 1, got {days}")
    t0 = time.perf_counter()
    result = ImportResult(run_id=uuid.uuid4().hex, source=source)
    lines, result.source_file, n_lines, first_line = _numbered_lines(spark, path)
    layout = detect_layout(source, first_line)
    result.layout = layout.name
    n_rows = n_lines - (1 if layout.header else 0)
    if n_rows <= 0:
        raise LayoutError(f"{path} has no data rows")
    if source == CRITEO:
        result.start_date, result.days = start_date.isoformat(), days
        parsed = _parse_criteo(lines, layout, n_rows, start_date, days, result.source_file.rsplit("/", 1)[-1])
        parsed = parsed.withColumn("status", F.coalesce("reason", F.lit("ok")))
    else:
        parsed = _parse_avazu(lines, layout)
        first_seen = Window.partitionBy(F.col("reason").isNull(), "impression_id").orderBy("line_number")
        parsed = parsed.withColumn(
            "status",
            F.when(F.col("reason").isNotNull(), F.col("reason"))
            .when(F.row_number().over(first_seen) > 1, F.lit("duplicate"))
            .otherwise(F.lit("ok")))
    parsed = parsed.persist(StorageLevel.MEMORY_AND_DISK)

    counts = (parsed.groupBy("status", "date")
              .agg(F.count("*").alias("n"), F.sum("label").alias("pos")).collect())
    result.records_read = sum(r.n for r in counts)
    by_status: dict[str, int] = {}
    for r in counts:
        by_status[r.status] = by_status.get(r.status, 0) + r.n
    result.observations = by_status.pop("ok", 0)
    result.duplicates = by_status.pop("duplicate", 0)
    result.quarantine_reasons = dict(sorted(by_status.items()))
    result.quarantined = sum(by_status.values())
    result.positives = int(sum(r.pos or 0 for r in counts if r.status == "ok"))
    result.dates = sorted({r.date.isoformat() for r in counts if r.date is not None})
    if not result.conserved or result.records_read != n_rows:  # a bug, never bad input: refuse to write
        parsed.unpersist()
        raise RuntimeError(f"import of {path}: counts do not add up ({n_rows} data lines): {asdict(result)}")

    quarantine = parsed.filter(F.col("reason").isNotNull()).select(
        F.lit(source).alias("source"), "source_file", "line_number", "reason", "message",
        F.substring("value", 1, RAW_LINE_LIMIT).alias("raw"), F.lit(result.run_id).alias("run_id"), "date")
    observations = parsed.filter(F.col("status") == "ok").select(*OBSERVATION_COLUMNS[source])
    result.quarantine_version = _replace(quarantine, settings.table_path(quarantine_table(source)),
                                         result.dates, result.source_file)
    result.observations_version = _replace(observations, settings.table_path(observations_table(source)),
                                           result.dates, result.source_file)
    parsed.unpersist()
    result.seconds = time.perf_counter() - t0
    _record_run(spark, settings, result)
    return result


def first_line_of_local_file(path) -> str | None:
    """Line 1 of a local (optionally gzip-compressed) file, without its line ending; None if empty.
    Lets the command refuse a wrong layout before Spark starts."""
    import gzip
    from pathlib import Path

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as fh:
        raw = fh.readline(MAX_IMPORT_LINE_BYTES + 1)  # one byte more: detect_layout refuses a longer line
    if not raw:
        return None
    return raw.decode("utf-8", "replace").rstrip("\r\n")
