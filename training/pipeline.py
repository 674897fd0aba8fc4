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
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from feature_store import tables
from feature_store.aggregates import export_snapshot, join_aggregates
from feature_store.arrow_reader import read_window_arrow
from feature_store.reader import Window, WindowRead, read_window, resolve_version, to_arrow
from shared.aggregates import ENTITIES, feature_columns
from shared.config import Settings
from shared.errors import ArtifactError, InputError
from shared.featurize import Featurizer, FeatureSpec, load_spec
from shared.model.registry import DEFAULT_MODEL_NAME  # noqa: F401  (ctr train's default, re-exported)
from shared.oracle import Oracle
from shared.spark import get_spark
from training.artifacts import load_engine_state, load_model_dir, save_model_dir
from training.engines import engine_of
from training.ftrl import FTRLLogisticRegression, FTRLState
from training.metrics import evaluate
from training.search import load_search_space, refit_best, run_search
from training.tracking import DEFAULT_MARGIN, champion_version, download_model_dir, log_training_run

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession



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


def _spec_with_bits(spec: FeatureSpec, bits: int) -> FeatureSpec:
    return spec if bits == spec.bits else dataclasses.replace(spec, bits=int(bits))


@dataclass
class WindowFrames:
    """The windows read at one table version: Arrow frames (only ``test`` when the reader
    featurized as it went), and, when given a featurizer, each window's CSR matrix and labels."""

    frames: dict[str, "pa.Table"]
    reads: dict[str, WindowRead]
    version: int
    reader: str  # "delta-rs" or "spark"
    snapshot: "pa.Table | None" = None
    aggregates_reference: dict[str, Any] | None = None
    matrices: dict[str, sp.csr_matrix] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def stack_csr(blocks: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
    """Row-stack CSR blocks into one matrix, releasing each block once copied (the output's
    pages are touched as they are filled, so the peak is one matrix plus one block)."""
    n = sum(b.shape[0] for b in blocks)
    nnz = sum(b.nnz for b in blocks)
    indptr = np.empty(n + 1, dtype=np.int64)
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    indptr[0] = row = pos = 0
    while blocks:
        b = blocks.pop(0)
        indptr[row + 1: row + 1 + b.shape[0]] = b.indptr[1:] + pos
        indices[pos: pos + b.nnz] = b.indices
        data[pos: pos + b.nnz] = b.data
        row, pos = row + b.shape[0], pos + b.nnz
        del b
    return sp.csr_matrix((data, indices, indptr), shape=(n, n_cols))


def _days(window: Window) -> list[Window]:
    out, day = [], window.start
    while day < window.end:
        out.append(Window(day, day + timedelta(days=1)))
        day += timedelta(days=1)
    return out


def read_frames(spark: "SparkSession | None", settings: Settings, windows: "Windows | dict[str, Window]",
                spec: FeatureSpec, *, table: str = "observations", delta_version: int | None = None,
                featurizer: Featurizer | None = None) -> WindowFrames:
    """Read the windows at one pinned version, rows in date order.

    Without aggregate columns the Parquet files are read straight into Arrow (delta-rs,
    no Spark: :mod:`feature_store.arrow_reader`), and with a ``featurizer`` one day at a
    time, each day featurized and its frame released (only the test frame is kept), so
    memory holds the matrices, not the raw rows. With aggregate columns, Spark joins the
    point-in-time aggregates (and starts if ``spark`` is None)."""
    columns = sorted(set(spec.input_columns) | {"impression_id", "label"})
    agg_columns = sorted(set(columns) & set(feature_columns()))
    named = windows if isinstance(windows, dict) else {n: getattr(windows, n) for n in ("train", "validation", "test")}
    wf = WindowFrames({}, {}, -1, "spark" if agg_columns else "delta-rs")
    version = delta_version

    def add(name: str, frames: Iterable["pa.Table"]) -> None:
        """Sort each piece of a window by date (time order for the online engine), featurize it
        as it comes when given a featurizer, keep raw rows only where needed (test, or no featurizer)."""
        parts: list = []
        kept = []
        for frame in frames:
            frame = frame.take(pc.sort_indices(frame, [("date", "ascending")]))
            if featurizer is None or name == "test":
                kept.append(frame)
            if featurizer is not None and frame.num_rows:
                parts.append((featurizer.transform(frame), frame.column("label").to_numpy().astype(np.int8)))
        if kept:
            wf.frames[name] = pa.concat_tables(kept)
        _collect(wf, name, parts, featurizer)

    if not agg_columns:
        def pieces(window: Window) -> Iterator["pa.Table"]:
            nonlocal version
            for piece in _days(window) if featurizer is not None else [window]:  # a day at a time
                frame, read = read_window_arrow(settings, piece, sorted({*columns, "date"}), table=table,
                                                version=version)
                version = read.version  # every window from one table version
                yield frame

        for name, window in named.items():
            add(name, pieces(window))
            assert version is not None, "no window to read"  # pinned by the first piece read
            wf.reads[name] = WindowRead(table=table, path=settings.table_path(table), window=window,
                                        version=version, columns=tuple(sorted({*columns, "date"})))
            _require_rows(wf, name, table)
        assert version is not None, "no window to read"
        wf.version = int(version)
        return wf

    if spark is None:
        spark = get_spark(settings, "ctr-train")
    base_columns = sorted((set(columns) - set(agg_columns)) | {"date", *(f for e in ENTITIES.values() for f in e)})
    agg_path = settings.table_path(tables.AGGREGATES)
    aggregates_version = resolve_version(spark, agg_path)
    aggregates_df = spark.read.format("delta").option("versionAsOf", aggregates_version).load(agg_path)
    for name, window in named.items():
        df, read = read_window(spark, settings, window, base_columns, table=table, version=version)
        df = join_aggregates(df, aggregates_df).select(*columns, "date")
        version = read.version
        wf.reads[name] = read
        add(name, [to_arrow(df)])
        _require_rows(wf, name, table)
    assert version is not None, "no window to read"  # else pinned by the first window read
    wf.version = int(version)
    wf.snapshot = export_snapshot(spark, settings, named["test"].end, observations_version=version)
    wf.aggregates_reference = {"path": agg_path, "delta_version": aggregates_version,
                               "snapshot_as_of": named["test"].end.isoformat()}
    return wf


def _collect(wf: WindowFrames, name: str, parts: list, featurizer: Featurizer | None) -> None:
    if featurizer is not None:
        wf.labels[name] = np.concatenate([y for _, y in parts]) if parts else np.zeros(0, dtype=np.int8)
        blocks = [X for X, _ in parts]
        parts.clear()  # the blocks list is the only reference left: each block is freed once copied
        wf.matrices[name] = stack_csr(blocks, featurizer.spec.num_features)
        wf.rows[name] = int(wf.labels[name].size)
    else:
        wf.rows[name] = wf.frames[name].num_rows


def _require_rows(wf: WindowFrames, name: str, table: str) -> None:
    if wf.rows[name] == 0:
        read = wf.reads[name]
        raise InputError(f"the {name} window {read.window} of {table} (Delta v{read.version}) has no rows")


def _engine_state(model) -> dict[str, np.ndarray | np.int64] | None:
    """The arrays a later update continues from (FTRL's accumulators), or None."""
    return model.state_.to_arrays() if isinstance(model, FTRLLogisticRegression) else None


def _print_progress(trial, done: int, planned: int, best) -> None:
    """One line per finished search trial (``ctr train`` prints them as they come)."""
    engine = trial.params.get("engine", "sklearn")
    score = f"val log-loss {trial.val_log_loss:.5f}" if trial.status == "ok" else trial.status
    best_s = f"best {best.val_log_loss:.5f} (config {best.config_id}, rung {best.rung})" if best else "best -"
    print(f"  trial {done:>3}/{planned} config {trial.config_id:>2} rung {trial.rung} {engine:<7} "
          f"{trial.n_rows:>9,} rows {trial.fit_seconds:6.2f} s  {score}  | {best_s}", flush=True)


def train_from_warehouse(
    spark: "SparkSession | None",
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
    trials_on: str = "threads",
    progress: bool = False,
    oracle: Oracle | None = None,
) -> TrainResult:
    """Read, featurize, search, refit on train + validation, evaluate, save and register.

    ``spark`` may be None: it is started only when the windows need it (aggregate
    features) or the trials run on it (``trials_on="spark"``). ``oracle`` (generated data)
    adds the best possible test log-loss."""
    spec = load_spec(spec)
    space = load_search_space(search_space)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if trials_on == "spark" and spark is None:
        spark = get_spark(settings, "ctr-train")
    # one hash width for every trial (the default): featurize while reading, keep no raw rows
    fixed_bits = None if "bits" in space.dimensions else int(space.fixed.get("bits", spec.bits))
    fz = Featurizer(_spec_with_bits(spec, fixed_bits)) if fixed_bits is not None else None
    wf = read_frames(spark, settings, windows, spec, table=table, delta_version=delta_version, featurizer=fz)
    seconds["read+featurize" if fz is not None else "read"] = time.perf_counter() - t0

    frames = wf.frames
    labels = wf.labels if fz is not None else {
        k: f.column("label").to_numpy().astype(np.int8) for k, f in frames.items()}
    cache: dict[int, dict[str, Any]] = {fixed_bits: wf.matrices} if fixed_bits is not None else {}

    def matrices(bits: int) -> dict[str, Any]:
        if bits not in cache:
            fzb = Featurizer(_spec_with_bits(spec, bits))
            cache[bits] = {k: fzb.transform(f) for k, f in frames.items()}
        return cache[bits]

    def make_matrices(bits):
        m = matrices(int(bits if bits is not None else spec.bits))
        return m["train"], labels["train"], m["validation"], labels["validation"]

    t0 = time.perf_counter()
    if not space.dimensions:  # one fixed setting: nothing to choose, refit at once
        best_params = dict(space.fixed)
        search_params: dict[str, Any] = {"search.trials": 0, "search.fixed_setting": True}
    else:
        profile = (int(labels["train"].size), float(labels["train"].mean()))
        result = run_search(make_matrices, settings, space, trials=trials, wall_seconds=wall_seconds,
                            n_jobs=n_jobs, seed=seed, run_name=f"search {windows.train}",
                            spark=spark if trials_on == "spark" else None,
                            trials_on="threads" if trials_on == "spark" else trials_on, profile=profile,
                            progress=_print_progress if progress else None)
        if progress:
            print(result.budget_report(), flush=True)
        best_params = result.best_params
        search_params = {"search.best_val_log_loss": result.best_val_log_loss, "search.trials": len(result.trials),
                         "search.stopped": result.stopped_reason,
                         "search.cpu_utilisation": round(result.cpu_utilisation, 3)}
    seconds["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bits = int(best_params.get("bits") or spec.bits)
    m = matrices(bits)
    model = refit_best(best_params, m["train"], labels["train"], m["validation"], labels["validation"],
                       random_state=seed)
    seconds["refit"] = time.perf_counter() - t0
    return _evaluate_and_register(
        settings, windows, wf, _spec_with_bits(spec, bits), model, m, labels, best_params, seconds,
        table=table, model_name=model_name, margin=margin, params=search_params, run_name=f"train {windows.train}",
        oracle=oracle)


def _evaluate_and_register(settings: Settings, windows: "Windows | dict[str, Window]", wf: WindowFrames,
                           spec: FeatureSpec, model,
                           m: dict[str, Any], labels: dict[str, np.ndarray], best_params: dict[str, Any],
                           seconds: dict[str, float], *, table: str, model_name: str, margin: float | None,
                           params: dict[str, Any], run_name: str, tags: dict[str, str] | None = None,
                           oracle: Oracle | None = None) -> TrainResult:
    """Score the fitted model on validation and test beside the baselines, save the model
    directory (with the engine's state) and register and gate it: the end of every job."""
    frames, version = wf.frames, wf.version
    named = windows if isinstance(windows, dict) else {n: getattr(windows, n) for n in ("train", "validation", "test")}
    metrics: dict[str, dict[str, float]] = {
        k: evaluate(labels[k], model.predict_proba(m[k])[:, 1]) for k in ("validation", "test") if k in m}
    base = float(np.concatenate([labels[k] for k in ("train", "validation") if k in labels]).mean())
    baseline = evaluate(labels["test"], np.full(labels["test"].shape, base))["log_loss"]
    test_window = named["test"]
    best_possible = oracle.best_log_loss(frames["test"], test_window.start, test_window.end) if oracle else None
    metrics["test"]["baseline_log_loss"] = baseline
    if best_possible is not None:
        metrics["test"]["best_possible_log_loss"] = best_possible

    data_reference = {
        **wf.reads["train"].reference(), **{f"{k}_window": str(w) for k, w in named.items()},
        "rows": dict(wf.rows), "reader": wf.reader,
    }
    if wf.aggregates_reference is not None:
        data_reference["aggregates"] = wf.aggregates_reference
    for key in ("start", "end"):
        data_reference.pop(key)

    def champion_scorer(loaded) -> float:
        fz = Featurizer(FeatureSpec.from_toml(loaded.spec_text, source="champion"))
        return evaluate(labels["test"], loaded.score_batch(fz.transform(frames["test"])))["log_loss"]

    t0 = time.perf_counter()
    engine = engine_of(best_params)
    with tempfile.TemporaryDirectory(prefix="ctr-model-") as tmp:
        model_dir = save_model_dir(model, spec.to_toml(), spec.fingerprint, Path(tmp) / "model",
                                   extra={"metrics": metrics, "data_reference": data_reference, "engine": engine},
                                   aggregates=wf.snapshot, engine_state=_engine_state(model))
        run = log_training_run(
            settings, model_dir, model_name=model_name, metrics=metrics, data_reference=data_reference,
            params={**params, "engine": engine, "reader": wf.reader},
            test_window=f"{table}@v{version} test {named['test']}",
            run_name=run_name, margin=DEFAULT_MARGIN if margin is None else margin,
            champion_scorer=champion_scorer, tags=tags,
        )
    seconds["register"] = time.perf_counter() - t0
    return TrainResult(
        version=run.version, promoted=run.decision.promoted, gate_reason=run.decision.reason, run_id=run.run_id,
        best_params=best_params, metrics=metrics, baseline_test_log_loss=baseline,
        best_possible_test_log_loss=best_possible, rows=dict(wf.rows),
        n_nonzero=int(model.n_nonzero_), delta_version=version, seconds=seconds,
    )


def update_from_champion(settings: Settings, new: Window, test: Window, *, table: str = "observations",
                         model_name: str = DEFAULT_MODEL_NAME, ref: str = "champion",
                         margin: float | None = None, delta_version: int | None = None,
                         spark: "SparkSession | None" = None, oracle: Oracle | None = None) -> TrainResult:
    """Continue a registered version's engine state on new days (``ctr train --update``).

    The version's FTRL accumulators continue, with its own hyperparameters, over the ``new``
    window in time order (no search); the result is scored on ``test``, registered with its
    lineage (parent version, data added) and gated like any version. Refuses a version
    without a saved state."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctr-parent-") as tmp:
        parent_dir = download_model_dir(settings, model_name, ref, Path(tmp) / "parent")
        parent = load_model_dir(parent_dir)
        arrays = load_engine_state(parent_dir)
    meta = parent.metadata
    if arrays is None or meta.get("engine") != "ftrl":
        raise ArtifactError(f"version {ref!r} of {model_name!r} has no saved engine state (engine "
                         f"{meta.get('engine', 'sklearn')!r}); --update continues ftrl versions only: "
                         f"run a full `ctr train` first")
    spec = FeatureSpec.from_toml(parent.spec_text, source=f"{model_name}@{ref}")
    params = {k: v for k, v in meta["hyperparameters"].items() if k != "random_state"}
    model = FTRLLogisticRegression.from_state(FTRLState.from_arrays(arrays), **params)
    windows = {"train": new, "test": test}
    wf = read_frames(spark, settings, windows, spec, table=table, delta_version=delta_version,
                     featurizer=Featurizer(spec))
    labels, m = wf.labels, wf.matrices
    seconds["read+featurize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.partial_fit(m["train"], labels["train"])
    seconds["update"] = time.perf_counter() - t0
    parent_version = (champion_version(settings, model_name) if ref == "champion" else None) or str(ref)
    added = f"{table}@v{wf.version} {new}"
    lineage = {"lineage.parent_version": parent_version, "lineage.data_added": added,
               "lineage.rows_added": str(labels["train"].size), "lineage.rows_seen": str(model.state_.rows_seen)}
    return _evaluate_and_register(
        settings, windows, wf, spec, model, m, labels, {"engine": "ftrl", **params}, seconds, table=table,
        model_name=model_name, margin=margin, params={"update.parent": parent_version, "update.data_added": added},
        run_name=f"update {new}", tags=lineage, oracle=oracle)
