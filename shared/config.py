"""The platform's one typed configuration object.

Precedence is flag > environment > default, resolved in one place so every
command and test sees the same values.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from shared.errors import ConfigurationError

ENV_PREFIX = "CTR_"


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Paths are absolute once resolved."""

    home: Path
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 4
    mlflow_tracking_uri: str = ""
    #: Artifact root of new experiments: under the data root for a local store; empty (the
    #: tracking server's own proxied store) when the tracking URI is a server.
    mlflow_artifact_root: str = ""
    mlflow_experiment: str = "ctr-platform"
    delta_jars: str = ""
    host: str = "127.0.0.1"
    port: int = 8080

    # Derived locations under the data root; one definition each.
    @property
    def raw_dir(self) -> Path:
        """Where the raw impression and click logs land."""
        return self.home / "raw"

    @property
    def warehouse_dir(self) -> Path:
        """Root of the Delta tables."""
        return self.home / "warehouse"

    @property
    def mlflow_dir(self) -> Path:
        """Root of the local MLflow store."""
        return self.home / "mlflow"

    @property
    def predictions_dir(self) -> Path:
        """Root of the bidder's prediction log."""
        return self.home / "predictions"

    def table_path(self, name: str) -> str:
        """Filesystem path of a named Delta table in the warehouse."""
        return str(self.warehouse_dir / name)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (``home`` as a string), for printing."""
        d = asdict(self)
        d["home"] = str(self.home)
        return d


# Environment variable for each setting: CTR_HOME, CTR_SPARK_MASTER, ...
ENV_NAMES = {f.name: ENV_PREFIX + f.name.upper() for f in fields(Settings)}
ENV_NAMES["mlflow_tracking_uri"] = "MLFLOW_TRACKING_URI"  # the name MLflow users already set


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if kind in ("int", int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"setting {name!r} must be an integer, got {value!r}") from None
    if name == "home":
        return Path(value).expanduser().resolve()
    return str(value)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve settings: explicit overrides (flags) > environment > defaults.

    Overrides whose value is None are ignored so argparse defaults of None mean
    "not given".
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    values: dict[str, Any] = {}
    for name, env_name in ENV_NAMES.items():
        if env.get(env_name):
            values[name] = _coerce(name, env[env_name])
    for name, value in (overrides or {}).items():
        if name not in ENV_NAMES:
            raise ValueError(f"unknown setting {name!r}")
        if value is not None and value != "":
            values[name] = _coerce(name, value)
    values.setdefault("home", (cwd / "ctr_home").resolve())
    home = values["home"]
    if home.exists() and not home.is_dir():
        raise ConfigurationError(f"setting 'home' (--home, {ENV_NAMES['home']}): {home} is not a directory")
    settings = Settings(**values)
    if not settings.mlflow_tracking_uri:
        settings = replace(settings, mlflow_tracking_uri=f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}")
    if not settings.mlflow_artifact_root and not tracking_server(settings.mlflow_tracking_uri):
        settings = replace(settings, mlflow_artifact_root=(settings.mlflow_dir / "artifacts").as_uri())
    return settings


def tracking_server(uri: str) -> bool:
    """Whether ``uri`` names an MLflow tracking server (http/https): the server decides where
    artifacts go (its proxied artifact store), so no artifact root under the data root is set."""
    return uri.split(":", 1)[0].lower() in ("http", "https")
