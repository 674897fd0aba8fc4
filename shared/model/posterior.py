"""Per-segment Laplace posteriors on the serving side: credible intervals, Thompson samples,
aggregated clicks. Pure numpy, no training code.

A segment ``s`` scores a row ``x`` (flat column / value entries) as

    logit p = [global intercept + x . w_global] + b_s + x . delta_s

with ``theta_s = (b_s, delta_s on the segment's sorted active columns)`` a posterior draw
``mean_s + F_s @ z + scale_s * z'`` (``z``, ``z'`` independent standard normals; ``F_s`` of shape
``(k_s + 1, r_s)``, row 0 the intercept, row ``1 + j`` the weight on ``indices[j]``). A column
outside the active ones has ``delta = 0`` at the mean and, in a draw, its own ``N(0, sigma_w_s^2)``
value (the prior: the segment never saw it). The mean logit is exactly the point model's.

Every draw is one draw of each segment's parameters shared by all rows of that segment in
the call (and by rows sharing an unseen column): independent draws per row would make an
aggregate's interval far too narrow. Draws come from ``numpy.random.default_rng(seed)`` and
the same call with the same seed gives the same numbers; a row's draws depend on the other
rows of the call (which parameters are touched), not only on the row.

Rows whose segment position is -1 (no posterior) get the global model with no uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shared.model.scoring import sigmoid, sorted_pairs_margin

__all__ = ["ClickAggregate", "CtrInterval", "GlobalModel", "PosteriorSet", "SegmentPosterior", "aggregate_clicks",
           "point_logit", "posterior_ctr", "thompson_ctr"]

#: The global model as (sorted column indices, weights, intercept), training's ``GlobalArrays``.
GlobalModel = tuple[np.ndarray, np.ndarray, float]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

#: Entries of a (rows x draws) block computed at once (memory bound of the draw loops).
_BLOCK = 1 << 21


@dataclass(frozen=True)
class SegmentPosterior:
    """One segment's Gaussian posterior over ``theta = (b, delta[indices])``.

    ``intercept``: mean of ``b`` (added to the global intercept); ``indices`` int64 [k] sorted
    active columns; ``weights`` float64 [k] mean of ``delta`` on them; ``factor`` float64
    [k + 1, r] (r = 0: none); ``scale`` float64 [k + 1] sd of the independent diagonal term
    (zeros: none); ``sigma_w`` prior sd of ``delta`` on every other column. Covariance of
    theta: ``factor @ factor.T + diag(scale**2)``."""

    intercept: float
    indices: Ints
    weights: Floats
    factor: Floats
    scale: Floats
    sigma_w: float

    @classmethod
    def prior(cls, sigma_b: float, sigma_w: float) -> "SegmentPosterior":
        """A segment without data: the global model at the mean, the prior around it."""
        return cls(0.0, np.zeros(0, np.int64), np.zeros(0), np.zeros((1, 0)), np.array([float(sigma_b)]),
                   float(sigma_w))

    @property
    def mean(self) -> Floats:
        """``theta``'s mean: intercept first, then the weights."""
        return np.concatenate([[self.intercept], self.weights])

    @property
    def covariance(self) -> Floats:
        """``theta``'s covariance (dense (k + 1) x (k + 1); for checks, not for serving)."""
        return np.asarray(self.factor @ self.factor.T + np.diag(self.scale ** 2), dtype=np.float64)

    def draw(self, n: int, rng: np.random.Generator) -> Floats:
        """``n`` draws of theta, shape (n, k + 1)."""
        z = rng.standard_normal((self.factor.shape[1], n))
        z2 = rng.standard_normal((self.scale.size, n))
        return np.asarray(self.mean[:, None] + self.factor @ z + self.scale[:, None] * z2, dtype=np.float64).T


