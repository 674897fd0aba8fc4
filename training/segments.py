"""Per-segment models (``ctr train --per-segment COLUMN``): the Spark fan-out engine and its job.

One job, identified by a run id, reads the windows once (featurized in Spark, each row
carrying its segment key), fits the global model, then fans the segments out: packed into
a few buckets, one ``mapInArrow`` task per bucket fits its segments one after the other
(:func:`training.segment_fit.fit_segment_rows`), and each pass's results go to the
``segment_models`` table (:mod:`training.segment_table`) in one commit. The bundle (global
model + every ``ok`` segment, :mod:`training.segment_bundle`) is scored on the test window
and registered as one model version. A job given a run id resumes it: what the table holds
as done is not fitted again, failed segments are retried a few times. Why buckets rather
than a task per segment, and the retry and idempotence rules: ``docs/segments.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence


from shared.config import Settings
from shared.errors import InputError
from shared.featurize import FeatureSpec, load_spec
from shared.oracle import Oracle
from shared.spark import get_spark
from shared.model.registry import CHAMPION, SEGMENT_MODEL_NAME, Tag
from training.distributed import (
    SPLIT_COL,
    SparkData,
    SparseWeights,
    normalize_setting,
    read_spark_data,
    score_champion_in_spark,
)
from training.job import Engine, Predictions, Selection, TrainingJob, Windows
from training.metrics import evaluate
from training.segment_bundle import assemble_bundle, write_bundle
from training.segment_fit import failed_row, fit_segment_rows
from training.segment_global import fit_global, global_from_row, global_model_row
from training.segment_rows import SEGMENT_COL, rows_from_arrow
from training.segment_table import (
    DONE,
    FAILED,
    FALLBACK,
    GLOBAL_KEY,
    OK,
    SEGMENT_TABLE,
    append_new_rows,
    arrow_batch,
    fit_schema,
    merge_rows,
    read_segment_rows,
)
from training.spark_scoring import collect_predictions, predict_bundle_spark, predict_spark
from training.tracking import INTERRUPTED, list_versions, recover_interrupted

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_MODEL_NAME = SEGMENT_MODEL_NAME
RUN_ID_TAG = "segments_run_id"
_RESERVED = "is reserved for the global model"


# -- the fan-out --------------------------------------------------------------------------------

def _fit_pass(data: "DataFrame", grid: Sequence[Mapping[str, Any]], *, keys: Sequence[str], exclude: bool,
              run_id: str, bits: int, seed: int, tasks: int, global_model: SparseWeights, fingerprint: str,
              delta_version: int, min_rows: int, min_positives: int) -> "DataFrame":
    """One pass as table rows: the segments of ``data`` other than ``keys`` (``exclude``) or
    exactly ``keys``, packed into ``tasks`` buckets by a hash of the segment key; the rows are
    shuffled so that partition ``b`` holds bucket ``b`` (``repartitionById``), and one
    ``mapInArrow`` task per bucket runs :func:`fit_segment_rows` over its segments: the
    fallback decision, setting choice, refit and test of each, one after the other."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    spark = data.sparkSession
    g = (global_model.indices_, global_model.weights_, global_model.intercept_)
    schema = fit_schema()
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
                    yield arrow_batch([{**extra, **failed_row(exc, bits), "segment": key,
                                        "val_log_loss": math.nan}], arrow_schema)
        out = [{**extra, **row} for rows in parts
               for row in fit_segment_rows(rows, grid, bits, seed=seed, global_model=g, min_rows=min_rows,
                                           min_positives=min_positives)]
        for i in range(0, len(out), 256):  # list offsets are int32: keep batches modest
            yield arrow_batch(out[i:i + 256], arrow_schema)

    rows = data.select(SEGMENT_COL, SPLIT_COL, "label", "indices", "values").filter(F.col(SEGMENT_COL).isNotNull())
    if keys or not exclude:
        key_df = spark.createDataFrame([(k,) for k in keys], f"{SEGMENT_COL} string")
        rows = rows.join(F.broadcast(key_df), SEGMENT_COL, "left_anti" if exclude else "inner")
    return (rows.repartitionById(tasks, F.expr(f"pmod(hash({SEGMENT_COL}), {int(tasks)})"))
            .mapInArrow(fit_bucket, schema))


