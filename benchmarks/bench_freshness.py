"""Freshness: what a warm-started update costs and loses against a full retrain, and how fast
streaming ingest makes a closed log file readable (the freshness issue's targets).

    .venv/bin/python benchmarks/bench_freshness.py            # all parts, default sizes
    .venv/bin/python benchmarks/bench_freshness.py --only update --repeats 3

Setup (kept in ``--work`` and reused when the sizes match): ``ctr generate`` of ``--days``
days x ``--per-day`` impressions (no drift inside the range), ``ctr ingest`` of them into the
data root ``<work>/home``. With D days from S (k = D - 3), every command is a separate ``ctr``
process, timed end to end (start-up, read, fit, evaluate, register, gate):

``update`` (per repeat, interleaved, fresh model names each repeat)

* long champion ``ctr train --start S --train-days k`` (refit on days 0..k);
* short champion ``ctr train --start S+k-1 --train-days 1`` (refit on days k-1..k);
  both with the default search space restricted to ``engine = ftrl`` (a copy written to
  ``<work>/search_space_ftrl.toml``): below 200,000 training rows the default search may pick
  scikit-learn, and ``--update`` continues only an FTRL version's state;
* full retrain ``ctr train --start S --train-days k+1`` (default search, refit on days
  0..k+1, tested on day k+2): the baseline, same days as the update below;
* ``ctr train --update <long> --start S+k+1 --train-days 1``: one new day (k+1), tested on
  day k+2; the ratio update / full retrain is the first target (at most 0.20);
* ``ctr train --update <long> --start S+k --train-days 2``: two new days (k re-fed, k+1; cost
  only: the champion saw day k as its validation day);
* ``ctr train --update <short> --start S+k+1 --train-days 1``: one new day on a champion of
  2 days instead of k+1 (the cost should follow the new rows, not the window).

``quality`` (the same long-champion / full-retrain / one-day-update runs; ``--only quality``
runs only those three): test log-losses on day k+2 of the update and of the full retrain, and
the relative gap (target: within 0.5 %); the generator's best possible log-loss for scale.

``stream`` (per repeat, each in a fresh data root holding hard links to the first
``--stream-days`` days' logs): ``ctr ingest --start .. --end ..`` vs ``ctr ingest --stream
--once``, rows/s of the process (and of the job alone, as each prints it); target: streaming
at least the batch rate. Then the delay: ``ctr ingest --stream --trigger-seconds T`` runs in
the background on the last streamed root, hourly impression files of the next day (with
that hour's click file) are renamed into place one at a time, and the observations table is
polled with delta-rs (:func:`feature_store.arrow_reader.read_window_arrow`) until every
valid impression id of the file is readable (in its day's partition or the day before's,
where a late duplicate's original is stored); the first file also waits for the query to
start and is reported apart. Target: under 60 s on local[2]. ``--delay-on ROOT`` measures
only the delay, on a root an earlier run streamed (the hourly files not yet in it).

Medians over ``--repeats``; every run's figures are printed as it finishes; the load average
is printed per part (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CTR = str(REPO / ".venv" / "bin" / "ctr")
START = date(2026, 11, 1)
PARTS = ("update", "quality", "stream")


def ftrl_space(work: Path) -> Path:
    """The default search space with ``engine`` restricted to ftrl: only an FTRL version has a
    state to continue, and below ``sklearn_max_rows`` training rows the default search may pick
    scikit-learn (it did at 199k rows here), which ``--update`` refuses."""
    text = (REPO / "training" / "search_space.toml").read_text()
    old = 'values = ["ftrl", "sklearn"]'
    if old not in text:
        raise SystemExit(f"training/search_space.toml has no `{old}` line to restrict to ftrl")
    path = work / "search_space_ftrl.toml"
    path.write_text(text.replace(old, 'values = ["ftrl"]', 1))
    return path


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} cores"


def env_for(home: Path, master: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("CTR_")}
    return {**env, "CTR_HOME": str(home), "CTR_SPARK_MASTER": master}


def run(cmd: list[str], env: dict, what: str) -> tuple[float, str]:
    """(wall seconds, output) of one ``ctr`` process; stops the benchmark if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}")
    return wall, proc.stdout


def day(k: int) -> str:
    return (START + timedelta(days=k)).isoformat()


def med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


# -- setup -------------------------------------------------------------------------------------

