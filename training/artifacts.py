"""Training's side of the model directory: writing a fitted model, reading back its engine state.

The format itself (parts, checksums, the verified loader) is :mod:`shared.model.format`;
its names are re-exported here for existing callers. :func:`save_model_dir` turns a fitted
model (anything with the attributes of :class:`training.model.SparseLogisticRegression`)
into model.json's metadata and writes the directory, optionally with the aggregate snapshot
(``aggregates.parquet``) and the engine's state (``engine_state.npz``, role ``ignore``: a
later ``ctr train --update`` continues from it, the bidder never reads it).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from shared.model.format import (  # noqa: F401  (re-exported: the format's names, as before)
    AGGREGATES_FILE,
    CHECKSUMS_FILE,
    ENGINE_STATE_FILE,
    FORMAT,
    FORMAT_KEYS,
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILES,
    PARTS,
    SPEC_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    ModelDirError,
    load_model_dir,
    sha256_file,
    verify_model_dir,
    write_model_dir,
)
from shared.model.scoring import sigmoid  # noqa: F401  (re-exported)
from shared.featurize.spec import MAX_SPEC_BYTES, SpecError
from shared.limits import read_bytes_limited

__all__ = [
    "AGGREGATES_FILE", "CHECKSUMS_FILE", "ENGINE_STATE_FILE", "FORMAT", "FORMAT_VERSION", "META_FILE", "MODEL_FILES",
    "PARTS", "RESERVED_KEYS", "SPEC_FILE", "WEIGHTS_FILE", "LoadedModel", "ModelDirError", "load_engine_state",
    "load_model_dir", "model_metadata", "save_model_dir", "sha256_file", "sigmoid", "verify_model_dir",
]

# model.json keys written by save_model_dir; ``extra`` may not override them.
RESERVED_KEYS = FORMAT_KEYS | frozenset({
    "fingerprint", "created_at", "model_class", "hyperparameters",
    "downsample_rate", "raw_intercept", "n_nonzero", "n_features", "bits", "solver", "fit_seconds",
    "n_train_rows", "n_fit_rows", "converged",
})


def _spec_bytes(spec_path_or_text) -> bytes:
    """The spec TOML as bytes: a Path (or a one-line str naming an existing file) is read;
    any other str is the TOML text itself."""
    if isinstance(spec_path_or_text, bytes):
        return spec_path_or_text
    if isinstance(spec_path_or_text, os.PathLike):
        return read_bytes_limited(spec_path_or_text, MAX_SPEC_BYTES, "feature spec", SpecError)
    if isinstance(spec_path_or_text, str):
        if "\n" not in spec_path_or_text and Path(spec_path_or_text).is_file():
            return read_bytes_limited(spec_path_or_text, MAX_SPEC_BYTES, "feature spec", SpecError)
        return spec_path_or_text.encode("utf-8")
    raise TypeError(f"spec must be a path or TOML text, got {type(spec_path_or_text).__name__}")


def model_metadata(model, fingerprint: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """model.json's content for a fitted model (without the format's own keys), ``extra``
    merged in (conventional keys: ``metrics``, ``data_reference``; not :data:`RESERVED_KEYS`)."""
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
    meta = {
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
    return meta


_SAVEZ_PARAMETERS = frozenset({"file", "allow_pickle"})


def _state_arrays(engine_state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The engine state as plain numpy arrays (no object arrays: they would need pickle)."""
    arrays = {}
    for name, value in engine_state.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"engine_state names must be identifiers, got {name!r}")
        if name in _SAVEZ_PARAMETERS:  # np.savez would take it as its own argument, not an array
            raise ValueError(f"engine_state name {name!r} is reserved by np.savez")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(f"engine_state[{name!r}] is an object array; only plain numeric arrays are stored")
        arrays[name] = arr
    return arrays


def save_model_dir(
    model,
    spec_path_or_text,
    fingerprint: str,
    out_dir,
    extra: Mapping[str, Any] | None = None,
    aggregates: Any | None = None,
    engine_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a fitted model as a plain-file model directory and return its path.

    ``extra`` is merged into model.json (see :func:`model_metadata`). ``out_dir`` must not
    exist or be empty; the directory appears atomically (:func:`shared.model.format.write_model_dir`).
    ``aggregates`` (a pyarrow Table from :func:`feature_store.aggregates.export_snapshot`) is
    stored as ``aggregates.parquet``: the aggregate-feature snapshot the bidder loads with
    the model. ``engine_state`` (name -> numpy array) is stored as ``engine_state.npz``
    (``np.savez``, no pickle) with the role ``ignore``: read back by :func:`load_engine_state`.
    """
    meta = model_metadata(model, fingerprint, extra)
    spec = _spec_bytes(spec_path_or_text)
    parts = {}
    if aggregates is not None:
        def write_aggregates(path: Path) -> None:
            import pyarrow.parquet as pq

            pq.write_table(aggregates, path)

        parts[AGGREGATES_FILE] = write_aggregates
    if engine_state is not None:
        arrays = _state_arrays(engine_state)

        def write_state(path: Path) -> None:
            with open(path, "wb") as f:
                # numpy's stub matches **arrays against savez's `allow_pickle: bool` too (numpy >= 2.1;
                # _state_arrays refuses that name); passing allow_pickle would break numpy 1.26
                np.savez(f, **arrays)  # type: ignore[arg-type]

        parts[ENGINE_STATE_FILE] = write_state
    return write_model_dir(out_dir, indices=model.indices_, weights=model.weights_, intercept=model.intercept_,
                           bits=int(model.bits_), spec=spec, meta=meta, parts=parts)


def load_engine_state(model_dir) -> dict[str, np.ndarray] | None:
    """The engine state saved with a model (name -> array), or None when it has none.
    Every checksum of the directory is verified first; read with ``allow_pickle=False``."""
    model_dir = Path(model_dir)
    checksums = verify_model_dir(model_dir)
    if ENGINE_STATE_FILE not in checksums:
        return None
    try:
        with np.load(model_dir / ENGINE_STATE_FILE, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ModelDirError(f"{model_dir}: {ENGINE_STATE_FILE} is unreadable: {exc}") from None
