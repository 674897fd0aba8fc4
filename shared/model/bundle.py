"""The per-segment bundle: a model directory whose global model is joined by per-segment weights.

On top of the global model's parts a bundle has two (both checksummed, role ``apply``)::

    segments.npz    numpy arrays (np.load(..., allow_pickle=False)), S segments sorted by key:
                      keys        <U  [S]      segment keys (the segment column's value as Spark
                                               casts it to string: ids as-is, integers in decimal)
                      intercepts  float64[S]   recalibrated intercepts
                      offsets     int64[S+1]   segment s owns entries offsets[s]:offsets[s+1]
                      indices     int64[nnz]   column indices, strictly increasing per segment
                      weights     float64[nnz]
                      n_train     int64[S]     training rows (train + validation) of the segment
                      positives   int64[S]     their clicks
                      bits        int64[]      2**bits columns, as the global model
    segments.json   {"format": "ctr-segment-bundle", "format_version": 1, "segment_column",
                     "run_id", "n_segments", "min_rows", "min_positives", "fallback": [keys],
                     "failed": [keys], "settings": {key: setting}, "created_at"}

A reader that does not know bundles still serves the global model. Scoring a record: if
``str(record[segment_column])`` is one of ``keys`` its probability is
``sigmoid(intercepts[s] + x . w_s)``, otherwise the global model's. Training writes bundles
(``training.segments.write_bundle``); the bidder reads them with :func:`load_bundle`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from shared.limits import read_text_limited
from shared.model.format import (MAX_MODEL_JSON_BYTES, SEGMENTS_FILE, SEGMENTS_META, LoadedModel, ModelDirError,
                                 StrPath, load_model_dir)
from shared.model.scoring import sigmoid, sorted_pairs_margin

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "SEGMENTS_FILE", "SEGMENTS_META", "SegmentBundle",
           "load_bundle"]

BUNDLE_FORMAT = "ctr-segment-bundle"
BUNDLE_FORMAT_VERSION = 1


@dataclass
class SegmentBundle:
    """Global model + per-segment weights, as read from a bundle directory (or assembled)."""

    segment_column: str
    bits: int
    keys: np.ndarray  # str, sorted, unique
    intercepts: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    n_train: np.ndarray
    positives: np.ndarray
    global_indices: np.ndarray
    global_weights: np.ndarray
    global_intercept: float
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.keys = np.asarray(self.keys, dtype=str)
        self._lookup = {k: i for i, k in enumerate(self.keys.tolist())}
        # composite (segment position, column) keys, sorted: one binary search scores every row
        seg_of_entry = np.repeat(np.arange(self.keys.size, dtype=np.int64), np.diff(self.offsets))
        self._composite = (seg_of_entry << np.int64(self.bits)) | self.indices.astype(np.int64)

    @property
    def n_features(self) -> int:
        """Columns of the feature space (``2**bits``)."""
        return 1 << int(self.bits)

    def positions(self, segments: Sequence[str | None]) -> npt.NDArray[np.int64]:
        """Bundle position of each segment key (-1: no segment model, use the global one)."""
        return np.fromiter((self._lookup.get(s, -1) if s is not None else -1 for s in segments),
                           dtype=np.int64, count=len(segments))

    def margins(self, positions: np.ndarray, col: np.ndarray, val: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
        """Logit of each row given as flat (column, value, row id) entries: the segment model
        of rows whose ``positions`` entry is >= 0, the global model for the others."""
        n = positions.size
        col = col.astype(np.int64, copy=False)
        glob = self.global_intercept + sorted_pairs_margin(col, val, row_ids, n, self.global_indices,
                                                           self.global_weights)
        has = positions >= 0
        if not has.any():
            return glob
        entry_pos = positions[row_ids]
        sel = entry_pos >= 0
        seg = sorted_pairs_margin((entry_pos[sel] << np.int64(self.bits)) | col[sel], val[sel], row_ids[sel], n,
                                  self._composite, self.weights)
        seg += np.where(has, self.intercepts[np.maximum(positions, 0)], 0.0)
        return np.where(has, seg, glob)

    def score_batch(self, segments: Sequence[str | None], X: "sp.spmatrix | sp.sparray") -> npt.NDArray[np.float64]:
        """Click probabilities of CSR rows ``X`` whose segment keys are ``segments``."""
        X = sp.csr_matrix(X)
        if X.shape[1] != self.n_features:
            raise ValueError(f"matrix has {X.shape[1]} columns, the bundle has {self.n_features}")
        row_ids = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        return sigmoid(self.margins(self.positions(list(segments)), X.indices, X.data, row_ids))

    def score(self, segment: str | None, indices: npt.ArrayLike, values: npt.ArrayLike | None = None) -> float:
        """One record (the bidder's path): its segment key and featurized (indices, values)."""
        idx = np.asarray(indices, dtype=np.int64)
        val = np.ones(idx.size) if values is None else np.asarray(values, dtype=np.float64)
        pos = np.array([self._lookup.get(segment, -1) if segment is not None else -1], dtype=np.int64)
        return float(sigmoid(self.margins(pos, idx, val, np.zeros(idx.size, dtype=np.int64)))[0])

    def arrays(self) -> dict[str, np.ndarray | np.int64]:
        """The arrays of ``segments.npz`` (``bits`` a numpy scalar, saved as a 0-d array)."""
        return {"keys": self.keys, "intercepts": self.intercepts, "offsets": self.offsets, "indices": self.indices,
                "weights": self.weights, "n_train": self.n_train, "positives": self.positives,
                "bits": np.int64(self.bits)}


def load_bundle(path: StrPath, loaded: LoadedModel | None = None) -> SegmentBundle:
    """Verify every checksum (global and segment files) and read a bundle directory.
    ``loaded``: the directory's :func:`~shared.model.format.load_model_dir` result, when the
    caller already has it (its checksums are then not verified a second time)."""
    path = Path(path)
    if loaded is None:
        loaded = load_model_dir(path)  # verifies all files listed in checksums.json
    if SEGMENTS_FILE not in loaded.checksums or SEGMENTS_META not in loaded.checksums:
        raise ModelDirError(f"{path}: not a segment bundle ({SEGMENTS_FILE} / {SEGMENTS_META} not in checksums)")
    try:
        meta = json.loads(read_text_limited(path / SEGMENTS_META, MAX_MODEL_JSON_BYTES, "model file", ModelDirError))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: {SEGMENTS_META} is not valid JSON: {exc}") from None
    if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ModelDirError(f"{path}: {SEGMENTS_META} declares format {meta.get('format')!r} "
                            f"v{meta.get('format_version')!r}, expected {BUNDLE_FORMAT!r} v{BUNDLE_FORMAT_VERSION}")
    try:
        with np.load(path / SEGMENTS_FILE, allow_pickle=False) as z:
            a = {k: z[k] for k in ("keys", "intercepts", "offsets", "indices", "weights", "n_train", "positives",
                                   "bits")}
    except (KeyError, ValueError, OSError) as exc:
        raise ModelDirError(f"{path}: {SEGMENTS_FILE} is unreadable: {exc}") from None
    keys, offsets, indices = a["keys"].astype(str), a["offsets"].astype(np.int64), a["indices"].astype(np.int64)
    s, bits = keys.size, int(a["bits"])
    problems = []
    if bits != loaded.bits:
        problems.append(f"bits {bits} != the global model's {loaded.bits}")
    if s and np.any(keys[1:] <= keys[:-1]):
        problems.append("keys must be sorted and unique")
    if offsets.shape != (s + 1,) or offsets[0] != 0 or offsets[-1] != indices.size or np.any(np.diff(offsets) < 0):
        problems.append("offsets do not delimit the entries")
    elif indices.size:
        first = np.zeros(indices.size, dtype=bool)
        first[offsets[:-1][np.diff(offsets) > 0]] = True
        if indices.min() < 0 or indices.max() >= (1 << bits) or np.any((np.diff(indices) <= 0) & ~first[1:]):
            problems.append("indices must be strictly increasing per segment and within [0, 2**bits)")
    if a["weights"].shape != indices.shape or a["intercepts"].shape != (s,):
        problems.append("weights / intercepts have the wrong length")
    elif not (np.isfinite(a["weights"]).all() and np.isfinite(a["intercepts"]).all()):
        problems.append("non-finite weights or intercepts")
    if problems:
        raise ModelDirError(f"{path}: {SEGMENTS_FILE} is inconsistent: " + "; ".join(problems))
    extra = {k: v for k, v in meta.items() if k not in ("segment_column",)}
    return SegmentBundle(
        segment_column=meta["segment_column"], bits=bits, keys=keys, intercepts=a["intercepts"].astype(np.float64),
        offsets=offsets, indices=indices, weights=a["weights"].astype(np.float64),
        n_train=a["n_train"].astype(np.int64), positives=a["positives"].astype(np.int64),
        global_indices=loaded.indices, global_weights=loaded.weights, global_intercept=loaded.intercept,
        meta=extra, path=path,
    )
