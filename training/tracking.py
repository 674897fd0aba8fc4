"""Record a training run in MLflow, register it, and gate the ``champion`` alias.

One call, :func:`log_training_run`, does the whole sequence for a model directory
written by :func:`training.artifacts.save_model_dir`:

1. a run with params (hyperparameters, data reference flattened as ``data.*``),
   metrics (``<split>_<metric>``), tags (git commit, feature fingerprint, package
   versions ``pkg.*``, test window) and artifacts (the plain model directory under
   ``model_dir/``, ``data_reference.json``, ``environment.json``);
2. the pyfunc model (``training.pyfunc``, for ``mlflow models serve``), whose
   MLmodel artifacts carry the same plain files;
3. a new version of the registered model, tagged with its fingerprint, test window,
   test log-loss and ``model_dir_uri`` (where the bidder downloads the plain files);
4. the promotion gate: ``champion`` moves to the new version only if there is no
   champion or the new test log-loss is below ``champion_log_loss * (1 - margin)``
   on the same test window. The decision and figures are tags ``gate.*`` on the version.

The champion's figure on "the same test window" comes from ``champion_scorer``
(a callable given the champion's verified :class:`~training.artifacts.LoadedModel`,
returning its log-loss on the candidate's test rows — the caller featurizes with
the champion's own spec, ``loaded.spec_text``) when one is given; otherwise from
the champion's recorded ``test_log_loss`` if its ``test_window`` tag equals the
candidate's. If neither is available the candidate is not promoted and the
reason says so: a log-loss on another window is not a comparison.

Promotions record the champion they replace (version tag ``champion.previous``);
:func:`rollback` moves ``champion`` back to it and records that in tags.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from shared import processes
from shared.config import Settings
from shared.errors import ArtifactError, ConfigurationError
from shared.faults import phase
from shared.mlflow_utils import configure_mlflow, get_or_create_experiment
from shared.model.format import LoadedModel, load_model_dir
from shared.model.registry import CHAMPION, Tag, download_model_dir
from training.environment import KEY_PACKAGES, package_versions  # noqa: F401  (KEY_PACKAGES: part of the API)

DEFAULT_MARGIN = 0.001  # relative: the candidate must be at least 0.1 % better
MODEL_DIR_ARTIFACT = "model_dir"
PENDING, INTERRUPTED = "pending", "interrupted"  # gate.decision before the gate ends / after its process died
# who registered a version: host, pid and the process's start time (shared.processes)
REGISTERING_PID, REGISTERING_HOST, REGISTERING_START = "registering.pid", "registering.host", "registering.start"
PYFUNC_NAME = "model"
REPO_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate was promoted over the champion, why, and the log-losses compared."""

    promoted: bool
    reason: str
    candidate_version: str
    candidate_log_loss: float
    champion_version: str | None
    champion_log_loss: float | None
    champion_log_loss_source: str | None  # "rescored" | "recorded" | None
    margin: float
    relative_improvement: float | None
    test_window: str


@dataclass(frozen=True)
class TrainingRun:
    """A logged and registered training: run id, version, model URIs and the gate's decision."""

    run_id: str
    model_name: str
    version: str
    model_uri: str  # what the registry version points at (the pyfunc model, or the plain dir)
    model_dir_uri: str  # the plain files: runs:/<run_id>/model_dir
    decision: GateDecision


# -- provenance ---------------------------------------------------------------------

def git_commit(repo_dir: Path | str = REPO_DIR) -> str:
    """``git rev-parse HEAD`` of the code's checkout, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def git_dirty(repo_dir: Path | str = REPO_DIR) -> str:
    """"true"/"false" whether tracked files differ from HEAD, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "unknown" if out.returncode != 0 else str(bool(out.stdout.strip())).lower()


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def holdout_window_id(data_reference: Mapping[str, Any]) -> str:
    """Identity of the test window: table, Delta version and test window bounds.

    Expects ``data_reference`` like ``{"table_path": ..., "delta_version": 7,
    "windows": {"train": [...], "validation": [...], "test": [start, end]}}``.
    """
    windows = data_reference.get("windows") or {}
    if "test" not in windows:
        raise ValueError("data_reference has no windows['test']; pass test_window explicitly")
    return _canonical({
        "table_path": data_reference.get("table_path"),
        "delta_version": data_reference.get("delta_version"),
        "test": windows["test"],
    })


def _flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _param_value(v) -> str:
    return v if isinstance(v, str) else _canonical(v)


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- registry helpers --------------------------------------------------------------

