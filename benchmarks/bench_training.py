"""Training on generated logs: test log-loss beside the best possible and a constant CTR,
with and without the crosses of the truly interacting fields, and where the time goes.

    .venv/bin/python benchmarks/bench_training.py --train-rows 1000000 --workdir /tmp/bench-training

Pipeline, as ``ctr`` runs it: :func:`synthetic.logs.generate_logs` (``--train-days``
training days of ``train-rows / train-days`` impressions, then one validation and one test
day of the same size; no drift inside the range, so the comparison is about features) ->
:func:`feature_store.ingest.ingest_range` into the Delta warehouse ->
:func:`training.pipeline.train_from_warehouse` (constrained search, refit on train +
validation, test, MLflow logging, registration and gate), once with the shipped
``generated`` spec and once with the same spec minus its ``[[crosses]]``
(``dataclasses.replace(spec, crosses=())``). The generator's truth crosses exactly
site_id x advertiser_id, device_type x creative_type and hour_of_day x country.

Printed per variant: test log-loss, best possible log-loss (the generator's true
probabilities of the same rows), constant-CTR log-loss, AUC, calibration, seconds from
the warehouse window to the registered version (and its parts), and rows/s of the final
fit alone (train + validation rows / refit seconds). ``--mllib`` adds the MLlib engine on
the full spec with the search's best setting. A ``--workdir`` that already holds the
same generated range is reused (generation and ingest are skipped).

The search is kept small (``--trials``, ``--wall-seconds``; l1/l2 with liblinear, C in
[0.01, 1] and the negative keep-rate searched, bits fixed by the spec; C above 1 only
overfits the site x advertiser cross: with L2 the best C was 0.1 for both variants at 250k
and 1M rows, see ``benchmarks/bench_crosses.py``, the in-process, Spark-free version of the
with/without-crosses comparison on the same generator). By default the first variant
searches and the others reuse its best setting as a fixed, single full fit (same
hyperparameters, so the comparison is about the features); ``--params '{"C": 0.3, ...}'``
fixes the setting for every variant instead (no search at all).

Measured 2026-11-21 (local[2], ``--params '{"C": 0.1, "penalty": "l2", "downsample_rate": 0.25}'``;
load 2-4, the 5M run at nice 5 beside other work):

| train rows | variant | test log-loss | best possible | constant | AUC | window->version s | fit rows/s |
|---|---|---|---|---|---|---|---|
| 995,015 (4 x 250k) | crosses | 0.07034 | 0.06756 | 0.07713 | 0.7528 | 78.5 | 61,892 |
| 995,015 | no crosses | 0.07104 | 0.06756 | 0.07713 | 0.7419 | 59.0 | 75,111 |
| 995,015 | MLlib, crosses | 0.07037 | 0.06756 | 0.07713 | 0.7524 | 184.3 | 9,069 |
| 4,975,296 (5 x 1M) | crosses | 0.06621 | 0.06444 | 0.07302 | 0.7596 | 364.4 | 52,237 |
| 4,975,296 | no crosses | 0.06697 | 0.06444 | 0.07302 | 0.7477 | 266.4 | 94,529 |

(``--train-rows 1000000 --train-days 4 --mllib`` and ``--train-rows 5000000 --train-days 5
--driver-memory 10g``.) The crosses close 20% (1M) and 30% (5M) of the no-cross model's gap
to the best possible; the gap with crosses shrinks from 0.00277 to 0.00178 nats.

``--ftrl-passes N`` measures only the default engine's throughput instead (no Spark, no
search, nothing registered): the first ``--train-days`` days of the warehouse already in
``--workdir`` (``ctr generate`` + ``ctr ingest``; nothing is generated) are read with
``read_window_arrow`` and featurized with the ``generated`` spec as ``ctr train`` does, then
``FTRLLogisticRegression(passes=N)`` (the engine's defaults otherwise: shuffled runs, exact
intercept, no downsampling) is fitted ``--repeats`` times after a compile-warming fit;
printed: examples x passes per second, wall and CPU (the fit is one thread), every run and
the load average. The per-core training figure of ``docs/capacity.md``:

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bench_training.py --workdir /tmp/cap \
        --train-days 4 --ftrl-passes 3 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

SPACE = """
[budget]
trials = {trials}
wall_seconds = {wall_seconds}
n_jobs = 2

