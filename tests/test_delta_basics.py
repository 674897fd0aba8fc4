"""Delta Lake on the real session: the operations the warehouse relies on."""

import pytest

pytestmark = pytest.mark.spark


def test_write_append_replace_where_and_time_travel(spark, tmp_path):
    path = str(tmp_path / "t")
    mk = lambda rows: spark.createDataFrame(rows, "date string, x long")  # noqa: E731
    mk([("2026-01-01", 1), ("2026-01-02", 2)]).write.format("delta").partitionBy("date").save(path)
    mk([("2026-01-03", 3)]).write.format("delta").mode("append").save(path)
    (mk([("2026-01-02", 20), ("2026-01-02", 21)]).write.format("delta").mode("overwrite")
        .option("replaceWhere", "date = '2026-01-02'").save(path))

    now = {(r.date, r.x) for r in spark.read.format("delta").load(path).collect()}
    assert now == {("2026-01-01", 1), ("2026-01-02", 20), ("2026-01-02", 21), ("2026-01-03", 3)}
    v0 = {(r.date, r.x) for r in spark.read.format("delta").option("versionAsOf", 0).load(path).collect()}
    assert v0 == {("2026-01-01", 1), ("2026-01-02", 2)}
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, path).history().select("version", "operation").collect()
    assert [h.version for h in history] == [2, 1, 0]


def test_schema_mismatch_is_rejected_with_a_clear_error(spark, tmp_path):
    from pyspark.errors import AnalysisException

    path = str(tmp_path / "s")
    spark.createDataFrame([(1, "a")], "id long, name string").write.format("delta").save(path)
    with pytest.raises(AnalysisException) as err:
        spark.createDataFrame([(1, 2.5)], "id long, score double").write.format("delta").mode("append").save(path)
    assert "schema mismatch" in str(err.value).lower() or "DELTA_METADATA_MISMATCH" in str(err.value)
    assert spark.read.format("delta").load(path).count() == 1  # nothing half-written
