"""Per-segment models (``ctr train --per-segment advertiser_id``), fitted in parallel by Spark.

One job, identified by a *run id*:

1. the windows are read at one pinned Delta version and featurized once by the shared Spark
   path; every row carries its segment key (the segment column cast to string) and split;
2. the **global model** is fitted on all rows (MLlib by default, see
   :mod:`training.distributed`; ``global_engine="sklearn"`` collects and fits on the driver)
   and recorded in the segment table as segment ``__global__``;
3. the **segment fan-out**: the segments not completed for the run are packed into a few
   buckets (a hash of the segment key, about one per core: ``fit_segments(partitions=)``),
   the rows are shuffled so that partition ``b`` holds bucket ``b`` (``repartitionById``),
   and one ``mapInArrow`` task per bucket builds its rows into flat arrays once
   (:class:`SegmentRows`) and goes through its segments one after the other
   (:func:`fit_segment_rows`), each on its own:

   a. its row and click counts decide whether it gets a model: fewer than ``min_rows``
      training rows, fewer than ``min_positives`` training clicks or no training non-click
      means **fallback** to the global model (recorded, never fitted);
   b. with more than one setting in the grid, each setting is fitted on its train rows and
      scored on its validation rows; the lowest validation log-loss wins;
   c. the setting is refitted on train + validation (scikit-learn
      :class:`~training.model.SparseLogisticRegression`) and scored on the test rows,
      beside the global model on the same rows.

   A segment's rows are put in a canonical order (split, then a hash of the row's content)
   and its fit is seeded with ``seed``, so its weights are exactly those of fitting it alone
   (:func:`fit_segment`), whatever bucket, task or batch order it came in. A task per
   segment (``groupBy(segment).applyInPandas``, as before) spent about 15 ms of Spark,
   Arrow and pandas overhead per segment, more than the fits of small segments: 1,000
   segments ran at a third of a sequential loop's speed (``benchmarks/bench_segments.py``);
4. each pass's results go to the Delta table ``segment_models`` keyed by (run_id, segment)
   in one commit: an append when no segment of the pass has a row for the run yet (with
   Delta's idempotent-write pair ``txnAppId``/``txnVersion``, so two jobs of the same run
   id cannot both insert; for a run id the job made up itself the append is done by the
   fitting job itself), else a MERGE; a row whose status is ``failed`` may be replaced by a
   later attempt, a completed one (``ok`` / ``fallback``) never is;
5. the bundle (global model + every ``ok`` segment) is scored on the whole test window
   (segment model where there is one, global model otherwise), written as one model
   directory and registered as ONE model version, tagged ``segments_run_id``.

Idempotence and retries
-----------------------
Before fitting anything a job given a run id reads the table: segments (and the global
model) already ``ok`` or ``fallback`` for this run id are skipped, so re-running a job that
died midway fits only what is missing, and re-running a finished one fits and writes
nothing (and returns the version already registered for the run id). A resumed run must
read the same data: the Delta version, feature fingerprint, segment column and windows are
recorded with the global row and checked. Exceptions inside a segment's work are caught
per segment in the task and recorded as ``status='failed'`` with the error (its
bucket-mates go on); rows a segment cannot be built from (null label or feature list,
indices and values of different lengths) fail that segment alone. Failed segments are
retried in further passes, at most ``max_retries`` times (the ``attempts`` column counts
them). A segment still failing after that is served by the global model (listed under
``failed`` in ``segments.json``); the table keeps its error.

Table ``segment_models`` (Delta, one row per (run_id, segment)): see :data:`TABLE_DDL`;
``indices``/``weights`` are the segment's non-zero weights (sorted column indices, float64),
``intercept`` is recalibrated for negative downsampling, ``params`` the chosen setting (JSON).

Bundle format
-------------
A model directory with the **global** model's parts plus ``segments.npz`` / ``segments.json``;
the format and its reader are :mod:`shared.model.bundle` (the bidder reads bundles from
there), the writer is :func:`write_bundle`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from shared.config import Settings
from shared.featurize import FeatureSpec, load_spec
from shared.model.bundle import (  # noqa: F401  (re-exported: the bundle format, as before)
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    SEGMENTS_FILE,
    SEGMENTS_META,
    SegmentBundle,
    load_bundle,
)
from shared.model.format import dumps, write_model_dir
from shared.model.scoring import sigmoid, sorted_pairs_margin
from training.artifacts import model_metadata
from training.distributed import (
    SPLIT_COL,
    SparseWeights,
    collect_predictions,
    fit_mllib,
    normalize_setting,
    predict_spark,
    select_setting,
)
from training.metrics import evaluate

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from training.pipeline import Windows

SEGMENT_TABLE = "segment_models"
GLOBAL_KEY = "__global__"
DEFAULT_MODEL_NAME = "ctr-segment-model"
OK, FALLBACK, FAILED = "ok", "fallback", "failed"
DONE = (OK, FALLBACK)
RUN_ID_TAG = "segments_run_id"
SEGMENT_COL = "_segment"
_RESERVED = "is reserved for the global model"

TABLE_DDL = (
    "run_id string, segment string, status string, attempts int, error string, params string, "
    "n_train long, n_validation long, n_test long, positives_train long, val_log_loss double, "
    "test_log_loss double, test_auc double, test_normalized_entropy double, test_calibration double, "
    "global_test_log_loss double, intercept double, raw_intercept double, indices array<bigint>, "
    "weights array<double>, fit_seconds double, bits int, fingerprint string, delta_version long, "
    "meta string, updated_at timestamp"
)
TABLE_COLUMNS = tuple(part.split()[0] for part in TABLE_DDL.split(", "))
_FIT_COLUMNS = TABLE_COLUMNS[:-1]  # updated_at is stamped in Spark


# -- segments as arrays (inside Spark tasks, and in the benchmark's sequential loop) ----------

_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
_BAD_SPLIT = 3
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise (uint64, wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@dataclass
class SegmentRows:
    """Featurized rows of one or more segments as flat arrays, in a canonical order:
    sorted by segment key, then split (train, validation, test), then a 64-bit hash of the
    row's content (label, indices, values). Segment ``g`` (key ``keys[g]``) owns rows
    ``bounds[g]:bounds[g + 1]``; its train, validation and test rows are contiguous.

    The order depends on the rows alone, not on how Spark delivered them, so a segment's
    fit (liblinear's coordinate order depends on the row order) is the same whichever task,
    bucket or batch its rows came in: fitting a segment inside a bucket of many gives the
    weights :func:`fit_segment` gives for its rows alone. ``problems``: segment -> first
    data problem (null label or feature list, indices/values of different lengths, a split
    that is not train/validation/test); such a segment fails, its bucket-mates do not."""

    keys: list
    bounds: np.ndarray  # int64 [G + 1]
    split: np.ndarray  # int8 [n]: 0 train, 1 validation, 2 test, 3 anything else
    label: np.ndarray  # int64 [n], as given (not checked to be 0/1 here)
    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz]
    problems: dict = field(default_factory=dict)

    def spans(self, g: int) -> tuple[int, int, int, int]:
        """(start, first validation row, first test row, end) of segment ``g``."""
        a, b = int(self.bounds[g]), int(self.bounds[g + 1])
        v, t = np.searchsorted(self.split[a:b], (1, 2)) + a
        return a, int(v), int(t), b

    def csr(self, a: int, b: int, bits: int):
        """Rows ``a:b`` as a CSR matrix of ``2**bits`` columns (float32 values, as ever)."""
        import scipy.sparse as sp

        p = self.indptr[a:b + 1]
        return sp.csr_matrix((self.values[p[0]:p[-1]], self.indices[p[0]:p[-1]], p - p[0]),
                             shape=(b - a, 1 << int(bits)))


def rows_from_arrow(table: "pa.Table") -> SegmentRows:
    """:class:`SegmentRows` from an Arrow table with ``_segment`` (optional: one segment),
    ``_split``, ``label``, ``indices`` (list of int), ``values`` (list of float)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.combine_chunks()
    n = table.num_rows

    def col(name):  # one chunk after combine_chunks (none for an empty table)
        c = table.column(name)
        return c.chunk(0) if c.num_chunks else pa.array([], c.type)

    bad = np.zeros(n, dtype=np.int8)  # 0 fine, else an index into `reasons`
    reasons = ["", "null label", "null indices or values list", "indices and values of different lengths",
               "null entry in indices or values", "split is not train/validation/test"]

    # segment keys, ranked in sorted key order
    if SEGMENT_COL in table.column_names:
        enc = col(SEGMENT_COL).dictionary_encode()
        dictionary = enc.dictionary.to_pylist()
        codes = enc.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False).astype(np.int64)
        if enc.indices.null_count:
            dictionary.append(None)
    else:
        dictionary, codes = [None], np.zeros(n, dtype=np.int64)
    by_key = sorted(range(len(dictionary)), key=lambda i: (dictionary[i] is None, dictionary[i] or ""))
    rank_of = np.empty(len(dictionary), dtype=np.int64)
    rank_of[by_key] = np.arange(len(dictionary))
    seg_rank = rank_of[codes] if n else codes
    keys = [dictionary[i] for i in by_key]

    enc = col(SPLIT_COL).dictionary_encode()
    lookup = np.array([_SPLIT_CODES.get(s, _BAD_SPLIT) for s in enc.dictionary.to_pylist()] + [_BAD_SPLIT],
                      dtype=np.int8)
    split = lookup[enc.indices.fill_null(len(lookup) - 1).to_numpy(zero_copy_only=False)] if n else \
        np.zeros(0, np.int8)
    bad[(split == _BAD_SPLIT) & (bad == 0)] = 5

    lab = col("label")
    bad[(lab.is_null().to_numpy(zero_copy_only=False)) & (bad == 0)] = 1
    label = lab.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)

    lists = []
    for name in ("indices", "values"):
        arr = col(name)
        lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        bad[arr.is_null().to_numpy(zero_copy_only=False) & (bad == 0)] = 2
        flat = arr.flatten()  # skips the slots of null lists
        if flat.null_count:
            ends = np.cumsum(lengths)
            nulls = np.concatenate([[0], np.cumsum(flat.is_null().to_numpy(zero_copy_only=False))])
            bad[(nulls[ends] - nulls[ends - lengths] > 0) & (bad == 0)] = 4
            flat = flat.fill_null(0)
        lists.append((lengths, flat.to_numpy(zero_copy_only=False)))
    (idx_len, idx_flat), (val_len, val_flat) = lists
    mismatch = idx_len != val_len
    if mismatch.any():  # keep the entries of the rows whose lists agree
        bad[mismatch & (bad == 0)] = 3
        idx_flat, val_flat = idx_flat[np.repeat(~mismatch, idx_len)], val_flat[np.repeat(~mismatch, val_len)]
        idx_len = np.where(mismatch, 0, idx_len)
    indices = idx_flat.astype(np.int32, copy=False)
    values = val_flat.astype(np.float32, copy=False)
    ends = np.cumsum(idx_len)

    # a content hash per row: the last sort key of the canonical order
    h = _mix(indices.astype(np.uint64) * _K1 ^ values.view(np.uint32).astype(np.uint64) * _K2)
    sums = np.zeros(indices.size + 1, dtype=np.uint64)
    np.cumsum(h, out=sums[1:])
    row_hash = _mix((sums[ends] - sums[ends - idx_len]) ^ (label.astype(np.uint64) * _K3) ^ idx_len.astype(np.uint64))
    order = np.lexsort((row_hash, split, seg_rank))

    lengths = idx_len[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    gather = np.repeat((ends - idx_len)[order] - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
    seg_sorted = seg_rank[order]
    bounds = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(np.bincount(seg_sorted, minlength=len(keys)), out=bounds[1:])
    problems = {}
    bad_sorted = bad[order]
    for i in np.flatnonzero(bad_sorted):
        problems.setdefault(int(seg_sorted[i]), reasons[bad_sorted[i]])
    return SegmentRows(keys=keys, bounds=bounds, split=split[order], label=label[order], indptr=indptr,
                       indices=indices[gather], values=values[gather], problems=problems)


def _list_array(cells, dtype) -> "pa.Array":
    import pyarrow as pa

    nulls = np.fromiter((a is None for a in cells), dtype=bool, count=len(cells))
    lengths = np.fromiter((0 if a is None else len(a) for a in cells), dtype=np.int64, count=len(cells))
    offsets = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    present = [np.asarray(a, dtype=dtype) for a in cells if a is not None]
    flat = np.concatenate(present) if present else np.zeros(0, dtype)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=pa.array(nulls))


def rows_from_pandas(pdf: "pd.DataFrame") -> SegmentRows:
    """:class:`SegmentRows` from a pandas frame of the same columns (``indices`` / ``values``
    cells are sequences)."""
    import pyarrow as pa

    names = [c for c in (SEGMENT_COL, SPLIT_COL, "label") if c in pdf.columns]
    arrays = [pa.array(pdf[c].to_numpy(), from_pandas=True) for c in names]
    arrays += [_list_array(list(pdf["indices"]), np.int32), _list_array(list(pdf["values"]), np.float32)]
    return rows_from_arrow(pa.Table.from_arrays(arrays, names=[*names, "indices", "values"]))


def _error(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def _validate(rows: SegmentRows, g: int, setting: Mapping[str, Any], bits: int, seed: int) -> float:
    from training.model import SparseLogisticRegression

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
           global_model: tuple[np.ndarray, np.ndarray, float] | None) -> dict[str, Any]:
    from training.model import SparseLogisticRegression

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
                     global_model: tuple[np.ndarray, np.ndarray, float] | None = None, min_rows: int = 0,
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
            row = {**_failed_row(exc, bits), "val_log_loss": math.nan}
        row["segment"] = key
        yield row


def _failed_row(exc: BaseException, bits: int) -> dict[str, Any]:
    return {"status": FAILED, "error": _error(exc), "params": "", "n_train": 0, "n_validation": 0, "n_test": 0,
            "positives_train": 0, "test_log_loss": math.nan, "test_auc": math.nan,
            "test_normalized_entropy": math.nan, "test_calibration": math.nan, "global_test_log_loss": math.nan,
            "intercept": math.nan, "raw_intercept": math.nan, "indices": np.zeros(0, np.int64),
            "weights": np.zeros(0, np.float64), "bits": int(bits), "fit_seconds": 0.0}


def validate_segment_setting(pdf: "pd.DataFrame", setting: Mapping[str, Any], bits: int, seed: int = 0) -> float:
    """Validation log-loss of ``setting`` fitted on the rows' train split (one segment)."""
    return _validate(rows_from_pandas(pdf.drop(columns=[SEGMENT_COL], errors="ignore")), 0, setting, bits, seed)


def fit_segment(pdf: "pd.DataFrame", setting: Mapping[str, Any], bits: int, *, seed: int = 0,
                global_model: tuple[np.ndarray, np.ndarray, float] | None = None) -> dict[str, Any]:
    """Refit ``setting`` on one segment's train + validation rows (a pandas frame) and score
    its test rows (beside the global model's ``(indices, weights, intercept)`` when given):
    the computation a Spark task runs for each segment of its bucket.

    Returns one table row's fit columns; never raises: an exception becomes
    ``status='failed'`` with the error."""
    try:
        rows = rows_from_pandas(pdf.drop(columns=[SEGMENT_COL], errors="ignore"))
    except Exception as exc:
        return _failed_row(exc, bits)
    return _refit(rows, 0, setting, bits, seed, global_model)


def _csr(pdf: "pd.DataFrame", bits: int):
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
    return pdf["label"].to_numpy().astype(np.int8)


# -- the Spark passes ------------------------------------------------------------------------

def _fit_schema():
    from pyspark.sql.types import StructType

    full = StructType.fromDDL(TABLE_DDL)
    return StructType([f for f in full.fields if f.name != "updated_at"])


def _table_exists(spark: "SparkSession", path: str) -> bool:
    """Whether the warehouse path holds a Delta table: its log has a commit or checkpoint.
    (The warehouse is a local directory; this check costs a directory listing, where
    ``DeltaTable.isDeltaTable`` costs about a second of snapshot loading.)"""
    log = Path(path) / "_delta_log"
    return log.is_dir() and any(f.name.endswith(".json") or ".checkpoint." in f.name for f in log.iterdir())


def read_segment_rows(spark: "SparkSession", settings: Settings, run_id: str, columns: Sequence[str] | None = None,
                      table: str = SEGMENT_TABLE) -> list:
    """The table's rows of ``run_id`` (selected columns), or [] when the table does not exist."""
    from pyspark.sql import functions as F

    path = settings.table_path(table)
    if not _table_exists(spark, path):
        return []
    df = spark.read.format("delta").load(path).filter(F.col("run_id") == run_id)
    return df.select(*(columns or TABLE_COLUMNS)).collect()


def merge_rows(spark: "SparkSession", settings: Settings, rows: "DataFrame", table: str = SEGMENT_TABLE) -> None:
    """MERGE fit rows into the table in one commit: insert new keys, replace ``failed`` rows
    (``attempts`` counts up), never touch completed ones."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    path = settings.table_path(table)
    source = rows.withColumn("updated_at", F.current_timestamp()).select(*TABLE_COLUMNS)
    if not _table_exists(spark, path):
        spark.createDataFrame([], TABLE_DDL).write.format("delta").mode("ignore").save(path)
    updates = {c: f"s.{c}" for c in TABLE_COLUMNS}
    updates["attempts"] = "t.attempts + s.attempts"
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(source.alias("s"), "t.run_id = s.run_id AND t.segment = s.segment")
     .whenMatchedUpdate(condition=f"t.status = '{FAILED}'", set=updates)
     .whenNotMatchedInsertAll()
     .execute())


def append_new_rows(spark: "SparkSession", settings: Settings, rows: "DataFrame", *, run_id: str,
                    txn_version: int | None, table: str = SEGMENT_TABLE) -> None:
    """Append fit rows of segments that have no row for ``run_id`` yet, in one commit: what
    :func:`merge_rows` does for such rows (insert), in one write job instead of a MERGE's
    several. With ``txn_version`` (a run id other jobs may use too) the commit carries
    Delta's idempotent-write pair (``txnAppId`` = ``ctr-segments:<run_id>``, ``txnVersion``
    = ``txn_version``, derived by the caller from the run's rows it read): a second job of
    the same run id that read the same rows either finds its write already done (skipped)
    or fails with Delta's ``ConcurrentTransactionException``, so the table never gets two
    rows of one segment. ``None``: a run id only this job writes (looking the pair up costs
    Delta a state reconstruction, about half a second here)."""
    from pyspark.sql import functions as F

    path = settings.table_path(table)
    if not _table_exists(spark, path):
        spark.createDataFrame([], TABLE_DDL).write.format("delta").mode("ignore").save(path)
    writer = rows.withColumn("updated_at", F.current_timestamp()).select(*TABLE_COLUMNS).write.format("delta")
    if txn_version is not None:
        writer = writer.option("txnAppId", f"ctr-segments:{run_id}").option("txnVersion", int(txn_version))
    writer.mode("append").save(path)


def _arrow_batch(rows: list[dict[str, Any]], schema: "pa.Schema") -> "pa.RecordBatch":
    import pyarrow as pa

    columns = []
    for f in schema:
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            cells = [np.asarray(r[f.name]) for r in rows]
            offsets = np.zeros(len(rows) + 1, dtype=np.int32)
            np.cumsum([c.size for c in cells], out=offsets[1:])
            flat = np.concatenate(cells) if cells else np.zeros(0)
            columns.append(pa.ListArray.from_arrays(pa.array(offsets),
                                                    pa.array(flat.astype(f.type.value_type.to_pandas_dtype()))))
        else:
            columns.append(pa.array([r[f.name] for r in rows], type=f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _fit_pass(data: "DataFrame", grid: list[dict], *, keys: Sequence[str], exclude: bool, run_id: str, bits: int,
              seed: int, tasks: int, global_model: SparseWeights, fingerprint: str, delta_version: int,
              min_rows: int, min_positives: int) -> "DataFrame":
    """One pass as table rows: the segments of ``data`` other than ``keys`` (``exclude``) or
    exactly ``keys``, packed into ``tasks`` buckets by a hash of the segment key; the rows are
    shuffled so that partition ``b`` holds bucket ``b`` (``repartitionById``), and one
    ``mapInArrow`` task per bucket runs :func:`fit_segment_rows` over its segments: the
    fallback decision, setting choice, refit and test of each, one after the other."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    spark = data.sparkSession
    g = (global_model.indices_, global_model.weights_, global_model.intercept_)
    schema = _fit_schema()
    arrow_schema = to_arrow_schema(schema)
    extra = {"run_id": run_id, "attempts": 1, "fingerprint": fingerprint, "delta_version": int(delta_version),
             "meta": json.dumps({"engine": "sklearn"})}

    def fit_bucket(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa
        import pyarrow.compute as pc

        received = list(batches)
        table = pa.Table.from_batches(received) if received else None
        if table is None or not table.num_rows:  # an empty bucket
            return
        if pc.any(pc.equal(table.column(SEGMENT_COL), GLOBAL_KEY)).as_py():
            raise ValueError(f"segment value {GLOBAL_KEY!r} {_RESERVED}")
        try:
            parts = [rows_from_arrow(table)]
        except Exception:  # a problem the array build does not isolate: build segment by segment
            parts = []
            for key in pc.unique(table.column(SEGMENT_COL)).to_pylist():
                try:
                    parts.append(rows_from_arrow(table.filter(pc.equal(table.column(SEGMENT_COL), key))))
                except Exception as exc:
                    yield _arrow_batch([{**extra, **_failed_row(exc, bits), "segment": key,
                                         "val_log_loss": math.nan}], arrow_schema)
        out = [{**extra, **row} for rows in parts
               for row in fit_segment_rows(rows, grid, bits, seed=seed, global_model=g, min_rows=min_rows,
                                           min_positives=min_positives)]
        for i in range(0, len(out), 256):  # list offsets are int32: keep batches modest
            yield _arrow_batch(out[i:i + 256], arrow_schema)

    rows = data.select(SEGMENT_COL, SPLIT_COL, "label", "indices", "values").filter(F.col(SEGMENT_COL).isNotNull())
    if keys or not exclude:
        key_df = spark.createDataFrame([(k,) for k in keys], f"{SEGMENT_COL} string")
        rows = rows.join(F.broadcast(key_df), SEGMENT_COL, "left_anti" if exclude else "inner")
    return (rows.repartitionById(tasks, F.expr(f"pmod(hash({SEGMENT_COL}), {int(tasks)})"))
            .mapInArrow(fit_bucket, schema))


@dataclass
class SegmentFitReport:
    run_id: str
    eligible: int  # segments with training rows (done before + recorded by this job)
    skipped: int  # already completed for this run id
    fitted: int  # segment models fitted (ok) in this job
    fallback: int  # newly recorded fallbacks
    failed: list[str] = field(default_factory=list)  # still failed after the retries
    passes: int = 0
    attempts: int = 0  # segment fits run (first tries + retries)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # statistics / fits / writes / fit_cpu


def fit_segments(
    spark: "SparkSession",
    settings: Settings,
    data: "DataFrame",
    *,
    run_id: str,
    global_model: SparseWeights,
    grid: Sequence[Mapping[str, Any]] | None = None,
    min_rows: int = 200,
    min_positives: int = 10,
    max_retries: int = 2,
    partitions: int | None = None,
    fingerprint: str = "",
    delta_version: int = -1,
    seed: int = 0,
    table: str = SEGMENT_TABLE,
    fresh_run: bool = False,
) -> SegmentFitReport:
    """Fit the missing segment models of ``run_id`` and record them (steps 3-4 of the module
    docstring). ``data``: featurized rows with ``_segment`` (string), ``_split``
    (train/validation/test), ``label``, ``indices``, ``values``; ``global_model`` is scored
    beside each segment model on its test rows.

    ``partitions``: the segments are packed into this many buckets (a hash of the segment
    key), one Spark task each, which decides, fits and tests its segments one after the
    other (default: Spark's default parallelism; retries: at most one bucket per failed
    segment). Many segments per task is what makes the fan-out pay: a task per segment costs
    scheduling and Arrow/pandas conversions of the order of the fit itself (about 15 ms),
    and each task still costs about 0.15 s to start here, so few tasks beat many
    (``benchmarks/bench_segments.py --partitions``).

    The first pass covers every segment of ``data`` not completed for the run; its rows go
    to the table in one append when no segment of the run has a (failed) row to replace,
    else in one MERGE; failed segments are retried in further passes (MERGE).

    ``fresh_run=True``: the caller has just made ``run_id`` up (``ctr train`` without
    ``--run-id``), so no job has written segment rows for it and none will but this one: the
    table is not read first, and the first pass is one Spark job that fits and appends
    (no idempotent-write pair, see :func:`append_new_rows`).

    ``phases`` of the report: ``statistics`` (reading the run's rows from the table),
    ``fits`` (the fitting jobs; with ``fresh_run`` the first one appends too), ``writes``
    (the other table writes), and ``fit_cpu``, the sum over segments of their refit
    seconds inside the tasks."""
    from pyspark import StorageLevel

    started = time.perf_counter()
    grid = [normalize_setting(s) for s in (grid or [{}])]
    bits = int(global_model.bits_)
    # the run's rows as this job knows them: segment -> (status, attempts), kept up to date below
    recorded = {} if fresh_run else {
        r["segment"]: (r["status"], int(r["attempts"] or 0))
        for r in read_segment_rows(spark, settings, run_id, ["segment", "status", "attempts"], table)}
    done = sorted(s for s, (status, _) in recorded.items() if status in DONE and s != GLOBAL_KEY)
    report = SegmentFitReport(run_id=run_id, eligible=len(done), skipped=len(done), fitted=0, fallback=0,
                              phases={"statistics": time.perf_counter() - started, "fits": 0.0, "writes": 0.0,
                                      "fit_cpu": 0.0})
    parts = max(1, partitions or spark.sparkContext.defaultParallelism)
    common = dict(run_id=run_id, bits=bits, seed=seed, global_model=global_model, fingerprint=fingerprint,
                  delta_version=delta_version, min_rows=min_rows, min_positives=min_positives)
    retry: list[str] = []
    while report.passes <= max_retries and (report.passes == 0 or retry):
        if report.passes == 0:  # every segment not completed yet
            results = _fit_pass(data, grid, keys=done, exclude=True, tasks=parts, **common)
        else:
            results = _fit_pass(data, grid, keys=retry, exclude=False, tasks=min(parts, len(retry)), **common)
        results = results.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            t0 = time.perf_counter()
            try:
                if fresh_run and report.passes == 0:  # nothing of the run recorded: fit and append, one job
                    append_new_rows(spark, settings, results, run_id=run_id, table=table, txn_version=None)
                statuses = results.select("segment", "status", "attempts", "fit_seconds").collect()
            except Exception as exc:
                if _RESERVED in str(exc):  # raised by a task: a data problem, not a Spark one
                    raise ValueError(f"segment value {GLOBAL_KEY!r} {_RESERVED}") from None
                raise
            t1 = time.perf_counter()
            if not statuses or (fresh_run and report.passes == 0):
                pass  # nothing to record, or recorded already
            elif any(r["segment"] in recorded for r in statuses):  # (failed) rows to replace
                merge_rows(spark, settings, results, table)
            else:  # only new rows: the MERGE's inserts, as one append
                append_new_rows(spark, settings, results, run_id=run_id, table=table,
                                txn_version=len(recorded) + sum(a for _, a in recorded.values()))
            report.phases["fits"] += t1 - t0
            report.phases["writes"] += time.perf_counter() - t1
            report.phases["fit_cpu"] += sum(r["fit_seconds"] or 0.0 for r in statuses)
        finally:
            results.unpersist()
        for r in statuses:
            recorded[r["segment"]] = (r["status"], recorded.get(r["segment"], ("", 0))[1] + r["attempts"])
        if report.passes == 0:
            report.eligible += len(statuses)
        report.passes += 1
        report.attempts += sum(r["status"] != FALLBACK for r in statuses)
        report.fitted += sum(r["status"] == OK for r in statuses)
        report.fallback += sum(r["status"] == FALLBACK for r in statuses)
        retry = sorted(r["segment"] for r in statuses if r["status"] == FAILED)
    report.failed = retry
    report.seconds = time.perf_counter() - started
    return report


# -- the bundle -------------------------------------------------------------------------------

def assemble_bundle(rows: Sequence, global_model: SparseWeights, segment_column: str,
                    meta: Mapping[str, Any] | None = None) -> SegmentBundle:
    """A bundle from the table's ``ok`` rows (segment, intercept, indices, weights, n_train,
    positives_train) and the global model."""
    ok = sorted((r for r in rows if r["status"] == OK and r["segment"] != GLOBAL_KEY), key=lambda r: r["segment"])
    lengths = [len(r["indices"]) for r in ok]
    return SegmentBundle(
        segment_column=segment_column, bits=int(global_model.bits_),
        keys=np.array([r["segment"] for r in ok], dtype=str),
        intercepts=np.array([r["intercept"] for r in ok], dtype=np.float64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        indices=np.concatenate([np.asarray(r["indices"], np.int64) for r in ok]) if ok else np.zeros(0, np.int64),
        weights=np.concatenate([np.asarray(r["weights"], np.float64) for r in ok]) if ok else np.zeros(0),
        n_train=np.array([r["n_train"] for r in ok], dtype=np.int64),
        positives=np.array([r["positives_train"] for r in ok], dtype=np.int64),
        global_indices=global_model.indices_, global_weights=global_model.weights_,
        global_intercept=global_model.intercept_, meta=dict(meta or {}),
    )


def write_bundle(bundle: SegmentBundle, global_model: SparseWeights, spec: FeatureSpec, out_dir,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write the bundle directory (:mod:`shared.model.bundle`): the global model's parts plus
    ``segments.npz`` / ``segments.json``, all checksummed; it appears atomically. Returns its path."""
    seg_meta = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                "segment_column": bundle.segment_column, "n_segments": int(bundle.keys.size),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **bundle.meta}

    def write_segments(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **bundle.arrays())

    def write_segments_meta(path: Path) -> None:
        path.write_text(dumps(seg_meta) + "\n", encoding="utf-8")

    return write_model_dir(out_dir, indices=global_model.indices_, weights=global_model.weights_,
                           intercept=global_model.intercept_, bits=int(global_model.bits_),
                           spec=spec.to_toml().encode("utf-8"),
                           meta=model_metadata(global_model, spec.fingerprint, extra),
                           parts={SEGMENTS_FILE: write_segments, SEGMENTS_META: write_segments_meta})


def predict_bundle_spark(featurized: "DataFrame", bundle: SegmentBundle, segment_col: str = SEGMENT_COL,
                         keep: Sequence[str] = ("impression_id", "label"), output_col: str = "p") -> "DataFrame":
    """``keep`` columns, the segment key and the bundle's click probability of each featurized row
    (segment model where the bundle has one, global model otherwise), in Spark."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    from training.distributed import _flat

    keep = list(dict.fromkeys([*keep, segment_col]))
    schema = StructType([featurized.schema[c] for c in keep] + [StructField(output_col, DoubleType(), False)])
    bc = featurized.sparkSession.sparkContext.broadcast(
        {"segment_column": bundle.segment_column, "bits": bundle.bits, "global_indices": bundle.global_indices,
         "global_weights": bundle.global_weights, "global_intercept": bundle.global_intercept,
         **{k: v for k, v in bundle.arrays().items() if k != "bits"}})

    def score(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa

        b = SegmentBundle(**bc.value)
        for batch in batches:
            col, offsets = _flat(batch.column("indices"))
            val, _ = _flat(batch.column("values"))
            row_ids = np.repeat(np.arange(batch.num_rows), np.diff(offsets))
            pos = b.positions(batch.column(segment_col).to_pylist())
            p = sigmoid(b.margins(pos, col, val.astype(np.float64), row_ids))
            yield pa.RecordBatch.from_arrays([batch.column(c) for c in keep] + [pa.array(p, pa.float64())],
                                             names=[*keep, output_col])

    return featurized.select(*keep, "indices", "values").mapInArrow(score, schema)


# -- warehouse window -> registered bundle ---------------------------------------------------------

@dataclass
class SegmentTrainResult:
    run_id: str
    version: str
    promoted: bool
    gate_reason: str
    mlflow_run_id: str
    segment_column: str
    report: SegmentFitReport | None
    n_segments: int  # segment models in the bundle
    fallback: list[str]
    failed: list[str]
    metrics: dict[str, dict[str, float]]
    delta_version: int
    already_registered: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        if self.already_registered:
            return (f"run {self.run_id} is already registered as version {self.version}: nothing to fit, "
                    "nothing written")
        t, g = self.metrics["test"], self.metrics.get("global_test", {})
        r = self.report
        lines = [
            f"registered version {self.version} (segments by {self.segment_column}, run {self.run_id}): "
            f"{'PROMOTED to champion' if self.promoted else 'not promoted'} ({self.gate_reason})",
            f"  segments: {self.n_segments} models, {len(self.fallback)} fall back to the global model, "
            f"{len(self.failed)} failed" + (f" ({', '.join(self.failed[:5])})" if self.failed else ""),
        ]
        if r is not None:
            lines.append(f"  this job: {r.fitted} fitted, {r.skipped} already done for the run, {r.fallback} new "
                         f"fallbacks, {r.attempts} segment tasks in {r.passes} pass(es)")
        lines.append(f"  test log-loss {t['log_loss']:.5f} (global model alone {g.get('log_loss', math.nan):.5f})  "
                     f"NE {t['normalized_entropy']:.4f}  AUC {t['auc']:.4f}  calibration {t['calibration']:.3f}")
        if "best_possible_log_loss" in t:
            lines.append(f"  best possible log-loss {t['best_possible_log_loss']:.5f}, "
                         f"constant CTR {t['baseline_log_loss']:.5f}")
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _registered_version(settings: Settings, model_name: str, run_id: str) -> dict | None:
    """The version registered for ``run_id`` (its ``segments_run_id`` tag), if any."""
    from training.tracking import list_versions

    for v in list_versions(settings, model_name):
        if v["tags"].get(RUN_ID_TAG) == run_id:
            return v
    return None


def _global_from_row(row) -> SparseWeights:
    meta = json.loads(row["meta"])
    return SparseWeights(
        indices_=np.asarray(row["indices"], np.int64), weights_=np.asarray(row["weights"], np.float64),
        raw_intercept_=float(row["raw_intercept"]), bits_=int(row["bits"]), setting=json.loads(row["params"]),
        engine=meta["engine"], solver_=meta["solver"], n_iter_=meta["n_iter"], converged_=meta["converged"],
        n_train_rows_=meta["n_train_rows"], n_fit_rows_=meta["n_fit_rows"], fit_seconds_=row["fit_seconds"],
        engine_params=meta.get("engine_params", {}),
    )


def _fit_global(data: "DataFrame", grid: list[dict], bits: int, engine: str, seed: int) -> SparseWeights:
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
    from training.model import SparseLogisticRegression

    model = SparseLogisticRegression(**best, random_state=seed).fit(_csr(pdf, bits), _labels(pdf))
    return SparseWeights.from_sklearn(model, best)


def train_segments_from_warehouse(
    spark: "SparkSession",
    settings: Settings,
    windows: "Windows",
    segment_column: str,
    spec: FeatureSpec | str = "generated",
    *,
    run_id: str | None = None,
    grid: Sequence[Mapping[str, Any]] | None = None,
    min_rows: int = 200,
    min_positives: int = 10,
    max_retries: int = 2,
    global_engine: str = "mllib",
    partitions: int | None = None,
    table: str = "observations",
    model_name: str = DEFAULT_MODEL_NAME,
    margin: float | None = None,
    delta_version: int | None = None,
    register: bool = True,
    seed: int = 0,
) -> SegmentTrainResult:
    """``ctr train --per-segment COLUMN``: the whole job of the module docstring.

    ``register=False`` stops after the table is complete (the bundle is registered by a later
    call with the same ``run_id``)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from shared.mlflow_utils import configure_mlflow
    from training.distributed import read_featurized, score_champion_in_spark, split_counts
    from training.pipeline import best_possible_log_loss, read_truth
    from training.tracking import CHAMPION, DEFAULT_MARGIN, log_training_run

    spec = load_spec(spec)
    grid = [normalize_setting(s) for s in (grid or [{}])]
    fresh_run = run_id is None  # a run id made up here: nothing recorded for it, nobody else writes it
    run_id = run_id or uuid.uuid4().hex
    seconds: dict[str, float] = {}

    existing = _registered_version(settings, model_name, run_id) if register else None
    if existing is not None:
        return SegmentTrainResult(
            run_id=run_id, version=existing["version"], promoted=CHAMPION in existing["aliases"],
            gate_reason=existing["tags"].get("gate.reason", ""), mlflow_run_id=existing["run_id"],
            segment_column=segment_column, report=None, n_segments=0, fallback=[], failed=[], metrics={},
            delta_version=-1, already_registered=True)

    # A resumed run reads the data it started on.
    recorded = [] if fresh_run else read_segment_rows(spark, settings, run_id, None)
    global_row = next((r for r in recorded if r["segment"] == GLOBAL_KEY and r["status"] == OK), None)
    run_meta = {"segment_column": segment_column, "windows": windows.reference(), "table": table}
    if global_row is not None:
        gmeta = json.loads(global_row["meta"])
        if global_row["fingerprint"] != spec.fingerprint:
            raise ValueError(f"run {run_id} was started with feature spec {global_row['fingerprint']}, "
                             f"not {spec.fingerprint}")
        if gmeta.get("run") != run_meta:
            raise ValueError(f"run {run_id} was started with {gmeta.get('run')}, not {run_meta}")
        if delta_version is not None and delta_version != global_row["delta_version"]:
            raise ValueError(f"run {run_id} read Delta version {global_row['delta_version']}, not {delta_version}")
        delta_version = int(global_row["delta_version"])

    t0 = time.perf_counter()
    columns = spark.read.format("delta").load(settings.table_path(table)).columns
    if segment_column not in columns:
        raise ValueError(f"table {table} has no column {segment_column!r}")
    data, raws, reads, delta_version = read_featurized(
        spark, settings, windows, spec, table=table, delta_version=delta_version,
        extra={SEGMENT_COL: F.col(segment_column).cast("string")})
    raw_test = raws["test"]
    data = data.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows, positives = split_counts(data)
        for name in ("train", "validation", "test"):
            if not rows.get(name):
                raise ValueError(f"the {name} window {reads[name].window} of {table} (Delta v{delta_version}) "
                                 "has no rows")
        seconds["read+featurize"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if global_row is None:
            global_model = _fit_global(data, grid, spec.bits, global_engine, seed)
            y_g, p_g, _ = collect_predictions(predict_spark(data.filter(F.col(SPLIT_COL) == "test"), global_model))
            g_test = evaluate(y_g, p_g)
            grow = {
                "run_id": run_id, "segment": GLOBAL_KEY, "status": OK, "attempts": 1, "error": "",
                "params": json.dumps(global_model.setting, sort_keys=True),
                "n_train": rows["train"] + rows["validation"], "n_validation": rows["validation"],
                "n_test": rows["test"], "positives_train": positives["train"] + positives["validation"],
                "val_log_loss": None,
                "test_log_loss": g_test["log_loss"], "test_auc": g_test["auc"],
                "test_normalized_entropy": g_test["normalized_entropy"], "test_calibration": g_test["calibration"],
                "global_test_log_loss": g_test["log_loss"], "intercept": global_model.intercept_,
                "raw_intercept": global_model.raw_intercept_, "indices": global_model.indices_.tolist(),
                "weights": global_model.weights_.tolist(), "fit_seconds": global_model.fit_seconds_,
                "bits": spec.bits, "fingerprint": spec.fingerprint, "delta_version": delta_version,
                "meta": json.dumps({"engine": global_model.engine, "solver": global_model.solver_,
                                    "n_iter": global_model.n_iter_, "converged": global_model.converged_,
                                    "n_train_rows": global_model.n_train_rows_,
                                    "n_fit_rows": global_model.n_fit_rows_,
                                    "engine_params": global_model.engine_params, "run": run_meta}),
            }
            merge_rows(spark, settings, spark.createDataFrame([grow], _fit_schema()))
        else:
            global_model = _global_from_row(global_row)
        seconds["global"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        report = fit_segments(spark, settings, data, run_id=run_id, global_model=global_model, grid=grid,
                              min_rows=min_rows, min_positives=min_positives, max_retries=max_retries,
                              partitions=partitions, fingerprint=spec.fingerprint, delta_version=delta_version,
                              seed=seed, fresh_run=fresh_run)
        seconds["segments"] = time.perf_counter() - t0
        if not register:
            return SegmentTrainResult(
                run_id=run_id, version="", promoted=False, gate_reason="not registered (register=False)",
                mlflow_run_id="", segment_column=segment_column, report=report, n_segments=0, fallback=[],
                failed=report.failed, metrics={}, delta_version=delta_version, seconds=seconds)

        t0 = time.perf_counter()
        table_rows = read_segment_rows(spark, settings, run_id, None)
        fallback = sorted(r["segment"] for r in table_rows if r["status"] == FALLBACK)
        failed = sorted(r["segment"] for r in table_rows if r["status"] == FAILED)
        settings_by_segment = {r["segment"]: json.loads(r["params"]) for r in table_rows
                               if r["status"] == OK and r["segment"] != GLOBAL_KEY}
        bundle = assemble_bundle(table_rows, global_model, segment_column, meta={
            "run_id": run_id, "min_rows": min_rows, "min_positives": min_positives, "fallback": fallback,
            "failed": failed, "settings": settings_by_segment})
        test_rows = data.filter(F.col(SPLIT_COL) == "test")
        y, p, test_table = collect_predictions(predict_bundle_spark(test_rows, bundle))
        g_row = next(r for r in table_rows if r["segment"] == GLOBAL_KEY)
        seconds["score"] = time.perf_counter() - t0
    finally:
        data.unpersist()

    metrics = {"test": evaluate(y, p),
               "global_test": {"log_loss": g_row["test_log_loss"], "auc": g_row["test_auc"],
                               "normalized_entropy": g_row["test_normalized_entropy"],
                               "calibration": g_row["test_calibration"]}}
    best_possible = best_possible_log_loss(test_table.select(["impression_id", "label"]),
                                           read_truth(settings.raw_dir, windows.test))
    if best_possible is not None:
        metrics["test"]["best_possible_log_loss"] = best_possible
    fit_rate = (positives["train"] + positives["validation"]) / (rows["train"] + rows["validation"])
    metrics["test"]["baseline_log_loss"] = evaluate(y, np.full(y.shape, fit_rate))["log_loss"]
    data_reference = {**reads["train"].reference(), **windows.reference(), "rows": rows,
                      "segment_column": segment_column, "segments_run_id": run_id}
    for key in ("start", "end"):
        data_reference.pop(key)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctr-segment-bundle-") as tmp:
        bundle_dir = write_bundle(bundle, global_model, spec, Path(tmp) / "bundle",
                                  extra={"metrics": metrics, "data_reference": data_reference})
        run = log_training_run(
            settings, bundle_dir, model_name=model_name, metrics=metrics, data_reference=data_reference,
            params={"engine": "segments", "segments.column": segment_column, "segments.models": int(bundle.keys.size),
                    "segments.fallback": len(fallback), "segments.failed": len(failed),
                    "segments.min_rows": min_rows, "segments.min_positives": min_positives,
                    "segments.max_retries": max_retries, "segments.grid": json.dumps(grid)[:6000],
                    "global.engine": global_model.engine},
            test_window=f"{table}@v{delta_version} test {windows.test}",
            run_name=f"train segments by {segment_column} {windows.train}",
            margin=DEFAULT_MARGIN if margin is None else margin,
            champion_scorer=lambda loaded: score_champion_in_spark(raw_test, loaded),
            tags={RUN_ID_TAG: run_id, "engine": "segments"},
        )
    # the version's own tag: a re-run with this run id finds it and does nothing
    configure_mlflow(settings).MlflowClient().set_model_version_tag(model_name, run.version, RUN_ID_TAG, run_id)
    seconds["register"] = time.perf_counter() - t0
    return SegmentTrainResult(
        run_id=run_id, version=run.version, promoted=run.decision.promoted, gate_reason=run.decision.reason,
        mlflow_run_id=run.run_id, segment_column=segment_column, report=report, n_segments=int(bundle.keys.size),
        fallback=fallback, failed=failed, metrics=metrics, delta_version=delta_version, seconds=seconds,
    )

