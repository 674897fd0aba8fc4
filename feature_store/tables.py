"""Warehouse table names, the one way partitions are replaced, and the one way a commit that
lost a race to another writer is retried.

Every job replaces whole partitions with ``replaceWhere`` in a single Delta
commit, so a job killed midway leaves the previous version intact and running a
day twice gives the same table. After each commit a job passes the phase
``delta.<table>`` (:func:`committed`), where fault-injection tests kill it.

Several processes may write one table at once (two ingests of different days, a streaming
ingest beside a batch one; ``docs/concurrency.md``). Delta's optimistic concurrency lets each
commit land or fail with a conflict, never half-written; :func:`retry_conflicts` runs a failed
commit again after a short random pause, the only retry loop of the writers.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

from shared import catalog
from shared.errors import ConcurrencyError
from shared.faults import phase

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

# Schemas: shared.catalog (catalog.OBSERVATIONS, catalog.QUARANTINE).
OBSERVATIONS = catalog.OBSERVATIONS.name
QUARANTINE = catalog.QUARANTINE.name
INGEST_RUNS = "ingest_runs"
AGGREGATES = "aggregate_features"

#: Tries of a commit in all, and the pause before try n+1: uniform in [0, min(CAP, BASE * 2**n)]
#: seconds ("full jitter": writers that collided do not collide again in step).
COMMIT_ATTEMPTS = 8
BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS = 0.25, 8.0
#: Delta's error classes of a lost commit race, for a conflict not converted to a
#: ``delta.exceptions`` class: DELTA_CONCURRENT_APPEND, ..._DELETE_READ, ..._DELETE_DELETE,
#: ..._TRANSACTION, ..._WRITE, DELTA_METADATA_CHANGED and DELTA_PROTOCOL_CHANGED (two writers
#: creating the table).
_CONFLICT_CONDITIONS = ("DELTA_CONCURRENT_", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED")
_HISTORY_DEPTHS = (20, 1000)  # commits searched for a write's own commit, then deeper
T = TypeVar("T")


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


# -- concurrent writers -------------------------------------------------------------------------

def conflict_name(err: BaseException) -> str | None:
    """The kind of Delta commit conflict ``err`` is (its class or error class), or None when it
    is anything else. Only these are retried: the commit did not happen, so doing the write
    again is safe."""
    import delta.exceptions as dx  # importing it also converts the JVM's conflicts to these classes

    kinds = (dx.DeltaConcurrentModificationException, dx.ConcurrentWriteException, dx.MetadataChangedException,
             dx.ProtocolChangedException, dx.ConcurrentAppendException, dx.ConcurrentDeleteReadException,
             dx.ConcurrentDeleteDeleteException, dx.ConcurrentTransactionException)
    if isinstance(err, kinds):
        return type(err).__name__
    condition = getattr(err, "getCondition", None)
    try:
        name = condition() if callable(condition) else None
    except Exception:  # a captured exception without its JVM origin
        name = None
    return name if isinstance(name, str) and name.startswith(_CONFLICT_CONDITIONS) else None


def backoff_seconds(retry: int) -> float:
    """The pause before the ``retry``-th retry (1, 2, ...): full jitter over an exponential cap."""
    return random.uniform(0.0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** retry))


def retry_conflicts(write: Callable[[], T], path: str, what: str = "write",
                    attempts: int = COMMIT_ATTEMPTS) -> T:
    """Run ``write`` (one Delta commit to the table at ``path``, redone whole from its source
    each time: it must decide anew whether the table exists) until it commits; a try that lost
    the race to a concurrent commit (:func:`conflict_name`) is retried after
    :func:`backoff_seconds`. After ``attempts`` lost races: :class:`ConcurrencyError`."""
    import delta.exceptions  # noqa: F401  (converts the JVM's conflicts before ``write`` can raise one)

    for attempt in range(1, attempts + 1):
        try:
            return write()
        except Exception as err:
            kind = conflict_name(err)
            if kind is None:
                raise
            if attempt == attempts:
                raise ConcurrencyError(
                    f"{Path(path).name}: the {what} lost the commit race to concurrent writers {attempts} times "
                    f"(last: {kind}); nothing of it was committed, run it again") from err
            pause = backoff_seconds(attempt)
            print(f"{Path(path).name}: the {what} conflicted with a concurrent commit ({kind}); "
                  f"retrying in {pause:.2f}s (try {attempt + 1} of {attempts})", file=sys.stderr, flush=True)
            time.sleep(pause)
    raise AssertionError("unreachable")  # the loop returns or raises


def version_tagged(spark: "SparkSession", path: str, user_metadata: str) -> int | None:
    """The version of the newest commit of the table at ``path`` whose ``userMetadata`` is
    ``user_metadata``, or None. Other writers may commit right after a write, so the newest
    version is not necessarily the write's own: its tag names it."""
    from delta.tables import DeltaTable

    for depth in _HISTORY_DEPTHS:
        rows = DeltaTable.forPath(spark, path).history(depth).select("version", "userMetadata").collect()
        found = [int(r.version) for r in rows if r.userMetadata == user_metadata]
        if found:
            return max(found)
        if len(rows) < depth:
            break
    return None


