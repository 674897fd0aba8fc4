"""What the driver's class archive (``shared/class_archive.py``) saves a small ``ctr`` command.

    .venv/bin/python benchmarks/bench_class_archive.py --repeats 3

Generates ``--days`` days x ``--per-day`` impressions once, then per repeat, interleaved, runs
``ctr ingest`` of those days as a separate process twice: with this installation's archive and
with ``CTR_CLASS_ARCHIVE_DIR`` pointing at an empty folder (no archive), each into a fresh data
root. Prints every run, the medians and the ratio with / without. The archive must have been
written first (``make install`` or ``python -m shared.spark_setup``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from shared.class_archive import archive_path
from shared.config import load_settings
from shared.spark import delta_setting

START = "2026-11-01"


def _ctr(home: Path, env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ctr.cli", "--home", str(home), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--per-day", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    archive = archive_path(delta_setting(load_settings(env={})))
    if not archive.is_file():
        sys.exit(f"no class archive at {archive}: run `python -m shared.spark_setup` (or make install) first")
    work = Path(tempfile.mkdtemp(prefix="bench-class-archive-"))
    try:
        env = {**os.environ, "CTR_SPARK_MASTER": args.master}
        env.pop("CTR_CLASS_ARCHIVE_DIR", None)
        without = {**env, "CTR_CLASS_ARCHIVE_DIR": str(work / "no-archive")}
        raw = work / "raw-home"
        _ctr(raw, env, "generate", "--days", str(args.days), "--per-day", str(args.per_day), "--users", "3000",
             "--sites", "100", "--start-date", START)
        end = (date.fromisoformat(START) + timedelta(days=args.days - 1)).isoformat()
        times: dict[str, list[float]] = {"with archive": [], "without": []}
        for r in range(args.repeats):
            for name, run_env in (("without", without), ("with archive", env)):
                home = work / f"home-{name.replace(' ', '-')}-{r}"
                seconds = _ctr(home, run_env, "ingest", "--raw", str(raw / "raw"), "--start", START, "--end", end)
                times[name].append(seconds)
                print(f"repeat {r + 1}: ingest {name}: {seconds:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
                shutil.rmtree(home, ignore_errors=True)
        w, wo = statistics.median(times["with archive"]), statistics.median(times["without"])
        print(f"\nctr ingest of {args.days} x {args.per_day:,} impressions on {args.master}, medians of "
              f"{args.repeats}: with the archive {w:.1f} s, without {wo:.1f} s, ratio {w / wo:.2f}")
        print(f"archive: {archive} ({archive.stat().st_size / 2**20:.0f} MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
