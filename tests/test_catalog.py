"""The table catalog (shared/catalog.py): each table's Spark DDL, Spark schema and Arrow
schema agree, and the tables real jobs write have exactly the catalog's schema."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from shared import catalog

ALL = [*catalog.TABLES.values(), *catalog.FRAMES.values()]
IDS = [t.name for t in ALL]
DAY = date(2026, 1, 5)


def _arrow_equal(a: pa.DataType, b: pa.DataType) -> bool:
    """Type equality that ignores the name Arrow gives a list's element field."""
    if pa.types.is_list(a) and pa.types.is_list(b):
        return _arrow_equal(a.value_type, b.value_type)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        return [f.name for f in a] == [f.name for f in b] and all(_arrow_equal(x.type, y.type) for x, y in zip(a, b))
    if pa.types.is_map(a) and pa.types.is_map(b):
        return _arrow_equal(a.key_type, b.key_type) and _arrow_equal(a.item_type, b.item_type)
    return a == b


@pytest.mark.parametrize("table", ALL, ids=IDS)
def test_spark_and_arrow_schemas_agree(table):
    from pyspark.sql.pandas.types import to_arrow_type

    spark_schema, arrow_schema = table.spark_schema(), table.arrow_schema()
    assert tuple(spark_schema.fieldNames()) == tuple(arrow_schema.names) == table.column_names
    assert table.ddl().startswith(f"{table.column_names[0]} ")
    for column, sf, af in zip(table.columns, spark_schema.fields, arrow_schema):
        assert sf.nullable == af.nullable == column.nullable
        # Spark's own Arrow conversion of the Spark type is the catalog's Arrow type
        assert _arrow_equal(to_arrow_type(sf.dataType, timezone="UTC"), af.type), (column, sf.dataType, af.type)
    for p in table.partition_by:
        assert p in table.column_names


def test_vocabulary():
    assert catalog.parse_type("array<struct<a:long, b:string>>").text() == "array<struct<a:long,b:string>>"
    assert catalog.parse_type("map<string, long>").arrow() == pa.map_(pa.string(), pa.int64())
    assert catalog.SEGMENT_MODELS.drop("updated_at").column_names == catalog.SEGMENT_MODELS.column_names[:-1]
    for bad in ("bigint", "array<>", "varchar(3)", "struct<a>"):
        with pytest.raises(ValueError):
            catalog.parse_type(bad)
    with pytest.raises(ValueError):
        catalog.Table("t", (catalog.Column("a", "long"),), partition_by=("b",))
    assert catalog.table("observations") is catalog.OBSERVATIONS


@pytest.mark.spark
def test_ddl_parses_to_the_schema_and_arrow_converts_to_it(spark):
    for table in ALL:
        assert spark.createDataFrame([], table.ddl()).schema == table.spark_schema(), table.name
        # what monitoring.tables.write does with Arrow rows
        assert spark.createDataFrame(table.arrow_schema().empty_table()).schema == table.spark_schema(), table.name


# -- tables written by the real jobs -------------------------------------------------------------

def _request() -> dict:
    return {
        "id": "req", "imp": [{"id": "1", "tagid": "t1", "bidfloor": 0.5, "banner": {"w": 300, "h": 250, "pos": 1}}],
        "site": {"id": "s1", "domain": "a.com", "publisher": {"id": "p1"}},
        "device": {"devicetype": 4, "os": "iOS", "connectiontype": 2, "geo": {"country": "FRA"}},
        "user": {"id": "u1", "data": [{"id": "dp", "segment": [{"id": "s9"}]}]},
    }


def _write_logs(raw) -> None:
    ad = {"advertiser_id": "a1", "campaign_id": "c1", "creative_id": "cr1", "creative_type": "banner"}
    for kind, lines in (
        ("impressions", [json.dumps({"impression_id": "A", "timestamp": "2026-01-05T10:00:00Z", "imp_id": "1",
                                     "bid_request": _request(), "ad": ad}), '{"impression_id": "B", ']),
        ("clicks", [json.dumps({"impression_id": "A", "click_time": "2026-01-05T10:00:30Z"})]),
    ):
        folder = raw / kind / f"date={DAY.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hour=10.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def home(spark, spark_settings, tmp_path_factory):
    """Settings of a fresh warehouse that the real jobs below wrote one table each of."""
    from feature_store.ingest import ingest_day
    from feature_store.public import ImportResult, _record_run
    from monitoring import tables as mt
    from training.backtest import write_metrics
    from training.segment_table import append_new_rows, fit_schema

    settings = replace(spark_settings, home=tmp_path_factory.mktemp("catalog_home"))
    _write_logs(settings.raw_dir)
    result = ingest_day(spark, settings, DAY)
    assert (result.observations, result.quarantined) == (1, 1)
    _record_run(spark, settings, ImportResult(run_id="r", source="criteo", dates=[DAY.isoformat()]))
    fit = {f: None for f in fit_schema().fieldNames()} | {"run_id": "r", "segment": "s", "status": "ok",
                                                          "attempts": 1, "indices": [1, 5], "weights": [0.5, -0.1]}
    append_new_rows(spark, settings, spark.createDataFrame([fit], fit_schema()), run_id="r", txn_version=None)
    write_metrics(spark, settings, [{"run_id": "r", "test_date": DAY, "rows": 3, "log_loss": float("nan")}])
    for t in catalog.MONITORING:
        part = "m" if t.partition_by == ("model_name",) else DAY
        mt.write(spark, settings, t.name, mt.arrow_table(t.name, [{t.partition_by[0]: part}]), [str(part)])
    return settings


def _stored_schema(path: str):
    """The schema and partition columns a Delta table's log records (its latest ``metaData``)."""
    from pyspark.sql.types import StructType

    meta = None
    for commit in sorted((Path(path) / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            meta = json.loads(line).get("metaData", meta)
    assert meta is not None, path
    return StructType.fromJson(json.loads(meta["schemaString"])), tuple(meta["partitionColumns"])


#: written by the streaming ingest, whose tests check them (tests/test_stream_ingest.py)
STREAMED = ("stream_clicks", "stream_ingest_batches")
WRITTEN_HERE = [t for t in catalog.TABLES.values() if t.name not in STREAMED]


@pytest.mark.spark
@pytest.mark.parametrize("table", WRITTEN_HERE, ids=[t.name for t in WRITTEN_HERE])
def test_written_table_has_the_catalog_schema(home, table):
    schema, partition_by = _stored_schema(home.table_path(table.name))
    assert schema == table.spark_schema()
    assert partition_by == table.partition_by
