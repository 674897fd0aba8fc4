"""Featurization throughput: batch, single-record and Spark paths (prints figures).

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_featurize.py [--rows 1000000]

The batch and record paths are single-threaded Python/numpy; pin them to one core with
``taskset`` (and ``OMP_NUM_THREADS=1`` so no BLAS pool spins) for one-core figures.
The Spark figure uses ``local[2]`` and its own JVM / Python workers: run it unpinned
(``--spark`` only, or everything without taskset) to give it both cores.
Figures are medians over ``--repeats`` runs. Not a test: nothing here asserts a speed.
``--spark-master`` sets the Spark path's master (default ``local[2]``; ``local[1]`` for a
one-core figure).

``--warehouse HOME`` (with ``--only warehouse``, or beside the others) featurizes real
observation rows of a data root's warehouse (``ctr generate`` + ``ctr ingest``) with the
shipped ``generated`` spec, as ``ctr train`` reads them (``read_window_arrow``, at most
``--rows`` rows): the batch path (``Featurizer.transform`` of the Arrow table, this process:
wall and CPU; a new featurizer per run, as a training job starts with empty caches, and again
with caches warmed by the same rows) and the Spark path (``featurize_spark`` on a cached DataFrame of the same rows,
noop sink, on ``--spark-master``: wall and the CPU seconds of the whole process tree, JVM
and Python workers included). The per-core figures of ``docs/capacity.md``:

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_featurize.py --only warehouse \
        --warehouse /tmp/cap --rows 400000 --spark-master 'local[1]'
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.featurize import Featurizer, load_spec  # noqa: E402
from shared.processes import tree_cpu_seconds  # noqa: E402

#: Distinct values of c1..c26 in the full Criteo Kaggle training set (45.8M rows).
CRITEO_CARDINALITY = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
                      3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
#: Share of missing values per categorical column (roughly Criteo's).
CRITEO_MISSING = (0, 0, 0.03, 0.03, 0, 0.12, 0, 0, 0, 0, 0, 0.03, 0, 0, 0, 0.03, 0, 0, 0.44, 0.44,
                  0.03, 0.76, 0, 0.44, 0.44, 0.44)
#: Share of missing values per integer column, and whether it goes negative (i2 does).
INT_MISSING = (0.45, 0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22)


def criteo_like(n: int, seed: int = 0):
    """A pyarrow Table shaped like Criteo observations: i1..i13 int64 with nulls, c1..c26
    8-hex-digit strings with nulls; values log-uniform over the real cardinalities, so
    the head repeats and the tail is mostly unique, as in the real logs."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    for i, miss in enumerate(INT_MISSING, start=1):
        x = np.floor(np.exp(rng.normal(1.5, 2.0, n))).astype(np.int64)
        if i == 2:
            x -= 3
        cols[f"i{i}"] = pa.array(x, mask=rng.random(n) < miss)
    for i, (card, miss) in enumerate(zip(CRITEO_CARDINALITY, CRITEO_MISSING), start=1):
        rank = np.floor(card ** rng.random(n)).astype(np.int64)
        ids, codes = np.unique(rank, return_inverse=True)
        hexes = pa.array([f"{(int(r) * 2654435761 + i) & 0xFFFFFFFF:08x}" for r in ids])
        col = hexes.take(pa.array(codes))
        cols[f"c{i}"] = pa.array(col.to_numpy(zero_copy_only=False), mask=rng.random(n) < miss,
                                 type=pa.string())
    return pa.table(cols)


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds (this process) of ``repeats`` calls. On a
    shared machine the CPU figure is the one-core cost; wall includes waiting for a core."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def rate(n: int, times: tuple[float, float]) -> str:
    wall, cpu = times
    return f"{n / wall:10,.0f} rows/s wall ({wall:.2f} s), {n / cpu:10,.0f} rows/s CPU ({cpu:.2f} s)"


