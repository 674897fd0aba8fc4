"""Writing a segment bundle: the global model's model directory plus ``segments.npz`` / ``segments.json``.

:func:`assemble_bundle` builds the :class:`~shared.model.bundle.SegmentBundle` from the
``segment_models`` table's ``ok`` rows and the global model; :func:`write_bundle` writes it
as one checksummed model directory, so a bundle is registered and served like any model
(a reader that knows no segments sees the global model). The format and its verified
reader are :mod:`shared.model.bundle`, which the bidder uses; this is the writer.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from shared.featurize import FeatureSpec
from shared.model.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, SEGMENTS_FILE, SEGMENTS_META, SegmentBundle
from shared.model.format import dumps, write_model_dir
from training.artifacts import model_metadata
from training.segment_table import GLOBAL_KEY, OK

if TYPE_CHECKING:
    from training.distributed import SparseWeights


def assemble_bundle(rows: Sequence, global_model: SparseWeights, segment_column: str,
                    meta: Mapping[str, Any] | None = None) -> SegmentBundle:
    """A bundle from the table's ``ok`` rows (segment, intercept, indices, weights, n_train,
    positives_train) and the global model."""
    ok = sorted((r for r in rows if r["status"] == OK and r["segment"] != GLOBAL_KEY), key=lambda r: r["segment"])
    lengths = [len(r["indices"]) for r in ok]
    return SegmentBundle(
        segment_column=segment_column, bits=int(global_model.bits_),
        keys=np.array([r["segment"] for r in ok], dtype=str),
        intercepts=np.array([r["intercept"] for r in ok], dtype=np.float64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        indices=np.concatenate([np.asarray(r["indices"], np.int64) for r in ok]) if ok else np.zeros(0, np.int64),
        weights=np.concatenate([np.asarray(r["weights"], np.float64) for r in ok]) if ok else np.zeros(0),
        n_train=np.array([r["n_train"] for r in ok], dtype=np.int64),
        positives=np.array([r["positives_train"] for r in ok], dtype=np.int64),
        global_indices=global_model.indices_, global_weights=global_model.weights_,
        global_intercept=global_model.intercept_, meta=dict(meta or {}),
    )


def write_bundle(bundle: SegmentBundle, global_model: SparseWeights, spec: FeatureSpec, out_dir,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write the bundle directory (:mod:`shared.model.bundle`): the global model's parts plus
    ``segments.npz`` / ``segments.json``, all checksummed; it appears atomically. Returns its path."""
    seg_meta = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                "segment_column": bundle.segment_column, "n_segments": int(bundle.keys.size),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **bundle.meta}

    arrays: dict[str, Any] = bundle.arrays()

    def write_segments(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    def write_segments_meta(path: Path) -> None:
        path.write_text(dumps(seg_meta) + "\n", encoding="utf-8")

    return write_model_dir(out_dir, indices=global_model.indices_, weights=global_model.weights_,
                           intercept=global_model.intercept_, bits=int(global_model.bits_),
                           spec=spec.to_toml().encode("utf-8"),
                           meta=model_metadata(global_model, spec.fingerprint, extra),
                           parts={SEGMENTS_FILE: write_segments, SEGMENTS_META: write_segments_meta})
