"""Constrained hyperparameter search with successive halving on training-set size.

The space is a TOML file (default ``training/search_space.toml``): a bounded distribution
per hyperparameter (``[params.<name>]``), fixed values (``[fixed]``), a budget (``[budget]``
trials, wall_seconds, trial_seconds, n_jobs), the halving schedule (``[halving]``) and
``[rules]`` by which the data adapt the space (no negative downsampling on small or
high-CTR data; the exact scikit-learn engine only on small data). A trial names its
``engine`` (:mod:`training.engines`); bounds are checked against the limits the engines
declare next to their estimators (``HARD_LIMITS`` is derived from them).

Successive halving: ``trials`` configurations are sampled; rung 0 trains each on
``min_fraction`` of the training rows (a fixed random subset, nested across rungs, in time
order), the best ``1/eta`` by validation log-loss go on with ``eta`` times the rows, and so
on until the full training set; validation is always the whole validation window.

Budgets: no trial is submitted after ``wall_seconds``; a trial whose fit runs past
``trial_seconds`` is stopped by its engine (the online engine checks between chunks of
rows) and not ranked, so no configuration can hold the search for minutes. The search
reports how the budget was spent and the CPU utilisation it achieved (process CPU time
over trial wall time x cores), measured, not assumed.

Trials run in threads of this process by default (the compiled engines release the GIL and
share the matrices), in spawned worker processes that read the matrices from ``.npz``
files, or, given a Spark session, as one-task Spark jobs (:class:`SparkTrialPool`) whose
files live under the data root (storage every executor mounts). Every trial is an MLflow
child run of the search's parent run. :func:`refit_best` refits the winner on train +
validation.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import shutil
import tempfile
import time
import tomllib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import scipy.sparse as sp

from shared.errors import ConfigurationError, MissingInputError
from shared.featurize.spec import MAX_BITS, MIN_BITS
from shared.limits import MiB, read_text_limited
from training.metrics import evaluate
from training.engines import ENGINES, make_estimator, supports_deadline
from training.params import Interval, Options

DEFAULT_SPACE = Path(__file__).with_name("search_space.toml")
#: Largest search-space TOML file read (the shipped one is ~2 KiB): :class:`SearchSpaceError` above it.
MAX_SEARCH_SPACE_BYTES = 1 * MiB



def _hard_limits() -> tuple[dict[str, Any], frozenset, frozenset]:
    """The bounds a space file may not exceed, read from the engines' declared constraints:
    (low, high) for numbers, allowed values for choices; plus the job's ``bits`` and ``engine``."""
    limits: dict[str, Any] = {"bits": (MIN_BITS, MAX_BITS), "engine": tuple(ENGINES)}
    integers, choices = {"bits"}, {"engine"}
    for cls in ENGINES.values():
        for name, c in cls._parameter_constraints.items():
            if isinstance(c, Interval):
                lo, hi = limits.get(name, (c.low, c.high))
                limits[name] = (min(lo, c.low), max(hi, c.high))
                if c.integer:
                    integers.add(name)
            elif isinstance(c, Options):
                limits[name] = tuple(dict.fromkeys(tuple(limits.get(name, ())) + c.values))
                choices.add(name)
    return limits, frozenset(integers), frozenset(choices)


# Absolute bounds a space file may not exceed (derived, never written twice).
HARD_LIMITS, INTEGER_PARAMS, CATEGORICAL_PARAMS = _hard_limits()
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
MatrixMaker = Callable[[int | None], tuple[Any, Any, Any, Any]]


class SearchSpaceError(ConfigurationError):
    """A search-space file that is malformed or exceeds the hard limits."""


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: its distribution and its bounds or choices."""

    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a numeric dimension (every distribution but ``choice`` has them)."""
        if self.low is None or self.high is None:
            raise SearchSpaceError(f"{self.name}: a {self.distribution} dimension needs low and high")
        return self.low, self.high

    def sample(self, rng: np.random.Generator):
        """Draw one value from the distribution."""
        if self.distribution == "choice":
            v = self.values[int(rng.integers(len(self.values)))]
            return v.item() if isinstance(v, np.generic) else v
        low, high = self.bounds
        if self.distribution == "int":
            return int(rng.integers(int(low), int(high) + 1))
        if self.distribution == "loguniform":
            v = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        else:
            v = float(rng.uniform(low, high))
        return min(max(v, low), high)  # guard the float round trip through exp/log

    def contains(self, value) -> bool:
        """Whether ``value`` lies within the bounds or among the choices."""
        if self.distribution == "choice":
            return value in self.values
        low, high = self.bounds
        return low <= value <= high


