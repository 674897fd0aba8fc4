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

Several trainings may register at once (``docs/concurrency.md``): the store numbers their
versions (the SQL store retries a version number taken meanwhile), and the gate, ``promote``
and ``rollback`` hold :func:`gate_lock`, a mutex made of the registry itself, so the champion
a gate compares against is the one current when it moves the alias.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from shared import processes
from shared.config import Settings
from shared.errors import ArtifactError, ConcurrencyError, ConfigurationError
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
# The gate lock (see gate_lock): a registered model named <model><GATE_LOCK_SUFFIX> while held.
GATE_LOCK_SUFFIX = ".gate-lock"
GATE_LOCK_WAIT_SECONDS = 900.0  # a gate waits this long for another one's (rescoring a champion takes minutes)
GATE_LOCK_LEASE_SECONDS = 600.0  # a holder on another host silent this long (no heartbeat) is presumed dead
GATE_LOCK_POLL_SECONDS = 0.5
LOCK_HOST, LOCK_PID, LOCK_START = "lock.host", "lock.pid", "lock.start"
LOCK_TOKEN, LOCK_HEARTBEAT = "lock.token", "lock.heartbeat"
_TAKEN, _GONE = "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"  # MLflow error codes


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
    so :func:`rollback` can undo it. Holds the gate lock: no gate decides meanwhile.
    """
    client = _client(settings)
    version = str(version)
    client.get_model_version(model_name, version)  # raises if it does not exist
    with gate_lock(settings, model_name):
        return _move_champion(client, model_name, version, reason)


def _move_champion(client, model_name: str, version: str, reason: str) -> str | None:
    """:func:`promote` without the lock (its caller holds it)."""
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
    Holds the gate lock, like :func:`promote`.
    """
    client = _client(settings)
    with gate_lock(settings, model_name):
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


# -- the gate lock ----------------------------------------------------------------

def gate_lock_name(model_name: str) -> str:
    """The registered model whose existence is the gate lock of ``model_name``."""
    return f"{model_name}{GATE_LOCK_SUFFIX}"


@contextmanager
def gate_lock(settings: Settings, model_name: str, *, wait_seconds: float | None = None,
              lease_seconds: float | None = None) -> Iterator[None]:
    """Hold the gate lock of ``model_name`` for the block: one process at a time reads the
    champion, compares and moves the alias (MLflow has no compare-and-set on aliases).

    The lock is the registry itself, so it works with whatever store the team shares (SQLite
    file, tracking server on PostgreSQL): creating the registered model
    :func:`gate_lock_name` is a unique-name insert, which exactly one creator wins; its tags
    name the holder (host, pid, start ticks, token) and a heartbeat; releasing deletes it.
    A lock whose holder is gone (:mod:`shared.processes`), or on another host silent for
    ``lease_seconds``, is broken; after ``wait_seconds``: :class:`ConcurrencyError`. (Defaults:
    :data:`GATE_LOCK_WAIT_SECONDS`, :data:`GATE_LOCK_LEASE_SECONDS`, read at each call.)
    """
    wait_seconds = GATE_LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
    lease_seconds = GATE_LOCK_LEASE_SECONDS if lease_seconds is None else lease_seconds
    client = _client(settings)
    name, token = gate_lock_name(model_name), uuid.uuid4().hex
    _acquire(client, name, token, wait_seconds, lease_seconds)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(_client(settings), name, token, lease_seconds / 10, stop),
                            name=f"heartbeat {name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        _release(client, name, token)


def _acquire(client, name: str, token: str, wait_seconds: float, lease_seconds: float) -> None:
    """Create the lock model, breaking a stale one, polling until ``wait_seconds`` have passed."""
    from mlflow.exceptions import MlflowException

    host, pid, ticks = processes.this_process()
    tags = {LOCK_HOST: host, LOCK_PID: str(pid), LOCK_START: ticks, LOCK_TOKEN: token,
            LOCK_HEARTBEAT: repr(time.time())}
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            client.create_registered_model(name, tags=tags, description="held while a promotion gate decides; "
                                           "not a model (training.tracking.gate_lock)")
            return
        except MlflowException as err:
            if err.error_code not in (_TAKEN, _GONE):  # _GONE: released while the store looked it up
                raise
        holder = _holder(client, name)
        if holder is not None and _stale(holder, lease_seconds):
            _break(client, name, holder, lease_seconds)
            continue
        if time.monotonic() >= deadline:
            who = "" if holder is None else (f" by pid {holder.tags.get(LOCK_PID)} on {holder.tags.get(LOCK_HOST)} "
                                              f"since {_held_since(holder)}")
            raise ConcurrencyError(
                f"the promotion gate lock {name!r} is held{who}: waited {wait_seconds:.0f}s; if that process is "
                f"gone for good, delete the registered model {name!r} and run again")
        time.sleep(GATE_LOCK_POLL_SECONDS * random.uniform(0.5, 1.5))


