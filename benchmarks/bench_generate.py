"""Throughput of ``ctr generate``: impressions per minute on one core.

Runs :func:`synthetic.logs.generate_logs` end to end (world and truth
model construction, drawing, JSON serialization, fault injection, clicks,
truth parquet, manifest) with the default cardinalities, pinned to one CPU,
``--runs`` times into a scratch directory, and prints each run and the median.

    .venv/bin/python benchmarks/bench_generate.py                   # 1 day x 1,000,000 impressions, 3 runs
    .venv/bin/python benchmarks/bench_generate.py --per-day 200000  # a quick look
"""

from __future__ import annotations

import os

# one core: keep BLAS / OpenMP pools single-threaded before numpy is imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic.config import GeneratorConfig  # noqa: E402
from synthetic.logs import JSON_BACKEND, generate_logs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-day", type=int, default=1_000_000, help="impressions per day (default 1,000,000)")
    ap.add_argument("--days", type=int, default=1, help="days per run (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed one)")
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        cpu = args.cpu if args.cpu is not None else allowed[0]
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to CPU {cpu}"
    else:  # pragma: no cover - macOS
        pinned = "not pinned (no sched_setaffinity)"

    scratch = Path(tempfile.mkdtemp(prefix="bench_generate_", dir=args.dir))
    cfg = GeneratorConfig(days=args.days, impressions_per_day=args.per_day, seed=args.seed)
    print(f"bench_generate: {args.days} day(s) x {args.per_day:,} impressions, default cardinalities "
          f"({cfg.n_users:,} users, {cfg.n_sites:,} sites/apps), json={JSON_BACKEND}, {pinned}, "
          f"python {platform.python_version()} on {platform.machine()}")
    rates = []
    try:
        for run in range(args.runs):
            out = scratch / f"run{run}"
            t0 = time.perf_counter()
            s = generate_logs(cfg, out)
            dt = time.perf_counter() - t0
            rate = s.impressions / dt * 60.0
            rates.append(rate)
            print(f"  run {run + 1}: {s.impressions:,} impressions, {s.lines_written:,} lines, "
                  f"{s.bytes_written / 2**20:,.0f} MiB in {dt:.2f} s -> {rate:,.0f} impressions/min")
            shutil.rmtree(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"median: {statistics.median(rates):,.0f} impressions/min on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
