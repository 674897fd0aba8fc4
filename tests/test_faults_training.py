"""Fault injection for training: ``ctr train`` run as a real process and killed with SIGKILL
at each named phase between writing the model and finishing the gate (``shared/faults.py``),
and once at a seeded random time. After each kill the registry holds no half-registered
version that could be served, and re-running the same command gives the champion an
uninterrupted run gives: the same weights, differing only in run id, version number and
timestamps."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from faults_support import ctr, random_delay, report, skip_unless_in_default
from training_support import FTRL_FIXED_SPACE
from warehouse_support import START, tiny_warehouse

pytestmark = pytest.mark.spark
PHASES = ("train.saved", "train.logged", "train.registered", "train.promoted")
#: ``make test`` kills at the phases that leave something in the registry (and at a seeded random
#: time); CTR_FAULTS_FULL=1 kills at every phase.
DEFAULT_PHASES = ("train.registered", "train.promoted")


@pytest.fixture(scope="module")
def setup(spark, tmp_path_factory):
    from shared.featurize import load_spec

    settings = tiny_warehouse(tmp_path_factory, spark)
    folder = tmp_path_factory.mktemp("faults")
    space, spec = folder / "fixed.toml", folder / "spec.toml"
    space.write_text(FTRL_FIXED_SPACE)
    spec.write_text(dataclasses.replace(load_spec("generated"), bits=18).to_toml())
    return settings, space, spec, folder


def _train(setup, model: str, kill_at: str | None = None, kill_after: float | None = None):
    """``ctr train`` in its own process; returns the run (exit code, phases reached, output)."""
    settings, space, spec, folder = setup
    return ctr(settings.home, "train", "--start", START.isoformat(), "--train-days", "2", "--spec", str(spec),
               "--search-space", str(space), "--model-name", model, "--quiet", kill_at=kill_at, kill_after=kill_after)


def _versions(settings, model):
    from training.tracking import list_versions

    return list_versions(settings, model)


def _champion_weights(settings, model):
    from shared.model.format import load_model_dir
    from shared.model.registry import download_model_dir

    loaded = load_model_dir(download_model_dir(settings, model, "champion"))
    return loaded.indices, loaded.weights, loaded.intercept


@pytest.fixture(scope="module")
def clean(setup):
    """An uninterrupted run: the state every interrupted-then-rerun one must reach."""
    started = time.perf_counter()
    run = _train(setup, "faults-clean")
    assert run.returncode == 0, run.output
    assert run.phases == ["train.saved", "train.logged", "train.registered", "train.promoted"]
    return _champion_weights(setup[0], "faults-clean"), time.perf_counter() - started


def _assert_recovered(settings, model, clean_weights):
    versions = _versions(settings, model)
    decisions = [v["tags"].get("gate.decision") for v in versions]
    assert "pending" not in decisions, decisions
    champions = [v for v in versions if "champion" in v["aliases"]]
    assert len(champions) == 1 and champions[0]["tags"]["gate.decision"] == "promoted"
    idx, w, b = _champion_weights(settings, model)
    np.testing.assert_array_equal(idx, clean_weights[0])
    np.testing.assert_array_equal(w, clean_weights[1])
    assert b == clean_weights[2]
    return decisions


@pytest.mark.parametrize("phase", PHASES)
def test_killed_training_leaves_nothing_servable_half_done_and_a_rerun_completes(setup, clean, phase):
    skip_unless_in_default(phase, DEFAULT_PHASES)
    settings = setup[0]
    model = f"faults-{phase.replace('.', '-')}"
    killed = _train(setup, model, kill_at=phase)
    assert killed.killed and killed.phases[-1] == phase, killed.output
    before = _versions(settings, model)
    if phase in ("train.saved", "train.logged"):
        assert before == []  # nothing registered
    else:
        assert [v["tags"]["gate.decision"] for v in before] == ["pending"]
        # killed before the alias moved: nothing to serve; killed after: the alias is the only effect
        assert bool(before[0]["aliases"]) == (phase == "train.promoted")

    rerun = _train(setup, model)
    assert rerun.returncode == 0, rerun.output
    decisions = _assert_recovered(settings, model, clean[0])
    expected = {"train.saved": ["promoted"], "train.logged": ["promoted"],
                "train.registered": ["interrupted", "promoted"],
                # the alias had moved: the version was promoted, the re-run's ties it (not better by the margin)
                "train.promoted": ["promoted", "rejected"]}[phase]
    report("train", phase, killed, decisions == expected, f"versions {decisions}")
    assert decisions == expected


def test_killed_at_a_seeded_random_time(setup, clean):
    settings = setup[0]
    killed = _train(setup, "faults-random", kill_after=random_delay(clean[1], "train"))
    rerun = _train(setup, "faults-random")
    assert rerun.returncode == 0, rerun.output
    _assert_recovered(settings, "faults-random", clean[0])
    report("train", "random", killed, True)


def test_phase_hook_is_inert_without_its_environment(tmp_path, monkeypatch):
    from shared import faults

    monkeypatch.delenv(faults.KILL_AT, raising=False)
    monkeypatch.setenv(faults.PHASE_LOG, str(tmp_path / "log"))
    faults.phase("a.b")
    faults.phase("c.d")
    assert Path(tmp_path / "log").read_text().split() == ["a.b", "c.d"]
