"""The per-segment fit: fallback decision, setting choice on validation, refit, test.

:func:`fit_segment_rows` is what one Spark task of the fan-out runs for the segments of its
bucket, one after the other (and what a sequential loop runs for all of them). A segment
with too few training rows or clicks falls back to the global model; otherwise its setting
is chosen on its validation rows (:func:`choose_setting`), refitted on train + validation
(scikit-learn :class:`~training.model.SparseLogisticRegression`, seeded) and scored on its
test rows beside the global model. Each segment sees only its own rows, and an exception
becomes that segment's ``failed`` row: its bucket-mates go on.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from shared.model.scoring import sigmoid, sorted_pairs_margin
from training.metrics import evaluate
from training.model import SparseLogisticRegression
from training.segment_rows import SEGMENT_COL, SegmentRows, rows_from_pandas
from training.segment_table import FAILED, FALLBACK, OK

if TYPE_CHECKING:
    import pandas as pd

#: A global model as (sorted indices, weights, intercept), scored beside each segment model.
GlobalArrays = tuple[np.ndarray, np.ndarray, float]

def _error(exc: BaseException) -> str:
    """The exception as the table's ``error`` text: type, message and where it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def _validate(rows: SegmentRows, g: int, setting: Mapping[str, Any], bits: int, seed: int) -> float:
    """Validation log-loss of ``setting`` fitted on segment ``g``'s train rows."""
    a, v, t, _ = rows.spans(g)
    model = SparseLogisticRegression(**setting, random_state=seed).fit(rows.csr(a, v, bits), rows.label[a:v])
    return evaluate(rows.label[v:t], model.predict_proba(rows.csr(v, t, bits))[:, 1])["log_loss"]


def choose_setting(rows: SegmentRows, g: int, grid: Sequence[Mapping[str, Any]], bits: int,
                   seed: int = 0) -> tuple[int, float, str]:
    """(setting index, validation log-loss, error) for segment ``g``: each setting fitted on
    its train rows and scored on its validation rows, lowest log-loss wins (ties: the first);
    no validation rows: the first setting; every setting failing: index -1 and the errors."""
    if len(grid) == 1:
        return 0, math.nan, ""
    a, v, t, _ = rows.spans(g)
    trials = []
    for sid, setting in enumerate(grid):
        try:
            if t == v:
                trials.append((sid, math.nan, "no validation rows"))
            else:
                trials.append((sid, _validate(rows, g, setting, bits, seed), ""))
        except Exception as exc:
            trials.append((sid, math.nan, _error(exc)))
    ok = [tr for tr in trials if tr[1] is not None and math.isfinite(tr[1])]
    if ok:
        sid, loss, _ = min(ok, key=lambda tr: (tr[1], tr[0]))
        return sid, float(loss), ""
    if all(err == "no validation rows" for _, _, err in trials):
        return 0, math.nan, ""  # nothing to choose on: the first setting
    errors = sorted({err for _, _, err in trials if err}) or ["no settings evaluated"]
    return -1, math.nan, "validation failed for every setting: " + " | ".join(errors)[:1900]


def _base_row(rows: SegmentRows, g: int, setting: Mapping[str, Any], bits: int) -> dict[str, Any]:
    a, v, t, b = rows.spans(g)
    return {
        "status": OK, "error": "", "params": json.dumps(dict(setting), sort_keys=True),
        "n_train": t - a, "n_validation": t - v, "n_test": b - t, "positives_train": int(rows.label[a:t].sum()),
        "test_log_loss": math.nan, "test_auc": math.nan, "test_normalized_entropy": math.nan,
        "test_calibration": math.nan, "global_test_log_loss": math.nan, "intercept": math.nan,
        "raw_intercept": math.nan, "indices": np.zeros(0, np.int64), "weights": np.zeros(0, np.float64),
        "bits": int(bits), "fit_seconds": 0.0,
    }


def _refit(rows: SegmentRows, g: int, setting: Mapping[str, Any], bits: int, seed: int,
           global_model: GlobalArrays | None) -> dict[str, Any]:
    """Segment ``g`` refitted on train + validation with ``setting`` and scored on its test rows."""
    started = time.perf_counter()
    a, v, t, b = rows.spans(g)
    row = _base_row(rows, g, setting, bits)
    try:
        if g in rows.problems:
            raise ValueError(f"segment {rows.keys[g]!r}: {rows.problems[g]}")
        model = SparseLogisticRegression(**setting, random_state=seed).fit(rows.csr(a, t, bits), rows.label[a:t])
        row.update(indices=model.indices_.astype(np.int64), weights=model.weights_.astype(np.float64),
                   intercept=float(model.intercept_), raw_intercept=float(model.raw_intercept_))
        if b > t:
            X_test, y_test = rows.csr(t, b, bits), rows.label[t:b]
            m = evaluate(y_test, model.predict_proba(X_test)[:, 1])
            row.update(test_log_loss=m["log_loss"], test_auc=m["auc"], test_normalized_entropy=m["normalized_entropy"],
                       test_calibration=m["calibration"])
            if global_model is not None:
                g_idx, g_w, g_b = global_model
                row_ids = np.repeat(np.arange(X_test.shape[0]), np.diff(X_test.indptr))
                p = sigmoid(g_b + sorted_pairs_margin(X_test.indices, X_test.data, row_ids, X_test.shape[0],
                                                      g_idx, g_w))
                row["global_test_log_loss"] = evaluate(y_test, p)["log_loss"]
    except Exception as exc:  # recorded and retried by the driver, never fatal to the job
        row.update(status=FAILED, error=_error(exc), indices=np.zeros(0, np.int64), weights=np.zeros(0, np.float64),
                   intercept=math.nan, raw_intercept=math.nan)
    row["fit_seconds"] = time.perf_counter() - started
    return row


