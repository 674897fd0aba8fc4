"""The offline experiments behind the default search space (docs/training-engine.md).

On an imported Criteo-layout warehouse (``bench_engine.py`` builds one: 11 days, days 1-9
train, 10 validation, 11 test), fits a grid of FTRL settings on days 1-9 and reports the
validation and test log-loss and the seconds of each, for the shipped ``criteo`` spec and,
with ``--compare-spec``, another spec (e.g. the old log2 buckets at 2**22), plus scikit-learn
liblinear L2 at a few C on the same matrices as the exact-optimum reference.

    .venv/bin/python benchmarks/bench_ftrl_space.py --home /tmp/ctr-bench-engine/home-s1_1100k
"""

from __future__ import annotations

import argparse
import itertools
import time
from datetime import date, timedelta

import numpy as np

from feature_store.arrow_reader import read_window_arrow
from feature_store.reader import Window
from shared.config import load_settings
from shared.featurize import Featurizer, load_spec
from training.ftrl import FTRLLogisticRegression
from training.metrics import evaluate
from training.model import SparseLogisticRegression

GRID = {"alpha": (0.03, 0.05, 0.1, 0.2), "l2": (1.0, 10.0, 30.0), "passes": (1, 3, 5)}


def matrices(settings, spec_name: str, start: date, table: str):
    spec = load_spec(spec_name)
    fz = Featurizer(spec)
    out = {}
    for name, (a, b) in {"train": (0, 9), "validation": (9, 10), "test": (10, 11)}.items():
        frame, _ = read_window_arrow(settings, Window(start + timedelta(a), start + timedelta(b)),
                                     sorted({*spec.input_columns, "label", "date"}), table=table)
        out[name] = (fz.transform(frame), frame.column("label").to_numpy().astype(np.int8))
    return spec, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="data root with the imported criteo_observations table")
    ap.add_argument("--table", default="criteo_observations")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2014, 1, 1))
    ap.add_argument("--compare-spec", help="a second spec (name or TOML path) for the binning / bits comparison")
    ap.add_argument("--sklearn-C", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    a = ap.parse_args(argv)
    settings = load_settings({"home": a.home})
    FTRLLogisticRegression().fit(*matrices(settings, "criteo", a.start, a.table)[1]["validation"])  # compile
    for spec_name in ["criteo"] + ([a.compare_spec] if a.compare_spec else []):
        spec, m = matrices(settings, spec_name, a.start, a.table)
        (X, y), (Xv, yv), (Xt, yt) = m["train"], m["validation"], m["test"]
        print(f"\nspec {spec.name} v{spec.version} (2**{spec.bits}): {X.shape[0]:,} train rows, "
              f"{Xv.shape[0]:,} validation, {Xt.shape[0]:,} test")
        print(f"{'setting':<40} {'seconds':>8} {'val':>8} {'test':>8}")
        for alpha, l2, passes in itertools.product(*GRID.values()):
            t0 = time.perf_counter()
            est = FTRLLogisticRegression(alpha=alpha, l2=l2, passes=passes).fit(X, y)
            secs = time.perf_counter() - t0
            v = evaluate(yv, est.predict_proba(Xv)[:, 1])["log_loss"]
            t = evaluate(yt, est.predict_proba(Xt)[:, 1])["log_loss"]
            print(f"{f'ftrl alpha={alpha} l2={l2} passes={passes}':<40} {secs:8.2f} {v:8.5f} {t:8.5f}", flush=True)
        for C in a.sklearn_C:
            t0 = time.perf_counter()
            est = SparseLogisticRegression(penalty="l2", C=C).fit(X, y)
            secs = time.perf_counter() - t0
            v = evaluate(yv, est.predict_proba(Xv)[:, 1])["log_loss"]
            t = evaluate(yt, est.predict_proba(Xt)[:, 1])["log_loss"]
            print(f"{f'sklearn liblinear l2 C={C}':<40} {secs:8.2f} {v:8.5f} {t:8.5f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
