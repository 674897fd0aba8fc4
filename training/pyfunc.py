"""The model as an MLflow pyfunc, so ``mlflow models serve`` can serve it.

The pyfunc's artifacts are the plain model directory (weights.npz, feature_spec.toml,
model.json, checksums.json); :class:`CtrPyfuncModel` verifies and reads them with
:func:`shared.model.format.load_model_dir` and featurizes raw fields with
``shared.featurize``. The model is logged as *code* (MLflow "models from code"):
MLflow stores this file and executes it at load time, where the ``set_model`` call
at the bottom provides the model object, so nothing is cloudpickled. The bidder does
not use this module at all; it reads the plain files directly.

The packages ``shared`` and ``training`` travel with the model as ``code_paths`` so
the model loads in an environment where ctr-platform is not installed.

Input: a pandas DataFrame with one column per raw field the spec reads (see
``shared/openrtb.py`` RAW_FIELDS; list-valued columns such as ``user_segments``
hold lists). Output: a DataFrame with one column, ``click_probability``. The model is
logged with this as its explicit signature (:func:`model_signature`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, ColSpec, Schema

from shared.featurize import FeatureSpec, Featurizer
from shared.model.format import check_spec, load_model_dir
from training.environment import package_versions

ARTIFACT_KEY = "model_dir"
OUTPUT_COLUMN = "click_probability"
# What the pyfunc needs at serving time (pinned to the installed versions when logged).
SERVING_PACKAGES = ("mlflow", "numpy", "scipy", "pandas", "pyarrow", "mmh3")
_CODE_DIRS = ("shared", "training")
_REPO_DIR = Path(__file__).resolve().parents[1]


class CtrPyfuncModel(PythonModel):
    """Featurize raw fields with the model's own spec, then score with the plain weights."""

    def load_context(self, context):
        """Verify and read the model directory; refuse a spec that does not reproduce it."""
        model = load_model_dir(context.artifacts[ARTIFACT_KEY])
        self.model = model
        self.featurizer = Featurizer(check_spec(model))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Click probability per row of a frame of raw fields, in the ``click_probability`` column."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        X = self.featurizer.transform(frame)
        return pd.DataFrame({OUTPUT_COLUMN: self.model.score_batch(X)}, index=frame.index)


def model_signature(spec: FeatureSpec) -> ModelSignature:
    """The pyfunc's signature: one required column per raw field ``spec`` reads, and the
    ``click_probability`` (double) out.

    The input columns are typed ``Any`` (``Array(Any)`` would refuse tuples and NaN for a
    missing list): the featurizer, not MLflow, checks the values, so the pyfunc accepts
    exactly what the plain-file scorer accepts (a categorical may be a string or an
    integer, a numeric field a number or a decimal string, any of them null)."""
    inputs = Schema([ColSpec(AnyType(), f.name) for f in spec.fields])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", OUTPUT_COLUMN)]))


def input_example(spec: FeatureSpec) -> pd.DataFrame:
    """One made-up row of the raw fields ``spec`` reads (logged with the model; MLflow scores
    it once at logging time to check the logged model serves)."""
    values = {"categorical": "example", "numeric": 1.0, "multivalued": ["example"]}
    return pd.DataFrame({f.name: [values[f.kind]] for f in spec.fields})


def _pyfunc_kwargs(model_dir, **kwargs) -> dict:
    model_dir = Path(model_dir)
    model = load_model_dir(model_dir)  # refuse to package a directory that fails its checksums
    spec = FeatureSpec.from_toml(model.spec_text, source=str(model.spec_path))
    versions = package_versions(SERVING_PACKAGES)
    return {
        "python_model": str(Path(__file__).resolve()),  # models from code: no cloudpickle
        "artifacts": {ARTIFACT_KEY: str(model_dir)},
        "code_paths": [str(_REPO_DIR / d) for d in _CODE_DIRS],
        "pip_requirements": [f"{k}=={v}" for k, v in versions.items() if v != "not-installed"],
        # explicit, so MLflow does not try (and fail, with a warning) to infer one
        "signature": model_signature(spec),
        "input_example": input_example(spec),
        **kwargs,
    }


def log_pyfunc_model(model_dir, name: str = "model", **kwargs):
    """``mlflow.pyfunc.log_model`` of a plain model directory (in the active run, if
    any); returns MLflow's ModelInfo (``.model_uri`` is ``models:/<model_id>``).
    Extra keyword arguments (e.g. ``input_example``, ``registered_model_name``) go
    to ``mlflow.pyfunc.log_model``."""
    # MLflow scores the input example once to check the logged model serves; its INFO line
    # saying so is not the command's output (warnings still show).
    log = logging.getLogger("mlflow.pyfunc")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        return mlflow.pyfunc.log_model(name=name, **_pyfunc_kwargs(model_dir, **kwargs))
    finally:
        log.setLevel(level)


def save_pyfunc_model(model_dir, path, **kwargs) -> Path:
    """``mlflow.pyfunc.save_model`` of a plain model directory to a local ``path``
    (servable with ``mlflow models serve -m <path>``)."""
    mlflow.pyfunc.save_model(path=str(path), **_pyfunc_kwargs(model_dir, **kwargs))
    return Path(path)


# Models from code: when MLflow executes this file to load the model, this provides it.
mlflow.models.set_model(CtrPyfuncModel())
