"""Ingest throughput beside a plain Spark JSON -> Parquet copy of the same files, and the
time to read a window into Arrow.

    .venv/bin/python benchmarks/bench_ingest.py --impressions 1000000 --repeats 3

Generates the logs once (deterministic), then per repeat: (a) the plain copy
``spark.read.json(files).write.parquet(...)`` and (b) the full ingest (parse + map,
dedup, label join, quarantine, Delta commit) of the same files, on ``local[2]``.
Prints the medians and the ratio ingest/plain (the figure the target is set on:
>= 0.5). Then reads a window of the warehouse into Arrow (``DataFrame.toArrow``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impressions", type=int, default=1_000_000, help="total impressions (split over --days)")
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--workdir", type=Path, help="keep data here (default: a temp dir, removed)")
    args = ap.parse_args()

    from feature_store.ingest import day_files, ingest_range
    from feature_store.reader import Window, read_window, to_arrow
    from shared.config import load_settings
    from shared.spark import get_spark
    from synthetic.config import GeneratorConfig
    from synthetic.logs import generate_logs

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    settings = load_settings({"home": str(work), "spark_master": args.master})
    start = date(2026, 11, 1)
    end = start + timedelta(days=args.days - 1)
    cfg = GeneratorConfig(start_date=start, days=args.days, impressions_per_day=args.impressions // args.days, seed=1)
    if not (settings.raw_dir / "manifest.json").exists():
        t = time.perf_counter()
        s = generate_logs(cfg, settings.raw_dir, overwrite=True)
        print(f"generated {s.impressions:,} impressions ({s.bytes_written / 1e9:.2f} GB) in {time.perf_counter() - t:.1f}s")
    files = [f for k in range(args.days) for f in day_files(settings.raw_dir, "impressions", start + timedelta(days=k))]
    spark = get_spark(settings, "bench-ingest", ui=False)

    plain, full, rows = [], [], 0
    for i in range(args.repeats):
        out = work / "plain.parquet"
        t = time.perf_counter()
        spark.read.json(files).write.mode("overwrite").parquet(str(out))
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        results = ingest_range(spark, settings, start, end)
        full.append(time.perf_counter() - t)
        rows = sum(r.records_read for r in results)
        print(f"repeat {i + 1}: plain copy {plain[-1]:.1f}s, ingest {full[-1]:.1f}s", flush=True)
    p, f = statistics.median(plain), statistics.median(full)
    print(f"\nrecords {rows:,} on {args.master}, median of {args.repeats}:")
    print(f"  plain read-JSON/write-Parquet  {rows / p:10,.0f} rows/s  ({p:.1f}s)")
    print(f"  full ingest                    {rows / f:10,.0f} rows/s  ({f:.1f}s)")
    print(f"  ratio ingest/plain             {p / f:10.2f}  (target >= 0.5)")

    reads = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        df, info = read_window(spark, settings, Window(start, end + timedelta(days=1)))
        table = to_arrow(df)
        reads.append(time.perf_counter() - t)
    print(f"  window read into Arrow         {table.num_rows:,} rows x {table.num_columns} columns: "
          f"median {statistics.median(reads):.1f}s (Delta v{info.version})")
    spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
