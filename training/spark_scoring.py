"""Scoring featurized rows in Spark with the bidder's arithmetic (float64 sparse margin, sigmoid).

:func:`predict_spark` scores with one model's sparse weights, :func:`predict_bundle_spark`
with a segment bundle (the segment's model where the bundle has one, its global model
otherwise), both Arrow to Arrow inside ``mapInArrow``; :func:`collect_predictions` brings
(label, probability) to the driver for :func:`training.metrics.evaluate`. The engines
(:mod:`training.distributed`, :mod:`training.segments`) and the champion gate all score
through here; it depends on ``shared/`` only, so any of them can import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

import numpy as np

from shared.model.bundle import SegmentBundle
from shared.model.scoring import sigmoid, sorted_pairs_margin

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame


class SparseModel(Protocol):
    """What :func:`predict_spark` reads of a model: sorted non-zero weights and the intercept."""

    indices_: np.ndarray
    weights_: np.ndarray

    @property
    def intercept_(self) -> float:
        """The intercept added to every margin."""
        ...


def flat_list(list_array: "pa.Array") -> tuple[np.ndarray, np.ndarray]:
    """(flat values, offsets from 0) of an Arrow list array, respecting slicing."""
    offsets = np.asarray(list_array.offsets, dtype=np.int64)
    flat = np.asarray(list_array.flatten())
    return flat, offsets - offsets[0]


def predict_spark(featurized: "DataFrame", model: SparseModel, keep: Sequence[str] = ("impression_id", "label"),
                  output_col: str = "p") -> "DataFrame":
    """``keep`` columns plus the click probability of each featurized row under ``model``'s
    sparse weights (the arithmetic the bidder does, in float64)."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    keep = list(keep)
    schema = StructType([featurized.schema[c] for c in keep] + [StructField(output_col, DoubleType(), False)])
    w_idx, w_val, intercept = model.indices_, model.weights_, model.intercept_
    bc = featurized.sparkSession.sparkContext.broadcast((w_idx, w_val, intercept))

    def score(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa

        idx, val, b0 = bc.value
        for b in batches:
            col, offsets = flat_list(b.column("indices"))
            vals, _ = flat_list(b.column("values"))
            row_ids = np.repeat(np.arange(b.num_rows), np.diff(offsets))
            p = sigmoid(b0 + sorted_pairs_margin(col, vals, row_ids, b.num_rows, idx, val))
            yield pa.RecordBatch.from_arrays([b.column(c) for c in keep] + [pa.array(p, pa.float64())],
                                             names=[*keep, output_col])

    return featurized.select(*keep, "indices", "values").mapInArrow(score, schema)


def predict_bundle_spark(featurized: "DataFrame", bundle: SegmentBundle, segment_col: str,
                         keep: Sequence[str] = ("impression_id", "label"), output_col: str = "p") -> "DataFrame":
    """``keep`` columns, the segment key (column ``segment_col``) and the bundle's click
    probability of each featurized row (segment model where the bundle has one, global model
    otherwise), in Spark."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    keep = list(dict.fromkeys([*keep, segment_col]))
    schema = StructType([featurized.schema[c] for c in keep] + [StructField(output_col, DoubleType(), False)])
    payload: dict[str, Any] = {
        "segment_column": bundle.segment_column, "bits": bundle.bits, "global_indices": bundle.global_indices,
        "global_weights": bundle.global_weights, "global_intercept": bundle.global_intercept,
        **{k: v for k, v in bundle.arrays().items() if k != "bits"}}
    bc = featurized.sparkSession.sparkContext.broadcast(payload)

    def score(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa

        b = SegmentBundle(**bc.value)
        for batch in batches:
            col, offsets = flat_list(batch.column("indices"))
            val, _ = flat_list(batch.column("values"))
            row_ids = np.repeat(np.arange(batch.num_rows), np.diff(offsets))
            pos = b.positions(batch.column(segment_col).to_pylist())
            p = sigmoid(b.margins(pos, col, val.astype(np.float64), row_ids))
            yield pa.RecordBatch.from_arrays([batch.column(c) for c in keep] + [pa.array(p, pa.float64())],
                                             names=[*keep, output_col])

    return featurized.select(*keep, "indices", "values").mapInArrow(score, schema)


def collect_predictions(predictions: "DataFrame", output_col: str = "p") -> tuple[np.ndarray, np.ndarray, "pa.Table"]:
    """(labels, probabilities, the collected Arrow table) of a :func:`predict_spark` frame."""
    table = predictions.toArrow()
    return (table.column("label").to_numpy().astype(np.int8), table.column(output_col).to_numpy(), table)