def ensure_warehouse(a, home: Path) -> None:
    """Generate and ingest the logs once; reused while the sizes are the same."""
    stamp = home / "bench_freshness.json"
    wanted = json.dumps({"days": a.days, "per_day": a.per_day, "seed": a.seed})
    if stamp.is_file() and stamp.read_text() == wanted:
        print(f"reusing the generated and ingested logs in {home}", flush=True)
        return
    if home.exists():
        shutil.rmtree(home)
    env = env_for(home, a.master)
    wall, out = run([CTR, "generate", "--days", str(a.days), "--start-date", day(0), "--per-day", str(a.per_day),
                     "--seed", str(a.seed), "--drift-day", str(a.days)], env, "ctr generate")
    print(f"setup: ctr generate {a.days} days x {a.per_day:,} impressions in {wall:.1f} s", flush=True)
    wall, out = run([CTR, "ingest", "--start", day(0), "--end", day(a.days - 1)], env, "ctr ingest")
    rows = observations(out)
    print(f"setup: ctr ingest of the {a.days} days: {rows:,} observations in {wall:.1f} s "
          f"({rows / wall:,.0f} rows/s, process)", flush=True)
    stamp.write_text(wanted)


# -- update and quality -------------------------------------------------------------------------

def parse_train(out: str) -> dict:
    m = re.search(r"registered version (\d+)", out)
    ll = re.search(r"test log-loss ([0-9.]+)", out)
    if not (m and ll):
        raise SystemExit(f"unexpected `ctr train` output:\n{out[-3000:]}")
    rows = re.search(r"rows (\S+): ([0-9, /]+) \(", out)
    best = re.search(r"best possible log-loss \(true probabilities\) ([0-9.]+)", out)
    secs = re.search(r"seconds: (.*)", out)
    r = {"version": m.group(1), "test_log_loss": float(ll.group(1)),
         "best_possible": float(best.group(1)) if best else None, "promoted": "PROMOTED" in out,
         "seconds": secs.group(1).strip() if secs else ""}
    engine = re.search(r"'engine': '(\w+)'", out)
    r["engine"] = engine.group(1) if engine else "?"
    if rows:
        names = rows.group(1).split("/")
        counts = [int(x.replace(",", "")) for x in rows.group(2).split("/")]
        r["rows"] = dict(zip(names, counts))
    return r


def train(env: dict, model: str, start: int, days: int, *extra: str) -> dict:
    cmd = [CTR, "train", "--start", day(start), "--train-days", str(days), "--quiet", "--model-name", model, *extra]
    wall, out = run(cmd, env, "ctr train")
    return {"wall_s": wall, "cmd": " ".join(cmd[1:]), **parse_train(out)}


def update_part(a, home: Path, parts: set[str]) -> dict[str, list[dict]]:
    k = a.days - 3
    env = env_for(home, a.master)
    space = str(ftrl_space(a.work))
    runs: dict[str, list[dict]] = {}
    only_quality = "update" not in parts
    print(f"\n== update{'' if only_quality else ' and quality'}: days 0-{a.days - 1} from {day(0)}, k = {k}; "
          f"{load()}", flush=True)
    tag = time.strftime("%H%M%S")

    def record(name: str, r: dict) -> dict:
        runs.setdefault(name, []).append(r)
        rows = r.get("rows", {})
        print(f"  {name:<38} {r['wall_s']:7.1f} s  test log-loss {r['test_log_loss']:.5f}  v{r['version']}"
              f"  {r['engine']}  rows {'/'.join(f'{n:,}' for n in rows.values())}  [{r['seconds']}]", flush=True)
        return r

    for rep in range(a.repeats):
        print(f" repeat {rep + 1}/{a.repeats} ({load()})", flush=True)
        long_m, short_m, full_m = (f"fresh-{x}-{tag}-{rep}" for x in ("long", "short", "full"))
        champ = record(f"champion days 0-{k} (ftrl search)", train(env, long_m, 0, k, "--search-space", space))
        if not only_quality:
            short = record(f"champion days {k - 1}-{k} (ftrl search)",
                           train(env, short_m, k - 1, 1, "--search-space", space))
        record(f"full retrain days 0-{k + 1} (default search)", train(env, full_m, 0, k + 1))
        record("update +1 day, long champion", train(env, long_m, k + 1, 1, "--update", champ["version"]))
        if not only_quality:
            record("update +2 days, long champion", train(env, long_m, k, 2, "--update", champ["version"]))
            record("update +1 day, short champion", train(env, short_m, k + 1, 1, "--update", short["version"]))
    return runs


