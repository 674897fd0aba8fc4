"""The retraining decision (pure function): one case per rule, with the reasons it gives."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitoring.schedule_job import own_attempts
from monitoring.scheduler import Attempt, Inputs, Policy, backoff, decide, estimated_cost

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
P = Policy()


def inputs(**kw) -> Inputs:
    """A healthy production model: 2 days old, NE and calibration on target, no drift."""
    base = dict(now=NOW, has_model=True, model_created_at=NOW - timedelta(days=2),
                last_training_at=NOW - timedelta(days=2), ne_recent=0.80, ne_baseline=0.80,
                calibration_recent=1.0, max_feature_psi=0.05, psi_field="site_id",
                param_relative_change=0.1, past_run_seconds=(1800.0,), spent_last_week=0.0)
    base.update(kw)
    return Inputs(**base)


def hours(h: float) -> timedelta:
    return timedelta(hours=h)


def test_healthy_model_is_kept_and_every_check_is_explained():
    d = decide(inputs())
    assert d.action == "wait" and not d.retrain and d.triggers == () and d.blockers == ()
    text = "\n".join(d.reasons)
    for phrase in ("model age 48.0 h < limit 168 h", "normalized entropy +0.00%", "calibration 1.000 within",
                   "largest feature PSI 0.050", "no trigger"):
        assert phrase in text, text
    assert d.estimated_cost == pytest.approx(0.5)  # median past run 30 min x 1/h


def test_age_limit_triggers_even_when_gain_is_small():
    d = decide(inputs(model_created_at=NOW - hours(170), last_training_at=NOW - hours(170)))
    assert d.retrain and d.triggers == ("age",)
    assert any("model age 170.0 h >= limit 168 h" in r for r in d.reasons)
    assert d.expected_value == pytest.approx(0.001 * 170 / 24 * 100 * 2)


def test_volatile_parameters_halve_the_age_limit():
    d = decide(inputs(model_created_at=NOW - hours(90), last_training_at=NOW - hours(90),
                      param_relative_change=0.8))
    assert d.retrain and d.triggers == ("age",)
    assert any("age limit halved to 84 h" in r for r in d.reasons)
    assert not decide(inputs(model_created_at=NOW - hours(90), last_training_at=NOW - hours(90))).retrain


def test_degradation_worth_a_run():
    d = decide(inputs(ne_recent=0.824))  # +3 %
    assert d.retrain and d.triggers == ("degradation",)
    # gain 3 % + 2 days x 0.1 %/day = 3.2 % -> 3.2 x 2 per % = 6.4 against cost 0.5
    assert d.expected_value == pytest.approx(6.4)
    assert not decide(inputs(ne_recent=0.815)).retrain  # +1.9 %: under the 2 % threshold


def test_degradation_not_worth_an_expensive_run():
    d = decide(inputs(ne_recent=0.824, past_run_seconds=(36000.0,), spent_last_week=0.0),
               Policy(budget_per_week=1000))
    assert d.action == "wait" and d.blockers == ("not_worth_it",)
    assert d.estimated_cost == pytest.approx(10.0) and d.expected_value == pytest.approx(6.4)


def test_calibration_and_feature_drift_trigger():
    d = decide(inputs(calibration_recent=1.15))
    assert d.retrain and d.triggers == ("calibration",)
    assert d.expected_value == pytest.approx((0.01 + 0.002) * 100 * 2)
    d = decide(inputs(max_feature_psi=0.35, psi_field="device_type"))
    assert d.retrain and d.triggers == ("feature_drift",)
    assert any("PSI 0.350 on device_type > 0.2" in r for r in d.reasons)
    assert d.expected_value == pytest.approx((0.01 + 0.002) * 100 * 2)


def test_budget_blocks_until_the_hard_age_limit():
    over = dict(spent_last_week=19.8)
    d = decide(inputs(ne_recent=0.9, **over))
    assert d.action == "wait" and d.blockers == ("budget",)
    assert any("over budget: 19.80 spent in the last 7 days + 0.50 > 20/week" in r for r in d.reasons)
    old = decide(inputs(model_created_at=NOW - hours(400), last_training_at=NOW - hours(400), **over))
    assert old.retrain and any("past the hard age limit" in r for r in old.reasons)


def test_too_soon_after_the_last_training():
    d = decide(inputs(ne_recent=0.9, last_training_at=NOW - hours(3)))
    assert d.action == "wait" and d.blockers == ("too_soon",)
    assert d.retry_at == NOW - hours(3) + hours(12)


def test_no_model_trains_without_figures():
    d = decide(Inputs(now=NOW, has_model=False))
    assert d.retrain and d.triggers == ("no_model",)
    assert d.estimated_cost == pytest.approx(0.5)  # no history: the default run length


def test_running_attempt_waits():
    d = decide(inputs(ne_recent=0.9, attempts=(Attempt(NOW - hours(1), "running"),)))
    assert d.action == "wait" and d.blockers == ("running",)


def test_exponential_backoff_and_cap():
    assert [backoff(k, P) for k in (0, 1, 2, 3)] == [timedelta(0), timedelta(minutes=30), timedelta(minutes=60),
                                                     timedelta(minutes=120)]
    assert backoff(10, P) == timedelta(hours=12)  # capped
    bad = inputs(ne_recent=0.9)
    two = (Attempt(NOW - hours(5), "failed"), Attempt(NOW - timedelta(minutes=40), "failed"))
    d = decide(Inputs(**{**bad.__dict__, "attempts": two}))
    assert d.action == "wait" and d.blockers == ("backoff",)
    assert d.retry_at == NOW - timedelta(minutes=40) + timedelta(minutes=60)
    later = decide(Inputs(**{**bad.__dict__, "attempts": two, "now": NOW + timedelta(minutes=21)}))
    assert later.retrain and any("retry 3 of 5 after 2 failure(s)" in r for r in later.reasons)
    five = tuple(Attempt(NOW - hours(20 - k), "failed") for k in range(5))
    gave_up = decide(Inputs(**{**bad.__dict__, "attempts": five}))
    assert gave_up.action == "give_up" and gave_up.blockers == ("retries_exhausted",)
    # a success resets the count
    reset = (*five, Attempt(NOW - hours(13), "succeeded"))
    assert decide(Inputs(**{**bad.__dict__, "attempts": reset})).retrain


def test_cost_estimate_is_the_median_of_past_runs():
    cost, how = estimated_cost(inputs(past_run_seconds=(600.0, 1200.0, 36000.0)), Policy(cost_per_hour=3.0))
    assert cost == pytest.approx(1.0) and "median of 3 past run(s) 20.0 min" in how


def test_policy_validation():
    with pytest.raises(ValueError):
        Policy(calibration_range=(1.1, 0.9))
    with pytest.raises(ValueError):
        Policy(max_age_hours=0)
    with pytest.raises(ValueError):
        Policy(max_age_hours=400, hard_max_age_hours=300)


def test_attempt_history_from_decision_rows():
    def row(i, at, status, seconds=None):
        return {"decision_id": i, "action": "attempt", "decided_at": at, "attempt_status": status,
                "attempt_seconds": seconds}

    rows = [row("x", NOW - hours(30), "running"), row("x", NOW - hours(29), "failed", 3600.0),
            row("y", NOW - hours(2), "running"), row("z", NOW - hours(20), "running"),
            {"decision_id": "d", "action": "retrain", "decided_at": NOW, "attempt_status": "", "attempt_seconds": None}]
    got = own_attempts(rows, NOW)
    assert [(a.started_at, a.status) for a in got] == [
        (NOW - hours(30), "failed"),  # finished: its last row wins, started at its first row
        (NOW - hours(20), "failed"),  # still "running" after 20 h: its process died
        (NOW - hours(2), "running"),
    ]


def test_a_killed_attempt_is_interrupted_and_retried_at_once_up_to_the_cap():
    import subprocess

    from monitoring.schedule_job import owner_state, process_owner

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = process_owner().split()[0]
    assert owner_state(process_owner()) == "alive"
    assert owner_state(f"{host} {dead.pid} 1") == "gone"  # exited (or its pid reused by a process started later)
    assert owner_state(f"{host} 1 -1") == "gone"  # pid 1 runs, but not the process that started at tick -1
    assert owner_state(f"another-host {dead.pid} 1") == owner_state("") == "unknown"  # cannot be told
    # a live attempt stays running however long it runs; one that cannot be checked fails after 12 h
    old = {"decision_id": "o", "action": "attempt", "decided_at": NOW - hours(20), "attempt_status": "running",
           "attempt_seconds": None}
    assert [a.status for a in own_attempts([{**old, "attempt_owner": process_owner()}], NOW)] == ["running"]
    assert [a.status for a in own_attempts([{**old, "attempt_owner": "elsewhere 1 1"}], NOW)] == ["failed"]
    rows = [{"decision_id": "k", "action": "attempt", "decided_at": NOW - hours(1), "attempt_status": "running",
             "attempt_seconds": None, "attempt_owner": f"{host} {dead.pid} 1"}]
    assert [a.status for a in own_attempts(rows, NOW)] == ["interrupted"]

    bad = inputs(ne_recent=0.9)
    once = decide(Inputs(**{**bad.__dict__, "attempts": (Attempt(NOW - timedelta(minutes=5), "interrupted"),)}))
    assert once.retrain and once.retry_at is None and "backoff" not in once.blockers
    assert any("retry 2 of 5" in r and "interrupted" in r for r in once.reasons)
    killed = tuple(Attempt(NOW - hours(5 - k), "interrupted") for k in range(5))
    assert decide(Inputs(**{**bad.__dict__, "attempts": killed})).action == "give_up"


# -- the second, cheap action: a warm-started update ------------------------------------------

def updatable(**kw) -> Inputs:
    """A day-old champion with a saved state and one new labelled day; updates take 2 min."""
    base = dict(model_created_at=NOW - hours(24), last_training_at=NOW - hours(24), last_retrain_at=NOW - hours(24),
                update_available=True, new_days=1, past_update_seconds=(120.0,))
    base.update(kw)
    return inputs(**base)


def test_new_labelled_day_is_worth_an_update_not_a_retrain():
    d = decide(updatable())
    assert d.action == "update" and d.acts and not d.retrain and d.triggers == ("new_data",)
    assert d.estimated_cost == pytest.approx(120 / 3600)  # the update's own cost, not a retrain's
    text = "\n".join(d.reasons)
    assert "retrain: expected value below" in text and "estimated cost of an update 0.03" in text
    assert d.blockers == ("not_worth_it",)  # the retrain's, recorded beside the update it lost to


def test_without_a_saved_state_or_new_days_there_is_nothing_to_update():
    for kw in ({"update_available": False}, {"new_days": 0}):
        d = decide(updatable(**kw))
        assert d.action == "wait" and "new_data" not in d.triggers


def test_feature_drift_needs_a_retrain_even_when_an_update_is_possible():
    d = decide(updatable(max_feature_psi=0.5))
    assert d.action == "retrain" and set(d.triggers) == {"feature_drift", "new_data"}
    assert any(r.startswith("update: expected gain") for r in d.reasons)  # weighed, and lost on value - cost


def test_age_since_the_last_full_retrain_forces_a_retrain_over_updates():
    d = decide(updatable(last_retrain_at=NOW - hours(200)))
    assert d.action == "retrain" and "age" in d.triggers
    assert any("update: not enough (age needs a full retrain)" in r for r in d.reasons)


def test_update_cap_then_retrain():
    d = decide(updatable(updates_since_retrain=P.max_updates_between_retrains))
    assert "update_cap" in d.triggers and d.action == "wait"  # the retrain alone is not worth it
    d = decide(updatable(updates_since_retrain=P.max_updates_between_retrains, ne_recent=0.84))
    assert d.action == "retrain"


def test_updates_have_their_own_minimum_interval():
    d = decide(updatable(last_training_at=NOW - hours(0.5)))
    assert d.action == "wait" and "update:too_soon" in d.blockers
    assert d.retry_at == NOW + hours(0.5)
    assert decide(updatable(last_training_at=NOW - hours(1.5))).action == "update"
