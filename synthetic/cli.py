"""``ctr generate``: write realistic bidder and click-tracker logs (see :mod:`synthetic.logs`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.argtypes import iso_date, non_negative_int, positive_int
from shared.config import Settings
from synthetic.config import GeneratorConfig
from synthetic.logs import generate_logs




def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ctr generate`` to ``subparsers``."""
    d = GeneratorConfig()
    p = subparsers.add_parser(
        "generate",
        help="generate realistic impression, click and ground-truth logs",
        description=(
            "Write D days of OpenRTB 2.6 impression logs, click logs (filed by click time), the hidden "
            "ground truth (p_true per impression, truth/model.json) and manifest.json. "
            "Deterministic for a seed."
        ),
    )
    p.add_argument("--days", type=positive_int, default=d.days, help=f"days to generate (default {d.days})")
    p.add_argument("--start-date", type=iso_date, default=d.start_date,
                   help=f"first UTC day, YYYY-MM-DD (default {d.start_date.isoformat()})")
    p.add_argument("--per-day", type=non_negative_int, default=d.impressions_per_day,
                   help=f"impressions per day (default {d.impressions_per_day:,})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--drift-day", type=non_negative_int, default=None,
                   help="0-based day from which the drifted truth applies (default days // 2, at least 1)")
    p.add_argument("--users", type=positive_int, default=d.n_users, help=f"distinct users (default {d.n_users:,})")
    p.add_argument("--sites", type=positive_int, default=d.n_sites,
                   help=f"distinct sites and apps (default {d.n_sites:,})")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <home>/raw)")
    p.add_argument("--no-faults", action="store_true",
                   help="no duplicates, truncated / invalid lines, missing ids, bad timestamps or wrong types")
    p.add_argument("--overwrite", action="store_true",
                   help="replace logs already generated in the output directory")
    p.set_defaults(func=run)


def _n(x: int) -> str:
    return f"{x:,}"


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Generate the logs ``args`` describe and print what was written."""
    from shared.errors import CommandError

    out = Path(args.out) if args.out is not None else settings.raw_dir
    cfg = GeneratorConfig(
        start_date=args.start_date, days=args.days, impressions_per_day=args.per_day, seed=args.seed,
        drift_day=args.drift_day, n_users=args.users, n_sites=args.sites,
    )
    if args.no_faults:
        cfg = cfg.without_faults()
    try:
        s = generate_logs(cfg, out, overwrite=args.overwrite, progress=None)
    except FileExistsError:
        raise CommandError(f"{out} already holds generated logs; pass --overwrite to replace them") from None

    faults = s.faulty_lines
    lines = [
        f"ctr generate: {cfg.days} day(s) from {cfg.start_date.isoformat()}, seed {cfg.seed} -> {s.out_dir}",
        f"  impressions      {_n(s.impressions):>12}  in {s.impression_files} hourly files, {_n(s.lines_written)} lines",
        f"  duplicates       {_n(s.duplicates):>12}  ({_pct(s.duplicates / s.impressions) if s.impressions else '-'})",
        f"  faulty lines     {_n(sum(faults.values())):>12}  "
        + ", ".join(f"{k} {_n(v)}" for k, v in faults.items()),
        f"  clicks           {_n(s.clicks):>12}  CTR {_pct(s.ctr)} (mean p_true {_pct(s.mean_p_true)})",
        f"    in a later hour {_n(s.clicks_later_hour)}, later day {_n(s.clicks_later_day)}, "
        f"beyond {cfg.attribution_window_hours:g}h window {_n(s.clicks_beyond_window)}, "
        f"after the range {_n(s.clicks_after_range)}",
        f"  time range       {s.start} .. {s.end}",
        f"  truth            {s.model_path} (drift from {s.drift_date or 'never'}, day {cfg.effective_drift_day})",
        f"  manifest         {s.manifest_path}",
        f"  wrote {_size(s.bytes_written)} in {s.elapsed_seconds:.1f} s"
        + (f" ({s.impressions / s.elapsed_seconds * 60:,.0f} impressions/min)" if s.elapsed_seconds > 0 else ""),
    ]
    print("\n".join(lines))
    return 0
