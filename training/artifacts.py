"""The trained model on disk as plain, non-pickle files.

A model directory holds exactly these files::

    weights.npz        numpy arrays (read with allow_pickle=False):
                         indices    int64[nnz]   sorted column indices of non-zero weights
                         weights    float64[nnz] the weights
                         intercept  float64[]    recalibrated intercept (downsampling already
                                                 folded in: score = sigmoid(x . w + intercept))
                         n_features int64[]      = 2 ** bits
                         bits       int64[]
    feature_spec.toml  the featurization spec, byte for byte as given
    model.json         {"format": "ctr-sparse-lr", "format_version": 1, "fingerprint", "created_at",
                        "model_class", "hyperparameters", "downsample_rate", "raw_intercept",
                        "n_nonzero", "n_features", "bits", "solver", "fit_seconds",
                        "metrics", "data_reference", ...extra}
    checksums.json     {"weights.npz": "<sha256 hex>", "feature_spec.toml": ..., "model.json": ...}

:func:`load_model_dir` verifies every checksum before reading anything else and
refuses a directory with a missing, unlisted-required or altered file, naming it.
The bidder can read these files with numpy + json + tomllib alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:  # the bidder reads model directories without importing scikit-learn
    from training.model import SparseLogisticRegression

FORMAT = "ctr-sparse-lr"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.npz"
SPEC_FILE = "feature_spec.toml"
META_FILE = "model.json"
CHECKSUMS_FILE = "checksums.json"
AGGREGATES_FILE = "aggregates.parquet"  # optional: the aggregate-feature snapshot for serving
MODEL_FILES = (WEIGHTS_FILE, SPEC_FILE, META_FILE)
# model.json keys written by save_model_dir; ``extra`` may not override them.
RESERVED_KEYS = frozenset({
    "format", "format_version", "fingerprint", "created_at", "model_class", "hyperparameters",
    "downsample_rate", "raw_intercept", "n_nonzero", "n_features", "bits", "solver", "fit_seconds",
    "n_train_rows", "n_fit_rows", "converged",
})


def sigmoid(z):
    """Numerically stable logistic function on arrays (no overflow for large |z|):
    ``exp(-log(1 + exp(-z)))`` with ``np.logaddexp``, one pass and no masks (the bidder
    calls it for every request)."""
    return np.exp(-np.logaddexp(0.0, np.negative(np.asarray(z, dtype=np.float64))))


class ModelDirError(ValueError):
    """A model directory that cannot be trusted or read (missing file, bad checksum, bad content)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _spec_bytes(spec_path_or_text) -> bytes:
    """The spec TOML as bytes: a Path (or a one-line str naming an existing file) is read;
    any other str is the TOML text itself."""
    if isinstance(spec_path_or_text, bytes):
        return spec_path_or_text
    if isinstance(spec_path_or_text, os.PathLike):
        return Path(spec_path_or_text).read_bytes()
    if isinstance(spec_path_or_text, str):
        if "\n" not in spec_path_or_text and Path(spec_path_or_text).is_file():
            return Path(spec_path_or_text).read_bytes()
        return spec_path_or_text.encode("utf-8")
    raise TypeError(f"spec must be a path or TOML text, got {type(spec_path_or_text).__name__}")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (datetime,)):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _finite_or_null(obj):
    """Replace NaN/inf floats by None so the files are standard JSON (metrics such as
    AUC are NaN on a one-class window)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def _dumps(obj) -> str:
    return json.dumps(_finite_or_null(obj), indent=2, sort_keys=True, allow_nan=False, default=_json_default)


def save_model_dir(
    model: "SparseLogisticRegression",
    spec_path_or_text,
    fingerprint: str,
    out_dir,
    extra: Mapping[str, Any] | None = None,
    aggregates: "Any | None" = None,
) -> Path:
    """Write a fitted model as a plain-file model directory and return its path.

    ``extra`` is merged into model.json (conventional keys: ``metrics`` — e.g.
    ``{"test": evaluate(...)}`` — and ``data_reference``); it may not override the
    keys in ``RESERVED_KEYS``. ``out_dir`` must not exist or be empty; the files are
    written to a temporary sibling directory and renamed into place, so a reader
    never sees a half-written model. ``aggregates`` (a pyarrow Table from
    :func:`feature_store.aggregates.export_snapshot`) is stored as ``aggregates.parquet``
    with its checksum: the aggregate-feature snapshot the bidder loads with the model.
    """
    model._check_fitted()
    if not fingerprint or not isinstance(fingerprint, str):
        raise ValueError("fingerprint must be a non-empty string (the feature spec's fingerprint)")
    n_features = int(model.n_features_in_)
    bits = model.bits_
    if bits is None:
        raise ValueError(f"model has {n_features} features, not a power of two: not a hashed-feature model")
    extra = dict(extra or {})
    clash = RESERVED_KEYS & extra.keys()
    if clash:
        raise ValueError(f"extra may not set reserved model.json keys: {sorted(clash)}")

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"model directory {out_dir} already exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    spec = _spec_bytes(spec_path_or_text)

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "hyperparameters": model.hyperparameters(),
        "downsample_rate": float(model.downsample_rate),
        "raw_intercept": float(model.raw_intercept_),
        "n_nonzero": int(model.n_nonzero_),
        "n_features": n_features,
        "bits": int(bits),
        "solver": model.solver_,
        "fit_seconds": float(model.fit_seconds_),
        "n_train_rows": int(model.n_train_rows_),
        "n_fit_rows": int(model.n_fit_rows_),
        "converged": bool(model.converged_),
        "metrics": {},
        "data_reference": {},
    }
    meta.update(extra)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with open(tmp / WEIGHTS_FILE, "wb") as f:
            np.savez(
                f,
                indices=np.asarray(model.indices_, dtype=np.int64),
                weights=np.asarray(model.weights_, dtype=np.float64),
                intercept=np.float64(model.intercept_),
                n_features=np.int64(n_features),
                bits=np.int64(bits),
            )
        (tmp / SPEC_FILE).write_bytes(spec)
        (tmp / META_FILE).write_text(_dumps(meta) + "\n", encoding="utf-8")
        names = list(MODEL_FILES)
        if aggregates is not None:
            import pyarrow.parquet as pq

            pq.write_table(aggregates, tmp / AGGREGATES_FILE)
            names.append(AGGREGATES_FILE)
        checksums = {name: sha256_file(tmp / name) for name in names}
        (tmp / CHECKSUMS_FILE).write_text(_dumps(checksums) + "\n", encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def verify_model_dir(model_dir) -> dict[str, str]:
    """Check every file against checksums.json; return the checksums or raise ModelDirError."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    try:
        checksums = json.loads((model_dir / CHECKSUMS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"{model_dir}: {CHECKSUMS_FILE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{model_dir}: {CHECKSUMS_FILE} is not valid JSON: {exc}") from None
    if not isinstance(checksums, dict):
        raise ModelDirError(f"{model_dir}: {CHECKSUMS_FILE} must map file names to sha256 digests")
    for name in MODEL_FILES:
        if name not in checksums:
            raise ModelDirError(f"{model_dir}: {CHECKSUMS_FILE} has no checksum for {name}")
    for name, expected in checksums.items():
        if Path(name).name != name:
            raise ModelDirError(f"{model_dir}: {CHECKSUMS_FILE} names a path outside the directory: {name!r}")
        path = model_dir / name
        if not path.is_file():
            raise ModelDirError(f"{model_dir}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelDirError(
                f"{model_dir}: checksum mismatch for {name}: expected sha256 {expected}, found {actual}"
            )
    return checksums


@dataclass
class LoadedModel:
    """A verified model directory, ready to score.

    ``dense_weights`` is a float32 array of length ``n_features`` (zeros except the
    learned non-zeros), so scoring a record is a gather over its non-zeros: O(nnz).
    """

    path: Path
    intercept: float
    n_features: int
    bits: int
    indices: np.ndarray
    weights: np.ndarray
    dense_weights: np.ndarray
    spec_text: str
    metadata: dict[str, Any]
    checksums: dict[str, str] = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return self.metadata["fingerprint"]

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC_FILE

    def aggregate_snapshot(self):
        """The aggregate-feature snapshot stored with the model (checksummed at load), or None."""
        if AGGREGATES_FILE not in self.checksums:
            return None
        import pyarrow.parquet as pq

        from shared.aggregates import AggregateSnapshot

        return AggregateSnapshot.from_arrow(pq.read_table(self.path / AGGREGATES_FILE))

    def margin(self, indices, values=None) -> float:
        """Logit of one record given the column indices (and values; default all 1.0)
        of its non-zeros, e.g. ``Featurizer.transform_record(record)``."""
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            if idx.size:
                raise TypeError(f"feature indices must be integers, got {idx.dtype}")
            idx = idx.astype(np.int64)  # an empty list: no features, just the intercept
        # fancy indexing would silently wrap negative indices, so check the range
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_features):
            raise ValueError(f"feature index out of range [0, {self.n_features})")
        w = self.dense_weights[idx]
        if values is None:
            return self.intercept + float(w.sum(dtype=np.float64))
        v = np.asarray(values)
        if v.shape != idx.shape:
            raise ValueError(f"{idx.size} indices but {v.size} values")
        return self.intercept + float(np.dot(w, v))

    def score(self, indices, values=None) -> float:
        """Click probability of one record (sparse row given as indices + values)."""
        z = self.margin(indices, values)
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        ez = math.exp(z)
        return ez / (1.0 + ez)

    def score_batch(self, X) -> np.ndarray:
        """Click probabilities of every row of a CSR matrix with ``n_features`` columns.

        Like :meth:`score`, the dot products run in the dtype of the data (float32 for the
        featurizer's output) against the float32 weights; the two agree to ~1e-6 relative."""
        if not sp.issparse(X):
            raise TypeError(f"score_batch needs a scipy.sparse matrix, got {type(X).__name__}")
        if X.shape[1] != self.n_features:
            raise ValueError(f"matrix has {X.shape[1]} columns, the model has {self.n_features}")
        X = X.tocsr()
        z = np.asarray(X @ self.dense_weights, dtype=np.float64).ravel() + self.intercept
        return sigmoid(z)


