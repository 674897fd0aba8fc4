"""The plain-file model directory: its declared parts, its writer and its verified loader.

A model directory holds non-pickle files, each a *part* declared in :data:`PARTS`::

    weights.npz        required, apply   numpy arrays (read with allow_pickle=False):
                                           indices    int64[nnz]   sorted column indices of non-zero weights
                                           weights    float64[nnz] the weights
                                           intercept  float64[]    recalibrated intercept (downsampling
                                                                   folded in: score = sigmoid(x . w + intercept))
                                           n_features int64[]      = 2 ** bits
                                           bits       int64[]
    feature_spec.toml  required, apply   the featurization spec, byte for byte as given
    model.json         required, apply   {"format": "ctr-sparse-lr", "format_version": 1, "parts",
                                          "fingerprint", "n_features", "bits", ...the writer's keys}
    aggregates.parquet optional, apply   the aggregate-feature snapshot served with the model
    segments.npz/.json optional, apply   a per-segment bundle (:mod:`shared.model.bundle`)
    engine_state.npz   optional, ignore  the training engine's saved state; a scorer need not read it
    checksums.json     {"<part>": "<sha256 hex>", ...} for every part written

model.json's ``"parts"`` maps every file written to its role (``apply`` or ``ignore``).
The reading rule (:func:`load_model_dir`): every checksum is verified first; then every
checksummed file must be a part this reader knows, or be declared ``ignore`` in "parts"
(a newer writer's training-only file: verified, then ignored); any other file is refused,
named (:class:`UnknownPartsError`), because scoring without it would be silently wrong.
Directories written before "parts" existed load unchanged. The bidder reads these files
with numpy + json + tomllib alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shared.aggregates import AggregateSnapshot
from shared.errors import ArtifactError
from shared.featurize import FeatureSpec, SpecError
from shared.featurize.spec import MAX_SPEC_BYTES
from shared.limits import MiB, read_text_limited
from shared.model.scoring import sigmoid, sparse_margin

FORMAT = "ctr-sparse-lr"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.npz"
SPEC_FILE = "feature_spec.toml"
META_FILE = "model.json"
CHECKSUMS_FILE = "checksums.json"
AGGREGATES_FILE = "aggregates.parquet"
SEGMENTS_FILE = "segments.npz"
SEGMENTS_META = "segments.json"
ENGINE_STATE_FILE = "engine_state.npz"
#: Largest JSON file of a model directory read (checksums.json, model.json, segments.json):
#: :class:`ModelDirError` above it. The spec file has the spec's own limit (``MAX_SPEC_BYTES``).
MAX_MODEL_JSON_BYTES = 64 * MiB

APPLY = "apply"    # a scorer must apply the part: a reader that cannot must refuse the model
IGNORE = "ignore"  # a scorer may ignore the part (it is still checksummed)
ROLES = (APPLY, IGNORE)
#: model.json keys the writer owns (the format's own; callers' metadata may not set them).
FORMAT_KEYS = frozenset({"format", "format_version", "parts"})


@dataclass(frozen=True)
class Part:
    """One file of a model directory: whether every model has it and what a scorer does with it."""

    name: str
    required: bool
    role: str
    description: str


#: The parts this version of the format knows.
PARTS: Mapping[str, Part] = {p.name: p for p in (
    Part(WEIGHTS_FILE, True, APPLY, "global weights and intercept (numpy npz)"),
    Part(SPEC_FILE, True, APPLY, "the featurization spec (TOML, byte for byte)"),
    Part(META_FILE, True, APPLY, "metadata: format, fingerprint, parts, hyperparameters, metrics"),
    Part(AGGREGATES_FILE, False, APPLY, "aggregate-feature snapshot the scorer enriches records with"),
    Part(SEGMENTS_FILE, False, APPLY, "per-segment weights of a segment bundle (numpy npz)"),
    Part(SEGMENTS_META, False, APPLY, "metadata of a segment bundle (JSON)"),
    Part(ENGINE_STATE_FILE, False, IGNORE, "the training engine's saved state (numpy npz), for updates"),
)}
MODEL_FILES = tuple(name for name, p in PARTS.items() if p.required)


class ModelDirError(ArtifactError):
    """A model directory that cannot be trusted or read (missing file, bad checksum, bad content)."""


class UnknownPartsError(ModelDirError):
    """Checksummed files the reader does not know and the writer did not declare ignorable."""

    def __init__(self, model_dir: StrPath, files: list[str]):
        super().__init__(f"{model_dir}: this reader does not know how to apply {', '.join(files)} "
                         f"(not a part of format {FORMAT!r} v{FORMAT_VERSION}, nor declared "
                         f"{IGNORE!r} in {META_FILE} \"parts\")")
        self.files = files


class SpecCheckError(ModelDirError):
    """A model whose spec cannot have produced its weights; ``reason``: ``bad_spec`` or
    ``fingerprint_mismatch``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- JSON as the format writes it ------------------------------------------------------------

