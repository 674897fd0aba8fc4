"""Warehouse subcommands: ``ctr ingest`` (and, as they land, import / features / read)."""

from __future__ import annotations

from pathlib import Path

from shared.argtypes import iso_date


def register(sub) -> None:
    """Add the ``ingest``, ``features build`` and ``read`` subcommands."""
    p = sub.add_parser(
        "ingest",
        help="ingest impression + click logs of a day (or a date range) into the observation table",
        description="Parse, deduplicate, label and quarantine a day's logs into the Delta observation table. "
                    "Idempotent: one Delta commit replaces each day's partition.",
    )
    p.add_argument("--date", type=iso_date, help="the logging day, YYYY-MM-DD")
    p.add_argument("--start", type=iso_date, help="first day of a range (with --end)")
    p.add_argument("--end", type=iso_date, help="last day of a range, inclusive")
    p.add_argument("--window-hours", type=float, default=24.0,
                   help="click attribution window in hours (default 24)")
    p.add_argument("--raw", type=Path, help="raw log folder (default <data root>/raw)")
    s = p.add_argument_group("streaming (--stream)")
    s.add_argument("--stream", action="store_true",
                   help="follow the impression and click folders with Structured Streaming and MERGE into the "
                        "observation table, exactly once (checkpoint: <data root>/checkpoints/ingest)")
    s.add_argument("--once", action="store_true",
                   help="with --stream: ingest the files there now (availableNow) and stop")
    s.add_argument("--max-files", type=int, help="with --stream: files per source per micro-batch (default: all)")
    s.add_argument("--trigger-seconds", type=float, default=30.0,
                   help="with --stream: seconds between micro-batches when running continuously (default 30)")
    s.add_argument("--lateness-minutes", type=float, default=60.0,
                   help="with --stream: how late a click may arrive behind the newest click seen before the "
                        "watermark passes it (default 60: one generator file)")
    p.set_defaults(func=run_ingest)

    p = sub.add_parser(
        "read",
        help="read a date window of a warehouse table at a pinned Delta version (back-tests)",
        description="Rows of [start, end) with partition pruning, at the given or latest Delta version. "
                    "Prints the version read; --out writes the rows to a Parquet file.",
    )
    p.add_argument("--table", default="observations")
    p.add_argument("--start", type=iso_date, required=True, help="first day (inclusive)")
    p.add_argument("--end", type=iso_date, required=True, help="end day (exclusive)")
    p.add_argument("--columns", help="comma-separated columns (default: all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--version", type=int, help="Delta version to read (time travel)")
    g.add_argument("--as-of", help="read the version current at this timestamp, e.g. 2026-11-21T08:00:00Z")
    p.add_argument("--out", type=Path, help="write the rows to this Parquet file")
    p.set_defaults(func=run_read)

    p = sub.add_parser("features", help="aggregate features: build the point-in-time tables")
    fsub = p.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    b = fsub.add_parser("build", help="recompute per-entity look-back counts for a date range (one commit)")
    b.add_argument("--start", type=iso_date, required=True, help="first day to (re)compute")
    b.add_argument("--end", type=iso_date, required=True, help="last day, inclusive")
    b.add_argument("--lookbacks", default="1,7", help="look-back days, comma-separated (default 1,7)")
    b.set_defaults(func=run_features_build)


def run_ingest(args, settings) -> int:
    """``ctr ingest``: ingest one day or a range of days of logs into the observation table."""
    from shared.errors import CommandError

    if getattr(args, "stream", False):
        return _run_stream(args, settings)
    if getattr(args, "once", False):
        raise CommandError("--once goes with --stream")
    if args.date and (args.start or args.end):
        raise CommandError("give either --date or --start/--end, not both")
    if args.date:
        start = end = args.date
    elif args.start and args.end:
        start, end = args.start, args.end
    else:
        raise CommandError("give --date D, or --start D1 --end D2")

    from datetime import timedelta

    from feature_store.ingest import day_files, ingest_range
    from shared.spark import get_spark

    raw = args.raw or settings.raw_dir
    missing = [str(start + timedelta(days=k)) for k in range((end - start).days + 1)
               if not day_files(raw, "impressions", start + timedelta(days=k))]
    if end < start:
        raise CommandError(f"--end {end} is before --start {start}")
    if missing:
        raise CommandError(f"no impression logs under {raw / 'impressions'} for: {', '.join(missing)}"
                           " (run `ctr generate` or point --raw at the logs)")

    spark = get_spark(settings, "ctr-ingest")
    results = ingest_range(spark, settings, start, end, attribution_window_hours=args.window_hours,
                           raw_dir=args.raw)
    total = {k: sum(getattr(r, k) for r in results)
             for k in ("records_read", "observations", "duplicates", "quarantined", "positives")}
    print(f"\ningested {len(results)} day(s) into {settings.table_path('observations')}")
    print(f"  records read {total['records_read']:,} = observations {total['observations']:,}"
          f" + duplicates {total['duplicates']:,} + quarantined {total['quarantined']:,}")
    print(f"  positives {total['positives']:,} (CTR {total['positives'] / max(total['observations'], 1):.4f})")
    print(f"  quarantine: {settings.table_path('quarantine')}; runs: {settings.table_path('ingest_runs')}")
    return 0


