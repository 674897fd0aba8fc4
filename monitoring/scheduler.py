"""The retraining decision as a pure function: :func:`decide` (``Inputs`` + ``Policy`` -> ``Decision``).

Three possible actions besides waiting: a warm-started **update** (the champion's saved
FTRL state continued over the newest labelled days: cheap), a full **retrain** (search
and refit: expensive), or giving up after repeated failures. Order of the checks (every
one adds a line to ``reasons``, so a decision explains itself):

1. **In progress**: a training attempt is running -> wait.
2. **Failures**: after ``k`` consecutive failed attempts the next one waits
   ``backoff_base_minutes * 2**(k-1)`` (at most ``backoff_max_hours``); an attempt whose
   process was killed (``interrupted``) counts as a failure but is retried at once (the kill
   says nothing about the data); after ``max_retries`` consecutive failures the scheduler
   gives up until a person runs a training (a success resets the count).
3. **Triggers**: no model in production; age since the last full retrain over
   ``max_age_hours`` (halved when the last retrain moved the weights by more than
   ``param_drift_threshold`` relative L2 — the data is moving fast); normalized entropy up
   more than ``ne_degradation_threshold`` over its baseline; calibration outside
   ``calibration_range``; a feature's PSI over ``psi_threshold``; newly labelled days the
   champion has not seen (only when it can be updated). No trigger -> wait.
4. **Options**: a retrain is always possible; an update when the champion has a saved
   state and new labelled days, fewer than ``max_updates_between_retrains`` updates have
   run since the last retrain, and no trigger demands a retrain (no model, age). Each
   option is checked for being **too soon** (``min_hours_between_trainings`` since the last
   retrain; ``min_hours_between_updates`` since the last training of any kind), its
   **budget** (its own estimated cost: the median duration of past runs of that kind x
   ``cost_per_hour``, or ``default_run_hours`` / ``default_update_hours`` without history,
   plus the last 7 days' spend within ``budget_per_week``, except a retrain past
   ``hard_max_age_hours``) and whether it is **worth it**: the expected relative log-loss
   gain valued at ``value_per_logloss_percent`` per 1 % must be at least
   ``min_value_cost_ratio`` x its cost (a forced retrain skips this). A retrain's gain is
   the measured NE degradation, ``drift_gain`` when features drifted,
   ``calibration_gain`` when calibration is off and ``staleness_gain_per_day`` per day of
   the champion's age (or per new labelled day it has not seen, when more); an update recovers the staleness and calibration parts and
   ``update_share_of_degradation`` of the degradation, not the drift (new features or
   crosses need a search).
5. **Choice**: of the options left, the one with the largest value minus cost (ties to
   the cheaper). None left -> wait, with each option's blocker.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.errors import ConfigurationError

RETRAIN, UPDATE, WAIT, GIVE_UP = "retrain", "update", "wait", "give_up"


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
    default_update_hours: float = 0.05
    min_hours_between_updates: float = 1.0
    max_updates_between_retrains: int = 48
    update_share_of_degradation: float = 0.5
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
                     "default_update_hours", "backoff_base_minutes", "backoff_max_hours"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.hard_max_age_hours < self.max_age_hours:
            raise ConfigurationError("hard_max_age_hours must be >= max_age_hours")
        if self.max_retries < 1:
            raise ConfigurationError("max_retries must be >= 1")
        if self.max_updates_between_retrains < 0 or self.min_hours_between_updates < 0:
            raise ConfigurationError("max_updates_between_retrains and min_hours_between_updates must be >= 0")
        if not 0 <= self.update_share_of_degradation <= 1:
            raise ConfigurationError("update_share_of_degradation must be within [0, 1]")


@dataclass(frozen=True)
class Attempt:
    """One training attempt made by the scheduler (newest last in ``Inputs.attempts``)."""

    started_at: datetime
    status: str  # "succeeded" | "failed" | "running" | "interrupted" (its process was killed)
    seconds: float | None = None
    kind: str = RETRAIN  # "retrain" | "update"


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
    past_run_seconds: tuple[float, ...] = ()  # wall time of past training runs (full retrains)
    spent_last_week: float = 0.0  # cost of the training runs started in the last 7 days
    attempts: tuple[Attempt, ...] = ()
    last_retrain_at: datetime | None = None  # newest full retrain (default: last_training_at)
    update_available: bool = False  # the champion has a saved engine state to continue
    new_days: int = 0  # labelled (final) days newer than the champion's training data
    past_update_seconds: tuple[float, ...] = ()  # wall time of past updates
    updates_since_retrain: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do (``retrain``, ``wait`` or ``give_up``), why, and the cost and value weighed."""

    action: str  # "retrain" | "update" | "wait" | "give_up"
    reasons: tuple[str, ...]
    triggers: tuple[str, ...] = ()
    blockers: tuple[str, ...] = ()
    estimated_cost: float = 0.0
    expected_value: float = 0.0
    retry_at: datetime | None = None

    @property
    def retrain(self) -> bool:
        """Whether the decision is a full retrain."""
        return self.action == RETRAIN

    @property
    def acts(self) -> bool:
        """Whether the decision runs a training (a retrain or an update)."""
        return self.action in (RETRAIN, UPDATE)

    def as_dict(self) -> dict[str, Any]:
        """The decision as a plain dict, with ``retrain`` added."""
        d = asdict(self)
        d["retrain"] = self.retrain
        return d


