"""The single-machine engines of the training job: rows read into memory, fitted on the driver.

:class:`LocalEngine` reads the windows at one pinned Delta version (delta-rs, no Spark,
unless aggregate features need Spark's point-in-time join), featurizes them with the
shared featurizer as they are read, runs the constrained search on validation (or takes a
fixed setting) and refits the winner (FTRL or scikit-learn, :mod:`training.engines`) on
train + validation. :class:`UpdateEngine` continues a registered FTRL version's saved state
on new days (``ctr train --update``). Both run inside :class:`training.job.TrainingJob`,
which evaluates, registers and gates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

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
from shared.model.registry import DEFAULT_MODEL_NAME
from shared.oracle import Oracle
from shared.spark import get_spark
from training.artifacts import load_engine_state, load_model_dir, save_model_dir
from training.engines import engine_of
from training.ftrl import FTRLLogisticRegression, FTRLState
from training.metrics import evaluate
from training.job import Dataset, Engine, Predictions, Selection, TrainingJob, TrainResult, Windows, named_windows
from training.search import SearchSpace, load_search_space, refit_best, run_search
from training.tracking import champion_version, download_model_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DEFAULT_MODEL_NAME", "LocalEngine", "TrainResult", "UpdateEngine", "Windows", "read_frames",
           "train_from_warehouse", "update_from_champion"]


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


def read_frames(spark: "SparkSession | None", settings: Settings, windows: "Windows | Mapping[str, Window]",
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
    named = named_windows(windows)
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




def _print_progress(trial, done: int, planned: int, best) -> None:
    """One line per finished search trial (``ctr train`` prints them as they come)."""
    engine = trial.params.get("engine", "sklearn")
    score = f"val log-loss {trial.val_log_loss:.5f}" if trial.status == "ok" else trial.status
    best_s = f"best {best.val_log_loss:.5f} (config {best.config_id}, rung {best.rung})" if best else "best -"
    print(f"  trial {done:>3}/{planned} config {trial.config_id:>2} rung {trial.rung} {engine:<7} "
          f"{trial.n_rows:>9,} rows {trial.fit_seconds:6.2f} s  {score}  | {best_s}", flush=True)


@dataclass
class LocalData(Dataset):
    """The windows in memory: featurized matrices by hash width, labels, the raw test frame."""

    frames: WindowFrames | None = None
    spec: FeatureSpec | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    by_bits: dict[int, dict[str, sp.csr_matrix]] = field(default_factory=dict)
    job: TrainingJob | None = None

    def matrices(self, bits: int) -> dict[str, sp.csr_matrix]:
        """The windows' matrices at ``bits`` (featurized from the raw frames the first time)."""
        if bits not in self.by_bits:
            assert self.frames is not None and self.spec is not None
            fz = Featurizer(_spec_with_bits(self.spec, bits))
            self.by_bits[bits] = {k: fz.transform(f) for k, f in self.frames.frames.items()}
        return self.by_bits[bits]


class LocalEngine(Engine[LocalData]):
    """FTRL or scikit-learn on the driver, the setting chosen by the constrained search
    (``space``) or given (``setting``, e.g. a back-test's)."""

    name = "local"

    def __init__(self, space: "SearchSpace | str | Path | None" = None, *,
                 setting: Mapping[str, Any] | None = None, trials: int | None = None,
                 wall_seconds: float | None = None, n_jobs: int | None = None, trials_on: str = "threads",
                 progress: bool = False, seed: int = 0):
        self.setting = dict(setting) if setting is not None else None
        self.space = None if self.setting is not None else (
            space if isinstance(space, SearchSpace) else load_search_space(space))
        self.trials, self.wall_seconds, self.n_jobs = trials, wall_seconds, n_jobs
        self.trials_on, self.progress, self.seed = trials_on, progress, seed

    def _fixed(self) -> dict[str, Any] | None:
        if self.setting is not None:
            return self.setting
        assert self.space is not None
        return None if self.space.dimensions else dict(self.space.fixed)

    def read(self, job: TrainingJob) -> LocalData:
        """Featurize while reading when every trial shares one hash width (keep no raw rows)."""
        spec = job.spec
        fixed = self._fixed()
        if fixed is not None:
            bits: int | None = int(fixed.get("bits") or spec.bits)
        else:
            assert self.space is not None
            bits = None if "bits" in self.space.dimensions else int(self.space.fixed.get("bits", spec.bits))
        if self.trials_on == "spark" and job.spark is None:
            job.spark = get_spark(job.settings, "ctr-train")
        fz = Featurizer(_spec_with_bits(spec, bits)) if bits is not None else None
        wf = read_frames(job.spark, job.settings, job.windows, spec, table=job.table,
                         delta_version=job.delta_version, featurizer=fz)
        labels = wf.labels if fz is not None else {
            k: f.column("label").to_numpy().astype(np.int8) for k, f in wf.frames.items()}
        reference: dict[str, Any] = {"reader": wf.reader}
        if wf.aggregates_reference is not None:
            reference["aggregates"] = wf.aggregates_reference
        return LocalData(version=wf.version, reads=wf.reads, rows={k: int(v.size) for k, v in labels.items()},
                         positives={k: int(v.sum()) for k, v in labels.items()}, reference=reference,
                         frames=wf, spec=spec, labels=labels,
                         by_bits={bits: wf.matrices} if bits is not None else {}, job=job)

    def select(self, data: LocalData) -> Selection:
        fixed = self._fixed()
        if fixed is not None:  # one setting: nothing to choose, refit at once
            return Selection(fixed, {"search.trials": 0, "search.fixed_setting": True})
        assert self.space is not None and data.job is not None
        job, spec, labels = data.job, data.spec, data.labels
        assert spec is not None

        def make_matrices(bits):
            m = data.matrices(int(bits if bits is not None else spec.bits))
            return m["train"], labels["train"], m["validation"], labels["validation"]

        profile = (int(labels["train"].size), float(labels["train"].mean()))
        result = run_search(make_matrices, job.settings, self.space, trials=self.trials,
                            wall_seconds=self.wall_seconds, n_jobs=self.n_jobs, seed=self.seed,
                            run_name=f"search {job.windows['train']}",
                            spark=job.spark if self.trials_on == "spark" else None,
                            trials_on="threads" if self.trials_on == "spark" else self.trials_on, profile=profile,
                            progress=_print_progress if self.progress else None)
        if self.progress:
            print(result.budget_report(), flush=True)
        return Selection(result.best_params, {
            "search.best_val_log_loss": result.best_val_log_loss, "search.trials": len(result.trials),
            "search.stopped": result.stopped_reason, "search.cpu_utilisation": round(result.cpu_utilisation, 3)})

    def _bits(self, data: LocalData, params: Mapping[str, Any]) -> int:
        assert data.spec is not None
        return int(params.get("bits") or data.spec.bits)

    def fit(self, data: LocalData, selection: Selection, job: TrainingJob) -> Any:
        m = data.matrices(self._bits(data, selection.params))
        return refit_best(selection.params, m["train"], data.labels["train"], m.get("validation"),
                          data.labels.get("validation"), random_state=self.seed)

    def predict(self, data: LocalData, model: Any, split: str) -> Predictions:
        m = data.matrices(int(model.bits_))
        ids = None
        if split == "test" and data.frames is not None:
            ids = data.frames.frames["test"].select(["impression_id", "label"])
        return Predictions(data.labels[split], model.predict_proba(m[split])[:, 1], ids)

    def engine_name(self, model: Any, selection: Selection) -> str:
        return engine_of(selection.params)

    def save(self, data: LocalData, model: Any, spec: FeatureSpec, path: Path, extra: dict[str, Any]) -> Path:
        spec = _spec_with_bits(spec, int(model.bits_))
        state = model.state_.to_arrays() if isinstance(model, FTRLLogisticRegression) else None
        return save_model_dir(model, spec.to_toml(), spec.fingerprint, path, extra=extra,
                              aggregates=data.frames.snapshot if data.frames else None, engine_state=state)

    def champion_log_loss(self, data: LocalData, loaded: Any) -> float:
        assert data.frames is not None
        fz = Featurizer(FeatureSpec.from_toml(loaded.spec_text, source="champion"))
        return evaluate(data.labels["test"], loaded.score_batch(fz.transform(data.frames.frames["test"])))["log_loss"]


