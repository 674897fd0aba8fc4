"""Bayesian per-segment models on worlds whose per-segment effects are known (issue 17).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        nice -n 19 .venv/bin/python benchmarks/bench_bayes_segments.py --worlds 3 --per-bucket 20 [--first-world 3]
    ... bench_bayes_segments.py --worlds 1 --per-bucket 4 --mcmc   # the MCMC comparison alone, kept short

Each world: 12 one-hot hashed fields of 30 levels (2**18 columns), a global logistic truth
(intercept -2.5, level weights N(0, 0.5^2)), and segments whose truth adds an intercept shift
``b_s ~ N(0, 0.4^2)`` and level shifts ``u_s ~ N(0, 0.3^2)`` on fields 0 and 1 (``--truth
sparse``, a few weights: the model's isotropic prior is misspecified) or ``N(0, 0.1^2)`` on
every level of every field (``--truth dense``: the prior's own shape).
Segments come in size buckets of 30 / 100 / 300 / 1000 / 3000 training rows, each with 200
test impressions. Fitted: the global model (SparseLogisticRegression, C=1, all training rows),
the independent per-segment models as today (SparseLogisticRegression per segment, C=1; the
global model below 50 rows or 3 clicks) and the Bayesian ones (:mod:`training.segment_bayes`,
prior scales by empirical Bayes). Printed, per bucket: coverage of the 90 % interval of each
segment's mean CTR over its test impressions (truth: the mean of their true click
probabilities) for every posterior representation compared, with the binomial standard
error; test log-loss of the three models; fit time and storage per segment. Then coverage
of the 90 % interval of realised clicks for random sets of test impressions (spread over all
segments, and concentrated on 3 segments; the latter also with independent per-row draws, the
mistake the shared draw avoids). ``--mcmc``: a reference HMC run (our own sampler, validated
first on targets with known answers) against the Laplace fit on a few segments. Never asserts.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from shared.model.posterior import (PosteriorSet, SegmentPosterior, aggregate_clicks, point_logit,
                                    posterior_ctr, thompson_ctr)
from shared.model.scoring import sigmoid
from training.model import SparseLogisticRegression
from training.segment_bayes import _design, choose_prior_scales, factorize, global_margin, laplace_fit

FIELDS, VOCAB, BITS = 12, 30, 18
BUCKETS = (30, 100, 300, 1000, 3000)
TEST_ROWS = 200
TRUE_SIGMA_B, TRUE_SIGMA_U, SEG_FIELDS = 0.4, 0.3, (0, 1)
DENSE_SIGMA_U = 0.1  # --truth dense: every level of every field shifted
LEVEL = 0.9
REPS = {"diag-precision": None, "diagonal": ("diagonal", 0), "lowrank-4": ("lowrank", 4),
        "lowrank-16": ("lowrank", 16), "full": ("full", 0)}
CHOSEN = "lowrank-4"  # training.segment_bayes.SegmentLaplace's default, chosen from these figures
SETS = 40  # aggregate sets per kind per world


@dataclass
class World:
    """Training and test rows per segment, with the true click probabilities."""

    size: np.ndarray  # [S] training rows per segment (its bucket)
    X_train: list[sp.csr_matrix]
    y_train: list[np.ndarray]
    X_test: list[sp.csr_matrix]
    y_test: list[np.ndarray]
    p_test: list[np.ndarray]


def make_world(per_bucket: int, seed: int, truth: str = "sparse") -> World:
    """A world of ``per_bucket`` segments per size bucket (see the module docstring). ``truth``
    "sparse": segment shifts on the levels of fields 0 and 1 only (sd 0.3); "dense": on every
    level of every field (sd 0.1), the model's own prior shape."""
    rng = np.random.default_rng(seed)
    seg_fields, sigma_u = (SEG_FIELDS, TRUE_SIGMA_U) if truth == "sparse" else (tuple(range(FIELDS)), DENSE_SIGMA_U)
    w_field = rng.normal(0, 0.5, size=(FIELDS, VOCAB))
    sizes = np.repeat(BUCKETS, per_bucket)
    out = World(sizes, [], [], [], [], [])
    for n in sizes:
        b = rng.normal(0, TRUE_SIGMA_B)
        u = rng.normal(0, sigma_u, size=(len(seg_fields), VOCAB))
        for split, rows in (("train", int(n)), ("test", TEST_ROWS)):
            levels = rng.integers(0, VOCAB, size=(rows, FIELDS))
            cols = (np.arange(FIELDS)[None, :] * 7919 * VOCAB + levels * 104729) % (1 << BITS)
            logit = -2.5 + b + w_field[np.arange(FIELDS)[None, :], levels].sum(axis=1)
            logit += sum(u[k, levels[:, f]] for k, f in enumerate(seg_fields))
            p = sigmoid(logit)
            y = (rng.random(rows) < p).astype(np.float64)
            order = np.sort(cols, axis=1)
            X = sp.csr_matrix((np.ones(rows * FIELDS), order.ravel(), np.arange(0, rows * FIELDS + 1, FIELDS)),
                              shape=(rows, 1 << BITS))
            if split == "train":
                out.X_train.append(X)
                out.y_train.append(y)
            else:
                out.X_test.append(X)
                out.y_test.append(y)
                out.p_test.append(p)
    return out


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def flat(Xs: list[sp.csr_matrix]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(segment position per row, col, val, row id) of the stacked rows of the segments."""
    X = sp.vstack(Xs, format="csr")
    pos = np.repeat(np.arange(len(Xs)), [x.shape[0] for x in Xs])
    return pos, X.indices.astype(np.int64), X.data, np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))


def posterior_from(fit, rep: str, sigma_w: float) -> tuple[SegmentPosterior, float]:
    """The segment's posterior in representation ``rep`` and the seconds factorizing took."""
    t0 = time.perf_counter()
    how = REPS[rep]
    if how is None:  # the naive diagonal: 1 / sqrt(diag H), correlations and their effect on marginals dropped
        F, d = np.zeros((fit.theta.size, 0)), 1 / np.sqrt(np.diag(fit.precision))
    else:
        F, d = factorize(fit, *how)
    secs = time.perf_counter() - t0
    return SegmentPosterior(float(fit.theta[0]), fit.active, fit.theta[1:], F, d, sigma_w), secs


def run_world(seed: int, per_bucket: int, draws: int, eb_segments: int, truth: str, stats: dict,
              mcmc_fits: list) -> None:
    world = make_world(per_bucket, seed, truth)
    S = world.size.size
    t0 = time.perf_counter()
    X_all = sp.vstack(world.X_train, format="csr")
    y_all = np.concatenate(world.y_train)
    glob_model = SparseLogisticRegression(C=1.0, random_state=seed).fit(X_all, y_all)
    glob = (glob_model.indices_, glob_model.weights_, float(glob_model.intercept_))
    t_glob = time.perf_counter() - t0
    offsets = [global_margin(X, glob) for X in world.X_train]

    # independent models, as today (fallback to the global model below 50 rows / 3 clicks)
    p_ind, t_ind = [], []
    for s in range(S):
        X, y = world.X_train[s], world.y_train[s]
        t0 = time.perf_counter()
        if y.size >= 50 and 3 <= y.sum() < y.size:
            p_ind.append(SparseLogisticRegression(C=1.0, random_state=seed).fit(X, y).predict_proba(world.X_test[s])[:, 1])
        else:
            p_ind.append(sigmoid(global_margin(world.X_test[s], glob)))
        t_ind.append(time.perf_counter() - t0)

    choice = choose_prior_scales(list(zip(world.X_train, world.y_train, offsets)), max_segments=eb_segments)
    print(f"world {seed}: {S} segments, {y_all.size:,} training rows; global fit {t_glob:.1f} s; empirical Bayes "
          f"sigma_b {choice.sigma_b:.3f} sigma_w {choice.sigma_w:.3f} ({len(choice.tried)} grid points, "
          f"{choice.n_segments} segments, {choice.seconds:.1f} s); truth: b sd {TRUE_SIGMA_B}, level shifts sd "
          + (f"{TRUE_SIGMA_U} on {len(SEG_FIELDS)} of {FIELDS} fields" if truth == "sparse" else
             f"{DENSE_SIGMA_U} on all {FIELDS} fields"), flush=True)
    stats.setdefault("choices", []).append((choice.sigma_b, choice.sigma_w))

    posts: dict[str, list[SegmentPosterior]] = {r: [] for r in REPS}
    for s in range(S):
        t0 = time.perf_counter()
        fit = laplace_fit(world.X_train[s], world.y_train[s], offsets[s], choice.sigma_b, choice.sigma_w)
        t_map = time.perf_counter() - t0
        bucket = int(world.size[s])
        stats.setdefault(("map_s", bucket), []).append(t_map)
        stats.setdefault(("ind_s", bucket), []).append(t_ind[s])
        # the mean test row on the fitted parameters (intercept, active columns): its logit's sd per representation
        Xs = world.X_test[s][:, fit.active]
        xbar = np.r_[1.0, np.asarray(Xs.mean(axis=0)).ravel()]

        def sd_of(post: SegmentPosterior) -> float:
            return float(np.sqrt(np.sum((post.factor.T @ xbar) ** 2) + np.sum((post.scale * xbar) ** 2)))

        sd_full = sd_of(posterior_from(fit, "full", choice.sigma_w)[0])
        for rep in REPS:
            post, secs = posterior_from(fit, rep, choice.sigma_w)
            stats.setdefault(("sdratio", rep, bucket), []).append(sd_of(post) / sd_full)
            posts[rep].append(post)
            stats.setdefault(("fac_s", rep, bucket), []).append(secs)
            m = post.scale.size  # stored: intercept, sigma_w, indices, weights, the factor (triangle if full), scale
            factor = m * (m + 1) // 2 if rep == "full" else post.factor.size
            stats.setdefault(("floats", rep, bucket), []).append(2 + 2 * post.indices.size + factor
                                                                 + (m if post.scale.any() else 0))
        if bucket in (30, 100, 300) and all(f[0] != bucket for f in mcmc_fits):  # one segment per small bucket
            mcmc_fits.append((bucket, world.X_train[s], world.y_train[s], offsets[s], choice, fit))

    pos, col, val, rid = flat(world.X_test)
    y_test, p_true = np.concatenate(world.y_test), np.concatenate(world.p_test)
    sets = {rep: PosteriorSet.from_segments(posts[rep], BITS) for rep in REPS}
    # segment mean CTR intervals, per representation
    for rep, pset in sets.items():
        for s in range(S):
            X = world.X_test[s]
            r = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
            agg = aggregate_clicks(pset, glob, np.full(X.shape[0], s), X.indices, X.data, r, level=LEVEL,
                                   draws=draws, seed=s)
            true_clicks = world.p_test[s].sum()
            stats.setdefault(("cover", rep, int(world.size[s])), []).append(agg.lower <= true_clicks <= agg.upper)
            stats.setdefault(("width", rep, int(world.size[s])), []).append((agg.upper - agg.lower) / X.shape[0])
    if "serving" not in stats:
        stats["serving"] = serving_timing(sets[CHOSEN], glob, world.X_test, world.size)
    # test log-loss per bucket
    ci = posterior_ctr(sets[CHOSEN], glob, pos, col, val, rid, draws=200, seed=seed)
    p_map = sigmoid(point_logit(sets[CHOSEN], glob, pos, col, val, rid))
    p_glob = sigmoid(point_logit(PosteriorSet.from_segments([], BITS), glob, np.full(pos.size, -1), col, val, rid))
    p_indep = np.concatenate(p_ind)
    row_bucket = world.size[pos]
    for bucket in BUCKETS:
        m = row_bucket == bucket
        for name, p in (("global", p_glob), ("independent", p_indep), ("bayes", ci.mean), ("bayes-map", p_map),
                        ("truth", p_true)):
            stats.setdefault(("ll", name, bucket), []).append((log_loss(y_test[m], p[m]), int(m.sum())))
    # aggregates: spread sets and sets concentrated on 3 segments
    rng = np.random.default_rng(1000 + seed)
    starts = np.r_[0, np.cumsum([x.shape[0] for x in world.X_test])]
    entry_start = np.r_[0, np.cumsum(np.diff(sp.vstack(world.X_test, format="csr").indptr))]
    for kind in ("spread", "concentrated", "concentrated-per-row"):
        for k in range(SETS):
            if kind == "spread":
                rows = np.sort(rng.choice(pos.size, size=1000, replace=False))
            else:
                segs = np.sort(rng.choice(S, size=3, replace=False))
                rows = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in segs])
            ent = np.concatenate([np.arange(entry_start[i], entry_start[i + 1]) for i in rows])
            local = np.repeat(np.arange(rows.size), np.diff(entry_start)[rows])
            if kind == "concentrated-per-row":  # each row its own copy of its segment: independent draws
                pset = PosteriorSet.from_segments([posts[CHOSEN][s] for s in pos[rows]], BITS)
                p_rows = np.arange(rows.size)
            else:
                pset, p_rows = sets[CHOSEN], pos[rows]
            agg = aggregate_clicks(pset, glob, p_rows, col[ent], val[ent], local, level=LEVEL, draws=draws,
                                   seed=k)
            clicks = y_test[rows].sum()
            stats.setdefault(("agg", kind), []).append(agg.realised_lower <= clicks <= agg.realised_upper)
            stats.setdefault(("aggw", kind), []).append((agg.realised_upper - agg.realised_lower) / max(clicks, 1))


