"""The tiny monitoring world of :mod:`monitoring_support` (the fixture ``world``) was built
and the monitoring job ran every part on it."""

from __future__ import annotations

from monitoring_support import DAY_A, DAY_B


def test_world_ran_every_part(world):
    run = world.run
    assert run.days == [DAY_A.isoformat(), DAY_B.isoformat()]
    assert run.metrics.rows.num_rows > 0 and run.feature_drift_rows and run.alerts.alerts
    assert set(run.seconds) == {"metrics", "feature_drift", "alerts"}