@dataclass(frozen=True)
class Budget:
    """At most ``trials`` configurations; none submitted after ``wall_seconds``; a trial
    whose fit passes ``trial_seconds`` is stopped (engines that support a deadline) and
    does not count; ``n_jobs`` trials at once."""

    trials: int
    wall_seconds: float
    n_jobs: int = 2
    trial_seconds: float = math.inf


@dataclass(frozen=True)
class Rules:
    """Where the data decide the space: no negative downsampling below ``downsample_min_rows``
    training rows or above a click rate of ``downsample_max_ctr`` (it only discards
    information there); the exact scikit-learn engine only up to ``sklearn_max_rows``; no
    halving rung on fewer than ``halving_min_rows`` rows."""

    downsample_min_rows: int = 0
    downsample_max_ctr: float = 1.0
    sklearn_max_rows: int = 2**62
    halving_min_rows: int = 0


@dataclass(frozen=True)
class Halving:
    """The successive-halving schedule: keep ``1/eta`` per rung, starting at ``min_fraction`` of the rows."""

    eta: int = 3
    min_fraction: float = 1 / 9

    @property
    def fractions(self) -> list[float]:
        """Share of the training rows per rung, ending at 1.0."""
        steps = math.log(1.0 / self.min_fraction) / math.log(self.eta)
        n = round(steps) if abs(steps - round(steps)) < 1e-6 else math.ceil(steps)
        return [min(1.0, self.eta ** (k - n)) for k in range(n + 1)]


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search space: searched dimensions, fixed values, budget, halving schedule and rules."""

    dimensions: dict[str, Dimension]
    fixed: dict[str, Any]
    budget: Budget
    halving: Halving
    source: str = ""  # the TOML text
    rules: Rules = Rules()

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One configuration: the fixed values plus a draw of every dimension."""
        params = dict(self.fixed)
        for name in sorted(self.dimensions):
            params[name] = self.dimensions[name].sample(rng)
        return params

    def adapt(self, n_rows: int, click_rate: float) -> tuple["SearchSpace", list[str]]:
        """The space for a training set of ``n_rows`` rows at ``click_rate``, by the rules,
        and what was changed (as sentences for the log)."""
        dims, fixed, notes = dict(self.dimensions), dict(self.fixed), []
        r = self.rules
        if "downsample_rate" in dims and (n_rows < r.downsample_min_rows or click_rate > r.downsample_max_ctr):
            del dims["downsample_rate"]
            fixed["downsample_rate"] = 1.0
            notes.append(f"no negative downsampling: {n_rows:,} training rows at click rate {click_rate:.3f} "
                         f"(rules: at least {r.downsample_min_rows:,} rows and at most {r.downsample_max_ctr})")
        engine = dims.get("engine")
        if engine is not None and n_rows > r.sklearn_max_rows and "sklearn" in engine.values:
            rest = tuple(v for v in engine.values if v != "sklearn")
            if rest:
                dims["engine"] = Dimension("engine", "choice", values=rest)
                notes.append(f"engine sklearn skipped: {n_rows:,} training rows > {r.sklearn_max_rows:,}")
        return SearchSpace(dims, fixed, self.budget, self.halving, self.source, self.rules), notes


