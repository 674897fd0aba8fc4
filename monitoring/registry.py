"""What monitoring needs from the MLflow registry and tracking store.

* :func:`versions`: every registered version with its creation time, aliases and the
  data reference it was trained on (the run's ``data.*`` params: table, Delta version,
  train window), so drift can be measured against the version's own training data.
* :func:`model_dir`: a version's plain model directory (``training.tracking.download_model_dir``),
  cached under ``<home>/monitoring/model_cache`` and verified by checksums on every load.
* :func:`training_runs`: past training pipelines with their wall time (for the scheduler's
  cost estimate): a ``search <window>`` run followed by the ``train <window>`` run that
  registered the result (``training.pipeline.train_from_warehouse`` names them so).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from feature_store.reader import Window
from shared.config import Settings
from shared.model.registry import CHAMPION, Tag

_WINDOW = re.compile(r"\[\s*(\d{4}-\d{2}-\d{2})\s*,\s*(\d{4}-\d{2}-\d{2})\s*\)")


@dataclass(frozen=True)
class VersionInfo:
    """One registered version: creation time, run, aliases, tags and its run's params."""

    version: str
    created_at: datetime
    run_id: str | None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def train_window(self) -> Window | None:
        """The version's training window, from its run's data params (None if not recorded)."""
        return parse_window(self.params.get("data.train_window") or self.params.get("data.windows.train"))

    @property
    def is_update(self) -> bool:
        """Whether the version is a warm-started update of another (``lineage.*`` tags)."""
        return bool(self.tags.get("lineage.parent_version") or self.params.get("update.parent"))

    @property
    def can_continue(self) -> bool:
        """Whether the version carries an engine state an update can continue (FTRL)."""
        return self.params.get("engine") == "ftrl"

    @property
    def data_end(self) -> date | None:
        """The end of the newest window the version was fitted on (train, or validation when
        the winner was refit on train + validation)."""
        ends = [w.end for w in (parse_window(self.params.get(f"data.{k}_window")) for k in ("train", "validation"))
                if w is not None]
        return max(ends, default=None)

    @property
    def table(self) -> str:
        """The warehouse table the version was trained on (``observations`` by default)."""
        return self.params.get("data.table") or "observations"

    @property
    def delta_version(self) -> int | None:
        """The Delta version of the table it was trained on, or None if not recorded."""
        v = self.params.get("data.delta_version")
        return int(v) if v not in (None, "", "null") and str(v).lstrip("-").isdigit() else None


def parse_window(text: str | None) -> Window | None:
    """``"[2026-11-01, 2026-11-05)"`` (a Window's str) or a JSON ``["2026-11-01", "2026-11-05"]``."""
    if not text:
        return None
    m = _WINDOW.search(text)
    if m:
        return Window(date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2)))
    try:
        start, end = json.loads(text)
        return Window(date.fromisoformat(str(start)), date.fromisoformat(str(end)))
    except (ValueError, TypeError):
        return None