def serving_timing(pset: PosteriorSet, glob, X_test: list, size: np.ndarray) -> str:
    """Median and p99 microseconds of one impression (a segment of the largest bucket) scored
    at the mean, with a Thompson sample, and with a 90 % interval from 200 draws."""
    s = int(np.flatnonzero(size == size.max())[0])
    X = X_test[s][:1]
    args = (pset, glob, np.array([s]), X.indices.astype(np.int64), X.data, np.zeros(X.nnz, np.int64))
    out = []
    for name, call in (("mean logit", lambda: point_logit(*args)), ("thompson", lambda: thompson_ctr(*args, seed=1)),
                       ("interval (200 draws)", lambda: posterior_ctr(*args, draws=200))):
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out.append(f"{name} {1e6 * np.median(times):.0f} / {1e6 * np.quantile(times, 0.99):.0f} us")
    return f"one impression ({pset.segment(s).indices.size} active columns, {CHOSEN}), median / p99: " + "; ".join(out)


# -- a reference sampler: HMC preconditioned by the Laplace fit ----------------------------------
def hmc(neg_log_post, grad, mode: np.ndarray, precision: np.ndarray, n_iter: int, seed: int,
        eps: float = 0.3, steps: int = 12) -> tuple[np.ndarray, float]:
    """(draws (n_iter x d) after n_iter // 5 warm-up, acceptance rate) of Hamiltonian Monte Carlo in
    coordinates whitened by the Laplace precision (theta = mode + L^-T u), jittered step size and
    path length. Exact for any target (Metropolis-corrected); the whitening only makes it mix fast."""
    rng = np.random.default_rng(seed)
    L = la.cholesky(precision, lower=True)

    def to_theta(u):
        return mode + la.solve_triangular(L, u, lower=True, trans="T")

    def U(u):
        return neg_log_post(to_theta(u))

    def dU(u):
        return la.solve_triangular(L, grad(to_theta(u)), lower=True)

    u = np.zeros(mode.size)
    out, accepted, warm = [], 0, n_iter // 5
    for it in range(n_iter + warm):
        e = eps * rng.uniform(0.8, 1.2)
        n_steps = int(rng.integers(steps // 2, steps + 1))
        r = rng.standard_normal(mode.size)
        u1, r1 = u.copy(), r - 0.5 * e * dU(u)
        for k in range(n_steps):
            u1 = u1 + e * r1
            if k < n_steps - 1:
                r1 = r1 - e * dU(u1)
        r1 = r1 - 0.5 * e * dU(u1)
        log_a = U(u) + 0.5 * r @ r - U(u1) - 0.5 * r1 @ r1
        if np.log(rng.random()) < log_a:
            u = u1
            accepted += it >= warm
        if it >= warm:
            out.append(to_theta(u))
    return np.array(out), accepted / n_iter


def segment_target(X, y, o, sigma_b, sigma_w):
    """(negative log posterior, its gradient) of a segment on its active columns."""
    _, Xt = _design(X)
    prior = np.r_[1 / sigma_b ** 2, np.full(Xt.shape[1] - 1, 1 / sigma_w ** 2)]

    def f(theta):
        z = o + Xt @ theta
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * prior @ (theta * theta))

    def g(theta):
        return Xt.T @ (sigmoid(o + Xt @ theta) - y) + prior * theta

    return f, g


def validate_sampler(n_iter: int) -> None:
    """HMC against answers known exactly: a correlated Gaussian (preconditioned by a wrong
    precision, so the sampler has to correct it) and an intercept-only logistic posterior by
    quadrature."""
    rng = np.random.default_rng(7)
    A = rng.normal(size=(5, 5))
    cov = A @ A.T + 0.5 * np.eye(5)
    prec = np.linalg.inv(cov)
    mu = rng.normal(size=5)
    draws, acc = hmc(lambda t: 0.5 * (t - mu) @ prec @ (t - mu), lambda t: prec @ (t - mu), np.zeros(5),
                     prec * 1.5, n_iter, seed=1)
    sd = np.sqrt(np.diag(cov))
    print(f"  sampler check, Gaussian d=5 (preconditioned by 1.5x the precision): max |mean error| "
          f"{np.max(np.abs(draws.mean(0) - mu) / sd):.3f} sd, max |sd ratio - 1| "
          f"{np.max(np.abs(draws.std(0) / sd - 1)):.3f}, acceptance {acc:.2f}")
    y = (rng.random(40) < 0.15).astype(float)
    o = np.full(40, -1.5)
    X = sp.csr_matrix((40, 4))
    f, g = segment_target(X, y, o, 0.8, 0.3)
    grid = np.linspace(-5, 5, 20001)
    logp = np.array([-f(np.array([b])) for b in grid])
    w = np.exp(logp - logp.max())
    w /= w.sum()
    m = float(grid @ w)
    s = float(np.sqrt(((grid - m) ** 2) @ w))
    fit = laplace_fit(X, y, o, 0.8, 0.3)
    draws, acc = hmc(f, g, fit.theta, fit.precision, n_iter, seed=2)
    print(f"  sampler check, intercept-only logistic (40 rows, {int(y.sum())} clicks) vs quadrature: mean "
          f"{draws.mean():.4f} vs {m:.4f} ({abs(draws.mean() - m) / s:.3f} sd), sd {draws.std():.4f} vs {s:.4f}; "
          f"Laplace: mean {fit.theta[0]:.4f} ({abs(fit.theta[0] - m) / s:.3f} sd), sd "
          f"{1 / np.sqrt(fit.precision[0, 0]):.4f}; acceptance {acc:.2f}")


def run_mcmc(mcmc_fits: list, n_iter: int, prior: tuple[float, float] | None) -> None:
    print(f"\nLaplace vs reference HMC ({n_iter} draws after warm-up; targets: means within 0.1 posterior sd, "
          f"sds within 10 %)" + (f"; prior sigma_b {prior[0]}, sigma_w {prior[1]}" if prior else "; the run's prior"))
    validate_sampler(n_iter)
    for bucket, X, y, o, choice, fit in mcmc_fits:
        sigma_b, sigma_w = prior or (choice.sigma_b, choice.sigma_w)
        fit = laplace_fit(X, y, o, sigma_b, sigma_w)
        f, g = segment_target(X, y, o, sigma_b, sigma_w)
        t0 = time.perf_counter()
        draws, acc = hmc(f, g, fit.theta, fit.precision, n_iter, seed=bucket)
        secs = time.perf_counter() - t0
        sd = draws.std(0)
        cov = np.linalg.inv(fit.precision)
        z = np.abs(fit.theta - draws.mean(0)) / sd
        ratio = np.sqrt(np.diag(cov)) / sd
        # the segment's mean-logit direction (intercept + average row), what the CTR interval rests on
        _, Xt = _design(X)
        xbar = np.asarray(Xt.mean(axis=0)).ravel()
        proj = draws @ xbar
        zp = abs(fit.theta @ xbar - proj.mean()) / proj.std()
        rp = np.sqrt(xbar @ cov @ xbar) / proj.std()
        mc_se = 1 / np.sqrt(n_iter)
        print(f"  {bucket:5d} rows, {fit.theta.size:3d} parameters: means within 0.1 sd for "
              f"{np.mean(z < 0.1):6.1%} (max {z.max():.3f} sd); sds within 10 % for "
              f"{np.mean(np.abs(ratio - 1) < 0.1):6.1%} (ratios {ratio.min():.3f}-{ratio.max():.3f}); mean-row logit: "
              f"{zp:.3f} sd, sd ratio {rp:.3f}; HMC acceptance {acc:.2f}, {secs:.1f} s "
              f"(Monte Carlo error of a mean ~{mc_se:.3f} sd if draws were independent)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, default=3)
    ap.add_argument("--first-world", type=int, default=0,
                    help="seed of the first world (runs can cover different worlds)")
    ap.add_argument("--truth", choices=("sparse", "dense"), default="sparse",
                    help="segment level shifts on 2 fields (sd 0.3, the isotropic prior misspecified) or on all "
                         "12 (sd 0.1, the prior's own shape)")
    ap.add_argument("--per-bucket", type=int, default=20, help="segments per size bucket per world")
    ap.add_argument("--draws", type=int, default=400, help="posterior draws per interval")
    ap.add_argument("--eb-segments", type=int, default=30,
                    help="segments empirical Bayes chooses the prior scales on (evenly spaced over the buckets)")
    ap.add_argument("--mcmc", action="store_true", help="compare Laplace with a reference HMC on a few segments")
    ap.add_argument("--mcmc-iter", type=int, default=2000)
    ap.add_argument("--mcmc-prior", type=float, nargs=2, metavar=("SIGMA_B", "SIGMA_W"),
                    help="compare at this prior instead of the run's empirical-Bayes choice")
    args = ap.parse_args()
    started = time.perf_counter()
    print(f"truth {args.truth}: {args.worlds} worlds x {len(BUCKETS)} buckets x {args.per_bucket} segments, {TEST_ROWS} test rows each, "
          f"{args.draws} draws; load average {os.getloadavg()[0]:.1f}", flush=True)
    stats: dict = {}
    mcmc_fits: list = []
    for w in range(args.first_world, args.first_world + args.worlds):
        run_world(w, args.per_bucket, args.draws, args.eb_segments, args.truth, stats, mcmc_fits)

    n = args.worlds * args.per_bucket
    se = np.sqrt(LEVEL * (1 - LEVEL) / n)
    print(f"\ncoverage of the {LEVEL:.0%} interval of a segment's mean test CTR ({n} segments per bucket, binomial "
          f"se {se:.1%} at {LEVEL:.0%}); mean interval width in CTR points in brackets")
    print("  representation   " + "".join(f"{b:>17d}" for b in BUCKETS) + "    floats/segment by bucket")
    for rep in REPS:
        cells = "".join(f"{np.mean(stats[('cover', rep, b)]):9.1%} ({np.mean(stats[('width', rep, b)]):.3f})"
                        for b in BUCKETS)
        floats = " / ".join(f"{np.mean(stats[('floats', rep, b)]):.0f}" for b in BUCKETS)
        print(f"  {rep:16s} {cells}    {floats}")
    print("\nsd of the mean test row's logit (segment parameters only) relative to the full covariance's: median "
          "[5 %, 95 % quantiles] per bucket")
    for rep in REPS:
        cells = "".join(f"  {np.median(v):.3f} [{np.quantile(v, 0.05):.2f},{np.quantile(v, 0.95):.2f}]"
                        for v in (stats[("sdratio", rep, b)] for b in BUCKETS))
        print(f"  {rep:16s}{cells}")
    print("\ntest log-loss per bucket (rows pooled over worlds)")
    print("  model            " + "".join(f"{b:>10d}" for b in BUCKETS))
    for name in ("global", "independent", "bayes", "bayes-map", "truth"):
        vals = []
        for b in BUCKETS:
            pairs = stats[("ll", name, b)]
            vals.append(sum(v * k for v, k in pairs) / sum(k for _, k in pairs))
        print(f"  {name:16s} " + "".join(f"{v:10.4f}" for v in vals))
    print(f"\ncoverage of the {LEVEL:.0%} interval of realised clicks ({args.worlds * SETS} sets per kind, "
          f"se {np.sqrt(LEVEL * (1 - LEVEL) / (args.worlds * SETS)):.1%}); mean width / clicks in brackets")
    for kind in ("spread", "concentrated", "concentrated-per-row"):
        what = {"spread": "1000 random test impressions", "concentrated": "all test impressions of 3 segments",
                "concentrated-per-row": "same sets, independent draw per impression (wrong)"}[kind]
        print(f"  {kind:22s} {np.mean(stats[('agg', kind)]):6.1%} ({np.mean(stats[('aggw', kind)]):.2f})  {what}")
    print("\nfit time per segment, ms (Bayes: MAP + Laplace; factorization per representation; independent: "
          "SparseLogisticRegression or fallback)")
    print("  step             " + "".join(f"{b:>10d}" for b in BUCKETS))
    print("  bayes MAP        " + "".join(f"{1e3 * np.mean(stats[('map_s', b)]):10.2f}" for b in BUCKETS))
    for rep in REPS:
        print(f"  + {rep:14s} " + "".join(f"{1e3 * np.mean(stats[('fac_s', rep, b)]):10.2f}" for b in BUCKETS))
    print("  independent      " + "".join(f"{1e3 * np.mean(stats[('ind_s', b)]):10.2f}" for b in BUCKETS))
    print("  empirical Bayes choices (sigma_b, sigma_w): "
          + ", ".join(f"({b:.3f}, {w:.3f})" for b, w in stats["choices"]))
    print(f"  serving path, {stats['serving']}")
    if args.mcmc:
        run_mcmc(mcmc_fits, args.mcmc_iter, tuple(args.mcmc_prior) if args.mcmc_prior else None)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
