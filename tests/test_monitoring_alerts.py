"""Alert rules: pure evaluation cases, rule-file validation, and the firings of the world's
monitoring run (alerts table + webhook received by a real HTTP server on 127.0.0.1), then
``ctr monitor --check`` through the real CLI: exit status 1 when an alert fires, 0 when
none does, and a re-run of a day replacing its metric partition in exactly one commit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitoring.alerts import RuleSet, Rule, evaluate, load_rules
from monitoring_support import AS_OF, DAY_A, DAY_B

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def metric_row(day: int, ne: float, calibration: float = 1.0, version: str = "1", mature: bool = True,
               impressions: int = 5000, window: str = "day") -> dict:
    start = T0 + timedelta(days=day)
    return {"model_version": version, "window": window, "window_start": start, "slice_field": "overall",
            "slice_value": "all", "impressions": impressions, "mature": mature, "normalized_entropy": ne,
            "calibration": calibration, "date": start.date()}


NE_RULE = Rule(name="ne", source="metrics", metric="normalized_entropy", kind="relative_increase",
               threshold=0.02, trailing_days=7, min_history=3)
CAL_RULE = Rule(name="cal", source="metrics", metric="calibration", kind="range", min=0.9, max=1.1,
                min_impressions=1000, severity="critical")


def test_relative_increase_against_the_trailing_mean():
    history = [metric_row(d, 0.80) for d in range(7)]
    day = (T0 + timedelta(days=7)).date()
    up = evaluate(RuleSet((NE_RULE,)), days=[day], metrics=history + [metric_row(7, 0.8161)])
    assert len(up) == 1 and up[0]["value"] == pytest.approx(0.8161)
    assert "+2.01%" in up[0]["message"] and up[0]["date"] == day
    assert not evaluate(RuleSet((NE_RULE,)), days=[day], metrics=history + [metric_row(7, 0.8159)])
    # only the 7 days before count: a bad day 8 days earlier does not move the baseline
    old = [metric_row(-1, 5.0)]
    assert len(evaluate(RuleSet((NE_RULE,)), days=[day], metrics=old + history + [metric_row(7, 0.8161)])) == 1
    # too little history: no verdict
    assert not evaluate(RuleSet((NE_RULE,)), days=[day], metrics=history[-2:] + [metric_row(7, 2.0)])
    # another version's history is not this version's baseline
    other = [metric_row(d, 0.5, version="2") for d in range(7)]
    assert len(evaluate(RuleSet((NE_RULE,)), days=[day], metrics=other + history + [metric_row(7, 0.8161)])) == 1


def test_range_rule_respects_maturity_volume_and_days():
    day = T0.date()
    rows = [metric_row(0, 0.8, calibration=1.2)]
    fired = evaluate(RuleSet((CAL_RULE,)), days=[day], metrics=rows)
    assert [(a["rule"], a["severity"], a["threshold"]) for a in fired] == [("cal", "critical", "[0.9, 1.1]")]
    assert not evaluate(RuleSet((CAL_RULE,)), days=[day], metrics=[metric_row(0, 0.8, 1.2, mature=False)])
    assert not evaluate(RuleSet((CAL_RULE,)), days=[day], metrics=[metric_row(0, 0.8, 1.2, impressions=10)])
    assert not evaluate(RuleSet((CAL_RULE,)), days=[day], metrics=[metric_row(0, 0.8, 1.2, window="hour")])
    assert not evaluate(RuleSet((CAL_RULE,)), days=[day + timedelta(days=1)], metrics=rows)
    assert not evaluate(RuleSet((CAL_RULE,)), days=[day], metrics=[metric_row(0, 0.8, calibration=0.95)])
    # ids are stable: re-evaluating the same window gives the same alert id
    assert fired[0]["alert_id"] == evaluate(RuleSet((CAL_RULE,)), days=[day], metrics=rows)[0]["alert_id"]


def test_default_rules_and_validation(tmp_path):
    rules = load_rules()
    assert {r.name: r.kind for r in rules.rules} == {
        "calibration_out_of_range": "range", "normalized_entropy_degradation": "relative_increase",
        "feature_psi": "above"}
    cal = rules.rules[0]
    assert (cal.min, cal.max) == (0.9, 1.1)
    assert rules.rules[1].threshold == 0.02 and rules.rules[1].trailing_days == 7
    assert rules.rules[2].threshold == 0.2 and rules.history_days == 7
    assert rules.rules[2].exclude_fields == ()  # calendar fields are compared weekday to weekday
    bad = tmp_path / "bad.toml"
    for text, message in [
        ('[[rules]]\nname = "x"\nsource = "metrics"\nmetric = "nope"\nkind = "above"\nthreshold = 1\n', "nope"),
        ('[[rules]]\nname = "x"\nsource = "metrics"\nmetric = "auc"\nkind = "range"\n', "min and/or max"),
        ('[[rules]]\nname = "x"\nsource = "metrics"\nmetric = "auc"\nkind = "above"\nthreshold = 1\ntypo = 2\n',
         "typo"),
        ('[[rules]]\nname = "x"\nsource = "feature_drift"\nmetric = "psi"\nkind = "relative_increase"\n'
         'threshold = 1\n', "relative_increase"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_rules(bad)


def test_drift_rule_excludes_fields():
    def drift_row(field, value):
        return {"model_version": "1", "window": "day", "window_start": T0, "field": field, "psi": value,
                "reference": "ref", "date": T0.date()}

    rule = Rule(name="psi", source="feature_drift", metric="psi", kind="above", threshold=0.2,
                exclude_fields=("day_of_week",))
    rows = [drift_row("day_of_week", 5.0), drift_row("site_id", 0.3), drift_row("os", 0.1)]
    fired = evaluate(RuleSet((rule,)), days=[T0.date()], feature_drift=rows)
    assert [(a["slice_field"], a["slice_value"], a["value"]) for a in fired] == [("field", "site_id", 0.3)]


@pytest.mark.spark
def test_world_alerts_table_log_and_webhook(world, spark):
    from monitoring import tables

    run_alerts = {(a["rule"], a["date"], a["slice_value"], a["model_version"]) for a in world.run.alerts.alerts}
    # day A: calibration 0.7 (overall, mature) and the site mix (PSI 0.0511 > 0.04)
    assert ("calibration_out_of_range", DAY_A, "all", "1") in run_alerts
    assert ("feature_psi", DAY_A, "site_id", "1") in run_alerts
    # day B's calibration is not judged: its labels are not mature
    assert not any(r == "calibration_out_of_range" and d == DAY_B for r, d, _, _ in run_alerts)
    assert all(a["webhook_status"] == "200" for a in world.run.alerts.alerts)
    posted = {body["alert"]["alert_id"]: (path, ctype) for path, ctype, body in world.received}
    assert set(posted) >= {a["alert_id"] for a in world.run.alerts.alerts}
    assert all(v == ("/alerts", "application/json") for v in posted.values())
    stored = tables.read(spark, world.settings, tables.ALERTS).to_pylist()
    assert {a["alert_id"] for a in stored} == {a["alert_id"] for a in world.run.alerts.alerts}
    cal = [a for a in stored if a["rule"] == "calibration_out_of_range"][0]
    assert cal["value"] == pytest.approx(0.7) and cal["source"] == "monitor_metrics"


@pytest.mark.spark
def test_monitor_check_exit_status_and_idempotent_rerun(world, spark, tmp_path, capsys, caplog):
    from delta.tables import DeltaTable

    from monitoring import tables
    from ctr.cli import main

    path = world.settings.table_path(tables.METRICS)
    dropped = {"run_id", "computed_at"}

    def day_rows(day):
        rows = [r for r in tables.read(spark, world.settings, tables.METRICS).to_pylist() if r["date"] == day]
        return sorted(({k: v for k, v in r.items() if k not in dropped} for r in rows),
                      key=lambda r: (r["model_version"], r["window"], r["window_start"], r["slice_field"],
                                     r["slice_value"]))

    before_version = DeltaTable.forPath(spark, path).history(1).collect()[0].version
    before_a, before_b = day_rows(DAY_A), day_rows(DAY_B)
    received = len(world.received)
    home = ["--home", str(world.settings.home)]
    rc = main(home + ["monitor", "--date", DAY_A.isoformat(), "--slices", "site_id", "--top-n", "2",
                      "--as-of", AS_OF.isoformat(), "--no-drift", "--rules", str(world.rules_path),
                      "--webhook", world.webhook_url, "--check"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "ALERT [critical] calibration_out_of_range" in out
    logged = [r for r in caplog.records if r.name == "ctr.monitoring.alerts"]
    assert any(r.levelname == "WARNING" and "calibration_out_of_range" in r.getMessage() for r in logged)
    assert len(world.received) > received  # posted again
    # the re-run replaced day A in exactly one commit and left day B alone
    assert DeltaTable.forPath(spark, path).history(1).collect()[0].version == before_version + 1
    assert day_rows(DAY_A) == before_a and day_rows(DAY_B) == before_b

    quiet = tmp_path / "quiet.toml"
    quiet.write_text('[[rules]]\nname = "psi"\nsource = "feature_drift"\nmetric = "psi"\nkind = "above"\n'
                     'threshold = 1000\n')
    rc = main(home + ["monitor", "--check", "--rules", str(quiet)])  # evaluates the latest day only
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"{DAY_B.isoformat()}: 0 alert(s)" in out
