"""The distributed training path: Spark MLlib logistic regression on the shared hashed features.

For data beyond one machine (``ctr train --engine mllib``). The rows never leave Spark
until the test window's predictions are collected for :func:`training.metrics.evaluate`:

1. the windows are read at one pinned Delta version (:func:`feature_store.reader.read_window`)
   and featurized by the shared Spark path (:func:`shared.featurize.spark.featurize_spark`,
   mmh3 inside ``mapInArrow``; never Spark's own hash functions), giving ``indices`` /
   ``values`` arrays; :func:`to_vectors` turns them into MLlib ``SparseVector`` s of size
   ``2**bits`` in a second ``mapInArrow`` (no per-row Python UDF);
2. :func:`fit_mllib` fits ``pyspark.ml.classification.LogisticRegression`` — L-BFGS for
   l2, OWL-QN when the elastic-net mix has an L1 part — on exactly the objective of the
   scikit-learn path (below);
3. the coefficients become the sparse weights of the plain model directory
   (:class:`SparseWeights`, written by :func:`training.artifacts.save_model_dir`), so the
   bidder serves an MLlib model like any other;
4. validation and test windows are scored *with those converted weights* in Spark
   (:func:`training.spark_scoring.predict_spark`: the bidder's arithmetic, not MLlib's
   ``transform``) and the (label, probability) pairs are collected for ``evaluate``; then
   the run is logged, registered and gated by :func:`training.tracking.log_training_run`
   exactly as the scikit-learn path does.

Regularisation mapping
----------------------
scikit-learn (``SparseLogisticRegression``) minimises over the n rows it fits::

    C * sum_i loss_i + (1 - r) / 2 * ||w||^2 + r * ||w||_1        (r = l1_ratio; l2: r=0, l1: r=1)

MLlib minimises ``(1/n) * sum_i loss_i + regParam * ((1 - a)/2 * ||w||^2 + a * ||w||_1)``.
Dividing the first by ``C * n`` gives the second with ``regParam = 1 / (C * n)`` and
``elasticNetParam = r``; ``n`` is the number of rows *fitted* (after negative downsampling).
MLlib runs with ``standardization=False`` (its default would penalise standardised
coefficients: another objective) and never penalises the intercept (scikit-learn's
liblinear does, with ``intercept_scaling = 100``, i.e. negligibly). ``tol`` is MLlib's own
convergence tolerance (relative change of the objective), not liblinear's. One visible
difference: MLlib gives a feature with zero variance in the fitted rows (present in every
row) weight 0 — it is collinear with the intercept — where scikit-learn shares the weight
between it and the intercept; the predictions are the same. On the tests' tiny warehouse
(4,800 rows, l2, C = 1) the two paths' test log-losses agree to 1e-5 and their common
weights to 0.018.

Negative downsampling is the scikit-learn path's: every positive and each negative with
probability ``downsample_rate`` (``rand(seed)`` in Spark), and the fitted intercept is
shifted by ``ln(downsample_rate)`` (see :mod:`training.model`).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from feature_store.reader import Window, read_window
from shared.config import Settings
from shared.featurize import FeatureSpec, load_spec
from shared.featurize.spark import featurize_spark
from shared.model.bundle import SEGMENTS_META, load_bundle
from shared.model.registry import DEFAULT_MODEL_NAME
from shared.model.scoring import sigmoid, sorted_pairs_margin
from shared.oracle import Oracle
from shared.spark import get_spark
from training.artifacts import save_model_dir
from training.metrics import evaluate
from training.model import PENALTIES
from training.job import SPLITS, Dataset, Engine, Predictions, Selection, TrainingJob, TrainResult, Windows, named_windows
from training.search import HARD_LIMITS
from training.spark_scoring import collect_predictions, flat_list, predict_bundle_spark, predict_spark

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

ENGINE = "mllib"
#: Hyperparameters of one training setting (the scikit-learn path's names and meaning).
SETTING_KEYS = ("penalty", "C", "l1_ratio", "downsample_rate", "max_iter", "tol")
DEFAULT_SETTING: dict[str, Any] = {
    "penalty": "l2", "C": 1.0, "l1_ratio": 0.5, "downsample_rate": 1.0, "max_iter": 100, "tol": 1e-4,
}
_FLOAT_KEYS = frozenset({"C", "l1_ratio", "downsample_rate", "tol"})
#: Rows per partition MLlib iterates over (see :func:`fit_mllib`).
ROWS_PER_PARTITION = 250_000


# -- settings and the regularisation mapping -------------------------------------------------

def normalize_setting(setting: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``setting`` with every key of :data:`SETTING_KEYS` filled from :data:`DEFAULT_SETTING`,
    coerced to its type and checked against the search's hard limits."""
    out = dict(DEFAULT_SETTING)
    for key, value in (setting or {}).items():
        if key not in SETTING_KEYS:
            raise ValueError(f"unknown training setting {key!r}; allowed: {', '.join(SETTING_KEYS)}")
        out[key] = value
    if out["penalty"] not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {out['penalty']!r}")
    for key in SETTING_KEYS:
        if key == "penalty":
            continue
        try:
            value = float(out[key]) if key in _FLOAT_KEYS else int(out[key])
        except (TypeError, ValueError):
            raise ValueError(f"setting {key} must be a number, got {out[key]!r}") from None
        if key == "max_iter" and value != float(out[key]):
            raise ValueError(f"setting max_iter must be an integer, got {out[key]!r}")
        lo, hi = HARD_LIMITS[key]
        if not lo <= value <= hi:
            raise ValueError(f"setting {key}={value!r} outside [{lo}, {hi}]")
        out[key] = value
    return out