def summarize_update(a, runs: dict[str, list[dict]], parts: set[str]) -> list[str]:
    k = a.days - 3
    names = list(runs)
    champ, full, up1 = names[0], next(n for n in names if n.startswith("full")), "update +1 day, long champion"
    w = {n: med(r["wall_s"] for r in rs) for n, rs in runs.items()}
    lines = [f"medians over {a.repeats} repeat(s), {a.days} days x {a.per_day:,} impressions, k = {k}"]
    for n, rs in runs.items():
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        lines.append(f"  {n:<38} wall {w[n]:7.1f} s  test log-loss {med(r['test_log_loss'] for r in rs):.5f}"
                     f"  (runs: {walls} s)")
    if "update" in parts:
        ratios = [u["wall_s"] / f["wall_s"] for u, f in zip(runs[up1], runs[full])]
        lines.append(f"  update +1 day / full retrain on the same days: {w[up1] / w[full]:.2f}x of medians "
                     f"(per repeat {', '.join(f'{x:.2f}' for x in ratios)}; target <= 0.20)")
        lines.append(f"  update +1 day / long champion's own train: {w[up1] / w[champ]:.2f}x")
        up2, ups = "update +2 days, long champion", "update +1 day, short champion"
        r1 = med(r["rows"]["train"] for r in runs[up1])
        r2 = med(r["rows"]["train"] for r in runs[up2])
        lines.append(f"  new rows: +1 day {r1:,.0f} rows {w[up1]:.1f} s; +2 days {r2:,.0f} rows {w[up2]:.1f} s "
                     f"({w[up2] / w[up1]:.2f}x the time for {r2 / r1:.2f}x the rows)")
        lines.append(f"  window: +1 day on a champion of {k + 1} days {w[up1]:.1f} s vs of 2 days {w[ups]:.1f} s "
                     f"({w[up1] / w[ups]:.2f}x)")
    gaps = [u["test_log_loss"] / f["test_log_loss"] - 1 for u, f in zip(runs[up1], runs[full])]
    best = runs[up1][0].get("best_possible")
    lines.append(f"  quality on day {k + 2}: update {med(r['test_log_loss'] for r in runs[up1]):.5f} vs full retrain "
                 f"{med(r['test_log_loss'] for r in runs[full]):.5f}: {100 * med(gaps):+.2f} % "
                 f"(per repeat {', '.join(f'{100 * g:+.2f}' for g in gaps)} %; target within 0.5 %)"
                 + (f"; best possible {best:.5f}" if best else ""))
    return lines


# -- streaming ingest -----------------------------------------------------------------------------

def observations(out: str) -> int:
    m = re.search(r"records read ([0-9,]+) = observations ([0-9,]+)", out)
    if not m:
        raise SystemExit(f"no observation count in the output:\n{out[-3000:]}")
    return int(m.group(2).replace(",", ""))


def link_logs(src: Path, dst_home: Path, days: range) -> None:
    """A fresh data root whose raw folder hard-links the given days' impression and click files."""
    if dst_home.exists():
        shutil.rmtree(dst_home)
    for kind in ("impressions", "clicks"):
        for d in days:
            folder = src / kind / f"date={day(d)}"
            out = dst_home / "raw" / kind / folder.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(folder.glob("hour=*.jsonl")):
                os.link(f, out / f.name)


def stream_part(a, home: Path) -> tuple[dict[str, list[dict]], Path]:
    m = a.stream_days
    runs: dict[str, list[dict]] = {}
    print(f"\n== streaming ingest vs batch: days 0-{m - 1} ({m} x {a.per_day:,} impressions); {load()}", flush=True)
    last = None
    for rep in range(a.repeats):
        print(f" repeat {rep + 1}/{a.repeats} ({load()})", flush=True)
        batch_home, stream_home = a.work / f"stream-{rep}-batch", a.work / f"stream-{rep}-stream"
        link_logs(home / "raw", batch_home, range(m))
        wall, out = run([CTR, "ingest", "--start", day(0), "--end", day(m - 1)], env_for(batch_home, a.master),
                        "batch ingest")
        job = re.search(r"Delta v\d+ \(([0-9.]+)s\)", out)
        r = {"wall_s": wall, "rows": observations(out), "job_s": float(job.group(1)) if job else float("nan")}
        runs.setdefault("batch", []).append(r)
        print(f"  batch  ctr ingest            {wall:7.1f} s  {r['rows']:,} rows  {r['rows'] / wall:8,.0f} rows/s "
              f"(job {r['job_s']:.1f} s: {r['rows'] / r['job_s']:,.0f} rows/s)", flush=True)
        link_logs(home / "raw", stream_home, range(m))
        wall, out = run([CTR, "ingest", "--stream", "--once"], env_for(stream_home, a.master), "stream --once")
        job = re.search(r"micro-batch\(es\) in ([0-9.]+)s", out)
        r = {"wall_s": wall, "rows": observations(out), "job_s": float(job.group(1)) if job else float("nan"),
             "batches": len(re.findall(r"^batch \d+:", out, re.M))}
        runs.setdefault("stream", []).append(r)
        print(f"  stream ctr ingest --stream --once {wall:7.1f} s  {r['rows']:,} rows  {r['rows'] / wall:8,.0f} "
              f"rows/s (query {r['job_s']:.1f} s: {r['rows'] / r['job_s']:,.0f} rows/s; {r['batches']} micro-batch)",
              flush=True)
        shutil.rmtree(batch_home)
        if last is not None:
            shutil.rmtree(last)
        last = stream_home
    assert last is not None
    return runs, last


