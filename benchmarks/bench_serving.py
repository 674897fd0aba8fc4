"""Benchmark the scoring endpoint against ``mlflow models serve`` of the same registered version.

    .venv/bin/python benchmarks/bench_serving.py              # full run (~10 minutes: 3 runs per scenario)
    .venv/bin/python benchmarks/bench_serving.py --quick      # 3 s per scenario
    .venv/bin/python benchmarks/bench_serving.py --parse-only # in-process parsing/scoring costs only

What it does, all on 127.0.0.1:

1. generates impressions with :mod:`synthetic.sample` (mapped by the ingest's parser),
   fits a ``SparseLogisticRegression`` on the shipped ``generated`` spec and registers it with
   ``training.tracking.log_training_run`` (with the pyfunc flavour) in a fresh MLflow SQLite
   store under a temporary data root;
2. starts ``ctr serve`` (our server, one process, prediction log on) and
   ``mlflow models serve -m models:/<name>@champion --env-manager local`` (one uvicorn worker),
   each as its own process, and checks that both return the same CTRs for the same records;
3. measures with :mod:`synthetic.loadgen` (open loop at a fixed rate; closed loop at a fixed
   concurrency; batches of 100) throughput, p50/p90/p99/max latency and errors, plus each
   server's CPU time per request (from /proc, the whole process tree) and the client's own
   CPU per request; the client floor is measured against ``GET /healthz``. The closed-loop
   comparison with mlflow runs interleaved (ours, mlflow, ours, ...: both see the same
   machine), its ratios are medians over the rounds, each round with the load average;
   the rate sweep prints every run's p99 and whether each rate held in *every* run;
4. measures in process: featurize + score of one record and of 100, and body parsing with
   orjson + hand validation versus ``ScoreRequest.model_validate_json`` (pydantic).

Every scenario is bounded in requests (``synthetic.loadgen.MAX_REQUESTS``) and seconds.
The machine is shared: the load average at start and end is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from shared.processes import tree_cpu_seconds  # noqa: E402
from synthetic import loadgen  # noqa: E402
from synthetic.sample import generate_impressions, register_model_dir, train_model_dir  # noqa: E402

MODEL_NAME = "ctr-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def handler_quantiles(metrics_text: str, endpoint: str, qs=(0.5, 0.99)) -> dict[str, str]:
    """Upper bounds of the server-side handler latency quantiles, from the Prometheus histogram
    (time inside the handler: no network, no waiting for a CPU before the request is read)."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith("ctr_request_latency_seconds_bucket{") and f'endpoint="{endpoint}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out = {}
    for q in qs:
        bound = next((b for b, c in buckets if c >= q * total), float("inf")) if total else float("nan")
        out[f"p{q * 100:g}"] = f"<= {bound * 1000:g} ms"
    return out


def load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:g} s: {url}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # the process group this script started
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- in process ----------------------------------------------------------------------

def in_process(model_dir: Path, fields: list[dict], reps: int = 2000) -> dict:
    import orjson

    from serving.parsing import parse_score_body
    from serving.scorer import load_scorer
    from serving.schemas import ScoreRequest

    scorer = load_scorer(model_dir)
    for f in fields[:500]:
        scorer.score_records([f])  # warm the featurizer caches like a running server

    def per_call(fn, items, rounds=3):
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for x in items:
                fn(x)
            best = min(best, (time.perf_counter() - t0) / len(items))
        return best * 1e6

    singles = [[f] for f in fields[:reps]]
    batches = [fields[k:k + 100] for k in range(0, min(len(fields), 5000) - 99, 100)]
    single_bodies = [orjson.dumps({"records": [{"id": "i", "fields": f}]}) for f in fields[:reps]]
    batch_bodies = [orjson.dumps({"records": [{"id": str(j), "fields": f} for j, f in enumerate(b)]})
                    for b in batches]
    return {
        "featurize_single_us": per_call(lambda r: scorer.featurizer.transform_record(r[0]), singles),
        "score_single_us": per_call(scorer.score_records, singles),
        "score_batch100_us": per_call(scorer.score_records, batches),
        "parse_single_orjson_us": per_call(lambda b: parse_score_body(b, 1000), single_bodies),
        "parse_single_pydantic_us": per_call(ScoreRequest.model_validate_json, single_bodies),
        "parse_batch100_orjson_us": per_call(lambda b: parse_score_body(b, 1000), batch_bodies),
        "parse_batch100_pydantic_us": per_call(ScoreRequest.model_validate_json, batch_bodies),
    }