def available(settings: Settings) -> bool:
    """False when the default SQLite store does not exist yet (nothing was ever trained):
    opening it would create an empty store just to find nothing."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return True


def versions(settings: Settings, model_name: str) -> list[VersionInfo]:
    """Registered versions of ``model_name``, oldest first ([] when none or no store)."""
    if not available(settings):
        return []
    from mlflow.exceptions import MlflowException

    from shared.mlflow_utils import configure_mlflow
    from training.tracking import list_versions

    try:
        rows = list_versions(settings, model_name)
    except MlflowException:
        return []
    client = configure_mlflow(settings).MlflowClient()
    out = []
    for r in rows:
        params: dict[str, str] = {}
        if r["run_id"]:
            try:
                params = dict(client.get_run(r["run_id"]).data.params)
            except MlflowException:
                params = {}
        out.append(VersionInfo(
            version=r["version"], created_at=datetime.fromisoformat(r["created_at"]), run_id=r["run_id"],
            aliases=tuple(r["aliases"]), tags=dict(r["tags"]), params=params,
        ))
    return out


def champion(infos: list[VersionInfo]) -> VersionInfo | None:
    """The version the ``champion`` alias points at, if any."""
    return next((v for v in infos if CHAMPION in v.aliases), None)


def model_dir(settings: Settings, model_name: str, version: str) -> Path:
    """The verified plain model directory of ``version`` (downloaded once, then cached)."""
    from training.artifacts import ModelDirError, verify_model_dir
    from training.tracking import download_model_dir

    cache = settings.home / "monitoring" / "model_cache" / model_name / f"v{version}"
    found = sorted(p.parent for p in cache.glob("**/checksums.json")) if cache.exists() else []
    for d in found:
        try:
            verify_model_dir(d)
            return d
        except ModelDirError:
            break
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    return download_model_dir(settings, model_name, str(version), cache)


@dataclass(frozen=True)
class TrainingRun:
    """One training pipeline as seen in MLflow."""

    name: str  # the window it trained on
    started_at: datetime
    ended_at: datetime | None
    status: str  # "FINISHED" with a registered version, else the search run's status
    seconds: float | None
    registered_version: str | None
    kind: str = "retrain"  # "retrain" (search + refit) or "update" (warm-started)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _end_ts(ms: int | None) -> datetime | None:
    """A run's end time (None while it runs); its start time is always set."""
    return None if ms is None else _ts(ms)


def training_runs(settings: Settings, since: datetime | None = None,
                  experiment: str | None = None) -> list[TrainingRun]:
    """Training pipelines started since ``since`` (default 90 days), oldest first.

    Warm-started updates (``update <window>`` runs) are listed with ``kind="update"``.
    A pipeline's wall time runs from its ``search <window>`` run's start to the end of the
    ``train <window>`` run that registered the result; a search with no train run after it
    is a pipeline that failed or is still running (its own duration, status as recorded).
    """
    if not available(settings):
        return []
    from shared.mlflow_utils import configure_mlflow

    client = configure_mlflow(settings).MlflowClient()
    exp = client.get_experiment_by_name(experiment or settings.mlflow_experiment)
    if exp is None:
        return []
    since = since or datetime.now(timezone.utc) - timedelta(days=90)
    after = f"attributes.start_time > {int(since.timestamp() * 1000)}"

    def runs(prefix: str) -> list:
        return client.search_runs([exp.experiment_id], f"attributes.run_name LIKE '{prefix} %' AND {after}",
                                  max_results=5000, order_by=["attributes.start_time ASC"])

    searches = runs("search")
    trains = [r for r in runs("train") if r.data.tags.get(Tag.REGISTERED_VERSION)]
    used: set[str] = set()
    out: list[TrainingRun] = []
    for t in trains:
        name = t.info.run_name[len("train "):]
        before = [s for s in searches if s.info.run_name == f"search {name}"
                  and s.info.start_time <= t.info.start_time and s.info.run_id not in used]
        first = before[-1] if before else None
        if first is not None:
            used.add(first.info.run_id)
        start = _ts((first or t).info.start_time)
        end = _end_ts(t.info.end_time)
        out.append(TrainingRun(name, start, end, "FINISHED" if end else t.info.status,
                               (end - start).total_seconds() if end else None,
                               t.data.tags.get(Tag.REGISTERED_VERSION)))
    for u in runs("update"):
        start, end = _ts(u.info.start_time), _end_ts(u.info.end_time)
        version = u.data.tags.get(Tag.REGISTERED_VERSION)
        prior = float(u.data.params.get("job.seconds_before_register") or 0.0)  # read + fit, before the run
        out.append(TrainingRun(u.info.run_name[len("update "):], start - timedelta(seconds=prior), end,
                               ("FINISHED" if version else "FINISHED_UNREGISTERED") if end else u.info.status,
                               (end - start).total_seconds() + prior if end else None, version, kind="update"))
    for s in searches:
        if s.info.run_id in used:
            continue
        start, end = _ts(s.info.start_time), _end_ts(s.info.end_time)
        status = s.info.status if s.info.status != "FINISHED" else "FINISHED_UNREGISTERED"
        out.append(TrainingRun(s.info.run_name[len("search "):], start, end, status,
                               (end - start).total_seconds() if end else None, None))
    return sorted(out, key=lambda r: r.started_at)

