"""``ctr import criteo PATH`` and ``ctr import avazu PATH``: public CTR datasets into the warehouse.

The layouts, tables, quarantine reasons and the Criteo date mapping are documented in
:mod:`feature_store.public`.
"""

from __future__ import annotations

from pathlib import Path

from shared.argtypes import positive_int
from shared.argtypes import iso_date


def register(sub) -> None:
    """Add the ``import`` subcommand."""
    from feature_store.public import DEFAULT_DAYS, DEFAULT_START_DATE

    p = sub.add_parser(
        "import",
        help="import a public CTR dataset file (Criteo, Avazu) into its own observation table",
        description="Load one Criteo or Avazu file into criteo_observations / avazu_observations, bad rows "
                    "into criteo_quarantine / avazu_quarantine (file, line, reason), one row into import_runs. "
                    "Idempotent: re-importing a file replaces the dates it covers in one Delta commit.",
    )
    which = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    c = which.add_parser(
        "criteo",
        help="Criteo Display Advertising Challenge: tab-separated label,I1..I13,C1..C26 (no header), "
             "or the Kaggle CSV with header Id,Label,...",
        description="Criteo has no timestamps: row i of a file of n rows (0-based, after any header) gets "
                    "event_index i and date START + floor(DAYS * i / n) days.",
    )
    c.add_argument("path", metavar="PATH", help="the file (plain or .gz)")
    c.add_argument("--start-date", type=iso_date, default=DEFAULT_START_DATE,
                   help=f"date of the file's first row (default {DEFAULT_START_DATE.isoformat()}, a placeholder: "
                        "Criteo did not publish the dates)")
    c.add_argument("--days", type=positive_int, default=DEFAULT_DAYS,
                   help=f"consecutive days the file's rows are spread over, in row order (default {DEFAULT_DAYS})")
    c.set_defaults(func=run_import)
    a = which.add_parser(
        "avazu",
        help="Avazu CTR prediction: CSV with header id,click,hour(YYMMDDHH),C1,...",
        description="hour (YYMMDDHH, UTC) gives event_time, date, hour_of_day, day_of_week (0 = Monday); "
                    "rows are deduplicated by id.",
    )
    a.add_argument("path", metavar="PATH", help="the file (plain or .gz)")
    a.set_defaults(func=run_import, start_date=DEFAULT_START_DATE, days=DEFAULT_DAYS)


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("file:")


def run_import(args, settings) -> int:
    """``ctr import``: load one Criteo or Avazu file into its observation and quarantine tables."""
    from shared.errors import CommandError

    from feature_store.public import (
        IMPORT_RUNS, LayoutError, detect_layout, first_line_of_local_file, import_file, observations_table,
        quarantine_table,
    )

    path = args.path
    if _is_local(path):
        local = Path(path).expanduser()
        if not local.exists():
            raise CommandError(f"no such file: {path}")
        if not local.is_file():
            raise CommandError(f"{path} is not a file (import one file at a time)")
        path = str(local.resolve())
        try:
            detect_layout(args.dataset, first_line_of_local_file(local))  # refuse before Spark starts
        except (OSError, EOFError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        except LayoutError as exc:
            raise CommandError(f"{path}: {exc}") from None

    from shared.spark import get_spark

    spark = get_spark(settings, f"ctr-import-{args.dataset}")
    from pyspark.errors import AnalysisException

    try:
        result = import_file(spark, settings, args.dataset, path, start_date=args.start_date, days=args.days)
    except LayoutError as exc:
        raise CommandError(f"{path}: {exc}") from None
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" not in str(exc):
            raise
        raise CommandError(f"no such file: {path}") from None
    print(result.line())
    print(f"  observations: {settings.table_path(observations_table(args.dataset))}")
    print(f"  quarantine:   {settings.table_path(quarantine_table(args.dataset))}")
    print(f"  runs:         {settings.table_path(IMPORT_RUNS)} (run {result.run_id})")
    return 0
