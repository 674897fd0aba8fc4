"""``ctr schedule`` acting on a real warehouse and MLflow store: with an FTRL champion and a
newly labelled day it decides on a warm-started update, runs it, registers the version with
its lineage and records decision and outcome; the next decision finds nothing new to learn.
``--every`` runs it as a long-lived loop."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from training_support import FTRL_FIXED_SPACE
from warehouse_support import START, tiny_warehouse

pytestmark = pytest.mark.spark
MODEL = "schedule-acts"


def test_scheduler_updates_the_champion_then_waits(spark, tmp_path_factory, tmp_path, capsys):
    from ctr.cli import main
    from monitoring import registry, tables
    from shared.featurize import load_spec
    from training.pipeline import Windows, train_from_warehouse

    settings = tiny_warehouse(tmp_path_factory, spark)
    space = tmp_path / "fixed.toml"
    space.write_text(FTRL_FIXED_SPACE)
    spec = dataclasses.replace(load_spec("generated"), bits=18)
    first = train_from_warehouse(None, settings, Windows.consecutive(START, 1), spec, search_space=space,
                                 model_name=MODEL)
    assert first.promoted
    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nmin_hours_between_updates = 0\n")
    argv = ["--home", str(settings.home), "schedule", "--model-name", MODEL, "--policy", str(policy)]

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "decision: UPDATE" in out, out
    # the champion was refit through START + 2 (train + validation); the warehouse's newest
    # final day is START + 3 (no ingest runs recorded: the newest day minus one)
    learn, final = START + timedelta(days=2), START + timedelta(days=3)
    assert (f"ran: ctr train --update champion --start {learn.isoformat()} --train-days 1 --test-days 1 "
            f"--model-name {MODEL}") in out
    infos = registry.versions(settings, MODEL)
    assert len(infos) == 2 and infos[1].is_update
    assert infos[1].tags["lineage.parent_version"] == first.version
    assert infos[1].tags["lineage.data_added"].endswith(f"[{learn.isoformat()}, {final.isoformat()})")
    rows = tables.read(spark, settings, tables.SCHEDULE_DECISIONS, f"model_name = '{MODEL}'").to_pylist()
    decided = [r for r in rows if r["action"] == "update"]
    attempts = sorted((r for r in rows if r["action"] == "attempt"), key=lambda r: r["decided_at"])
    assert len(decided) == 1 and "new_data" in decided[0]["triggers"]
    assert [a["attempt_status"] for a in attempts] == ["running", "succeeded"]
    assert attempts[1]["attempt_version"] == infos[1].version and attempts[1]["attempt_seconds"] > 0

    # Whether or not the update was promoted, the versions now cover the final day: the
    # update, if champion, has nothing new to learn; the old champion would learn the same day again.
    champion = registry.champion(registry.versions(settings, MODEL))
    assert champion is not None
    assert main([*argv, "--every", "0.1", "--max-runs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("decision: ") == 2 and "scheduler stopped after 2 decision(s)" in out
    if champion.version == infos[1].version:
        assert "decision: WAIT" in out and "decision: UPDATE" not in out
    versions_after = registry.versions(settings, MODEL)
    assert len(versions_after) >= 2


def test_schedule_every_refuses_a_nonpositive_interval(tmp_path, capsys):
    from ctr.cli import main

    assert main(["--home", str(tmp_path), "schedule", "--every", "0"]) != 0
    assert "--every must be a positive number of seconds" in capsys.readouterr().err