def _check_value(name: str, value, where: str) -> None:
    limit = HARD_LIMITS[name]
    if name in CATEGORICAL_PARAMS:
        if value not in limit:
            raise SearchSpaceError(f"{where}: {name} value {value!r} not in {list(limit)}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SearchSpaceError(f"{where}: {name} must be a number, got {value!r}")
    if name in INTEGER_PARAMS and int(value) != value:
        raise SearchSpaceError(f"{where}: {name} must be an integer, got {value!r}")
    lo, hi = limit
    if not lo <= value <= hi:
        raise SearchSpaceError(f"{where}: {name}={value!r} outside the hard limits [{lo}, {hi}]")


def parse_search_space(text: str) -> SearchSpace:
    """Parse and validate a search-space TOML document."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SearchSpaceError(f"search space is not valid TOML: {exc}") from None
    unknown = set(doc) - {"budget", "halving", "params", "fixed", "rules"}
    if unknown:
        raise SearchSpaceError(f"unknown top-level tables: {sorted(unknown)}")

    dims: dict[str, Dimension] = {}
    for name, d in (doc.get("params") or {}).items():
        where = f"[params.{name}]"
        if name not in HARD_LIMITS:
            raise SearchSpaceError(f"{where}: unknown hyperparameter; allowed: {sorted(HARD_LIMITS)}")
        if not isinstance(d, dict):
            raise SearchSpaceError(f"{where} must be a table")
        dist = d.get("distribution")
        extra = set(d) - {"distribution", "low", "high", "values"}
        if extra:
            raise SearchSpaceError(f"{where}: unknown keys {sorted(extra)}")
        if dist not in DISTRIBUTIONS:
            raise SearchSpaceError(f"{where}: distribution must be one of {DISTRIBUTIONS}, got {dist!r}")
        if dist == "choice":
            values = d.get("values")
            if not isinstance(values, list) or not values or {"low", "high"} & d.keys():
                raise SearchSpaceError(f"{where}: choice needs a non-empty 'values' list and no low/high")
            for v in values:
                _check_value(name, v, where)
            dims[name] = Dimension(name, dist, values=tuple(values))
            continue
        if name in CATEGORICAL_PARAMS:
            raise SearchSpaceError(f"{where}: {name} is categorical; use distribution = \"choice\"")
        if "values" in d or "low" not in d or "high" not in d:
            raise SearchSpaceError(f"{where}: {dist} needs 'low' and 'high' (and no 'values')")
        low, high = d["low"], d["high"]
        _check_value(name, low, where)
        _check_value(name, high, where)
        if low > high:
            raise SearchSpaceError(f"{where}: low {low} > high {high}")
        if dist == "loguniform" and low <= 0:
            raise SearchSpaceError(f"{where}: loguniform needs low > 0")
        if dist == "int" and name not in INTEGER_PARAMS:
            raise SearchSpaceError(f"{where}: 'int' is only for {sorted(INTEGER_PARAMS)}")
        if dist != "int" and name in INTEGER_PARAMS:
            raise SearchSpaceError(f"{where}: {name} is an integer; use 'int' or 'choice'")
        dims[name] = Dimension(name, dist, low=float(low), high=float(high))

    fixed = dict(doc.get("fixed") or {})
    for name, v in fixed.items():
        if name not in HARD_LIMITS:
            raise SearchSpaceError(f"[fixed]: unknown hyperparameter {name!r}")
        if name in dims:
            raise SearchSpaceError(f"[fixed]: {name} is also a searched parameter")
        _check_value(name, v, "[fixed]")

    b = doc.get("budget") or {}
    extra = set(b) - {"trials", "wall_seconds", "n_jobs", "trial_seconds"}
    if extra or "trials" not in b or "wall_seconds" not in b:
        raise SearchSpaceError("[budget] needs trials, wall_seconds and optionally n_jobs, trial_seconds")
    budget = Budget(int(b["trials"]), float(b["wall_seconds"]), int(b.get("n_jobs", 2)),
                    float(b.get("trial_seconds", math.inf)))
    if budget.trials < 1 or budget.wall_seconds <= 0 or budget.n_jobs < 1 or budget.trial_seconds <= 0:
        raise SearchSpaceError(f"[budget] values must be positive: {budget}")

    h = doc.get("halving") or {}
    if set(h) - {"eta", "min_fraction"}:
        raise SearchSpaceError(f"[halving]: unknown keys {sorted(set(h) - {'eta', 'min_fraction'})}")
    halving = Halving(int(h.get("eta", 3)), float(h.get("min_fraction", 1 / 9)))
    if halving.eta < 2 or not 0.0 < halving.min_fraction <= 1.0:
        raise SearchSpaceError(f"[halving]: need eta >= 2 and 0 < min_fraction <= 1, got {halving}")
    r = doc.get("rules") or {}
    known = {f.name for f in dataclasses.fields(Rules)}
    if set(r) - known:
        raise SearchSpaceError(f"[rules]: unknown keys {sorted(set(r) - known)}; allowed: {sorted(known)}")
    try:
        rules = Rules(**{k: type(getattr(Rules(), k))(v) for k, v in r.items()})
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(f"[rules]: {exc}") from None
    return SearchSpace(dims, fixed, budget, halving, text, rules)


def load_search_space(path=None) -> SearchSpace:
    """Read a search-space file (default: the shipped ``training/search_space.toml``)."""
    path = Path(path) if path else DEFAULT_SPACE
    try:
        text = read_text_limited(path, MAX_SEARCH_SPACE_BYTES, "search space", SearchSpaceError)
    except FileNotFoundError:
        raise MissingInputError(f"search space file {path} does not exist") from None
    try:
        return parse_search_space(text)
    except SearchSpaceError as exc:
        raise SearchSpaceError(f"{path}: {exc}") from None


def model_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's params without the job's ``bits`` (what :func:`make_estimator` reads)."""
    return {k: v for k, v in params.items() if k != "bits"}


# -- worker side ---------------------------------------------------------------------

_DATA_CACHE: dict[str, tuple] = {}


def _load_dataset(data_dir: str):
    """The dataset of a trial: in memory for threads, else loaded once per worker process."""
    if data_dir not in _DATA_CACHE:
        d = Path(data_dir)
        _DATA_CACHE.clear()  # one dataset (bits value) in memory per worker at a time
        _DATA_CACHE[data_dir] = (
            sp.load_npz(d / "X_train.npz").tocsr(),
            np.load(d / "y_train.npy", allow_pickle=False),
            sp.load_npz(d / "X_val.npz").tocsr(),
            np.load(d / "y_val.npy", allow_pickle=False),
            np.load(d / "order.npy", allow_pickle=False),
        )
    return _DATA_CACHE[data_dir]


def _run_trial(task: dict) -> dict:
    """Fit one configuration on the first ``n_rows`` of the dataset's row order; score
    the whole validation set. Runs in a worker process; never raises."""
    started = time.time()
    out = {"key": task["key"], "started": started, "status": "ok", "error": "", "metrics": {},
           "fit_seconds": math.nan, "n_nonzero": 0, "converged": False}
    try:
        X_tr, y_tr, X_val, y_val, order = _load_dataset(task["data_dir"])
        rows = np.sort(order[: task["n_rows"]])
        model = make_estimator(model_params(task["params"]), random_state=task["seed"])
        if supports_deadline(model):  # selects its rows itself: no copy of the subset
            model.fit(X_tr, y_tr, rows=rows, deadline=time.monotonic() + task.get("trial_seconds", math.inf))
        elif rows.size == X_tr.shape[0]:
            model.fit(X_tr, y_tr)
        else:
            model.fit(X_tr[rows], y_tr[rows])
        out.update(fit_seconds=model.fit_seconds_, n_nonzero=model.n_nonzero_,
                   converged=model.converged_, solver=model.solver_)
        if getattr(model, "stopped_early_", False):
            out.update(status="stopped", error=f"work budget: stopped after {task['trial_seconds']:g} s "
                                               f"(trial_seconds), not ranked")
        else:
            out["metrics"] = evaluate(y_val, model.predict_proba(X_val)[:, 1])
    except Exception as exc:  # a bad configuration must not end the search
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    out["ended"] = time.time()
    return out


# -- parent side ----------------------------------------------------------------------

class SparkTrialPool:
    """The part of ``concurrent.futures.Executor`` the search uses (``submit``, context
    manager), running each call as a one-task Spark job: ``max_workers`` threads each
    submit one job at a time, and Spark runs concurrent jobs on free executor slots."""

    def __init__(self, spark, max_workers: int):
        self._sc = spark.sparkContext
        self._threads = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ctr-search-spark")

    def _job(self, fn, task: dict) -> dict:
        self._sc.setJobDescription(f"ctr search trial config {task['key'][0]} rung {task['key'][1]}")
        return self._sc.parallelize([task], 1).map(fn).collect()[0]

    def submit(self, fn, task: dict):
        """Run ``fn(task)`` as a one-task Spark job; returns a future of its result."""
        return self._threads.submit(self._job, fn, task)

    def __enter__(self) -> "SparkTrialPool":
        return self

    def __exit__(self, *exc) -> None:
        self._threads.shutdown(wait=True)


@dataclass
class TrialResult:
    """One trial at one rung: its configuration, rows, status, validation metrics and cost."""

    config_id: int
    rung: int
    n_rows: int
    params: dict[str, Any]
    status: str  # ok | failed
    val_metrics: dict[str, float] = field(default_factory=dict)
    fit_seconds: float = math.nan
    n_nonzero: int = 0
    error: str = ""
    run_id: str = ""
    submitted_at: float = math.nan  # epoch seconds, parent clock
    started_at: float = math.nan  # epoch seconds, worker clock
    ended_at: float = math.nan

    @property
    def val_log_loss(self) -> float:
        """Validation log-loss, or inf unless the trial ended ``ok``."""
        return float(self.val_metrics.get("log_loss", math.inf)) if self.status == "ok" else math.inf


@dataclass
class SearchResult:
    """The search's outcome: the best configuration, every trial, and how the budget was spent."""

    best_params: dict[str, Any]
    best_val_log_loss: float
    best_trial: TrialResult
    trials: list[TrialResult]
    parent_run_id: str
    stopped_reason: str  # "completed" | "wall_seconds"
    started_at: float  # epoch seconds when the budget clock started
    elapsed_seconds: float
    n_configs: int
    rung_fractions: list[float]
    cpu_seconds: float = math.nan  # process CPU (workers included) while trials ran
    cpu_utilisation: float = math.nan  # cpu_seconds / (trials wall time x cores)
    trials_wall_seconds: float = math.nan
    mode: str = "threads"
    notes: list[str] = field(default_factory=list)

    def budget_report(self) -> str:
        """How the budget was spent: trials per rung and status, seconds, CPU use."""
        lines = []
        for rung, fraction in enumerate(self.rung_fractions):
            ts = [t for t in self.trials if t.rung == rung]
            if not ts:
                continue
            counts = {s: sum(t.status == s for t in ts) for s in ("ok", "stopped", "failed")}
            fit = sum(t.fit_seconds for t in ts if math.isfinite(t.fit_seconds))
            lines.append(f"  rung {rung} ({fraction:.3g} of the rows, {ts[0].n_rows:,}): {len(ts)} trials "
                         f"({', '.join(f'{v} {k}' for k, v in counts.items() if v)}), fits {fit:.1f} s")
        lines.append(f"  {len(self.trials)} trials in {self.trials_wall_seconds:.1f} s ({self.mode}); CPU "
                     f"{self.cpu_seconds:.1f} s = {100 * self.cpu_utilisation:.0f} % of {os.cpu_count()} cores"
                     f"; stopped: {self.stopped_reason}")
        return "\n".join(lines + [f"  {n}" for n in self.notes])


def _check_dataset(bits, X_tr, y_tr, X_val, y_val) -> int:
    """Check the shapes make_matrices returned; the training row count."""
    if X_tr.shape[0] != np.asarray(y_tr).size or X_val.shape[0] != np.asarray(y_val).size:
        raise ValueError(f"make_matrices({bits}): matrix rows and label counts differ")
    if X_tr.shape[1] != X_val.shape[1]:
        raise ValueError(f"make_matrices({bits}): train has {X_tr.shape[1]} columns, validation {X_val.shape[1]}")
    if bits is not None and X_tr.shape[1] != 1 << int(bits):
        raise ValueError(f"make_matrices({bits}) returned {X_tr.shape[1]} columns, expected 2**{bits}")
    return int(X_tr.shape[0])


def _save_dataset(d: Path, bits, X_tr, y_tr, X_val, y_val, seed: int) -> int:
    _check_dataset(bits, X_tr, y_tr, X_val, y_val)
    X_tr, X_val = sp.csr_matrix(X_tr), sp.csr_matrix(X_val)
    y_tr, y_val = np.asarray(y_tr).ravel().astype(np.int8), np.asarray(y_val).ravel().astype(np.int8)
    d.mkdir(parents=True)
    sp.save_npz(d / "X_train.npz", X_tr, compressed=False)
    sp.save_npz(d / "X_val.npz", X_val, compressed=False)
    np.save(d / "y_train.npy", y_tr)
    np.save(d / "y_val.npy", y_val)
    np.save(d / "order.npy", np.random.default_rng(seed).permutation(X_tr.shape[0]))
    return X_tr.shape[0]


def _log_child(client, experiment_id: str, parent_id: str, trial: TrialResult, out: dict) -> str:
    from mlflow.entities import Metric, Param

    run = client.create_run(
        experiment_id,
        start_time=int(out["started"] * 1000),
        run_name=f"config-{trial.config_id}-rung-{trial.rung}",
        tags={"mlflow.parentRunId": parent_id, "search.status": trial.status,
              "search.config_id": str(trial.config_id), "search.rung": str(trial.rung),
              **({"search.error": trial.error[:4000]} if trial.error else {})},
    )
    ts = int(out["ended"] * 1000)
    params = [Param(k, str(v)) for k, v in sorted(trial.params.items())]
    params += [Param("rung", str(trial.rung)), Param("n_rows", str(trial.n_rows)),
               Param("config_id", str(trial.config_id))]
    metrics = [Metric(f"val_{k}", float(v), ts, 0) for k, v in trial.val_metrics.items()]
    if trial.status == "ok":
        metrics += [Metric("fit_seconds", float(trial.fit_seconds), ts, 0),
                    Metric("n_nonzero", float(trial.n_nonzero), ts, 0)]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id, status="FINISHED" if trial.status == "ok" else "FAILED", end_time=ts)
    return run.info.run_id


