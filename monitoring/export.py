"""The dashboard's read copy of the monitoring tables: Parquet files read with pyarrow.

Layout: ``<home>/monitoring/export/<table>/<partition column>=<value>/*.parquet``, each
file holding full rows (the partition column included). Every monitoring job mirrors
what it just committed to Delta there (:func:`monitoring.tables.write`), so the dashboard
sees new rows without a JVM and starts in well under a second (:func:`load`,
:func:`signature`); :func:`refresh` rebuilds the whole export from the Delta tables with
Spark (``ctr dashboard --refresh``), e.g. after a table was changed by hand or a mirror
write failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring import tables
from monitoring.tables import export_dir
from shared.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def load(settings: Settings, name: str) -> pa.Table:
    """Every exported row of table ``name`` (empty with the table's schema when none)."""
    schema = tables.SCHEMAS[name]
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
