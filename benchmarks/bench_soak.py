"""Soak the bidder: a fixed request rate for several minutes with a model swap every minute.

    .venv/bin/python benchmarks/bench_soak.py                        # 1,000 req/s, 10 minutes
    .venv/bin/python benchmarks/bench_soak.py --minutes 2 --seconds-per-minute 20   # a short smoke

Starts ``ctr serve`` as ``bench_serving.py`` does (a fresh temporary data root, a model
registered in a fresh MLflow SQLite store, prediction log on) and drives ``POST /v1/score``
with single impressions in one open loop (:func:`synthetic.loadgen.run_rate_windows`:
latency from each request's due time). Before the load, one more version per swap is
trained (another regularisation and sample) and registered without being promoted; at the
end of every minute but the last the champion alias is moved to the next one, by a helper
process (MLflow imported there, not in the load generator), and the server's own alias
poller finds, loads and swaps it: the real hot-swap path.

Per minute: requests, failures, p50/p99/max latency, the slowest second, the swap (when the
server logged it, load time), the server's resident memory (VmRSS and its anonymous part, from
/proc), how long its event loop waited for a CPU (run-queue wait: other processes on the shared
cores), the load average and the model versions that answered. At the end: totals, RSS growth after the
first minute, prediction-log lines against requests answered and the swaps the server
counted (``ctr_model_swaps_total``). Exits 1 when a target is missed: a failed request, a
minute with p99 at or over --slo-ms, RSS growth of --max-rss-growth or more, a log line
count other than the requests answered, or fewer swaps than made.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serving as bs  # noqa: E402  (puts the repository on sys.path)
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from synthetic import loadgen  # noqa: E402
from synthetic.sample import register_model_dir, train_model_dir  # noqa: E402

#: Runs in the helper process: reads "promote <version>" lines, moves the alias, answers one line each.
#: Niced: on a bidder's machine the registry is updated from elsewhere, so its CPU must not look
#: like the server's on the shared cores.
PROMOTER = """
import os, sys
os.nice(10)
from shared.config import load_settings
from training.tracking import promote
settings = load_settings({"home": sys.argv[1]}, env={})
print("ready", flush=True)
for line in sys.stdin:
    cmd, version = line.split()
    t0 = __import__("time").perf_counter()
    promote(settings, sys.argv[2], version, reason="soak benchmark")
    print(f"promoted {version} {__import__('time').perf_counter() - t0:.3f}", flush=True)
"""


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident set size) and its anonymous and file-backed parts (RssAnon, RssFile)
    of ``pid`` in KiB, from /proc; zeros when it is gone."""
    out = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    try:
        for line in open(f"/proc/{pid}/status"):
            key = line.split(":", 1)[0]
            if key in out:
                out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def run_queue_wait_ms(pid: int) -> float:
    """Milliseconds the main thread of ``pid`` (the server's event loop) has spent runnable but
    waiting for a CPU (``/proc/<pid>/schedstat``): what other processes on the shared cores
    cost its requests. 0 when unavailable."""
    try:
        return int(open(f"/proc/{pid}/schedstat").read().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS), 0 when it is gone."""
    return memory_kib(pid)["VmRSS"]


def metric(text: str, name: str) -> float:
    """Sum of the samples of ``name`` (all label sets) in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def log_lines(predictions_dir: Path) -> int:
    """Lines in every hourly prediction-log file."""
    n = 0
    for path in predictions_dir.rglob("*.jsonl"):
        with open(path, "rb") as f:
            n += sum(1 for _ in f)
    return n


def swap_log(log_path: Path) -> list[tuple[float, str, float]]:
    """(epoch seconds, version, load ms) of every swap the server logged after its first load."""
    out = []
    pattern = re.compile(r"^(\S+ \S+) INFO ctr\.serving: serving model version (\S+) .* after (\d+) ms load; "
                         r"previous: (?!none)")
    for line in log_path.read_text(errors="replace").splitlines():
        m = pattern.match(line)
        if m:
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # logging's local time
            out.append((when, m.group(2), float(m.group(3))))
    return out


