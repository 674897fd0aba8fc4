"""The training job end to end on a real warehouse without Spark reads (criteo spec, delta-rs),
and the warm-started update: the champion's saved FTRL state continued with a new day, registered
with its lineage in a real MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import mlflow
import numpy as np
import pytest
import scipy.sparse as sp

from feature_store.arrow_reader import read_window_arrow
from feature_store.public import import_file
from feature_store.reader import Window
from shared.config import load_settings
from shared.featurize import Featurizer, load_spec
from shared.model.registry import download_model_dir
from training.artifacts import load_engine_state, load_model_dir
from training.ftrl import FTRLLogisticRegression
from training.pipeline import Windows, train_from_warehouse, update_from_champion
from training_support import FTRL_FIXED_SPACE

pytestmark = pytest.mark.spark
DAYS, PER_DAY = 6, 1500
D1 = date(2021, 5, 1)


def criteo_rows(n: int, seed: int = 0) -> list[str]:
    """Criteo-layout TSV lines whose clicks follow a logistic truth in c1, c2 and i1."""
    rng = np.random.default_rng(seed)
    c1, c2 = rng.integers(0, 30, n), rng.integers(0, 12, n)
    i1 = rng.integers(0, 50, n)
    effect1, effect2 = rng.normal(0, 0.8, 30), rng.normal(0, 0.5, 12)
    p = 1 / (1 + np.exp(-(-1.5 + effect1[c1] + effect2[c2] + 0.02 * i1)))
    y = (rng.random(n) < p).astype(int)
    lines = []
    for k in range(n):
        ints = [str(i1[k])] + [str(rng.integers(0, 5)) for _ in range(12)]
        cats = [f"{c1[k]:08x}", f"{c2[k]:08x}"] + [f"{rng.integers(0, 4):08x}" for _ in range(24)]
        lines.append("\t".join([str(y[k]), *ints, *cats]))
    return lines


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark, spark_settings):
    home = tmp_path_factory.mktemp("update_home")
    path = home / "days.tsv"
    path.write_text("\n".join(criteo_rows(DAYS * PER_DAY)) + "\n")
    settings = load_settings({"home": str(home), "spark_master": spark_settings.spark_master}, env={})
    import_file(spark, settings, "criteo", str(path), start_date=D1, days=DAYS)
    fixed = home / "fixed.toml"
    fixed.write_text(FTRL_FIXED_SPACE)
    return settings, fixed


def _day(k: int) -> Window:
    return Window(date.fromordinal(D1.toordinal() + k), date.fromordinal(D1.toordinal() + k + 1))


def test_train_then_update_continues_the_state_with_lineage(world):
    settings, fixed = world
    first = train_from_warehouse(None, settings, Windows.consecutive(D1, 3), "criteo", table="criteo_observations",
                                 search_space=fixed, model_name="upd")
    assert first.promoted and first.rows == {"train": 3 * PER_DAY, "validation": PER_DAY, "test": PER_DAY}
    parent = download_model_dir(settings, "upd", "champion")
    state = load_engine_state(parent)
    assert state is not None and int(state["rows_seen"]) == 2 * 4 * PER_DAY  # two passes over days 1-4
    assert load_model_dir(parent).metadata["parts"]["engine_state.npz"] == "ignore"

    updated = update_from_champion(settings, _day(4), _day(5), table="criteo_observations", model_name="upd",
                                   margin=0.0)
    assert updated.version == "2" and updated.rows == {"train": PER_DAY, "test": PER_DAY}
    client = mlflow.MlflowClient()
    tags = client.get_model_version("upd", "2").tags
    assert tags["lineage.parent_version"] == "1"
    assert "[2021-05-05, 2021-05-06)" in tags["lineage.data_added"]
    assert int(tags["lineage.rows_seen"]) == 2 * 4 * PER_DAY + 2 * PER_DAY

    # the same computation by hand: days 1-3 then 4 (the refit), then day 5 (the update)
    spec = load_spec("criteo")
    fz = Featurizer(spec)

    def day(k):
        frame, _ = read_window_arrow(settings, _day(k), sorted({*spec.input_columns, "label"}),
                                     table="criteo_observations")
        return fz.transform(frame), frame.column("label").to_numpy()

    days = [day(k) for k in range(5)]
    X13 = sp.vstack([d[0] for d in days[:3]], format="csr")
    y13 = np.concatenate([d[1] for d in days[:3]])
    est = FTRLLogisticRegression(alpha=0.1, l2=1.0, l1=0.5, passes=2, random_state=0)
    est.fit([X13, days[3][0]], [y13, days[3][1]]).partial_fit(*days[4])
    served = load_model_dir(download_model_dir(settings, "upd", "2"))
    assert np.array_equal(served.indices, est.indices_)
    np.testing.assert_allclose(served.weights, est.weights_, rtol=0, atol=0)
    assert served.intercept == est.intercept_


def test_update_refuses_a_version_without_engine_state(world):
    settings, _ = world
    sklearn_space = settings.home / "sk.toml"
    sklearn_space.write_text('[budget]\ntrials = 1\nwall_seconds = 60\n[fixed]\nengine = "sklearn"\nC = 0.1\n')
    train_from_warehouse(None, settings, Windows.consecutive(D1, 3), "criteo", table="criteo_observations",
                         search_space=sklearn_space, model_name="upd-sk")
    with pytest.raises(ValueError, match="no saved engine state"):
        update_from_champion(settings, _day(4), _day(5), table="criteo_observations", model_name="upd-sk")


def test_ctr_train_prints_progress_and_the_budget(world):
    settings, _ = world
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTR_", "MLFLOW_"))}
    env["CTR_HOME"] = str(settings.home)
    out = subprocess.run([sys.executable, "-c", "from ctr.cli import main; raise SystemExit(main())", "train", "--start", D1.isoformat(), "--train-days", "3",
                          "--table", "criteo_observations", "--spec", "criteo", "--trials", "4",
                          "--model-name", "upd-cli"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trial   1/" in out.stdout and "best" in out.stdout
    assert "trials in" in out.stdout and "CPU" in out.stdout  # how the budget was spent
    assert "registered version 1" in out.stdout
    assert "Failed to infer model signature" not in out.stderr
