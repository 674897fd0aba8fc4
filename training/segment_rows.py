"""Segments as flat arrays: :class:`SegmentRows`, built from Arrow (inside a Spark task) or pandas.

A Spark task of the segment fan-out receives the featurized rows of its bucket of segments
and builds them into flat arrays once (no pandas per segment), in a canonical order that
depends on the rows alone, so a segment's fit is the same whichever task, bucket or batch
its rows came in. Rows a segment cannot be built from are recorded in
:attr:`SegmentRows.problems` and fail that segment only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from training.distributed import SPLIT_COL

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import scipy.sparse as sp

#: The segment key column of the featurized rows (the segment column cast to string).
SEGMENT_COL = "_segment"

_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
_BAD_SPLIT = 3
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise (uint64, wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@dataclass
class SegmentRows:
    """Featurized rows of one or more segments as flat arrays, in a canonical order:
    sorted by segment key, then split (train, validation, test), then a 64-bit hash of the
    row's content (label, indices, values). Segment ``g`` (key ``keys[g]``) owns rows
    ``bounds[g]:bounds[g + 1]``; its train, validation and test rows are contiguous.

    The order depends on the rows alone, not on how Spark delivered them, so a segment's
    fit (liblinear's coordinate order depends on the row order) is the same whichever task,
    bucket or batch its rows came in: fitting a segment inside a bucket of many gives the
    weights :func:`fit_segment` gives for its rows alone. ``problems``: segment -> first
    data problem (null label or feature list, indices/values of different lengths, a split
    that is not train/validation/test); such a segment fails, its bucket-mates do not."""

    keys: list
    bounds: np.ndarray  # int64 [G + 1]
    split: np.ndarray  # int8 [n]: 0 train, 1 validation, 2 test, 3 anything else
    label: np.ndarray  # int64 [n], as given (not checked to be 0/1 here)
    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz]
    problems: dict = field(default_factory=dict)

    def spans(self, g: int) -> tuple[int, int, int, int]:
        """(start, first validation row, first test row, end) of segment ``g``."""
        a, b = int(self.bounds[g]), int(self.bounds[g + 1])
        v, t = np.searchsorted(self.split[a:b], (1, 2)) + a
        return a, int(v), int(t), b

    def csr(self, a: int, b: int, bits: int) -> "sp.csr_matrix":
        """Rows ``a:b`` as a CSR matrix of ``2**bits`` columns (float32 values)."""
        import scipy.sparse as sp

        p = self.indptr[a:b + 1]
        return sp.csr_matrix((self.values[p[0]:p[-1]], self.indices[p[0]:p[-1]], p - p[0]),
                             shape=(b - a, 1 << int(bits)))


def rows_from_arrow(table: "pa.Table") -> SegmentRows:
    """:class:`SegmentRows` from an Arrow table with ``_segment`` (optional: one segment),
    ``_split``, ``label``, ``indices`` (list of int), ``values`` (list of float)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.combine_chunks()
    n = table.num_rows

    def col(name):  # one chunk after combine_chunks (none for an empty table)
        c = table.column(name)
        return c.chunk(0) if c.num_chunks else pa.array([], c.type)

    bad = np.zeros(n, dtype=np.int8)  # 0 fine, else an index into `reasons`
    reasons = ["", "null label", "null indices or values list", "indices and values of different lengths",
               "null entry in indices or values", "split is not train/validation/test"]

    # segment keys, ranked in sorted key order
    if SEGMENT_COL in table.column_names:
        enc = col(SEGMENT_COL).dictionary_encode()
        dictionary = enc.dictionary.to_pylist()
        codes = enc.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False).astype(np.int64)
        if enc.indices.null_count:
            dictionary.append(None)
    else:
        dictionary, codes = [None], np.zeros(n, dtype=np.int64)
    by_key = sorted(range(len(dictionary)), key=lambda i: (dictionary[i] is None, dictionary[i] or ""))
    rank_of = np.empty(len(dictionary), dtype=np.int64)
    rank_of[by_key] = np.arange(len(dictionary))
    seg_rank = rank_of[codes] if n else codes
    keys = [dictionary[i] for i in by_key]

    enc = col(SPLIT_COL).dictionary_encode()
    lookup = np.array([_SPLIT_CODES.get(s, _BAD_SPLIT) for s in enc.dictionary.to_pylist()] + [_BAD_SPLIT],
                      dtype=np.int8)
    split = lookup[enc.indices.fill_null(len(lookup) - 1).to_numpy(zero_copy_only=False)] if n else \
        np.zeros(0, np.int8)
    bad[(split == _BAD_SPLIT) & (bad == 0)] = 5

    lab = col("label")
    bad[(lab.is_null().to_numpy(zero_copy_only=False)) & (bad == 0)] = 1
    label = lab.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)

    lists = []
    for name in ("indices", "values"):
        arr = col(name)
        lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        bad[arr.is_null().to_numpy(zero_copy_only=False) & (bad == 0)] = 2
        flat = arr.flatten()  # skips the slots of null lists
        if flat.null_count:
            ends = np.cumsum(lengths)
            nulls = np.concatenate([[0], np.cumsum(flat.is_null().to_numpy(zero_copy_only=False))])
            bad[(nulls[ends] - nulls[ends - lengths] > 0) & (bad == 0)] = 4
            flat = flat.fill_null(0)
        lists.append((lengths, flat.to_numpy(zero_copy_only=False)))
    (idx_len, idx_flat), (val_len, val_flat) = lists
    mismatch = idx_len != val_len
    if mismatch.any():  # keep the entries of the rows whose lists agree
        bad[mismatch & (bad == 0)] = 3
        idx_flat, val_flat = idx_flat[np.repeat(~mismatch, idx_len)], val_flat[np.repeat(~mismatch, val_len)]
        idx_len = np.where(mismatch, 0, idx_len)
    indices = idx_flat.astype(np.int32, copy=False)
    values = val_flat.astype(np.float32, copy=False)
    ends = np.cumsum(idx_len)

    # a content hash per row: the last sort key of the canonical order
    h = _mix(indices.astype(np.uint64) * _K1 ^ values.view(np.uint32).astype(np.uint64) * _K2)
    sums = np.zeros(indices.size + 1, dtype=np.uint64)
    np.cumsum(h, out=sums[1:])
    row_hash = _mix((sums[ends] - sums[ends - idx_len]) ^ (label.astype(np.uint64) * _K3) ^ idx_len.astype(np.uint64))
    order = np.lexsort((row_hash, split, seg_rank))

    lengths = idx_len[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    gather = np.repeat((ends - idx_len)[order] - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
    seg_sorted = seg_rank[order]
    bounds = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(np.bincount(seg_sorted, minlength=len(keys)), out=bounds[1:])
    problems: dict[int, str] = {}
    bad_sorted = bad[order]
    for i in np.flatnonzero(bad_sorted):
        problems.setdefault(int(seg_sorted[i]), reasons[bad_sorted[i]])
    return SegmentRows(keys=keys, bounds=bounds, split=split[order], label=label[order], indptr=indptr,
                       indices=indices[gather], values=values[gather], problems=problems)


def _list_array(cells, dtype) -> "pa.Array":
    """A large-list Arrow array of numpy cells (``None``: a null list)."""
    import pyarrow as pa

    nulls = np.fromiter((a is None for a in cells), dtype=bool, count=len(cells))
    lengths = np.fromiter((0 if a is None else len(a) for a in cells), dtype=np.int64, count=len(cells))
    offsets = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    present = [np.asarray(a, dtype=dtype) for a in cells if a is not None]
    flat = np.concatenate(present) if present else np.zeros(0, dtype)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=pa.array(nulls))


def rows_from_pandas(pdf: "pd.DataFrame") -> SegmentRows:
    """:class:`SegmentRows` from a pandas frame of the same columns (``indices`` / ``values``
    cells are sequences)."""
    import pyarrow as pa

    names = [c for c in (SEGMENT_COL, SPLIT_COL, "label") if c in pdf.columns]
    arrays = [pa.array(pdf[c].to_numpy(), from_pandas=True) for c in names]
    arrays += [_list_array(list(pdf["indices"]), np.int32), _list_array(list(pdf["values"]), np.float32)]
    return rows_from_arrow(pa.Table.from_arrays(arrays, names=[*names, "indices", "values"]))
