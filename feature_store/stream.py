"""``ctr ingest --stream``: follow the impression and click log folders with Spark Structured
Streaming and keep the observation table up to date, exactly once across restarts.

One streaming query reads two file sources, ``<raw>/impressions`` and ``<raw>/clicks``
(every ``hour=*.jsonl`` below them, whole files: a file source lists each file once, so
writers must only ever show finished files -- the generator writes under a hidden name
and renames). Each micro-batch, in ``foreachBatch``:

1. parses the new files with the batch ingest's own ``mapInArrow`` parsers
   (:mod:`feature_store.ingest`), so lines, reasons and raw fields are the same;
2. de-duplicates impressions like the batch job: within the micro-batch the earliest
   record wins (ties by file and line), and an id already stored from the day before the
   batch's first day on is a duplicate;
3. labels: a new impression is labelled from every click seen so far (the stored clicks
   plus this batch's) with a delay in ``[0, window]``; a new click for an impression
   already written *updates* its label and ``click_delay_s`` (MERGE) while the
   impression's window is still open, i.e. ``event_time + window`` is after the click
   watermark of the batches before;
4. checks the counts -- lines read = observations + duplicates + quarantined, and clicks
   read = quarantined + attributed + outside the window + after the window closed +
   not matched (yet) -- and refuses to write when they do not add up;
5. writes, each step idempotent: the quarantined lines (appended), the valid
   clicks (the :data:`STREAM_CLICKS` side table, the join's state), the observations
   (one MERGE on ``impression_id`` + ``date``: insert new impressions, update labels),
   and last one row of :data:`STREAM_BATCHES` with the counts and the watermark. A commit that
   loses a race to another writer (a batch ingest replacing a day) is redone with the same
   txn ids (``docs/concurrency.md``).

Exactly once: the file source's offsets live in the checkpoint
(``<data root>/checkpoints/ingest``); a micro-batch that was interrupted is replayed with
the same files and the same ``batchId``. Every commit of a batch carries the Delta
``txnAppId`` (the query id, kept in the checkpoint) / ``txnVersion`` (the batch id) pair,
so Delta skips a write it already committed, and the tag ``userMetadata`` so the replay
reads the tables as they were *before* the batch's first attempt: the counts it records
are the same whichever write the crash interrupted.

Label maturity: the click watermark is the newest click time seen minus the allowed
lateness; a row is final once ``event_time + window <= watermark`` (after that its label
never changes: clicks arriving later are counted as ``clicks_after_final``, not applied).
The observations schema is shared with training and unchanged, so maturity is not a
column: each batch records ``labels_final_before`` (= watermark - window) in
:data:`STREAM_BATCHES`, and :func:`labels_final_before` returns the newest.

The partition ``date`` and ``event_time`` mean what they mean in batch ingest, so batch
and streaming ingest of the same logs give the same observation rows (the test
``tests/test_stream_ingest.py`` checks it on generated logs).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_store import tables
from feature_store.ingest import _parse_click_files, _parse_impression_files
from shared import catalog
from shared.config import Settings
from shared.errors import ConfigurationError
from shared.faults import phase

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery


STREAM_CLICKS, STREAM_BATCHES = catalog.STREAM_CLICKS, catalog.STREAM_BATCHES


_FILE_GLOB = "hour=*.jsonl"
_DATE_RE = r"date=(\d{4}-\d{2}-\d{2})"
_HISTORY_DEPTH = 50  # commits searched for a replayed batch's own commit


def checkpoint_dir(settings: Settings) -> Path:
    """Where the streaming ingest keeps its offsets and commits."""
    return settings.home / "checkpoints" / "ingest"


@dataclass
class StreamOptions:
    """How the stream runs. ``once``: process what is there now (``availableNow``) and stop."""

    attribution_window_hours: float = 24.0
    lateness_minutes: float = 60.0
    max_files_per_trigger: int | None = None
    trigger_seconds: float = 30.0
    once: bool = False

    def __post_init__(self) -> None:
        if self.attribution_window_hours <= 0:
            raise ConfigurationError("attribution window must be positive")
        if self.lateness_minutes < 0:
            raise ConfigurationError("click lateness must be >= 0 minutes")
        if self.max_files_per_trigger is not None and self.max_files_per_trigger < 1:
            raise ConfigurationError("max files per trigger must be >= 1")
        if self.trigger_seconds <= 0:
            raise ConfigurationError("trigger interval must be positive")


@dataclass
class BatchResult:
    """What one micro-batch read and wrote (one :data:`STREAM_BATCHES` row)."""

    query_id: str
    batch_id: int
    impression_files: list[str] = field(default_factory=list)
    click_files: list[str] = field(default_factory=list)
    records_read: int = 0
    observations: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    positives: int = 0
    clicks_read: int = 0
    clicks_quarantined: int = 0
    clicks_attributed: int = 0
    clicks_outside_window: int = 0
    clicks_after_final: int = 0
    clicks_unmatched: int = 0
    labels_updated: int = 0
    click_watermark: datetime | None = None
    labels_final_before: datetime | None = None
    observations_version: int = -1
    seconds: float = 0.0
    replayed: bool = False  # the batch had been (partly) committed by an earlier attempt

    @property
    def conserved(self) -> bool:
        """Lines read = observations + duplicates + quarantined, and every click accounted for."""
        return (self.records_read == self.observations + self.duplicates + self.quarantined
                and self.clicks_read == self.clicks_quarantined + self.clicks_attributed
                + self.clicks_outside_window + self.clicks_after_final + self.clicks_unmatched)

    def line(self) -> str:
        """The batch's one-line summary."""
        final = f"{self.labels_final_before:%Y-%m-%d %H:%M}" if self.labels_final_before else "-"
        return (
            f"batch {self.batch_id}: {len(self.impression_files)} impression + {len(self.click_files)} click files; "
            f"read {self.records_read:,} = {self.observations:,} observations + {self.duplicates:,} duplicates + "
            f"{self.quarantined:,} quarantined; clicks {self.clicks_read:,} (attributed {self.clicks_attributed:,}, "
            f"labels updated {self.labels_updated:,}, unmatched {self.clicks_unmatched:,}); "
            f"labels final before {final}; Delta v{self.observations_version} ({self.seconds:.1f}s)"
            + (" [replayed]" if self.replayed else "")
        )