@dataclass
class SegmentFitReport:
    """What :func:`fit_segments` did for a run: segments counted, fitted, fallen back, failed; time."""

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
    """Fit the missing segment models of ``run_id`` and record them in the segment table.
    ``data``: featurized rows with ``_segment`` (string), ``_split``
    (train/validation/test), ``label``, ``indices``, ``values``; ``global_model`` is scored
    beside each segment model on its test rows.

    ``partitions``: the segments are packed into this many buckets (a hash of the segment
    key), one Spark task each, which decides, fits and tests its segments one after the
    other (default: Spark's default parallelism; retries: at most one bucket per failed
    segment). Few tasks of many segments beat many small ones (``docs/segments.md``).

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
    common: dict[str, Any] = dict(run_id=run_id, bits=bits, seed=seed, global_model=global_model,
                                  fingerprint=fingerprint, delta_version=delta_version, min_rows=min_rows,
                                  min_positives=min_positives)
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


# -- warehouse window -> registered bundle ---------------------------------------------------------

@dataclass
class SegmentTrainResult:
    """The outcome of :func:`train_segments_from_warehouse`: the registered version and the figures."""

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
        """The lines ``ctr train --per-segment`` prints."""
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
    """The version registered for ``run_id`` (its ``segments_run_id`` tag), if any. A version
    whose registering process died before its gate ended is first marked (promoted when the
    alias had moved, else ``interrupted``) and an interrupted one does not count: the run is
    registered and gated again (its segments are in the table: nothing is refitted)."""
    recover_interrupted(settings, model_name)
    for v in list_versions(settings, model_name):
        if v["tags"].get(RUN_ID_TAG) == run_id and v["tags"].get(Tag.GATE_DECISION) != INTERRUPTED:
            return v
    return None


@dataclass
class SegmentModel:
    """What the fan-out produced: the bundle, its global model, the table's statuses, the job's report."""

    bundle: Any
    global_model: SparseWeights
    report: SegmentFitReport
    fallback: list[str]
    failed: list[str]
    global_test: dict[str, float]


@dataclass
class SegmentData(SparkData):
    """The featurized windows with each row's segment key; ``recorded``: the run's table rows before this job."""

    global_row: Any = None


class SegmentsEngine(Engine[SegmentData]):
    """The per-segment fan-out: the global model, then one model per segment value fitted in
    Spark tasks and recorded in the segment table, assembled into one bundle. A job given a
    run id resumes it (the data version it started on, what the table holds as done)."""

    name = "segments"
    evaluated = ("test",)

    def __init__(self, segment_column: str, *, run_id: str | None = None,
                 grid: Sequence[Mapping[str, Any]] | None = None, min_rows: int = 200, min_positives: int = 10,
                 max_retries: int = 2, global_engine: str = "mllib", partitions: int | None = None, seed: int = 0):
        self.segment_column = segment_column
        self.grid = [normalize_setting(s) for s in (grid or [{}])]
        self.fresh_run = run_id is None  # a run id made up here: nothing recorded for it, nobody else writes it
        self.run_id = run_id or uuid.uuid4().hex
        self.min_rows, self.min_positives, self.max_retries = min_rows, min_positives, max_retries
        self.global_engine, self.partitions, self.seed = global_engine, partitions, seed

    def _run_meta(self, job: TrainingJob) -> dict[str, Any]:
        return {"segment_column": self.segment_column, "windows": Windows(**job.windows).reference(),
                "table": job.table}

    def read(self, job: TrainingJob) -> SegmentData:
        """A resumed run reads the data version it started on."""
        from pyspark.sql import functions as F

        if job.spark is None:
            job.spark = get_spark(job.settings, "ctr-train")
        spark = job.spark
        recorded = [] if self.fresh_run else read_segment_rows(spark, job.settings, self.run_id, None)
        global_row = next((r for r in recorded if r["segment"] == GLOBAL_KEY and r["status"] == OK), None)
        delta_version = job.delta_version
        if global_row is not None:
            gmeta = json.loads(global_row["meta"])
            if global_row["fingerprint"] != job.spec.fingerprint:
                raise InputError(f"run {self.run_id} was started with feature spec {global_row['fingerprint']}, "
                                 f"not {job.spec.fingerprint}")
            if gmeta.get("run") != self._run_meta(job):
                raise InputError(f"run {self.run_id} was started with {gmeta.get('run')}, not {self._run_meta(job)}")
            if delta_version is not None and delta_version != global_row["delta_version"]:
                raise InputError(f"run {self.run_id} read Delta version {global_row['delta_version']}, "
                                 f"not {delta_version}")
            delta_version = int(global_row["delta_version"])
        columns = spark.read.format("delta").load(job.settings.table_path(job.table)).columns
        if self.segment_column not in columns:
            raise InputError(f"table {job.table} has no column {self.segment_column!r}")
        data = read_spark_data(job, extra={SEGMENT_COL: F.col(self.segment_column).cast("string")},
                               delta_version=delta_version)
        return SegmentData(**{f.name: getattr(data, f.name) for f in dataclasses.fields(data)},
                           global_row=global_row)

    def select(self, data: SegmentData) -> Selection:
        return Selection({"engine": self.name, "segments.column": self.segment_column}, {
            "segments.column": self.segment_column, "segments.min_rows": self.min_rows,
            "segments.min_positives": self.min_positives, "segments.max_retries": self.max_retries,
            "segments.grid": json.dumps(self.grid)[:6000]})

    def fit(self, data: SegmentData, selection: Selection, job: TrainingJob) -> SegmentModel:
        """The global model (or the run's recorded one), the fan-out, the bundle of the table's rows."""
        from pyspark.sql import functions as F

        spark, settings, spec = job.spark, job.settings, job.spec
        if data.global_row is None:
            global_model = fit_global(data.featurized, self.grid, spec.bits, self.global_engine, self.seed)
            y_g, p_g, _ = collect_predictions(predict_spark(data.featurized.filter(F.col(SPLIT_COL) == "test"),
                                                            global_model))
            grow = global_model_row(global_model, evaluate(y_g, p_g), run_id=self.run_id, rows=data.rows,
                                    positives=data.positives, spec=spec, delta_version=data.version,
                                    run_meta=self._run_meta(job))
            merge_rows(spark, settings, spark.createDataFrame([grow], fit_schema()))
        else:
            global_model = global_from_row(data.global_row)
        report = fit_segments(spark, settings, data.featurized, run_id=self.run_id, global_model=global_model,
                              grid=self.grid, min_rows=self.min_rows, min_positives=self.min_positives,
                              max_retries=self.max_retries, partitions=self.partitions,
                              fingerprint=spec.fingerprint, delta_version=data.version, seed=self.seed,
                              fresh_run=self.fresh_run)
        table_rows = read_segment_rows(spark, settings, self.run_id, None)
        fallback = sorted(r["segment"] for r in table_rows if r["status"] == FALLBACK)
        failed = sorted(r["segment"] for r in table_rows if r["status"] == FAILED)
        settings_by_segment = {r["segment"]: json.loads(r["params"]) for r in table_rows
                               if r["status"] == OK and r["segment"] != GLOBAL_KEY}
        bundle = assemble_bundle(table_rows, global_model, self.segment_column, meta={
            "run_id": self.run_id, "min_rows": self.min_rows, "min_positives": self.min_positives,
            "fallback": fallback, "failed": failed, "settings": settings_by_segment})
        g_row = next(r for r in table_rows if r["segment"] == GLOBAL_KEY)
        global_test = {"log_loss": g_row["test_log_loss"], "auc": g_row["test_auc"],
                       "normalized_entropy": g_row["test_normalized_entropy"], "calibration": g_row["test_calibration"]}
        selection.log_params.update({"segments.models": int(bundle.keys.size), "segments.fallback": len(fallback),
                                     "segments.failed": len(failed), "global.engine": global_model.engine})
        return SegmentModel(bundle, global_model, report, fallback, failed, global_test)

    def predict(self, data: SegmentData, model: SegmentModel, split: str) -> Predictions:
        y, p, table = collect_predictions(predict_bundle_spark(data.split(split), model.bundle, SEGMENT_COL))
        return Predictions(y, p, table.select(["impression_id", "label"]))

    def extra_metrics(self, data: SegmentData, model: SegmentModel) -> dict[str, dict[str, float]]:
        return {"global_test": dict(model.global_test)}

    def n_nonzero(self, model: SegmentModel) -> int:
        return int(model.global_model.n_nonzero_ + model.bundle.indices.size)

    def save(self, data: SegmentData, model: SegmentModel, spec: FeatureSpec, path: Path,
             extra: dict[str, Any]) -> Path:
        return write_bundle(model.bundle, model.global_model, spec, path, extra={
            **extra, "data_reference": {**extra["data_reference"], "segment_column": self.segment_column,
                                        "segments_run_id": self.run_id}})

    def champion_log_loss(self, data: SegmentData, loaded: Any) -> float:
        return score_champion_in_spark(data.raws["test"], loaded)

    def tags(self, data: SegmentData, model: SegmentModel) -> dict[str, str]:
        return {RUN_ID_TAG: self.run_id, "engine": self.name}


def train_segments_from_warehouse(
    spark: "SparkSession",
    settings: Settings,
    windows: Windows,
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
    oracle: Oracle | None = None,
) -> SegmentTrainResult:
    """``ctr train --per-segment COLUMN``: the training job with the :class:`SegmentsEngine`
    (a run id already registered returns its version and fits nothing).

    ``register=False`` stops after the table is complete and the bundle is scored (the bundle
    is registered by a later call with the same ``run_id``)."""
    engine = SegmentsEngine(segment_column, run_id=run_id, grid=grid, min_rows=min_rows,
                            min_positives=min_positives, max_retries=max_retries, global_engine=global_engine,
                            partitions=partitions, seed=seed)
    existing = _registered_version(settings, model_name, engine.run_id) if register and run_id else None
    if existing is not None:
        return SegmentTrainResult(
            run_id=engine.run_id, version=existing["version"], promoted=CHAMPION in existing["aliases"],
            gate_reason=existing["tags"].get(Tag.GATE_REASON, ""), mlflow_run_id=existing["run_id"],
            segment_column=segment_column, report=None, n_segments=0, fallback=[], failed=[], metrics={},
            delta_version=-1, already_registered=True)
    job = TrainingJob(settings, windows.named(), load_spec(spec), table=table, delta_version=delta_version,
                      model_name=model_name, margin=margin, oracle=oracle,
                      run_name=f"train segments by {segment_column} {windows.train}", spark=spark)
    result = job.run(engine, register=register)
    model: SegmentModel = result.model
    return SegmentTrainResult(
        run_id=engine.run_id, version=result.version, promoted=result.promoted,
        gate_reason=result.gate_reason if register else "not registered (register=False)",
        mlflow_run_id=result.run_id, segment_column=segment_column, report=model.report,
        n_segments=int(model.bundle.keys.size), fallback=model.fallback, failed=model.failed,
        metrics=result.metrics, delta_version=result.delta_version, seconds=result.seconds)
