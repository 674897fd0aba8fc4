"""The Spark path: the batch featurizer inside ``mapInArrow``, never Spark's own hashing.

Spark's ``hash()`` (Murmur3 with Spark's own byte handling) and ``xxhash64`` give other
numbers than ``mmh3`` for the same string, so a model trained on them would be served
with different features. Here every Arrow batch goes through
:meth:`Featurizer.transform` - the code the trainer and the bidder use - and comes
back as two columns, ``indices: array<int>`` and ``values: array<float>``.
pyspark is imported inside the functions only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from shared.featurize.featurizer import Featurizer
from shared.featurize.spec import FeatureSpec, SpecError, load_spec

if TYPE_CHECKING:
    import pyarrow as pa
    import scipy.sparse as sp
    from pyspark.sql import DataFrame


def _csr_to_arrays(m: "sp.csr_matrix") -> tuple["pa.Array", "pa.Array"]:
    import pyarrow as pa

    offsets = pa.array(m.indptr.astype(np.int32))
    indices = pa.ListArray.from_arrays(offsets, pa.array(m.indices.astype(np.int32, copy=False)))
    values = pa.ListArray.from_arrays(offsets, pa.array(m.data.astype(np.float32, copy=False)))
    return indices, values


def featurize_spark(df: "DataFrame", spec: FeatureSpec | str, keep: Sequence[str] = (),
                    indices_col: str = "indices", values_col: str = "values",
                    block_rows: int = 100_000) -> "DataFrame":
    """``df`` featurized with ``spec``: the ``keep`` columns (e.g. a label, an id) followed by
    ``indices_col`` (array<int>, ascending) and ``values_col`` (array<float>).
    ``block_rows``: incoming Arrow batches are featurized together up to this many rows.

    Raises :class:`SpecError` when ``df`` lacks a spec field or a ``keep`` column."""
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, StructField, StructType

    spec = load_spec(spec)
    spec.validate_columns(df.columns)
    missing_keep = [c for c in keep if c not in df.columns]
    if missing_keep:
        raise SpecError(f"keep names unknown column(s) {', '.join(missing_keep)}")
    clash = {indices_col, values_col} & set(keep)
    if clash:
        raise SpecError(f"keep column(s) {', '.join(sorted(clash))} would be overwritten by the output")
    keep = list(dict.fromkeys(keep))
    inputs = list(dict.fromkeys([*keep, *spec.input_columns]))
    schema = StructType([df.schema[c] for c in keep] + [
        StructField(indices_col, ArrayType(IntegerType(), containsNull=False), nullable=False),
        StructField(values_col, ArrayType(FloatType(), containsNull=False), nullable=False),
    ])

    def featurize_batches(batches: Iterable["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import pyarrow as pa

        featurizer = Featurizer(spec)  # once per task: tables and hashes precomputed here

        def flush(pending: list["pa.RecordBatch"]) -> "pa.RecordBatch":
            table = pa.Table.from_batches(pending)
            indices, values = _csr_to_arrays(featurizer.transform(table))
            arrays = [table.column(c).combine_chunks() for c in keep] + [indices, values]
            return pa.RecordBatch.from_arrays(arrays, names=[*keep, indices_col, values_col])

        # Spark hands over batches of spark.sql.execution.arrow.maxRecordsPerBatch rows
        # (10,000 by default); featurizing larger blocks hashes each distinct value fewer times.
        pending, rows = [], 0
        for batch in batches:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= block_rows:
                yield flush(pending)
                pending, rows = [], 0
        if pending:
            yield flush(pending)

    return df.select(*inputs).mapInArrow(featurize_batches, schema)


def with_sparse_vector(df: "DataFrame", num_features: int | FeatureSpec | str, indices_col: str = "indices",
                       values_col: str = "values", output_col: str = "features") -> "DataFrame":
    """Add an MLlib ``SparseVector`` column built from the indices/values columns
    (``num_features``: the vector size, or the spec whose ``2**bits`` it is)."""
    from pyspark.ml.linalg import SparseVector, VectorUDT
    from pyspark.sql import functions as F

    size = num_features if isinstance(num_features, int) else load_spec(num_features).num_features

    # Unannotated on purpose: pyspark 4 infers a UDF's evaluation type from its annotations
    # and, failing on these, would warn on every call.
    @F.udf(returnType=VectorUDT())
    def to_vector(indices, values):  # type: ignore[no-untyped-def]
        return SparseVector(size, indices, values)

    return df.withColumn(output_col, to_vector(F.col(indices_col), F.col(values_col)))
