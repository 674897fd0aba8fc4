"""``ctr ingest``: bidder impression logs + click logs -> the observation table.

One row per served impression: its raw feature fields (the shared OpenRTB mapping),
its event time and its click label. Per day the job

- parses every line of that day's hourly impression files (file and line kept for
  quarantine), in Python through :mod:`feature_store.parse` inside ``mapInArrow``
  so the mapping is the exact code the bidder endpoint runs;
- drops duplicate impressions (same ``impression_id``: the earliest record is kept,
  ties by file and line; an id already stored for the previous day also counts as
  a duplicate);
- labels an impression 1 when a click for it arrives within the attribution window,
  reading click files from the impression's day up to the day the window closes,
  so re-ingesting a day after the next day's clicks land updates its labels;
- writes malformed lines to the quarantine table, the observations in one Delta
  commit replacing the day's partition, and one row to the ingest-runs table.

The partition ``date`` is the date of the log file a record was read from (the
bidder's logging day); ``event_time`` is the record's own timestamp.
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from feature_store import tables
from feature_store.parse import LineError, clip_raw, parse_click, parse_impression
from shared import catalog
from shared.config import Settings
from shared.errors import ConcurrencyError, ConfigurationError, InputError, MissingInputError
from shared.limits import MiB, too_large
from shared.openrtb import RAW_FIELD_NAMES

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Largest hourly log file ingested: each file is read whole (one row, then split into lines in
#: the Python worker), so one file's size bounds a task's memory. A larger file is refused
#: before anything is read or written (:class:`InputError`).
MAX_LOG_FILE_BYTES = 256 * MiB


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line


def _parse_impression_files(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
    """mapInArrow body: (source_file, whole file text) -> one parsed row per non-blank line."""
    import pyarrow as pa

    schema = catalog.PARSED_IMPRESSIONS.arrow_schema()
    for batch in batches:
        for path, text in zip(batch.column("source_file").to_pylist(), batch.column("value").to_pylist()):
            cols: dict[str, list] = {n: [] for n in schema.names}
            raw_cols = [cols[n] for n in RAW_FIELD_NAMES]
            iid: str | None
            us: int | None
            reason: str | None
            msg: str | None
            raw: str | None
            values: list[Any]
            for number, line in _lines(text):
                try:
                    iid, t, fields = parse_impression(line)
                except LineError as err:
                    ok, iid, us, reason, msg, raw = False, None, None, err.reason, str(err), clip_raw(line)
                    values = [None] * len(raw_cols)
                else:
                    ok, us, reason, msg, raw = True, _micros(t), None, None, None
                    values = [fields[n] for n in RAW_FIELD_NAMES]
                cols["ok"].append(ok)
                cols["source_file"].append(path)
                cols["line_number"].append(number)
                cols["impression_id"].append(iid)
                cols["event_us"].append(us)
                cols["reason"].append(reason)
                cols["message"].append(msg)
                cols["raw"].append(raw)
                for target, value in zip(raw_cols, values):
                    target.append(value)
            yield pa.RecordBatch.from_pydict(cols, schema=schema)


def _parse_click_files(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
    import pyarrow as pa

    schema = catalog.PARSED_CLICKS.arrow_schema()
    for batch in batches:
        for path, text in zip(batch.column("source_file").to_pylist(), batch.column("value").to_pylist()):
            rows: list[tuple[Any, ...]] = []
            for number, line in _lines(text):
                try:
                    iid, t = parse_click(line)
                    rows.append((True, path, number, iid, _micros(t), None, None, None))
                except LineError as err:
                    rows.append((False, path, number, None, None, err.reason, str(err), clip_raw(line)))
            columns: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in schema.names]
            yield pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)],
                                             schema=schema)


def day_files(raw_dir: Path, kind: str, day: date) -> list[str]:
    """The hourly ``.jsonl`` files of one day's ``kind`` folder (impressions or clicks), sorted;
    :class:`InputError` if one is larger than :data:`MAX_LOG_FILE_BYTES` (each is read whole)."""
    folder = raw_dir / kind / f"date={day.isoformat()}"
    files = sorted(str(p) for p in folder.glob("hour=*.jsonl")) if folder.is_dir() else []
    for f in files:
        if (size := os.path.getsize(f)) > MAX_LOG_FILE_BYTES:
            raise too_large(f"log file {f}", size, MAX_LOG_FILE_BYTES, InputError,
                            "split it into several hour=*.jsonl files (MAX_LOG_FILE_BYTES)")
    return files


def _read_files(spark: "SparkSession", files: list[str]) -> "DataFrame":
    from pyspark.sql import functions as F

    return (
        spark.read.text(files, wholetext=True)
        .select(F.col("_metadata.file_path").alias("source_file"), "value")
    )


@dataclass
class IngestResult:
    """What one day's ingest read and wrote. ``records_read`` = ``observations`` +
    ``duplicates`` + ``quarantined`` always holds (checked before anything is written)."""

    run_id: str
    date: str
    records_read: int = 0
    observations: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    clicks_read: int = 0
    clicks_quarantined: int = 0
    clicks_attributed: int = 0
    clicks_outside_window: int = 0
    positives: int = 0
    attribution_window_hours: float = 24.0
    impression_files: list[str] = field(default_factory=list)
    click_files: list[str] = field(default_factory=list)
    delta_version: int = -1
    seconds: float = 0.0

    @property
    def conserved(self) -> bool:
        """Whether every record read is accounted for: observations + duplicates + quarantined."""
        return self.records_read == self.observations + self.duplicates + self.quarantined

    def line(self) -> str:
        """The day's one-line summary: counts, CTR, click attribution, Delta version and time."""
        return (
            f"{self.date}: read {self.records_read:,} = {self.observations:,} observations + "
            f"{self.duplicates:,} duplicates + {self.quarantined:,} quarantined; "
            f"CTR {self.positives / max(self.observations, 1):.4f}; "
            f"clicks attributed {self.clicks_attributed:,}, outside window {self.clicks_outside_window:,}; "
            f"Delta v{self.delta_version} ({self.seconds:.1f}s)"
        )