# -- helpers ---------------------------------------------------------------------------------

def _tag(query_id: str, batch_id: int) -> str:
    return f"ctr-stream-ingest {query_id} batch {batch_id}"


def _before_batch(spark: "SparkSession", path: str, tag: str) -> tuple[int | None, bool]:
    """(the version of the table at ``path`` to read for this batch, whether the batch already
    committed to it). A replayed batch reads the version before its own commit; ``None``:
    no table (yet, or created by the batch itself)."""
    from delta.tables import DeltaTable

    if not tables.table_exists(spark, path):
        return None, False
    history = DeltaTable.forPath(spark, path).history(_HISTORY_DEPTH).select("version", "userMetadata").collect()
    for row in history:
        if row.userMetadata == tag:
            return (row.version - 1 if row.version > 0 else None), True
    return int(max(r.version for r in history)), False


def _read_at(spark: "SparkSession", path: str, version: int | None) -> "DataFrame | None":
    if version is None:
        return None
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def _query_id(checkpoint: Path) -> str:
    """The streaming query's id, which its checkpoint keeps across restarts."""
    return str(json.loads((checkpoint / "metadata").read_text().splitlines()[0])["id"])


def _in_list(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(set(values)))


def _to_dt(us: int | None) -> datetime | None:
    return None if us is None else datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


