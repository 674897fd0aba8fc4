"""Column access for the featurizer's batch path: pandas Series or Arrow arrays as numpy
codes, numbers and list elements, without a Python loop over rows where Arrow can do it."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from shared.featurize.canonical import FeaturizeError, to_number

if TYPE_CHECKING:  # neither ships type information: both names are Any to mypy
    import pandas as pd
    import pyarrow as pa

#: A column of the batch path: a pandas Series or an Arrow (chunked) array.
Column: TypeAlias = "pd.Series | pa.Array | pa.ChunkedArray"
#: A frame of the batch path: a pandas DataFrame or an Arrow Table / RecordBatch.
Frame: TypeAlias = "pd.DataFrame | pa.Table | pa.RecordBatch"


def arrow_modules() -> tuple[ModuleType, ModuleType]:
    """``pyarrow`` and ``pyarrow.compute``, imported on first use."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc


def arrow_array(col: Column) -> pa.Array:
    """One contiguous Arrow array from an array or chunked array."""
    pa, _ = arrow_modules()
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks() if col.num_chunks else pa.array([], type=col.type)
    return col


def is_arrow(col: object) -> bool:
    """Whether ``col`` is a pyarrow object (checked by module, without importing pyarrow)."""
    return type(col).__module__.startswith("pyarrow")


EDGE_WHITESPACE = r"^[ \t\n\r\x0b\x0c]|[ \t\n\r\x0b\x0c]$"


def already_canonical(strings: pa.Array) -> bool:
    """Whether :func:`canonical` is the identity on every value of an Arrow string array:
    all ASCII (so NFC already), none empty, none with ASCII whitespace at either end."""
    _, pc = arrow_modules()
    return (len(strings) == 0 or (
        strings.null_count == 0
        and pc.all(pc.string_is_ascii(strings)).as_py()
        and pc.min(pc.binary_length(strings)).as_py() > 0
        and not pc.any(pc.match_substring_regex(strings, EDGE_WHITESPACE)).as_py()))


def factorize(col: Column) -> tuple[npt.NDArray[np.signedinteger], list[Any], bool]:
    """(codes with -1 for null, distinct values as Python objects, whether those are known
    to be canonical strings already) of a scalar column."""
    if is_arrow(col):
        pa, pc = arrow_modules()
        arr = arrow_array(col)
        t = arr.type
        if pa.types.is_null(t):
            return np.full(len(arr), -1, np.int32), [], True
        if pa.types.is_nested(t):
            raise FeaturizeError(f"expected scalar values, got a {t} column")
        d = arr if pa.types.is_dictionary(t) else pc.dictionary_encode(arr)
        codes = d.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        uniques = d.dictionary
        known = (pa.types.is_string(uniques.type) or pa.types.is_large_string(uniques.type)) \
            and already_canonical(uniques)
        return codes, uniques.to_numpy(zero_copy_only=False).tolist(), known
    import pandas as pd

    if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
        # Never pd.factorize an all-string array: pandas then compares C strings, so
        # "a\x00b" == "a" == "a\x00". Strings go through Arrow, which is exact. Anything
        # else (mixed types, numbers) is left to pandas, which then hashes Python objects
        # (Arrow would turn [2**53 + 1, 0.5] into doubles).
        pa, _ = arrow_modules()
        try:
            arr = pa.array(col, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            arr = None
        if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            return factorize(arr)
    try:
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
    except TypeError as e:  # unhashable cells, e.g. lists in a scalar column
        raise FeaturizeError(f"expected scalar values: {e}") from None
    return codes, uniques.tolist(), False


def numbers(col: Column) -> npt.NDArray[np.float64]:
    """float64 values of a numeric column, NaN where missing (see canonical.to_number)."""
    if is_arrow(col):
        pa, pc = arrow_modules()
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return np.asarray(pc.cast(col, pa.float64(), safe=False).to_numpy(zero_copy_only=False),
                              dtype=np.float64)
        if pa.types.is_null(t):
            return np.full(len(col), np.nan)
    else:
        import pandas as pd

        dt = col.dtype
        if pd.api.types.is_bool_dtype(dt) or (pd.api.types.is_numeric_dtype(dt) and dt != np.dtype(object)):
            values: npt.NDArray[np.float64] = col.to_numpy(dtype=np.float64, na_value=np.nan)
            return values
    codes, uniques, _ = factorize(col)
    table = np.array([to_number(u) for u in uniques] + [None], dtype=np.float64)  # None -> nan
    numbers: npt.NDArray[np.float64] = table[codes]
    return numbers


def list_elements(col: Column) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.signedinteger], list[Any], bool]:
    """(row of each element, element codes with -1 for null, distinct elements, whether
    those are known canonical) of a list column."""
    if is_arrow(col):
        pa, pc = arrow_modules()
        arr = arrow_array(col)
        if pa.types.is_null(arr.type):
            return np.empty(0, np.int64), np.empty(0, np.int32), [], True
        if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
                or pa.types.is_fixed_size_list(arr.type) or pa.types.is_list_view(arr.type)):
            raise FeaturizeError(f"expected a list column, got {arr.type}")
        rows = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        return rows, *factorize(pc.list_flatten(arr))
    import pandas as pd

    row_list: list[int] = []
    flat: list[Any] = []
    for r, cell in enumerate(col.tolist()):
        if isinstance(cell, (list, tuple, np.ndarray)):
            row_list.extend([r] * len(cell))
            flat.extend(cell.tolist() if isinstance(cell, np.ndarray) else cell)
        elif not (cell is None or (isinstance(cell, float) and cell != cell) or cell is pd.NA):
            raise FeaturizeError(f"expected a list of values, got {type(cell).__name__}: {cell!r}")
    values = np.empty(len(flat), dtype=object)
    values[:] = flat
    return np.asarray(row_list, np.int64), *factorize(pd.Series(values, dtype=object))


def frame_columns(frame: Frame) -> tuple[dict[str, Column], int]:
    """The columns of a pandas DataFrame or Arrow table/batch by name, and the row count."""
    if is_arrow(frame):
        pa, _ = arrow_modules()
        if isinstance(frame, (pa.Table, pa.RecordBatch)):
            return {name: frame.column(i) for i, name in enumerate(frame.schema.names)}, frame.num_rows
    else:
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            return {name: frame[name] for name in frame.columns}, len(frame)
    raise TypeError(f"transform() takes a pandas DataFrame or a pyarrow Table/RecordBatch, "
                    f"got {type(frame).__name__}")


def slice_frame(frame: Frame, start: int, stop: int) -> Frame:
    """Rows ``[start, stop)`` of a pandas or Arrow frame."""
    return frame.slice(start, stop - start) if is_arrow(frame) else frame.iloc[start:stop]


# ---------------------------------------------------------------------------------------
# Per-field plans: everything precomputable happens at construction.
