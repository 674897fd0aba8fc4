"""Per-segment models (``ctr train --per-segment advertiser_id``), fitted in parallel by Spark.

One job, identified by a *run id*:

1. the windows are read at one pinned Delta version and featurized once by the shared Spark
   path; every row carries its segment key (the segment column cast to string) and split;
2. the **global model** is fitted on all rows (MLlib by default, see
   :mod:`training.distributed`; ``global_engine="sklearn"`` collects and fits on the driver)
   and recorded in the segment table as segment ``__global__``;
3. per-segment row and click counts decide which segments get a model: fewer than
   ``min_rows`` training rows, fewer than ``min_positives`` training clicks or no training
   non-click means **fallback** to the global model (recorded, never fitted);
4. with more than one setting in the grid, the **segment x setting fan-out**: train +
   validation rows are cross-joined with the settings and ``groupBy(segment, setting)
   .applyInPandas`` fits each pair on train and scores validation; the best setting per
   segment (lowest validation log-loss) goes on;
5. ``groupBy(segment).applyInPandas`` refits each segment's setting on train + validation
   (scikit-learn :class:`~training.model.SparseLogisticRegression`, one task per segment
   group, all cores busy) and scores its test rows, beside the global model on the same rows;
6. each pass's results are MERGEd into the Delta table ``segment_models`` keyed by
   (run_id, segment) in one commit; a row whose status is ``failed`` may be replaced by a
   later attempt, a completed one (``ok`` / ``fallback``) never is;
7. the bundle (global model + every ``ok`` segment) is scored on the whole test window
   (segment model where there is one, global model otherwise), written as one model
   directory and registered as ONE model version, tagged ``segments_run_id``.

Idempotence and retries
-----------------------
Before fitting anything the job reads the table: segments (and the global model) already
``ok`` or ``fallback`` for this run id are skipped, so re-running a job that died midway
fits only what is missing, and re-running a finished one fits and writes nothing (and
returns the version already registered for the run id). A resumed run must read the same
data: the Delta version, feature fingerprint, segment column and windows are recorded with
the global row and checked. Exceptions inside a segment task are caught in the pandas
function and recorded as ``status='failed'`` with the error; failed segments are retried in
further passes, at most ``max_retries`` times (the ``attempts`` column counts them). A
segment still failing after that is served by the global model (listed under ``failed`` in
``segments.json``); the table keeps its error.

Table ``segment_models`` (Delta, one row per (run_id, segment)): see :data:`TABLE_DDL`;
``indices``/``weights`` are the segment's non-zero weights (sorted column indices, float64),
``intercept`` is recalibrated for negative downsampling, ``params`` the chosen setting (JSON).

Bundle format (a model directory, plain files, no pickle)
---------------------------------------------------------
Everything :func:`training.artifacts.save_model_dir` writes for the **global** model
(``weights.npz``, ``feature_spec.toml``, ``model.json``, ``checksums.json``), so anything
that reads model directories — the bidder, the pyfunc — can serve the bundle's global
model unchanged, plus two files written here::

    segments.npz    numpy arrays (np.load(..., allow_pickle=False)), S segments sorted by key:
                      keys        <U  [S]      segment keys (the segment column's value as Spark
                                               casts it to string: ids as-is, integers in decimal)
                      intercepts  float64[S]   recalibrated intercepts
                      offsets     int64[S+1]   segment s owns entries offsets[s]:offsets[s+1]
                      indices     int64[nnz]   column indices, strictly increasing per segment
                      weights     float64[nnz]
                      n_train     int64[S]     training rows (train + validation) of the segment
                      positives   int64[S]     their clicks
                      bits        int64[]      2**bits columns, as the global model
    segments.json   {"format": "ctr-segment-bundle", "format_version": 1, "segment_column",
                     "run_id", "n_segments", "min_rows", "min_positives", "fallback": [keys],
                     "failed": [keys], "settings": {key: setting}, "created_at"}

``checksums.json`` lists the two extra files too (sha256), so
:func:`training.artifacts.load_model_dir` verifies them along with the global files, and
:func:`load_bundle` reads the whole bundle. Scoring a record: featurize it with the spec;
if ``str(record[segment_column])`` is one of ``keys`` the probability is
``sigmoid(intercepts[s] + x . w_s)``, otherwise the global model's.
"""

from __future__ import annotations

