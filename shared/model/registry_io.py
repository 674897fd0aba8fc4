"""Fetching a registered model version's plain files from the MLflow registry.

Training registers a version with a ``model_dir_uri`` tag naming its model directory among
the run's artifacts; the bidder, monitoring and later training jobs download those files
with :func:`download_model_dir` and read them with :func:`shared.model.format.load_model_dir`
(which verifies the checksums). MLflow is imported only when a download is made.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from shared.config import Settings
from shared.errors import ArtifactError
from shared.mlflow_utils import configure_mlflow

CHAMPION = "champion"


def download_model_dir(settings: Settings, model_name: str, ref: str = CHAMPION,
                       dst_path: str | os.PathLike[str] | None = None) -> Path:
    """Download the plain model files of a version (``ref``: alias name or version
    number) into ``dst_path`` (a new temp dir by default); returns the directory.
    Read it with :func:`shared.model.format.load_model_dir`, which verifies checksums."""
    mlflow = configure_mlflow(settings)
    client = mlflow.MlflowClient()
    mv = client.get_model_version(model_name, ref) if str(ref).isdigit() \
        else client.get_model_version_by_alias(model_name, ref)
    uri = mv.tags.get("model_dir_uri")
    if not uri:
        raise ArtifactError(f"version {mv.version} of {model_name!r} has no model_dir_uri tag")
    dst = Path(dst_path) if dst_path else Path(tempfile.mkdtemp(prefix=f"{model_name}-v{mv.version}-"))
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
