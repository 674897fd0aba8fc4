"""The ``ctr`` command. Each stage registers its own subcommands; this module imports them.

Command modules are imported for their ``register(subparsers)`` function only;
heavy imports (Spark, MLflow, scikit-learn) happen inside the command bodies so
``ctr --help`` stays instant. The settings flags (``--home``, ``--port``, ...) are accepted
before and after the subcommand. Declared errors (:mod:`shared.errors`) print one line;
anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterator, Sequence

from ctr import cluster, commands
from feature_store import cli_public, cli_warehouse
from monitoring import cli as monitoring_cli
from serving import cli as serving_cli
from shared.config import Settings, load_settings
from shared.errors import CommandError, CtrError  # noqa: F401  (CommandError: re-exported for callers)
from synthetic import cli as synthetic_cli
from synthetic.oracle import oracle_for
from training import cli as training_cli

# The modules that contribute subcommands (each has ``register(subparsers)``), in --help order.
COMMAND_MODULES = (commands, synthetic_cli, cli_warehouse, cli_public, training_cli, serving_cli, monitoring_cli,
                   cluster)


def _add_setting_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """The global settings flags. The top-level parser gets them with default None; every
    subcommand parser again with ``argparse.SUPPRESS``, so they may follow the subcommand
    (``ctr serve --port 9000``) and a value given there overrides one given before it."""
    g = parser.add_argument_group("configuration (flag > environment > default)")
    g.add_argument("--home", default=default, help="data root (env CTR_HOME, default ./ctr_home)")
    g.add_argument("--spark-master", default=default,
                   help="Spark master URL (env CTR_SPARK_MASTER, default local[*])")
    g.add_argument("--mlflow-uri", dest="mlflow_tracking_uri", default=default,
                   help="MLflow tracking URI (env MLFLOW_TRACKING_URI, default sqlite under the data root)")
    g.add_argument("--host", default=default, help="server bind address (env CTR_HOST, default 127.0.0.1)")
    g.add_argument("--port", type=int, default=default, help="server port (env CTR_PORT, default 8080)")


def _subcommand_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (``ctr models``, ``ctr models list``, ...), once each."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if id(child) not in seen:  # aliases map several names to one parser
                    seen.add(id(child))
                    yield child
                    yield from _subcommand_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    """The ``ctr`` argument parser: the setting flags plus every stage's subcommands."""
    parser = argparse.ArgumentParser(
        prog="ctr",
        description="ctr-platform: click-prediction warehouse, training, serving and monitoring.",
    )
    _add_setting_flags(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    for child in _subcommand_parsers(parser):
        _add_setting_flags(child, argparse.SUPPRESS)
    return parser


SETTING_FLAGS = ("home", "spark_master", "mlflow_tracking_uri", "host", "port")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The effective settings: flags given on the command line, then environment, then defaults."""
    return load_settings({k: getattr(args, k, None) for k in SETTING_FLAGS})


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``ctr`` command; a :class:`~shared.errors.CtrError` is one line on stderr and exit
    status 2, any other exception is a bug and propagates with its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        settings = settings_from_args(args)
        args.oracle = oracle_for(settings)  # the generator's truth, when this data root has it
        result = args.func(args, settings)
    except CtrError as exc:  # a declared error (shared.errors): the user's to fix, one line
        print(f"ctr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctr {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
