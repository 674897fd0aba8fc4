"""Where the Spark driver's class-data-sharing (CDS) archive lives, and the JVM options for it.

A cold driver JVM spends most of a small job's seconds loading, verifying and linking the
classes of Spark, Delta and their dependencies; every ``ctr`` command starts one. A dynamic
CDS archive (JDK 13+, ``-XX:ArchiveClassesAtExit``) written once per installation lets later
drivers map those classes instead (``python -m shared.spark_setup``, run by ``make install``).

The archive is only valid for the JVM and the class path it was written with, so its file
name carries a key of both: the java binary, the pyspark installation and the Delta jars
setting. Any other installation simply finds no archive. A stale or damaged archive only
loses the speed-up: with the default ``-Xshare:auto`` the JVM ignores an archive that does
not map and starts as usual.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from shared.config import Settings

#: Environment variable naming the folder of archives (default: inside the Python environment).
DIR_ENV = "CTR_CLASS_ARCHIVE_DIR"


def archive_dir() -> Path:
    """The folder of archives: ``$CTR_CLASS_ARCHIVE_DIR``, else ``<sys.prefix>/var/ctr-platform``
    (the virtualenv the project is installed in: the archive goes with the installation)."""
    return Path(os.environ.get(DIR_ENV) or Path(sys.prefix) / "var" / "ctr-platform")


def java_binary() -> str:
    """The java the driver will run (``$JAVA_HOME/bin/java``, else the one on ``PATH``), resolved."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else (shutil.which("java") or "java")
    return os.path.realpath(java)


def archive_key(delta_setting: str) -> str:
    """What an archive is valid for: the java binary (path and mtime), pyspark's jars and the
    Delta jars setting (``spark.jars`` paths or the Maven coordinate), as a short hash."""
    import pyspark

    java = java_binary()
    mtime = os.path.getmtime(java) if os.path.exists(java) else 0.0
    parts = [java, f"{mtime:.0f}", os.path.dirname(os.path.realpath(pyspark.__file__)), pyspark.__version__,
             delta_setting]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def archive_path(delta_setting: str) -> Path:
    """The archive file for this installation and Delta jars setting."""
    return archive_dir() / f"spark-driver-{archive_key(delta_setting)}.jsa"


def executor_java_options(delta_setting: str) -> str:
    """``spark.executor.extraJavaOptions`` on a cluster: the same archive when this machine has
    one (a standalone worker started from this installation, ``ctr cluster up``, launches its
    executors with the driver's class path). A worker where the file is absent, or whose
    installation differs, starts its executors without it."""
    path = archive_path(delta_setting)
    return f"-XX:SharedArchiveFile={path}" if path.is_file() else ""


def driver_java_options(settings: Settings, delta_setting: str) -> str:
    """``spark.driver.extraJavaOptions``: Derby's home under the data root, and the class
    archive when one has been written for this installation."""
    return " ".join(filter(None, [f"-Dderby.system.home={settings.home / 'derby'}",
                                  executor_java_options(delta_setting)]))