def fallback_reason(train: int, positives: int, min_rows: int, min_positives: int) -> str:
    """Why a segment with ``train`` training rows (``positives`` of them clicks) is served by
    the global model instead of a model of its own ("" when it gets one)."""
    if train < min_rows:
        return f"{train} training rows < min_rows {min_rows}"
    if positives < min_positives:
        return f"{positives} training clicks < min_positives {min_positives}"
    if positives == train:
        return "no training non-clicks"
    return ""


def _fallback_row(rows: SegmentRows, g: int, reason: str, bits: int) -> dict[str, Any]:
    a, v, t, b = rows.spans(g)
    return {"status": FALLBACK, "attempts": 0, "error": reason, "params": "", "n_train": t - a,
            "n_validation": t - v, "n_test": b - t, "positives_train": int(rows.label[a:t].sum()),
            "val_log_loss": None, "test_log_loss": None, "test_auc": None, "test_normalized_entropy": None,
            "test_calibration": None, "global_test_log_loss": None, "intercept": None, "raw_intercept": None,
            "indices": np.zeros(0, np.int64), "weights": np.zeros(0, np.float64), "fit_seconds": 0.0,
            "bits": int(bits), "meta": ""}


def fit_segment_rows(rows: SegmentRows, grid: Sequence[Mapping[str, Any]], bits: int, *, seed: int = 0,
                     global_model: GlobalArrays | None = None, min_rows: int = 0,
                     min_positives: int = 0) -> Iterator[dict[str, Any]]:
    """Every segment of ``rows`` in turn (what one Spark task does for its bucket, and the
    sequential loop for all segments): a segment without training rows is skipped (no row);
    one with fewer than ``min_rows`` training rows, fewer than ``min_positives`` training
    clicks or no training non-click gets a ``fallback`` row (:func:`fallback_reason`);
    every other one has its setting chosen on validation (when the grid has more than one,
    :func:`choose_setting`), is refitted on train + validation and scored on its test rows.

    One dict of table columns per segment (``segment``, ``status``, ``val_log_loss``, the
    fit columns; ``attempts`` / ``meta`` only on fallback rows); never raises: a segment's
    exception becomes its ``status='failed'`` row and the next segment goes on. Each
    segment's fit sees only its own rows and ``seed``, so the results do not depend on which
    other segments share the call (the Spark task's bucket) or on their order."""
    for g, key in enumerate(rows.keys):
        loss = math.nan
        try:
            a, v, _, _ = rows.spans(g)
            if v == a:  # no training rows: not a segment of this job
                continue
            reason = fallback_reason(v - a, int(rows.label[a:v].sum()), min_rows, min_positives)
            if reason:
                row = _fallback_row(rows, g, reason, bits)
            else:
                sid, loss, err = choose_setting(rows, g, grid, bits, seed)
                if sid < 0:  # every setting failed on validation: nothing to refit
                    row = _base_row(rows, g, grid[0], bits)
                    row.update(status=FAILED, error=err)
                else:
                    row = _refit(rows, g, grid[sid], bits, seed, global_model)
                row["val_log_loss"] = float(loss)
        except Exception as exc:  # a bug above, not in the fit: still this segment's alone
            row = {**failed_row(exc, bits), "val_log_loss": math.nan}
        row["segment"] = key
        yield row


def failed_row(exc: BaseException, bits: int) -> dict[str, Any]:
    """The fit columns of a segment that failed with ``exc`` before its rows could be read."""
    return {"status": FAILED, "error": _error(exc), "params": "", "n_train": 0, "n_validation": 0, "n_test": 0,
            "positives_train": 0, "test_log_loss": math.nan, "test_auc": math.nan,
            "test_normalized_entropy": math.nan, "test_calibration": math.nan, "global_test_log_loss": math.nan,
            "intercept": math.nan, "raw_intercept": math.nan, "indices": np.zeros(0, np.int64),
            "weights": np.zeros(0, np.float64), "bits": int(bits), "fit_seconds": 0.0}


def validate_segment_setting(pdf: "pd.DataFrame", setting: Mapping[str, Any], bits: int, seed: int = 0) -> float:
    """Validation log-loss of ``setting`` fitted on the rows' train split (one segment)."""
    return _validate(rows_from_pandas(pdf.drop(columns=[SEGMENT_COL], errors="ignore")), 0, setting, bits, seed)


def fit_segment(pdf: "pd.DataFrame", setting: Mapping[str, Any], bits: int, *, seed: int = 0,
                global_model: GlobalArrays | None = None) -> dict[str, Any]:
    """Refit ``setting`` on one segment's train + validation rows (a pandas frame) and score
    its test rows (beside the global model's ``(indices, weights, intercept)`` when given):
    the computation a Spark task runs for each segment of its bucket.

    Returns one table row's fit columns; never raises: an exception becomes
    ``status='failed'`` with the error."""
    try:
        rows = rows_from_pandas(pdf.drop(columns=[SEGMENT_COL], errors="ignore"))
    except Exception as exc:
        return failed_row(exc, bits)
    return _refit(rows, 0, setting, bits, seed, global_model)
