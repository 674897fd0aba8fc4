"""Measure SparseLogisticRegression solvers on a synthetic hashed-CTR problem.

The problem is well specified: ``--fields`` categorical fields per row, each
value drawn from a Zipf-like distribution over a large vocabulary, hashed into
2**bits columns (one non-zero of value 1.0 per field); the true click logit is
``b + sum(w_true[column])`` with ``w_true ~ N(0, sd)`` and ``b`` set for the
target base CTR. Every (penalty, solver, C) combination is fitted on the same
training rows (with negative downsampling) and scored on held-out rows.

    .venv/bin/python benchmarks/bench_solvers.py                # 200k x 2**20, the reference run
    .venv/bin/python benchmarks/bench_solvers.py --rows 20000   # a quick look

Prints one line per fit: fit seconds, iterations, non-zeros, held-out
log-loss, normalized entropy, AUC and calibration; ``--json PATH`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.metrics import evaluate  # noqa: E402
from training.model import SparseLogisticRegression  # noqa: E402

COMBOS = (
    ("l2", "lbfgs"),
    ("l2", "liblinear"),
    ("l2", "saga"),
    ("l1", "liblinear"),
    ("l1", "saga"),
    ("elasticnet", "saga"),
)


def synthetic_problem(rows: int, bits: int, fields: int, base_ctr: float, weight_sd: float, seed: int):
    """(X, y, p_true): CSR float32 (rows x 2**bits), labels, true click probabilities."""
    rng = np.random.default_rng(seed)
    n_cols = 1 << bits
    # Zipf-like values per field: frequent heads and a long tail, as in ad logs.
    values = np.minimum(rng.zipf(1.2, size=(rows, fields)), 10_000_000).astype(np.uint64)
    field_ids = np.arange(fields, dtype=np.uint64)[None, :]
    # Multiplicative hashing of (field, value) into the column space.
    h = (values * np.uint64(0x9E3779B97F4A7C15) + field_ids * np.uint64(0xC2B2AE3D27D4EB4F))
    h ^= h >> np.uint64(29)
    cols = (h % np.uint64(n_cols)).astype(np.int64)
    w_true = rng.normal(0.0, weight_sd, size=n_cols)
    margin = w_true[cols].sum(axis=1)
    # Intercept so that the mean true probability is about base_ctr.
    lo, hi = -20.0, 5.0
    for _ in range(60):
        b = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(margin + b)))) < base_ctr:
            lo = b
        else:
            hi = b
    p = 1 / (1 + np.exp(-(margin + b)))
    y = (rng.random(rows) < p).astype(np.int8)
    indptr = np.arange(0, rows * fields + 1, fields, dtype=np.int64)
    X = sp.csr_matrix((np.ones(rows * fields, dtype=np.float32), cols.ravel(), indptr), shape=(rows, n_cols))
    X.sum_duplicates()  # two fields hashing to one column add up, as the featurizer does
    return X, y, p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="training rows")
    ap.add_argument("--test-rows", type=int, default=50_000)
    ap.add_argument("--bits", type=int, default=20)
    ap.add_argument("--fields", type=int, default=40, help="non-zeros per row")
    ap.add_argument("--base-ctr", type=float, default=0.035)
    ap.add_argument("--weight-sd", type=float, default=0.35)
    ap.add_argument("--C", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--l1-ratio", type=float, default=0.5)
    ap.add_argument("--downsample-rate", type=float, default=0.25)
    ap.add_argument("--max-iter", type=int, default=30)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--combos", nargs="+", default=None, help="penalty:solver pairs, e.g. l2:lbfgs")
    ap.add_argument("--liblinear-intercept-scaling", type=float, default=None,
                    help="override training.model.LIBLINEAR_INTERCEPT_SCALING for this run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.liblinear_intercept_scaling is not None:
        import training.model

        training.model.LIBLINEAR_INTERCEPT_SCALING = args.liblinear_intercept_scaling
    combos = COMBOS if args.combos is None else tuple(tuple(c.split(":")) for c in args.combos)
    X, y, p_true = synthetic_problem(
        args.rows + args.test_rows, args.bits, args.fields, args.base_ctr, args.weight_sd, args.seed
    )
    Xtr, ytr = X[: args.rows], y[: args.rows]
    Xte, yte, pte = X[args.rows:], y[args.rows:], p_true[args.rows:]
    oracle = evaluate(yte, pte)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"# train {Xtr.shape[0]} x 2**{args.bits}, nnz {Xtr.nnz}, base CTR {ytr.mean():.4f}; "
          f"downsample_rate {args.downsample_rate}, max_iter {args.max_iter}, tol {args.tol}")
    print(f"# oracle (true p) on test: log_loss {oracle['log_loss']:.4f} NE {oracle['normalized_entropy']:.4f} "
          f"AUC {oracle['auc']:.4f}")
    header = f"{'penalty':<11}{'solver':<10}{'C':>6}{'fit_s':>8}{'iter':>6}{'nnz':>9}{'logloss':>9}{'NE':>8}{'AUC':>8}{'calib':>7}"
    print(header)
    results = []
    for C in args.C:
        for penalty, solver in combos:
            model = SparseLogisticRegression(
                penalty=penalty, C=C, l1_ratio=args.l1_ratio, downsample_rate=args.downsample_rate,
                max_iter=args.max_iter, tol=args.tol, solver=solver, random_state=args.seed,
            ).fit(Xtr, ytr)
            m = evaluate(yte, model.predict_proba(Xte)[:, 1])
            row = dict(penalty=penalty, solver=solver, C=C, fit_seconds=model.fit_seconds_,
                       n_iter=model.n_iter_, converged=model.converged_, n_nonzero=model.n_nonzero_, **m)
            results.append(row)
            print(f"{penalty:<11}{solver:<10}{C:>6g}{model.fit_seconds_:>8.2f}{model.n_iter_:>6d}"
                  f"{model.n_nonzero_:>9d}{m['log_loss']:>9.4f}{m['normalized_entropy']:>8.4f}"
                  f"{m['auc']:>8.4f}{m['calibration']:>7.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                         "oracle": oracle, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
