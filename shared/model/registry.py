"""The model registry's vocabulary, in one place: model names, aliases, tag keys, and fetching
a registered version's plain files.

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

#: Registered model names.
DEFAULT_MODEL_NAME = "ctr-model"
SEGMENT_MODEL_NAME = "ctr-segment-model"
#: The alias the bidder serves and the gate moves.
CHAMPION = "champion"


class Tag:
    """Tag keys on registered versions (and, where said, on runs)."""

    MODEL_DIR_URI = "model_dir_uri"  # where the version's plain model directory is
    FEATURE_FINGERPRINT = "feature_fingerprint"
    TEST_WINDOW = "test_window"
    TEST_LOG_LOSS = "test_log_loss"
    GIT_COMMIT = "git_commit"
    REGISTERED_VERSION = "registered_version"  # on the training run
    CHAMPION_PREVIOUS = "champion.previous"
    CHAMPION_PROMOTED_AT = "champion.promoted_at"
    CHAMPION_PROMOTED_REASON = "champion.promoted_reason"
    GATE_DECISION = "gate.decision"  # on the version and on its run
    GATE_REASON = "gate.reason"
    GATE_PREFIX = "gate."  # gate.* figures of the promotion decision
    LINEAGE_PREFIX = "lineage."  # lineage.* of a warm-started update


def download_model_dir(settings: Settings, model_name: str, ref: str = CHAMPION,
                       dst_path: str | os.PathLike[str] | None = None) -> Path:
    """Download the plain model files of a version (``ref``: alias name or version
    number) into ``dst_path`` (a new temp dir by default); returns the directory.
    Read it with :func:`shared.model.format.load_model_dir`, which verifies checksums."""
    mlflow = configure_mlflow(settings)
    client = mlflow.MlflowClient()
    mv = client.get_model_version(model_name, ref) if str(ref).isdigit() \
        else client.get_model_version_by_alias(model_name, ref)
    uri = mv.tags.get(Tag.MODEL_DIR_URI)
    if not uri:
        raise ArtifactError(f"version {mv.version} of {model_name!r} has no model_dir_uri tag")
    dst = Path(dst_path) if dst_path else Path(tempfile.mkdtemp(prefix=f"{model_name}-v{mv.version}-"))
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