def ingest_days(
    spark: "SparkSession",
    settings: Settings,
    days: list[date],
    attribution_window_hours: float = 24.0,
    raw_dir: Path | None = None,
) -> list[IngestResult]:
    """Ingest logging days into the observation table in one pass and one Delta commit.

    Running the same days again gives the same table (idempotent); a run killed before
    its commit leaves the previous version intact. Returns one result per day.

    Runs of other days may write at the same time (``docs/concurrency.md``). The ids stored for
    the day before the run's first day are read at one pinned version; when a concurrent run
    rewrote that day between this read and this commit, the pass is done again on the new
    version, so the table is what the runs give one after the other, in their commit order.
    """
    if attribution_window_hours <= 0:
        raise ConfigurationError("attribution window must be positive")
    days = sorted(set(days))
    if not days:
        raise ConfigurationError("no days to ingest")
    raw_dir = Path(raw_dir or settings.raw_dir)
    t0 = time.perf_counter()
    run_id = uuid.uuid4().hex
    obs_path = settings.table_path(tables.OBSERVATIONS)
    previous = sorted({(d - timedelta(days=1)).isoformat() for d in days} - {d.isoformat() for d in days})
    for attempt in range(1, tables.COMMIT_ATTEMPTS + 1):
        read_version = tables.latest_version(spark, obs_path) if tables.table_exists(spark, obs_path) else None
        results, version = _ingest_pass(spark, settings, days, run_id, attribution_window_hours, raw_dir,
                                        previous, read_version)
        if not tables.partitions_changed(spark, obs_path, "date", previous, read_version, version):
            break
        print(f"observations: day(s) {', '.join(previous)} were rewritten by a concurrent run while this one "
              f"de-duplicated against them; ingesting again (pass {attempt + 1})", file=sys.stderr, flush=True)
    else:
        raise ConcurrencyError(f"observations: day(s) {', '.join(previous)} kept being rewritten by concurrent runs "
                               f"({tables.COMMIT_ATTEMPTS} passes); run the ingest again")
    seconds = time.perf_counter() - t0
    out = [results[d.isoformat()] for d in days]
    for r in out:
        r.delta_version, r.seconds = version, seconds
    _record_runs(spark, settings, out)
    return out


