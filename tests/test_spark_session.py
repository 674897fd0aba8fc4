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
    # whole training windows are collected to the driver: 3/4 of its memory, not Spark's 1 GiB
    from shared.spark import max_result_size

    driver = spark.sparkContext.getConf().get("spark.driver.memory")
    assert spark.sparkContext.getConf().get("spark.driver.maxResultSize") == max_result_size(driver)


def test_max_result_size_is_three_quarters_of_the_driver():
    from shared.spark import SparkStartError, max_result_size

    assert max_result_size("4g") == "3072m" and max_result_size("10G") == "7680m"
    assert max_result_size("512m") == "384m" and max_result_size("2gb") == "1536m"
    with pytest.raises(SparkStartError, match="not a JVM memory size"):
        max_result_size("lots")