def bench_batch(table, repeats: int) -> None:
    fz = Featurizer("criteo")
    n = table.num_rows
    uniques = sum(len(table.column(c).unique()) for c in table.column_names if c.startswith("c"))
    print(f"batch, criteo spec (2^{fz.spec.bits}), {n:,} rows, {uniques:,} distinct categorical values")
    print(f"  pyarrow Table (int64 + string columns): {rate(n, median_time(lambda: fz.transform(table), repeats))}")
    df = table.to_pandas()  # i-columns float64 with NaN, c-columns object: as pd.read_csv gives
    print(f"  pandas DataFrame (float64 + object)    : {rate(n, median_time(lambda: fz.transform(df), repeats))}")
    m = fz.transform(table)
    print(f"  output: csr {m.shape}, nnz {m.nnz:,} ({m.nnz / n:.2f} per row), {m.dtype}")


def bench_record(table, repeats: int) -> None:
    fz = Featurizer("criteo")
    records = table.slice(0, 20000).to_pylist()
    for r in records[:2000]:  # warm the per-field caches as a running bidder would be
        fz.transform_record(r)
    lat = []
    for _ in range(repeats):
        for r in records:
            t = time.perf_counter_ns()
            fz.transform_record(r)
            lat.append(time.perf_counter_ns() - t)
    cold = Featurizer("criteo", cache_size=0)
    lat_cold = []
    for r in records[:5000]:
        t = time.perf_counter_ns()
        cold.transform_record(r)
        lat_cold.append(time.perf_counter_ns() - t)
    q = lambda xs, p: np.percentile(np.array(xs) / 1000, p)  # noqa: E731
    print(f"single record, criteo spec (39 fields), {len(lat):,} calls")
    print(f"  cached   : median {q(lat, 50):6.1f} us   p99 {q(lat, 99):6.1f} us")
    print(f"  no cache : median {q(lat_cold, 50):6.1f} us   p99 {q(lat_cold, 99):6.1f} us")


def bench_generated(repeats: int, n: int) -> None:
    """The generated-OpenRTB spec: multivalued segments, buckets and three crosses."""
    from shared.featurize.golden import random_records, typed_table
    from shared.openrtb import RAW_FIELDS

    spec = load_spec("generated")
    fz = Featurizer(spec)
    kinds = {"string": "str", "long": "int", "double": "float", "array<string>": "list<str>"}
    types = {f.name: kinds[f.dtype] for f in RAW_FIELDS if f.name in spec.input_columns}
    records = random_records(spec, n, seed=1, edge_rate=0.0, null_rate=0.03, types=types)
    table = typed_table(spec, records)
    print(f"batch, generated spec (multivalued + buckets + 3 crosses), {n:,} rows: "
          f"{rate(n, median_time(lambda: fz.transform(table), repeats))}")
    lat = []
    for r in records[:20000]:
        s = time.perf_counter_ns()
        fz.transform_record(r)
        lat.append(time.perf_counter_ns() - s)
    print(f"  record path: median {np.median(lat) / 1000:.1f} us   p99 {np.percentile(lat, 99) / 1000:.1f} us")




