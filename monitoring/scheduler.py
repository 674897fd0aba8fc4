"""The retraining decision as a pure function: :func:`decide` (``Inputs`` + ``Policy`` -> ``Decision``).

Order of the checks (every one adds a line to ``reasons``, so a decision explains itself):

1. **In progress**: a training attempt is running -> wait.
2. **Failures**: after ``k`` consecutive failed attempts the next one waits
   ``backoff_base_minutes * 2**(k-1)`` (at most ``backoff_max_hours``); after ``max_retries``
   consecutive failures the scheduler gives up until a person runs a training (a success
   resets the count).
3. **Triggers** (reasons to retrain): no model in production; model age over
   ``max_age_hours`` (halved when the last retrain moved the weights by more than
   ``param_drift_threshold`` relative L2 — the data is moving fast); normalized entropy up
   more than ``ne_degradation_threshold`` over its baseline; calibration outside
   ``calibration_range``; a feature's PSI over ``psi_threshold``. No trigger -> wait.
4. **Too soon**: less than ``min_hours_between_trainings`` since the last training -> wait
   (unless there is no model at all).
5. **Budget**: estimated cost of a run (median duration of past training runs x
   ``cost_per_hour``; ``default_run_hours`` without history) plus what was spent in the
   last 7 days must stay within ``budget_per_week`` — except past ``hard_max_age_hours``,
   when a model is too old to keep serving whatever it costs.
6. **Worth it**: the expected gain — relative log-loss improvement: the measured NE
   degradation, plus ``drift_gain`` when features drifted, plus ``calibration_gain`` when
   calibration is off, plus ``staleness_gain_per_day`` per day of age — valued at
   ``value_per_logloss_percent`` per 1 % must be at least
   ``min_value_cost_ratio`` x the cost. The age trigger (a policy limit) and a missing
   model skip this check.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.errors import ConfigurationError

RETRAIN, WAIT, GIVE_UP = "retrain", "wait", "give_up"


@dataclass(frozen=True)
class Policy:
    """The scheduler's thresholds, cost model and retry limits."""

    max_age_hours: float = 168.0
    hard_max_age_hours: float = 336.0
    min_hours_between_trainings: float = 12.0
    ne_degradation_threshold: float = 0.02
    calibration_range: tuple[float, float] = (0.9, 1.1)
    psi_threshold: float = 0.2
    param_drift_threshold: float = 0.5
    cost_per_hour: float = 1.0
    budget_per_week: float = 20.0
    default_run_hours: float = 0.5
    value_per_logloss_percent: float = 2.0
    min_value_cost_ratio: float = 1.0
    staleness_gain_per_day: float = 0.001
    drift_gain: float = 0.01
    calibration_gain: float = 0.01
    backoff_base_minutes: float = 30.0
    backoff_max_hours: float = 12.0
    max_retries: int = 5

    def __post_init__(self):
        lo, hi = self.calibration_range
        if not lo < hi:
            raise ConfigurationError("calibration_range must be (low, high) with low < high")
        for name in ("max_age_hours", "hard_max_age_hours", "cost_per_hour", "default_run_hours",
                     "backoff_base_minutes", "backoff_max_hours"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.hard_max_age_hours < self.max_age_hours:
            raise ConfigurationError("hard_max_age_hours must be >= max_age_hours")
        if self.max_retries < 1:
            raise ConfigurationError("max_retries must be >= 1")


@dataclass(frozen=True)
class Attempt:
    """One training attempt made by the scheduler (newest last in ``Inputs.attempts``)."""

    started_at: datetime
    status: str  # "succeeded" | "failed" | "running"
    seconds: float | None = None


@dataclass(frozen=True)
class Inputs:
    """What the decision reads: the model's age, its live metrics, drift, past runs, spend and attempts."""

    now: datetime
    has_model: bool = True
    model_created_at: datetime | None = None  # the production (champion) version's registration time
    last_training_at: datetime | None = None  # newest registered version or successful attempt
    ne_recent: float | None = None  # normalized entropy of the latest mature day
    ne_baseline: float | None = None  # its trailing mean (or the model's test NE)
    calibration_recent: float | None = None
    max_feature_psi: float | None = None
    psi_field: str | None = None
    param_relative_change: float | None = None  # relative L2 weight change of the last retrain
    past_run_seconds: tuple[float, ...] = ()  # wall time of past training runs
    spent_last_week: float = 0.0  # cost of the training runs started in the last 7 days
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Decision:
    """What to do (``retrain``, ``wait`` or ``give_up``), why, and the cost and value weighed."""

    action: str  # "retrain" | "wait" | "give_up"
    reasons: tuple[str, ...]
    triggers: tuple[str, ...] = ()
    blockers: tuple[str, ...] = ()
    estimated_cost: float = 0.0
    expected_value: float = 0.0
    retry_at: datetime | None = None

    @property
    def retrain(self) -> bool:
        """Whether the decision is to retrain."""
        return self.action == RETRAIN

    def as_dict(self) -> dict[str, Any]:
        """The decision as a plain dict, with ``retrain`` added."""
        d = asdict(self)
        d["retrain"] = self.retrain
        return d


def _consecutive_failures(attempts: tuple[Attempt, ...]) -> list[Attempt]:
    out = []
    for a in reversed(attempts):
        if a.status != "failed":
            break
        out.append(a)
    return out


def backoff(failures: int, policy: Policy) -> timedelta:
    """Wait after ``failures`` consecutive failures: base x 2^(failures-1), capped."""
    if failures < 1:
        return timedelta(0)
    minutes = policy.backoff_base_minutes * 2 ** (failures - 1)
    return timedelta(minutes=min(minutes, policy.backoff_max_hours * 60))


def estimated_cost(inputs: Inputs, policy: Policy) -> tuple[float, str]:
    """Estimated cost of one training run and how it was estimated (median past duration x hourly cost)."""
    runs = [s for s in inputs.past_run_seconds if s is not None and s > 0]
    if runs:
        hours = statistics.median(runs) / 3600
        how = f"median of {len(runs)} past run(s) {hours * 60:.1f} min"
    else:
        hours = policy.default_run_hours
        how = f"no past runs: default {hours * 60:.0f} min"
    return hours * policy.cost_per_hour, how


def decide(inputs: Inputs, policy: Policy = Policy()) -> Decision:
    """Whether to retrain now, and why (see the module docstring)."""
    reasons: list[str] = []
    triggers: list[str] = []
    blockers: list[str] = []
    cost, how = estimated_cost(inputs, policy)
    reasons.append(f"estimated cost {cost:.2f} ({how} x {policy.cost_per_hour:g}/h)")

    def result(action, value=0.0, retry_at=None):
        return Decision(action, tuple(reasons), tuple(triggers), tuple(blockers), cost, value, retry_at)

    # 1. in progress
    if inputs.attempts and inputs.attempts[-1].status == "running":
        blockers.append("running")
        reasons.append(f"a training attempt started at {inputs.attempts[-1].started_at:%Y-%m-%d %H:%M} is running")
        return result(WAIT)

    # 2. failures and backoff
    failed = _consecutive_failures(inputs.attempts)
    retry_at = None
    if failed:
        if len(failed) >= policy.max_retries:
            blockers.append("retries_exhausted")
            reasons.append(f"{len(failed)} consecutive failed attempts reached the cap of {policy.max_retries}: "
                           "giving up until a training succeeds (run `ctr train` by hand after fixing the cause)")
            return result(GIVE_UP)
        retry_at = failed[0].started_at + backoff(len(failed), policy)
        if inputs.now < retry_at:
            blockers.append("backoff")
            reasons.append(f"{len(failed)} consecutive failed attempt(s): backing off "
                           f"{backoff(len(failed), policy)} until {retry_at:%Y-%m-%d %H:%M}")
            return result(WAIT, retry_at=retry_at)
        reasons.append(f"retry {len(failed) + 1} of {policy.max_retries} after {len(failed)} failure(s): "
                       f"backoff ended {retry_at:%Y-%m-%d %H:%M}")

    # 3. triggers
    age_h = None
    if not inputs.has_model:
        triggers.append("no_model")
        reasons.append("no model in production")
    else:
        max_age = policy.max_age_hours
        if inputs.param_relative_change is not None and inputs.param_relative_change > policy.param_drift_threshold:
            max_age /= 2
            reasons.append(f"the last retrain changed the weights by {inputs.param_relative_change:.1%} (> "
                           f"{policy.param_drift_threshold:.0%}): volatile data, age limit halved to {max_age:g} h")
        if inputs.model_created_at is not None:
            age_h = (inputs.now - inputs.model_created_at).total_seconds() / 3600
            if age_h >= max_age:
                triggers.append("age")
                reasons.append(f"model age {age_h:.1f} h >= limit {max_age:g} h")
            else:
                reasons.append(f"model age {age_h:.1f} h < limit {max_age:g} h")
        if inputs.ne_recent is not None and inputs.ne_baseline:
            change = inputs.ne_recent / inputs.ne_baseline - 1
            if change > policy.ne_degradation_threshold:
                triggers.append("degradation")
                reasons.append(f"normalized entropy {inputs.ne_recent:.4f} is {change:+.2%} over its baseline "
                               f"{inputs.ne_baseline:.4f} (> {policy.ne_degradation_threshold:.0%})")
            else:
                reasons.append(f"normalized entropy {change:+.2%} vs baseline (threshold "
                               f"{policy.ne_degradation_threshold:.0%})")
        else:
            reasons.append("no mature normalized-entropy figures to compare")
        lo, hi = policy.calibration_range
        if inputs.calibration_recent is not None:
            if not lo <= inputs.calibration_recent <= hi:
                triggers.append("calibration")
                reasons.append(f"calibration {inputs.calibration_recent:.3f} outside [{lo:g}, {hi:g}]")
            else:
                reasons.append(f"calibration {inputs.calibration_recent:.3f} within [{lo:g}, {hi:g}]")
        if inputs.max_feature_psi is not None:
            if inputs.max_feature_psi > policy.psi_threshold:
                triggers.append("feature_drift")
                reasons.append(f"feature drift: PSI {inputs.max_feature_psi:.3f} on {inputs.psi_field or '?'} > "
                               f"{policy.psi_threshold:g}")
            else:
                reasons.append(f"largest feature PSI {inputs.max_feature_psi:.3f} <= {policy.psi_threshold:g}")
    if not triggers:
        reasons.append("no trigger: keep the current model")
        return result(WAIT)

    # 4. too soon
    if inputs.has_model and inputs.last_training_at is not None:
        since = (inputs.now - inputs.last_training_at).total_seconds() / 3600
        if since < policy.min_hours_between_trainings:
            blockers.append("too_soon")
            reasons.append(f"last training {since:.1f} h ago < {policy.min_hours_between_trainings:g} h minimum")
            return result(WAIT, retry_at=inputs.last_training_at
                          + timedelta(hours=policy.min_hours_between_trainings))

    # 5. budget
    hard = age_h is not None and age_h >= policy.hard_max_age_hours
    if inputs.spent_last_week + cost > policy.budget_per_week:
        if hard:
            reasons.append(f"over budget ({inputs.spent_last_week:.2f} spent + {cost:.2f} > "
                           f"{policy.budget_per_week:g}/week) but the model is past the hard age limit "
                           f"{policy.hard_max_age_hours:g} h: retraining anyway")
        else:
            blockers.append("budget")
            reasons.append(f"over budget: {inputs.spent_last_week:.2f} spent in the last 7 days + {cost:.2f} > "
                           f"{policy.budget_per_week:g}/week")
            return result(WAIT)
    else:
        reasons.append(f"within budget: {inputs.spent_last_week:.2f} spent + {cost:.2f} <= "
                       f"{policy.budget_per_week:g}/week")

    # 6. worth it
    gain = 0.0
    if inputs.ne_recent is not None and inputs.ne_baseline:
        gain += max(inputs.ne_recent / inputs.ne_baseline - 1, 0.0)
    if "feature_drift" in triggers:
        gain += policy.drift_gain
    if "calibration" in triggers:
        gain += policy.calibration_gain
    if age_h is not None:
        gain += policy.staleness_gain_per_day * age_h / 24
    value = gain * 100 * policy.value_per_logloss_percent
    if not inputs.has_model:
        value = math.inf
    reasons.append(f"expected gain {gain:.2%} relative log-loss, worth {value:.2f} vs cost {cost:.2f}")
    if "age" not in triggers and "no_model" not in triggers and value < policy.min_value_cost_ratio * cost:
        blockers.append("not_worth_it")
        reasons.append(f"expected value below {policy.min_value_cost_ratio:g} x cost: not worth a run yet")
        return result(WAIT, value)
    reasons.append("retrain: " + ", ".join(triggers))
    return result(RETRAIN, value)


def inputs_as_dict(inputs: Inputs) -> dict[str, Any]:
    """The inputs as a plain dict, attempts included, for the decisions table."""
    d = asdict(inputs)
    d["attempts"] = [asdict(a) for a in inputs.attempts]
    return d


__all__ = ["Attempt", "Decision", "Inputs", "Policy", "backoff", "decide", "estimated_cost"]
