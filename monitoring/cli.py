"""Monitoring subcommands: ``ctr monitor``, ``ctr schedule`` and ``ctr dashboard``."""

from __future__ import annotations

import argparse
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from shared.argtypes import iso_date
from shared.model.registry import DEFAULT_MODEL_NAME
from shared.errors import ConfigurationError, MissingInputError
from shared.limits import MiB, read_text_limited

DASHBOARD_PORT = 8090  # `ctr serve` has 8080
#: Largest ``ctr schedule --policy`` TOML file read: :class:`ConfigurationError` above it.
MAX_POLICY_BYTES = 1 * MiB


def _timestamp(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO timestamp, e.g. 2026-11-21T08:00:00Z, got {text!r}") \
            from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _window(text: str):
    from feature_store.reader import Window

    try:
        start, end = text.split(":")
        return Window(date.fromisoformat(start), date.fromisoformat(end))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected START:END (end exclusive), e.g. 2026-11-01:2026-11-05 ({exc})") \
            from None


def register(sub) -> None:
    """Add the ``monitor``, ``schedule`` and ``dashboard`` subcommands."""
    p = sub.add_parser(
        "monitor",
        help="live CTR, calibration, log-loss, drift and alerts for logged predictions (by day)",
        description="Join a day's prediction log with the observed labels and write per model version x window "
                    "(hour, day) x slice metrics, feature drift (PSI against each version's training window) "
                    "and parameter drift to Delta tables; then evaluate the alert rules. Re-running a day "
                    "replaces its partitions in one commit. With --check and no day, only evaluates the rules "
                    "on the latest day monitored. Exit status 1 with --check when an alert fires.",
    )
    p.add_argument("--date", type=iso_date, help="the logging day, YYYY-MM-DD")
    p.add_argument("--start", type=iso_date, help="first day of a range (with --end)")
    p.add_argument("--end", type=iso_date, help="last day of a range, inclusive")
    p.add_argument("--slices", default="site_id,device_type,advertiser_id",
                   help="raw fields to slice by, comma-separated (default site_id,device_type,advertiser_id)")
    p.add_argument("--top-n", type=int, default=20, help="slice values kept per field, by volume (default 20)")
    p.add_argument("--attribution-hours", type=float, default=24.0, help="click attribution window (default 24)")
    p.add_argument("--as-of", type=_timestamp, help="judge label maturity as of this time (default now)")
    p.add_argument("--label-lookback-days", type=int,
                   help="join only observations from this many days before the day (default: all)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--reference-window", type=_window,
                   help="drift reference START:END for every version (default: each version's train window)")
    p.add_argument("--no-drift", action="store_true", help="skip feature and parameter drift")
    p.add_argument("--no-alerts", action="store_true", help="do not evaluate the alert rules")
    p.add_argument("--rules", type=Path, help="alert rules TOML (default monitoring/alert_rules.toml)")
    p.add_argument("--webhook", help="POST each alert to this URL (overrides the rules file)")
    p.add_argument("--check", action="store_true", help="exit with status 1 when an alert fires")
    p.add_argument("--predictions", type=Path, help="prediction log folder (default <data root>/predictions)")
    p.add_argument("--truth", action="store_true",
                   help="also report the best possible log-loss from the generator's truth files")
    p.set_defaults(func=run_monitor)

    s = sub.add_parser(
        "schedule",
        help="decide between nothing, a warm-started update and a full retrain (age, degradation, drift, "
             "new labelled days, cost) and do it",
        description="Gathers the champion's age, live performance, drift, new labelled days, the measured cost "
                    "of past updates and retrains and the scheduler's own attempts; decides; records the "
                    "decision and its reasons in the schedule_decisions table; runs the update or the "
                    "retraining it decided on. With --every it keeps doing so on an interval until stopped.",
    )
    s.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    s.add_argument("--dry-run", action="store_true", help="decide and record, print the ctr train command")
    s.add_argument("--train-days", type=int, default=5)
    s.add_argument("--trials", type=int, help="search trials of the training run")
    s.add_argument("--wall-seconds", type=float, help="search wall-time budget of the training run")
    s.add_argument("--spec", default="generated", help="feature spec for the training run")
    s.add_argument("--policy", type=Path, help="TOML file of scheduler policy values ([policy] table)")
    s.add_argument("--max-age-hours", type=float)
    s.add_argument("--budget-per-week", type=float)
    s.add_argument("--cost-per-hour", type=float)
    s.add_argument("--every", type=float, metavar="SECONDS",
                   help="run as a long-lived process: decide (and act) every SECONDS until SIGTERM/SIGINT")
    s.add_argument("--max-runs", type=int, metavar="N", help="with --every: stop after N decisions")
    s.set_defaults(func=run_schedule)

    d = sub.add_parser(
        "dashboard",
        help="serve the monitoring dashboards (business and model views)",
        description=f"FastAPI + uvicorn on --host/--port (default 127.0.0.1:{DASHBOARD_PORT}), reading the "
                    "monitoring tables' export under <data root>/monitoring/export. --refresh first rebuilds "
                    "the export from the Delta tables with Spark.",
    )
    d.add_argument("--refresh", action="store_true", help="rebuild the export from Delta before serving")
    d.set_defaults(func=run_dashboard)


def _days(args) -> list[date]:
    from shared.errors import CommandError

    if args.date and (args.start or args.end):
        raise CommandError("give --date or --start/--end, not both")
    if args.date:
        return [args.date]
    if args.start or args.end:
        if not (args.start and args.end):
            raise CommandError("--start and --end go together")
        if args.end < args.start:
            raise CommandError(f"--end {args.end} is before --start {args.start}")
        return [args.start + timedelta(days=k) for k in range((args.end - args.start).days + 1)]
    return []


def run_monitor(args, settings) -> int:
    """``ctr monitor``: metrics, drift and alerts for the given days, or ``--check`` the latest one."""
    from shared.errors import CommandError

    days = _days(args)
    if not days and not args.check:
        raise CommandError("give --date or --start/--end (or --check alone to evaluate the latest day)")
    from monitoring.alerts import load_rules
    from monitoring.live_metrics import MetricsConfig

    rules = None if args.no_alerts else load_rules(args.rules)  # fail fast on a bad rules file
    config = MetricsConfig(
        slice_fields=tuple(s.strip() for s in args.slices.split(",") if s.strip()), top_n=args.top_n,
        attribution_hours=args.attribution_hours, as_of=args.as_of, label_lookback_days=args.label_lookback_days,
    )
    from shared.spark import get_spark

    _log_to_stderr()
    spark = get_spark(settings, "ctr-monitor")
    if not days:
        return _check_latest(spark, settings, rules, args.webhook)
    from monitoring.job import MonitorOptions, monitor_days

    run = monitor_days(spark, settings, days, MonitorOptions(
        metrics=config, model_name=args.model_name, reference_window=args.reference_window,
        feature_drift=not args.no_drift, param_drift=not args.no_drift, alerts=rules is not None,
        rules=rules, webhook_url=args.webhook, predictions_dir=args.predictions,
        oracle=getattr(args, "oracle", None) if args.truth else None,
    ))
    for d in run.days:
        print(run.summaries[d].line())
    for version, why in sorted(run.drift_skipped.items()):
        print(f"feature drift skipped for v{version}: {why}")
    for a in run.alerts.alerts:
        hook = f" (webhook {a['webhook_status']})" if a["webhook_status"] else ""
        print(f"ALERT [{a['severity']}] {a['message']}{hook}")
    print(f"monitor_metrics v{run.metrics_version}; {len(run.feature_drift_rows)} feature-drift rows, "
          f"{len(run.param_drift_rows)} parameter-drift pairs, {len(run.alerts.alerts)} alert(s); "
          + ", ".join(f"{k} {v:.1f}s" for k, v in run.seconds.items()))
    return 1 if args.check and run.alerts.fired else 0


def _log_to_stderr() -> None:
    """Alert log lines (logger ``ctr.monitoring.alerts``) to stderr with a time stamp;
    stdout carries the command's report."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _check_latest(spark, settings, rules, webhook) -> int:
    from pyspark.sql import functions as F

    from feature_store import tables as warehouse
    from monitoring import tables
    from monitoring.alerts import run_alerts
    from shared.errors import CommandError

    path = settings.table_path(tables.METRICS)
    if not warehouse.table_exists(spark, path):
        raise CommandError(f"no monitoring metrics at {path}: run `ctr monitor --date D` first")
    last = spark.read.format("delta").load(path).agg(F.max("date")).first()[0]
    if last is None:
        raise CommandError("the monitoring metrics table is empty")
    result = run_alerts(spark, settings, [last], rules, webhook_url=webhook)
    for a in result.alerts:
        print(f"ALERT [{a['severity']}] {a['message']}")
    print(f"{last}: {len(result.alerts)} alert(s)")
    return 1 if result.fired else 0


def _policy(args):
    import dataclasses
    import tomllib

    from monitoring.scheduler import Policy

    values = {}
    if args.policy:
        try:
            doc = tomllib.loads(read_text_limited(args.policy, MAX_POLICY_BYTES, "policy file", ConfigurationError))
        except FileNotFoundError:
            raise MissingInputError(f"policy file {args.policy} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{args.policy}: not valid TOML: {exc}") from None
        values.update(doc.get("policy", doc))
        known = {f.name for f in dataclasses.fields(Policy)}
        unknown = set(values) - known
        if unknown:
            raise ConfigurationError(f"{args.policy}: unknown policy key(s) {', '.join(sorted(unknown))}")
        if "calibration_range" in values:
            values["calibration_range"] = tuple(values["calibration_range"])
    for name in ("max_age_hours", "budget_per_week", "cost_per_hour"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return Policy(**values)


def run_schedule(args, settings) -> int:
    """``ctr schedule``: decide between nothing, an update and a retrain, record it, and act (once or ``--every``)."""
    from shared.errors import CommandError

    if args.train_days < 1:
        raise CommandError("--train-days must be at least 1")
    policy = _policy(args)
    from monitoring.schedule_job import run_schedule as schedule
    from shared.spark import get_spark

    if args.every is not None and args.every <= 0:
        raise CommandError("--every must be a positive number of seconds")
    if args.max_runs is not None and (args.max_runs < 1 or args.every is None):
        raise CommandError("--max-runs needs --every and must be at least 1")
    spark = get_spark(settings, "ctr-schedule")
    kwargs = dict(model_name=args.model_name, policy=policy, dry_run=args.dry_run, oracle=getattr(args, "oracle", None),
                  train_days=args.train_days, trials=args.trials, wall_seconds=args.wall_seconds, spec=args.spec)
    if args.every is not None:
        from monitoring.schedule_job import run_forever

        failures = []

        def report(out) -> None:
            print(f"[{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}Z]", flush=True)
            if _print_outcome(out, args.dry_run):
                failures.append(out)

        runs = run_forever(spark, settings, every_seconds=args.every, max_runs=args.max_runs, report=report,
                           **kwargs)
        print(f"scheduler stopped after {runs} decision(s), {len(failures)} failed attempt(s)")
        return 0
    return 1 if _print_outcome(schedule(spark, settings, **kwargs), args.dry_run) else 0


def _print_outcome(out, dry_run: bool) -> bool:
    """Print one scheduler decision and what it ran; True when the attempt failed."""
    d = out.decision
    print(f"decision: {d.action.upper()} (champion {out.context.get('champion') or 'none'}; "
          f"cost {d.estimated_cost:.2f}, expected value {d.expected_value:.2f})", flush=True)
    for r in d.reasons:
        print(f"  - {r}")
    if d.retry_at:
        print(f"  next possible attempt: {d.retry_at:%Y-%m-%d %H:%M} UTC")
    if out.command:
        print(("would run: " if dry_run else "ran: ") + out.command)
    if out.trained_version:
        print(out.context.get("train_summary", f"trained version {out.trained_version}"))
    if out.error:
        print(f"training failed: {out.error}", flush=True)
        return True
    return False


def run_dashboard(args, settings) -> int:
    """``ctr dashboard``: serve the dashboards (after rebuilding the export with ``--refresh``)."""
    from monitoring.dashboard import serve

    if args.refresh:
        from monitoring import export
        from shared.spark import get_spark

        counts = export.refresh(get_spark(settings, "ctr-dashboard"), settings)
        print("export refreshed: " + ", ".join(f"{k} {v:,} rows" for k, v in counts.items()), flush=True)
    port = args.port if args.port is not None else (settings.port if os.environ.get("CTR_PORT") else DASHBOARD_PORT)
    return serve(settings, settings.host, port)