def json_default(o: object) -> object:
    """``json.dumps`` fallback for numpy scalars and arrays, datetimes and paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def finite_or_null(obj: object) -> object:
    """Replace NaN/inf floats by None so the files are standard JSON (metrics such as
    AUC are NaN on a one-class window)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def dumps(obj: object) -> str:
    """The format's JSON text: sorted keys, indented, NaN as null."""
    return json.dumps(finite_or_null(obj), indent=2, sort_keys=True, allow_nan=False, default=json_default)


# -- writing --------------------------------------------------------------------------------

PartWriter = Callable[[Path], None]
#: A model directory argument: a path or a string naming one.
StrPath: TypeAlias = "str | os.PathLike[str]"


def write_model_dir(out_dir: StrPath, *, indices: np.ndarray, weights: np.ndarray, intercept: float, bits: int,
                    spec: bytes, meta: Mapping[str, Any], parts: Mapping[str, PartWriter] | None = None) -> Path:
    """Write a model directory atomically and return its path.

    ``meta`` is model.json without the format's own keys (:data:`FORMAT_KEYS`, set here);
    ``parts`` maps optional part names of :data:`PARTS` to functions writing that file at
    the given path. The files go to a temporary sibling directory, are checksummed, and the
    directory is renamed into place, so a reader never sees a half-written model.
    ``out_dir`` must not exist or be empty."""
    parts = dict(parts or {})
    for name in parts:
        part = PARTS.get(name)
        if part is None or part.required:
            raise ValueError(f"{name!r} is not an optional part of format {FORMAT!r} "
                             f"(optional parts: {', '.join(n for n, p in PARTS.items() if not p.required)})")
    clash = FORMAT_KEYS & meta.keys()
    if clash:
        raise ValueError(f"meta may not set the format's own model.json keys: {sorted(clash)}")
    n_features = 1 << int(bits)
    for key, value in (("n_features", n_features), ("bits", int(bits))):
        if key in meta and meta[key] != value:
            raise ValueError(f"meta says {key}={meta[key]!r}, the weights have {value}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"model directory {out_dir} already exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    names = [*MODEL_FILES, *parts]
    full_meta = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION, "n_features": n_features,
                 "bits": int(bits), "parts": {name: PARTS[name].role for name in names}}

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with open(tmp / WEIGHTS_FILE, "wb") as f:
            np.savez(f, indices=np.asarray(indices, dtype=np.int64), weights=np.asarray(weights, dtype=np.float64),
                     intercept=np.float64(intercept), n_features=np.int64(n_features), bits=np.int64(bits))
        (tmp / SPEC_FILE).write_bytes(spec)
        (tmp / META_FILE).write_text(dumps(full_meta) + "\n", encoding="utf-8")
        for name, write in parts.items():
            write(tmp / name)
            if not (tmp / name).is_file():
                raise RuntimeError(f"the writer of part {name} wrote no file")
        checksums = {name: sha256_file(tmp / name) for name in names}
        (tmp / CHECKSUMS_FILE).write_text(dumps(checksums) + "\n", encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# -- reading --------------------------------------------------------------------------------

def verify_model_dir(model_dir: StrPath) -> dict[str, str]:
    """Check every file against checksums.json; return the checksums or raise ModelDirError."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    try:
        checksums = json.loads(read_text_limited(model_dir / CHECKSUMS_FILE, MAX_MODEL_JSON_BYTES, "model file",
                                                 ModelDirError))
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


def part_roles(model_dir: StrPath, checksums: Mapping[str, str], meta: Mapping[str, Any]) -> dict[str, str]:
    """The role of every checksummed file under the reading rule (module docstring), or
    :class:`ModelDirError` (:class:`UnknownPartsError` naming the files no rule covers)."""
    declared = meta.get("parts", {})
    if not isinstance(declared, dict) or not all(
            isinstance(k, str) and v in ROLES for k, v in declared.items()):
        raise ModelDirError(f"{model_dir}: {META_FILE} \"parts\" must map file names to one of {ROLES}")
    undeclared = sorted(set(declared) - set(checksums))
    if undeclared:
        raise ModelDirError(f"{model_dir}: {META_FILE} declares {', '.join(undeclared)} but {CHECKSUMS_FILE} "
                            f"has no checksum for it")
    roles, unknown = {}, []
    for name in checksums:
        if name in PARTS:
            roles[name] = PARTS[name].role
        elif declared.get(name) == IGNORE:
            roles[name] = IGNORE
        else:
            unknown.append(name)
    if unknown:
        raise UnknownPartsError(model_dir, sorted(unknown))
    return roles


@dataclass
class LoadedModel:
    """A verified model directory, ready to score.

    ``dense_weights`` is a float32 array of length ``n_features`` (zeros except the
    learned non-zeros), so scoring a record is a gather over its non-zeros: O(nnz).
    ``parts`` maps every checksummed file to its role (``apply`` / ``ignore``).
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
    parts: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The spec fingerprint recorded when the model was trained."""
        fingerprint: str = self.metadata["fingerprint"]  # metadata is parsed JSON
        return fingerprint

    @property
    def spec_path(self) -> Path:
        """Where the model's spec file is."""
        return self.path / SPEC_FILE

    def aggregate_snapshot(self) -> AggregateSnapshot | None:
        """The aggregate-feature snapshot stored with the model (checksummed at load), or None."""
        if AGGREGATES_FILE not in self.checksums:
            return None
        import pyarrow.parquet as pq

        return AggregateSnapshot.from_arrow(pq.read_table(self.path / AGGREGATES_FILE))

    def margin(self, indices: npt.ArrayLike, values: npt.ArrayLike | None = None) -> float:
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
        v = None
        if values is not None:
            v = np.asarray(values)
            if v.shape != idx.shape:
                raise ValueError(f"{idx.size} indices but {v.size} values")
        rows = np.zeros(idx.size, dtype=np.intp)
        return self.intercept + float(sparse_margin(idx, v, rows, 1, self.dense_weights)[0])

    def score(self, indices: npt.ArrayLike, values: npt.ArrayLike | None = None) -> float:
        """Click probability of one record (sparse row given as indices + values)."""
        z = self.margin(indices, values)
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        ez = math.exp(z)
        return ez / (1.0 + ez)

    def score_batch(self, X: "sp.spmatrix | sp.sparray") -> npt.NDArray[np.float64]:
        """Click probabilities of every row of a sparse matrix with ``n_features`` columns,
        with the bidder's arithmetic (:func:`~shared.model.scoring.sparse_margin`)."""
        if not sp.issparse(X):
            raise TypeError(f"score_batch needs a scipy.sparse matrix, got {type(X).__name__}")
        if X.shape[1] != self.n_features:
            raise ValueError(f"matrix has {X.shape[1]} columns, the model has {self.n_features}")
        X = sp.csr_matrix(X)
        rows = np.repeat(np.arange(X.shape[0], dtype=np.intp), np.diff(X.indptr))
        z = sparse_margin(X.indices, X.data, rows, X.shape[0], self.dense_weights) + self.intercept
        return sigmoid(z)


def load_model_dir(model_dir: StrPath) -> LoadedModel:
    """Verify checksums and parts, then read a model directory (no pickle:
    ``allow_pickle=False``)."""
    model_dir = Path(model_dir)
    checksums = verify_model_dir(model_dir)
    try:
        meta = json.loads(read_text_limited(model_dir / META_FILE, MAX_MODEL_JSON_BYTES, "model file", ModelDirError))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{model_dir}: {META_FILE} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelDirError(f"{model_dir}: {META_FILE} must be a JSON object")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(
            f"{model_dir}: {META_FILE} declares format {meta.get('format')!r} v{meta.get('format_version')!r}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    roles = part_roles(model_dir, checksums, meta)
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
        spec_text=read_text_limited(model_dir / SPEC_FILE, MAX_SPEC_BYTES, "model file", ModelDirError),
        metadata=meta,
        checksums=checksums,
        parts=roles,
    )


def check_spec(model: LoadedModel) -> FeatureSpec:
    """The model's own spec, checked to reproduce its recorded fingerprint and column
    count (weights trained on other features would score garbage without any error);
    :class:`SpecCheckError` otherwise."""
    try:
        spec = FeatureSpec.from_toml(model.spec_text, source=str(model.spec_path))
    except SpecError as exc:
        raise SpecCheckError("bad_spec", f"{model.path}: feature spec is invalid: {exc}") from None
    if spec.fingerprint != model.fingerprint:
        raise SpecCheckError(
            "fingerprint_mismatch",
            f"{model.path}: the spec file's fingerprint {spec.fingerprint} does not reproduce the model's "
            f"recorded fingerprint {model.fingerprint}: the weights were trained on other features")
    if spec.num_features != model.n_features:
        raise SpecCheckError("bad_spec", f"{model.path}: spec hashes into 2**{spec.bits} columns, "
                                         f"the weights have {model.n_features}")
    return spec
