"""Ingest throughput beside a plain Spark JSON -> Parquet copy of the same files, and the
time to read a window into Arrow.

    .venv/bin/python benchmarks/bench_ingest.py --impressions 1000000 --repeats 3

Generates the logs once (deterministic), then per repeat: (a) the plain copy
``spark.read.json(files).write.parquet(...)`` and (b) the full ingest (parse + map,
dedup, label join, quarantine, Delta commit) of the same files, on ``local[2]``.
Prints the medians and the ratio ingest/plain (the figure the target is set on:
>= 0.5). Then reads a window of the warehouse into Arrow (``DataFrame.toArrow``).

``--cpu-time`` also prints, per repeat and as medians, the CPU seconds (user + system) of the
whole process tree (this driver, its JVM and the JVM's Python workers, from /proc) spent in
each phase, and rows per CPU-second: a per-core figure that waiting for a core on a shared
machine does not lower (``docs/capacity.md``). ``--skip-plain`` leaves out the plain copy.

    .venv/bin/python benchmarks/bench_ingest.py --impressions 400000 --master 'local[1]' --cpu-time --skip-plain
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from shared.processes import tree_cpu_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impressions", type=int, default=1_000_000, help="total impressions (split over --days)")
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--workdir", type=Path, help="keep data here (default: a temp dir, removed)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="also print the process tree's CPU seconds per phase and rows per CPU-second")
    ap.add_argument("--skip-plain", action="store_true", help="time only the full ingest, not the plain copy")
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

    me = os.getpid()
    plain, full, rows = [], [], 0
    plain_cpu, full_cpu = [], []
    for i in range(args.repeats):
        if not args.skip_plain:
            out = work / "plain.parquet"
            c, t = tree_cpu_seconds(me), time.perf_counter()
            spark.read.json(files).write.mode("overwrite").parquet(str(out))
            plain.append(time.perf_counter() - t)
            plain_cpu.append(tree_cpu_seconds(me) - c)
        c, t = tree_cpu_seconds(me), time.perf_counter()
        results = ingest_range(spark, settings, start, end)
        full.append(time.perf_counter() - t)
        full_cpu.append(tree_cpu_seconds(me) - c)
        rows = sum(r.records_read for r in results)
        line = f"repeat {i + 1}: " + ("" if args.skip_plain else f"plain copy {plain[-1]:.1f}s, ")
        line += f"ingest {full[-1]:.1f}s"
        if args.cpu_time:
            line += (" (CPU s: " + ("" if args.skip_plain else f"plain {plain_cpu[-1]:.1f}, ")
                     + f"ingest {full_cpu[-1]:.1f}; load average {os.getloadavg()[0]:.2f})")
        print(line, flush=True)
    f = statistics.median(full)
    print(f"\nrecords {rows:,} on {args.master}, median of {args.repeats}:")
    if not args.skip_plain:
        p = statistics.median(plain)
        print(f"  plain read-JSON/write-Parquet  {rows / p:10,.0f} rows/s  ({p:.1f}s)")
    print(f"  full ingest                    {rows / f:10,.0f} rows/s  ({f:.1f}s)")
    if not args.skip_plain:
        print(f"  ratio ingest/plain             {p / f:10.2f}  (target >= 0.5)")
    if args.cpu_time:
        fc = statistics.median(full_cpu)
        if not args.skip_plain:
            pc = statistics.median(plain_cpu)
            print(f"  plain copy, per CPU-second     {rows / pc:10,.0f} rows/CPU-s  ({pc:.1f} CPU s; runs "
                  f"{', '.join(f'{x:.1f}' for x in plain_cpu)})")
        print(f"  full ingest, per CPU-second    {rows / fc:10,.0f} rows/CPU-s  ({fc:.1f} CPU s; runs "
              f"{', '.join(f'{x:.1f}' for x in full_cpu)}; wall runs {', '.join(f'{x:.1f}' for x in full)})")

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