@dataclass(frozen=True)
class PosteriorSet:
    """S segments' posteriors as flat arrays (what a bundle file stores; see :meth:`arrays`).

    ``intercepts`` float64 [S]; ``offsets`` int64 [S + 1]: segment s owns weight entries
    ``offsets[s]:offsets[s + 1]`` of ``indices`` (int64, strictly increasing per segment) and
    ``weights`` (float64); its theta block (intercept first) is ``offsets[s] + s :
    offsets[s + 1] + s + 1`` of ``scale`` (float64 [nnz + S]); ``ranks`` int64 [S]: columns
    r_s of its factor, stored row-major as ``factor[factor_offsets[s]:factor_offsets[s + 1]]``
    (float64, ``factor_offsets`` = cumulated (k_s + 1) * r_s); ``sigma_w`` float64 [S];
    ``bits``: 2**bits columns, as the global model."""

    bits: int
    intercepts: Floats
    offsets: Ints
    indices: Ints
    weights: Floats
    ranks: Ints
    factor: Floats
    scale: Floats
    sigma_w: Floats
    _composite: Ints = field(init=False, repr=False, compare=False)  # (segment << bits) | column, sorted
    _factor_offsets: Ints = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = self.intercepts.size
        sizes = np.diff(self.offsets) + 1
        fo = np.zeros(s + 1, dtype=np.int64)
        np.cumsum(sizes * self.ranks, out=fo[1:])
        problems = []
        if self.offsets.shape != (s + 1,) or self.offsets[0] != 0 or self.offsets[-1] != self.indices.size:
            problems.append("offsets do not delimit the entries")
        if self.weights.shape != self.indices.shape or self.scale.shape != (self.indices.size + s,):
            problems.append("weights / scale have the wrong length")
        if self.ranks.shape != (s,) or self.sigma_w.shape != (s,) or self.factor.shape != (int(fo[-1]),):
            problems.append("ranks / sigma_w / factor have the wrong length")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= (1 << self.bits)):
            problems.append("indices outside [0, 2**bits)")
        if problems:
            raise ValueError("inconsistent posterior set: " + "; ".join(problems))
        seg = np.repeat(np.arange(s, dtype=np.int64), np.diff(self.offsets))
        composite = (seg << np.int64(self.bits)) | self.indices
        if composite.size > 1 and np.any(np.diff(composite) <= 0):
            raise ValueError("inconsistent posterior set: indices must be strictly increasing per segment")
        object.__setattr__(self, "_composite", composite)
        object.__setattr__(self, "_factor_offsets", fo)

    @classmethod
    def from_segments(cls, posteriors: Sequence[SegmentPosterior], bits: int) -> "PosteriorSet":
        """Pack posteriors (their order is their position)."""
        offsets = np.zeros(len(posteriors) + 1, dtype=np.int64)
        np.cumsum([p.indices.size for p in posteriors], out=offsets[1:])

        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        return cls(bits=int(bits), intercepts=np.array([p.intercept for p in posteriors], dtype=np.float64),
                   offsets=offsets, indices=cat([p.indices for p in posteriors], np.int64),
                   weights=cat([p.weights for p in posteriors], np.float64),
                   ranks=np.array([p.factor.shape[1] for p in posteriors], dtype=np.int64),
                   factor=cat([p.factor.ravel() for p in posteriors], np.float64),
                   scale=cat([p.scale for p in posteriors], np.float64),
                   sigma_w=np.array([p.sigma_w for p in posteriors], dtype=np.float64))

    def segment(self, s: int) -> SegmentPosterior:
        """Segment ``s`` as a :class:`SegmentPosterior`."""
        a, b = int(self.offsets[s]), int(self.offsets[s + 1])
        fo = self._factor_offsets
        return SegmentPosterior(float(self.intercepts[s]), self.indices[a:b], self.weights[a:b],
                                self.factor[fo[s]:fo[s + 1]].reshape(b - a + 1, int(self.ranks[s])),
                                self.scale[a + s:b + s + 1], float(self.sigma_w[s]))

    def arrays(self) -> dict[str, np.ndarray | np.int64]:
        """The arrays to store (``np.savez``; read back with ``PosteriorSet(**arrays)``, bits an int)."""
        return {"bits": np.int64(self.bits), "intercepts": self.intercepts, "offsets": self.offsets,
                "indices": self.indices, "weights": self.weights, "ranks": self.ranks, "factor": self.factor,
                "scale": self.scale, "sigma_w": self.sigma_w}


@dataclass(frozen=True)
class CtrInterval:
    """Per row: posterior mean CTR and the central credible interval (float64 [n] each)."""

    mean: Floats
    lower: Floats
    upper: Floats


@dataclass(frozen=True)
class ClickAggregate:
    """Clicks of a set of rows: ``expected`` (posterior mean of the sum of CTRs) with its
    central interval ``lower``/``upper`` (parameter uncertainty only), and the interval of
    *realised* clicks ``realised_lower``/``realised_upper`` (plus the Bernoulli noise of each
    impression). ``samples``: the per-draw sums of CTRs (float64 [draws]), ``realised``: per-draw
    simulated clicks (int64 [draws]), for combining further."""

    expected: float
    lower: float
    upper: float
    realised_lower: float
    realised_upper: float
    samples: Floats
    realised: Ints