import json
import math
import os
import shutil
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
from training.distributed import (
    SPLIT_COL,
    SparseWeights,
    collect_predictions,
    fit_mllib,
    normalize_setting,
    predict_spark,
    select_setting,
    sparse_margin,
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
BUNDLE_FORMAT = "ctr-segment-bundle"
BUNDLE_FORMAT_VERSION = 1
SEGMENTS_FILE = "segments.npz"
SEGMENTS_META = "segments.json"
OK, FALLBACK, FAILED = "ok", "fallback", "failed"
DONE = (OK, FALLBACK)
RUN_ID_TAG = "segments_run_id"
SEGMENT_COL = "_segment"

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


# -- one segment, in pandas (runs inside Spark tasks, and in the benchmark's sequential loop) ----

def _csr(pdf: "pd.DataFrame", bits: int):
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


def _error(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def validate_segment_setting(pdf: "pd.DataFrame", setting: Mapping[str, Any], bits: int, seed: int = 0) -> float:
    """Validation log-loss of ``setting`` fitted on the segment's train rows."""
    from training.model import SparseLogisticRegression

    train = pdf[pdf[SPLIT_COL] == "train"]
    val = pdf[pdf[SPLIT_COL] == "validation"]
    model = SparseLogisticRegression(**setting, random_state=seed).fit(_csr(train, bits), _labels(train))
    return evaluate(_labels(val), model.predict_proba(_csr(val, bits))[:, 1])["log_loss"]


def fit_segment(pdf: "pd.DataFrame", setting: Mapping[str, Any], bits: int, *, seed: int = 0,
                global_model: tuple[np.ndarray, np.ndarray, float] | None = None) -> dict[str, Any]:
    """Refit ``setting`` on one segment's train + validation rows and score its test rows
    (beside the global model's ``(indices, weights, intercept)`` when given).

    Returns one table row's fit columns; never raises: an exception becomes
    ``status='failed'`` with the error."""
    from training.model import SparseLogisticRegression

    started = time.perf_counter()
    split = pdf[SPLIT_COL]
    fit_rows, test = pdf[split != "test"], pdf[split == "test"]
    row: dict[str, Any] = {
        "status": OK, "error": "", "params": json.dumps(dict(setting), sort_keys=True),
        "n_train": int(len(fit_rows)), "n_validation": int((split == "validation").sum()), "n_test": int(len(test)),
        "positives_train": int(fit_rows["label"].sum()),
        "test_log_loss": math.nan, "test_auc": math.nan, "test_normalized_entropy": math.nan,
        "test_calibration": math.nan, "global_test_log_loss": math.nan, "intercept": math.nan,
        "raw_intercept": math.nan, "indices": np.zeros(0, np.int64), "weights": np.zeros(0, np.float64),
        "bits": int(bits),
    }
    try:
        model = SparseLogisticRegression(**setting, random_state=seed).fit(_csr(fit_rows, bits), _labels(fit_rows))
        row.update(indices=model.indices_.astype(np.int64), weights=model.weights_.astype(np.float64),
                   intercept=float(model.intercept_), raw_intercept=float(model.raw_intercept_))
        if len(test):
            X_test, y_test = _csr(test, bits), _labels(test)
            m = evaluate(y_test, model.predict_proba(X_test)[:, 1])
            row.update(test_log_loss=m["log_loss"], test_auc=m["auc"], test_normalized_entropy=m["normalized_entropy"],
                       test_calibration=m["calibration"])
            if global_model is not None:
                g_idx, g_w, g_b = global_model
                row_ids = np.repeat(np.arange(X_test.shape[0]), np.diff(X_test.indptr))
                from training.artifacts import sigmoid

                p = sigmoid(g_b + sparse_margin(X_test.indices, X_test.data, row_ids, X_test.shape[0], g_idx, g_w))
                row["global_test_log_loss"] = evaluate(y_test, p)["log_loss"]
    except Exception as exc:  # recorded and retried by the driver, never fatal to the job
        row.update(status=FAILED, error=_error(exc), indices=np.zeros(0, np.int64), weights=np.zeros(0, np.float64),
                   intercept=math.nan, raw_intercept=math.nan)
    row["fit_seconds"] = time.perf_counter() - started
    return row


# -- the Spark passes ------------------------------------------------------------------------

def _fit_schema():
    from pyspark.sql.types import StructType

    full = StructType.fromDDL(TABLE_DDL)
    return StructType([f for f in full.fields if f.name != "updated_at"])


def _table_exists(spark: "SparkSession", path: str) -> bool:
    from feature_store import tables

    return tables.table_exists(spark, path)


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


def _choose_settings(data: "DataFrame", pending: list[str], grid: list[dict], bits: int, seed: int,
                     partitions: int) -> dict[str, tuple[int, float, str]]:
    """segment -> (setting index, validation log-loss, error) from the segment x setting fan-out."""
    import pandas as pd
    from pyspark.sql import functions as F

    spark = data.sparkSession
    if len(grid) == 1:
        return {s: (0, math.nan, "") for s in pending}
    keys = spark.createDataFrame([(s,) for s in pending], f"{SEGMENT_COL} string")
    settings_df = spark.createDataFrame([(i,) for i in range(len(grid))], "setting_id int")
    rows = (data.filter(F.col(SPLIT_COL) != "test").join(F.broadcast(keys), SEGMENT_COL)
            .crossJoin(F.broadcast(settings_df)))

    def validate(pdf: pd.DataFrame) -> pd.DataFrame:
        seg, sid = pdf[SEGMENT_COL].iloc[0], int(pdf["setting_id"].iloc[0])
        try:
            if not (pdf[SPLIT_COL] == "validation").any():
                loss, err = math.nan, "no validation rows"
            else:
                loss, err = validate_segment_setting(pdf, grid[sid], bits, seed), ""
        except Exception as exc:
            loss, err = math.nan, _error(exc)
        return pd.DataFrame({SEGMENT_COL: [seg], "setting_id": [sid], "val_log_loss": [loss], "error": [err]})

    out = (rows.repartition(partitions, SEGMENT_COL, "setting_id").groupBy(SEGMENT_COL, "setting_id")
           .applyInPandas(validate, f"{SEGMENT_COL} string, setting_id int, val_log_loss double, error string")
           .collect())
    by_segment: dict[str, list] = {}
    for r in out:
        by_segment.setdefault(r[SEGMENT_COL], []).append(r)
    chosen = {}
    for seg in pending:
        trials = by_segment.get(seg, [])
        ok = [r for r in trials if r["val_log_loss"] is not None and math.isfinite(r["val_log_loss"])]
        if ok:
            best = min(ok, key=lambda r: (r["val_log_loss"], r["setting_id"]))
            chosen[seg] = (int(best["setting_id"]), float(best["val_log_loss"]), "")
        elif trials and all(r["error"] == "no validation rows" for r in trials):
            chosen[seg] = (0, math.nan, "")  # nothing to choose on: the first setting
        else:
            errors = sorted({r["error"] for r in trials if r["error"]}) or ["no settings evaluated"]
            chosen[seg] = (-1, math.nan, "validation failed for every setting: " + " | ".join(errors)[:1900])
    return chosen


def _fit_pass(data: "DataFrame", pending: list[str], grid: list[dict], *, run_id: str, bits: int, seed: int,
              partitions: int, global_model: SparseWeights, fingerprint: str, delta_version: int) -> "DataFrame":
    """One pass over ``pending`` segments: fan-out selection, then refit + test, as table rows."""
    import pandas as pd
    from pyspark.sql import functions as F

    spark = data.sparkSession
    chosen = _choose_settings(data, pending, grid, bits, seed, partitions)
    choice = spark.createDataFrame(
        [(s, sid, loss, err) for s, (sid, loss, err) in chosen.items()],
        f"{SEGMENT_COL} string, setting_id int, val_log_loss double, choice_error string")
    g = (global_model.indices_, global_model.weights_, global_model.intercept_)
    meta = json.dumps({"engine": "sklearn"})

    def refit(pdf: pd.DataFrame) -> pd.DataFrame:
        seg = pdf[SEGMENT_COL].iloc[0]
        sid, loss, err = int(pdf["setting_id"].iloc[0]), pdf["val_log_loss"].iloc[0], pdf["choice_error"].iloc[0]
        if sid < 0:  # every setting failed on validation: nothing to refit
            row = fit_segment(pdf.iloc[:0], grid[0], bits, seed=seed)
            row.update(status=FAILED, error=err, n_train=int((pdf[SPLIT_COL] != "test").sum()),
                       n_validation=int((pdf[SPLIT_COL] == "validation").sum()),
                       n_test=int((pdf[SPLIT_COL] == "test").sum()),
                       positives_train=int(pdf.loc[pdf[SPLIT_COL] != "test", "label"].sum()))
        else:
            row = fit_segment(pdf, grid[sid], bits, seed=seed, global_model=g)
        row.update(run_id=run_id, segment=seg, attempts=1, val_log_loss=float(loss), fingerprint=fingerprint,
                   delta_version=int(delta_version), meta=meta)
        return pd.DataFrame([{c: row[c] for c in _FIT_COLUMNS}])

    rows = data.join(F.broadcast(choice), SEGMENT_COL)
    return (rows.repartition(partitions, SEGMENT_COL).groupBy(SEGMENT_COL)
            .applyInPandas(refit, _fit_schema()))


def _fallback_rows(spark: "SparkSession", stats: Mapping[str, Mapping[str, int]], segments: list[str], *,
                   run_id: str, bits: int, fingerprint: str, delta_version: int, reason: Mapping[str, str]):
    rows = []
    for s in segments:
        st = stats[s]
        rows.append({
            "run_id": run_id, "segment": s, "status": FALLBACK, "attempts": 0, "error": reason[s], "params": "",
            "n_train": st["train"] + st["validation"], "n_validation": st["validation"], "n_test": st["test"],
            "positives_train": st["pos_train"] + st["pos_validation"], "val_log_loss": None, "test_log_loss": None,
            "test_auc": None, "test_normalized_entropy": None, "test_calibration": None,
            "global_test_log_loss": None, "intercept": None, "raw_intercept": None, "indices": [], "weights": [],
            "fit_seconds": 0.0, "bits": int(bits), "fingerprint": fingerprint, "delta_version": int(delta_version),
            "meta": "",
        })
    return spark.createDataFrame(rows, _fit_schema())


@dataclass
class SegmentFitReport:
    run_id: str
    eligible: int  # segments with training rows
    skipped: int  # already completed for this run id
    fitted: int  # segment models fitted (ok) in this job
    fallback: int  # newly recorded fallbacks
    failed: list[str] = field(default_factory=list)  # still failed after the retries
    passes: int = 0
    attempts: int = 0  # segment tasks run (first tries + retries)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # statistics / fits / table writes


def segment_stats(data: "DataFrame") -> dict[str, dict[str, int]]:
    """segment -> rows and clicks per split (one aggregation job)."""
    from pyspark.sql import functions as F

    out: dict[str, dict[str, int]] = {}
    for r in (data.filter(F.col(SEGMENT_COL).isNotNull()).groupBy(SEGMENT_COL, SPLIT_COL)
              .agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("pos")).collect()):
        st = out.setdefault(r[SEGMENT_COL], {k: 0 for k in ("train", "validation", "test", "pos_train",
                                                             "pos_validation", "pos_test")})
        st[r[SPLIT_COL]] = int(r["n"])
        st[f"pos_{r[SPLIT_COL]}"] = int(r["pos"] or 0)
    return out


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
) -> SegmentFitReport:
    """Fit the missing segment models of ``run_id`` and record them (steps 3-6 of the module
    docstring). ``data``: featurized rows with ``_segment`` (string), ``_split``
    (train/validation/test), ``label``, ``indices``, ``values``; ``global_model`` is scored
    beside each segment model on its test rows. ``partitions``: segment groups are spread
    over this many tasks (default: twice Spark's default parallelism)."""
    started = time.perf_counter()
    grid = [normalize_setting(s) for s in (grid or [{}])]
    bits = int(global_model.bits_)
    stats = segment_stats(data)
    stats_seconds = time.perf_counter() - started
    if GLOBAL_KEY in stats:
        raise ValueError(f"segment value {GLOBAL_KEY!r} is reserved for the global model")
    eligible = sorted(s for s, st in stats.items() if st["train"] > 0)
    done = {r["segment"] for r in read_segment_rows(spark, settings, run_id, ["segment", "status"], table)
            if r["status"] in DONE} & set(eligible)
    todo = [s for s in eligible if s not in done]
    reason: dict[str, str] = {}
    for s in todo:
        st = stats[s]
        if st["train"] < min_rows:
            reason[s] = f"{st['train']} training rows < min_rows {min_rows}"
        elif st["pos_train"] < min_positives:
            reason[s] = f"{st['pos_train']} training clicks < min_positives {min_positives}"
        elif st["pos_train"] == st["train"]:
            reason[s] = "no training non-clicks"
    fallback = [s for s in todo if s in reason]
    pending = [s for s in todo if s not in reason]
    report = SegmentFitReport(run_id=run_id, eligible=len(eligible), skipped=len(done), fitted=0,
                              fallback=len(fallback), phases={"statistics": stats_seconds, "fits": 0.0, "writes": 0.0})
    parts = partitions or 2 * spark.sparkContext.defaultParallelism
    common = dict(run_id=run_id, bits=bits, fingerprint=fingerprint, delta_version=delta_version)
    pending_fallback = _fallback_rows(spark, stats, fallback, reason=reason, **common) if fallback else None
    while pending or pending_fallback is not None:
        if report.passes > max_retries:
            break
        results = None
        if pending:
            results = _fit_pass(data, pending, grid, seed=seed, partitions=max(1, min(parts, len(pending))),
                                global_model=global_model, **common)
        if pending_fallback is not None:
            results = pending_fallback if results is None else results.unionByName(pending_fallback)
            pending_fallback = None
        from pyspark import StorageLevel

        results = results.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            t0 = time.perf_counter()
            statuses = results.select("segment", "status").collect()  # runs the fits once
            t1 = time.perf_counter()
            merge_rows(spark, settings, results, table)
            report.phases["fits"] += t1 - t0
            report.phases["writes"] += time.perf_counter() - t1
        finally:
            results.unpersist()
        report.passes += 1
        report.attempts += len(pending)
        ok_now = {r["segment"] for r in statuses if r["status"] == OK}
        report.fitted += len(ok_now & set(pending))
        pending = sorted({r["segment"] for r in statuses if r["status"] == FAILED})
    report.failed = pending
    report.seconds = time.perf_counter() - started
    return report


