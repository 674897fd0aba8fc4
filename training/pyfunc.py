"""The model as an MLflow pyfunc, so ``mlflow models serve`` can serve it.

The pyfunc's artifacts are the plain model directory (weights.npz, feature_spec.toml,
model.json, checksums.json); :class:`CtrPyfuncModel` verifies and reads them with
:func:`training.artifacts.load_model_dir` and featurizes raw fields with
``shared.featurize``. The model is logged as *code* (MLflow "models from code"):
MLflow stores this file and executes it at load time, where the ``set_model`` call
at the bottom provides the model object, so nothing is cloudpickled. The bidder does
not use this module at all; it reads the plain files directly.

The packages ``shared`` and ``training`` travel with the model as ``code_paths`` so
the model loads in an environment where ctr-platform is not installed.

Input: a pandas DataFrame with one column per raw field the spec reads (see
``shared/openrtb.py`` RAW_FIELDS; list-valued columns such as ``user_segments``
hold lists). Output: a DataFrame with one column, ``click_probability``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from training.artifacts import load_model_dir

ARTIFACT_KEY = "model_dir"
OUTPUT_COLUMN = "click_probability"
# What the pyfunc needs at serving time (pinned to the installed versions when logged).
SERVING_PACKAGES = ("mlflow", "numpy", "scipy", "pandas", "pyarrow", "mmh3")
_CODE_DIRS = ("shared", "training")
_REPO_DIR = Path(__file__).resolve().parents[1]


class CtrPyfuncModel(mlflow.pyfunc.PythonModel):
    """Featurize raw fields with the model's own spec, then score with the plain weights."""

    def load_context(self, context):
        from shared.featurize import FeatureSpec, Featurizer

        model = load_model_dir(context.artifacts[ARTIFACT_KEY])
        spec = FeatureSpec.from_toml(model.spec_text, source=str(model.spec_path))
        if spec.fingerprint != model.fingerprint:
            raise ValueError(
                f"{model.spec_path}: spec fingerprint {spec.fingerprint} does not match the model's "
                f"{model.fingerprint}: the weights were trained on other features"
            )
        if spec.num_features != model.n_features:
            raise ValueError(f"spec hashes into 2**{spec.bits} columns, the model has {model.n_features}")
        self.model = model
        self.featurizer = Featurizer(spec)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        X = self.featurizer.transform(frame)
        return pd.DataFrame({OUTPUT_COLUMN: self.model.score_batch(X)}, index=frame.index)


def _pyfunc_kwargs(model_dir) -> dict:
    from training.tracking import package_versions

    model_dir = Path(model_dir)
    load_model_dir(model_dir)  # refuse to package a directory that fails its checksums
    versions = package_versions(SERVING_PACKAGES)
    return {
        "python_model": str(Path(__file__).resolve()),  # models from code: no cloudpickle
        "artifacts": {ARTIFACT_KEY: str(model_dir)},
        "code_paths": [str(_REPO_DIR / d) for d in _CODE_DIRS],
        "pip_requirements": [f"{k}=={v}" for k, v in versions.items() if v != "not-installed"],
    }


def log_pyfunc_model(model_dir, name: str = "model", **kwargs):
    """``mlflow.pyfunc.log_model`` of a plain model directory (in the active run, if
    any); returns MLflow's ModelInfo (``.model_uri`` is ``models:/<model_id>``).
    Extra keyword arguments (e.g. ``input_example``, ``registered_model_name``) go
    to ``mlflow.pyfunc.log_model``."""
    return mlflow.pyfunc.log_model(name=name, **_pyfunc_kwargs(model_dir), **kwargs)


def save_pyfunc_model(model_dir, path, **kwargs) -> Path:
    """``mlflow.pyfunc.save_model`` of a plain model directory to a local ``path``
    (servable with ``mlflow models serve -m <path>``)."""
    mlflow.pyfunc.save_model(path=str(path), **_pyfunc_kwargs(model_dir), **kwargs)
    return Path(path)


# Models from code: when MLflow executes this file to load the model, this provides it.
mlflow.models.set_model(CtrPyfuncModel())
