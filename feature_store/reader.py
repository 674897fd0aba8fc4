"""Reading warehouse windows for back-tests, pinned to an exact Delta version.

A window is a half-open date range [start, end) over the ``date`` partition
column, so Delta prunes every other partition. The version actually read is
returned with the data: recording it (and reading ``version=`` later) reproduces
an experiment exactly, whatever has been re-ingested since.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Sequence

from feature_store import tables
from shared.config import Settings
from shared.errors import ConfigurationError, MissingInputError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class Window:
    """Half-open date window [start, end)."""

    start: date
    end: date

    def __post_init__(self):
        if self.end <= self.start:
            raise ConfigurationError(f"window end {self.end} must be after its start {self.start}")

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    @property
    def predicate(self) -> str:
        """The window as a SQL filter on the ``date`` partition column."""
        return f"date >= '{self.start.isoformat()}' AND date < '{self.end.isoformat()}'"


@dataclass(frozen=True)
class WindowRead:
    """What a window read returned: table, path, window, pinned Delta version and columns."""

    table: str
    path: str
    window: Window
    version: int
    columns: tuple[str, ...]

    def reference(self) -> dict:
        """The data reference recorded with a model: enough to read the same rows again."""
        return {"table": self.table, "path": self.path, "delta_version": self.version,
                "start": self.window.start.isoformat(), "end": self.window.end.isoformat()}


def resolve_version(spark: "SparkSession", path: str, version: int | None = None,
                    timestamp: datetime | str | None = None) -> int:
    """The table version to read: ``version`` as given, the last one committed at or before
    ``timestamp``, or the latest."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    if version is not None and timestamp is not None:
        raise ConfigurationError("give a version or a timestamp, not both")
    if not tables.table_exists(spark, path):
        raise MissingInputError(f"no Delta table at {path} (run `ctr ingest` first)")
    history = DeltaTable.forPath(spark, path).history().select("version", "timestamp")
    latest = int(tables.first_row(history.agg(F.max("version")))[0])
    if version is not None:
        if not 0 <= version <= latest:
            raise ConfigurationError(f"{path} has versions 0..{latest}, not {version}")
        return version
    if timestamp is not None:
        ts = timestamp.isoformat() if isinstance(timestamp, datetime) else str(timestamp)
        committed = history.filter(F.col("timestamp") <= F.lit(ts).cast("timestamp"))
        row = tables.first_row(committed.agg(F.max("version")))
        if row[0] is None:
            raise ConfigurationError(f"{path} has no version committed at or before {ts}")
        return int(row[0])
    return latest


def read_window(
    spark: "SparkSession",
    settings: Settings,
    window: Window,
    columns: Sequence[str] | None = None,
    table: str = tables.OBSERVATIONS,
    version: int | None = None,
    timestamp: datetime | str | None = None,
) -> tuple["DataFrame", WindowRead]:
    """The rows of ``window`` (partition-pruned), the chosen columns, at a pinned version."""
    path = settings.table_path(table)
    v = resolve_version(spark, path, version, timestamp)
    df = spark.read.format("delta").option("versionAsOf", v).load(path).filter(window.predicate)
    if columns:
        unknown = sorted(set(columns) - set(df.columns))
        if unknown:
            raise ConfigurationError(f"table {table} has no column(s) {', '.join(unknown)}; "
                                     f"it has: {', '.join(df.columns)}")
        df = df.select(*columns)
    return df, WindowRead(table=table, path=path, window=window, version=v, columns=tuple(df.columns))


class WindowTooLargeError(ConfigurationError):  # the fix is a setting or a flag, not the data
    """A window bigger than the driver may collect (``spark.driver.maxResultSize``)."""


def to_arrow(df: "DataFrame") -> "pa.Table":
    """Collect a (window-sized) DataFrame to Arrow through Spark's Arrow path; a window
    larger than the driver may hold is a :class:`WindowTooLargeError` that says what to do."""
    from py4j.protocol import Py4JJavaError

    try:
        return df.toArrow()
    except Py4JJavaError as exc:
        text = str(exc)
        if "maxResultSize" not in text:
            raise
        detail = next((line.split("SparkException:", 1)[-1].strip() for line in text.splitlines()
                       if "maxResultSize" in line), "results exceed spark.driver.maxResultSize")
        raise WindowTooLargeError(
            f"the window does not fit in the Spark driver ({detail}); raise CTR_SPARK_DRIVER_MEMORY "
            f"(maxResultSize is 3/4 of it), shorten the window, or train with --engine mllib") from None
