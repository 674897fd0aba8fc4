"""The one training job: read -> select -> fit -> evaluate -> save -> register, with engines.

Every way to train (the single-machine search, a warm-started update, MLlib on Spark, the
per-segment fan-out) and every back-test day is this job run with an :class:`Engine`, as
Feast's offline stores implement one ``OfflineStore`` contract. An engine knows how to read
and featurize its windows, choose a setting, fit, predict a split and write the model
directory; the job owns everything the engines share: the row checks, the metrics beside
the constant-CTR baseline and the optional oracle, the data reference, and the MLflow run,
registration and champion gate.
"""

from __future__ import annotations

import abc
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Mapping, TypeVar

import numpy as np

from feature_store.reader import Window, WindowRead
from shared.config import Settings
from shared.errors import InputError
from shared.faults import phase
from shared.featurize import FeatureSpec
from shared.model.registry import DEFAULT_MODEL_NAME
from shared.oracle import Oracle
from training.metrics import evaluate
from training.tracking import DEFAULT_MARGIN, log_training_run

if TYPE_CHECKING:
    import pyarrow as pa

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Windows:
    """Train on [a, b), validate on [b, c), test on [c, d)."""

    train: Window
    validation: Window
    test: Window

    @classmethod
    def consecutive(cls, start: date, train_days: int, validation_days: int = 1, test_days: int = 1) -> "Windows":
        """Three windows back to back from ``start``."""
        b = start + timedelta(days=train_days)
        c = b + timedelta(days=validation_days)
        return cls(Window(start, b), Window(b, c), Window(c, c + timedelta(days=test_days)))

    def named(self) -> dict[str, Window]:
        """The windows by split name."""
        return {n: getattr(self, n) for n in SPLITS}

    def reference(self) -> dict[str, str]:
        """``{split}_window`` strings for a run's data reference."""
        return {f"{name}_window": str(w) for name, w in self.named().items()}


def named_windows(windows: "Windows | Mapping[str, Window]") -> dict[str, Window]:
    """Windows by split; a job may have no validation window (an update, a back-test day)."""
    named = windows.named() if isinstance(windows, Windows) else dict(windows)
    if "train" not in named or "test" not in named or set(named) - set(SPLITS):
        raise ValueError(f"a training job needs train and test windows (and optionally validation), got {sorted(named)}")
    return named


@dataclass
class Dataset:
    """What an engine read for a job, at one pinned table version. Engines subclass it to
    carry their own matrices or Spark frames; the job reads only these fields."""

    version: int
    reads: dict[str, WindowRead]
    rows: dict[str, int]
    positives: dict[str, int]
    reference: dict[str, Any] = field(default_factory=dict)  # reader, aggregates, ... for the data reference

    def fit_rate(self) -> float:
        """CTR of the rows a model is fitted on (train + validation): the constant baseline."""
        fit = [s for s in ("train", "validation") if s in self.rows]
        return sum(self.positives[s] for s in fit) / max(1, sum(self.rows[s] for s in fit))


@dataclass
class Selection:
    """The setting an engine chose, and what its choice logs to the run."""

    params: dict[str, Any]
    log_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Predictions:
    """Labels and predicted CTRs of one split; ``ids`` (impression_id, label) for the oracle."""

    y: np.ndarray
    p: np.ndarray
    ids: "pa.Table | None" = None


D = TypeVar("D", bound=Dataset)


class Engine(abc.ABC, Generic[D]):
    """A way to fit a model inside the :class:`TrainingJob`."""

    name: str = ""
    #: splits the job evaluates (and so needs predictions for)
    evaluated: tuple[str, ...] = ("validation", "test")

    @abc.abstractmethod
    def read(self, job: "TrainingJob") -> D:
        """Read and featurize the job's windows at one table version."""

    @abc.abstractmethod
    def select(self, data: D) -> Selection:
        """Choose a setting (a search on validation, or a given one)."""

    @abc.abstractmethod
    def fit(self, data: D, selection: Selection, job: "TrainingJob") -> Any:
        """Fit the chosen setting on the rows it is refit on; returns the model."""

    @abc.abstractmethod
    def predict(self, data: D, model: Any, split: str) -> Predictions:
        """The model's predictions on one split."""

    @abc.abstractmethod
    def save(self, data: D, model: Any, spec: FeatureSpec, path: Path, extra: dict[str, Any]) -> Path:
        """Write the plain-file model directory (``shared.model``) and return it."""

    @abc.abstractmethod
    def champion_log_loss(self, data: D, loaded: Any) -> float:
        """The registered champion's test log-loss on this job's test rows (for the gate)."""

    def extra_metrics(self, data: D, model: Any) -> dict[str, dict[str, float]]:
        """Metrics an engine adds beside validation and test (e.g. the global model's)."""
        return {}

    def engine_name(self, model: Any, selection: Selection) -> str:
        """The engine recorded with the model (the search may choose among several)."""
        return self.name

    def tags(self, data: D, model: Any) -> dict[str, str]:
        """Tags for the run and the registered version."""
        return {}

    def n_nonzero(self, model: Any) -> int:
        """Non-zero weights of the fitted model."""
        return int(model.n_nonzero_)

    def release(self, data: D) -> None:
        """Free what :meth:`read` holds (cached Spark frames)."""


