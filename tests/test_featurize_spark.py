"""The Spark path (mapInArrow over the batch featurizer) gives the golden features and the
same rows as the record path. Few jobs: everything featurized goes through one collect."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.featurize import Featurizer, SpecError, load_spec
from shared.featurize.golden import GOLDEN_FILE, column_types, random_records, read_golden, typed_table
from shared.featurize.spark import featurize_spark, with_sparse_vector

pytestmark = pytest.mark.spark

GOLDEN = Path(__file__).parent / "golden"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_spark_reproduces_golden_random_and_criteo_rows(spark):
    specs = {name: load_spec(GOLDEN / f"{name}.toml") for name in ("golden_a", "golden_b")}
    expected: dict[int, tuple[list[int], list[float]]] = {}
    frames = []

    def add(spec, records, targets, partitions=1):
        start = len(expected)
        ids = list(range(start, start + len(records)))
        table = typed_table(spec, records, extra={"rid": ids})
        expected.update(zip(ids, targets))
        frames.append(featurize_spark(spark.createDataFrame(table).coalesce(partitions), spec, keep=["rid"]))

    # 1. golden vectors: tables packed greedily into as few typed DataFrames as fit
    packs: list[tuple[str, list[dict]]] = []
    for line in read_golden(GOLDEN / GOLDEN_FILE):
        spec = specs[line["spec"]]
        for name, pack in packs:
            if name == line["spec"] and typed_table(spec, [ln["record"] for ln in pack + [line]]) is not None:
                pack.append(line)
                break
        else:
            if typed_table(spec, [line["record"]]) is not None:  # else: beyond int64, no Spark type
                packs.append((line["spec"], [line]))
    golden_rows = 0
    for spec_name, lines in packs:
        add(specs[spec_name], [ln["record"] for ln in lines], [(ln["indices"], ln["values"]) for ln in lines])
        golden_rows += len(lines)
    # 2. a few thousand adversarial typed records, checked against the record path
    fz = Featurizer(specs["golden_a"])
    records = random_records(specs["golden_a"], 3000, seed=11, types=column_types(specs["golden_a"], 11))
    add(specs["golden_a"], records, [tuple(x.tolist() for x in fz.transform_record(r)) for r in records],
        partitions=2)
    # 3. the real Criteo sample, when present
    criteo = SHARED_DATA / "criteo-kaggle-random461" / "tr.r100000.csv"
    if criteo.exists():
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(criteo)
        table = table.rename_columns([c.lower() for c in table.column_names]).drop_columns(["id", "label"])
        spec = load_spec("criteo")
        m = Featurizer(spec).transform(table)
        targets = [(m.indices[a:b].tolist(), m.data[a:b].tolist()) for a, b in zip(m.indptr[:-1], m.indptr[1:])]
        add(spec, table.to_pylist(), targets)

    union = frames[0]
    for f in frames[1:]:
        union = union.unionByName(f)
    assert dict(union.dtypes) == {"rid": "bigint", "indices": "array<int>", "values": "array<float>"}
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "400")  # several batches per task
    try:
        rows = union.collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert golden_rows > 100 and len(rows) == len(expected)
    mismatched = [r.rid for r in rows if (list(r.indices), list(r.values)) != expected[r.rid]]
    assert not mismatched, f"{len(mismatched)} rows differ, e.g. rid {mismatched[:5]}"


def test_sparse_vector_column_and_input_errors(spark):
    spec = load_spec(GOLDEN / "golden_b.toml")
    records = [{"id": "a", "flag": "y", "count": 3}, {"id": None, "flag": None, "count": None}]
    df = spark.createDataFrame(typed_table(spec, records, extra={"label": [1, 0]})).coalesce(1)
    out = with_sparse_vector(featurize_spark(df, spec, keep=["label"]), spec).collect()
    fz = Featurizer(spec)
    for row, record in zip(out, records):
        indices, values = fz.transform_record(record)
        assert row.features.size == spec.num_features
        assert row.features.indices.tolist() == indices.tolist()
        assert row.features.values.tolist() == values.astype(float).tolist()
    with pytest.raises(SpecError, match="unknown field.*count"):
        featurize_spark(df.drop("count"), spec)
    with pytest.raises(SpecError, match="keep names unknown column"):
        featurize_spark(df, spec, keep=["nope"])
    with pytest.raises(SpecError, match="overwritten"):
        featurize_spark(df.withColumnRenamed("label", "values"), spec, keep=["values"])