def run_search(
    make_matrices: MatrixMaker,
    settings,
    space: SearchSpace | str | Path | None = None,
    *,
    trials: int | None = None,
    wall_seconds: float | None = None,
    n_jobs: int | None = None,
    seed: int = 0,
    experiment: str | None = None,
    run_name: str = "hyperparameter-search",
    spark=None,
    trials_on: str = "threads",
    profile: tuple[int, float] | None = None,
    progress: Callable[["TrialResult", int, int, "TrialResult | None"], None] | None = None,
) -> SearchResult:
    """Run the search and return the best configuration by validation log-loss.

    ``space`` is a :class:`SearchSpace`, a path to a space file, or None for the
    default file; ``trials``, ``wall_seconds`` and ``n_jobs`` override its budget.
    ``settings`` (shared.config.Settings) selects the MLflow store and experiment.
    ``spark``: run the trials as Spark tasks (:class:`SparkTrialPool`); otherwise
    ``trials_on`` is ``threads`` (the engines release the GIL; the matrices are shared)
    or ``processes`` (spawned workers reading them from files); the results are the same.
    ``profile`` = (training rows, click rate) lets the space's rules adapt it
    (:meth:`SearchSpace.adapt`). ``progress(trial, done, planned, best)`` is called after
    every trial.
    """
    import mlflow

    from shared.mlflow_utils import configure_mlflow, get_or_create_experiment

    if not isinstance(space, SearchSpace):
        space = load_search_space(space)
    if trials_on not in ("threads", "processes"):
        raise ValueError(f"trials_on must be 'threads' or 'processes', got {trials_on!r}")
    budget = Budget(
        trials if trials is not None else space.budget.trials,
        wall_seconds if wall_seconds is not None else space.budget.wall_seconds,
        n_jobs if n_jobs is not None else space.budget.n_jobs,
        space.budget.trial_seconds,
    )
    if budget.trials < 1 or budget.wall_seconds <= 0 or budget.n_jobs < 1:
        raise SearchSpaceError(f"budget values must be positive: {budget}")
    notes: list[str] = []
    if profile is not None:
        space, notes = space.adapt(*profile)
    mode = "spark" if spark is not None else trials_on
    rng = np.random.default_rng(seed)
    configs = [space.sample(rng) for _ in range(budget.trials)]
    fractions = space.halving.fractions

    configure_mlflow(settings)
    experiment_id = get_or_create_experiment(settings, experiment)
    client = mlflow.MlflowClient()
    tmp_root = None
    if spark is not None:  # executors must read the matrices: keep them under the data root
        tmp_root = Path(settings.home) / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
    datasets: dict[Any, tuple[str, int]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="ctr-search-", dir=tmp_root))
    results: list[TrialResult] = []
    stopped = "completed"
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                              nested=mlflow.active_run() is not None) as parent:
            parent_id = parent.info.run_id
            # The wall-clock budget covers matrix preparation and the trials, not MLflow setup.
            started = time.time()
            deadline = started + budget.wall_seconds
            mlflow.log_params({
                "budget.trials": budget.trials, "budget.wall_seconds": budget.wall_seconds,
                "budget.n_jobs": budget.n_jobs, "halving.eta": space.halving.eta,
                "halving.min_fraction": space.halving.min_fraction, "seed": seed,
                "rung_fractions": ",".join(f"{f:.6g}" for f in fractions),
                "trials_on": mode, "budget.trial_seconds": budget.trial_seconds,
            })
            if space.source:
                mlflow.log_text(space.source, "search_space.toml")

            for bits in sorted({c.get("bits") for c in configs}, key=lambda b: (b is None, b)):
                X_tr, y_tr, X_val, y_val = make_matrices(bits)
                d = workdir / f"bits-{bits}"
                if mode == "threads":  # shared in memory, never written
                    datasets[bits] = (str(d), _check_dataset(bits, X_tr, y_tr, X_val, y_val))
                    _DATA_CACHE[str(d)] = (
                        sp.csr_matrix(X_tr), np.asarray(y_tr).ravel().astype(np.int8), sp.csr_matrix(X_val),
                        np.asarray(y_val).ravel().astype(np.int8),
                        np.random.default_rng(seed).permutation(X_tr.shape[0]))
                else:
                    datasets[bits] = (str(d), _save_dataset(d, bits, X_tr, y_tr, X_val, y_val, seed))
                del X_tr, y_tr, X_val, y_val

            # a rung on fewer than halving_min_rows rows ranks settings for a different problem
            # (strong regularisation wins on tiny subsets): start halving where rungs are big enough
            n_min = min(n for _, n in datasets.values())
            kept = [f for f in fractions if f >= 1.0 or n_min * f >= space.rules.halving_min_rows]
            if len(kept) < len(fractions):
                notes.append(f"halving from {kept[0]:.3g} of the rows: rungs below "
                             f"{space.rules.halving_min_rows:,} rows skipped ({n_min:,} training rows)")
                fractions = kept
            survivors = list(range(len(configs)))
            planned = _planned_trials(len(configs), len(fractions), space.halving.eta)
            tracker = _Tracker(planned, progress)
            cpu0 = os.times()
            pool_cm: SparkTrialPool | ThreadPoolExecutor | ProcessPoolExecutor
            if mode == "spark":
                pool_cm = SparkTrialPool(spark, budget.n_jobs)
            elif mode == "threads":
                pool_cm = ThreadPoolExecutor(max_workers=budget.n_jobs, thread_name_prefix="ctr-search")
            else:
                pool_cm = ProcessPoolExecutor(max_workers=budget.n_jobs, mp_context=multiprocessing.get_context("spawn"))
            with pool_cm as pool:
                for rung, fraction in enumerate(fractions):
                    tasks = []
                    for cid in survivors:
                        data_dir, n_train = datasets[configs[cid].get("bits")]
                        tasks.append({"key": (cid, rung), "data_dir": data_dir, "params": configs[cid],
                                      "n_rows": max(2, math.ceil(n_train * fraction)),
                                      "seed": seed + cid, "trial_seconds": budget.trial_seconds})
                    rung_results = _run_rung(pool, budget.n_jobs, tasks, deadline, client, experiment_id, parent_id,
                                             tracker)
                    results.extend(rung_results)
                    if len(rung_results) < len(tasks):  # the deadline stopped submissions
                        stopped = "wall_seconds"
                        break
                    ranked = sorted((t for t in rung_results if t.status == "ok"), key=lambda t: t.val_log_loss)
                    if rung == len(fractions) - 1 or not ranked:
                        break
                    survivors = [t.config_id for t in ranked[: max(1, math.ceil(len(survivors) / space.halving.eta))]]

            cpu1 = os.times()
            ok = [t for t in results if t.status == "ok"]
            if not results:
                raise RuntimeError(
                    f"wall-clock budget of {budget.wall_seconds} s was spent before any trial started "
                    f"({time.time() - started:.1f} s elapsed, most of it in make_matrices)"
                )
            if not ok:
                errors = sorted({t.error for t in results if t.error})
                raise RuntimeError(f"no search trial succeeded; errors: {errors[:5]}")
            top_rung = max(t.rung for t in ok)
            best = min((t for t in ok if t.rung == top_rung), key=lambda t: t.val_log_loss)
            elapsed = time.time() - started
            trial_wall = max(cpu1.elapsed - cpu0.elapsed, 1e-9)
            cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            cpu += (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
            utilisation = cpu / (trial_wall * (os.cpu_count() or 1))
            mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
            mlflow.log_metrics({
                "cpu_seconds": cpu, "cpu_utilisation": utilisation, "trials_wall_seconds": trial_wall,
                "n_trials_stopped": float(sum(t.status == "stopped" for t in results)),
                "best_val_log_loss": best.val_log_loss, "elapsed_seconds": elapsed,
                "n_trials_ok": float(len(ok)), "n_trials_failed": float(sum(t.status == "failed" for t in results)),
                "best_rung": float(top_rung),
            })
            mlflow.set_tags({"search.stopped_reason": stopped, "search.best_run_id": best.run_id,
                             "search.rungs_run": ",".join(f"{f:.6g}" for f in fractions),
                             **({"search.adapted": " | ".join(notes)} if notes else {})})
    finally:
        for data_dir, _ in datasets.values():
            _DATA_CACHE.pop(data_dir, None)
        shutil.rmtree(workdir, ignore_errors=True)
    return SearchResult(
        best_params=dict(best.params), best_val_log_loss=best.val_log_loss, best_trial=best,
        trials=results, parent_run_id=parent_id, stopped_reason=stopped,
        started_at=started, elapsed_seconds=elapsed, n_configs=len(configs), rung_fractions=fractions,
        cpu_seconds=cpu, cpu_utilisation=utilisation, trials_wall_seconds=trial_wall, mode=mode, notes=notes,
    )


def _planned_trials(n_configs: int, n_rungs: int, eta: int) -> int:
    """Trials successive halving runs when nothing fails and the deadline is not hit."""
    total, alive = 0, n_configs
    for _ in range(n_rungs):
        total += alive
        alive = max(1, math.ceil(alive / eta))
    return total


class _Tracker:
    """Counts finished trials and the best ranked one so far, for ``progress``."""

    def __init__(self, planned: int, progress):
        self.planned, self.progress, self.done = planned, progress, 0
        self.best: TrialResult | None = None

    def finished(self, trial: "TrialResult") -> None:
        self.done += 1
        if trial.status == "ok" and (self.best is None or (trial.rung, -trial.val_log_loss)
                                     > (self.best.rung, -self.best.val_log_loss)):
            self.best = trial
        if self.progress is not None:
            self.progress(trial, self.done, self.planned, self.best)


def _run_rung(pool, width: int, tasks: list[dict], deadline: float, client, experiment_id: str,
              parent_id: str, tracker: "_Tracker") -> list[TrialResult]:
    """Submit a rung's tasks (no more than the pool can start, none after the deadline)
    and log each finished trial as a child run."""
    # At most ``width`` tasks in flight: each submission can start at once, so the
    # deadline check at submission time is meaningful.
    pending = list(tasks)
    running: dict = {}
    by_key = {t["key"]: t for t in tasks}
    done_results: list[TrialResult] = []
    while pending or running:
        while pending and len(running) < width and time.time() <= deadline:
            task = pending.pop(0)
            task["submitted_at"] = time.time()
            running[pool.submit(_run_trial, task)] = task["key"]
        if not running:
            break  # deadline reached with tasks never submitted
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            key = running.pop(fut)
            out = fut.result()
            task = by_key[key]
            trial = TrialResult(
                config_id=key[0], rung=key[1], n_rows=task["n_rows"], params=dict(task["params"]),
                status=out["status"], val_metrics=out["metrics"], fit_seconds=out["fit_seconds"],
                n_nonzero=out["n_nonzero"], error=out["error"], submitted_at=task["submitted_at"],
                started_at=out["started"], ended_at=out["ended"],
            )
            trial.run_id = _log_child(client, experiment_id, parent_id, trial, out)
            done_results.append(trial)
            tracker.finished(trial)
    return sorted(done_results, key=lambda t: t.config_id)


def refit_best(
    params: Mapping[str, Any] | SearchResult,
    X_train,
    y_train,
    X_val=None,
    y_val=None,
    *,
    random_state: int | None = 0,
) -> Any:
    """Fit the chosen configuration on train + validation (both built with the
    configuration's ``bits``) and return the model, ready to score the test window."""
    if isinstance(params, SearchResult):
        params = params.best_params
    bits = params.get("bits")
    if bits is not None and X_train.shape[1] != 1 << int(bits):
        raise ValueError(f"matrices have {X_train.shape[1]} columns but the configuration uses bits={bits}")
    model = make_estimator(model_params(params), random_state=random_state)
    if X_val is None:
        return model.fit(X_train, y_train)
    if supports_deadline(model):  # the online engine visits train then validation, never stacked
        return model.fit([X_train, X_val], [y_train, y_val])
    X = sp.vstack([sp.csr_matrix(X_train), sp.csr_matrix(X_val)], format="csr")
    return model.fit(X, np.concatenate([np.asarray(y_train).ravel(), np.asarray(y_val).ravel()]))
