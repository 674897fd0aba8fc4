"""The full kill matrix: every job that writes, killed with SIGKILL at each of its named phases
and at a seeded random time, then re-run; prints one row per kill and a summary per job.

    .venv/bin/python benchmarks/bench_faults.py            # all jobs (about 25 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_faults.py -k ingest  # a pytest -k selection

The kills are the fault-injection tests themselves (``tests/test_faults_*.py`` and the
streaming ingest's), run with ``CTR_FAULTS_FULL=1``; each kill writes a report line
(``tests/faults_support.py``). A kill whose re-run did not reach the uninterrupted run's
state is a failed test and a ``recovered: no`` row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_faults_jobs.py", "tests/test_faults_training.py",
         "tests/test_stream_ingest.py::test_stream_killed_mid_batch_then_restarted_loses_and_duplicates_nothing"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", dest="select", help="pytest -k expression (default: every kill)")
    p.add_argument("--json", type=Path, help="also write the report lines here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "kills.jsonl"
        env = {**os.environ, "CTR_FAULTS_FULL": "1", "CTR_FAULTS_REPORT": str(report)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *TESTS]
        if args.select:
            cmd += ["-k", args.select]
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        lines = [json.loads(x) for x in report.read_text().splitlines()] if report.exists() else []
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(f"{'job':<22} {'kill at':<28} {'last phase reached':<28} {'exit':>5}  recovered  note")
    per_job: dict[str, list[bool]] = defaultdict(list)
    for r in lines:
        per_job[r["job"]].append(bool(r["recovered"]))
        print(f"{r['job']:<22} {r['kill_at']:<28} {r['last_phase'] or '(none)':<28} {r['exit']:>5}  "
              f"{'yes' if r['recovered'] else 'NO':<9}  {r['note']}")
    print()
    for job, ok in per_job.items():
        print(f"{job:<22} {len(ok)} kill(s), {sum(ok)} recovered")
    print(f"\n{len(lines)} kills, {sum(r['recovered'] for r in lines)} recovered; pytest: {tail} ({seconds:.0f} s)")
    if done.returncode != 0:
        print(done.stdout[-4000:])
    if args.json:
        args.json.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return 0 if done.returncode == 0 and all(r["recovered"] for r in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