def _run_stream(args, settings) -> int:
    """``ctr ingest --stream``: the streaming ingest, to completion (--once) or until Ctrl-C."""
    from feature_store.stream import StreamOptions, checkpoint_dir, labels_final_before, run_stream
    from shared.errors import CommandError
    from shared.spark import get_spark

    if args.date or args.start or args.end:
        raise CommandError("--stream follows the log folders: it takes no --date/--start/--end")
    options = StreamOptions(attribution_window_hours=args.window_hours, lateness_minutes=args.lateness_minutes,
                            max_files_per_trigger=args.max_files, trigger_seconds=args.trigger_seconds,
                            once=args.once)
    spark = get_spark(settings, "ctr-ingest-stream")
    print(f"streaming ingest of {args.raw or settings.raw_dir} -> {settings.table_path('observations')} "
          f"(checkpoint {checkpoint_dir(settings)}; {'until caught up' if args.once else 'Ctrl-C stops'})",
          flush=True)
    run = run_stream(spark, settings, options, raw_dir=args.raw, verbose=True)
    final = labels_final_before(spark, settings)
    print(f"\n{len(run.batches)} micro-batch(es) in {run.seconds:.1f}s: records read {run.total('records_read'):,}"
          f" = observations {run.total('observations'):,} + duplicates {run.total('duplicates'):,}"
          f" + quarantined {run.total('quarantined'):,}; labels updated {run.total('labels_updated'):,}")
    print(f"  labels final for event_time <= {final:%Y-%m-%d %H:%M:%S}" if final else "  no label final yet")
    print(f"  per-batch counts: {settings.table_path('stream_ingest_batches')}")
    return 0


def run_features_build(args, settings) -> int:
    """``ctr features build``: recompute the aggregate partitions of a date range."""
    from shared.errors import CommandError

    try:
        lookbacks = [int(x) for x in args.lookbacks.split(",") if x.strip()]
    except ValueError:
        raise CommandError(f"--lookbacks must be comma-separated whole days, got {args.lookbacks!r}") from None
    from feature_store.aggregates import build_aggregates
    from shared.spark import get_spark

    spark = get_spark(settings, "ctr-features")
    r = build_aggregates(spark, settings, args.start, args.end, lookbacks)
    print(f"aggregate features {r.start}..{r.end}: {r.rows:,} entity-day rows from observations "
          f"v{r.observations_version} -> {settings.table_path('aggregate_features')} v{r.delta_version} "
          f"({r.seconds:.1f}s)")
    return 0


def run_read(args, settings) -> int:
    """``ctr read``: read a window of a table at a pinned version; print rows and time, optionally write Parquet."""
    import time

    from feature_store.reader import Window, read_window, to_arrow
    from shared.spark import get_spark

    window = Window(args.start, args.end)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    spark = get_spark(settings, "ctr-read")
    t0 = time.perf_counter()
    df, info = read_window(spark, settings, window, columns, table=args.table, version=args.version,
                           timestamp=args.as_of)
    table = to_arrow(df)
    secs = time.perf_counter() - t0
    print(f"{args.table} {window} at Delta version {info.version}: {table.num_rows:,} rows x "
          f"{table.num_columns} columns in {secs:.1f}s")
    if args.out:
        import pyarrow.parquet as pq

        args.out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, args.out)
        print(f"wrote {args.out}")
    return 0
