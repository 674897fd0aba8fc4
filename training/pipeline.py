"""From a warehouse window to a registered, gated model version (``ctr train``).

Back-test style windows: train on [a, b), validate on [b, c), test on [c, d), all read
at one pinned Delta version. Features come from the shared featurizer (batch path).
The search picks hyperparameters on validation; the winner is refit on train +
validation, scored on test beside a constant-CTR baseline and, for generated logs,
the best possible log-loss (the generator's true probabilities of the same rows).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from feature_store import tables
from feature_store.aggregates import export_snapshot, join_aggregates
from feature_store.reader import Window, WindowRead, read_window, resolve_version, to_arrow
from shared.aggregates import ENTITIES, feature_columns
from shared.config import Settings
from shared.featurize import Featurizer, FeatureSpec, load_spec
from training.metrics import evaluate

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

DEFAULT_MODEL_NAME = "ctr-model"


@dataclass(frozen=True)
class Windows:
    train: Window
    validation: Window
    test: Window

    @classmethod
    def consecutive(cls, start: date, train_days: int, validation_days: int = 1, test_days: int = 1) -> "Windows":
        b = start + timedelta(days=train_days)
        c = b + timedelta(days=validation_days)
        return cls(Window(start, b), Window(b, c), Window(c, c + timedelta(days=test_days)))

    def reference(self) -> dict[str, str]:
        return {f"{name}_window": str(getattr(self, name)) for name in ("train", "validation", "test")}


@dataclass
class TrainResult:
    version: str
    promoted: bool
    gate_reason: str
    run_id: str
    best_params: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    baseline_test_log_loss: float
    best_possible_test_log_loss: float | None
    rows: dict[str, int]
    n_nonzero: int
    delta_version: int
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        t = self.metrics["test"]
        lines = [
            f"registered version {self.version}: {'PROMOTED to champion' if self.promoted else 'not promoted'}"
            f" ({self.gate_reason})",
            f"  rows train/validation/test: {self.rows['train']:,} / {self.rows['validation']:,} / "
            f"{self.rows['test']:,} (Delta version {self.delta_version})",
            f"  best params: {self.best_params}",
            f"  test log-loss {t['log_loss']:.5f}  NE {t['normalized_entropy']:.4f}  AUC {t['auc']:.4f}  "
            f"calibration {t['calibration']:.3f}  non-zero weights {self.n_nonzero:,}",
            f"  constant-CTR baseline log-loss {self.baseline_test_log_loss:.5f}",
        ]
        if self.best_possible_test_log_loss is not None:
            gap = t["log_loss"] - self.best_possible_test_log_loss
            lines.append(f"  best possible log-loss (true probabilities) {self.best_possible_test_log_loss:.5f}"
                         f"  -> gap {gap:.5f}")
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


def read_truth(raw_dir: Path, window: Window) -> "pa.Table | None":
    """The generator's true click probabilities (impression_id, p_true) for the window's days."""
    import pyarrow.parquet as pq
    import pyarrow as pa

    files = []
    day = window.start
    while day < window.end:
        files += sorted((raw_dir / "truth" / f"date={day.isoformat()}").glob("hour=*.parquet"))
        day += timedelta(days=1)
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, columns=["impression_id", "p_true"]) for f in files])


def best_possible_log_loss(frame: "pa.Table", truth: "pa.Table | None") -> float | None:
    """Log-loss of the true probabilities on exactly the rows of ``frame`` (None without truth)."""
    if truth is None:
        return None
    joined = frame.select(["impression_id", "label"]).join(truth, "impression_id", join_type="inner")
    if joined.num_rows != frame.num_rows:
        return None  # not generated data, or truth incomplete: no honest figure
    y = joined.column("label").to_numpy()
    p = joined.column("p_true").to_numpy()
    return evaluate(y, p)["log_loss"]


def _spec_with_bits(spec: FeatureSpec, bits: int) -> FeatureSpec:
    return spec if bits == spec.bits else dataclasses.replace(spec, bits=int(bits))


def train_from_warehouse(
    spark: "SparkSession",
    settings: Settings,
    windows: Windows,
    spec: FeatureSpec | str = "generated",
    *,
    table: str = "observations",
    search_space: str | Path | None = None,
    trials: int | None = None,
    wall_seconds: float | None = None,
    n_jobs: int | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    margin: float | None = None,
    delta_version: int | None = None,
    seed: int = 0,
    trials_on: str = "processes",
) -> TrainResult:
    from training.artifacts import save_model_dir
    from training.search import refit_best, run_search
    from training.tracking import DEFAULT_MARGIN, log_training_run

    spec = load_spec(spec)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    columns = sorted(set(spec.input_columns) | {"impression_id", "label"})
    agg_columns = sorted(set(columns) & set(feature_columns()))
    base_columns = sorted((set(columns) - set(agg_columns))
                          | ({"date", *(f for e in ENTITIES.values() for f in e)} if agg_columns else set()))
    aggregates_df = aggregates_version = None
    if agg_columns:  # point-in-time aggregates, joined by (entity key, date)
        agg_path = settings.table_path(tables.AGGREGATES)
        aggregates_version = resolve_version(spark, agg_path)
        aggregates_df = spark.read.format("delta").option("versionAsOf", aggregates_version).load(agg_path)
    frames: dict[str, "pa.Table"] = {}
    reads: dict[str, WindowRead] = {}
    version = delta_version
    for name in ("train", "validation", "test"):
        df, read = read_window(spark, settings, getattr(windows, name), base_columns, table=table, version=version)
        if aggregates_df is not None:
            df = join_aggregates(df, aggregates_df).select(*columns)
        version = read.version  # all three windows from one table version
        frames[name], reads[name] = to_arrow(df), read
        if frames[name].num_rows == 0:
            raise ValueError(f"the {name} window {read.window} of {table} (Delta v{version}) has no rows")
    snapshot = (export_snapshot(spark, settings, windows.test.end, observations_version=version)
                if agg_columns else None)
    seconds["read"] = time.perf_counter() - t0

    labels = {k: f.column("label").to_numpy().astype(np.int8) for k, f in frames.items()}
    cache: dict[int, dict[str, Any]] = {}

    def matrices(bits: int) -> dict[str, Any]:
        if bits not in cache:
            fz = Featurizer(_spec_with_bits(spec, bits))
            cache[bits] = {k: fz.transform(f) for k, f in frames.items()}
        return cache[bits]

    def make_matrices(bits):
        m = matrices(int(bits if bits is not None else spec.bits))
        return m["train"], labels["train"], m["validation"], labels["validation"]

    t0 = time.perf_counter()
    result = run_search(make_matrices, settings, search_space, trials=trials, wall_seconds=wall_seconds,
                        n_jobs=n_jobs, seed=seed, run_name=f"search {windows.train}",
                        spark=spark if trials_on == "spark" else None)
    seconds["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bits = int(result.best_params.get("bits") or spec.bits)
    final_spec = _spec_with_bits(spec, bits)
    m = matrices(bits)
    model = refit_best(result.best_params, m["train"], labels["train"], m["validation"], labels["validation"],
                       random_state=seed)
    seconds["refit"] = time.perf_counter() - t0
    metrics = {
        "validation": evaluate(labels["validation"], model.predict_proba(m["validation"])[:, 1]),
        "test": evaluate(labels["test"], model.predict_proba(m["test"])[:, 1]),
    }
    base = float(np.concatenate([labels["train"], labels["validation"]]).mean())
    baseline = evaluate(labels["test"], np.full(labels["test"].shape, base))["log_loss"]
    best_possible = best_possible_log_loss(frames["test"], read_truth(settings.raw_dir, windows.test))
    metrics["test"]["baseline_log_loss"] = baseline
    if best_possible is not None:
        metrics["test"]["best_possible_log_loss"] = best_possible

    data_reference = {
        **reads["train"].reference(), **windows.reference(),
        "rows": {k: f.num_rows for k, f in frames.items()},
    }
    if agg_columns:
        data_reference["aggregates"] = {"path": settings.table_path(tables.AGGREGATES),
                                        "delta_version": aggregates_version,
                                        "snapshot_as_of": windows.test.end.isoformat()}
    for key in ("start", "end"):
        data_reference.pop(key)

    def champion_scorer(loaded) -> float:
        fz = Featurizer(FeatureSpec.from_toml(loaded.spec_text, source="champion"))
        return evaluate(labels["test"], loaded.score_batch(fz.transform(frames["test"])))["log_loss"]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctr-model-") as tmp:
        model_dir = save_model_dir(model, final_spec.to_toml(), final_spec.fingerprint, Path(tmp) / "model",
                                   extra={"metrics": metrics, "data_reference": data_reference},
                                   aggregates=snapshot)
        run = log_training_run(
            settings, model_dir, model_name=model_name, metrics=metrics, data_reference=data_reference,
            params={"search.best_val_log_loss": result.best_val_log_loss, "search.trials": len(result.trials),
                    "search.stopped": result.stopped_reason},
            test_window=f"{table}@v{version} test {windows.test}",
            run_name=f"train {windows.train}", margin=DEFAULT_MARGIN if margin is None else margin,
            champion_scorer=champion_scorer,
        )
    seconds["register"] = time.perf_counter() - t0
    return TrainResult(
        version=run.version, promoted=run.decision.promoted, gate_reason=run.decision.reason, run_id=run.run_id,
        best_params=result.best_params, metrics=metrics, baseline_test_log_loss=baseline,
        best_possible_test_log_loss=best_possible, rows={k: f.num_rows for k, f in frames.items()},
        n_nonzero=int(model.n_nonzero_), delta_version=version, seconds=seconds,
    )