class UpdateEngine(LocalEngine):
    """Continue a fitted FTRL model's accumulators over the train window, in time order, with
    its own hyperparameters (no search): ``ctr train --update``. The new version carries its
    lineage (parent version, data added) as tags."""

    evaluated = ("test",)

    def __init__(self, model: FTRLLogisticRegression, params: Mapping[str, Any], parent_version: str):
        super().__init__(setting={"engine": "ftrl", **params})
        self.model, self.parent_version = model, parent_version

    def _added(self, data: LocalData) -> str:
        assert data.job is not None
        return f"{data.job.table}@v{data.version} {data.job.windows['train']}"

    def select(self, data: LocalData) -> Selection:
        assert self.setting is not None
        return Selection(self.setting, {"update.parent": self.parent_version, "update.data_added": self._added(data)})

    def fit(self, data: LocalData, selection: Selection, job: TrainingJob) -> Any:
        m = data.matrices(self._bits(data, selection.params))
        return self.model.partial_fit(m["train"], data.labels["train"])

    def tags(self, data: LocalData, model: Any) -> dict[str, str]:
        return {"lineage.parent_version": self.parent_version, "lineage.data_added": self._added(data),
                "lineage.rows_added": str(data.rows["train"]), "lineage.rows_seen": str(model.state_.rows_seen)}


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
    """``ctr train``: the training job with the :class:`LocalEngine` (search, refit, register, gate).

    ``spark`` may be None: it is started only when the windows need it (aggregate
    features) or the trials run on it (``trials_on="spark"``). ``oracle`` (generated data)
    adds the best possible test log-loss."""
    job = TrainingJob(settings, windows.named(), load_spec(spec), table=table, delta_version=delta_version,
                      model_name=model_name, margin=margin, oracle=oracle, run_name=f"train {windows.train}",
                      spark=spark)
    engine = LocalEngine(search_space, trials=trials, wall_seconds=wall_seconds, n_jobs=n_jobs,
                         trials_on=trials_on, progress=progress, seed=seed)
    return job.run(engine)


def update_from_champion(settings: Settings, new: Window, test: Window, *, table: str = "observations",
                         model_name: str = DEFAULT_MODEL_NAME, ref: str = "champion",
                         margin: float | None = None, delta_version: int | None = None,
                         spark: "SparkSession | None" = None, oracle: Oracle | None = None) -> TrainResult:
    """Continue a registered version's engine state on new days (``ctr train --update``).

    The version's FTRL accumulators continue over the ``new`` window (:class:`UpdateEngine`);
    the result is scored on ``test``, registered with its lineage (parent version, data
    added) and gated like any version. Refuses a version without a saved state."""
    import tempfile

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
    parent_version = (champion_version(settings, model_name) if ref == "champion" else None) or str(ref)
    job = TrainingJob(settings, {"train": new, "test": test}, spec, table=table, delta_version=delta_version,
                      model_name=model_name, margin=margin, oracle=oracle, run_name=f"update {new}", spark=spark)
    return job.run(UpdateEngine(model, params, parent_version))
