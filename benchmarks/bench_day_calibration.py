"""Per-day calibration against the generator's truth: the FTRL engine's row order and intercept.

Reads a data root that ``ctr demo`` filled (12 generated days from 2026-11-01, drift from day 6)
with delta-rs, no Spark. For each FTRL variant -- rows in time order as logged, or in short runs
shuffled across the window (``shuffle``), with or without the exact intercept -- and each
hyperparameter setting, it fits days 0-6, then continues the state one day at a time (the
``ctr train --update`` computation), and prints, per day, the sum of predicted CTRs over the sum
of the generator's true click probabilities of the same impressions ("vs truth"; 1 is perfect)
and the log-loss. Training days show how the fit itself is calibrated; later days how the
frozen fit and the updates carry over. No figure here depends on process start-up.

    .venv/bin/ctr --home /tmp/demo demo          # once
    .venv/bin/python benchmarks/bench_day_calibration.py --home /tmp/demo
"""

from __future__ import annotations

import argparse
import copy
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from feature_store.reader import Window
from shared.config import load_settings
from shared.featurize import Featurizer, load_spec
from synthetic.oracle import TruthOracle
from training.ftrl import FTRLLogisticRegression
from training.pipeline import read_frames

START = date(2026, 11, 1)
SETTINGS = ({"alpha": 0.09, "l1": 0.75, "l2": 3.3, "passes": 2},
            {"alpha": 0.05, "l1": 0.5, "l2": 10.0, "passes": 3},
            {"alpha": 0.15, "l1": 1.0, "l2": 1.0, "passes": 1})
VARIANTS = (("time order", {"shuffle": False, "exact_intercept": False}),
            ("shuffled", {"shuffle": True, "exact_intercept": False}),
            ("shuffled + exact intercept (default)", {"shuffle": True, "exact_intercept": True}))


def load_days(home: Path, days: int, spec_name: str) -> list[tuple]:
    """Per day: its featurized matrix, labels and the truth's click probabilities."""
    settings = load_settings({"home": str(home)}, env={})
    spec = load_spec(spec_name)
    fz, oracle = Featurizer(spec), TruthOracle(settings.raw_dir)
    out = []
    for k in range(days):
        day = START + timedelta(days=k)
        w = Window(day, day + timedelta(days=1))
        wf = read_frames(None, settings, {"train": w, "test": w}, spec, featurizer=fz)
        truth = oracle.truth(w.start, w.end)
        if truth is None:
            raise SystemExit(f"no generator truth for {day} under {settings.raw_dir}")
        idx = pc.index_in(wf.frames["test"].column("impression_id"), truth.column("impression_id"))
        out.append((wf.matrices["test"], wf.labels["test"], truth.column("p_true").take(idx).to_numpy()))
    return out


def figures(est: FTRLLogisticRegression, days: list[tuple], ks) -> str:
    """``d<k> <vs truth>/<log-loss>`` for days ``ks``."""
    parts = []
    for k in ks:
        X, y, p_true = days[k]
        p = est.predict_proba(X)[:, 1]
        ll = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        parts.append(f"d{k} {p.sum() / p_true.sum():.3f}/{ll:.5f}")
    return "  ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="a data root `ctr demo` filled")
    ap.add_argument("--days", type=int, default=12)
    ap.add_argument("--train-days", type=int, default=7)
    ap.add_argument("--spec", default="generated")
    a = ap.parse_args()
    t0 = time.perf_counter()
    days = load_days(a.home, a.days, a.spec)
    n = a.train_days
    print(f"{a.days} days read from {a.home} in {time.perf_counter() - t0:.0f} s; fit on days 0-{n - 1}, then "
          f"one update per day; each figure: predicted / true clicks, log-loss")
    for params in SETTINGS:
        print(f"\n== {params}")
        for name, variant in VARIANTS:
            est = FTRLLogisticRegression(**params, **variant)
            est.fit([days[k][0] for k in range(n)], [days[k][1] for k in range(n)])
            train = [est.predict_proba(days[k][0])[:, 1].sum() / days[k][2].sum() for k in range(n)]
            print(f"  {name}: training days vs truth {min(train):.3f}-{max(train):.3f} "
                  f"(worst |1 - x| {max(abs(1 - x) for x in train):.3f})")
            print(f"    frozen        {figures(est, days, range(n, a.days))}")
            for k in range(n, a.days - 1):
                est = copy.deepcopy(est)
                est.partial_fit(days[k][0], days[k][1])
                print(f"    + day {k:<2}     {figures(est, days, range(k + 1, a.days))}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