def load_model_dir(model_dir) -> LoadedModel:
    """Verify checksums, then read a model directory (no pickle: ``allow_pickle=False``)."""
    model_dir = Path(model_dir)
    checksums = verify_model_dir(model_dir)
    try:
        meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{model_dir}: {META_FILE} is not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(
            f"{model_dir}: {META_FILE} declares format {meta.get('format')!r} v{meta.get('format_version')!r}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    try:
        with np.load(model_dir / WEIGHTS_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("indices", "weights", "intercept", "n_features", "bits")}
    except (KeyError, ValueError, OSError) as exc:
        raise ModelDirError(f"{model_dir}: {WEIGHTS_FILE} is unreadable: {exc}") from None
    indices = arrays["indices"].astype(np.int64, copy=False)
    weights = arrays["weights"].astype(np.float64, copy=False)
    n_features = int(arrays["n_features"])
    bits = int(arrays["bits"])
    intercept = float(arrays["intercept"])
    problems = []
    if n_features != 1 << bits:
        problems.append(f"n_features {n_features} != 2**bits (bits={bits})")
    if indices.ndim != 1 or weights.shape != indices.shape:
        problems.append(f"indices {indices.shape} and weights {weights.shape} differ")
    elif indices.size and (indices.min() < 0 or indices.max() >= n_features or np.any(np.diff(indices) <= 0)):
        problems.append("indices must be strictly increasing and within [0, n_features)")
    if not (np.isfinite(weights).all() and math.isfinite(intercept)):
        problems.append("non-finite weights or intercept")
    if meta.get("n_features") != n_features or meta.get("bits") != bits:
        problems.append(f"{META_FILE} says n_features={meta.get('n_features')}, bits={meta.get('bits')}")
    if problems:
        raise ModelDirError(f"{model_dir}: {WEIGHTS_FILE} is inconsistent: " + "; ".join(problems))
    dense = np.zeros(n_features, dtype=np.float32)
    dense[indices] = weights
    return LoadedModel(
        path=model_dir,
        intercept=intercept,
        n_features=n_features,
        bits=bits,
        indices=indices,
        weights=weights,
        dense_weights=dense,
        spec_text=(model_dir / SPEC_FILE).read_text(encoding="utf-8"),
        metadata=meta,
        checksums=checksums,
    )
