"""Training subcommands: ``ctr train`` and ``ctr models list|promote|rollback``."""

from __future__ import annotations

import argparse

from feature_store.cli_warehouse import iso_date


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train on a warehouse window with the constrained search; register and gate the version",
        description="Back-test windows from --start: train on train-days, validate on the next "
                    "validation-days, test on the next test-days. Logs to MLflow, registers a new version and "
                    "moves the 'champion' alias only if it beats the champion on the same test window.",
    )
    p.add_argument("--start", type=iso_date, required=True, help="first training day, YYYY-MM-DD")
    p.add_argument("--train-days", type=int, default=5)
    p.add_argument("--validation-days", type=int, default=1)
    p.add_argument("--test-days", type=int, default=1)
    p.add_argument("--spec", default="generated", help="feature spec: shipped name or TOML path (default generated)")
    p.add_argument("--table", default="observations", help="warehouse table (default observations)")
    p.add_argument("--delta-version", type=int, help="read this table version (default: latest)")
    p.add_argument("--search-space", help="search space TOML (default training/search_space.toml)")
    p.add_argument("--trials", type=int, help="override the space's trial budget")
    p.add_argument("--wall-seconds", type=float, help="override the space's wall-time budget")
    p.add_argument("--jobs", type=int, help="parallel trial processes")
    p.add_argument("--model-name", default="ctr-model")
    p.add_argument("--margin", type=float, help="relative log-loss improvement needed to take champion")
    p.set_defaults(func=run_train)

    m = sub.add_parser("models", help="list registered versions and manage the champion alias")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    for name, helptext in (("list", "versions with their metrics and aliases"),
                           ("promote", "point champion at VERSION"),
                           ("rollback", "point champion back at the previous champion")):
        q = msub.add_parser(name, help=helptext)
        q.add_argument("--model-name", default="ctr-model")
        if name == "promote":
            q.add_argument("version")
        q.set_defaults(func=run_models)


def run_train(args, settings) -> int:
    from shared.cli import CommandError

    for flag in ("train_days", "validation_days", "test_days"):
        if getattr(args, flag) < 1:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least 1")
    from shared.featurize import load_spec
    from shared.spark import get_spark
    from training.pipeline import Windows, train_from_warehouse

    spec = load_spec(args.spec)  # fail fast, before Spark starts
    windows = Windows.consecutive(args.start, args.train_days, args.validation_days, args.test_days)
    spark = get_spark(settings, "ctr-train")
    result = train_from_warehouse(
        spark, settings, windows, spec, table=args.table, search_space=args.search_space, trials=args.trials,
        wall_seconds=args.wall_seconds, n_jobs=args.jobs, model_name=args.model_name, margin=args.margin,
        delta_version=args.delta_version,
    )
    print(result.summary())
    return 0


def run_models(args, settings) -> int:
    from training import tracking

    if args.models_command == "list":
        rows = tracking.list_versions(settings, args.model_name)
        if not rows:
            print(f"no versions of {args.model_name} in {settings.mlflow_tracking_uri}")
        print(f"{'version':>7}  {'aliases':<12} {'test log-loss':>13}  {'gate':<9} created")
        for r in rows:
            tags = r["tags"]
            print(f"{r['version']:>7}  {','.join(r['aliases']) or '-':<12} {tags.get('test_log_loss', '-'):>13}  "
                  f"{tags.get('gate.decision', '-'):<9} {r['created_at'][:19]}")
    elif args.models_command == "promote":
        previous = tracking.promote(settings, args.model_name, args.version, reason="manual (ctr models promote)")
        print(f"champion: v{args.version} (was {previous or 'none'})")
    else:
        now = tracking.rollback(settings, args.model_name, reason="manual (ctr models rollback)")
        print(f"champion rolled back to v{now}")
    return 0