def slowest_second(latencies_ms: np.ndarray, seconds: float) -> tuple[int, float, float]:
    """(second of the window, its p99, its max) of the second with the highest p99; the
    latencies are in due order (a window without failures), so second ``s`` is a slice."""
    parts = np.array_split(latencies_ms, max(1, int(round(seconds))))
    p99 = [float(np.percentile(x, 99)) if x.size else 0.0 for x in parts]
    worst = int(np.argmax(p99))
    return worst, p99[worst], float(parts[worst].max()) if parts[worst].size else 0.0


def register_swap_versions(settings, imps, count: int, home: Path) -> list[str]:
    """``count`` more versions, each fitted on another half of the sample with another C,
    registered on their own test windows (so the promotion gate leaves the champion alone)."""
    versions = []
    rng = np.random.default_rng(7)
    for k in range(count):
        pick = sorted(rng.choice(len(imps), size=len(imps) // 2, replace=False).tolist())
        model_dir, test = train_model_dir([imps[i] for i in pick], home / f"model-swap-{k + 1}",
                                          C=float(0.05 * (1 + k % 5)))
        versions.append(register_model_dir(settings, model_dir, bs.MODEL_NAME, test, test_window=f"soak-{k + 1}"))
    return versions


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=int, default=10, help="minutes of load (default 10)")
    p.add_argument("--seconds-per-minute", type=float, default=60.0,
                   help="length of a 'minute' (default 60; shorter for a smoke run)")
    p.add_argument("--rate", type=float, default=1000.0, help="single-impression requests per second (default 1000)")
    p.add_argument("--poll-seconds", type=float, default=5.0,
                   help="the server's alias poll interval (default 5: a swap lands within its minute)")
    p.add_argument("--slo-ms", type=float, default=5.0, help="p99 target of every minute (default 5 ms)")
    p.add_argument("--max-rss-growth", type=float, default=5.0,
                   help="RSS growth after the first minute allowed, in %% (default 5)")
    p.add_argument("--impressions", type=int, default=20_000, help="generated impressions (train + traffic)")
    p.add_argument("--no-swaps", action="store_true", help="no model swaps (to tell their cost apart)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.minutes < 1 or not 1.0 <= args.seconds_per_minute <= loadgen.MAX_SECONDS:
        p.error(f"--minutes >= 1 and --seconds-per-minute in [1, {loadgen.MAX_SECONDS:g}]")
    if args.minutes * args.seconds_per_minute > loadgen.MAX_SOAK_SECONDS:
        p.error(f"at most {loadgen.MAX_SOAK_SECONDS:g} s of load")
    swaps_planned = 0 if args.no_swaps else args.minutes - 1
    results: dict = {"load_average_start": bs.load_average(), "cpus": os.cpu_count(), "rate": args.rate,
                     "minutes": args.minutes, "seconds_per_minute": args.seconds_per_minute}
    print(f"[soak] load average {results['load_average_start']} on {results['cpus']} CPUs; {args.rate:g} req/s for "
          f"{args.minutes} x {args.seconds_per_minute:g} s, {swaps_planned} swaps", flush=True)

    with tempfile.TemporaryDirectory(prefix="ctr-bench-soak-") as tmp:
        home = Path(tmp)
        settings, imps, _, version = bs.build_registered_model(home, args.impressions, seed=21, log_pyfunc=False)
        t0 = time.perf_counter()
        swap_versions = register_swap_versions(settings, imps[:len(imps) // 2], swaps_planned, home)
        if swap_versions:
            print(f"[setup] versions {', '.join(swap_versions)} registered for the swaps in "
                  f"{time.perf_counter() - t0:.1f} s (not promoted)", flush=True)
        traffic = [i.fields for i in imps[len(imps) // 2:]]
        bodies = loadgen.score_bodies(traffic, 1, 5000)
        promoter = subprocess.Popen(
            [sys.executable, "-c", PROMOTER, str(home), bs.MODEL_NAME],
            cwd=bs.REPO, env=bs.server_env(settings), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        server = None
        try:
            if promoter.stdout is None or promoter.stdout.readline().strip() != "ready":
                raise RuntimeError("the promoter helper did not start")
            server, url = bs.start_ours(settings, poll_seconds=args.poll_seconds)
            pid = server.pid
            versions_now: Counter = Counter()
            per_minute_versions: list[dict] = []
            rss: list[int] = []
            rss_parts: list[tuple[int, int]] = []
            waits: list[float] = []
            loads: list[str] = []
            swaps_made: list[tuple[int, str]] = []
            version_re = re.compile(rb'"model_version":"([^"]*)"')

            def inspect(status: int, body: bytes) -> str | None:
                m = version_re.search(body)
                if m is None:
                    return "no_model_version"
                versions_now[m.group(1).decode()] += 1
                return None

            def on_minute(k: int) -> None:  # on the load generator's loop: only cheap things here
                mem = memory_kib(pid)
                rss.append(mem["VmRSS"])
                rss_parts.append((mem["RssAnon"], mem["RssFile"]))
                waits.append(run_queue_wait_ms(pid))
                loads.append(bs.load_average().split()[0])
                per_minute_versions.append(dict(versions_now))
                versions_now.clear()
                if k < len(swap_versions):
                    assert promoter.stdin is not None
                    promoter.stdin.write(f"promote {swap_versions[k]}\n")
                    promoter.stdin.flush()
                    swaps_made.append((k + 1, swap_versions[k]))

            # warm-up: connections, caches, the first requests' lazy set-up (not counted)
            warm = loadgen.run(loadgen.run_rate(url + "/v1/score", bodies, rate=min(args.rate, 500.0), seconds=2.0))
            rss0 = rss_kib(pid)
            wait0 = run_queue_wait_ms(pid)
            wall0 = time.time() + 0.05  # the schedule starts 50 ms after the call
            windows = loadgen.run(loadgen.run_rate_windows(
                url + "/v1/score", bodies, rate=args.rate, windows=args.minutes,
                window_seconds=args.seconds_per_minute, on_window=on_minute, inspect=inspect, name="soak"))
            for v, n in versions_now.items():  # answers that came after the last minute's end
                per_minute_versions[-1][v] = per_minute_versions[-1].get(v, 0) + n
            time.sleep(max(2.0, args.poll_seconds))  # the writer flushes every 0.5 s; a last swap lands
            text = httpx.get(url + "/metrics", timeout=10).text
            model = httpx.get(url + "/v1/model", timeout=10).json()
            promoted = promoter.communicate(timeout=60)[0].split("\n")
            bs.stop(server)  # SIGINT: the server drains and closes the prediction log
            server = None
            swaps_logged = swap_log(settings.home / "server-logs" / "ours.log")
            lines = log_lines(settings.predictions_dir)
        finally:
            if server is not None:
                bs.stop(server)
            bs.stop(promoter)

    rows, ok_total, fail_total, missed = [], 0, 0, []
    print(f"{'minute':>6} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'RSS MiB':>8} {'anon':>6} {'runq ms':>7} {'load':>5}  "
          f"{'slowest second (p99/max ms)':<28} swap (load ms)  versions answered", flush=True)
    minute_of = lambda t: int((t - wall0) // args.seconds_per_minute)  # noqa: E731
    for k, res in enumerate(windows):
        s = res.summary()
        failed = s["requests"] - s["ok"]
        ok_total += s["ok"]
        fail_total += failed
        row = {"minute": k + 1, "requests": s["requests"], "ok": s["ok"], "failed": failed, "errors": s["errors"],
               "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "max_ms": s["max_ms"], "rss_kib": rss[k],
               "rss_anon_kib": rss_parts[k][0], "rss_file_kib": rss_parts[k][1],
               "run_queue_wait_ms": round(waits[k] - (waits[k - 1] if k else wait0), 1), "load_average_1m": loads[k],
               "versions": per_minute_versions[k], "client_cpu_us_per_request": s["client_cpu_us_per_request"]}
        slow = "-"
        if failed == 0:
            sec, p99, worst = slowest_second(res.latencies_ms, args.seconds_per_minute)
            row["slowest_second"] = {"second": sec, "p99_ms": round(p99, 3), "max_ms": round(worst, 3)}
            slow = f"+{sec}s {p99:.1f}/{worst:.1f}"
        swaps_here = [(t, v, ms) for t, v, ms in swaps_logged if minute_of(t) == k]
        row["swaps_logged"] = [{"second": round(t - wall0 - k * args.seconds_per_minute, 1), "version": v,
                                "load_ms": ms} for t, v, ms in swaps_here]
        swap = ", ".join(f"+{t - wall0 - k * args.seconds_per_minute:.0f}s v{v} ({ms:g})" for t, v, ms in swaps_here)
        rows.append(row)
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(row["versions"].items()))
        print(f"{k + 1:>6} {s['requests']:>9} {failed:>7} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f} "
              f"{rss[k] / 1024:>8.1f} {rss_parts[k][0] / 1024:>6.1f} {row['run_queue_wait_ms']:>7.0f} {loads[k]:>5}  "
              f"{slow:<28} {swap or '-':<15} {versions}"
              + (f"  errors {s['errors']}" if s["errors"] else ""), flush=True)
        if not s["p99_ms"] < args.slo_ms:
            missed.append(f"minute {k + 1}: p99 {s['p99_ms']:.2f} ms >= {args.slo_ms:g} ms")
    base = rss[0]
    growth = (max(rss[1:]) - base) / base * 100 if len(rss) > 1 and base else 0.0
    swaps_seen = int(metric(text, "ctr_model_swaps_total"))
    load_failures = int(metric(text, "ctr_model_load_failures_total"))
    written = int(metric(text, "ctr_prediction_log_written_total"))
    dropped = int(metric(text, "ctr_prediction_log_dropped_total"))
    log_errors = int(metric(text, "ctr_prediction_log_write_errors_total"))
    results.update(minutes_table=rows, requests=sum(r["requests"] for r in rows), answered=ok_total,
                   failed=fail_total, rss_kib_after_warmup=rss0, rss_growth_after_first_minute_pct=round(growth, 2),
                   warmup_answered=warm.ok, prediction_log_lines=lines, prediction_log_written=written, prediction_log_dropped=dropped,
                   prediction_log_write_errors=log_errors, swaps_made=swaps_made, swaps_seen=swaps_seen,
                   load_failures=load_failures, served_at_end=model.get("version"),
                   promoter=[x for x in promoted if x], load_average_end=bs.load_average())
    if fail_total:
        missed.append(f"{fail_total} failed requests")
    if growth >= args.max_rss_growth:
        missed.append(f"RSS grew {growth:.1f} % after the first minute (limit {args.max_rss_growth:g} %)")
    if lines != ok_total + warm.ok:
        missed.append(f"{lines} prediction-log lines for {ok_total} + {warm.ok} (warm-up) requests answered")
    if swaps_seen < len(swaps_made):
        missed.append(f"the server counted {swaps_seen} swaps of {len(swaps_made)} made")
    print(f"[soak] requests {results['requests']}, answered {ok_total}, failed {fail_total}; "
          f"p99 per minute {[r['p99_ms'] for r in rows]} ms (target < {args.slo_ms:g}); worst max "
          f"{max(r['max_ms'] for r in rows):.2f} ms", flush=True)
    print(f"[soak] server RSS {rss0 / 1024:.1f} MiB after warm-up, {base / 1024:.1f} MiB after minute 1, "
          f"at most {max(rss) / 1024:.1f} MiB later: growth after the first minute {growth:.2f} % "
          f"(target < {args.max_rss_growth:g} %)", flush=True)
    print(f"[soak] prediction-log lines {lines} vs requests answered {ok_total + warm.ok} ({ok_total} + {warm.ok} "
          f"in the warm-up; records written {written}, "
          f"dropped {dropped}, lost to write errors {log_errors})", flush=True)
    print(f"[soak] swaps made {len(swaps_made)} ({', '.join(f'after minute {m}: v{v}' for m, v in swaps_made) or '-'}), "
          f"seen by the server {swaps_seen}, load failures {load_failures}, serving v{model.get('version')} at the end",
          flush=True)
    print(f"[soak] load average at the end {results['load_average_end']}", flush=True)
    results["targets_missed"] = missed
    print("[soak] targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
