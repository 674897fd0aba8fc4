"""The dashboard's read copy of the monitoring tables: Parquet files read with pyarrow.

Layout: ``<home>/monitoring/export/<table>/<partition column>=<value>/*.parquet``, each
file holding full rows (the partition column included). Every monitoring job mirrors
what it just committed to Delta here (:func:`mirror`), so the dashboard sees new rows
without a JVM and starts in well under a second; :func:`refresh` rebuilds the whole
export from the Delta tables with Spark (``ctr dashboard --refresh``), e.g. after a
table was changed by hand or a mirror write failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def export_dir(settings: Settings) -> Path:
    return settings.home / "monitoring" / "export"


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mirror(settings: Settings, name: str, table: pa.Table, partitions: Iterable[str], *, mode: str) -> None:
    """Mirror rows just written to Delta table ``name`` (see :func:`monitoring.tables.write`)."""
    from monitoring.tables import PARTITION

    column = PARTITION[name]
    root = export_dir(settings) / name
    values = table.column(column).to_pylist() if table.num_rows else []
    for part in sorted(set(partitions) | {str(v) for v in values}):
        folder = root / f"{column}={part}"
        rows = table.filter(pc.equal(table.column(column).cast(pa.string()), part)) \
            if table.num_rows else table
        if mode == "replace":
            if rows.num_rows:
                _write_atomic(rows, folder / "data.parquet")
                for old in folder.glob("*.parquet"):
                    if old.name != "data.parquet":
                        old.unlink(missing_ok=True)
            elif folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
        elif rows.num_rows:
            _write_atomic(rows, folder / f"part-{uuid.uuid4().hex}.parquet")


def load(settings: Settings, name: str) -> pa.Table:
    """Every exported row of table ``name`` (empty with the table's schema when none)."""
    from monitoring.tables import SCHEMAS

    schema = SCHEMAS[name]
    files = sorted((export_dir(settings) / name).glob("*=*/*.parquet"))
    parts = []
    for f in files:
        try:
            parts.append(pq.read_table(f, schema=schema))
        except FileNotFoundError:  # replaced between glob and read: the next load sees the new file
            continue
    return pa.concat_tables(parts) if parts else schema.empty_table()


def signature(settings: Settings) -> tuple:
    """Changes whenever any exported file is added, replaced or removed."""
    root = export_dir(settings)
    out = []
    for f in sorted(root.glob("*/*=*/*.parquet")):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        out.append((str(f.relative_to(root)), st.st_mtime_ns, st.st_size))
    return tuple(out)


def refresh(spark: "SparkSession", settings: Settings) -> dict[str, int]:
    """Rebuild the export of every monitoring table from Delta; returns rows per table."""
    from monitoring import tables

    counts = {}
    root = export_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    for name in tables.SCHEMAS:
        table = tables.read(spark, settings, name)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        column = tables.PARTITION[name]
        if table.num_rows:
            for part in sorted({str(v) for v in table.column(column).to_pylist()}):
                rows = table.filter(pc.equal(table.column(column).cast(pa.string()), part))
                (staging / f"{column}={part}").mkdir()
                pq.write_table(rows, staging / f"{column}={part}" / "data.parquet")
        old = root / name
        trash = root / f".{name}-old-{uuid.uuid4().hex}"
        if old.exists():
            os.replace(old, trash)
        os.replace(staging, old)
        shutil.rmtree(trash, ignore_errors=True)
        counts[name] = table.num_rows
    return counts
