"""MLflow helpers: one place that points MLflow at the configured store."""

from __future__ import annotations

from types import ModuleType

from shared.config import Settings


def configure_mlflow(settings: Settings) -> ModuleType:
    """Point MLflow's tracking and registry at ``settings``; returns the mlflow module.

    With the default SQLite URI the database folder is created first, since
    SQLAlchemy will not create parent directories.
    """
    import logging
    import os

    # Keep command output to what the command says: no per-file download bars, no
    # "creating tables" chatter from a new SQLite store.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        from pathlib import Path

        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI, where load_settings would take it over a
    # later --home's own store (two commands of different data roots in one process): restore it
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return mlflow


def get_or_create_experiment(settings: Settings, name: str | None = None) -> str:
    """Experiment id for ``name`` (default ``settings.mlflow_experiment``), created when it does
    not exist yet, with its artifacts under the configured artifact root (none configured: a
    tracking server's own artifact store)."""
    mlflow = configure_mlflow(settings)
    name = name or settings.mlflow_experiment
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    experiment_id: str  # mlflow has no type information: its results are Any to mypy
    if exp is not None:
        experiment_id = exp.experiment_id
    else:
        root = settings.mlflow_artifact_root
        experiment_id = client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
    return experiment_id