def _consecutive_failures(attempts: tuple[Attempt, ...]) -> list[Attempt]:
    out = []
    for a in reversed(attempts):
        if a.status not in ("failed", "interrupted"):
            break
        out.append(a)
    return out


def backoff(failures: int, policy: Policy) -> timedelta:
    """Wait after ``failures`` consecutive failures: base x 2^(failures-1), capped."""
    if failures < 1:
        return timedelta(0)
    minutes = policy.backoff_base_minutes * 2 ** (failures - 1)
    return timedelta(minutes=min(minutes, policy.backoff_max_hours * 60))


def estimated_cost(inputs: Inputs, policy: Policy, kind: str = RETRAIN) -> tuple[float, str]:
    """Estimated cost of one run of ``kind`` and how it was estimated (median past duration x hourly cost)."""
    past = inputs.past_update_seconds if kind == UPDATE else inputs.past_run_seconds
    runs = [s for s in past if s is not None and s > 0]
    if runs:
        hours = statistics.median(runs) / 3600
        how = f"median of {len(runs)} past {'update' if kind == UPDATE else 'run'}(s) {hours * 60:.1f} min"
    else:
        hours = policy.default_update_hours if kind == UPDATE else policy.default_run_hours
        how = f"no past {kind}s: default {hours * 60:.0f} min"
    return hours * policy.cost_per_hour, how