def partitions_changed(spark: "SparkSession", path: str, column: str, values: Iterable[str],
                       after: int | None, before: int) -> bool:
    """Whether a commit of the table at ``path`` after version ``after`` (None: from its first
    commit) and before version ``before`` added or removed files in a partition ``column IN
    values``: what a job read at ``after`` and wrote at ``before`` was then rewritten under it.
    Read from the commits' JSON files in ``_delta_log``, through Spark (any file system)."""
    first, wanted = (0 if after is None else after + 1), set(values)
    if first >= before or not wanted:
        return False
    log = f"{path.rstrip('/')}/_delta_log"
    for row in spark.read.text([f"{log}/{v:020d}.json" for v in range(first, before)]).collect():
        action = json.loads(row.value)
        for kind in ("add", "remove"):
            if str((action.get(kind) or {}).get("partitionValues", {}).get(column)) in wanted:
                return True
    return False


# -- writes ---------------------------------------------------------------------------------------

def _tag() -> str:
    return f"ctr-write {uuid.uuid4().hex}"


def replace_partitions(df: "DataFrame", path: str, column: str, values: Iterable[str]) -> int:
    """Replace the partitions ``column IN values`` of the Delta table at ``path`` with ``df``
    in one commit (creating the table partitioned by ``column`` if needed); returns the
    table version written. The predicate names only partition values, so Delta checks it
    against the partitions a concurrent commit touched: writers of other partitions never
    conflict, a conflict (or two writers creating the table) is retried."""
    values = sorted(set(values))
    if not values:
        raise ValueError("replace_partitions needs at least one partition value")
    quoted = ", ".join(f"'{v}'" for v in values)
    tag = _tag()

    def write() -> None:
        (df.write.format("delta").mode("overwrite").option("replaceWhere", f"{column} IN ({quoted})")
         .option("userMetadata", tag).partitionBy(column).save(path))

    retry_conflicts(write, path, f"replacement of {column} {', '.join(values)}")
    committed(path)
    return _own_version(df.sparkSession, path, tag)


def append(df: "DataFrame", path: str, *, add_columns: bool = False) -> int:
    """Append ``df`` to the Delta table at ``path``; returns the new version. ``add_columns``:
    a column the table lacks is added (a log that gained a column since it was created).
    Appends never conflict with each other; creating the table at once does, and is retried."""
    tag = _tag()

    def write() -> None:
        writer = df.write.format("delta").mode("append").option("userMetadata", tag)
        if add_columns:
            writer = writer.option("mergeSchema", "true")
        writer.save(path)

    retry_conflicts(write, path, "append")
    committed(path)
    return _own_version(df.sparkSession, path, tag)


def _own_version(spark: "SparkSession", path: str, tag: str) -> int:
    version = version_tagged(spark, path, tag)
    return latest_version(spark, path) if version is None else version
