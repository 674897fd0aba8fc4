"""Training subcommands: ``ctr train``, ``ctr backtest`` and ``ctr models list|promote|rollback``.

``ctr train`` runs the scikit-learn search by default; ``--engine mllib`` fits Spark MLlib
(:mod:`training.distributed`), ``--per-segment COLUMN`` one model per segment value
(:mod:`training.segments`); both take fixed settings or a small grid with ``--param``.
"""

from __future__ import annotations


from shared.argtypes import iso_date
from shared.model.registry import DEFAULT_MODEL_NAME, SEGMENT_MODEL_NAME


def _data_args(p) -> None:
    """The warehouse-reading flags ``train`` and ``backtest`` share."""
    p.add_argument("--spec", default="generated", help="feature spec: shipped name or TOML path (default generated)")
    p.add_argument("--table", default="observations", help="warehouse table (default observations)")
    p.add_argument("--delta-version", type=int, help="read this table version (default: latest)")


def register(sub) -> None:
    """Add the ``train``, ``backtest`` and ``models`` subcommands."""
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
    _data_args(p)
    p.add_argument("--search-space", help="search space TOML (default training/search_space.toml)")
    p.add_argument("--trials", type=int, help="override the space's trial budget")
    p.add_argument("--wall-seconds", type=float, help="override the space's wall-time budget")
    p.add_argument("--jobs", type=int, help="trials run at once (processes, or concurrent Spark jobs)")
    p.add_argument("--trials-on", choices=("threads", "processes", "spark"), default="threads",
                   help="run search trials in threads of this process (default: the engines release the GIL), "
                        "in local processes, or as Spark tasks on the session's executors (a cluster: the data "
                        "root must be shared storage)")
    p.add_argument("--update", nargs="?", const="champion", metavar="REF",
                   help="warm-started update: continue the engine state of a registered version (default the "
                        "champion) over the --train-days from --start with its own setting, test on the "
                        "--test-days after them, register with lineage and gate; no search")
    p.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    p.add_argument("--model-name", help="registered model (default ctr-model; ctr-segment-model with --per-segment)")
    p.add_argument("--margin", type=float, help="relative log-loss improvement needed to take champion")
    g = p.add_argument_group("distributed and per-segment training")
    g.add_argument("--engine", choices=("search", "mllib"), default="search",
                   help="search: the constrained search over the single-machine engines (ftrl, sklearn) of "
                        "the search space (default); mllib: Spark MLlib logistic regression on the same hashed "
                        "features")
    g.add_argument("--per-segment", metavar="COLUMN",
                   help="fit one model per value of COLUMN (e.g. advertiser_id) in parallel with Spark and "
                        "register global model + segments as one version")
    g.add_argument("--param", action="append", metavar="KEY=V[,V...]",
                   help="setting for --engine mllib / --per-segment (penalty, C, l1_ratio, downsample_rate, "
                        "max_iter, tol); several values make a grid chosen on validation. Repeatable")
    g.add_argument("--min-rows", type=int, default=200, help="per-segment: fewer training rows -> global model")
    g.add_argument("--min-positives", type=int, default=10,
                   help="per-segment: fewer training clicks -> global model")
    g.add_argument("--retries", type=int, default=2, help="per-segment: retries of failed segment tasks")
    g.add_argument("--run-id", help="per-segment: resume this run id (skips segments it already completed)")
    g.add_argument("--global-engine", choices=("mllib", "sklearn"), default="mllib",
                   help="per-segment: how the global (fallback) model is fitted (default mllib)")
    p.set_defaults(func=run_train)

    b = sub.add_parser(
        "backtest",
        help="rolling back-test: train k days, test the next, N times; metrics to the backtest_metrics table",
        description="For each of --days test days t = start + train-days + i: fit one setting on the "
                    "train-days days before t and score day t. Metrics per day go to the Delta table "
                    "backtest_metrics (run_id, test_date, ...) and are printed.",
    )
    b.add_argument("--start", type=iso_date, required=True, help="first training day, YYYY-MM-DD")
    b.add_argument("--days", type=int, required=True, help="number of test days")
    b.add_argument("--train-days", type=int, required=True, help="training days before each test day")
    _data_args(b)
    b.add_argument("--engine", choices=("sklearn", "ftrl", "mllib"), default=None,
                   help="engine of every day's fit (default: the --from-model version's, else sklearn)")
    b.add_argument("--param", action="append", metavar="KEY=VALUE", help="fixed setting (repeatable)")
    b.add_argument("--from-model", metavar="REF",
                   help="take setting and bits from a registered version (alias such as champion, or number)")
    b.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model for --from-model")
    b.add_argument("--run-id", help="back-test run id (default: new); re-running one replaces its rows")
    b.set_defaults(func=run_backtest)

    m = sub.add_parser("models", help="list registered versions and manage the champion alias")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    for name, helptext in (("list", "versions with their metrics and aliases"),
                           ("promote", "point champion at VERSION"),
                           ("rollback", "point champion back at the previous champion")):
        q = msub.add_parser(name, help=helptext)
        q.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
        if name == "promote":
            q.add_argument("version")
        q.set_defaults(func=run_models)