# -- set-up --------------------------------------------------------------------------

def build_registered_model(home: Path, n: int, seed: int, *, log_pyfunc: bool = True):
    from shared.config import load_settings

    settings = load_settings({"home": str(home)}, env={})
    t0 = time.perf_counter()
    imps = generate_impressions(n, seed=seed, workdir=home)
    model_dir, test = train_model_dir(imps, home / "model", C=0.1)
    version = register_model_dir(settings, model_dir, MODEL_NAME, test, test_window="bench", log_pyfunc=log_pyfunc)
    print(f"[setup] {n} generated impressions, model fitted (test AUC {test['auc']:.3f}, log-loss "
          f"{test['log_loss']:.4f}) and registered as {MODEL_NAME} v{version} in {time.perf_counter() - t0:.1f} s",
          flush=True)
    return settings, imps, model_dir, version


def server_env(settings) -> dict[str, str]:
    """The environment of the servers: this repository, the benchmark's MLflow store, no token."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("CTR_API_TOKEN", None)
    # mlflow models serve runs `uvicorn` by name: the venv's bin must be on PATH
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _tail(path: Path, lines: int = 25) -> None:
    print(f"--- {path.name} (last lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


def _launch(settings, name: str, cmd: list[str], cwd: Path, ready_path: str) -> tuple[subprocess.Popen, str]:
    """Start one server (``cmd``, its ``"{port}"`` item replaced) in its own process group, its output
    in ``<home>/server-logs/<name>.log``; returns once ``ready_path`` answers 200."""
    port = free_port()
    logs = settings.home / "server-logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{name}.log"
    proc = subprocess.Popen([str(port) if part == "{port}" else part for part in cmd], cwd=cwd, env=server_env(settings),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t = wait_ready(url + ready_path, proc)
    except BaseException:
        stop(proc)
        _tail(log)
        raise
    print(f"[setup] {name} server ready in {t:.1f} s at {url} (log: {log})", flush=True)
    return proc, url


def start_ours(settings, *, poll_seconds: float = 30.0) -> tuple[subprocess.Popen, str]:
    """``ctr serve`` of the registered model (prediction log on) in its own process group;
    returns once ``/readyz`` answers 200."""
    return _launch(settings, "ours", [
        sys.executable, "-m", "ctr.cli", "--home", str(settings.home), "--mlflow-uri", settings.mlflow_tracking_uri,
        "--port", "{port}", "serve", "--model-name", MODEL_NAME, "--poll-seconds", f"{poll_seconds:g}"],
        REPO, "/readyz")


def start_mlflow(settings) -> tuple[subprocess.Popen, str]:
    """``mlflow models serve`` of the champion (one uvicorn worker); returns once ``/ping`` answers."""
    return _launch(settings, "mlflow", [
        str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}", "-w", "1"], settings.home, "/ping")


def start_servers(settings, version: str):
    """Both servers: (ours, our URL, mlflow's, mlflow's URL)."""
    ours, ours_url = start_ours(settings)
    try:
        theirs, mlflow_url = start_mlflow(settings)
    except BaseException:
        stop(ours)
        raise
    return ours, ours_url, theirs, mlflow_url


def parity(ours_url: str, mlflow_url: str, fields: list[dict], columns, version: str) -> float:
    """Both servers score the same 50 records: largest relative difference."""
    ours = httpx.post(ours_url + "/v1/score", content=loadgen.score_bodies(fields[:50], 50, 1)[0],
                      headers={"content-type": "application/json"}).json()
    assert ours["model_version"] == version, ours
    theirs = httpx.post(mlflow_url + "/invocations", content=loadgen.mlflow_bodies(fields[:50], 50, 1, columns)[0],
                        headers={"content-type": "application/json"}, timeout=30).json()
    a = np.array([p["ctr"] for p in ours["predictions"]])
    b = np.array([row["click_probability"] for row in theirs["predictions"]])
    return float(np.max(np.abs(a - b) / b))


# -- scenarios ------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each scenario (default 10)")
    p.add_argument("--quick", action="store_true", help="3 s per scenario")
    p.add_argument("--rate", type=float, default=1000.0, help="single-impression rate (default 1000/s)")
    p.add_argument("--batch-rate", type=float, default=50.0, help="batch-of-100 rate (default 50/s)")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop workers for single impressions")
    p.add_argument("--impressions", type=int, default=20_000, help="generated impressions (train + traffic)")
    p.add_argument("--client", choices=loadgen.CLIENTS, default="raw")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each load scenario; the figures printed are the medians (default 3)")
    p.add_argument("--sweep", default="1000,1500,2000,3000,4000,5000",
                   help="single-impression rates tried in turn for the highest one held with p99 < --slo-ms "
                        "and no errors ('' to skip)")
    p.add_argument("--slo-ms", type=float, default=5.0, help="p99 target of the sweep (default 5 ms)")
    p.add_argument("--parse-only", action="store_true", help="only the in-process measurements")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    results: dict = {"load_average_start": load_average(), "cpus": os.cpu_count()}
    print(f"[bench] load average {results['load_average_start']} on {os.cpu_count()} CPUs", flush=True)

    with tempfile.TemporaryDirectory(prefix="ctr-bench-serving-") as tmp:
        home = Path(tmp)
        settings, imps, model_dir, version = build_registered_model(home, args.impressions, seed=21)
        fields = [i.fields for i in imps]
        traffic = fields[len(fields) // 2:]  # the held-out half: realistic, partly unseen values
        results["in_process"] = ip = in_process(model_dir, traffic)
        print("[in-process] " + ", ".join(f"{k} {v:.1f}" for k, v in ip.items()), flush=True)
        if args.parse_only:
            return _finish(results, args)

        from shared.featurize import load_spec

        columns = load_spec("generated").input_columns
        ours, ours_url, theirs, mlflow_url = start_servers(settings, version)
        try:
            results["parity_max_rel_diff"] = parity(ours_url, mlflow_url, traffic, columns, version)
            print(f"[parity] same 50 records, largest relative CTR difference {results['parity_max_rel_diff']:.2e}",
                  flush=True)
            single = loadgen.score_bodies(traffic, 1, 2000)
            batch = loadgen.score_bodies(traffic, 100, 100)
            m_single = loadgen.mlflow_bodies(traffic, 1, 2000, columns)
            m_batch = loadgen.mlflow_bodies(traffic, 100, 100, columns)
            rtb = loadgen.openrtb_bodies([i.bid_request for i in imps[len(imps) // 2:]], 2000)
            runs = []

            def measure_once(name, proc, make):
                """One run of a scenario: the loadgen summary plus the server's CPU per request."""
                cpu0 = tree_cpu_seconds(proc.pid)
                res = loadgen.run(make())
                res.name = name
                server_cpu = tree_cpu_seconds(proc.pid) - cpu0
                row = res.summary()
                row["server_cpu_us_per_request"] = round(server_cpu / max(res.requests, 1) * 1e6, 1)
                row["load_average"] = load_average()
                return row

            def summarize(name, rows):
                """The medians of ``rows`` (every run's throughput and p99 kept beside them), printed."""
                row = dict(rows[0])
                for k in ("throughput_rps", "predictions_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                          "client_cpu_us_per_request", "server_cpu_us_per_request"):
                    row[k] = float(np.median([r[k] for r in rows]))
                row["runs_throughput_rps"] = [r["throughput_rps"] for r in rows]
                row["runs_p99_ms"] = [r["p99_ms"] for r in rows]
                row["runs_load_average"] = [r["load_average"] for r in rows]
                row["errors"] = {k: sum(r["errors"].get(k, 0) for r in rows) for r in rows for k in r["errors"]}
                runs.append(row)
                errs = ", ".join(f"{k}={v}" for k, v in sorted(row["errors"].items())) or "0"
                target = f"{row['target']:g}/s" if row["mode"] == "rate" else f"c={row['target']:g}"
                print(f"{name:<34} {target:>8} {row['throughput_rps']:>9.1f} req/s {row['predictions_per_s']:>10.0f} "
                      f"pred/s  p50 {row['p50_ms']:7.2f}  p90 {row['p90_ms']:7.2f}  p99 {row['p99_ms']:7.2f}  "
                      f"max {row['max_ms']:8.2f} ms  errors {errs}  (client {row['client_cpu_us_per_request']:.0f}, "
                      f"server {row['server_cpu_us_per_request']:.0f} us CPU/req; medians of {len(rows)}: "
                      f"p99 per run {row['runs_p99_ms']})", flush=True)
                return row

            def measure(name, proc, make, repeats=None):
                """Run a scenario ``repeats`` times in a row; the row holds the medians."""
                return summarize(name, [measure_once(name, proc, make) for _ in range(repeats or args.repeats)])

            for kind in loadgen.CLIENTS:  # what the client alone costs, per request
                measure(f"client {kind}: GET /healthz", ours, lambda kind=kind: loadgen.run_concurrency(
                    ours_url + "/healthz", None, method="GET", concurrency=args.concurrency,
                    seconds=min(seconds, 3.0), client=kind), repeats=1)
            c = dict(client=args.client)
            rate_n = dict(seconds=seconds, **c)
            measure(f"client {args.client}: GET /healthz", ours, lambda: loadgen.run_rate(
                ours_url + "/healthz", None, method="GET", rate=args.rate, **rate_n))
            measure("ours /v1/score single", ours, lambda: loadgen.run_rate(
                ours_url + "/v1/score", single, rate=args.rate, **rate_n))
            measure("ours /v1/openrtb single", ours, lambda: loadgen.run_rate(
                ours_url + "/v1/openrtb", rtb, rate=args.rate, **rate_n))
            measure("ours /v1/score batch 100", ours, lambda: loadgen.run_rate(
                ours_url + "/v1/score", batch, rate=args.batch_rate, predictions_per_request=100, **rate_n))
            measure("mlflow /invocations single", theirs, lambda: loadgen.run_rate(
                mlflow_url + "/invocations", m_single, rate=args.rate, timeout=5.0, max_in_flight=256, **rate_n))
            measure("mlflow /invocations batch 100", theirs, lambda: loadgen.run_rate(
                mlflow_url + "/invocations", m_batch, rate=args.batch_rate, timeout=5.0, max_in_flight=256,
                predictions_per_request=100, **rate_n))

            # closed loop, interleaved: each round runs ours then mlflow, single then batch, so a
            # busy moment of the shared machine hits both sides of a ratio
            closed = [
                ("ours /v1/score single", ours, lambda: loadgen.run_concurrency(
                    ours_url + "/v1/score", single, concurrency=args.concurrency, seconds=seconds, **c)),
                ("mlflow /invocations single", theirs, lambda: loadgen.run_concurrency(
                    mlflow_url + "/invocations", m_single, concurrency=args.concurrency, seconds=seconds,
                    timeout=10.0, **c)),
                ("ours /v1/score batch 100", ours, lambda: loadgen.run_concurrency(
                    ours_url + "/v1/score", batch, concurrency=4, seconds=seconds, predictions_per_request=100, **c)),
                ("mlflow /invocations batch 100", theirs, lambda: loadgen.run_concurrency(
                    mlflow_url + "/invocations", m_batch, concurrency=4, seconds=seconds, timeout=10.0,
                    predictions_per_request=100, **c)),
            ]
            rounds: list[dict] = []
            for r in range(args.repeats):
                got = {name: measure_once(name, proc, make) for name, proc, make in closed}
                ratio_single = got["ours /v1/score single"]["throughput_rps"] / max(
                    got["mlflow /invocations single"]["throughput_rps"], 1e-9)
                ratio_batch = got["ours /v1/score batch 100"]["throughput_rps"] / max(
                    got["mlflow /invocations batch 100"]["throughput_rps"], 1e-9)
                rounds.append({"rows": got, "ratio_single": ratio_single, "ratio_batch100": ratio_batch,
                               "load_average": load_average()})
                print(f"[closed loop, round {r + 1}/{args.repeats}] load average {rounds[-1]['load_average']}: "
                      + ", ".join(f"{name} {row['predictions_per_s']:.0f} pred/s" for name, row in got.items())
                      + f"; ours / mlflow single {ratio_single:.1f}x, batch of 100 {ratio_batch:.1f}x", flush=True)
            for name, _, _ in closed:
                summarize(name, [rd["rows"][name] for rd in rounds])
            results["closed_loop_rounds"] = [{k: v for k, v in rd.items() if k != "rows"} for rd in rounds]
            results["throughput_ratio_single"] = float(np.median([rd["ratio_single"] for rd in rounds]))
            results["throughput_ratio_batch100"] = float(np.median([rd["ratio_batch100"] for rd in rounds]))
            print(f"[bench] closed-loop throughput, ours / mlflow models serve, medians of {len(rounds)} interleaved "
                  f"rounds: single {results['throughput_ratio_single']:.1f}x (per round "
                  f"{[round(rd['ratio_single'], 1) for rd in rounds]}), batch of 100 "
                  f"{results['throughput_ratio_batch100']:.1f}x (per round "
                  f"{[round(rd['ratio_batch100'], 1) for rd in rounds]})", flush=True)

            sweep = [float(r) for r in args.sweep.split(",") if r.strip()]
            held_median = held_every = None
            sweep_rows = []
            for rate in sweep:  # every run of every rate: p99, errors, throughput
                row = measure("ours /v1/score single (sweep)", ours, lambda rate=rate: loadgen.run_rate(
                    ours_url + "/v1/score", single, rate=rate, seconds=min(seconds, 5.0), client=args.client))
                every = [r <= args.slo_ms for r in row["runs_p99_ms"]]
                held_all = all(every) and not row["errors"] and min(row["runs_throughput_rps"]) >= 0.98 * rate
                held_med = (row["p99_ms"] < args.slo_ms and not row["errors"]
                            and row["throughput_rps"] >= 0.98 * rate)
                sweep_rows.append({"rate": rate, "runs_p99_ms": row["runs_p99_ms"], "median_p99_ms": row["p99_ms"],
                                   "errors": row["errors"], "held_in_every_run": held_all,
                                   "load_average": row["runs_load_average"]})
                print(f"[sweep] {rate:g}/s: p99 per run {row['runs_p99_ms']} ms (load average per run "
                      f"{row['runs_load_average']}); p99 < {args.slo_ms:g} ms with no errors in every run: "
                      f"{'yes' if held_all else 'NO'}", flush=True)
                if held_all and held_every == (sweep_rows[-2]["rate"] if len(sweep_rows) > 1 else None):
                    held_every = rate  # held in every run at this rate and at every lower one
                if held_med:
                    held_median = rate
                else:
                    break  # the median missed: the higher rates will too
            if sweep:
                results["sweep"] = sweep_rows
                results["highest_rate_held_every_run"] = held_every
                results["highest_rate_within_slo"] = held_median
                print(f"[bench] sweep, p99 < {args.slo_ms:g} ms and no errors: highest rate held in every run "
                      f"(and at every lower rate): {held_every if held_every is not None else 'none'} req/s; by the "
                      f"median of {args.repeats}: {held_median if held_median is not None else 'none'} req/s",
                      flush=True)
                first = sweep_rows[0]
                results["first_rate_held_every_run"] = first["held_in_every_run"]
                print(f"[bench] {first['rate']:g}/s held p99 < {args.slo_ms:g} ms in every run: "
                      f"{'yes' if first['held_in_every_run'] else 'NO'} (p99 per run {first['runs_p99_ms']} ms)",
                      flush=True)
            results["runs"] = runs
            text = httpx.get(ours_url + "/metrics").text
            results["ours_handler_latency"] = {e: handler_quantiles(text, e) for e in ("score", "openrtb")}
            print(f"[ours] server-side handler latency over all runs (histogram bounds): "
                  f"{results['ours_handler_latency']}", flush=True)
        finally:
            stop(ours)
            stop(theirs)
    return _finish(results, args)


def _finish(results: dict, args) -> int:
    results["load_average_end"] = load_average()
    print(f"[bench] load average at the end {results['load_average_end']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