def _parse_value(text: str):
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_grid(items: Iterable[str] | None,
               normalize: Callable[[Mapping[str, Any]], dict[str, Any]] = normalize_setting) -> list[dict[str, Any]]:
    """Settings from ``KEY=V1[,V2...]`` strings (the CLI's ``--param``): the cartesian
    product of the listed values, each normalised. No items: ``[normalize({})]``."""
    choices: dict[str, list] = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ValueError(f"--param expects KEY=VALUE[,VALUE...], got {item!r}")
        if key in choices:
            raise ValueError(f"--param {key} given twice; list the values once, comma-separated")
        choices[key] = [_parse_value(v) for v in values.split(",")]
    keys = sorted(choices)
    grid = [normalize(dict(zip(keys, combo))) for combo in itertools.product(*(choices[k] for k in keys))]
    unique: list[dict[str, Any]] = []
    for s in grid:  # e.g. l1_ratio values collapse when the penalty ignores them
        if s not in unique:
            unique.append(s)
    return unique


def reg_param(C: float, n_rows: int) -> float:
    """MLlib's ``regParam`` equivalent to scikit-learn's ``C`` on ``n_rows`` fitted rows."""
    if not C > 0 or n_rows < 1:
        raise ValueError(f"need C > 0 and n_rows >= 1, got C={C}, n_rows={n_rows}")
    return 1.0 / (float(C) * int(n_rows))


def elastic_net_param(setting: Mapping[str, Any]) -> float:
    return {"l2": 0.0, "l1": 1.0}.get(setting["penalty"], float(setting["l1_ratio"]))


def mllib_arguments(setting: Mapping[str, Any], n_fit_rows: int) -> dict[str, Any]:
    """The ``LogisticRegression`` arguments equivalent to a (normalised) setting."""
    return {
        "regParam": reg_param(setting["C"], n_fit_rows),
        "elasticNetParam": elastic_net_param(setting),
        "maxIter": int(setting["max_iter"]),
        "tol": float(setting["tol"]),
        "standardization": False,
        "fitIntercept": True,
        "family": "binomial",
    }


# -- the fitted model in the plain-file form -----------------------------------------------------