# -- the bundle -------------------------------------------------------------------------------

@dataclass
class SegmentBundle:
    """Global model + per-segment weights, as read from a bundle directory (or assembled)."""

    segment_column: str
    bits: int
    keys: np.ndarray  # str, sorted, unique
    intercepts: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    n_train: np.ndarray
    positives: np.ndarray
    global_indices: np.ndarray
    global_weights: np.ndarray
    global_intercept: float
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self):
        self.keys = np.asarray(self.keys, dtype=str)
        self._lookup = {k: i for i, k in enumerate(self.keys.tolist())}
        # composite (segment position, column) keys: one binary search scores every row
        seg_of_entry = np.repeat(np.arange(self.keys.size, dtype=np.int64), np.diff(self.offsets))
        self._composite = (seg_of_entry << np.int64(self.bits)) | self.indices.astype(np.int64)

    @property
    def n_features(self) -> int:
        return 1 << int(self.bits)

    def positions(self, segments) -> np.ndarray:
        """Bundle position of each segment key (-1: no segment model, use the global one)."""
        return np.fromiter((self._lookup.get(s, -1) if s is not None else -1 for s in segments),
                           dtype=np.int64, count=len(segments))

    def margins(self, positions: np.ndarray, col: np.ndarray, val: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
        n = positions.size
        col = col.astype(np.int64, copy=False)
        glob = self.global_intercept + sparse_margin(col, val, row_ids, n, self.global_indices, self.global_weights)
        has = positions >= 0
        if not has.any():
            return glob
        entry_pos = positions[row_ids]
        sel = entry_pos >= 0
        seg = sparse_margin((entry_pos[sel] << np.int64(self.bits)) | col[sel], val[sel], row_ids[sel], n,
                            self._composite, self.weights)
        seg += np.where(has, self.intercepts[np.maximum(positions, 0)], 0.0)
        return np.where(has, seg, glob)

    def score_batch(self, segments: Sequence[str | None], X) -> np.ndarray:
        """Click probabilities of CSR rows ``X`` whose segment keys are ``segments``."""
        import scipy.sparse as sp

        from training.artifacts import sigmoid

        X = sp.csr_matrix(X)
        if X.shape[1] != self.n_features:
            raise ValueError(f"matrix has {X.shape[1]} columns, the bundle has {self.n_features}")
        row_ids = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        return sigmoid(self.margins(self.positions(list(segments)), X.indices, X.data, row_ids))

    def score(self, segment: str | None, indices, values=None) -> float:
        """One record (the bidder's path): its segment key and featurized (indices, values)."""
        idx = np.asarray(indices, dtype=np.int64)
        val = np.ones(idx.size) if values is None else np.asarray(values, dtype=np.float64)
        pos = np.array([self._lookup.get(segment, -1) if segment is not None else -1], dtype=np.int64)
        from training.artifacts import sigmoid

        return float(sigmoid(self.margins(pos, idx, val, np.zeros(idx.size, dtype=np.int64)))[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys, "intercepts": self.intercepts, "offsets": self.offsets, "indices": self.indices,
                "weights": self.weights, "n_train": self.n_train, "positives": self.positives,
                "bits": np.int64(self.bits)}


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
    """Write the bundle directory (format in the module docstring); returns its path.
    Written in a temporary sibling and renamed into place."""
    from training.artifacts import CHECKSUMS_FILE, save_model_dir, sha256_file

    def dumps(obj) -> str:  # the layout of the files save_model_dir writes
        return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"bundle directory {out_dir} already exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model_dir = save_model_dir(global_model, spec.to_toml(), spec.fingerprint, tmp_root / "bundle", extra=extra)
        with open(model_dir / SEGMENTS_FILE, "wb") as f:
            np.savez(f, **bundle.arrays())
        meta = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                "segment_column": bundle.segment_column, "n_segments": int(bundle.keys.size),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **bundle.meta}
        (model_dir / SEGMENTS_META).write_text(dumps(meta), encoding="utf-8")
        checksums = json.loads((model_dir / CHECKSUMS_FILE).read_text(encoding="utf-8"))
        checksums.update({name: sha256_file(model_dir / name) for name in (SEGMENTS_FILE, SEGMENTS_META)})
        (model_dir / CHECKSUMS_FILE).write_text(dumps(checksums), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(model_dir, out_dir)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return out_dir


def load_bundle(path) -> SegmentBundle:
    """Verify every checksum (global and segment files) and read a bundle directory."""
    from training.artifacts import ModelDirError, load_model_dir

    path = Path(path)
    loaded = load_model_dir(path)  # verifies all files listed in checksums.json
    if SEGMENTS_FILE not in loaded.checksums or SEGMENTS_META not in loaded.checksums:
        raise ModelDirError(f"{path}: not a segment bundle ({SEGMENTS_FILE} / {SEGMENTS_META} not in checksums)")
    meta = json.loads((path / SEGMENTS_META).read_text(encoding="utf-8"))
    if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ModelDirError(f"{path}: {SEGMENTS_META} declares format {meta.get('format')!r} "
                            f"v{meta.get('format_version')!r}, expected {BUNDLE_FORMAT!r} v{BUNDLE_FORMAT_VERSION}")
    try:
        with np.load(path / SEGMENTS_FILE, allow_pickle=False) as z:
            a = {k: z[k] for k in ("keys", "intercepts", "offsets", "indices", "weights", "n_train", "positives",
                                   "bits")}
    except (KeyError, ValueError, OSError) as exc:
        raise ModelDirError(f"{path}: {SEGMENTS_FILE} is unreadable: {exc}") from None
    keys, offsets, indices = a["keys"].astype(str), a["offsets"].astype(np.int64), a["indices"].astype(np.int64)
    s, bits = keys.size, int(a["bits"])
    problems = []
    if bits != loaded.bits:
        problems.append(f"bits {bits} != the global model's {loaded.bits}")
    if s and np.any(keys[1:] <= keys[:-1]):
        problems.append("keys must be sorted and unique")
    if offsets.shape != (s + 1,) or offsets[0] != 0 or offsets[-1] != indices.size or np.any(np.diff(offsets) < 0):
        problems.append("offsets do not delimit the entries")
    elif indices.size:
        first = np.zeros(indices.size, dtype=bool)
        first[offsets[:-1][np.diff(offsets) > 0]] = True
        if indices.min() < 0 or indices.max() >= (1 << bits) or np.any((np.diff(indices) <= 0) & ~first[1:]):
            problems.append("indices must be strictly increasing per segment and within [0, 2**bits)")
    if a["weights"].shape != indices.shape or a["intercepts"].shape != (s,):
        problems.append("weights / intercepts have the wrong length")
    elif not (np.isfinite(a["weights"]).all() and np.isfinite(a["intercepts"]).all()):
        problems.append("non-finite weights or intercepts")
    if problems:
        raise ModelDirError(f"{path}: {SEGMENTS_FILE} is inconsistent: " + "; ".join(problems))
    extra = {k: v for k, v in meta.items() if k not in ("segment_column",)}
    return SegmentBundle(
        segment_column=meta["segment_column"], bits=bits, keys=keys, intercepts=a["intercepts"].astype(np.float64),
        offsets=offsets, indices=indices, weights=a["weights"].astype(np.float64),
        n_train=a["n_train"].astype(np.int64), positives=a["positives"].astype(np.int64),
        global_indices=loaded.indices, global_weights=loaded.weights, global_intercept=loaded.intercept,
        meta=extra, path=path,
    )


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

        from training.artifacts import sigmoid

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
    recorded = read_segment_rows(spark, settings, run_id, None)
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
                              seed=seed)
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

