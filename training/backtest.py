"""Rolling back-tests (``ctr backtest --start D --days N --train-days k``).

For each of N test days ``t = D + k + i`` (i = 0..N-1): fit one fixed setting on the k days
``[t - k, t)`` and score day ``t``. All days are read once, at one pinned Delta version,
and hashed once by the shared featurizer (batch path for ``engine="sklearn"``, the Spark
path + MLlib for ``engine="mllib"``). The setting is given (``--param``), or taken from a
registered version's ``model.json`` (``--from-model champion``: the search's best as
``ctr train`` registered it, its ``bits`` included).

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
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from feature_store.reader import Window
from shared.config import Settings
from shared.oracle import Oracle
from shared.featurize import FeatureSpec, load_spec
from training.distributed import SETTING_KEYS, normalize_setting
from training.metrics import evaluate

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

BACKTEST_TABLE = "backtest_metrics"
BACKTEST_DDL = (
    "run_id string, test_date date, train_start date, train_end date, rows long, positives long, "
    "log_loss double, normalized_entropy double, auc double, calibration double, best_possible_log_loss double, "
    "baseline_log_loss double, train_rows long, engine string, params string, delta_version long, "
    "fit_seconds double, created_at timestamp"
)
ENGINES = ("sklearn", "mllib")


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


def setting_from_model(settings: Settings, model_name: str, ref: str = "champion") -> tuple[dict[str, Any], int]:
    """(setting, bits) of a registered version (alias or number), from its model.json."""
    import tempfile

    from training.artifacts import load_model_dir
    from training.tracking import download_model_dir

    with tempfile.TemporaryDirectory(prefix="ctr-backtest-") as tmp:
        meta = load_model_dir(download_model_dir(settings, model_name, ref, tmp)).metadata
    hp = meta.get("hyperparameters", {})
    return normalize_setting({k: hp[k] for k in SETTING_KEYS if k in hp}), int(meta["bits"])


def run_backtest(
    spark: "SparkSession",
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
    times. ``bits`` overrides the spec's hash space. Writes ``backtest_metrics`` unless
    ``write=False``; returns the per-day rows."""
    import pyarrow as pa

    from feature_store.reader import read_window, to_arrow

    if days < 1 or train_days < 1:
        raise ValueError(f"need days >= 1 and train_days >= 1, got {days}, {train_days}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    started = time.perf_counter()
    spec = load_spec(spec)
    if bits is not None and bits != spec.bits:
        spec = dataclasses.replace(spec, bits=int(bits))
    setting = normalize_setting(setting)
    run_id = run_id or uuid.uuid4().hex
    span = Window(start, start + timedelta(days=train_days + days))
    columns = sorted(set(spec.input_columns) | {"impression_id", "label", "date"})
    df, read = read_window(spark, settings, span, columns, table=table, version=delta_version)
    result = BacktestResult(run_id=run_id, engine=engine, setting=setting, bits=spec.bits,
                            delta_version=read.version, rows=[])
    windows = [(start + timedelta(days=i), start + timedelta(days=i + train_days)) for i in range(days)]

    if engine == "sklearn":
        from shared.featurize import Featurizer
        from training.model import SparseLogisticRegression

        frame = to_arrow(df)
        X = Featurizer(spec).transform(frame)
        y = frame.column("label").to_numpy().astype(np.int8)
        dates = frame.column("date").to_numpy().astype("datetime64[D]")

        def one_day(train_start: date, test_day: date):
            tr = (dates >= np.datetime64(train_start)) & (dates < np.datetime64(test_day))
            te = dates == np.datetime64(test_day)
            if not tr.any() or not te.any():
                return None
            model = SparseLogisticRegression(**setting, random_state=seed).fit(X[tr], y[tr])
            p = model.predict_proba(X[te])[:, 1]
            test_frame = frame.filter(pa.array(te)).select(["impression_id", "label"])
            return y[te], p, float(y[tr].mean()), int(tr.sum()), model.fit_seconds_, test_frame
    else:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        from feature_store.tables import first_row
        from shared.featurize.spark import featurize_spark
        from training.distributed import fit_mllib
        from training.spark_scoring import collect_predictions, predict_spark

        feats = featurize_spark(df, spec, keep=["impression_id", "label", "date"]).persist(
            StorageLevel.MEMORY_AND_DISK)

        def one_day(train_start: date, test_day: date):
            train = feats.filter((F.col("date") >= F.lit(train_start)) & (F.col("date") < F.lit(test_day)))
            c = first_row(train.groupBy().agg(F.count(F.lit(1)), F.sum("label")))
            if not c[0]:
                return None
            model = fit_mllib(train, setting, spec.bits, seed=seed)
            yt, p, test_table = collect_predictions(predict_spark(feats.filter(F.col("date") == F.lit(test_day)),
                                                                  model))
            if yt.size == 0:
                return None
            return yt, p, float(c[1]) / float(c[0]), int(c[0]), model.fit_seconds_, test_table

    try:
        for train_start, test_day in windows:
            out = one_day(train_start, test_day)
            if out is None:
                result.skipped.append(f"{test_day}: no training or test rows in Delta v{read.version}")
                continue
            yt, p, base_rate, n_train, fit_seconds, test_frame = out
            m = evaluate(yt, p)
            best = oracle.best_log_loss(test_frame, test_day, test_day + timedelta(days=1)) if oracle else None
            result.rows.append({
                "run_id": run_id, "test_date": test_day, "train_start": train_start, "train_end": test_day,
                "rows": int(yt.size), "positives": int(yt.sum()), "log_loss": m["log_loss"],
                "normalized_entropy": m["normalized_entropy"], "auc": m["auc"], "calibration": m["calibration"],
                "best_possible_log_loss": best,
                "baseline_log_loss": evaluate(yt, np.full(yt.shape, base_rate))["log_loss"],
                "train_rows": n_train, "engine": engine, "params": json.dumps(setting, sort_keys=True),
                "delta_version": int(read.version), "fit_seconds": float(fit_seconds),
            })
    finally:
        if engine == "mllib":
            feats.unpersist()
    if write and result.rows:
        write_metrics(spark, settings, result.rows)
    result.seconds = time.perf_counter() - started
    return result


def write_metrics(spark: "SparkSession", settings: Settings, rows: Sequence[Mapping[str, Any]]) -> int:
    """MERGE per-day rows into ``backtest_metrics`` on (run_id, test_date), one commit;
    returns the table version written."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from feature_store import tables

    path = settings.table_path(BACKTEST_TABLE)
    ddl = BACKTEST_DDL.replace(", created_at timestamp", "")
    columns = [part.split()[0] for part in ddl.split(", ")]
    clean = [{c: (None if isinstance(r.get(c), float) and math.isnan(r[c]) else r.get(c)) for c in columns}
             for r in rows]
    source = spark.createDataFrame(clean, ddl)
    source = source.withColumn("created_at", F.current_timestamp())
    if not tables.table_exists(spark, path):
        spark.createDataFrame([], BACKTEST_DDL).write.format("delta").mode("ignore").save(path)
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(source.alias("s"), "t.run_id = s.run_id AND t.test_date = s.test_date")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    return tables.latest_version(spark, path)