@dataclass
class SparseWeights:
    """A fitted sparse logistic regression as arrays (what the model directory stores).

    Carries the attributes :func:`training.artifacts.save_model_dir` reads, whichever
    engine fitted it (``engine``: "mllib", or "sklearn" for a model restored from a table).
    ``intercept_`` is recalibrated (``raw_intercept_ + ln(downsample_rate)``).
    """

    indices_: np.ndarray
    weights_: np.ndarray
    raw_intercept_: float
    bits_: int
    setting: dict[str, Any]
    engine: str = ENGINE
    solver_: str = ""
    n_iter_: int = 0
    converged_: bool = True
    n_train_rows_: int = 0
    n_fit_rows_: int = 0
    fit_seconds_: float = 0.0
    engine_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        idx = np.asarray(self.indices_, dtype=np.int64)
        w = np.asarray(self.weights_, dtype=np.float64)
        order = np.argsort(idx, kind="stable")
        self.indices_, self.weights_ = idx[order], w[order]
        self.setting = normalize_setting(self.setting)

    # the attributes save_model_dir reads
    @property
    def downsample_rate(self) -> float:
        return float(self.setting["downsample_rate"])

    @property
    def intercept_(self) -> float:
        return float(self.raw_intercept_) + math.log(self.downsample_rate)

    @property
    def n_features_in_(self) -> int:
        return 1 << int(self.bits_)

    @property
    def n_nonzero_(self) -> int:
        return int(self.indices_.size)

    def _check_fitted(self) -> None:
        if self.indices_.ndim != 1 or self.indices_.shape != self.weights_.shape:
            raise ValueError("indices and weights must be 1-d arrays of one length")

    def hyperparameters(self) -> dict[str, Any]:
        out = dict(self.setting)
        out["engine"] = self.engine
        out.update({f"{self.engine}.{k}": v for k, v in self.engine_params.items()})
        return out

    @classmethod
    def from_sklearn(cls, model, setting: Mapping[str, Any]) -> "SparseWeights":
        """The arrays of a fitted :class:`training.model.SparseLogisticRegression`."""
        return cls(indices_=model.indices_, weights_=model.weights_, raw_intercept_=model.raw_intercept_,
                   bits_=model.bits_, setting=dict(setting), engine="sklearn", solver_=model.solver_,
                   n_iter_=model.n_iter_, converged_=model.converged_, n_train_rows_=model.n_train_rows_,
                   n_fit_rows_=model.n_fit_rows_, fit_seconds_=model.fit_seconds_)

    def predict(self, X) -> np.ndarray:
        """Click probabilities of the rows of a CSR matrix (``2**bits`` columns)."""
        import scipy.sparse as sp

        X = sp.csr_matrix(X)
        row_ids = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        return sigmoid(self.intercept_ + sorted_pairs_margin(X.indices, X.data, row_ids, X.shape[0],
                                                             self.indices_, self.weights_))


# -- Spark side ---------------------------------------------------------------------------------

