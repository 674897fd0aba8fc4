"""The Spark-free window reader (delta-rs + pyarrow) against Spark's own read of the same
real Delta tables: same rows, types, columns and file order; only the window's files
opened; the same errors."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from feature_store import tables
from feature_store.arrow_reader import latest_version, open_version, read_window_arrow, window_dataset
from feature_store.public import CRITEO_CATS, CRITEO_INTS
from feature_store.reader import Window, read_window, to_arrow
from shared import catalog
from shared.openrtb import RAW_FIELD_NAMES
from conftest import shared_data

pytestmark = pytest.mark.spark

DAYS = {"2026-03-01": 3, "2026-03-02": 5, "2026-03-03": 7, "2026-03-04": 9}  # distinct file sizes


def rows(day: str, n: int, label: int):
    out = []
    for i in range(n):
        r = {k: None for k in RAW_FIELD_NAMES}
        t = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(minutes=7 * i, microseconds=i)
        r.update(impression_id=f"{day}-{label}-{i}", event_time=t, label=label,
                 click_delay_s=None if i % 2 else 1.5 * i, site_id=f"s{i % 3}", ad_pos=i, bidfloor=0.25 * i,
                 user_segments=None if i % 3 == 0 else [f"seg{j}" for j in range(i % 4)],
                 hour_of_day=t.hour, date=date.fromisoformat(day))
        out.append(r)
    return out


@pytest.fixture(scope="module")
def world(spark, spark_settings, tmp_path_factory):
    """observations v0: four days, one file each; v1: 2026-03-02 replaced (11 rows, label 1)."""
    settings = replace(spark_settings, home=tmp_path_factory.mktemp("arrow_home"))
    path = settings.table_path(tables.OBSERVATIONS)
    v0 = spark.createDataFrame([r for d, n in DAYS.items() for r in rows(d, n, 0)], catalog.OBSERVATIONS.ddl())
    tables.replace_partitions(v0.repartition(1), path, "date", list(DAYS))
    v1 = spark.createDataFrame(rows("2026-03-02", 11, 1), catalog.OBSERVATIONS.ddl())
    tables.replace_partitions(v1.repartition(1), path, "date", ["2026-03-02"])
    return settings, path


def spark_read(spark, settings, window, columns=None, table=tables.OBSERVATIONS, version=None):
    df, info = read_window(spark, settings, window, columns, table=table, version=version)
    return to_arrow(df), info, df


def same_multiset(a: pa.Table, b: pa.Table, key: str) -> bool:
    return a.sort_by(key).equals(b.sort_by(key))


def test_window_equals_spark_read_latest_and_pinned(spark, world):
    settings, path = world
    assert latest_version(path) == 1
    cases = [(Window(date(2026, 3, 2), date(2026, 3, 4)), None, None),  # v1's relabelled day + one more
             (Window(date(2026, 3, 1), date(2026, 3, 4)), ["label", "impression_id", "event_time"], 0),
             (Window(date(2026, 4, 1), date(2026, 4, 2)), ["impression_id"], None)]  # no rows
    for window, columns, version in cases:
        expected, sinfo, _ = spark_read(spark, settings, window, columns, version=version)
        got, info = read_window_arrow(settings, window, columns, version=version)
        assert info == sinfo  # same version, columns, window, path
        assert got.schema.equals(expected.schema, check_metadata=True), (got.schema, expected.schema)
        assert got.num_rows == expected.num_rows
        assert same_multiset(got, expected, "impression_id")
        # every file here has its own size: Spark's largest-file-first order, row for row
        assert got.column("impression_id").to_pylist() == expected.column("impression_id").to_pylist()
    latest, _ = read_window_arrow(settings, Window(date(2026, 3, 2), date(2026, 3, 3)), ["label"])
    old, info0 = read_window_arrow(settings, Window(date(2026, 3, 2), date(2026, 3, 3)), ["label"], version=0)
    assert latest.column("label").to_pylist() == [1] * 11 and old.column("label").to_pylist() == [0] * 5
    assert info0.reference()["delta_version"] == 0
    full, _ = read_window_arrow(settings, Window(date(2026, 3, 1), date(2026, 3, 2)))
    types = dict(zip(full.schema.names, full.schema.types))
    assert (types["impression_id"], types["event_time"], types["label"], types["ad_pos"], types["date"],
            types["user_segments"]) == (pa.string(), pa.timestamp("us", "UTC"), pa.int32(), pa.int64(),
                                        pa.date32(), pa.list_(pa.string()))


def test_only_the_windows_files_are_opened(spark, world, tmp_path):
    settings, path = world
    window = Window(date(2026, 3, 2), date(2026, 3, 4))
    for version in (0, 1):
        ds = window_dataset(open_version(path, version), path, window)
        ours = sorted(f.path for f in ds.get_fragments())
        df, _ = read_window(spark, settings, window, version=version)
        theirs = sorted(f.split(path.rstrip("/") + "/", 1)[1] for f in df.inputFiles())
        assert ours == theirs and {p.split("/")[0] for p in ours} == {"date=2026-03-02", "date=2026-03-03"}

    # A copy of the table with every other day's files destroyed still reads the window;
    # destroying one of the window's files does not (so a file opened would be noticed).
    copy = replace(settings, home=tmp_path)
    shutil.copytree(path, copy.table_path(tables.OBSERVATIONS))
    expected, _ = read_window_arrow(settings, window)
    table_dir = tmp_path / "warehouse" / tables.OBSERVATIONS
    for day in ("2026-03-01", "2026-03-04"):
        for f in (table_dir / f"date={day}").glob("*.parquet"):
            f.write_bytes(b"not parquet")
    got, _ = read_window_arrow(copy, window)
    assert got.equals(expected)
    for f in (table_dir / "date=2026-03-03").glob("*.parquet"):
        f.write_bytes(b"not parquet")
    with pytest.raises((pa.ArrowInvalid, OSError)):
        read_window_arrow(copy, window)


def test_errors_match_read_window(world, tmp_path):
    settings, path = world
    window = Window(date(2026, 3, 1), date(2026, 3, 2))
    with pytest.raises(ValueError, match="table observations has no column.s. nope, zz; it has: impression_id, "):
        read_window_arrow(settings, window, ["label", "zz", "nope"])
    for bad in (7, 2, -1):
        with pytest.raises(ValueError, match=f"has versions 0..1, not {bad}$"):
            read_window_arrow(settings, window, version=bad)
    empty = replace(settings, home=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no Delta table at .* \(run `ctr ingest` first\)"):
        read_window_arrow(empty, window)
    with pytest.raises(FileNotFoundError, match="no Delta table"):
        latest_version(empty.table_path(tables.OBSERVATIONS))


def criteo_rows(csv_path):
    """The real Criteo sample as ``ctr import criteo`` lays it out (7 days from 2014-01-01)."""
    with csv_path.open(newline="") as fh:
        raw = [{k.lower(): v for k, v in r.items()} for r in csv.DictReader(fh)]
    n, name = len(raw), csv_path.name
    return [(f"{name}:{i}", i, int(r["id"]), int(r["label"]), *[int(r[c]) if r[c] else None for c in CRITEO_INTS],
             *[r[c] or None for c in CRITEO_CATS], str(csv_path), i + 2, date(2014, 1, 1) + timedelta(7 * i // n))
            for i, r in enumerate(raw)]


def test_criteo_table_reads_and_featurizes_like_spark(spark, spark_settings, tmp_path):
    """The criteo_observations schema, two files a day: same multiset, types and features."""
    from shared.featurize import Featurizer, load_spec

    settings = replace(spark_settings, home=tmp_path)
    table = "criteo_observations"
    ddl = ", ".join(["impression_id string, event_index long, kaggle_id long, label int",
                     *[f"{c} long" for c in CRITEO_INTS], *[f"{c} string" for c in CRITEO_CATS],
                     "source_file string, line_number long, date date"])
    df = spark.createDataFrame(criteo_rows(shared_data("criteo-kaggle-random461", "tr.r100000.csv")), ddl)
    tables.replace_partitions(df.repartition(2), settings.table_path(table), "date",
                              [f"2014-01-0{d}" for d in range(1, 8)])
    window = Window(date(2014, 1, 2), date(2014, 1, 5))
    spec = load_spec("criteo")
    for cols in (None, sorted(set(spec.input_columns) | {"impression_id", "label"})):
        expected, sinfo, _ = spark_read(spark, settings, window, cols, table=table)
        got, info = read_window_arrow(settings, window, cols, table=table)
        assert info == sinfo and got.num_rows == expected.num_rows > 100
        assert got.schema.equals(expected.schema, check_metadata=True), (got.schema, expected.schema)
        assert same_multiset(got, expected, "impression_id")
    assert len(list(window_dataset(open_version(info.path), info.path, window).get_fragments())) == 6
    fz = Featurizer(spec)
    a, b = fz.transform(got.sort_by("impression_id")), fz.transform(expected.sort_by("impression_id"))
    assert a.shape == b.shape and (a != b).nnz == 0
