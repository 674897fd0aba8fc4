"""Spark session factory: Delta Lake configured, sized for a small machine.

Delta's JVM jars come from Maven Central through Spark's own package resolution
(``spark.jars.packages``, cached by Ivy under ``~/.ivy2.5.2``). For air-gapped clusters set
``CTR_DELTA_JARS`` to a comma-separated list of pre-downloaded jar paths instead.
The JVM's own output goes to ``<data root>/logs/spark.log``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Iterator

from shared.class_archive import driver_java_options, executor_java_options
from shared.config import Settings
from shared.errors import ConfigurationError
from shared.limits import read_tail

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkStartError(ConfigurationError, RuntimeError):
    """Spark or Delta could not start; the message says what to do."""


DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
#: How much of the end of the JVM's log a failed start reads for its hint (the log only grows).
LOG_TAIL_BYTES = 64 * 1024

#: Seconds the last :func:`get_spark` call took to build a new session (None if reused).
last_start_seconds: float | None = None


def delta_maven_coordinate() -> str:
    """The delta-spark Maven artifact matching the installed pyspark and delta-spark wheels."""
    from importlib.metadata import version

    import pyspark

    spark_mm = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_mm}_2.13:{version('delta-spark')}"


def delta_jars(settings: Settings) -> list[str]:
    """Pre-downloaded Delta jars (``CTR_DELTA_JARS``), checked to exist; empty: resolve from Maven."""
    jars = [j for j in (settings.delta_jars or os.environ.get("CTR_DELTA_JARS", "")).split(",") if j]
    missing = [j for j in jars if not os.path.exists(j)]
    if missing:
        raise SparkStartError(f"CTR_DELTA_JARS names jars that do not exist: {', '.join(missing)}")
    return jars


def max_result_size(driver_memory: str) -> str:
    """``spark.driver.maxResultSize`` for a driver of ``driver_memory`` (JVM notation, e.g.
    ``4g``): three quarters of it. Single-machine training collects whole windows to the
    driver (5M impressions are ~1.2 GiB of Arrow), so Spark's 1 GiB default is too small,
    while an unlimited size would turn a too-large window into a driver crash."""
    units = {"k": 1, "m": 1 << 10, "g": 1 << 20, "t": 1 << 30}
    text = driver_memory.strip().lower().rstrip("b")
    if not text or (text[-1] not in units and not text.isdigit()):
        raise SparkStartError(f"spark driver memory {driver_memory!r} is not a JVM memory size like 4g or 512m")
    kib = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text) // 1024
    return f"{max(1, kib * 3 // 4 // 1024)}m"


def delta_setting(settings: Settings) -> str:
    """How the driver gets Delta's jars: the ``spark.jars`` paths, else the Maven coordinate."""
    return ",".join(delta_jars(settings)) or delta_maven_coordinate()


def _builder(settings: Settings, app_name: str, ui: bool, extra_java_options: str) -> "SparkSession.Builder":
    from pyspark.sql import SparkSession

    setting = delta_setting(settings)
    java_options = " ".join(filter(None, [driver_java_options(settings, setting), extra_java_options]))

    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.default.parallelism", str(settings.spark_shuffle_partitions))
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.driver.maxResultSize", max_result_size(settings.spark_driver_memory))
        .config("spark.ui.enabled", "true" if ui else "false")
        .config("spark.ui.showConsoleProgress", "true" if ui else "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.warehouse.dir", str(settings.home / "spark-warehouse"))
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.adaptive.enabled", "true")
        # Python workers are reused across tasks: pandas UDF start-up is paid once.
        .config("spark.python.worker.reuse", "true")
    )
    if not settings.spark_master.startswith("local") and (executor_options := executor_java_options(setting)):
        builder = builder.config("spark.executor.extraJavaOptions", executor_options)
    jars = delta_jars(settings)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        builder = builder.config("spark.jars.packages", delta_maven_coordinate())
    return builder


@contextlib.contextmanager
def _output_to(path: str | os.PathLike[str]) -> Iterator[None]:
    """Point this process's stdout/stderr file descriptors at ``path`` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def get_spark(settings: Settings, app_name: str = "ctr-platform", ui: bool | None = None,
              extra_java_options: str = "") -> "SparkSession":
    """Get or create the process's SparkSession with Delta Lake enabled.

    ``ui`` defaults to on for interactive runs and off under pytest/CI. The driver's JVM
    options are :func:`shared.class_archive.driver_java_options` (which map the class archive
    when there is one) followed by ``extra_java_options``. A failed
    start (no Java, Maven unreachable without cached jars) raises
    :class:`SparkStartError` with a remedy instead of a JVM stack trace.
    """
    global last_start_seconds
    from pyspark.sql import SparkSession

    delta_jars(settings)  # a bad setting is an error even when a session is already running
    active = SparkSession.getActiveSession()
    if active is not None:
        last_start_seconds = None
        return active
    if ui is None:
        ui = "pytest" not in sys.modules and not os.environ.get("CI")
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = _builder(settings, app_name, ui, extra_java_options)
    log_path = settings.home / "logs" / "spark.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        # The JVM inherits stdout/stderr at launch: send its chatter (Ivy resolution, log4j
        # start-up) to a log file so commands print only their own output.
        with _output_to(log_path):
            spark = builder.getOrCreate()
    except Exception as exc:  # py4j / pyspark raise a variety of types here
        text = str(exc)
        log_tail = read_tail(log_path, LOG_TAIL_BYTES) if log_path.exists() else ""
        if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
            hint = "Spark needs Java 17+: install a JDK (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
        elif "UNRESOLVED DEPENDENCIES" in log_tail or "unresolved dependency" in log_tail:
            hint = (
                f"Delta Lake's jars ({delta_maven_coordinate()}) could not be downloaded from Maven Central. "
                "Check access to Maven Central, or download the delta-spark and delta-storage jars "
                "and set CTR_DELTA_JARS=/path/a.jar,/path/b.jar."
            )
        else:
            hint = "the JVM's output is in the log file named above."
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise SparkStartError(f"Spark failed to start ({first[:200]}); log: {log_path}. {hint}") from None
    spark.sparkContext.setLogLevel("ERROR")
    last_start_seconds = time.perf_counter() - t0
    return spark
