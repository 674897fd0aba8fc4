"""Reading a warehouse window into Arrow: delta-rs (``read_window_arrow``, no Spark) beside
Spark (``read_window`` + ``to_arrow``), on a table that already exists.

    CTR_HOME=/path/to/ctr_home .venv/bin/python benchmarks/bench_read.py --start 2014-01-01 --end 2014-01-04

Both read the same pinned Delta version (the latest unless ``--version``) and columns
(all unless ``--columns``). After ``--warmup`` untimed reads, each is timed ``--repeats`` times, alternating, and the
medians are printed with the rows read and the ratio Spark / delta-rs. Spark's start-up
(``get_spark``) is not part of its reads; it is printed on a line of its own. Without
``--start``/``--end`` the window is every date partition of the table at that version.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date, timedelta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", help="data root (default: CTR_HOME, else ./ctr_home)")
    ap.add_argument("--table", default="criteo_observations")
    ap.add_argument("--start", type=date.fromisoformat, help="first day of the window (ISO date)")
    ap.add_argument("--end", type=date.fromisoformat, help="day after the window (exclusive)")
    ap.add_argument("--columns", help="comma-separated columns (default: all)")
    ap.add_argument("--version", type=int, help="Delta version (default: the latest)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed reads of each first (JIT, caches)")
    ap.add_argument("--master", help="Spark master (default: the settings' CTR_SPARK_MASTER)")
    args = ap.parse_args()

    from feature_store.arrow_reader import open_version, read_window_arrow
    from feature_store.reader import Window, read_window, to_arrow
    from shared.config import load_settings
    from shared.spark import get_spark

    settings = load_settings({"home": args.home, "spark_master": args.master})
    path = settings.table_path(args.table)
    dt = open_version(path, args.version)
    version = dt.version()
    if args.start is None or args.end is None:
        days = sorted(date.fromisoformat(p["date"]) for p in dt.partitions())
        if not days:
            raise SystemExit(f"{path} v{version} has no date partitions")
        window = Window(args.start or days[0], args.end or days[-1] + timedelta(days=1))
    else:
        window = Window(args.start, args.end)
    columns = [c for c in args.columns.split(",") if c] if args.columns else None
    print(f"{args.table} v{version} window {window} columns {','.join(columns) if columns else 'all'}")

    t = time.perf_counter()
    spark = get_spark(settings, "bench-read", ui=False)
    print(f"spark start: {time.perf_counter() - t:.2f}s (not in the times below)")

    def spark_read():
        df, _ = read_window(spark, settings, window, columns, table=args.table, version=version)
        return to_arrow(df)

    def delta_rs_read():
        return read_window_arrow(settings, window, columns, table=args.table, version=version)[0]

    for _ in range(args.warmup):
        spark_read(), delta_rs_read()
    times: dict[str, list[float]] = {"spark": [], "delta-rs": []}
    rows: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, read in (("delta-rs", delta_rs_read), ("spark", spark_read)):
            t = time.perf_counter()
            frame = read()
            times[name].append(time.perf_counter() - t)
            rows[name] = frame.num_rows
            del frame
    if rows["spark"] != rows["delta-rs"]:
        raise SystemExit(f"row counts differ: {rows}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in ("spark", "delta-rs"):
        print(f"{name:9s} {rows[name]:>12,} rows  median {med[name]:8.3f}s  "
              f"({', '.join(f'{x:.3f}' for x in times[name])})  {rows[name] / med[name]:>14,.0f} rows/s")
    print(f"ratio spark / delta-rs: {med['spark'] / med['delta-rs']:.1f}x")
    spark.stop()


if __name__ == "__main__":
    main()