def to_vectors(df: "DataFrame", n_features: int, keep: Sequence[str] = ("label",), indices_col: str = "indices",
               values_col: str = "values", output_col: str = "features") -> "DataFrame":
    """``keep`` columns plus an MLlib ``SparseVector`` column of size ``n_features`` built from
    the indices/values arrays of :func:`featurize_spark`, Arrow to Arrow (VectorUDT's
    storage is ``struct<type: tinyint, size: int, indices: array<int>, values: array<double>>``)."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import StructField, StructType

    keep = list(keep)
    schema = StructType([df.schema[c] for c in keep] + [StructField(output_col, VectorUDT(), nullable=False)])
    size = int(n_features)

    def convert(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa

        for b in batches:
            n = b.num_rows
            ind_flat, offsets = flat_list(b.column(indices_col))
            val_flat, _ = flat_list(b.column(values_col))
            offs = pa.array(offsets.astype(np.int32))
            vec = pa.StructArray.from_arrays(
                [pa.array(np.zeros(n, dtype=np.int8)), pa.array(np.full(n, size, dtype=np.int32)),
                 pa.ListArray.from_arrays(offs, pa.array(ind_flat.astype(np.int32, copy=False))),
                 pa.ListArray.from_arrays(offs, pa.array(val_flat.astype(np.float64)))],
                names=["type", "size", "indices", "values"])
            yield pa.RecordBatch.from_arrays([b.column(c) for c in keep] + [vec], names=[*keep, output_col])

    return df.select(*keep, indices_col, values_col).mapInArrow(convert, schema)


def downsample(df: "DataFrame", rate: float, seed: int = 0, label_col: str = "label") -> "DataFrame":
    """All positives and each negative with probability ``rate`` (the scikit-learn path's rule)."""
    from pyspark.sql import functions as F

    if rate >= 1.0:
        return df
    return df.filter((F.col(label_col) == 1) | (F.rand(seed) < float(rate)))


def fit_mllib(featurized: "DataFrame", setting: Mapping[str, Any] | None, bits: int, *, seed: int = 0,
              label_col: str = "label", rows_per_partition: int = ROWS_PER_PARTITION) -> SparseWeights:
    """Fit MLlib ``LogisticRegression`` on featurized rows (``label`` and ``indices``/``values``
    arrays) with the scikit-learn-equivalent objective; return the sparse weights.

    Every L-BFGS / OWL-QN iteration is a Spark job with one task per partition, so the
    (cached) rows are coalesced to about ``rows_per_partition`` rows per partition, never
    more partitions than they arrived in: on a few thousand rows spread over five
    partitions an iteration costs five task launches for almost no work (measured on the
    shared 2-core test machine: 46 iterations in 20 s on 5 partitions, 5 s on 1)."""
    from pyspark import StorageLevel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.sql import functions as F

    started = time.perf_counter()
    setting = normalize_setting(setting)
    rows = downsample(featurized, setting["downsample_rate"], seed, label_col)
    data = to_vectors(rows.withColumn(label_col, F.col(label_col).cast("double")), 1 << int(bits),
                      keep=(label_col,)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = data.groupBy().agg(F.count(F.lit(1)).alias("n"), F.sum(label_col).alias("pos")).first()
        assert counts is not None  # a global aggregation has one row
        n_fit, positives = int(counts["n"]), int(counts["pos"] or 0)
        if positives == 0 or positives == n_fit:
            raise ValueError(f"training data needs both clicks and non-clicks ({positives} positives of {n_fit} rows)")
        args = mllib_arguments(setting, n_fit)
        partitions = data.rdd.getNumPartitions()
        wanted = max(1, min(partitions, math.ceil(n_fit / max(1, int(rows_per_partition)))))
        lr = LogisticRegression(featuresCol="features", labelCol=label_col, **args)
        model = lr.fit(data.coalesce(wanted) if wanted < partitions else data)
    finally:
        data.unpersist()
    coef = model.coefficients
    if hasattr(coef, "indices"):  # SparseVector
        idx, w = np.asarray(coef.indices, dtype=np.int64), np.asarray(coef.values, dtype=np.float64)
    else:
        arr = coef.toArray()
        idx = np.flatnonzero(arr)
        w = arr[idx]
    keep = w != 0.0
    iterations = int(model.summary.totalIterations) if model.hasSummary else 0
    n_train = n_fit if setting["downsample_rate"] >= 1.0 else int(featurized.count())
    return SparseWeights(
        indices_=idx[keep], weights_=w[keep], raw_intercept_=float(model.intercept), bits_=int(bits),
        setting=setting, engine=ENGINE, solver_="owlqn" if args["elasticNetParam"] > 0 else "lbfgs",
        n_iter_=iterations, converged_=iterations < args["maxIter"], n_train_rows_=n_train, n_fit_rows_=n_fit,
        fit_seconds_=time.perf_counter() - started,
        engine_params={"regParam": args["regParam"], "elasticNetParam": args["elasticNetParam"],
                       "standardization": False},
    )


# -- warehouse window -> registered version --------------------------------------------------------

SPLIT_COL = "_split"


def read_featurized(spark: "SparkSession", settings: Settings, windows: "Windows | Mapping[str, Window]",
                    spec: FeatureSpec, *,
                    table: str = "observations", delta_version: int | None = None,
                    extra: Mapping[str, Any] | None = None) -> tuple["DataFrame", dict, dict, int]:
    """The windows read at one pinned Delta version, unioned with a ``_split`` column
    (train / validation / test) and featurized once by the shared Spark path.

    ``extra`` adds columns (name -> Column expression over the raw rows) kept beside
    ``impression_id``, ``label``, ``_split``, ``indices`` and ``values``. Returns (the featurized
    frame, the raw frames by split with all columns, the WindowRead per split, the version)."""
    from pyspark.sql import functions as F

    raws, reads, parts = {}, {}, []
    version = delta_version
    for name, window in named_windows(windows).items():
        raw, read = read_window(spark, settings, window, table=table, version=version)
        version = read.version
        raws[name], reads[name] = raw, read
        part = raw.withColumn(SPLIT_COL, F.lit(name))
        for col, expr in (extra or {}).items():
            part = part.withColumn(col, expr)
        parts.append(part)
    union = functools.reduce(lambda a, b: a.unionByName(b), parts)
    keep = ["impression_id", "label", SPLIT_COL, *(extra or {})]
    assert version is not None  # set by the first read
    return featurize_spark(union, spec, keep=keep), raws, reads, int(version)


def split_counts(featurized: "DataFrame") -> tuple[dict[str, int], dict[str, int]]:
    """(rows, clicks) per split of a :func:`read_featurized` frame, in one job."""
    from pyspark.sql import functions as F

    out = featurized.groupBy(SPLIT_COL).agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("pos")).collect()
    rows = {k: 0 for k in SPLITS}
    clicks = dict(rows)
    for r in out:
        rows[r[SPLIT_COL]], clicks[r[SPLIT_COL]] = int(r["n"]), int(r["pos"] or 0)
    return rows, clicks


def score_champion_in_spark(raw_test: "DataFrame", loaded) -> float:
    """Log-loss of a registered model directory on the raw test rows, featurized with the
    champion's own spec (a segment bundle is scored as a bundle)."""
    from pyspark.sql import functions as F

    champion_spec = FeatureSpec.from_toml(loaded.spec_text, source="champion")
    bundle_file = Path(loaded.path) / SEGMENTS_META
    if bundle_file.is_file():
        bundle = load_bundle(loaded.path)
        feats = featurize_spark(raw_test.withColumn("__segment", F.col(bundle.segment_column).cast("string")),
                                champion_spec, keep=["impression_id", "label", "__segment"])
        y, p, _ = collect_predictions(predict_bundle_spark(feats, bundle, segment_col="__segment"))
        return evaluate(y, p)["log_loss"]
    model = SparseWeights(indices_=loaded.indices, weights_=loaded.weights, raw_intercept_=loaded.intercept,
                          bits_=loaded.bits, setting={}, engine="champion")
    feats = featurize_spark(raw_test, champion_spec, keep=["impression_id", "label"])
    y, p, _ = collect_predictions(predict_spark(feats, model))
    return evaluate(y, p)["log_loss"]


def select_setting(train: "DataFrame", validation: "DataFrame", grid: Sequence[Mapping[str, Any]], bits: int,
                   seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The setting of ``grid`` with the lowest validation log-loss after fitting on ``train``
    (each fit is a distributed MLlib fit). Returns (best, one record per setting)."""
    trials: list[dict[str, Any]] = []
    for i, setting in enumerate(grid):
        model = fit_mllib(train, setting, bits, seed=seed)
        y, p, _ = collect_predictions(predict_spark(validation, model))
        trials.append({"setting": dict(model.setting), "val": evaluate(y, p), "fit_seconds": model.fit_seconds_,
                       "iterations": model.n_iter_})
    best = min(range(len(trials)), key=lambda i: (trials[i]["val"]["log_loss"], i))
    return dict(trials[best]["setting"]), trials


@dataclass
class SparkData(Dataset):
    """The windows featurized in Spark (persisted until the job ends) and the raw rows by split."""

    featurized: Any = None
    raws: dict[str, Any] = field(default_factory=dict)
    bits: int = 0

    def split(self, name: str) -> "DataFrame":
        """The featurized rows of one split."""
        from pyspark.sql import functions as F

        return self.featurized.filter(F.col(SPLIT_COL) == name)


def read_spark_data(job: TrainingJob, extra: Mapping[str, Any] | None = None,
                    delta_version: int | None = None) -> SparkData:
    """The job's windows read and featurized in Spark, persisted, counted per split."""
    from pyspark import StorageLevel

    if job.spark is None:
        job.spark = get_spark(job.settings, "ctr-train")
    featurized, raws, reads, version = read_featurized(
        job.spark, job.settings, job.windows, job.spec, table=job.table,
        delta_version=job.delta_version if delta_version is None else delta_version, extra=extra)
    featurized = featurized.persist(StorageLevel.MEMORY_AND_DISK)  # hashed once for every pass
    rows, positives = split_counts(featurized)
    return SparkData(version=version, reads=reads, rows={k: rows[k] for k in reads},
                     positives={k: positives[k] for k in reads}, reference={"reader": "spark"},
                     featurized=featurized, raws=raws, bits=job.spec.bits)


class MLlibEngine(Engine[SparkData]):
    """MLlib logistic regression on Spark: each setting of ``grid`` fitted on train and scored
    on validation when there are several, the best refit on train + validation."""

    name = ENGINE

    def __init__(self, grid: Sequence[Mapping[str, Any]] | None = None, seed: int = 0):
        self.grid = [normalize_setting(s) for s in (grid or [DEFAULT_SETTING])]
        self.seed = seed

    def read(self, job: TrainingJob) -> SparkData:
        return read_spark_data(job)

    def select(self, data: SparkData) -> Selection:
        trials: list[dict[str, Any]] = []
        best: Mapping[str, Any] = self.grid[0]
        if len(self.grid) > 1:
            best, trials = select_setting(data.split("train"), data.split("validation"), self.grid,
                                          data.bits, self.seed)
        return Selection(dict(best), {
            "search.settings": len(self.grid),
            "search.trials": json.dumps([{"setting": t["setting"], "val_log_loss": t["val"]["log_loss"]}
                                         for t in trials])[:6000]})

    def fit(self, data: SparkData, selection: Selection, job: TrainingJob) -> SparseWeights:
        from pyspark.sql import functions as F

        model = fit_mllib(data.featurized.filter(F.col(SPLIT_COL) != "test"), selection.params, job.spec.bits,
                          seed=self.seed)
        selection.params.update({"engine": ENGINE, "regParam": model.engine_params["regParam"]})
        selection.log_params.update({"mllib.regParam": model.engine_params["regParam"],
                                     "mllib.elasticNetParam": model.engine_params["elasticNetParam"],
                                     "mllib.iterations": model.n_iter_, "mllib.converged": model.converged_})
        return model

    def predict(self, data: SparkData, model: SparseWeights, split: str) -> Predictions:
        y, p, table = collect_predictions(predict_spark(data.split(split), model))
        return Predictions(y, p, table.select(["impression_id", "label"]))

    def save(self, data: SparkData, model: SparseWeights, spec: FeatureSpec, path: Path,
             extra: dict[str, Any]) -> Path:
        return save_model_dir(model, spec.to_toml(), spec.fingerprint, path, extra=extra)

    def champion_log_loss(self, data: SparkData, loaded: Any) -> float:
        return score_champion_in_spark(data.raws["test"], loaded)

    def tags(self, data: SparkData, model: Any) -> dict[str, str]:
        return {"engine": ENGINE}

    def release(self, data: SparkData) -> None:
        data.featurized.unpersist()


def train_mllib_from_warehouse(
    spark: "SparkSession",
    settings: Settings,
    windows: Windows,
    spec: FeatureSpec | str = "generated",
    *,
    grid: Sequence[Mapping[str, Any]] | None = None,
    table: str = "observations",
    model_name: str | None = None,
    margin: float | None = None,
    delta_version: int | None = None,
    seed: int = 0,
    oracle: Oracle | None = None,
) -> TrainResult:
    """``ctr train --engine mllib``: the training job with the :class:`MLlibEngine` (logged,
    registered and gated like every engine)."""
    job = TrainingJob(settings, windows.named(), load_spec(spec), table=table, delta_version=delta_version,
                      model_name=model_name or DEFAULT_MODEL_NAME, margin=margin, oracle=oracle,
                      run_name=f"train mllib {windows.train}", spark=spark)
    return job.run(MLlibEngine(grid, seed))
