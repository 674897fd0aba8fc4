"""Reading a warehouse window straight into Arrow with delta-rs, without Spark.

Single-machine training only needs a pinned Delta version's window as a ``pyarrow.Table``;
collecting it through Spark's driver (``read_window`` + ``to_arrow``) costs a JVM and a
serialisation round trip (measured in docs/warehouse.md). :func:`read_window_arrow` reads the same
rows from the table's Parquet files with the ``deltalake`` package (the Delta log replay)
and pyarrow (the Parquet scan): same half-open window on the ``date`` partition column,
only that window's files opened, the chosen columns, a pinned version, the same errors,
and the Arrow types Spark's ``DataFrame.toArrow()`` gives (32-bit-offset strings and lists,
``timestamp[us, tz=UTC]``, ``date32``), so the shared featurizer sees the same input.

Row order: Spark's file scan sorts the files (splits) by size, largest first, and
``toArrow`` keeps that order; the files here are read in the same order (equal sizes
by path, where Spark's own order follows its file index), each file's rows in file
order. Only a window in which several files are larger than Spark's split size
(``spark.sql.files.maxPartitionBytes``, or the window's bytes per core if smaller) can
come out in a different order; the rows are always the same multiset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from feature_store import tables
from feature_store.reader import Window, WindowRead
from shared.config import Settings
from shared.errors import ConfigurationError, MissingInputError

# Spark writes timestamps as INT96 by default; read them as microseconds (Spark's unit),
# not pyarrow's default nanoseconds, which overflow outside 1677..2262.
_PARQUET_READ = pds.ParquetReadOptions(coerce_int96_timestamp_unit="us")


def _missing(path: str) -> MissingInputError:
    return MissingInputError(f"no Delta table at {path} (run `ctr ingest` first)")


def latest_version(path: str | Path) -> int:
    """The latest committed version of the Delta table at ``path``."""
    path = str(path)
    if not DeltaTable.is_deltatable(path):
        raise _missing(path)
    return DeltaTable(path).version()


def open_version(path: str | Path, version: int | None = None) -> DeltaTable:
    """The Delta table at ``path`` loaded at ``version`` (None: the latest); a version
    outside 0..latest is a ValueError naming the range, a missing table FileNotFoundError."""
    path = str(path)
    if not DeltaTable.is_deltatable(path):
        raise _missing(path)
    if version is None:
        return DeltaTable(path)
    if version >= 0:
        try:
            return DeltaTable(path, version=int(version))
        except DeltaError:
            if version <= latest_version(path):
                raise  # the version exists but cannot be loaded (e.g. its log was cleaned up)
    raise ConfigurationError(f"{path} has versions 0..{latest_version(path)}, not {version}")


def spark_arrow_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type Spark's ``toArrow`` gives for a column delta-rs reads as ``t``:
    large/view strings, binaries and lists become their 32-bit-offset forms and
    timestamps microseconds (nested types converted throughout)."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) \
            or pa.types.is_large_list_view(t):
        return pa.list_(_spark_field(t.value_field))
    if pa.types.is_map(t):
        return pa.map_(_spark_field(t.key_field), _spark_field(t.item_field))
    if pa.types.is_struct(t):
        return pa.struct([_spark_field(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", t.tz)
    return t


def _spark_field(f: pa.Field) -> pa.Field:
    return f.with_type(spark_arrow_type(f.type))


def _spark_schema(dt: DeltaTable) -> pa.Schema:
    return pa.schema([_spark_field(f) for f in pa.schema(dt.schema().to_arrow())])


def window_dataset(dt: DeltaTable, path: str | Path, window: Window) -> pds.FileSystemDataset:
    """A pyarrow dataset of exactly the files of ``dt`` (the table at local ``path``, at its
    loaded version) in the window's ``date`` partitions, largest file first (Spark's scan
    order), read through pyarrow's native local filesystem with Spark's Arrow types."""
    fs = pafs.SubTreeFileSystem(str(Path(path).resolve()), pafs.LocalFileSystem())
    ds = dt.to_pyarrow_dataset(
        file_pruning_predicate=[("date", ">=", window.start), ("date", "<", window.end)],
        filesystem=fs, parquet_read_options=_PARQUET_READ, schema=_spark_schema(dt))
    fragments = list(ds.get_fragments())
    sizes = {f.path: f.size for f in fs.get_file_info([fr.path for fr in fragments])}
    fragments.sort(key=lambda fr: (-sizes[fr.path], fr.path))
    return pds.FileSystemDataset(fragments, ds.schema, ds.format, fs)


def read_window_arrow(
    settings: Settings,
    window: Window,
    columns: Sequence[str] | None = None,
    table: str = tables.OBSERVATIONS,
    version: int | None = None,
) -> tuple[pa.Table, WindowRead]:
    """The rows of ``window`` (partition-pruned), the chosen columns, at a pinned version
    (None: the latest), as Arrow: what ``to_arrow(read_window(...)[0])`` gives, without Spark."""
    path = settings.table_path(table)
    dt = open_version(path, version)
    names = [f.name for f in dt.schema().fields]
    if columns:
        unknown = sorted(set(columns) - set(names))
        if unknown:
            raise ConfigurationError(f"table {table} has no column(s) {', '.join(unknown)}; it has: {', '.join(names)}")
    selected = list(columns) if columns else names
    ds = window_dataset(dt, path, window)
    rows = (pds.field("date") >= window.start) & (pds.field("date") < window.end)  # exact, on any layout
    frame = ds.to_table(columns=selected, filter=rows)
    return frame, WindowRead(table=table, path=path, window=window, version=dt.version(), columns=tuple(selected))
