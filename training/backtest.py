"""Rolling back-tests (``ctr backtest --start D --days N --train-days k``).

For each of N test days ``t = D + k + i`` (i = 0..N-1): one run of the training job
(:mod:`training.job`) fits one fixed setting on the k days ``[t - k, t)`` and scores day
``t``, without registering; every day reads the table version the first day pinned. The
engine is the single-machine one (``sklearn`` or ``ftrl``) or ``mllib`` on Spark. The
setting is given (``--param``), or taken from a registered version's ``model.json``
(``--from-model champion``: the search's best as ``ctr train`` registered it, its engine
and ``bits`` included).

Per test day, :func:`training.metrics.evaluate` figures go to the Delta table
``backtest_metrics`` (MERGE on (run_id, test_date): re-running a run id replaces its rows)
and are printed as a table: rows, log_loss, normalized_entropy, auc, calibration, the
constant-CTR baseline (training-window CTR) and, when the job is given an oracle
(:mod:`shared.oracle`; generated data), best_possible_log_loss (null otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from feature_store.reader import Window
from shared.config import Settings
from shared.errors import ConfigurationError, InputError
from shared.featurize import FeatureSpec, load_spec
from shared.oracle import Oracle
from shared.spark import get_spark
from training.artifacts import load_model_dir
from training.distributed import SETTING_KEYS, MLlibEngine, normalize_setting
from training.ftrl import FTRLLogisticRegression
from training.job import Engine, TrainingJob
from training.params import validate_params
from training.pipeline import LocalEngine
from training.tracking import download_model_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

BACKTEST_TABLE = "backtest_metrics"
ENGINES = ("sklearn", "ftrl", "mllib")


@dataclass
class BacktestResult:
    run_id: str
    engine: str
    setting: dict[str, Any]
    bits: int
    delta_version: int
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        def f(x, fmt):
            return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

        head = (f"{'test_date':<10}  {'train window':<24} {'rows':>8} {'log_loss':>9} {'NE':>7} {'AUC':>7} "
                f"{'calib':>6} {'best_poss':>9} {'baseline':>9}")
        lines = [f"back-test {self.run_id} ({self.engine}, bits {self.bits}, Delta v{self.delta_version}): "
                 f"{json.dumps(self.setting, sort_keys=True)}", head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r['test_date'].isoformat():<10}  [{r['train_start'].isoformat()}, {r['train_end'].isoformat()}) "
                f"{r['rows']:>8,} {f(r['log_loss'], '.5f'):>9} {f(r['normalized_entropy'], '.4f'):>7} "
                f"{f(r['auc'], '.4f'):>7} {f(r['calibration'], '.3f'):>6} "
                f"{f(r['best_possible_log_loss'], '.5f'):>9} {f(r['baseline_log_loss'], '.5f'):>9}")
        for s in self.skipped:
            lines.append(f"skipped: {s}")
        if self.rows:
            ll = np.array([r["log_loss"] for r in self.rows])
            lines.append(f"mean log-loss {ll.mean():.5f} over {len(ll)} day(s); {self.seconds:.1f} s")
        return "\n".join(lines)


def setting_from_model(settings: Settings, model_name: str, ref: str = "champion") -> tuple[dict[str, Any], int, str]:
    """(setting, bits, engine) of a registered version (alias or number), from its model.json."""
    with tempfile.TemporaryDirectory(prefix="ctr-backtest-") as tmp:
        meta = load_model_dir(download_model_dir(settings, model_name, ref, tmp)).metadata
    hp = meta.get("hyperparameters", {})
    engine = str(meta.get("engine") or hp.get("engine") or "sklearn")
    if engine == "ftrl":
        return {k: hp[k] for k in FTRLLogisticRegression._parameter_constraints if k in hp}, int(meta["bits"]), engine
    return normalize_setting({k: hp[k] for k in SETTING_KEYS if k in hp}), int(meta["bits"]), engine


def ftrl_setting(setting: Mapping[str, Any]) -> dict[str, Any]:
    """An FTRL setting checked against the estimator's declared constraints."""
    validate_params(setting, FTRLLogisticRegression._parameter_constraints)
    return dict(setting)


def _engine(engine: str, setting: Mapping[str, Any], seed: int) -> Engine:
    if engine == "mllib":
        return MLlibEngine([setting], seed=seed)
    return LocalEngine(setting={"engine": engine, **setting}, seed=seed)


