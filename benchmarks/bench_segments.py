"""Per-segment model throughput: Spark (segments packed into buckets, one task per bucket)
vs a sequential loop, same run.

    .venv/bin/python benchmarks/bench_segments.py --segments 1000 --rows 300 --repeats 3

Builds featurized rows for ``--segments`` segments (``--rows`` rows each, 80 % train,
10 % validation, 10 % test; 12 one-hot hashed fields from a per-segment logistic truth,
2**18 columns), as the shared Spark featurizer hands them over (``_segment``, ``_split``,
``label``, ``indices``, ``values``). Then, in one process:

* **Spark**: :func:`training.segments.fit_segments` end to end, as ``ctr train
  --per-segment`` runs it without ``--run-id`` (a run id the job made up: one Spark job
  shuffles the rows into buckets with ``repartitionById``, fits each bucket's segments one
  after the other in a ``mapInArrow`` task and appends the rows to the ``segment_models``
  Delta table; ``--given-run-id`` measures the resumable path, which reads the table first
  and appends with Delta's idempotent-write pair); a new run id each time, so every segment
  is fitted again;
* **bare loop**: the same per-segment computation on the driver
  (:func:`training.segment_rows.rows_from_arrow` over all rows, then
  :func:`training.segment_fit.fit_segment_rows` segment after segment), the rows already in
  driver memory as Arrow (no collect, no table: a lower bound for a loop);
* **collect + loop**: the bare loop plus collecting the rows from Spark (``toArrow``), where a
  one-machine loop over warehouse data starts;
* **sequential job**: the Spark job's work done sequentially on the driver: read the run's
  rows from the table, collect, loop, append the results to the table.

A first Spark run starts the Python workers and is reported apart ("cold"); then
``--repeats`` rounds each run Spark once and the loop once (interleaved, so load from other
processes falls on both), and the medians give models per second and the speed-up. The
weights of the last Spark run (read back from the table) are checked to be identical to the
loop's, segment by segment. ``--grid 2`` adds setting selection on validation (two values
of C) to both sides; ``--pandas-loop`` also times the old-style loop (a pandas groupby and
:func:`training.segment_fit.fit_segment` per group) once.

Figures measured with it, and what they mean for the fan-out: ``docs/segments.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.config import load_settings
from shared.spark import get_spark
from training.distributed import SparseWeights, normalize_setting
from training.segment_fit import fit_segment, fit_segment_rows, validate_segment_setting
from training.segment_rows import rows_from_arrow
from training.segment_table import SEGMENT_TABLE, append_new_rows, arrow_batch, fit_schema, read_segment_rows
from training.segments import fit_segments

FIELDS, VOCAB, BITS = 12, 30, 18


def synthetic_rows(segments: int, rows: int, seed: int = 0):
    """A pandas frame of featurized rows for ``segments`` segments."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = segments * rows
    seg = np.repeat(np.arange(segments), rows)
    values = rng.integers(0, VOCAB, size=(n, FIELDS))
    cols = (np.arange(FIELDS)[None, :] * 7919 * VOCAB + values * 104729) % (1 << BITS)
    w_field = rng.normal(0, 0.5, size=(FIELDS, VOCAB))
    w_seg = rng.normal(0, 0.5, size=(segments, VOCAB))  # each segment reacts to field 0 its own way
    logit = -2.5 + w_field[np.arange(FIELDS)[None, :], values].sum(axis=1) + w_seg[seg, values[:, 0]]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    pos = np.tile(np.arange(rows), segments)
    split = np.where(pos < 0.8 * rows, "train", np.where(pos < 0.9 * rows, "validation", "test"))
    order = np.sort(cols, axis=1).astype(np.int32)
    return pd.DataFrame({
        "_segment": [f"seg-{s:05d}" for s in seg], "_split": split, "label": y,
        "indices": list(order), "values": list(np.ones((n, FIELDS), dtype=np.float32)),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=300, help="rows per segment")
    ap.add_argument("--grid", type=int, choices=(1, 2), default=1, help="settings per segment (2: C in 0.3, 3)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (after one cold Spark run)")
    ap.add_argument("--partitions", type=int, help="Spark tasks (buckets); default: fit_segments' own")
    ap.add_argument("--pandas-loop", action="store_true", help="also time the pandas groupby + fit_segment loop once")
    ap.add_argument("--given-run-id", action="store_true",
                    help="Spark as with `ctr train --run-id`: read the table first, idempotent append "
                         "(default: a run id made up by the job, as without --run-id)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--workdir", type=Path, help="data root (default: a temp dir, removed at the end)")
    args = ap.parse_args()

    import pyarrow as pa

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench-segments-")
    home = args.workdir or Path(tmp.name)
    settings = load_settings({"home": str(home), "spark_master": args.master}, env={})
    spark = get_spark(settings, "bench-segments", ui=False)
    grid = [{"C": 1.0}] if args.grid == 1 else [{"C": 0.3}, {"C": 3.0}]
    settings_list = [normalize_setting(s) for s in grid]
    pdf = synthetic_rows(args.segments, args.rows)
    load_start = os.getloadavg()[0]
    print(f"{args.segments:,} segments x {args.rows} rows = {len(pdf):,} rows, {FIELDS} features per row, "
          f"grid of {len(grid)}; Spark {spark.version} on {args.master} (default parallelism "
          f"{spark.sparkContext.defaultParallelism}), load average {load_start:.1f}", flush=True)
    data = spark.createDataFrame(pdf, "_segment string, _split string, label int, indices array<int>, "
                                      "values array<float>").cache()
    data.count()
    base = float(pdf["label"].mean())
    global_model = SparseWeights(indices_=np.zeros(0), weights_=np.zeros(0),
                                 raw_intercept_=float(np.log(base / (1 - base))), bits_=BITS, setting={},
                                 engine="sklearn")
    g = (global_model.indices_, global_model.weights_, global_model.intercept_)
    fit_kw = dict(global_model=g, min_rows=50, min_positives=3)
    # the bare loop's input: the rows already in driver memory, as the Spark tasks receive them (Arrow)
    table = pa.Table.from_pandas(pdf, preserve_index=False)

    def spark_run():
        run_id = f"bench-{time.time_ns()}"
        t0 = time.perf_counter()
        report = fit_segments(spark, settings, data, run_id=run_id, global_model=global_model, grid=grid,
                              min_rows=50, min_positives=3, max_retries=1, partitions=args.partitions,
                              fresh_run=not args.given_run_id)
        secs = time.perf_counter() - t0
        assert not report.failed, report.failed
        return secs, report, run_id

    def loop_run():
        t0 = time.perf_counter()
        rows = list(fit_segment_rows(rows_from_arrow(table), settings_list, BITS, **fit_kw))
        return time.perf_counter() - t0, rows

    def sequential_job():
        """The Spark job's work done sequentially on the driver: read the run's rows, collect
        the featurized rows, loop, append the results to the table."""
        run_id = f"bench-seq-{time.time_ns()}"
        t0 = time.perf_counter()
        done = read_segment_rows(spark, settings, run_id, ["segment", "status", "attempts"], SEGMENT_TABLE)
        t1 = time.perf_counter()
        rows = rows_from_arrow(data.toArrow())
        extra = {"run_id": run_id, "attempts": 1, "fingerprint": "", "delta_version": -1, "meta": "{}"}
        out = [{**extra, **r} for r in fit_segment_rows(rows, settings_list, BITS, **fit_kw)]
        schema = fit_schema()
        results = spark.createDataFrame(pa.Table.from_batches([arrow_batch(out, to_arrow(schema))]), schema)
        t2 = time.perf_counter()
        append_new_rows(spark, settings, results, run_id=run_id, txn_version=len(done))
        t3 = time.perf_counter()
        return t3 - t0, sum(r["status"] == "ok" for r in out), (t1 - t0, t2 - t1, t3 - t2)

    from pyspark.sql.pandas.types import to_arrow_schema as to_arrow

    def phases(report) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in report.phases.items())

    secs, report, _ = spark_run()
    print(f"spark, cold (Python workers start): {report.fitted:,} models in {secs:.1f} s -> "
          f"{report.fitted / secs:.1f} models/s ({phases(report)})", flush=True)
    rates: dict[str, list[float]] = {"spark": [], "loop": [], "collect+loop": [], "sequential job": []}
    for k in range(1, args.repeats + 1):
        secs, report, run_id = spark_run()
        rates["spark"].append(report.fitted / secs)
        print(f"round {k}: spark          {report.fitted:,} models in {secs:5.1f} s -> {rates['spark'][-1]:6.1f} "
              f"models/s ({phases(report)})", flush=True)
        loop_secs, loop_rows = loop_run()
        fitted = sum(r["status"] == "ok" for r in loop_rows)
        rates["loop"].append(fitted / loop_secs)
        t0 = time.perf_counter()
        data.toArrow()
        collect_secs = time.perf_counter() - t0
        rates["collect+loop"].append(fitted / (collect_secs + loop_secs))
        print(f"round {k}: loop           {fitted:,} models in {loop_secs:5.1f} s -> {rates['loop'][-1]:6.1f} "
              f"models/s (rows already on the driver; collecting them with toArrow: {collect_secs:.1f} s)",
              flush=True)
        seq_secs, seq_fitted, (read_s, fit_s, write_s) = sequential_job()
        rates["sequential job"].append(seq_fitted / seq_secs)
        print(f"round {k}: sequential job {seq_fitted:,} models in {seq_secs:5.1f} s -> "
              f"{rates['sequential job'][-1]:6.1f} models/s (table read {read_s:.1f} s, collect + loop "
              f"{fit_s:.1f} s, table append {write_s:.1f} s); load average {os.getloadavg()[0]:.1f}", flush=True)

    # the same results: every segment's weights from Spark (as recorded) equal the loop's
    recorded = {r["segment"]: r for r in read_segment_rows(spark, settings, run_id, None, SEGMENT_TABLE)}
    same = sum(
        r["status"] == recorded[r["segment"]]["status"] == "ok"
        and np.array_equal(np.asarray(recorded[r["segment"]]["indices"]), r["indices"])
        and np.array_equal(np.asarray(recorded[r["segment"]]["weights"]), r["weights"])
        and recorded[r["segment"]]["intercept"] == r["intercept"]
        for r in loop_rows)
    print(f"identical weights and intercept, Spark vs loop: {same:,} of {len(loop_rows):,} segments")

    if args.pandas_loop:
        t0 = time.perf_counter()
        fitted = 0
        for _, group in pdf.groupby("_segment", sort=True):
            setting = settings_list[0]
            if len(settings_list) > 1:
                losses = [validate_segment_setting(group, s, BITS) for s in settings_list]
                setting = settings_list[int(np.argmin(losses))]
            fitted += fit_segment(group, setting, BITS, global_model=g)["status"] == "ok"
        secs = time.perf_counter() - t0
        print(f"pandas groupby + fit_segment loop (once): {fitted:,} models in {secs:.1f} s -> "
              f"{fitted / secs:.1f} models/s")

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"medians of {args.repeats} on {args.master}: spark {med['spark']:.1f} models/s; "
          f"loop {med['loop']:.1f} models/s -> speed-up {med['spark'] / med['loop']:.2f}x; "
          f"collect + loop {med['collect+loop']:.1f} -> {med['spark'] / med['collect+loop']:.2f}x; "
          f"sequential job {med['sequential job']:.1f} -> {med['spark'] / med['sequential job']:.2f}x; "
          f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    spark.stop()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
