import pytest

from shared.config import load_settings
from shared.spark import SparkStartError, delta_maven_coordinate, get_spark


def test_missing_pre_downloaded_jars_are_named(tmp_path):
    s = load_settings({"home": str(tmp_path), "delta_jars": "/nonexistent/delta-spark.jar"}, env={})
    with pytest.raises(SparkStartError, match="/nonexistent/delta-spark.jar"):
        get_spark(s)


def test_coordinate_matches_installed_wheels():
    from importlib.metadata import version

    assert delta_maven_coordinate() == f"io.delta:delta-spark_4.2_2.13:{version('delta-spark')}"


@pytest.mark.spark
def test_session_has_delta_and_small_machine_settings(spark):
    conf = spark.conf
    assert conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf.get("spark.sql.catalog.spark_catalog").endswith("DeltaCatalog")
    assert int(conf.get("spark.sql.shuffle.partitions")) <= 4
    assert spark.sparkContext.getConf().get("spark.ui.enabled") == "false"
