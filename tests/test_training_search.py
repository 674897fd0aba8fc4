"""Constrained search: bounds, successive halving, budget, child runs in a real MLflow store."""

from __future__ import annotations

import math
import time

import mlflow
import numpy as np
import pytest

from training_support import hashed_problem, shared_store
from training.search import (
    HARD_LIMITS, Halving, SearchSpaceError, load_search_space, parse_search_space, refit_best, run_search,
)

SPACE = """
[budget]
trials = 5
wall_seconds = 300
n_jobs = 2

[halving]
eta = 3
min_fraction = 0.1111111111111111

[params.C]
distribution = "loguniform"
low = 0.01
high = 10.0

[params.penalty]
distribution = "choice"
values = ["l2", "l1", "elasticnet"]

[params.l1_ratio]
distribution = "uniform"
low = 0.1
high = 0.9

[params.downsample_rate]
distribution = "uniform"
low = 0.2
high = 1.0

[params.max_iter]
distribution = "int"
low = 5
high = 30

[params.bits]
distribution = "choice"
values = [18, 19]

[fixed]
tol = 1e-3
"""
N_TRAIN = 2700


class Matrices:
    """make_matrices(bits): the same rows hashed into 2**bits columns; records its calls."""

    def __init__(self, sleep: float = 0.0):
        self.calls = []
        self.sleep = sleep

    def __call__(self, bits):
        self.calls.append(bits)
        time.sleep(self.sleep)
        X, y, _ = hashed_problem(N_TRAIN, bits=bits, seed=31)
        Xv, yv, _ = hashed_problem(900, bits=bits, seed=32)
        return X, y, Xv, yv


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return shared_store(tmp_path_factory)


