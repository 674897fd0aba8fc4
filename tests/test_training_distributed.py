"""The MLlib training path on the real local Spark session, against the scikit-learn path.

The tiny warehouse with a known truth comes from ``warehouse_support``.
"""

from __future__ import annotations


import numpy as np
import pytest

from warehouse_support import START, tiny_spec, tiny_warehouse
from synthetic.oracle import TruthOracle

pytestmark = pytest.mark.spark

def _sklearn_frames(spark, settings, windows):
    """The three windows as Arrow tables, from one read of their span."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from feature_store.reader import Window, read_window, to_arrow

    span = to_arrow(read_window(spark, settings, Window(windows.train.start, windows.test.end))[0])
    out = {}
    for name in ("train", "validation", "test"):
        w = getattr(windows, name)
        mask = pc.and_(pc.greater_equal(span.column("date"), pa.scalar(w.start, pa.date32())),
                       pc.less(span.column("date"), pa.scalar(w.end, pa.date32())))
        out[name] = span.filter(mask)
    return out


def test_mllib_path_matches_sklearn_and_registers_a_servable_version(spark, tmp_path_factory, tmp_path):
    import scipy.sparse as sp

    from shared.featurize import Featurizer
    from training.artifacts import load_model_dir
    from training.distributed import train_mllib_from_warehouse
    from training.metrics import evaluate
    from training.model import SparseLogisticRegression
    from training.pipeline import Windows
    from training.tracking import download_model_dir

    settings = tiny_warehouse(tmp_path_factory, spark)
    spec = tiny_spec()
    windows = Windows.consecutive(START, 3)
    setting = {"penalty": "l2", "C": 0.5, "tol": 1e-4, "max_iter": 100}
    result = train_mllib_from_warehouse(spark, settings, windows, spec, grid=[setting], model_name="mllib-test",
                                        oracle=TruthOracle(settings.raw_dir))

    # The scikit-learn path on the same rows: batch featurizer, same objective, train + validation.
    frames = _sklearn_frames(spark, settings, windows)
    fz = Featurizer(spec)
    X = sp.vstack([fz.transform(frames["train"]), fz.transform(frames["validation"])]).tocsr()
    y = np.concatenate([frames[k].column("label").to_numpy() for k in ("train", "validation")])
    X_test, y_test = fz.transform(frames["test"]), frames["test"].column("label").to_numpy()
    sk = SparseLogisticRegression(penalty="l2", C=0.5).fit(X, y)
    sk_test = evaluate(y_test, sk.predict_proba(X_test)[:, 1])

    mllib_test = result.metrics["test"]
    assert result.rows == {k: frames[k].num_rows for k in frames}
    assert mllib_test["n"] == y_test.size
    assert abs(mllib_test["log_loss"] - sk_test["log_loss"]) / sk_test["log_loss"] < 0.02
    assert abs(mllib_test["auc"] - sk_test["auc"]) < 0.02
    assert mllib_test["log_loss"] < result.baseline_test_log_loss
    assert result.best_possible_test_log_loss is not None and 0 < result.best_possible_test_log_loss < 1

    # The registered version is the plain model directory the bidder reads, and scoring it
    # with the batch featurizer reproduces the metrics computed in Spark.
    assert result.promoted and result.version == "1"
    loaded = load_model_dir(download_model_dir(settings, "mllib-test", result.version, tmp_path))
    assert loaded.metadata["hyperparameters"]["engine"] == "mllib"
    n_fit = result.rows["train"] + result.rows["validation"]
    assert loaded.metadata["hyperparameters"]["mllib.regParam"] == pytest.approx(1.0 / (0.5 * n_fit))
    assert loaded.metadata["n_fit_rows"] == n_fit
    rescored = evaluate(y_test, loaded.score_batch(X_test))
    assert rescored["log_loss"] == pytest.approx(mllib_test["log_loss"], rel=1e-5)