def _holder(client, name: str):
    """The lock model (its tags name the holder), or None when it is not held."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == _GONE:
            return None
        raise


def _last_sign_of_life(holder) -> float:
    """When the holder last showed it was alive (epoch seconds): taking the lock or a heartbeat."""
    try:
        beat = float(holder.tags.get(LOCK_HEARTBEAT) or 0)
    except ValueError:
        beat = 0.0
    return max(beat, (holder.creation_timestamp or 0) / 1000)


def _held_since(holder) -> str:
    return datetime.fromtimestamp((holder.creation_timestamp or 0) / 1000, timezone.utc).isoformat(timespec="seconds")


def _stale(holder, lease_seconds: float) -> bool:
    """Whether the lock's holder is gone: known dead on this host, or (another host, where its
    pid says nothing) silent for longer than the lease. A live holder here is never stale."""
    tags = holder.tags
    state = processes.state(tags.get(LOCK_HOST), tags.get(LOCK_PID), tags.get(LOCK_START))
    if state != processes.UNKNOWN:
        return state == processes.GONE
    return time.time() - _last_sign_of_life(holder) > lease_seconds


def _break(client, name: str, seen, lease_seconds: float) -> None:
    """Delete the stale lock ``seen``, after reading it again: if it was released and taken
    anew meanwhile (another token) or shows life, it is not stale and stays."""
    from mlflow.exceptions import MlflowException

    again = _holder(client, name)
    if again is None or again.tags.get(LOCK_TOKEN) != seen.tags.get(LOCK_TOKEN) or not _stale(again, lease_seconds):
        return
    try:
        client.delete_registered_model(name)
    except MlflowException as err:
        if err.error_code != _GONE:
            raise
        return
    print(f"broke the stale promotion gate lock {name!r} of pid {seen.tags.get(LOCK_PID)} on "
          f"{seen.tags.get(LOCK_HOST)} (held since {_held_since(seen)})", file=sys.stderr, flush=True)


def _heartbeat(client, name: str, token: str, every: float, stop: threading.Event) -> None:
    """Renew the lock's lease every ``every`` seconds while it is held (a long champion rescoring
    is not mistaken for a dead holder on another host)."""
    from mlflow.exceptions import MlflowException

    while not stop.wait(every):
        try:
            holder = _holder(client, name)
            if holder is None or holder.tags.get(LOCK_TOKEN) != token:
                return  # broken: nothing of ours to renew
            client.set_registered_model_tag(name, LOCK_HEARTBEAT, repr(time.time()))
        except MlflowException:
            pass  # the store is unreachable now; the next beat tries again


def _release(client, name: str, token: str) -> None:
    """Delete the lock if it is still ours (a lock broken and taken by another stays theirs)."""
    from mlflow.exceptions import MlflowException

    try:
        holder = _holder(client, name)
        if holder is not None and holder.tags.get(LOCK_TOKEN) == token:
            client.delete_registered_model(name)
    except MlflowException as err:  # left behind: the next gate breaks it once this process is gone
        print(f"could not release the promotion gate lock {name!r}: {err}", file=sys.stderr, flush=True)


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
    ``gate.*`` tags on the version, and move the alias when it wins.

    The whole decision holds the gate lock (:func:`gate_lock`): two trainings that finish
    together are gated one after the other, the second against the champion the first left,
    so the alias never moves on a comparison with a champion that is no longer current.
    """
    if not 0.0 <= margin < 1.0:
        raise ConfigurationError(f"margin must be in [0, 1), got {margin}")
    if not math.isfinite(candidate_log_loss):
        raise ValueError(f"candidate log-loss must be finite, got {candidate_log_loss}")
    with gate_lock(settings, model_name):
        return _decide(settings, model_name, str(version), candidate_log_loss, test_window, margin, champion_scorer)


def _decide(settings: Settings, model_name: str, version: str, candidate_log_loss: float, test_window: str,
            margin: float, champion_scorer: Callable[[LoadedModel], float] | None) -> GateDecision:
    """:func:`promotion_gate` without the lock (its caller holds it)."""
    client = _client(settings)
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
        _move_champion(client, model_name, version, "gate: " + reason)
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
            try:
                client.create_registered_model(model_name)
            except MlflowException as err:  # another training created it meanwhile
                if err.error_code != _TAKEN:
                    raise
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
