"""The training engine beside its peers (issue 12's targets), on the same rows, in one session.

Generates a Criteo-layout window with a known truth (the peers' ``synth_criteo.py``), imports it
with ``ctr import criteo --days 11`` (days 1-9 train, 10 validation, 11 test: the peers'
protocol), then per repeat, interleaved so the machine's load hits everyone alike:

* ``ctr train`` with the default search (whole process: start-up, read, featurize, search,
  refit, evaluate, register), its wall time, peak RSS of its process tree, test log-loss;
* ``ctr train`` with one fixed setting (no search);
* Vowpal Wabbit (``peer_vw.py``: convert + train + predict, the end-to-end time) and,
  unless ``--skip-sklearn``, scikit-learn saga L2 (``peer_sklearn.py``);
* with ``--crosses``: the same with the three true crosses (c1 x c2, c6 x c17, c8 x c13);
* one FTRL pass over the featurized training rows in process (examples/s) vs VW's training
  examples/s;
* the warm start: ``ctr train --update`` of a champion trained on days 1-9 with day 10,
  tested on day 11, against a full ``ctr train`` on days 1-10 tested on day 11.

Medians over ``--repeats`` are printed with every run's figures. Peers run in their own
virtualenv (``--peers-python``; created with their README's packages when missing).

    .venv/bin/python benchmarks/bench_engine.py --peers-dir ../shared/peers --rows 1100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CTR = str(REPO / ".venv" / "bin" / "ctr")
CROSSES = (("c1", "c2"), ("c6", "c17"), ("c8", "c13"))
FIXED_SPACE = """
[budget]
trials = 1
wall_seconds = 600
[fixed]
engine = "ftrl"
alpha = 0.05
beta = 1.0
l1 = 0.0
l2 = 10.0
passes = 3
"""


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes of the process tree, stdout) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    reader.join()
    wall = time.perf_counter() - started
    out = "".join(out_chunks)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return wall, peak, out


def test_log_loss(out: str) -> float:
    m = re.search(r"test log-loss ([0-9.]+)", out)
    if not m:
        raise SystemExit(f"no test log-loss in the output:\n{out[-2000:]}")
    return float(m.group(1))


def ensure_peers_python(work: Path, given: str | None) -> str:
    if given:
        return given
    venv = work / "peers-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "pandas", "pyarrow", "scikit-learn",
                        "vowpalwabbit"], check=True)
    return str(py)


def ensure_data(a, peers_py: str, work: Path) -> tuple[Path, Path]:
    prefix = f"s{a.seed}_{a.rows // 1000}k"
    data = work / "data"
    train, test = data / f"{prefix}.train.tsv", data / f"{prefix}.test.tsv"
    if not test.exists():
        subprocess.run([peers_py, str(a.peers_dir / "synth_criteo.py"), "--seed", str(a.seed), "--rows", str(a.rows),
                        "--test-rows", str(a.test_rows), "--prefix", prefix, "--out-dir", str(data)], check=True)
    home = work / f"home-{prefix}"
    if not (home / "warehouse" / "criteo_observations").exists():
        both = data / f"{prefix}.all.tsv"
        with open(both, "wb") as out:
            for part in (train, test):
                out.write(part.read_bytes())
        subprocess.run([CTR, "import", "criteo", str(both), "--days", "11"], check=True,
                       env={**os.environ, "CTR_HOME": str(home),
                            # the import holds a day of rows in the driver: 4g fails at 500k rows a day
                            "CTR_SPARK_DRIVER_MEMORY": os.environ.get("CTR_SPARK_DRIVER_MEMORY", "8g")})
        both.unlink()
    return train, test


def crosses_spec(work: Path) -> Path:
    from shared.featurize import load_spec

    text = load_spec("criteo").to_toml()
    text += "".join(f'\n[[crosses]]\nfields = ["{x}", "{y}"]\n' for x, y in CROSSES)
    path = work / "criteo_crosses.toml"
    path.write_text(text.replace('name = "criteo"', 'name = "criteo_crosses"'))
    return path


def ctr_train(home: Path, *extra: str, start: str = "2014-01-01", days: int = 9) -> dict:
    env = {**os.environ, "CTR_HOME": str(home)}
    cmd = [CTR, "train", "--start", start, "--train-days", str(days), "--table", "criteo_observations", "--quiet",
           *extra]
    if "--spec" not in extra:
        cmd += ["--spec", "criteo"]
    wall, peak, out = run_measured(cmd, env)
    return {"wall_s": wall, "peak_rss_gb": peak / 2**30, "test_log_loss": test_log_loss(out), "output": out}


def peer_vw(a, peers_py: str, train: Path, test: Path, work: Path, quadratic: bool) -> dict:
    out = work / f"vw{'_q' if quadratic else ''}.json"
    cmd = [peers_py, str(a.peers_dir / "peer_vw.py"), "--train", str(train), "--test", str(test), "--repeats", "1",
           "--reconvert", "--out", str(out), "--workdir", str(work / "vw")]
    for x, y in (CROSSES if quadratic else ()):
        cmd += ["-q", chr(ord("a") + int(x[1:]) - 1) + chr(ord("a") + int(y[1:]) - 1)]
    subprocess.run(cmd, check=True, capture_output=True)
    d = json.loads(out.read_text())
    s = d["summary"]
    conv = d["conversion"]["train"]["seconds"] + d["conversion"]["test"]["seconds"]
    return {"wall_s": conv + s["train_wall_s"]["median"] + s["predict_wall_s"]["median"],
            "convert_s": conv, "train_s": s["train_wall_s"]["median"],
            "examples_per_s": s["train_examples_per_s"]["median"], "test_log_loss": s["test_logloss"]["median"]}


def peer_sklearn(a, peers_py: str, train: Path, test: Path, work: Path, crosses: bool) -> dict:
    out = work / f"sk{'_x' if crosses else ''}.json"
    cmd = [peers_py, str(a.peers_dir / "peer_sklearn.py"), "--train", str(train), "--test", str(test),
           "--repeats", "1", "--out", str(out), "--model", "lr", "solver=saga", "penalty=l2", "C=0.03",
           "max_iter=15"]
    for x, y in (CROSSES if crosses else ()):
        cmd += ["--cross", f"C{x[1:]}xC{y[1:]}"]
    wall, peak, _ = run_measured(cmd)
    d = json.loads(out.read_text())
    m = next(iter(d["models"].values()))["summary"]
    return {"wall_s": wall, "peak_rss_gb": peak / 2**30, "test_log_loss": m["test_logloss"]["median"]}


def one_pass_throughput(home: Path) -> dict:
    """Rows per second of one FTRL pass over the featurized training window (in process)."""
    from datetime import date

    from feature_store.arrow_reader import read_window_arrow
    from feature_store.reader import Window
    from shared.config import load_settings
    from shared.featurize import Featurizer, load_spec
    from training.ftrl import FTRLLogisticRegression

    settings = load_settings({"home": str(home)})
    spec = load_spec("criteo")
    frame, _ = read_window_arrow(settings, Window(date(2014, 1, 1), date(2014, 1, 11)),
                                 sorted({*spec.input_columns, "label"}), table="criteo_observations")
    t0 = time.perf_counter()
    X = Featurizer(spec).transform(frame)
    featurize = time.perf_counter() - t0
    y = frame.column("label").to_numpy()
    FTRLLogisticRegression().fit(X[:100], y[:100])  # compile (cached) outside the timing
    t0 = time.perf_counter()
    FTRLLogisticRegression(passes=1).fit(X, y)
    fit = time.perf_counter() - t0
    return {"rows": X.shape[0], "featurize_s": featurize, "pass_s": fit, "examples_per_s": X.shape[0] / fit}


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-dir", type=Path, default=REPO.parent / "shared" / "peers")
    ap.add_argument("--peers-python", help="python of a virtualenv with the peers' packages")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ctr-bench-engine")
    ap.add_argument("--rows", type=int, default=1_100_000)
    ap.add_argument("--test-rows", type=int, default=None, help="default rows / 11")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--crosses", action="store_true", help="also measure with the three true crosses")
    ap.add_argument("--skip-warm-start", action="store_true")
    ap.add_argument("--only-warm-start", action="store_true", help="measure only the warm start")
    a = ap.parse_args(argv)
    a.test_rows = a.test_rows or a.rows // 11
    if not (a.peers_dir / "synth_criteo.py").exists():
        raise SystemExit(f"the peers' scripts are not in {a.peers_dir} (give --peers-dir)")
    a.work.mkdir(parents=True, exist_ok=True)
    peers_py = ensure_peers_python(a.work, a.peers_python)
    train, test = ensure_data(a, peers_py, a.work)
    home = a.work / f"home-s{a.seed}_{a.rows // 1000}k"
    fixed = a.work / "fixed_space.toml"
    fixed.write_text(FIXED_SPACE)
    xspec = crosses_spec(a.work)
    runs: dict[str, list[dict]] = {}

    def record(name: str, r: dict) -> None:
        runs.setdefault(name, []).append(r)
        figures = ", ".join(f"{k} {v:.5f}" if k == "test_log_loss" else f"{k} {v:,.2f}"
                            for k, v in r.items() if isinstance(v, float | int))
        print(f"  {name:<22} {figures}", flush=True)

    for rep in range(0 if a.only_warm_start else a.repeats):
        print(f"repeat {rep + 1}/{a.repeats}", flush=True)
        record("ctr train (search)", ctr_train(home))
        record("ctr train (fixed)", ctr_train(home, "--search-space", str(fixed)))
        record("vw linear", peer_vw(a, peers_py, train, test, a.work, False))
        if not a.skip_sklearn:
            record("sklearn saga L2", peer_sklearn(a, peers_py, train, test, a.work, False))
        if a.crosses:
            record("ctr train + crosses", ctr_train(home, "--spec", str(xspec)))
            record("vw -q crosses", peer_vw(a, peers_py, train, test, a.work, True))
            if not a.skip_sklearn:
                record("sklearn + crosses", peer_sklearn(a, peers_py, train, test, a.work, True))
        record("ftrl one pass", one_pass_throughput(home))

    if runs:
        summarize(a, runs)
    if not a.skip_warm_start:
        warm_start(a.work, home)
    return 0


def summarize(a, runs: dict[str, list[dict]]) -> None:
    """Medians per measured command and the issue's ratios."""
    print(f"\nmedians over {a.repeats} repeats ({a.rows - a.test_rows:,} train rows, {a.test_rows:,} test rows)")
    for name, rs in runs.items():
        keys = [k for k in rs[0] if isinstance(rs[0][k], float | int)]
        print(f"  {name:<22} " + ", ".join(
            f"{k} {med(rs, k):.5f}" if k == "test_log_loss" else f"{k} {med(rs, k):,.2f}" for k in keys))
    vw = runs["vw linear"]
    print(f"\n  default ctr train wall {med(runs['ctr train (search)'], 'wall_s'):.1f} s (target < 60 s at 1M rows)")
    print(f"  fixed setting / VW end to end: {med(runs['ctr train (fixed)'], 'wall_s') / med(vw, 'wall_s'):.2f}x"
          f" (target <= 2x)")
    print(f"  one pass / VW training examples/s: "
          f"{med(runs['ftrl one pass'], 'examples_per_s') / med(vw, 'examples_per_s'):.1f}x (target >= 1x)")
    peers = [med(vw, "test_log_loss")] + ([] if a.skip_sklearn else [med(runs["sklearn saga L2"], "test_log_loss")])
    print(f"  test log-loss ours {med(runs['ctr train (search)'], 'test_log_loss'):.5f} vs best peer "
          f"{min(peers):.5f} (target: no worse)")
    if a.crosses:
        xpeers = [med(runs["vw -q crosses"], "test_log_loss")] + (
            [] if a.skip_sklearn else [med(runs["sklearn + crosses"], "test_log_loss")])
        print(f"  with crosses ours {med(runs['ctr train + crosses'], 'test_log_loss'):.5f} vs best peer "
              f"{min(xpeers):.5f}")


def warm_start(work: Path, home: Path) -> None:
    """``ctr train --update`` with one new day against a full retrain on all the days."""
    print("\nwarm start: champion on days 1-9 (train 1-8, validate 9), updated with day 10, test day 11")
    warm_home = work / "home-warm"
    if warm_home.exists():
        shutil.rmtree(warm_home)
    warm_home.mkdir()
    os.symlink(home / "warehouse", warm_home / "warehouse")
    champion = ctr_train(warm_home, days=8)
    update = ctr_train(warm_home, "--update", start="2014-01-10", days=1)
    full = ctr_train(warm_home, days=9)
    print(f"  champion (days 1-9, tested on day 10): {champion['wall_s']:.1f} s")
    print(f"  update with day 10: {update['wall_s']:.1f} s, test log-loss {update['test_log_loss']:.5f}")
    print(f"  full retrain on days 1-10: {full['wall_s']:.1f} s, test log-loss {full['test_log_loss']:.5f}")
    rel = update["test_log_loss"] / full["test_log_loss"] - 1
    print(f"  update vs full: {100 * rel:+.2f} % log-loss (target within 0.5 %), "
          f"{update['wall_s'] / full['wall_s']:.2f}x the time")


if __name__ == "__main__":
    sys.exit(main())