def _client(settings: Settings):
    mlflow = configure_mlflow(settings)
    return mlflow.MlflowClient()


@dataclass(frozen=True)
class _Version:
    version: str  # always a string (the SQLite store hands back ints)
    tags: dict[str, str]


def _champion(client, model_name: str) -> _Version | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    return _Version(str(mv.version), dict(mv.tags))


def _set_tags(client, model_name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, "" if value is None else str(value))


def list_versions(settings: Settings, model_name: str) -> list[dict[str, Any]]:
    """Every version of ``model_name``, oldest first, as plain dicts (version, run_id,
    aliases, status, source, created_at, tags)."""
    client = _client(settings)
    escaped = model_name.replace("'", "\\'")
    versions = client.search_model_versions(f"name='{escaped}'")
    # search results do not carry aliases; the registered model does (alias -> version)
    aliases: dict[str, list[str]] = {}
    for alias, v in (client.get_registered_model(model_name).aliases or {}).items() if versions else ():
        aliases.setdefault(str(v), []).append(alias)
    rows = [
        {
            "version": str(mv.version),
            "run_id": mv.run_id,
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "status": mv.status,
            "source": mv.source,
            "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc).isoformat(),
            "tags": dict(mv.tags),
        }
        for mv in versions
    ]
    return sorted(rows, key=lambda r: int(r["version"]))