def _us(t: datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


class _DeltaTxn:
    """Session confs that make one DML command (MERGE) idempotent and tagged, for its duration."""

    def __init__(self, spark: "SparkSession", app_id: str, version: int, tag: str):
        self.spark, self.confs = spark, {
            "spark.databricks.delta.write.txnAppId": app_id,
            "spark.databricks.delta.write.txnVersion": str(version),
            "spark.databricks.delta.commitInfo.userMetadata": tag,
        }

    def __enter__(self) -> None:
        for k, v in self.confs.items():
            self.spark.conf.set(k, v)

    def __exit__(self, *exc: Any) -> None:
        for k in self.confs:
            self.spark.conf.unset(k)


def _append(df: "DataFrame", path: str, query_id: str, batch_id: int, tag: str, partition: str | None = None) -> None:
    """Append ``df`` as the batch's commit: Delta skips it when the (query id, batch id) pair
    was committed already (a replayed batch)."""
    writer = df.write.format("delta").mode("append")
    if partition:
        writer = writer.partitionBy(partition)
    writer.option("txnAppId", query_id).option("txnVersion", batch_id).option("userMetadata", tag).save(path)


def _append_once(df: "DataFrame", path: str, query_id: str, batch_id: int, tag: str,
                 partition: str | None = None) -> None:
    """:func:`_append`, retried when it loses a race to create the table (appends never
    conflict otherwise); the txn ids keep a retry from appending twice."""
    tables.retry_conflicts(lambda: _append(df, path, query_id, batch_id, tag, partition), path,
                           f"append of stream batch {batch_id}")


# -- the micro-batch --------------------------------------------------------------------------

class _BatchWriter:
    """The ``foreachBatch`` function: one micro-batch of new log files into the tables."""

    def __init__(self, settings: Settings, options: StreamOptions, checkpoint: Path, verbose: bool):
        self.settings, self.options, self.checkpoint, self.verbose = settings, options, checkpoint, verbose
        self.results: list[BatchResult] = []

    def __call__(self, df: "DataFrame", batch_id: int) -> None:
        from pyspark import StorageLevel

        df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            files = df.select("kind", "source_file").collect()
            if files:
                result = self._process(df, batch_id, files)
                self.results.append(result)
                if self.verbose:
                    print(result.line(), flush=True)
        finally:
            df.unpersist()

    def _process(self, df: "DataFrame", batch_id: int, files: list[Any]) -> BatchResult:
        from pyspark import StorageLevel
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        t0 = time.perf_counter()
        spark = df.sparkSession
        s, opts = self.settings, self.options
        query_id = _query_id(self.checkpoint)
        tag = _tag(query_id, batch_id)
        r = BatchResult(query_id=query_id, batch_id=batch_id,
                        impression_files=sorted(f.source_file for f in files if f.kind == "impressions"),
                        click_files=sorted(f.source_file for f in files if f.kind == "clicks"))
        window_us = int(opts.attribution_window_hours * 3600 * 1e6)
        lateness_us = int(opts.lateness_minutes * 60 * 1e6)
        window_days = math.ceil(opts.attribution_window_hours / 24)
        obs_path, clicks_path = s.table_path(tables.OBSERVATIONS), s.table_path(STREAM_CLICKS.name)
        batches_path = s.table_path(STREAM_BATCHES.name)
        file_date = F.regexp_extract("source_file", _DATE_RE, 1)

        # The tables as they were before this batch (a replay reads what its first attempt read).
        obs_version, obs_done = _before_batch(spark, obs_path, tag)
        clicks_version, clicks_done = _before_batch(spark, clicks_path, tag)
        obs, stored_clicks = _read_at(spark, obs_path, obs_version), _read_at(spark, clicks_path, clicks_version)
        previous_wm_us: int | None = None
        if tables.table_exists(spark, batches_path):
            earlier = (spark.read.format("delta").load(batches_path)
                       .filter(~((F.col("query_id") == query_id) & (F.col("batch_id") >= batch_id))))
            previous_wm_us = _us(tables.first_row(earlier.agg(F.max("click_watermark")))[0])

        parsed = (
            df.filter(F.col("kind") == "impressions").select("source_file", "value")
            .mapInArrow(_parse_impression_files, catalog.PARSED_IMPRESSIONS.ddl())
            .withColumn("date", file_date)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        clicks = (
            df.filter(F.col("kind") == "clicks").select("source_file", "value")
            .mapInArrow(_parse_click_files, catalog.PARSED_CLICKS.ddl())
            .withColumn("date", file_date)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        cached = [parsed, clicks]
        try:
            # Counts by day and outcome, one job per source (both frames are cached).
            imp_counts = parsed.groupBy("date", "ok", "reason").count().collect()
            click_counts = clicks.groupBy("date", "ok").agg(F.count("*").alias("n"),
                                                            F.max("click_us").alias("newest")).collect()
            imp_dates = sorted({row.date for row in imp_counts})
            click_dates = sorted({row.date for row in click_counts})

            # 1. de-duplicate: earliest record within the batch, then against the stored ids.
            rank = Window.partitionBy("impression_id").orderBy("event_us", "source_file", "line_number")
            kept = (parsed.filter("ok").withColumn("_rank", F.row_number().over(rank))
                    .filter("_rank = 1").drop("_rank"))
            if obs is not None and imp_dates:
                horizon = (datetime.fromisoformat(imp_dates[0]) - timedelta(days=1)).date().isoformat()
                kept = kept.join(obs.filter(F.col("date") >= F.lit(horizon).cast("date")).select("impression_id"),
                                 "impression_id", "left_anti")
            kept = kept.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(kept)

            # 2. labels of the new impressions: every click seen so far within the window.
            new_clicks = clicks.filter("ok").select("impression_id", "click_us", "source_file", "line_number",
                                                    F.col("date").alias("click_date"))
            all_clicks = new_clicks.select("impression_id", "click_us")
            if stored_clicks is not None and imp_dates:
                oldest = (datetime.fromisoformat(imp_dates[0]) - timedelta(days=1)).date().isoformat()
                all_clicks = all_clicks.unionByName(
                    stored_clicks.filter(F.col("date") >= F.lit(oldest).cast("date"))
                    .select("impression_id", "click_us"))
            delay = F.col("click_us") - F.col("event_us")
            first_click = (
                all_clicks.join(kept.select("impression_id", "event_us"), "impression_id")
                .filter((delay >= 0) & (delay <= window_us))
                .groupBy("impression_id").agg((F.min(delay) / 1e6).alias("click_delay_s"))
            )
            inserts = (
                kept.join(first_click, "impression_id", "left")
                .select(
                    "impression_id",
                    F.timestamp_micros("event_us").alias("event_time"),
                    F.col("click_delay_s").isNotNull().cast("int").alias("label"),
                    "click_delay_s",
                    *[c for c in catalog.OBSERVATIONS.column_names
                      if c not in ("impression_id", "event_time", "label", "click_delay_s", "date")],
                    F.col("date").cast("date").alias("date"),
                )
                .persist(StorageLevel.MEMORY_AND_DISK)
            )
            cached.append(inserts)

            # 3. the new clicks against every impression they may label: new or stored.
            targets = kept.select("impression_id", "event_us", F.col("date").cast("date").alias("date"),
                                  F.lit(None).cast("double").alias("old_delay_s"), F.lit(True).alias("is_new"))
            if obs is not None and click_dates:
                oldest = (datetime.fromisoformat(click_dates[0]) - timedelta(days=window_days + 1)).date().isoformat()
                targets = targets.unionByName(
                    obs.filter(F.col("date") >= F.lit(oldest).cast("date"))
                    .select("impression_id", F.unix_micros("event_time").alias("event_us"), "date",
                            F.col("click_delay_s").alias("old_delay_s"), F.lit(False).alias("is_new")))
            final_before_us = None if previous_wm_us is None else previous_wm_us - window_us
            within = (delay >= 0) & (delay <= window_us)
            is_final = (F.lit(False) if final_before_us is None
                        else (F.col("event_us") <= F.lit(final_before_us)) & ~F.col("is_new"))
            matched = (
                new_clicks.join(targets, "impression_id", "left")
                .withColumn("_within", F.col("event_us").isNotNull() & within)
                .withColumn("_applies", F.col("_within") & ~is_final)
                .persist(StorageLevel.MEMORY_AND_DISK)
            )
            cached.append(matched)
            per_click = matched.groupBy("source_file", "line_number").agg(
                F.max(F.col("event_us").isNotNull().cast("int")).alias("m"),
                F.max(F.col("_within").cast("int")).alias("w"),
                F.max(F.col("_applies").cast("int")).alias("a"))
            c = tables.first_row(per_click.agg(
                F.count("*").alias("n"), F.sum(1 - F.col("m")).alias("unmatched"),
                F.sum(F.col("a")).alias("attributed"),
                F.sum(F.col("w") - F.col("a")).alias("after_final"),
                F.sum(F.col("m") - F.col("w")).alias("outside")))
            r.clicks_unmatched, r.clicks_attributed = int(c.unmatched or 0), int(c.attributed or 0)
            r.clicks_after_final, r.clicks_outside_window = int(c.after_final or 0), int(c.outside or 0)
            updates = (
                matched.filter(F.col("_applies") & ~F.col("is_new"))
                .groupBy("impression_id", "date")
                .agg((F.min(delay) / 1e6).alias("click_delay_s"), F.first("old_delay_s").alias("old_delay_s"))
                .filter(F.col("old_delay_s").isNull() | (F.col("click_delay_s") < F.col("old_delay_s")))
                .drop("old_delay_s")
                .persist(StorageLevel.MEMORY_AND_DISK)
            )
            cached.append(updates)

            # 4. counts, checked before anything is written.
            for row in imp_counts:
                r.records_read += row["count"]
                if not row.ok:
                    r.quarantine_reasons[row.reason] = r.quarantine_reasons.get(row.reason, 0) + row["count"]
                    r.quarantined += row["count"]
            o = tables.first_row(inserts.agg(F.count("*").alias("n"), F.sum("label").alias("pos")))
            r.observations, r.positives = int(o.n), int(o.pos or 0)
            r.duplicates = r.records_read - r.quarantined - r.observations
            for row in click_counts:
                r.clicks_read += row.n
                r.clicks_quarantined += 0 if row.ok else row.n
            update_dates = {str(row.date): row["count"] for row in updates.groupBy("date").count().collect()}
            r.labels_updated = sum(update_dates.values())
            newest_click = max((row.newest for row in click_counts if row.ok), default=None)
            wm = [w for w in (previous_wm_us, None if newest_click is None else newest_click - lateness_us)
                  if w is not None]
            r.click_watermark = _to_dt(max(wm)) if wm else None
            r.labels_final_before = _to_dt(max(wm) - window_us) if wm else None
            if not r.conserved or r.duplicates < 0:
                raise RuntimeError(f"stream ingest counts do not add up in batch {batch_id}: {r}")

            # 5. writes, each skipped when an earlier attempt of this batch committed it.
            quarantine = (
                parsed.filter(~F.col("ok")).select(F.lit("impressions").alias("source"), "source_file",
                                                    "line_number", "reason", "message", "raw", "date")
                .unionByName(clicks.filter(~F.col("ok")).select(F.lit("clicks").alias("source"), "source_file",
                                                                  "line_number", "reason", "message", "raw", "date"))
                .withColumn("run_id", F.lit(f"stream-{query_id}-{batch_id}"))
                .withColumn("date", F.col("date").cast("date"))
                .select(*catalog.QUARANTINE.column_names)
            )
            # the phases (shared/faults.py) end with the batch id: a fault test kills a given batch
            phase(f"stream.counted.{batch_id}")
            if r.quarantined + r.clicks_quarantined:
                self._append_quarantine(quarantine, query_id, batch_id, tag)
            phase(f"stream.quarantined.{batch_id}")
            if r.clicks_read - r.clicks_quarantined and not clicks_done:
                _append_once(new_clicks.select("impression_id", "click_us", "source_file", "line_number",
                                               F.lit(query_id).alias("query_id"),
                                               F.lit(batch_id).cast("long").alias("batch_id"),
                                               F.col("click_date").cast("date").alias("date")),
                             clicks_path, query_id, batch_id, tag, partition="date")
            phase(f"stream.clicks_written.{batch_id}")
            r.observations_version = self._merge_observations(
                spark, inserts, updates, obs_path, query_id, batch_id, tag, done=obs_done,
                dates=sorted(set(update_dates) | set(imp_dates) if r.observations else set(update_dates)))
            phase(f"stream.merged.{batch_id}")
            r.replayed = r.replayed or obs_done or clicks_done
            r.seconds = time.perf_counter() - t0
            self._record(spark, r, batches_path)
            phase(f"stream.recorded.{batch_id}")
            return r
        finally:
            for frame in cached:
                frame.unpersist()

    def _append_quarantine(self, quarantine: "DataFrame", query_id: str, batch_id: int, tag: str) -> None:
        """Append the batch's malformed lines; Delta skips the append when a replay repeats it."""
        _append_once(quarantine, self.settings.table_path(tables.QUARANTINE), query_id, batch_id, tag,
                     partition="date")

    def _merge_observations(self, spark: "SparkSession", inserts: "DataFrame", updates: "DataFrame", path: str,
                            query_id: str, batch_id: int, tag: str, *, done: bool, dates: list[str]) -> int:
        """Insert the new impressions and update the labels in one commit; the version it committed.

        A batch ingest may replace a day this MERGE reads (``t.date IN dates``: only those
        partitions) between its snapshot and its commit: Delta refuses the commit and it is
        redone (:func:`tables.retry_conflicts`) with the same txn ids, so it still lands once.
        """
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        if done:  # committed by an earlier attempt of this batch: its version
            version = tables.version_tagged(spark, path, tag)
            if version is not None:
                return version
        if not dates:  # nothing to insert or update
            return tables.latest_version(spark, path) if tables.table_exists(spark, path) else -1
        source = (inserts.withColumn("_op", F.lit("insert"))
                  .unionByName(updates.withColumn("_op", F.lit("update")), allowMissingColumns=True))
        cols = catalog.OBSERVATIONS.column_names

        def write() -> None:
            if not tables.table_exists(spark, path):  # created empty ("ignore": a no-op if another writer won)
                spark.createDataFrame([], inserts.schema).write.format("delta").mode("ignore") \
                    .partitionBy("date").save(path)
            with _DeltaTxn(spark, query_id, batch_id, tag):
                (DeltaTable.forPath(spark, path).alias("t")
                 .merge(source.alias("s"), f"t.date IN ({_in_list(dates)}) AND t.date = s.date "
                        "AND t.impression_id = s.impression_id")
                 .whenMatchedUpdate(condition="s._op = 'update' AND (t.click_delay_s IS NULL "
                                              "OR s.click_delay_s < t.click_delay_s)",
                                    set={"label": "1", "click_delay_s": "s.click_delay_s"})
                 .whenNotMatchedInsert(condition="s._op = 'insert'", values={c: f"s.{c}" for c in cols})
                 .execute())

        tables.retry_conflicts(write, path, f"merge of stream batch {batch_id}")
        version = tables.version_tagged(spark, path, tag)
        return tables.latest_version(spark, path) if version is None else version

    def _record(self, spark: "SparkSession", r: BatchResult, path: str) -> None:
        from pyspark.sql import Row

        row = Row(
            query_id=r.query_id, batch_id=r.batch_id, finished_at=datetime.now(timezone.utc),
            seconds=float(r.seconds), impression_files=r.impression_files, click_files=r.click_files,
            attribution_window_hours=float(self.options.attribution_window_hours),
            lateness_minutes=float(self.options.lateness_minutes),
            records_read=r.records_read, observations=r.observations, duplicates=r.duplicates,
            quarantined=r.quarantined, quarantine_reasons=r.quarantine_reasons, positives=r.positives,
            clicks_read=r.clicks_read, clicks_quarantined=r.clicks_quarantined,
            clicks_attributed=r.clicks_attributed, clicks_outside_window=r.clicks_outside_window,
            clicks_after_final=r.clicks_after_final, clicks_unmatched=r.clicks_unmatched,
            labels_updated=r.labels_updated, click_watermark=r.click_watermark,
            labels_final_before=r.labels_final_before, observations_version=r.observations_version,
        )
        _append_once(spark.createDataFrame([row], STREAM_BATCHES.spark_schema()), path, r.query_id, r.batch_id,
                     _tag(r.query_id, r.batch_id))


# -- the query ----------------------------------------------------------------------------------

def _source(spark: "SparkSession", folder: Path, kind: str, max_files: int | None) -> "DataFrame":
    from pyspark.sql import functions as F

    folder.mkdir(parents=True, exist_ok=True)
    reader = (spark.readStream.format("text").option("wholetext", "true")
              .option("recursiveFileLookup", "true").option("pathGlobFilter", _FILE_GLOB))
    if max_files:
        reader = reader.option("maxFilesPerTrigger", str(max_files))
    return reader.load(str(folder)).select(F.lit(kind).alias("kind"),
                                           F.col("_metadata.file_path").alias("source_file"), "value")


@dataclass
class StreamRun:
    """What a :func:`run_stream` call did: the micro-batches it processed."""

    query_id: str
    checkpoint: str
    batches: list[BatchResult]
    seconds: float

    def total(self, name: str) -> int:
        """The sum of one count over the batches."""
        return int(sum(getattr(b, name) for b in self.batches))


def start_stream(spark: "SparkSession", settings: Settings, options: StreamOptions | None = None,
                 raw_dir: Path | None = None, checkpoint: Path | None = None,
                 verbose: bool = False) -> tuple["StreamingQuery", _BatchWriter]:
    """Start the streaming ingest query (``options.once``: availableNow, else every
    ``trigger_seconds``); returns the query and its batch writer (whose ``results`` fill in)."""
    options = options or StreamOptions()
    raw = Path(raw_dir or settings.raw_dir)
    checkpoint = Path(checkpoint or checkpoint_dir(settings))
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    source = (_source(spark, raw / "impressions", "impressions", options.max_files_per_trigger)
              .unionByName(_source(spark, raw / "clicks", "clicks", options.max_files_per_trigger)))
    writer = _BatchWriter(settings, options, checkpoint, verbose)
    stream = source.writeStream.foreachBatch(writer).option("checkpointLocation", str(checkpoint)) \
        .queryName("ctr_ingest_stream")
    stream = stream.trigger(availableNow=True) if options.once \
        else stream.trigger(processingTime=f"{max(1, int(options.trigger_seconds * 1000))} milliseconds")
    return stream.start(), writer


def run_stream(spark: "SparkSession", settings: Settings, options: StreamOptions | None = None,
               raw_dir: Path | None = None, checkpoint: Path | None = None, verbose: bool = False,
               timeout_seconds: float | None = None) -> StreamRun:
    """Run the streaming ingest: with ``options.once`` until the files there now are ingested,
    else until interrupted (Ctrl-C stops it between micro-batches) or ``timeout_seconds``."""
    t0 = time.perf_counter()
    query, writer = start_stream(spark, settings, options, raw_dir, checkpoint, verbose)
    try:
        if timeout_seconds is None:
            query.awaitTermination()
        else:
            query.awaitTermination(int(math.ceil(timeout_seconds)))
    except KeyboardInterrupt:
        pass
    finally:
        if query.isActive:
            query.stop()
    error = query.exception()
    if error is not None:
        raise RuntimeError(f"streaming ingest failed: {error}")
    return StreamRun(query_id=str(query.id), checkpoint=str(checkpoint or checkpoint_dir(settings)),
                     batches=writer.results, seconds=time.perf_counter() - t0)


def labels_final_before(spark: "SparkSession", settings: Settings) -> datetime | None:
    """The time before which every streamed observation's label is final (``event_time`` <= it):
    the newest click watermark minus the attribution window; None before any click."""
    from pyspark.sql import functions as F

    path = settings.table_path(STREAM_BATCHES.name)
    if not tables.table_exists(spark, path):
        return None
    t = tables.first_row(spark.read.format("delta").load(path).agg(F.max("labels_final_before")))[0]
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=timezone.utc))