def bench_warehouse(home: str, rows: int, repeats: int, master: str, paths: set[str]) -> None:
    """The generated spec on a warehouse's observation rows: batch path and Spark path."""
    import tempfile
    from datetime import date, timedelta

    import pyarrow.parquet as pq

    from feature_store.arrow_reader import open_version, read_window_arrow
    from feature_store.reader import Window
    from shared.config import load_settings

    settings = load_settings({"home": home, "spark_master": master}, env={})
    spec = load_spec("generated")
    dt = open_version(settings.table_path("observations"), None)
    days = sorted(date.fromisoformat(p["date"]) for p in dt.partitions())
    table, info = read_window_arrow(settings, Window(days[0], days[-1] + timedelta(days=1)),
                                    sorted({*spec.input_columns, "label"}))
    table = table.slice(0, rows)
    n = table.num_rows
    print(f"warehouse {home} observations v{info.version}, {n:,} rows, generated spec (2^{spec.bits})")
    if "batch" in paths:
        Featurizer(spec).transform(table.slice(0, 1000))  # imports, compiled code
        # a new Featurizer each time, as each ctr train job has: its caches start empty
        print(f"  batch path (ctr train), new featurizer: "
              f"{rate(n, median_time(lambda: Featurizer(spec).transform(table), repeats))}")
        fz = Featurizer(spec)
        fz.transform(table)
        print(f"  batch path, caches warm from a first transform of the same rows: "
              f"{rate(n, median_time(lambda: fz.transform(table), repeats))}")
        m = fz.transform(table)
        print(f"  output: csr {m.shape}, nnz {m.nnz:,} ({m.nnz / n:.2f} per row)")
    if "spark" not in paths:
        return
    from shared.featurize.spark import featurize_spark
    from shared.spark import get_spark

    scratch = Path(tempfile.mkdtemp(prefix="bench_featurize_wh_"))
    spark = get_spark(load_settings({"home": str(scratch), "spark_master": master}, env={}),
                      app_name="bench-featurize", ui=False)
    path = str(scratch / "observations.parquet")
    pq.write_table(table, path, row_group_size=1 << 17)
    df = spark.read.parquet(path).repartition(4).cache()
    df.count()

    def run():
        featurize_spark(df, spec, keep=["label"]).write.format("noop").mode("overwrite").save()

    run()  # warm the Python workers
    me = os.getpid()
    wall, cpu = [], []
    for _ in range(max(3, repeats)):
        c, t = tree_cpu_seconds(me), time.perf_counter()
        run()
        wall.append(time.perf_counter() - t)
        cpu.append(tree_cpu_seconds(me) - c)
    w, c = statistics.median(wall), statistics.median(cpu)
    print(f"  spark path {master} (cached DataFrame, noop sink): {n / w:10,.0f} rows/s wall ({w:.2f} s; runs "
          f"{', '.join(f'{x:.2f}' for x in wall)}), {n / c:10,.0f} rows/CPU-s of the process tree "
          f"({c:.2f} s; runs {', '.join(f'{x:.2f}' for x in cpu)}); load average {os.getloadavg()[0]:.2f}")
    spark.stop()


def bench_spark(table, repeats: int, master: str = "local[2]") -> None:
    from shared.config import load_settings
    from shared.featurize.spark import featurize_spark
    from shared.spark import get_spark

    import tempfile

    home = Path(tempfile.mkdtemp(prefix="bench_featurize_"))
    spark = get_spark(load_settings({"home": str(home), "spark_master": master}, env={}),
                      app_name="bench-featurize", ui=False)
    path = str(home / "criteo.parquet")
    import pyarrow.parquet as pq

    pq.write_table(table, path, row_group_size=1 << 17)
    df = spark.read.parquet(path).repartition(4).cache()
    n = df.count()
    spec = load_spec("criteo")

    def run():
        out = featurize_spark(df, spec)
        out.write.format("noop").mode("overwrite").save()

    run()  # warm the Python workers
    wall, _ = median_time(run, repeats)
    print(f"spark {master}, criteo spec, {n:,} rows (cached DataFrame, noop sink): "
          f"{n / wall:10,.0f} rows/s wall ({wall:.2f} s)")
    spark.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=["batch", "record", "generated", "spark", "warehouse"], action="append")
    ap.add_argument("--spark-master", default="local[2]", help="master of the Spark path (default local[2])")
    ap.add_argument("--warehouse", help="data root whose observation rows to featurize with the generated spec")
    ap.add_argument("--warehouse-paths", default="batch,spark", help="with --warehouse: batch, spark or both")
    args = ap.parse_args()
    only = set(args.only or ["batch", "record", "generated", "spark"] + (["warehouse"] if args.warehouse else []))
    if "warehouse" in only and not args.warehouse:
        ap.error("--only warehouse needs --warehouse HOME")
    aff = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    print(f"cores available to this process: {len(aff) if aff else '?'}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    if "warehouse" in only:
        bench_warehouse(args.warehouse, args.rows, args.repeats, args.spark_master,
                        set(args.warehouse_paths.split(",")))
    if not only & {"batch", "record", "generated", "spark"}:
        return
    t = time.perf_counter()
    table = criteo_like(args.rows)
    print(f"generated {args.rows:,} Criteo-shaped rows in {time.perf_counter() - t:.1f} s")
    if "batch" in only:
        bench_batch(table, args.repeats)
    if "record" in only:
        bench_record(table, args.repeats)
    if "generated" in only:
        bench_generated(args.repeats, min(args.rows, 200_000))
    if "spark" in only:
        bench_spark(table, max(3, args.repeats // 2), args.spark_master)


if __name__ == "__main__":
    main()
