"""Shared fixtures: one real Spark + Delta session for the whole test session, and the
worlds the monitoring and serving test modules share (built by the helper modules
:mod:`monitoring_support` and :mod:`serving_support`, which hold no fixtures)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
#: The reference data beside the checkout (../shared/data); tests skip when it is absent.
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not present: {path}")
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked ``full`` run only with CTR_TEST_FULL=1 (``make test-full``): ``make test``
    stays within its time budget (20 minutes on 2 cores)."""
    if os.environ.get("CTR_TEST_FULL"):
        return
    skip = pytest.mark.skip(reason="a long check run by `make test-full` (CTR_TEST_FULL=1)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ctr_home")


@pytest.fixture(scope="session")
def spark_settings(session_home) -> Settings:
    return load_settings(
        {"home": str(session_home), "spark_master": "local[2]"},
        env={},
    )


@pytest.fixture(scope="session")
def spark(spark_settings):
    from shared.spark import get_spark

    session = get_spark(spark_settings, app_name="ctr-tests", ui=False)
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


@pytest.fixture()
def settings(tmp_path) -> Settings:
    """Settings rooted in a fresh temporary data root (no environment leaks in)."""
    return load_settings({"home": str(tmp_path / "home")}, env={})


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """The monitoring tests' tiny world, with the monitoring job run over it (built once per session)."""
    from monitoring_support import monitoring_world

    return monitoring_world(spark, tmp_path_factory)


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """The serving tests' world: generated impressions and fitted model directories (built once per session)."""
    from serving_support import serving_world

    return serving_world(tmp_path_factory)