def run_backtest(
    spark: "SparkSession | None",
    settings: Settings,
    start: date,
    days: int,
    train_days: int,
    spec: FeatureSpec | str = "generated",
    *,
    setting: Mapping[str, Any] | None = None,
    bits: int | None = None,
    engine: str = "sklearn",
    run_id: str | None = None,
    table: str = "observations",
    delta_version: int | None = None,
    seed: int = 0,
    write: bool = True,
    oracle: Oracle | None = None,
) -> BacktestResult:
    """Rolling windows from ``start``: train ``train_days`` days, test the next day, ``days``
    times, each day one run of the training job (:mod:`training.job`) with the engine and a
    fixed setting, not registered. ``bits`` overrides the spec's hash space. Every day reads
    the table version the first day pinned. Writes ``backtest_metrics`` unless
    ``write=False``; returns the per-day rows."""
    if days < 1 or train_days < 1:
        raise ConfigurationError(f"need days >= 1 and train_days >= 1, got {days}, {train_days}")
    if engine not in ENGINES:
        raise ConfigurationError(f"engine must be one of {ENGINES}, got {engine!r}")
    started = time.perf_counter()
    spec = load_spec(spec)
    if bits is not None and bits != spec.bits:
        spec = dataclasses.replace(spec, bits=int(bits))
    setting = ftrl_setting(setting or {}) if engine == "ftrl" else normalize_setting(setting)
    run_id = run_id or uuid.uuid4().hex
    result = BacktestResult(run_id=run_id, engine=engine, setting=setting, bits=spec.bits,
                            delta_version=-1, rows=[])
    version = delta_version
    for i in range(days):
        train_start, test_day = start + timedelta(days=i), start + timedelta(days=i + train_days)
        job = TrainingJob(settings, {"train": Window(train_start, test_day),
                                     "test": Window(test_day, test_day + timedelta(days=1))},
                          spec, table=table, delta_version=version, oracle=oracle, spark=spark)
        try:
            day = job.run(_engine(engine, setting, seed), register=False)
        except InputError as exc:
            if "has no rows" not in str(exc):
                raise
            result.skipped.append(f"{test_day}: {exc}")
            continue
        version = day.delta_version  # every day at the first day's table version
        spark = job.spark
        t = day.metrics["test"]
        result.rows.append({
            "run_id": run_id, "test_date": test_day, "train_start": train_start, "train_end": test_day,
            "rows": day.rows["test"], "positives": int(t["positives"]),
            "log_loss": t["log_loss"], "normalized_entropy": t["normalized_entropy"], "auc": t["auc"],
            "calibration": t["calibration"], "best_possible_log_loss": day.best_possible_test_log_loss,
            "baseline_log_loss": day.baseline_test_log_loss, "train_rows": day.rows["train"], "engine": engine,
            "params": json.dumps(setting, sort_keys=True), "delta_version": int(day.delta_version),
            "fit_seconds": float(getattr(day.model, "fit_seconds_", day.seconds["fit"])),
        })
    result.delta_version = int(version) if version is not None else -1
    if write and result.rows:
        if spark is None:
            spark = get_spark(settings, "ctr-backtest")
        write_metrics(spark, settings, result.rows)
    result.seconds = time.perf_counter() - started
    return result


def write_metrics(spark: "SparkSession", settings: Settings, rows: Sequence[Mapping[str, Any]]) -> int:
    """MERGE per-day rows into ``backtest_metrics`` on (run_id, test_date), one commit;
    returns the table version written."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from feature_store import tables
    from shared import catalog

    path = settings.table_path(BACKTEST_TABLE)
    given = catalog.BACKTEST_METRICS.drop("created_at")  # stamped below
    clean = [{c: (None if isinstance(r.get(c), float) and math.isnan(r[c]) else r.get(c)) for c in given.column_names}
             for r in rows]
    source = spark.createDataFrame(clean, given.spark_schema())
    source = source.withColumn("created_at", F.current_timestamp())
    if not tables.table_exists(spark, path):
        empty = spark.createDataFrame([], catalog.BACKTEST_METRICS.spark_schema())
        empty.write.format("delta").mode("ignore").save(path)
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(source.alias("s"), "t.run_id = s.run_id AND t.test_date = s.test_date")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    return tables.latest_version(spark, path)
