"""Back-test reads: partition pruning, chosen columns, pinned versions, clear errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pytest

from feature_store import tables
from feature_store.reader import Window, read_window, resolve_version, to_arrow
from shared import catalog
from shared.openrtb import RAW_FIELD_NAMES

pytestmark = pytest.mark.spark


def rows(day: str, n: int, label: int):
    out = []
    for i in range(n):
        r = {k: None for k in RAW_FIELD_NAMES}
        r.update(impression_id=f"{day}-{i}", event_time=datetime.fromisoformat(day).replace(tzinfo=timezone.utc),
                 label=label, click_delay_s=None, site_id="s", date=date.fromisoformat(day))
        out.append(r)
    return out


def test_window_version_and_columns(spark, spark_settings, tmp_path):
    settings = replace(spark_settings, home=tmp_path)
    path = settings.table_path(tables.OBSERVATIONS)
    first = spark.createDataFrame(rows("2026-02-01", 3, 0) + rows("2026-02-02", 2, 0) + rows("2026-02-03", 4, 0),
                                  catalog.OBSERVATIONS.ddl())
    tables.replace_partitions(first, path, "date", ["2026-02-01", "2026-02-02", "2026-02-03"])
    relabel = spark.createDataFrame(rows("2026-02-02", 2, 1), catalog.OBSERVATIONS.ddl())
    tables.replace_partitions(relabel, path, "date", ["2026-02-02"])

    df, info = read_window(spark, settings, Window(date(2026, 2, 2), date(2026, 2, 4)), ["impression_id", "label"])
    t = to_arrow(df)
    assert info.version == 1 and t.column_names == ["impression_id", "label"] and t.num_rows == 6
    assert sorted(t.column("label").to_pylist()) == [0, 0, 0, 0, 1, 1]
    old, info0 = read_window(spark, settings, Window(date(2026, 2, 2), date(2026, 2, 3)), ["label"], version=0)
    assert info0.version == 0 and [r.label for r in old.collect()] == [0, 0]
    assert info.reference()["delta_version"] == 1 and info.reference()["start"] == "2026-02-02"
    assert resolve_version(spark, path, timestamp=datetime.now(timezone.utc)) == 1

    with pytest.raises(ValueError, match="no column.*nope"):
        read_window(spark, settings, Window(date(2026, 2, 1), date(2026, 2, 2)), ["nope"])
    with pytest.raises(ValueError, match="versions 0..1, not 7"):
        read_window(spark, settings, Window(date(2026, 2, 1), date(2026, 2, 2)), version=7)
    with pytest.raises(ValueError, match="no version committed at or before"):
        resolve_version(spark, path, timestamp="2000-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="must be after its start"):
        Window(date(2026, 2, 2), date(2026, 2, 2))
    with pytest.raises(FileNotFoundError, match="no Delta table"):
        read_window(spark, replace(settings, home=tmp_path / "empty"), Window(date(2026, 2, 1), date(2026, 2, 2)))
