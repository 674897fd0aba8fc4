"""Per-segment model throughput: Spark ``applyInPandas`` vs a sequential loop, same run.

    .venv/bin/python benchmarks/bench_segments.py --segments 1000 --rows 300 --master 'local[2]'

Builds featurized rows for ``--segments`` segments (``--rows`` rows each, 80 % train,
10 % validation, 10 % test; 12 one-hot hashed fields from a per-segment logistic truth,
2**18 columns), as the shared Spark featurizer hands them over (``_segment``, ``_split``,
``label``, ``indices``, ``values``). Then, in one process:

* **Spark**: :func:`training.segments.fit_segments` — per-segment statistics, the
  ``groupBy(segment).applyInPandas`` refit + test of every segment, the MERGE into the
  ``segment_models`` Delta table — timed end to end;
* **sequential**: the same per-segment function (:func:`training.segments.fit_segment`)
  called in a plain loop over the same rows grouped in pandas on the driver (no table
  write, no Spark scheduling: a lower bound for a loop); also shown with the time to
  collect the rows from Spark to the driver first (``toPandas``), where a one-machine
  loop over warehouse data would start.

Prints models per second for both and the speed-up. ``--grid 2`` adds the segment x
setting fan-out (two values of C chosen on validation) to both sides.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

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
    ap.add_argument("--repeats", type=int, default=2, help="Spark runs (the first pays worker start-up)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--workdir", type=Path, help="data root (default: a temp dir)")
    args = ap.parse_args()

    from shared.config import load_settings
    from shared.spark import get_spark
    from training.distributed import SparseWeights
    from training.segments import fit_segment, fit_segments, validate_segment_setting

    home = args.workdir or Path(tempfile.mkdtemp(prefix="bench-segments-"))
    settings = load_settings({"home": str(home), "spark_master": args.master}, env={})
    spark = get_spark(settings, "bench-segments", ui=False)
    grid = [{"C": 1.0}] if args.grid == 1 else [{"C": 0.3}, {"C": 3.0}]
    pdf = synthetic_rows(args.segments, args.rows)
    print(f"{args.segments:,} segments x {args.rows} rows = {len(pdf):,} rows, {FIELDS} features per row, "
          f"grid of {len(grid)}; Spark {spark.version} on {args.master}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    data = spark.createDataFrame(pdf, "_segment string, _split string, label int, indices array<int>, "
                                      "values array<float>").cache()
    data.count()
    base = float(pdf["label"].mean())
    global_model = SparseWeights(indices_=np.zeros(0), weights_=np.zeros(0),
                                 raw_intercept_=float(np.log(base / (1 - base))), bits_=BITS, setting={},
                                 engine="sklearn")

    runs = []
    for _ in range(args.repeats):  # a new run id each time: every segment is fitted again
        t0 = time.perf_counter()
        report = fit_segments(spark, settings, data, run_id=f"bench-{time.time_ns()}", global_model=global_model,
                              grid=grid, min_rows=50, min_positives=3, max_retries=1)
        runs.append((time.perf_counter() - t0, report))
        assert not report.failed, report.failed

    from training.distributed import normalize_setting

    settings_list = [normalize_setting(s) for s in grid]
    g = (global_model.indices_, global_model.weights_, global_model.intercept_)
    t0 = time.perf_counter()
    collected = data.toPandas()  # what a loop on one machine starts with: the rows on the driver
    collect_seconds = time.perf_counter() - t0
    assert len(collected) == len(pdf)
    del collected
    t0 = time.perf_counter()
    fitted = 0
    for _, group in pdf.groupby("_segment", sort=True):
        setting = settings_list[0]
        if len(settings_list) > 1:
            losses = [validate_segment_setting(group, s, BITS) for s in settings_list]
            setting = settings_list[int(np.argmin(losses))]
        fitted += fit_segment(group, setting, BITS, global_model=g)["status"] == "ok"
    loop_seconds = time.perf_counter() - t0

    for k, (secs, report) in enumerate(runs, 1):
        print(f"spark applyInPandas run {k}{' (cold: Python workers start)' if k == 1 else ''}: "
              f"{report.fitted:,} models ({report.fallback} fallbacks) in {secs:.1f} s -> "
              f"{report.fitted / secs:.1f} models/s (statistics job, fits, Delta MERGE included: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in report.phases.items()) + ")")
    spark_seconds = min(secs for secs, _ in runs)
    print(f"sequential loop:     {fitted:,} models in {loop_seconds:.1f} s -> {fitted / loop_seconds:.1f} models/s "
          "(driver only, no table write)")
    print(f"  + collecting the rows to the driver first (toPandas): {collect_seconds:.1f} s -> "
          f"{fitted / (loop_seconds + collect_seconds):.1f} models/s")
    print(f"speed-up (best Spark run vs loop): {loop_seconds / spark_seconds:.2f}x, vs collect + loop "
          f"{(loop_seconds + collect_seconds) / spark_seconds:.2f}x, with {args.master}; "
          f"load average now {os.getloadavg()[0]:.1f}")
    spark.stop()


if __name__ == "__main__":
    main()
