"""Warehouse table names, and the one way partitions are replaced.

Every job replaces whole partitions with ``replaceWhere`` in a single Delta
commit, so a job killed midway leaves the previous version intact and running a
day twice gives the same table. After each commit a job passes the phase
``delta.<table>`` (:func:`committed`), where fault-injection tests kill it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from shared import catalog
from shared.faults import phase

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

# Schemas: shared.catalog (catalog.OBSERVATIONS, catalog.QUARANTINE).
OBSERVATIONS = catalog.OBSERVATIONS.name
QUARANTINE = catalog.QUARANTINE.name
INGEST_RUNS = "ingest_runs"
AGGREGATES = "aggregate_features"


def table_exists(spark: "SparkSession", path: str) -> bool:
    """Whether ``path`` holds a Delta table."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def first_row(df: "DataFrame") -> "Row":
    """The first row of ``df``, which must have one: a global aggregate (``df.agg(...)``)
    always has exactly one, so does a Delta table's history."""
    row = df.first()
    if row is None:
        raise ValueError("expected a row, the DataFrame is empty")
    return row


def latest_version(spark: "SparkSession", path: str) -> int:
    """The newest Delta version of the table at ``path``."""
    from delta.tables import DeltaTable

    return int(first_row(DeltaTable.forPath(spark, path).history(1).select("version"))[0])


def committed(path: str) -> None:
    """Mark a Delta commit to the table at ``path`` as done (the phase ``delta.<table name>``)."""
    phase(f"delta.{Path(path).name}")


def replace_partitions(df: "DataFrame", path: str, column: str, values: Iterable[str]) -> int:
    """Replace the partitions ``column IN values`` of the Delta table at ``path`` with ``df``
    in one commit (creating the table partitioned by ``column`` if needed); returns the
    table version written."""
    values = sorted(set(values))
    if not values:
        raise ValueError("replace_partitions needs at least one partition value")
    quoted = ", ".join(f"'{v}'" for v in values)
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{column} IN ({quoted})")
        .partitionBy(column)
        .save(path)
    )
    committed(path)
    return latest_version(df.sparkSession, path)


def append(df: "DataFrame", path: str, *, add_columns: bool = False) -> int:
    """Append ``df`` to the Delta table at ``path``; returns the new version. ``add_columns``:
    a column the table lacks is added (a log that gained a column since it was created)."""
    writer = df.write.format("delta").mode("append")
    if add_columns:
        writer = writer.option("mergeSchema", "true")
    writer.save(path)
    committed(path)
    return latest_version(df.sparkSession, path)
