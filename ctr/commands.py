"""Platform-wide subcommands: ``ctr config`` and ``ctr demo``."""

from __future__ import annotations

import json


def register(sub) -> None:
    """Add the ``config`` and ``demo`` subcommands."""
    p = sub.add_parser("config", help="print the effective configuration (flag > env > default)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run_config)

    p = sub.add_parser("demo", help="run the platform's main job end to end on the embedded defaults")
    p.add_argument("--days", type=int, default=12,
                   help="days of ad logs to generate (default 12: a week of training, validation, test, 3 served days)")
    p.add_argument("--per-day", type=int, default=100_000, help="impressions per day (default 100000)")
    p.add_argument("--seed", type=int, default=7, help="generator seed")
    p.set_defaults(func=run_demo)


def run_config(args, settings) -> int:
    """``ctr config``: print the effective settings, as aligned text or JSON."""
    values = settings.as_dict()
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        width = max(map(len, values))
        for key, value in values.items():
            print(f"{key:<{width}}  {value}")
    return 0


def run_demo(args, settings) -> int:
    """``ctr demo``: run the platform end to end on generated logs."""
    from ctr.demo import run  # deferred: the demo imports every stage and with them Spark, MLflow, scikit-learn

    return run(settings, days=args.days, per_day=args.per_day, seed=args.seed)