def decide(inputs: Inputs, policy: Policy = Policy()) -> Decision:
    """Whether to update, retrain or wait now, and why (see the module docstring)."""
    reasons: list[str] = []
    triggers: list[str] = []
    blockers: list[str] = []
    cost, how = estimated_cost(inputs, policy)
    reasons.append(f"estimated cost {cost:.2f} of a retrain ({how} x {policy.cost_per_hour:g}/h)")

    def result(action, value=0.0, retry_at=None, spent=cost):
        return Decision(action, tuple(reasons), tuple(triggers), tuple(blockers), spent, value, retry_at)

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
        if failed[0].status == "interrupted":
            reasons.append(f"retry {len(failed) + 1} of {policy.max_retries}: the last attempt's process was "
                           "killed (interrupted), retrying without backoff")
            retry_at = None
        elif inputs.now < retry_at:
            blockers.append("backoff")
            reasons.append(f"{len(failed)} consecutive failed attempt(s): backing off "
                           f"{backoff(len(failed), policy)} until {retry_at:%Y-%m-%d %H:%M}")
            return result(WAIT, retry_at=retry_at)
        else:
            reasons.append(f"retry {len(failed) + 1} of {policy.max_retries} after {len(failed)} failure(s): "
                           f"backoff ended {retry_at:%Y-%m-%d %H:%M}")

    # 3. triggers
    age_h = model_age_h = None
    can_update = inputs.has_model and inputs.update_available and inputs.new_days > 0
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
            model_age_h = (inputs.now - inputs.model_created_at).total_seconds() / 3600
        retrained_at = inputs.last_retrain_at or inputs.model_created_at
        if retrained_at is not None:
            age_h = (inputs.now - retrained_at).total_seconds() / 3600
            if age_h >= max_age:
                triggers.append("age")
                reasons.append(f"model age {age_h:.1f} h >= limit {max_age:g} h (since the last full retrain)")
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
        if can_update:
            triggers.append("new_data")
            reasons.append(f"{inputs.new_days} labelled day(s) newer than the champion's data, and it has a "
                           "saved state to continue")
    if not triggers:
        reasons.append("no trigger: keep the current model")
        return result(WAIT)

    # 4. options: gain, cost, blockers of each
    degradation = 0.0
    if inputs.ne_recent is not None and inputs.ne_baseline:
        degradation = max(inputs.ne_recent / inputs.ne_baseline - 1, 0.0)
    # what the model has not seen: its age, or the labelled days after its data when more
    staleness = policy.staleness_gain_per_day * max((model_age_h or 0.0) / 24, float(inputs.new_days))
    calibration = policy.calibration_gain if "calibration" in triggers else 0.0
    drift = policy.drift_gain if "feature_drift" in triggers else 0.0
    forced = [t for t in ("no_model", "age") if t in triggers]
    hard = age_h is not None and age_h >= policy.hard_max_age_hours
    options: dict[str, tuple[float, float]] = {}  # kind -> (value, cost)
    values: dict[str, float] = {}  # kind -> expected value, blocked or not

    def consider(kind: str, gain: float, kind_cost: float, since: datetime | None, min_hours: float,
                 is_forced: bool) -> datetime | None:
        """Add ``kind`` to the options unless a blocker applies; returns when it may run if too soon."""
        if inputs.has_model and since is not None:
            hours_since = (inputs.now - since).total_seconds() / 3600
            if hours_since < min_hours:
                blockers.append("too_soon" if kind == RETRAIN else f"{kind}:too_soon")
                reasons.append(f"{kind}: last {'retrain' if kind == RETRAIN else 'training'} {hours_since:.1f} h ago "
                               f"< {min_hours:g} h minimum")
                return since + timedelta(hours=min_hours)
        if inputs.spent_last_week + kind_cost > policy.budget_per_week:
            if kind == RETRAIN and hard:
                reasons.append(f"retrain: over budget ({inputs.spent_last_week:.2f} spent + {kind_cost:.2f} > "
                               f"{policy.budget_per_week:g}/week) but the model is past the hard age limit "
                               f"{policy.hard_max_age_hours:g} h: retraining anyway")
            else:
                blockers.append("budget" if kind == RETRAIN else f"{kind}:budget")
                reasons.append(f"{kind}: over budget: {inputs.spent_last_week:.2f} spent in the last 7 days + "
                               f"{kind_cost:.2f} > {policy.budget_per_week:g}/week")
                return None
        value = math.inf if not inputs.has_model else gain * 100 * policy.value_per_logloss_percent
        values[kind] = value
        reasons.append(f"{kind}: expected gain {gain:.2%} relative log-loss, worth {value:.2f} vs cost {kind_cost:.2f}")
        if not is_forced and value < policy.min_value_cost_ratio * kind_cost:
            blockers.append("not_worth_it" if kind == RETRAIN else f"{kind}:not_worth_it")
            reasons.append(f"{kind}: expected value below {policy.min_value_cost_ratio:g} x cost: not worth a run yet")
            return None
        options[kind] = (value, kind_cost)
        return None

    retry_at = consider(RETRAIN, degradation + drift + calibration + staleness, cost,
                        inputs.last_retrain_at or inputs.last_training_at, policy.min_hours_between_trainings,
                        bool(forced))
    update_cost = 0.0
    if can_update:
        if forced:
            reasons.append(f"update: not enough ({', '.join(forced)} needs a full retrain)")
        elif inputs.updates_since_retrain >= policy.max_updates_between_retrains:
            reasons.append(f"update: {inputs.updates_since_retrain} updates since the last retrain reached the "
                           f"cap of {policy.max_updates_between_retrains}: a full retrain is due")
            triggers.append("update_cap")
        else:
            update_cost, update_how = estimated_cost(inputs, policy, UPDATE)
            reasons.append(f"estimated cost of an update {update_cost:.2f} ({update_how})")
            update_retry = consider(UPDATE, policy.update_share_of_degradation * degradation + calibration
                                    + staleness, update_cost, inputs.last_training_at,
                                    policy.min_hours_between_updates, False)
            retry_at = min([t for t in (retry_at, update_retry) if t is not None], default=None)

    # 5. choice
    if not options:
        return result(WAIT, max(values.values(), default=0.0), retry_at=retry_at)
    kind = max(options, key=lambda k: (options[k][0] - options[k][1], -options[k][1]))
    value, kind_cost = options[kind]
    reasons.append(f"{kind}: " + ", ".join(triggers))
    return result(kind, value, spent=kind_cost)


def inputs_as_dict(inputs: Inputs) -> dict[str, Any]:
    """The inputs as a plain dict, attempts included, for the decisions table."""
    d = asdict(inputs)
    d["attempts"] = [asdict(a) for a in inputs.attempts]
    return d


__all__ = ["Attempt", "Decision", "Inputs", "Policy", "backoff", "decide", "estimated_cost", "RETRAIN", "UPDATE"]