def champion_version(settings: Settings, model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    mv = _champion(_client(settings), model_name)
    return None if mv is None else mv.version


def promote(settings: Settings, model_name: str, version, *, reason: str = "manual") -> str | None:
    """Point ``champion`` at ``version``; returns the previous champion's version (or None).

    The version records the champion it replaced (``champion.previous``), when and why,
    so :func:`rollback` can undo it.
    """
    client = _client(settings)
    version = str(version)
    client.get_model_version(model_name, version)  # raises if it does not exist
    previous = _champion(client, model_name)
    previous_version = None if previous is None else previous.version
    if previous_version == version:
        return previous_version
    client.set_registered_model_alias(model_name, CHAMPION, version)
    _set_tags(client, model_name, version, {
        Tag.CHAMPION_PREVIOUS: previous_version or "",
        Tag.CHAMPION_PROMOTED_AT: _now(),
        Tag.CHAMPION_PROMOTED_REASON: reason,
    })
    return previous_version


def rollback(settings: Settings, model_name: str, *, reason: str = "manual") -> str:
    """Move ``champion`` back to the champion the current one replaced; returns that version.

    Tags ``rollback.*`` on both versions and ``last_rollback`` on the registered model
    record it. Repeated rollbacks walk further back through the promotion history.
    """
    client = _client(settings)
    current = _champion(client, model_name)
    if current is None:
        raise ArtifactError(f"model {model_name!r} has no {CHAMPION!r} alias to roll back")
    target = current.tags.get(Tag.CHAMPION_PREVIOUS, "")
    if not target:
        raise ArtifactError(
            f"champion version {current.version} of {model_name!r} records no previous champion to roll back to"
        )
    client.get_model_version(model_name, target)  # raises if it was deleted
    at = _now()
    client.set_registered_model_alias(model_name, CHAMPION, target)
    _set_tags(client, model_name, current.version, {
        "rollback.rolled_back_at": at, "rollback.replaced_by": target, "rollback.reason": reason,
    })
    _set_tags(client, model_name, target, {
        "rollback.restored_at": at, "rollback.restored_from": current.version, "rollback.reason": reason,
    })
    client.set_registered_model_tag(
        model_name, "last_rollback",
        _canonical({"from": current.version, "to": target, "at": at, "reason": reason}),
    )
    return target


# -- the gate ---------------------------------------------------------------------

def promotion_gate(
    settings: Settings,
    model_name: str,
    version,
    *,
    candidate_log_loss: float,
    test_window: str,
    margin: float = DEFAULT_MARGIN,
    champion_scorer: Callable[[LoadedModel], float] | None = None,
) -> GateDecision:
    """Decide whether ``version`` replaces the champion, record the decision as
    ``gate.*`` tags on the version, and move the alias when it wins."""
    if not 0.0 <= margin < 1.0:
        raise ConfigurationError(f"margin must be in [0, 1), got {margin}")
    if not math.isfinite(candidate_log_loss):
        raise ValueError(f"candidate log-loss must be finite, got {candidate_log_loss}")
    client = _client(settings)
    version = str(version)
    champ = _champion(client, model_name)
    champ_version = champ_ll = source = rel = None
    if champ is None:
        promoted, reason = True, "no current champion"
    elif champ.version == version:
        promoted, reason = True, "already champion"
        champ_version = champ.version
    else:
        champ_version = champ.version
        if champion_scorer is not None:
            with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
                loaded = load_model_dir(download_model_dir(settings, model_name, champ.version, tmp))
                champ_ll, source = float(champion_scorer(loaded)), "rescored"
        elif champ.tags.get(Tag.TEST_WINDOW) == test_window and champ.tags.get(Tag.TEST_LOG_LOSS):
            champ_ll, source = float(champ.tags[Tag.TEST_LOG_LOSS]), "recorded"
        if champ_ll is None:
            promoted = False
            reason = (f"champion v{champ.version} has no log-loss on this test window "
                      "(recorded on another window and no champion_scorer given)")
        else:
            rel = (champ_ll - candidate_log_loss) / champ_ll if champ_ll > 0 else 0.0
            promoted = candidate_log_loss < champ_ll * (1.0 - margin)
            reason = (f"test log-loss {candidate_log_loss:.6g} vs champion v{champ.version} {champ_ll:.6g}: "
                      f"relative improvement {rel:.4%} {'>' if promoted else '<='} margin {margin:.4%}")
    decision = GateDecision(
        promoted=promoted, reason=reason, candidate_version=version,
        candidate_log_loss=float(candidate_log_loss), champion_version=champ_version,
        champion_log_loss=champ_ll, champion_log_loss_source=source, margin=float(margin),
        relative_improvement=rel, test_window=test_window,
    )
    _set_tags(client, model_name, version, {
        Tag.GATE_REASON: reason,
        "gate.candidate_test_log_loss": _fmt(candidate_log_loss),
        "gate.champion_version": champ_version or "",
        "gate.champion_test_log_loss": _fmt(champ_ll),
        "gate.champion_log_loss_source": source or "",
        "gate.margin": _fmt(margin),
        "gate.relative_improvement": _fmt(rel),
        "gate.test_window": test_window,
        "gate.decided_at": _now(),
    })
    if promoted and champ_version != version:
        promote(settings, model_name, version, reason="gate: " + reason)
        phase("train.promoted")
    # the decision tag last: a version still "pending" was never gated to the end (see recover_interrupted)
    _set_tags(client, model_name, version, {Tag.GATE_DECISION: "promoted" if promoted else "rejected"})
    return decision


def _alive(tags: Mapping[str, str]) -> bool:
    """Whether the process that registered a version (``registering.*`` tags) may still be running."""
    return not processes.gone(tags.get(REGISTERING_HOST), tags.get(REGISTERING_PID), tags.get(REGISTERING_START))


def recover_interrupted(settings: Settings, model_name: str) -> list[str]:
    """Finish the record of versions whose registering process died before the gate ended
    (``gate.decision`` still ``pending``): a version the champion alias already points at was
    promoted (its decision is completed); any other is tagged ``interrupted`` and is never
    served. Versions whose process still runs are left alone. Returns the versions fixed."""
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return []
    champ = _champion(client, model_name)
    fixed = []
    for mv in versions:
        tags = dict(mv.tags)
        if tags.get(Tag.GATE_DECISION) != PENDING or _alive(tags):
            continue
        if champ is not None and champ.version == str(mv.version):
            _set_tags(client, model_name, str(mv.version), {Tag.GATE_DECISION: "promoted"})
        else:
            _set_tags(client, model_name, str(mv.version), {
                Tag.GATE_DECISION: INTERRUPTED,
                Tag.GATE_REASON: f"the registering process (pid {tags.get(REGISTERING_PID)}) died before the "
                                 "promotion gate finished; never served"})
        if mv.run_id:
            try:
                if client.get_run(mv.run_id).info.status == "RUNNING":
                    client.set_terminated(mv.run_id, status="KILLED")
            except MlflowException:
                pass
        fixed.append(str(mv.version))
    return fixed


# -- the run ------------------------------------------------------------------------

def log_training_run(
    settings: Settings,
    model_dir,
    *,
    model_name: str,
    metrics: Mapping[str, Mapping[str, float]],
    data_reference: Mapping[str, Any],
    test_window: str | None = None,
    params: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    margin: float = DEFAULT_MARGIN,
    champion_scorer: Callable[[LoadedModel], float] | None = None,
    log_pyfunc: bool = True,
    tags: Mapping[str, str] | None = None,
) -> TrainingRun:
    """Log, register and gate one trained model directory (see the module docstring).

    ``metrics`` is keyed by split, e.g. ``{"validation": evaluate(...), "test": evaluate(...)}``;
    ``metrics["test"]["log_loss"]`` is required (the gate compares it). ``test_window``
    defaults to :func:`holdout_window_id` of ``data_reference``. ``params`` adds run params
    (the model's hyperparameters are read from its model.json).
    """
    import mlflow

    if "test" not in metrics or "log_loss" not in metrics["test"]:
        raise ValueError("metrics['test']['log_loss'] is required for the promotion gate")
    test_log_loss = float(metrics["test"]["log_loss"])
    test_window = test_window or holdout_window_id(data_reference)
    model_dir = Path(model_dir)
    loaded = load_model_dir(model_dir)  # refuse to register a directory that fails its checksums
    meta = loaded.metadata

    configure_mlflow(settings)
    experiment_id = get_or_create_experiment(settings, experiment)
    client = mlflow.MlflowClient()
    commit = git_commit()
    packages = package_versions()

    run_params = {f"model.{k}": v for k, v in meta["hyperparameters"].items()}
    run_params.update({"model.solver_used": meta["solver"], "model.bits": meta["bits"],
                       "model.n_features": meta["n_features"]})
    run_params.update({f"data.{k}": v for k, v in _flatten(data_reference).items()})
    run_params.update(params or {})
    run_metrics = {f"{split}_{k}": float(v) for split, ms in metrics.items() for k, v in ms.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
    run_metrics.update({"fit_seconds": float(meta["fit_seconds"]), "n_nonzero": float(meta["n_nonzero"])})
    run_tags = {
        Tag.GIT_COMMIT: commit,
        "git_dirty": git_dirty(),
        Tag.FEATURE_FINGERPRINT: loaded.fingerprint,
        Tag.TEST_WINDOW: test_window,
        **{f"pkg.{k}": v for k, v in packages.items()},
        **(tags or {}),
    }

    nested = mlflow.active_run() is not None
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested) as run:
        run_id = run.info.run_id
        mlflow.log_params({k: _param_value(v) for k, v in run_params.items()})
        mlflow.log_metrics(run_metrics)
        mlflow.set_tags(run_tags)
        mlflow.log_dict(json.loads(_canonical(data_reference)), "data_reference.json")
        mlflow.log_dict({"git_commit": commit, "packages": packages}, "environment.json")
        mlflow.log_artifacts(str(model_dir), MODEL_DIR_ARTIFACT)
        phase("train.logged")
        model_dir_uri = f"runs:/{run_id}/{MODEL_DIR_ARTIFACT}"
        if log_pyfunc:
            from training.pyfunc import log_pyfunc_model

            model_uri = log_pyfunc_model(model_dir, name=PYFUNC_NAME).model_uri
        else:
            model_uri = model_dir_uri

    recover_interrupted(settings, model_name)
    version_tags = {
        Tag.GATE_DECISION: PENDING,  # until the gate has run to the end
        **dict(zip((REGISTERING_HOST, REGISTERING_PID, REGISTERING_START),
                   (str(part) for part in processes.this_process()))),
        Tag.FEATURE_FINGERPRINT: loaded.fingerprint,
        Tag.TEST_WINDOW: test_window,
        Tag.TEST_LOG_LOSS: _fmt(test_log_loss),
        Tag.MODEL_DIR_URI: model_dir_uri,
        Tag.GIT_COMMIT: commit,
        # the job's tags (engine, an update's lineage, a segment run id) travel with the version
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    if model_uri.startswith("models:/"):
        mv = mlflow.register_model(model_uri, model_name, tags=version_tags)
    else:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(model_name)
        except MlflowException:
            client.create_registered_model(model_name)
        source = client.get_run(run_id).info.artifact_uri.rstrip("/") + f"/{MODEL_DIR_ARTIFACT}"
        mv = client.create_model_version(model_name, source, run_id=run_id, tags=version_tags)

    phase("train.registered")
    decision = promotion_gate(
        settings, model_name, str(mv.version), candidate_log_loss=test_log_loss, test_window=test_window,
        margin=margin, champion_scorer=champion_scorer,
    )
    client.log_dict(run_id, asdict(decision), "gate_decision.json")
    client.set_tag(run_id, Tag.REGISTERED_VERSION, str(mv.version))
    client.set_tag(run_id, Tag.GATE_DECISION, "promoted" if decision.promoted else "rejected")
    return TrainingRun(run_id=run_id, model_name=model_name, version=str(mv.version), model_uri=model_uri,
                       model_dir_uri=model_dir_uri, decision=decision)
