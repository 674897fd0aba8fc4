"""The global model of a per-segment run: fitted once, recorded in the segment table, served as fallback.

Every segment without a model of its own (too few rows or clicks, or failed) is scored by
the global model, and each segment model is tested beside it. It is fitted on all rows,
with MLlib (:mod:`training.distributed`) or, for small data, scikit-learn on the driver,
and stored as the table row ``__global__`` so that a resumed run reuses it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from shared.featurize import FeatureSpec
from training.distributed import SPLIT_COL, SparseWeights, fit_mllib, select_setting
from training.model import SparseLogisticRegression
from training.segment_fit import validate_segment_setting
from training.segment_table import GLOBAL_KEY, OK

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp
    from pyspark.sql import DataFrame


def global_model_row(model: SparseWeights, test: Mapping[str, float], *, run_id: str, rows: Mapping[str, int],
                     positives: Mapping[str, int], spec: FeatureSpec, delta_version: int,
                     run_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The table row of the global model (segment ``__global__``); :func:`global_from_row` reads it back."""
    return {
        "run_id": run_id, "segment": GLOBAL_KEY, "status": OK, "attempts": 1, "error": "",
        "params": json.dumps(model.setting, sort_keys=True),
        "n_train": rows["train"] + rows["validation"], "n_validation": rows["validation"],
        "n_test": rows["test"], "positives_train": positives["train"] + positives["validation"],
        "val_log_loss": None,
        "test_log_loss": test["log_loss"], "test_auc": test["auc"],
        "test_normalized_entropy": test["normalized_entropy"], "test_calibration": test["calibration"],
        "global_test_log_loss": test["log_loss"], "intercept": model.intercept_,
        "raw_intercept": model.raw_intercept_, "indices": model.indices_.tolist(),
        "weights": model.weights_.tolist(), "fit_seconds": model.fit_seconds_,
        "bits": spec.bits, "fingerprint": spec.fingerprint, "delta_version": delta_version,
        "meta": json.dumps({"engine": model.engine, "solver": model.solver_, "n_iter": model.n_iter_,
                            "converged": model.converged_, "n_train_rows": model.n_train_rows_,
                            "n_fit_rows": model.n_fit_rows_, "engine_params": model.engine_params,
                            "run": run_meta}),
    }


def global_from_row(row) -> SparseWeights:
    """The global model recorded in the table (:func:`global_model_row`)."""
    meta = json.loads(row["meta"])
    return SparseWeights(
        indices_=np.asarray(row["indices"], np.int64), weights_=np.asarray(row["weights"], np.float64),
        raw_intercept_=float(row["raw_intercept"]), bits_=int(row["bits"]), setting=json.loads(row["params"]),
        engine=meta["engine"], solver_=meta["solver"], n_iter_=meta["n_iter"], converged_=meta["converged"],
        n_train_rows_=meta["n_train_rows"], n_fit_rows_=meta["n_fit_rows"], fit_seconds_=row["fit_seconds"],
        engine_params=meta.get("engine_params", {}),
    )


def _csr(pdf: "pd.DataFrame", bits: int) -> "sp.csr_matrix":
    """All rows of a pandas frame as one CSR matrix, in their order (the sklearn global model)."""
    import scipy.sparse as sp

    lengths = np.fromiter((len(a) for a in pdf["indices"]), dtype=np.int64, count=len(pdf))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    if indptr[-1]:
        indices = np.concatenate(list(pdf["indices"])).astype(np.int32, copy=False)
        data = np.concatenate(list(pdf["values"])).astype(np.float32, copy=False)
    else:
        indices, data = np.zeros(0, np.int32), np.zeros(0, np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(pdf), 1 << int(bits)))


def _labels(pdf: "pd.DataFrame") -> np.ndarray:
    """The frame's labels as int8."""
    return pdf["label"].to_numpy().astype(np.int8)


def fit_global(data: "DataFrame", grid: Sequence[Mapping[str, Any]], bits: int, engine: str,
               seed: int) -> SparseWeights:
    """The global model on the train + validation rows: its setting chosen on validation when the grid
    has several; ``engine`` "mllib" (distributed) or "sklearn" (rows collected to the driver)."""
    from pyspark.sql import functions as F

    train = data.filter(F.col(SPLIT_COL) == "train")
    validation = data.filter(F.col(SPLIT_COL) == "validation")
    fit_rows = data.filter(F.col(SPLIT_COL) != "test")
    if engine == "mllib":
        best = select_setting(train, validation, grid, bits, seed)[0] if len(grid) > 1 else grid[0]
        return fit_mllib(fit_rows, best, bits, seed=seed)
    if engine != "sklearn":
        raise ValueError(f"global_engine must be 'mllib' or 'sklearn', got {engine!r}")
    pdf = fit_rows.select(SPLIT_COL, "label", "indices", "values").toPandas()
    best = grid[0]
    if len(grid) > 1:
        losses = [validate_segment_setting(pdf, s, bits, seed) for s in grid]
        best = grid[int(np.argmin(losses))]
    model = SparseLogisticRegression(**best, random_state=seed).fit(_csr(pdf, bits), _labels(pdf))
    return SparseWeights.from_sklearn(model, best)
