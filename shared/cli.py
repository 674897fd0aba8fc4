"""The ``ctr`` command. Each stage registers its own subcommands.

Command modules are imported for their ``register(subparsers)`` function only;
heavy imports (Spark, MLflow, scikit-learn) happen inside the command bodies so
``ctr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from shared.config import Settings, load_settings

# One line per module that contributes subcommands, in --help order.
COMMAND_MODULES: tuple[str, ...] = (
    "shared.commands",
    "feature_store.cli_generate",
    "feature_store.cli_warehouse",
    "feature_store.cli_public",
    "training.cli",
    "serving.cli",
    "monitoring.cli",
)


class CommandError(Exception):
    """An expected failure: printed as one line to stderr, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctr",
        description="ctr-platform: click-prediction warehouse, training, serving and monitoring.",
    )
    g = parser.add_argument_group("configuration (flag > environment > default)")
    g.add_argument("--home", help="data root (env CTR_HOME, default ./ctr_home)")
    g.add_argument("--spark-master", help="Spark master URL (env CTR_SPARK_MASTER, default local[*])")
    g.add_argument("--mlflow-uri", dest="mlflow_tracking_uri",
                   help="MLflow tracking URI (env MLFLOW_TRACKING_URI, default sqlite under the data root)")
    g.add_argument("--host", help="server bind address (env CTR_HOST, default 127.0.0.1)")
    g.add_argument("--port", type=int, help="server port (env CTR_PORT, default 8080)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


SETTING_FLAGS = ("home", "spark_master", "mlflow_tracking_uri", "host", "port")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings({k: getattr(args, k, None) for k in SETTING_FLAGS})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        settings = settings_from_args(args)
        result = args.func(args, settings)
    except (CommandError, ValueError, FileNotFoundError) as exc:
        print(f"ctr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctr {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
