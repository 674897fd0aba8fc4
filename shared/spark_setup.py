"""``python -m shared.spark_setup``: resolve Delta's jars and write the driver's class archive.

Run once per installation by ``make install``. It starts a driver with
``-XX:ArchiveClassesAtExit``, runs a small Spark + Delta job touching what the platform's jobs
use (whole-text files with their path, Arrow Python functions, windows, joins, partition
replacing writes, MERGE, time travel, history, a streaming query, collection to Arrow and
pandas), stops the JVM and, once it has exited and written the archive, moves the archive into
place in one rename: a concurrent start sees no archive or a whole one. An archive already in
place is kept unless ``--force`` (which removes it first: the dumping driver must not map one). Why: :mod:`shared.class_archive`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from shared.class_archive import archive_path
from shared.config import Settings, load_settings
from shared.errors import ConfigurationError
from shared.limits import read_tail
from shared.spark import SparkStartError, delta_setting, get_spark

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

#: Seconds to wait for the JVM to write its archive and exit.
EXIT_TIMEOUT_S = 600


def _parse(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
    import pyarrow as pa

    for batch in batches:
        ids, values, paths = [], [], []
        for path, text in zip(batch.column("path").to_pylist(), batch.column("value").to_pylist()):
            for line in text.splitlines():
                key, _, value = line.partition(",")
                ids.append(key)
                values.append(float(value or 0))
                paths.append(path)
        yield pa.RecordBatch.from_pydict({"id": ids, "v": values, "path": paths})


def exercise(spark: "SparkSession", root: Path) -> int:
    """The warm-up job under ``root``; returns the rows of its final table (a check it ran)."""
    from delta.tables import DeltaTable
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    for day in ("2026-01-01", "2026-01-02"):
        folder = root / "raw" / f"date={day}"
        folder.mkdir(parents=True)
        (folder / "a.csv").write_text("".join(f"k{i % 7},{i}\n" for i in range(40)))
    parsed = (spark.read.text(str(root / "raw" / "date=*"), wholetext=True)
              .select(F.col("_metadata.file_path").alias("path"), "value")
              .mapInArrow(_parse, "id string, v double, path string")
              .withColumn("date", F.regexp_extract("path", r"date=(\d{4}-\d{2}-\d{2})", 1)))
    first = (parsed.withColumn("r", F.row_number().over(Window.partitionBy("id", "date").orderBy("v")))
             .filter("r = 1").drop("r"))
    totals = parsed.groupBy("id").agg(F.sum("v").alias("total"), F.count("*").alias("n"))
    rows = first.join(totals, "id", "left").withColumn("date", F.col("date").cast("date"))
    path = str(root / "table")
    rows.write.format("delta").partitionBy("date").mode("overwrite").save(path)
    (rows.filter("date = '2026-01-02'").write.format("delta").mode("overwrite")
     .option("replaceWhere", "date = '2026-01-02'").save(path))
    updates = spark.createDataFrame(rows.limit(5).toPandas()).withColumn("v", F.col("v") + 1)
    (DeltaTable.forPath(spark, path).alias("t").merge(updates.alias("u"), "t.id = u.id AND t.date = u.date")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    spark.read.format("delta").option("versionAsOf", 0).load(path).groupBy("date").count().collect()
    DeltaTable.forPath(spark, path).history().collect()
    (spark.readStream.format("delta").load(path).writeStream.trigger(availableNow=True)
     .option("checkpointLocation", str(root / "checkpoint"))
     .foreachBatch(lambda batch, _: batch.write.format("delta").mode("append").save(str(root / "copy")))
     .start().awaitTermination())
    return int(spark.read.format("delta").load(path).toArrow().num_rows)


def _exit_jvm() -> None:
    """Stop the gateway's JVM the way it stops on its own (EOF on its stdin) and wait for it:
    a dynamic class archive is written at the JVM's normal exit."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = gateway.proc
    gateway.shutdown()
    SparkContext._gateway = SparkContext._jvm = None
    if proc is not None:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=EXIT_TIMEOUT_S)


def build(settings: Settings, force: bool = False) -> tuple[Path, float]:
    """Write this installation's archive (kept if present and not ``force``); its path and the
    seconds taken (0 when kept)."""
    final = archive_path(delta_setting(settings))
    if final.is_file() and not force:
        return final, 0.0
    final.unlink(missing_ok=True)  # a driver dumping an archive must not map one
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctr-class-archive-") as scratch:
        root = Path(scratch)
        spark = get_spark(dataclasses.replace(settings, home=root), app_name="ctr-class-archive", ui=False,
                          extra_java_options=f"-XX:ArchiveClassesAtExit={tmp}")
        try:
            exercise(spark, root)
            spark.stop()
        finally:
            _exit_jvm()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            log = root / "logs" / "spark.log"
            tail = read_tail(log, 2000) if log.exists() else ""
            raise SparkStartError(f"the JVM wrote no class archive at {tmp}; the end of its output:\n{tail}")
    os.replace(tmp, final)
    return final, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.spark_setup", description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rewrite the archive even if one is in place")
    args = ap.parse_args(argv)
    try:
        path, seconds = build(load_settings(), force=args.force)
    except ConfigurationError as exc:
        print(f"spark setup: {exc}", file=sys.stderr)
        return 2
    print(f"spark driver class archive: {path}" + (f" (written in {seconds:.0f}s)" if seconds else " (kept)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