def _children(parent_run_id):
    parent = mlflow.get_run(parent_run_id)
    return mlflow.search_runs([parent.info.experiment_id], output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_successive_halving_within_bounds_with_child_runs(store):
    space = parse_search_space(SPACE)
    make = Matrices()
    result = run_search(make, store, space, seed=7, experiment="search-test")

    assert sorted(make.calls) == sorted(set(make.calls)) and set(make.calls) <= {18, 19}
    assert result.n_configs == 5 and result.stopped_reason == "completed"
    assert result.rung_fractions == pytest.approx([1 / 9, 1 / 3, 1.0])
    by_rung = {r: [t for t in result.trials if t.rung == r] for r in range(3)}
    assert [len(by_rung[r]) for r in range(3)] == [5, 2, 1]
    assert {t.n_rows for t in by_rung[0]} == {300} and {t.n_rows for t in by_rung[2]} == {N_TRAIN}
    assert all(t.status == "ok" for t in result.trials), [t.error for t in result.trials]

    # The best third of each rung (by validation log-loss) is what goes on.
    rung0 = sorted(by_rung[0], key=lambda t: t.val_log_loss)
    assert {t.config_id for t in by_rung[1]} == {t.config_id for t in rung0[:2]}
    rung1 = sorted(by_rung[1], key=lambda t: t.val_log_loss)
    assert by_rung[2][0].config_id == rung1[0].config_id
    assert result.best_trial is by_rung[2][0] and result.best_val_log_loss == by_rung[2][0].val_log_loss

    for t in result.trials:
        p = t.params
        assert 0.01 <= p["C"] <= 10.0 and 0.1 <= p["l1_ratio"] <= 0.9 and 0.2 <= p["downsample_rate"] <= 1.0
        assert 5 <= p["max_iter"] <= 30 and isinstance(p["max_iter"], int)
        assert p["penalty"] in ("l1", "l2", "elasticnet") and p["bits"] in (18, 19) and p["tol"] == 1e-3

    children = _children(result.parent_run_id)
    assert len(children) == len(result.trials) == 8
    logged = {(c.data.params["config_id"], c.data.params["rung"]): c for c in children}
    for t in result.trials:
        c = logged[(str(t.config_id), str(t.rung))]
        assert c.info.run_id == t.run_id and c.data.params["n_rows"] == str(t.n_rows)
        assert c.data.metrics["val_log_loss"] == pytest.approx(t.val_log_loss)
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.data.metrics["best_val_log_loss"] == pytest.approx(result.best_val_log_loss)
    assert parent.data.tags["search.stopped_reason"] == "completed"

    # The caller refits the winner on train + validation built with its bits.
    X, y, Xv, yv = make(result.best_params["bits"])
    model = refit_best(result, X, y, Xv, yv)
    assert model.n_train_rows_ == N_TRAIN + 900 and model.n_features_in_ == 1 << result.best_params["bits"]
    assert model.C == result.best_params["C"]
    with pytest.raises(ValueError, match="bits"):
        refit_best(dict(result.best_params, bits=20), X, y)


def test_wall_clock_budget_stops_submitting(store):
    space = parse_search_space(SPACE.replace("trials = 5", "trials = 30").replace("[18, 19]", "[18]"))
    wall = 1.0
    make = Matrices(sleep=0.5)  # half the budget goes to preparing the matrices
    result = run_search(make, store, space, wall_seconds=wall, n_jobs=1, seed=1, experiment="search-test")
    assert result.stopped_reason == "wall_seconds"
    assert 1 <= len(result.trials) < 30
    assert all(t.submitted_at <= result.started_at + wall for t in result.trials)
    assert len(_children(result.parent_run_id)) == len(result.trials)
    assert mlflow.get_run(result.parent_run_id).data.tags["search.stopped_reason"] == "wall_seconds"


def test_shipped_space_is_valid_and_sampling_stays_in_bounds():
    space = load_search_space()
    assert space.halving.fractions == pytest.approx([1 / 9, 1 / 3, 1.0])
    assert space.budget.n_jobs == 2
    rng = np.random.default_rng(0)
    for _ in range(500):
        p = space.sample(rng)
        for name, dim in space.dimensions.items():
            assert dim.contains(p[name]), (name, p[name])
            if name in HARD_LIMITS and name not in ("penalty", "solver"):
                lo, hi = HARD_LIMITS[name]
                assert lo <= p[name] <= hi


@pytest.mark.parametrize("patch, message", [
    (("high = 10.0", "high = 1e9"), "hard limits"),
    (('values = [18, 19]', 'values = [18, 40]'), "hard limits"),
    (('[params.C]\ndistribution = "loguniform"\nlow = 0.01', '[params.C]\ndistribution = "loguniform"\nlow = 0.0'),
     "hard limits|low > 0"),
    (("low = 0.2\nhigh = 1.0", "low = 0.9\nhigh = 0.3"), "low 0.9 > high"),
    (("[params.max_iter]\ndistribution = \"int\"", "[params.max_iter]\ndistribution = \"uniform\""), "integer"),
    (("[fixed]\ntol = 1e-3", "[fixed]\nmomentum = 0.9"), "unknown hyperparameter"),
    (("[params.bits]", "[params.hash_bits]"), "unknown hyperparameter"),
    (("trials = 5", "trials = 0"), "positive"),
    (("eta = 3", "eta = 1"), "eta"),
    (('values = ["l2", "l1", "elasticnet"]', 'values = ["l2", "l0"]'), "not in"),
])
def test_space_violations_are_rejected(patch, message):
    old, new = patch
    assert old in SPACE
    with pytest.raises(SearchSpaceError, match=message):
        parse_search_space(SPACE.replace(old, new))


def test_halving_schedule():
    assert Halving(3, 1 / 9).fractions == pytest.approx([1 / 9, 1 / 3, 1])
    assert Halving(2, 0.25).fractions == pytest.approx([0.25, 0.5, 1])
    assert Halving(3, 1.0).fractions == [1.0]
    f = Halving(3, 0.05).fractions  # not a power of eta: first rung a little smaller
    assert f[-1] == 1.0 and f[0] <= 0.05 and all(math.isclose(b / a, 3) for a, b in zip(f, f[1:]))


def test_trials_as_spark_tasks_give_the_same_search(store, spark):
    """The same space and seed searched with trials as Spark tasks (one-task jobs from two
    threads on the real local session) picks the same configurations with the same losses."""
    space = parse_search_space(SPACE.replace("trials = 5", "trials = 4").replace("[18, 19]", "[18]"))
    local = run_search(Matrices(), store, space, seed=11, experiment="search-test")
    on_spark = run_search(Matrices(), store, space, seed=11, experiment="search-test", spark=spark)
    assert all(t.status == "ok" for t in on_spark.trials), [t.error for t in on_spark.trials]
    key = lambda r: sorted((t.config_id, t.rung, t.n_rows, round(t.val_log_loss, 12)) for t in r.trials)  # noqa: E731
    assert key(on_spark) == key(local)
    assert on_spark.best_params == local.best_params
    assert mlflow.get_run(on_spark.parent_run_id).data.params["trials_on"] == "spark"
    assert len(_children(on_spark.parent_run_id)) == len(on_spark.trials)


COST_SPACE = """
[budget]
trials = 6
wall_seconds = 300
trial_seconds = 0.01
n_jobs = 2

[halving]
eta = 3
min_fraction = 1.0

[params.passes]
distribution = "choice"
values = [1, 1000]

[fixed]
engine = "ftrl"
alpha = 0.1
l2 = 1.0
bits = 18
"""


def test_work_budget_stops_costly_trials_and_they_are_not_ranked(store):
    """A trial whose fit outlives trial_seconds is stopped by the engine (not just never
    started) and cannot win; the budget report says so."""
    result = run_search(Matrices(), store, parse_search_space(COST_SPACE), seed=3, experiment="search-test")
    slow = [t for t in result.trials if t.params["passes"] == 1000]
    fast = [t for t in result.trials if t.params["passes"] == 1]
    assert slow and fast
    assert all(t.status == "stopped" and "work budget" in t.error for t in slow)
    # "stopped" is only ever set when work remained at the deadline: these fits did not finish
    assert all(t.status == "ok" for t in fast) and result.best_params["passes"] == 1
    assert f"{len(slow)} stopped" in result.budget_report()
    assert 0.0 < result.cpu_utilisation <= 1.0


def test_rules_adapt_the_space_to_the_data():
    space = load_search_space()
    small, notes = space.adapt(5_000, 0.2)
    assert small.fixed["downsample_rate"] == 1.0 and "downsample_rate" not in small.dimensions
    assert "sklearn" in small.dimensions["engine"].values and len(notes) == 1
    big, notes = space.adapt(5_000_000, 0.01)
    assert "downsample_rate" in big.dimensions  # many rows at a low click rate: downsampling may pay
    assert big.dimensions["engine"].values == ("ftrl",) and "sklearn skipped" in notes[0]
    assert space.adapt(5_000_000, 0.2)[0].fixed["downsample_rate"] == 1.0  # high click rate


def test_no_halving_rung_below_the_floor(store):
    space = parse_search_space(SPACE.replace("trials = 5", "trials = 3").replace("[18, 19]", "[18]")
                               + "\n[rules]\nhalving_min_rows = 800\n")
    result = run_search(Matrices(), store, space, seed=5, experiment="search-test")
    # 2,700 training rows: the 1/9 rung (300 rows) is skipped, halving starts at 1/3 (900 rows)
    assert {t.n_rows for t in result.trials} == {900, 2700}
    assert any("halving from" in n for n in result.notes)