@dataclass
class TrainResult:
    """The outcome of one job: the registered version (empty when not registered) and its figures."""

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
    model: Any = field(default=None, repr=False)
    test_ids: "pa.Table | None" = field(default=None, repr=False)
    fit_rate: float = float("nan")

    def summary(self) -> str:
        """The lines ``ctr train`` prints."""
        t = self.metrics["test"]
        head = (f"registered version {self.version}: {'PROMOTED to champion' if self.promoted else 'not promoted'}"
                f" ({self.gate_reason})") if self.version else "not registered"
        lines = [
            head,
            f"  rows {'/'.join(self.rows)}: {' / '.join(f'{n:,}' for n in self.rows.values())} "
            f"(Delta version {self.delta_version})",
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


@dataclass
class TrainingJob:
    """One training job's inputs: where to read, with which spec, where to register."""

    settings: Settings
    windows: dict[str, Window]
    spec: FeatureSpec
    table: str = "observations"
    delta_version: int | None = None
    model_name: str = DEFAULT_MODEL_NAME
    margin: float | None = None
    oracle: Oracle | None = None
    run_name: str = ""
    log_params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    spark: Any = None  # a SparkSession when the caller has one (engines start one if they need it)

    def __post_init__(self):
        self.windows = named_windows(self.windows)

    def run(self, engine: Engine, *, register: bool = True) -> TrainResult:
        """Read, select, fit, evaluate beside the baselines and (``register``) save, log,
        register and gate. Without ``register`` nothing is written (a back-test day)."""
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        data = engine.read(self)
        try:
            for split, n in data.rows.items():
                if n == 0:
                    read = data.reads[split]
                    raise InputError(f"the {split} window {read.window} of {self.table} "
                                     f"(Delta v{data.version}) has no rows")
            seconds["read+featurize"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            selection = engine.select(data)
            seconds["search"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            model = engine.fit(data, selection, self)
            seconds["fit"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            predictions = {s: engine.predict(data, model, s) for s in engine.evaluated if s in self.windows}
            metrics = {s: evaluate(pr.y, pr.p) for s, pr in predictions.items()}
            metrics.update(engine.extra_metrics(data, model))
            test = predictions["test"]
            baseline = evaluate(test.y, np.full(test.y.shape, data.fit_rate()))["log_loss"]
            tw = self.windows["test"]
            best_possible = (self.oracle.best_log_loss(test.ids, tw.start, tw.end)
                             if self.oracle is not None and test.ids is not None else None)
            metrics["test"]["baseline_log_loss"] = baseline
            if best_possible is not None:
                metrics["test"]["best_possible_log_loss"] = best_possible
            seconds["score"] = time.perf_counter() - t0
            engine_name = engine.engine_name(model, selection)
            result = TrainResult(
                version="", promoted=False, gate_reason="", run_id="", best_params=selection.params,
                metrics=metrics, baseline_test_log_loss=baseline, best_possible_test_log_loss=best_possible,
                rows=dict(data.rows), n_nonzero=engine.n_nonzero(model), delta_version=data.version,
                seconds=seconds, model=model, test_ids=test.ids, fit_rate=data.fit_rate())
            if not register:
                return result
            t0 = time.perf_counter()
            reference = self.data_reference(data)
            tags = {**self.tags, **engine.tags(data, model)}
            with tempfile.TemporaryDirectory(prefix="ctr-model-") as tmp:
                model_dir = engine.save(data, model, self.spec, Path(tmp) / "model", {
                    "metrics": metrics, "data_reference": reference, "engine": engine_name})
                phase("train.saved")
                run = log_training_run(
                    self.settings, model_dir, model_name=self.model_name, metrics=metrics, data_reference=reference,
                    params={**selection.log_params, **self.log_params, "engine": engine_name,
                            "job.seconds_before_register": round(sum(seconds.values()), 3)},
                    test_window=f"{self.table}@v{data.version} test {tw}", run_name=self.run_name,
                    margin=DEFAULT_MARGIN if self.margin is None else self.margin,
                    champion_scorer=lambda loaded: engine.champion_log_loss(data, loaded), tags=tags)
            seconds["register"] = time.perf_counter() - t0
            result.version, result.promoted = run.version, run.decision.promoted
            result.gate_reason, result.run_id = run.decision.reason, run.run_id
            return result
        finally:
            engine.release(data)

    def data_reference(self, data: Dataset) -> dict[str, Any]:
        """Where the rows came from: table, path, pinned version, windows, row counts."""
        ref = {**data.reads["train"].reference(), **{f"{k}_window": str(w) for k, w in self.windows.items()},
               "rows": dict(data.rows), **data.reference}
        for key in ("start", "end"):
            ref.pop(key, None)
        return ref
