"""The software environment recorded with a model: installed versions of the key packages."""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from typing import Iterable

KEY_PACKAGES = (
    "ctr-platform", "mlflow", "scikit-learn", "numpy", "scipy", "pandas", "pyarrow",
    "mmh3", "pyspark", "delta-spark", "fastapi", "numba", "deltalake",
)


def package_versions(names: Iterable[str] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of the project's key packages ("not-installed" when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not-installed"
    return versions