def _ingest_pass(spark: "SparkSession", settings: Settings, days: list[date], run_id: str,
                 attribution_window_hours: float, raw_dir: Path, previous: list[str],
                 read_version: int | None) -> tuple[dict[str, IngestResult], int]:
    """One pass of :func:`ingest_days`: parse, de-duplicate (against the ``previous`` days as
    stored at ``read_version``), label, count and write; the results by day and the
    observation table's version written."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    results = {d.isoformat(): IngestResult(run_id=run_id, date=d.isoformat(),
                                           attribution_window_hours=attribution_window_hours) for d in days}
    days_of_clicks = 1 + math.ceil(attribution_window_hours / 24)
    impression_files, click_days = [], set()
    for d in days:
        r = results[d.isoformat()]
        r.impression_files = day_files(raw_dir, "impressions", d)
        if not r.impression_files:
            raise MissingInputError(f"no impression logs for {d} under {raw_dir / 'impressions'}")
        impression_files += r.impression_files
        for k in range(days_of_clicks):
            r.click_files += day_files(raw_dir, "clicks", d + timedelta(days=k))
            click_days.add(d + timedelta(days=k))
    click_files = sorted({f for d in sorted(click_days) for f in day_files(raw_dir, "clicks", d)})
    obs_path = settings.table_path(tables.OBSERVATIONS)
    window_us = int(attribution_window_hours * 3600 * 1e6)
    # A record's partition is the date of the file it was logged in.
    file_date = F.regexp_extract("source_file", r"date=(\d{4}-\d{2}-\d{2})", 1)

    parsed = (
        _read_files(spark, impression_files)
        .mapInArrow(_parse_impression_files, catalog.PARSED_IMPRESSIONS.ddl())
        .withColumn("date", file_date)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    rank = Window.partitionBy("impression_id").orderBy("event_us", "source_file", "line_number")
    kept = parsed.filter("ok").withColumn("_rank", F.row_number().over(rank)).filter("_rank = 1").drop("_rank")
    # An id already stored for the day before (when that day is not part of this run) is a duplicate.
    if read_version is not None:
        seen = (spark.read.format("delta").option("versionAsOf", read_version).load(obs_path)
                .filter(F.col("date").cast("string").isin(previous))
                .select("impression_id", F.date_add("date", 1).cast("string").alias("date")))
        kept = kept.join(seen, ["impression_id", "date"], "left_anti")

    clicks = (
        _read_files(spark, click_files).mapInArrow(_parse_click_files, catalog.PARSED_CLICKS.ddl())
        if click_files else spark.createDataFrame([], catalog.PARSED_CLICKS.ddl())
    ).withColumn("date", file_date).persist(StorageLevel.MEMORY_AND_DISK)
    matched = (
        clicks.filter("ok").select("impression_id", "click_us")
        .join(kept.select("impression_id", "event_us", F.col("date").alias("imp_date")), "impression_id")
        .withColumn("delay_us", F.col("click_us") - F.col("event_us"))
        .withColumn("attributed", (F.col("delay_us") >= 0) & (F.col("delay_us") <= window_us))
    )
    first_click = (matched.filter("attributed").groupBy("impression_id")
                   .agg((F.min("delay_us") / 1e6).alias("click_delay_s")))
    observations = (
        kept.join(first_click, "impression_id", "left")
        .select(
            "impression_id",
            F.timestamp_micros("event_us").alias("event_time"),
            F.col("click_delay_s").isNotNull().cast("int").alias("label"),
            "click_delay_s",
            *RAW_FIELD_NAMES,
            F.col("date").cast("date").alias("date"),
        )
        .persist(StorageLevel.MEMORY_AND_DISK)
    )

    for row in parsed.groupBy("date", "ok", "reason").count().collect():
        r = results[row.date]
        r.records_read += row["count"]
        if not row.ok:
            r.quarantine_reasons[row.reason] = row["count"]
            r.quarantined += row["count"]
        else:
            r.duplicates += row["count"]  # minus the kept ones below
    for row in (observations.groupBy(F.col("date").cast("string").alias("d"))
                .agg(F.count("*").alias("n"), F.sum("label").alias("pos")).collect()):
        r = results[row.d]
        r.observations, r.positives = int(row.n), int(row.pos or 0)
        r.duplicates -= r.observations
    for row in clicks.groupBy("date", "ok").count().collect():  # counted by the click file's day
        if row.date in results:
            results[row.date].clicks_read += row["count"]
            results[row.date].clicks_quarantined += 0 if row.ok else row["count"]
    for row in matched.groupBy("imp_date").agg(F.count("*").alias("n"),
                                               F.sum(F.col("attributed").cast("int")).alias("a")).collect():
        r = results[row.imp_date]
        r.clicks_attributed = int(row.a or 0)
        r.clicks_outside_window = int(row.n) - r.clicks_attributed
    broken = [asdict(r) for r in results.values() if not r.conserved]
    if broken:  # a bug, never bad input: refuse to write
        raise RuntimeError(f"ingest counts do not add up: {broken}")

    day_strings = [d.isoformat() for d in days]
    quarantine = (
        parsed.filter(~F.col("ok")).select(F.lit("impressions").alias("source"), "source_file", "line_number",
                                            "reason", "message", "raw", "date")
        .unionByName(clicks.filter(~F.col("ok") & F.col("date").isin(day_strings))
                     .select(F.lit("clicks").alias("source"), "source_file", "line_number", "reason",
                             "message", "raw", "date"))
        .withColumn("run_id", F.lit(run_id))
        .withColumn("date", F.col("date").cast("date"))
        .select(*catalog.QUARANTINE.column_names)
    )
    tables.replace_partitions(quarantine, settings.table_path(tables.QUARANTINE), "date", day_strings)
    version = tables.replace_partitions(observations, obs_path, "date", day_strings)
    for u in (parsed, clicks, observations):
        u.unpersist()
    return results, version


def ingest_day(spark: "SparkSession", settings: Settings, day: date, **kwargs) -> IngestResult:
    """Ingest one logging day (see :func:`ingest_days`)."""
    return ingest_days(spark, settings, [day], **kwargs)[0]


def _record_runs(spark: "SparkSession", settings: Settings, results: list[IngestResult]) -> None:
    from pyspark.sql import Row

    rows = [Row(
        run_id=r.run_id, date=r.date, finished_at=datetime.now(timezone.utc), seconds=float(r.seconds),
        impression_files=r.impression_files, click_files=r.click_files,
        attribution_window_hours=float(r.attribution_window_hours),
        records_read=r.records_read, observations=r.observations, duplicates=r.duplicates,
        quarantined=r.quarantined, quarantine_reasons=r.quarantine_reasons, positives=r.positives,
        clicks_read=r.clicks_read, clicks_quarantined=r.clicks_quarantined,
        clicks_attributed=r.clicks_attributed, clicks_outside_window=r.clicks_outside_window,
        observations_version=r.delta_version,
    ) for r in results]
    tables.append(spark.createDataFrame(rows, catalog.INGEST_RUNS.spark_schema()),
                  settings.table_path(tables.INGEST_RUNS))


def ingest_range(spark, settings: Settings, start: date, end: date, **kwargs) -> list[IngestResult]:
    """Ingest each day in [start, end] (inclusive) in one pass and one commit."""
    if end < start:
        raise ConfigurationError(f"end date {end} is before start date {start}")
    days = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    results = ingest_days(spark, settings, days, **kwargs)
    for r in results:
        print(r.line(), flush=True)
    return results