[halving]
eta = 3
min_fraction = 0.1111111111111111

[params.C]
distribution = "loguniform"
low = 0.01
high = 1.0

[params.penalty]
distribution = "choice"
values = ["l2", "l1"]

[params.downsample_rate]
distribution = "loguniform"
low = 0.1
high = 1.0

[fixed]
tol = 1e-4
solver = "auto"
max_iter = 100
"""

FIXED = """
[budget]
trials = 1
wall_seconds = 36000
n_jobs = 1

[halving]
eta = 3
min_fraction = 1.0

[fixed]
{fixed}
"""


def fixed_space(params: dict) -> str:
    """A search space that is exactly one setting, fitted once on the full training window."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in sorted(params.items()) if k != "bits"]
    return FIXED.format(fixed="\n".join(lines))


def _fit_seconds(r) -> float:
    """Seconds of the final fit (the training job calls it "fit"; older results "refit")."""
    return r.seconds["fit"] if "fit" in r.seconds else r.seconds["refit"]


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.5f}"


def ftrl_throughput(home: Path, train_days: int, passes: int, repeats: int) -> None:
    """Examples x passes per second of the default engine on a warehouse's first days."""
    import statistics

    import numpy as np

    from feature_store.arrow_reader import open_version, read_window_arrow
    from feature_store.reader import Window
    from shared.config import load_settings
    from shared.featurize import Featurizer, load_spec
    from training.ftrl import FTRLLogisticRegression

    settings = load_settings({"home": str(home)}, env={})
    path = settings.table_path("observations")
    if not Path(path).exists():
        raise SystemExit(f"--ftrl-passes needs a warehouse in {home} (ctr generate + ctr ingest)")
    days = sorted(date.fromisoformat(p["date"]) for p in open_version(path, None).partitions())
    spec = load_spec("generated")
    t0 = time.perf_counter()
    frame, info = read_window_arrow(settings, Window(days[0], days[0] + timedelta(days=train_days)),
                                    sorted({*spec.input_columns, "label"}))
    read_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    X = Featurizer(spec).transform(frame)  # the first in this process: imports and compilation included
    featurize_s, featurize_cpu = time.perf_counter() - t0, time.process_time() - c0
    y = frame.column("label").to_numpy().astype(np.int8)
    n = X.shape[0]
    print(f"{n:,} rows ({train_days} days from {days[0]}, observations v{info.version}), {X.nnz / n:.1f} non-zeros "
          f"per row, 2^{spec.bits} columns; read {read_s:.2f} s, featurize {featurize_s:.2f} s "
          f"({featurize_cpu:.2f} s CPU)", flush=True)
    FTRLLogisticRegression().fit(X[:1000], y[:1000])  # numba compile (cached) outside the timing
    wall, cpu = [], []
    for i in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        FTRLLogisticRegression(passes=passes, random_state=i).fit(X, y)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        print(f"  run {i + 1}: {wall[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU, load average {os.getloadavg()[0]:.2f}",
              flush=True)
    w, c = statistics.median(wall), statistics.median(cpu)
    print(f"ftrl, {passes} passes (exact intercept included), median of {repeats}: "
          f"{n * passes / w:,.0f} examples x passes/s wall ({w:.2f} s), {n * passes / c:,.0f} per CPU-second "
          f"({c:.2f} s); load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-rows", type=int, default=1_000_000, help="impressions in the training window")
    ap.add_argument("--train-days", type=int, default=4)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--wall-seconds", type=float, default=300.0)
    ap.add_argument("--variants", default="crosses,no-crosses", help="comma-separated: crosses, no-crosses")
    ap.add_argument("--params", help="JSON setting fixed for every variant (no search)")
    ap.add_argument("--mllib", action="store_true", help="also train the full spec with the MLlib engine")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="4g", help="Spark driver memory (5M rows: 10g)")
    ap.add_argument("--workdir", type=Path, required=True, help="data root (kept; reused when it matches)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ftrl-passes", type=int,
                    help="only measure the default engine's examples x passes/s on the warehouse in --workdir")
    ap.add_argument("--repeats", type=int, default=3, help="fits timed with --ftrl-passes (median printed)")
    args = ap.parse_args()
    if args.ftrl_passes:
        ftrl_throughput(args.workdir, args.train_days, args.ftrl_passes, args.repeats)
        return

    from feature_store.ingest import ingest_range
    from shared.config import load_settings
    from shared.featurize import load_spec
    from shared.spark import get_spark
    from synthetic.config import GeneratorConfig
    from synthetic.logs import generate_logs
    from training.pipeline import Windows, train_from_warehouse

    per_day = args.train_rows // args.train_days
    days = args.train_days + 2
    start = date(2026, 11, 1)
    cfg = GeneratorConfig(start_date=start, days=days, impressions_per_day=per_day, seed=args.seed, drift_day=days)
    settings = load_settings({"home": str(args.workdir), "spark_master": args.master,
                              "spark_driver_memory": args.driver_memory}, env={})
    stamp = settings.home / "bench_training.json"
    wanted = json.dumps(cfg.as_dict(), sort_keys=True)
    print(f"{days} days x {per_day:,} impressions ({args.train_days} train, 1 validation, 1 test) on {args.master}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    spark = get_spark(settings, "bench-training", ui=False)
    if stamp.is_file() and stamp.read_text() == wanted:
        print(f"reusing the generated and ingested range in {settings.home}", flush=True)
    else:
        t0 = time.perf_counter()
        summary = generate_logs(cfg, settings.raw_dir, overwrite=True, progress=None)
        print(f"generate: {summary.impressions:,} impressions, {summary.clicks:,} clicks in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        results = ingest_range(spark, settings, start, start + timedelta(days=days - 1))
        n = sum(r.observations for r in results)
        secs = time.perf_counter() - t0
        print(f"ingest: {n:,} observations in {secs:.1f} s ({n / secs:,.0f} rows/s)", flush=True)
        stamp.write_text(wanted)

    searched = settings.home / "bench_space.toml"
    searched.write_text(SPACE.format(trials=args.trials, wall_seconds=args.wall_seconds))
    fixed = settings.home / "bench_fixed.toml"
    best_params = json.loads(args.params) if args.params else None
    if best_params is not None:
        fixed.write_text(fixed_space(best_params))
    windows = Windows.consecutive(start, args.train_days, 1, 1)
    full = load_spec("generated")
    variants = {"crosses": full, "no-crosses": dataclasses.replace(full, crosses=())}
    rows = []
    for name in args.variants.split(","):
        spec = variants[name]
        searching = best_params is None
        t0 = time.perf_counter()
        r = train_from_warehouse(spark, settings, windows, spec, search_space=searched if searching else fixed,
                                 model_name=f"bench-{name}", seed=args.seed)
        wall = time.perf_counter() - t0
        if best_params is None:
            best_params = r.best_params
            fixed.write_text(fixed_space(best_params))
        fit_rows = r.rows["train"] + r.rows["validation"]
        rows.append((f"sklearn {name} ({'search' if searching else 'fixed'})", r, wall,
                     fit_rows / _fit_seconds(r)))
        print(r.summary(), flush=True)
    if args.mllib:
        from training.distributed import SETTING_KEYS, train_mllib_from_warehouse

        setting = {k: v for k, v in (best_params or {}).items() if k in SETTING_KEYS}
        t0 = time.perf_counter()
        r = train_mllib_from_warehouse(spark, settings, windows, full, grid=[setting], model_name="bench-mllib",
                                       seed=args.seed)
        wall = time.perf_counter() - t0
        rows.append(("mllib crosses", r, wall, (r.rows["train"] + r.rows["validation"]) / _fit_seconds(r)))
        print(r.summary(), flush=True)

    print()
    head = (f"{'variant':<27} {'train rows':>10} {'test ll':>8} {'best poss':>9} {'const CTR':>9} {'AUC':>6} "
            f"{'calib':>6} {'window->version s':>17} {'fit rows/s':>10}")
    print(head)
    print("-" * len(head))
    for name, r, wall, rps in rows:
        t = r.metrics["test"]
        print(f"{name:<27} {r.rows['train']:>10,} {t['log_loss']:>8.5f} {_fmt(r.best_possible_test_log_loss):>9} "
              f"{r.baseline_test_log_loss:>9.5f} {t['auc']:>6.4f} {t['calibration']:>6.3f} {wall:>17.1f} "
              f"{rps:>10,.0f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    spark.stop()


if __name__ == "__main__":
    main()
