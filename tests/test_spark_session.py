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


def test_the_class_archive_option_follows_the_file(tmp_path, monkeypatch):
    from shared.class_archive import DIR_ENV, archive_path, driver_java_options, executor_java_options

    monkeypatch.setenv(DIR_ENV, str(tmp_path / "archives"))
    s = load_settings({"home": str(tmp_path / "home")}, env={})
    setting = delta_maven_coordinate()
    assert driver_java_options(s, setting) == f"-Dderby.system.home={tmp_path / 'home' / 'derby'}"
    assert executor_java_options(setting) == ""
    path = archive_path(setting)
    assert path.parent == tmp_path / "archives" and archive_path("/other/delta.jar") != path
    path.parent.mkdir()
    path.write_bytes(b"not an archive")
    assert driver_java_options(s, setting).endswith(f" -XX:SharedArchiveFile={path}")
    assert executor_java_options(setting) == f"-XX:SharedArchiveFile={path}"


def test_a_damaged_archive_costs_only_the_speed_up(tmp_path):
    """The JVM (default -Xshare:auto) starts without an archive it cannot map."""
    import subprocess

    from shared.class_archive import java_binary

    damaged = tmp_path / "damaged.jsa"
    damaged.write_bytes(b"\0" * 4096)
    run = subprocess.run([java_binary(), f"-XX:SharedArchiveFile={damaged}", "-version"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    refused = subprocess.run([java_binary(), "-Xshare:on", f"-XX:SharedArchiveFile={damaged}", "-version"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0  # the same file is really not an archive


@pytest.mark.spark
def test_the_driver_maps_this_installations_class_archive(spark, spark_settings):
    """``make install`` writes the archive (``python -m shared.spark_setup``); the test session's
    driver was started with it and it maps for exactly the driver's class path."""
    import subprocess
    import sys

    from shared.class_archive import archive_path, java_binary
    from shared.spark import delta_setting

    path = archive_path(delta_setting(spark_settings))
    options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    if not path.is_file():  # outside `make`: write it now (the next session's driver maps it)
        subprocess.run([sys.executable, "-m", "shared.spark_setup"], check=True, timeout=900)
    else:
        assert f"-XX:SharedArchiveFile={path}" in options
    class_path = spark._jvm.java.lang.System.getProperty("java.class.path")
    run = subprocess.run([java_binary(), "-Xshare:on", f"-XX:SharedArchiveFile={path}", "-cp", class_path,
                          "-version"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