class _Design:
    """A batch's rows against a posterior set: the mean logit per row and a sparse map
    ``E`` (rows x random parameters) such that a draw's logits are ``mean + E @ draws``."""

    def __init__(self, post: PosteriorSet, glob: GlobalModel, positions: np.ndarray, col: np.ndarray,
                 val: np.ndarray | None, row_ids: np.ndarray) -> None:
        n = positions.size
        col = np.asarray(col, dtype=np.int64)
        row_ids = np.asarray(row_ids, dtype=np.int64)
        v = np.ones(col.size) if val is None else np.asarray(val, dtype=np.float64)
        positions = np.asarray(positions, dtype=np.int64)
        g_idx, g_w, g_b = glob
        has = positions >= 0
        seg_pos = np.maximum(positions, 0)
        self.mean = float(g_b) + sorted_pairs_margin(col, v, row_ids, n, g_idx, g_w)
        self.mean += np.where(has, post.intercepts[seg_pos] if post.intercepts.size else 0.0, 0.0)
        ent_seg = positions[row_ids]
        sel = ent_seg >= 0
        key = (ent_seg[sel] << np.int64(post.bits)) | col[sel]
        ent_row, ent_val = row_ids[sel], v[sel]
        comp = post._composite
        pos = np.minimum(np.searchsorted(comp, key), max(comp.size - 1, 0))
        hit = comp[pos] == key if comp.size else np.zeros(key.size, dtype=bool)
        self.mean += np.bincount(ent_row[hit], weights=ent_val[hit] * post.weights[pos[hit]], minlength=n)
        # random parameters: theta entries (flat index into scale) of the segments, then unseen columns
        seg_rows = np.flatnonzero(has)
        theta = np.concatenate([post.offsets[positions[seg_rows]] + positions[seg_rows],  # intercepts
                                pos[hit] + ent_seg[sel][hit] + 1])
        rows = np.concatenate([seg_rows, ent_row[hit]])
        vals = np.concatenate([np.ones(seg_rows.size), ent_val[hit]])
        self.theta, inv = np.unique(theta, return_inverse=True)
        unseen, inv2 = np.unique(key[~hit], return_inverse=True)
        self.unseen_seg = unseen >> np.int64(post.bits)
        m = self.theta.size + unseen.size
        self.E = sp.csr_matrix((np.concatenate([vals, ent_val[~hit]]),
                                (np.concatenate([rows, ent_row[~hit]]), np.concatenate([inv, self.theta.size + inv2]))),
                               shape=(n, m))
        self.post = post

    def draws(self, n_draws: int, rng: np.random.Generator) -> Floats:
        """(random parameters x n_draws) deviations from the mean: one draw per segment per column."""
        post = self.post
        out = np.empty((self.theta.size + self.unseen_seg.size, n_draws))
        if self.theta.size:
            # the segment of each touched theta entry: the last block start at or before it
            starts = post.offsets[:-1] + np.arange(post.intercepts.size)
            seg = np.searchsorted(starts, self.theta, side="right") - 1
            bounds = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1], True])
            fo = post._factor_offsets
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                s = int(seg[lo])
                size, r = int(post.offsets[s + 1] - post.offsets[s] + 1), int(post.ranks[s])
                local = self.theta[lo:hi] - starts[s]
                block = post.factor[fo[s]:fo[s + 1]].reshape(size, r)[local]
                out[lo:hi] = block @ rng.standard_normal((r, n_draws))
                out[lo:hi] += post.scale[self.theta[lo:hi], None] * rng.standard_normal((hi - lo, n_draws))
        if self.unseen_seg.size:
            out[self.theta.size:] = post.sigma_w[self.unseen_seg, None] * rng.standard_normal(
                (self.unseen_seg.size, n_draws))
        return out

    def ctr_blocks(self, n_draws: int, rng: np.random.Generator) -> Iterator[tuple[slice, Floats]]:
        """(row slice, CTR draws (rows x n_draws)) blocks, at most ``_BLOCK`` entries each."""
        dev = self.draws(n_draws, rng)
        n = self.mean.size
        step = max(1, _BLOCK // max(n_draws, 1))
        for a in range(0, n, step):
            b = min(n, a + step)
            yield slice(a, b), sigmoid(self.mean[a:b, None] + np.asarray(self.E[a:b] @ dev))


def _check(post: PosteriorSet, positions: np.ndarray, col: np.ndarray, row_ids: np.ndarray,
           val: np.ndarray | None) -> None:
    """Refuse inconsistent batches (a bad index would silently score the wrong segment)."""
    if positions.ndim != 1 or col.shape != row_ids.shape or (val is not None and np.shape(val) != col.shape):
        raise ValueError("positions, col, val and row_ids must be flat arrays (col, val, row_ids of one length)")
    if positions.size and (positions.min() < -1 or positions.max() >= post.intercepts.size):
        raise ValueError(f"segment positions must be in [-1, {post.intercepts.size})")
    if row_ids.size and (row_ids.min() < 0 or row_ids.max() >= positions.size):
        raise ValueError(f"row ids must be in [0, {positions.size})")


def posterior_ctr(post: PosteriorSet, glob: GlobalModel, positions: npt.ArrayLike, col: np.ndarray,
                  val: np.ndarray | None, row_ids: np.ndarray, *, level: float = 0.9, draws: int = 1000,
                  seed: int = 0) -> CtrInterval:
    """Posterior mean CTR and central ``level`` credible interval per row, from ``draws``
    posterior draws (one per segment per draw, shared by its rows).

    ``positions`` int [n]: each row's segment position in ``post`` (-1: the global model, no
    uncertainty); ``col`` / ``val`` (None: all 1.0) / ``row_ids``: the rows' feature entries,
    flat, as :meth:`shared.model.bundle.SegmentBundle.margins` takes them."""
    positions = np.asarray(positions, dtype=np.int64)
    _check(post, positions, np.asarray(col), np.asarray(row_ids), val)
    if not 0 < level < 1 or draws < 2:
        raise ValueError("level must be in (0, 1) and draws >= 2")
    design = _Design(post, glob, positions, col, val, row_ids)
    n = positions.size
    mean, lower, upper = np.empty(n), np.empty(n), np.empty(n)
    q = [(1 - level) / 2, (1 + level) / 2]
    for rows, p in design.ctr_blocks(draws, np.random.default_rng(seed)):
        mean[rows] = p.mean(axis=1)
        lower[rows], upper[rows] = np.quantile(p, q, axis=1)
    return CtrInterval(mean, lower, upper)


def point_logit(post: PosteriorSet, glob: GlobalModel, positions: npt.ArrayLike, col: np.ndarray,
                val: np.ndarray | None, row_ids: np.ndarray) -> Floats:
    """Logit per row at the posterior mean (the point model: global margin + segment mean
    shift), without draws. Arguments as :func:`posterior_ctr`."""
    positions = np.asarray(positions, dtype=np.int64)
    _check(post, positions, np.asarray(col), np.asarray(row_ids), val)
    return _Design(post, glob, positions, col, val, row_ids).mean


def thompson_ctr(post: PosteriorSet, glob: GlobalModel, positions: npt.ArrayLike, col: np.ndarray,
                 val: np.ndarray | None, row_ids: np.ndarray, *, seed: int | None = None) -> Floats:
    """One posterior sample of the CTR per row (Thompson sampling): one draw of each
    segment's parameters, shared by all its rows in the call. Arguments as :func:`posterior_ctr`;
    ``seed`` None draws fresh entropy (serving), an int reproduces."""
    positions = np.asarray(positions, dtype=np.int64)
    _check(post, positions, np.asarray(col), np.asarray(row_ids), val)
    design = _Design(post, glob, positions, col, val, row_ids)
    dev = design.draws(1, np.random.default_rng(seed))
    return sigmoid(design.mean + np.asarray(design.E @ dev).ravel())


def aggregate_clicks(post: PosteriorSet, glob: GlobalModel, positions: npt.ArrayLike, col: np.ndarray,
                     val: np.ndarray | None, row_ids: np.ndarray, *, level: float = 0.9, draws: int = 1000,
                     seed: int = 0) -> ClickAggregate:
    """Expected clicks of the set of rows, with central ``level`` intervals for the expected
    and the realised clicks. Draw ``t`` takes one parameter draw per segment (shared by all its
    rows), sums the rows' CTRs (``samples[t]``) and simulates each row's click as a Bernoulli of
    its CTR (``realised[t]``: exact for any set size, where a normal approximation of the
    Poisson-binomial fails on sets with few expected clicks; it costs one uniform per CTR
    already computed). Arguments as :func:`posterior_ctr`."""
    positions = np.asarray(positions, dtype=np.int64)
    _check(post, positions, np.asarray(col), np.asarray(row_ids), val)
    if not 0 < level < 1 or draws < 2:
        raise ValueError("level must be in (0, 1) and draws >= 2")
    design = _Design(post, glob, positions, col, val, row_ids)
    rng = np.random.default_rng(seed)
    samples, realised = np.zeros(draws), np.zeros(draws, dtype=np.int64)
    for _, p in design.ctr_blocks(draws, rng):
        samples += p.sum(axis=0)
        realised += (rng.random(p.shape) < p).sum(axis=0)
    q = [(1 - level) / 2, (1 + level) / 2]
    lo, hi = np.quantile(samples, q)
    rlo, rhi = np.quantile(realised, q, method="inverted_cdf")
    return ClickAggregate(float(samples.mean()), float(lo), float(hi), float(rlo), float(rhi), samples, realised)