def run_train(args, settings) -> int:
    """``ctr train``: search, refit, gate and register a model on a warehouse window."""
    from shared.errors import CommandError

    for flag in ("train_days", "validation_days", "test_days"):
        if getattr(args, flag) < 1:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least 1")
    from shared.featurize import load_spec
    from shared.spark import get_spark
    from training.pipeline import Windows, train_from_warehouse

    spec = load_spec(args.spec)  # fail fast, before Spark starts
    windows = Windows.consecutive(args.start, args.train_days, args.validation_days, args.test_days)
    if args.per_segment or args.engine == "mllib":
        from training.distributed import parse_grid

        search_flags = [f for f in ("search_space", "trials", "wall_seconds", "jobs") if getattr(args, f) is not None]
        if search_flags:
            raise CommandError(f"--{search_flags[0].replace('_', '-')} belongs to the sklearn search; "
                               "--engine mllib and --per-segment take --param settings")

        grid = parse_grid(args.param)
        spark = get_spark(settings, "ctr-train")
        if args.per_segment:
            from training.segments import train_segments_from_warehouse

            if min(args.min_rows, args.min_positives) < 1 or args.retries < 0:
                raise CommandError("--min-rows and --min-positives must be >= 1, --retries >= 0")
            segment_result = train_segments_from_warehouse(
                spark, settings, windows, args.per_segment, spec, run_id=args.run_id, grid=grid,
                min_rows=args.min_rows, min_positives=args.min_positives, max_retries=args.retries,
                global_engine=args.global_engine, table=args.table, model_name=args.model_name or SEGMENT_MODEL_NAME,
                margin=args.margin, delta_version=args.delta_version, oracle=getattr(args, "oracle", None),
            )
            print(segment_result.summary())
            return 0
        from training.distributed import train_mllib_from_warehouse

        result = train_mllib_from_warehouse(
            spark, settings, windows, spec, grid=grid, table=args.table,
            model_name=args.model_name or DEFAULT_MODEL_NAME, margin=args.margin,
            delta_version=args.delta_version, oracle=getattr(args, "oracle", None),
        )
        print(result.summary())
        return 0
    if args.param:
        raise CommandError("--param applies to --engine mllib and --per-segment; the default engine searches "
                           "its --search-space")
    if args.update:
        from training.pipeline import update_from_champion

        from feature_store.reader import Window

        new = Window(args.start, windows.train.end)
        result = update_from_champion(settings, new, Window(new.end, new.end + (windows.test.end - windows.test.start)),
                                      table=args.table, ref=args.update,
                                      model_name=args.model_name or DEFAULT_MODEL_NAME, margin=args.margin,
                                      delta_version=args.delta_version, oracle=getattr(args, "oracle", None))
        print(result.summary())
        return 0
    result = train_from_warehouse(
        None, settings, windows, spec, table=args.table, search_space=args.search_space, trials=args.trials,
        wall_seconds=args.wall_seconds, n_jobs=args.jobs, model_name=args.model_name or DEFAULT_MODEL_NAME,
        margin=args.margin, delta_version=args.delta_version, trials_on=args.trials_on, progress=not args.quiet,
        oracle=getattr(args, "oracle", None),
    )
    print(result.summary())
    return 0


def run_backtest(args, settings) -> int:
    """``ctr backtest``: a rolling back-test of one setting, given or taken from a registered version."""
    from shared.errors import CommandError

    if args.days < 1 or args.train_days < 1:
        raise CommandError("--days and --train-days must be at least 1")
    if args.param and args.from_model:
        raise CommandError("give --param or --from-model, not both")
    from shared.featurize import load_spec
    from training.backtest import ftrl_setting, setting_from_model
    from training.backtest import run_backtest as backtest
    from training.distributed import parse_grid

    spec = load_spec(args.spec)
    bits = None
    engine = args.engine or "sklearn"
    if args.from_model:
        setting, bits, engine = setting_from_model(settings, args.model_name, args.from_model)
        if args.engine and args.engine != engine:
            raise CommandError(f"--from-model {args.from_model} is a {engine} version, not --engine {args.engine}")
    else:
        grid = parse_grid(args.param, ftrl_setting) if engine == "ftrl" else parse_grid(args.param)
        if len(grid) != 1:
            raise CommandError("a back-test runs one setting: give each --param a single value")
        setting = grid[0]
    result = backtest(None, settings, args.start, args.days, args.train_days, spec, setting=setting, bits=bits,
                      engine=engine, run_id=args.run_id, table=args.table, delta_version=args.delta_version,
                      oracle=getattr(args, "oracle", None))
    print(result.table())
    return 0


def run_models(args, settings) -> int:
    """``ctr models list|promote|rollback``: show registered versions or move the champion alias."""
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