def valid_ids(path: Path) -> set[str]:
    from feature_store.parse import LineError, parse_impression

    ids = set()
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                ids.add(parse_impression(line)[0])
            except LineError:
                pass
    return ids


def drop(src: Path, dst_dir: Path) -> float:
    """Write a finished log file the way the generator does (hidden name, then renamed into
    place); the wall-clock time of the rename."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    tmp = dst_dir / f".{src.name}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst_dir / src.name)
    return time.time()


def readable(settings, d: date, ids: set[str]) -> bool:
    """Every id in the table, in day ``d``'s partition or the day before's (a duplicate of an
    impression logged late the day before is stored under that day, as batch ingest does)."""
    from feature_store.arrow_reader import read_window_arrow
    from feature_store.reader import Window
    from shared.errors import CtrError

    try:
        frame, _ = read_window_arrow(settings, Window(d - timedelta(days=1), d + timedelta(days=1)),
                                     ["impression_id"])
    except CtrError:  # no table or no such partition yet
        return False
    return ids <= set(frame.column("impression_id").to_pylist())


def delay_part(a, home: Path, stream_home: Path) -> dict:
    """The continuous stream on ``stream_home``; new hourly files of day ``stream_days``."""
    from shared.config import load_settings

    d = a.stream_days
    the_day = START + timedelta(days=d)
    settings = load_settings({"home": str(stream_home)}, env={})
    dst_imp = stream_home / "raw" / "impressions" / f"date={day(d)}"
    src_imp = [f for f in sorted((home / "raw" / "impressions" / f"date={day(d)}").glob("hour=*.jsonl"))
               if not (dst_imp / f.name).exists()]  # files the stream has not been shown yet
    n = a.delay_files + 1
    print(f"\n== delay: ctr ingest --stream --trigger-seconds {a.trigger_seconds:g} (background) on {stream_home}; "
          f"{n} hourly files of {day(d)} renamed into place one at a time; {load()}", flush=True)
    log_path = a.work / "stream-continuous.log"
    log = open(log_path, "w")
    cmd = [CTR, "ingest", "--stream", "--trigger-seconds", str(a.trigger_seconds)]
    proc = subprocess.Popen(cmd, env=env_for(stream_home, a.master), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    started = time.time()
    delays, failure = [], None
    try:
        for i, src in enumerate(src_imp[:n]):
            ids = valid_ids(src)
            t0 = drop(src, stream_home / "raw" / "impressions" / f"date={day(d)}")
            clicks = home / "raw" / "clicks" / f"date={day(d)}" / src.name
            if clicks.exists():
                drop(clicks, stream_home / "raw" / "clicks" / f"date={day(d)}")
            while not readable(settings, the_day, ids):
                if proc.poll() is not None:
                    failure = f"the stream exited ({proc.returncode}) before the rows were readable"
                    break
                if time.time() - t0 > a.delay_timeout:
                    failure = f"{src.name}'s rows not readable after {a.delay_timeout:g} s"
                    break
                time.sleep(a.poll_seconds)
            if failure:
                break
            delay = time.time() - t0
            first = " (first file: includes the query's start, " \
                    f"{t0 - started:.1f} s after the process started)" if i == 0 else ""
            print(f"  {src.name}: {len(ids):,} impression ids readable {delay:6.1f} s after the rename{first}",
                  flush=True)
            delays.append(delay)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # run_stream stops the query between micro-batches
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        log.close()
    text = log_path.read_text()
    batch_secs = [float(x) for x in re.findall(r"^batch \d+: .*\(([0-9.]+)s\)", text, re.M)]
    if failure:
        tail = "\n".join(line for line in text.splitlines() if "WARN" not in line)[-3000:]
        print(f"  FAILED: {failure}; stream exit {proc.returncode}; its output ({log_path}):\n{tail}", flush=True)
    print(f"  stream process exit status {proc.returncode} after SIGINT; micro-batch seconds "
          f"{', '.join(f'{s:.1f}' for s in batch_secs) or '-'}", flush=True)
    return {"delays": delays, "failure": failure, "batch_seconds": batch_secs}


def summarize_stream(runs: dict[str, list[dict]], delay: dict | None, a) -> list[str]:
    if not runs:
        return summarize_delay(delay, a)
    b, s = runs["batch"], runs["stream"]
    br, sr = med(r["rows"] / r["wall_s"] for r in b), med(r["rows"] / r["wall_s"] for r in s)
    bj, sj = med(r["rows"] / r["job_s"] for r in b), med(r["rows"] / r["job_s"] for r in s)
    lines = [f"streaming vs batch ingest, {a.stream_days} day(s), medians over {a.repeats} repeat(s)",
             f"  batch  {med(r['wall_s'] for r in b):7.1f} s  {b[0]['rows']:,} rows  {br:,.0f} rows/s "
             f"(job alone {bj:,.0f} rows/s)",
             f"  stream {med(r['wall_s'] for r in s):7.1f} s  {s[0]['rows']:,} rows  {sr:,.0f} rows/s "
             f"(query alone {sj:,.0f} rows/s)",
             f"  stream / batch rows/s: {sr / br:.2f}x per process, {sj / bj:.2f}x per job (target >= 1)"]
    if b[0]["rows"] != s[0]["rows"]:
        lines.append(f"  NOTE: batch and stream wrote different row counts ({b[0]['rows']:,} vs {s[0]['rows']:,})")
    return lines + summarize_delay(delay, a)


def summarize_delay(delay: dict | None, a) -> list[str]:
    lines: list[str] = []
    if delay is not None:
        ds = delay["delays"]
        if len(ds) > 1:
            rest = ds[1:]
            lines.append(f"  delay rename -> readable, trigger {a.trigger_seconds:g} s: median {med(rest):.1f} s, "
                         f"max {max(rest):.1f} s over {len(rest)} file(s) ({', '.join(f'{x:.1f}' for x in rest)}); "
                         f"first file {ds[0]:.1f} s (query start included); target < 60 s")
        if delay["failure"]:
            lines.append(f"  delay: FAILED: {delay['failure']}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ctr-bench-freshness",
                    help="kept; the generated and ingested logs are reused when the sizes match")
    ap.add_argument("--days", type=int, default=7, help="generated days (>= 5): k = days - 3 champion train days")
    ap.add_argument("--per-day", type=int, default=15_000, help="impressions per day")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", help="comma-separated parts: update, quality, stream (default all)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--stream-days", type=int, default=1, help="days ingested by batch vs --stream --once")
    ap.add_argument("--delay-files", type=int, default=3, help="files timed for the delay (after a first one)")
    ap.add_argument("--trigger-seconds", type=float, default=30.0, help="the continuous stream's trigger "
                                                                        "(default: ctr ingest's own default)")
    ap.add_argument("--poll-seconds", type=float, default=0.5)
    ap.add_argument("--delay-timeout", type=float, default=300.0, help="give up on a file after this long")
    ap.add_argument("--skip-delay", action="store_true")
    ap.add_argument("--delay-on", type=Path, metavar="ROOT",
                    help="measure only the delay, on this already streamed data root (e.g. <work>/stream-0-stream "
                         "of an earlier run; the next hourly files not yet in it are dropped)")
    a = ap.parse_args(argv)
    parts = set(PARTS) if not a.only else {p.strip() for p in a.only.split(",")}
    if parts - set(PARTS):
        ap.error(f"--only takes {', '.join(PARTS)}")
    if a.days < 5:
        ap.error("--days must be at least 5")
    if a.stream_days + 1 > a.days:
        ap.error("--stream-days must leave a generated day for the delay files")
    a.work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    print(f"bench_freshness: {' '.join(sys.argv[1:]) or '(defaults)'}; {a.master}; {load()}", flush=True)
    home = a.work / "home"
    ensure_warehouse(a, home)
    report: list[str] = []
    if parts & {"update", "quality"}:
        runs = update_part(a, home, parts)
        report += summarize_update(a, runs, parts)
        print("\n" + "\n".join(report), flush=True)
    if a.delay_on:
        delay = delay_part(a, home, a.delay_on)
        report += summarize_stream({}, delay, a)
    elif "stream" in parts:
        sruns, stream_home = stream_part(a, home)
        delay = None if a.skip_delay else delay_part(a, home, stream_home)
        report += summarize_stream(sruns, delay, a)
    print("\nsummary (" + load() + ")\n" + "\n".join(report))
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
