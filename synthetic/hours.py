"""One generated hour: its impression count and its random draws, shared by
:func:`synthetic.logs.generate_logs` and :func:`synthetic.frame.generate_frame` so the
files and the frame agree."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

import numpy as np

from synthetic.config import GeneratorConfig
from synthetic.effects import TruthArrays
from synthetic.world import Draws, World, draw_impressions, hexes

HOUR_MS = 3_600_000


def hour_counts(cfg: GeneratorConfig, world: World, day: int) -> np.ndarray:
    """Impressions per UTC hour of one day: the traffic curve with a little noise, summing to the daily total."""
    rng = np.random.default_rng([cfg.seed, 4, (cfg.start_date + timedelta(days=day)).toordinal()])
    share = world.utc_hour_share * np.exp(rng.normal(0.0, 0.05, size=24))
    share /= share.sum()
    raw = share * cfg.impressions_per_day
    counts = np.floor(raw).astype(np.int64)
    rest = cfg.impressions_per_day - int(counts.sum())
    if rest:
        counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    return counts


@dataclasses.dataclass
class HourDraws:
    """The random draws of one generated hour, in the one order both writers take them.
    ``rng`` is left after the click draw: the click delays come next from it."""

    hour_ms: int
    hour_dt: datetime
    abs_hour: int
    drifted: bool
    d: Draws
    t_ms: np.ndarray
    ids: list[str]
    req_ids: list[str]
    p: np.ndarray  # true click probability
    fault_u: np.ndarray  # uniforms deciding each line's fault
    dup_u: np.ndarray  # ... whether it is duplicated
    dup_later_u: np.ndarray  # ... whether the duplicate lands in a later hour
    dup_delay: np.ndarray  # ... how many hours later
    clicked: np.ndarray  # bool: the Bernoulli(p) click draw
    rng: np.random.Generator


def draw_hour(cfg: GeneratorConfig, world: World, arrays: dict[bool, TruthArrays], drift_date: date | None,
              start: datetime, hi: int, n: int) -> HourDraws:
    """Draw the ``n`` impressions of hour ``hi`` after ``start``: entities, times, ids, truth, fault and click uniforms."""
    hour_dt = start + timedelta(hours=hi)
    hour_ms = int(start.timestamp() * 1000) + hi * HOUR_MS
    drifted = drift_date is not None and hour_dt.date() >= drift_date
    abs_hour = hour_ms // HOUR_MS  # streams keyed by absolute time: adjacent ranges never repeat ids
    rng = np.random.default_rng([cfg.seed, 2, abs_hour])
    d = draw_impressions(world, rng, n, hour_dt.hour)
    t_ms = hour_ms + np.sort(rng.integers(0, HOUR_MS, size=n))
    ids = hexes(rng, n, 16)
    req_ids = hexes(rng, n, 20)
    z = arrays[drifted].logit(d, hour_dt.hour, hour_dt.weekday())
    p = 1.0 / (1.0 + np.exp(-z))
    fault_u, dup_u, dup_later_u = rng.random(n), rng.random(n), rng.random(n)
    dup_delay = rng.integers(1, 4, size=n)
    clicked = rng.random(n) < p
    return HourDraws(hour_ms, hour_dt, abs_hour, drifted, d, t_ms, ids, req_ids, p, fault_u, dup_u,
                     dup_later_u, dup_delay, clicked, rng)
