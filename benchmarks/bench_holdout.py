"""Real-data holdout: the default ``ctr train`` against the peers' plain scikit-learn L2 grid,
on exactly the same rows, judged by the paired per-row test log-loss (issue 12's real-data target).

    .venv/bin/python benchmarks/bench_holdout.py --layout criteo --file day_sample.tsv --val 1000 --test 1000
    .venv/bin/python benchmarks/bench_holdout.py --layout avazu --file train.part-10000 --skip 100 \\
        --val 1000 --test 1000 --json /tmp/holdout-avazu.json

Split, as ``../shared/peers/holdout_peers.py`` splits (same ``--skip`` / ``--val`` / ``--test``): the
data rows after ``--skip`` in file order; test = the last ``--test`` rows, validation = the
``--val`` rows before them, train = the rest.

Ours: the splits are written to temporary files and loaded into a fresh data root (a temp
dir, or ``--home``) with the platform's own import (``ctr import criteo|avazu``, run in-process
by one child Python so several imports share one Spark start), then the default
``ctr train --spec criteo|avazu --table criteo_observations|avazu_observations --quiet`` runs in
a child process with ``CTR_HOME`` set (default search space, trial and time budgets; add
``--train-arg`` only to deviate on purpose). The registered version's plain model files are
loaded (checksums verified) and the test window is read back from the warehouse at the
model's pinned Delta version, featurized by the model's own spec and scored; rows are matched
to the test split by ``impression_id``.

* Criteo has no timestamps: the import dates row i of n as start + floor(days * i / n), so each
  split file is imported with ``--days 1`` on its own date: train 2014-01-01, validation
  2014-01-02, test 2014-01-03; ``ctr train --start 2014-01-01 --train-days 1
  --validation-days 1 --test-days 1``. Test ``impression_id`` = ``test.tsv:<row in the split>``.
  A Kaggle-CSV file (header ``Id,Label,I1,..``) is first rewritten as the raw TSV (label,
  I1..I13, C1..C26; ``Id`` dropped), and both sides read that TSV (the peers' reader takes
  only the raw layout).
* Avazu dates come from ``hour`` (YYMMDDHH), and a real sample usually sits in one hour, so
  the split files carry rewritten ``hour`` values (row order and every other column kept):
  each row keeps its hour of day and its weekday, its date moved into a 7-day window per split
  (train [B, B+7), validation [B+7, B+14), test [B+14, B+21), B = the first train row's
  date), so the spec's ``day_of_week`` and ``hour_of_day`` mean what they meant and do not mark
  the split; ``ctr train --train-days 7 --validation-days 7 --test-days 7``. The rewritten rows
  go to one file, in the original order, and one import (which keeps the first row of each
  ``id``, as it would for the original file); test ``impression_id`` = Avazu's ``id``. The peer
  reads the original file (its ``hour=`` token keeps the original value).

The peer, imported from ``--peers-dir`` (not copied): ``holdout_peers.read_rows`` tokens,
``FeatureHasher(2**--bits, alternate_sign=False)``, ``LogisticRegression(solver="liblinear")``
L2 with C in (0.01, 0.03, 0.1, 0.3, 1.0) chosen on validation by ``holdout_peers.metrics``,
refit on train + validation: the ``sklearn_lr_l2`` row of ``holdout_peers.py``, whose own
``sk_peer`` is also run as a check that this replication reproduces its figure (skip with
``--no-peer-check``).

Printed: each side's test log-loss (5 decimals; probabilities clipped to [1e-7, 1 - 1e-7] as
the peers do), the mean paired difference of per-row log-loss (ours - peer) over the test rows
both scored, with a percentile bootstrap 95 % interval (``--bootstrap`` resamples of the test
rows, ``--seed``), and the verdict: ``loses`` if the whole interval is above 0, ``wins`` if it is
below 0, else ``no significant difference``. ``--json PATH`` adds the per-row probabilities
and log-losses. Test rows that the import quarantined (so ours has no score for them) are left
out of the paired figures and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEER_GRID_C = (0.01, 0.03, 0.1, 0.3, 1.0)  # holdout_peers.sk_peer's lr_l2 grid
CLIP = 1e-7  # holdout_peers.metrics clips probabilities here
CRITEO_START = date(2014, 1, 1)  # the import's placeholder start date
CRITEO_COLUMNS = ["label"] + [f"i{j}" for j in range(1, 14)] + [f"c{k}" for k in range(1, 27)]
SPLITS = ("train", "validation", "test")
TABLES = {"criteo": "criteo_observations", "avazu": "avazu_observations"}

# One child Python runs the platform's ``ctr import`` for every split file (one Spark start).
_IMPORT_CHILD = """
import sys
from ctr.cli import main
dataset = sys.argv[1]
for item in sys.argv[2:]:
    path, start = item.rsplit("@", 1)
    argv = ["import", dataset, path] + (["--days", "1", "--start-date", start] if start else [])
    rc = main(argv)
    if rc:
        sys.exit(rc)
"""


# -- input ------------------------------------------------------------------------------

def read_lines(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [line.rstrip("\r\n") for line in f]


def criteo_raw_lines(lines: list[str]) -> tuple[list[str], bool]:
    """The file's rows in the raw TSV layout (label, I1..I13, C1..C26); a header file (the
    Kaggle CSV ``Id,Label,...`` or any layout with a header) is rewritten by column name."""
    if not lines:
        return lines, False
    delim = "\t" if "\t" in lines[0] else ","
    head = [h.strip().lstrip("\ufeff").lower() for h in lines[0].split(delim)]
    if head[0] not in ("id", "label"):
        if delim != "\t":
            raise SystemExit("criteo: a file without a header must be the tab-separated raw layout")
        return lines, False
    missing = [c for c in CRITEO_COLUMNS if c not in head]
    if missing:
        raise SystemExit(f"criteo: the header lacks column(s) {', '.join(missing)}")
    pos = [head.index(c) for c in CRITEO_COLUMNS]
    out = []
    for line in lines[1:]:
        fields = line.split(delim)
        out.append("\t".join(fields[p] if p < len(fields) else "" for p in pos))
    return out, True


def split_bounds(n: int, val: int, test: int) -> tuple[int, int]:
    te0 = n - test
    va0 = te0 - val
    if val < 1 or test < 1 or va0 < 1:
        raise SystemExit(f"{n} rows cannot hold --val {val} + --test {test} and a training split")
    return va0, te0


def avazu_rewrite_hours(header: str, rows: list[str], va0: int, te0: int) -> tuple[list[list[str]], date]:
    """The three splits' rows with ``hour`` moved to [B + 7s, B + 7s + 7) (s = split), keeping each
    row's hour of day and weekday; B = the first parseable train row's date."""
    head = header.split(",")
    hi = head.index("hour")

    def day_of(fields):
        try:
            return datetime.strptime(fields[hi][:6], "%y%m%d").date()
        except (ValueError, IndexError):
            return None

    parsed = [r.split(",") for r in rows]
    base = next((d for d in map(day_of, parsed[:va0]) if d is not None), None)
    if base is None:
        raise SystemExit("avazu: no training row has a valid hour (YYMMDDHH)")
    out: list[list[str]] = [[], [], []]
    for i, fields in enumerate(parsed):
        s = 0 if i < va0 else 1 if i < te0 else 2
        d = day_of(fields)
        if d is not None and len(fields[hi]) == 8:  # else leave it: the import quarantines it
            new = base + timedelta(days=7 * s + (d - base).days % 7)
            fields = fields[:hi] + [new.strftime("%y%m%d") + fields[hi][6:]] + fields[hi + 1:]
        out[s].append(",".join(fields))
    return out, base


# -- ours -------------------------------------------------------------------------------

def child_env(home: Path) -> dict[str, str]:
    # the data root's own MLflow store; other settings (CTR_DELTA_JARS, CTR_SPARK_MASTER, ...) pass through
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MLFLOW_") or k.startswith("CTR_MLFLOW_"))}
    env["CTR_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_child(cmd: list[str], env: dict[str, str], what: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        tail = "\n".join((p.stdout + "\n" + p.stderr).strip().splitlines()[-40:])
        raise SystemExit(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return p.stdout, secs


def ctr_command() -> list[str]:
    exe = Path(sys.executable).parent / "ctr"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ctr.cli"]


def run_ours(o, layout: str, split_files: list[Path], starts: list[str], train_start: date, days: int,
             home: Path, test_keys: dict[str, int]) -> dict:
    from shared.config import load_settings

    env = child_env(home)
    out = {}
    items = [f"{p}@{s}" for p, s in zip(split_files, starts)]
    _, out["import_seconds"] = run_child([sys.executable, "-c", _IMPORT_CHILD, layout, *items], env,
                                         f"ctr import {layout}")
    cmd = [*ctr_command(), "train", "--start", train_start.isoformat(), "--train-days", str(days),
           "--validation-days", str(days), "--test-days", str(days), "--table", TABLES[layout],
           "--spec", layout, "--quiet", *o.train_arg]
    stdout, out["train_seconds"] = run_child(cmd, env, "ctr train")
    out["train_command"] = "ctr " + " ".join(cmd[len(ctr_command()):])
    out["train_stdout_tail"] = stdout.strip().splitlines()[-12:]

    from feature_store.arrow_reader import read_window_arrow
    from feature_store.reader import Window
    from shared.featurize import Featurizer, FeatureSpec
    from training.artifacts import load_model_dir
    from training.tracking import download_model_dir, list_versions

    settings = load_settings({"home": str(home)}, env=env)
    versions = list_versions(settings, "ctr-model")
    if not versions:
        raise SystemExit("ctr train registered no version of ctr-model")
    newest = versions[-1]
    model_dir = download_model_dir(settings, "ctr-model", newest["version"],
                                   dst_path=tempfile.mkdtemp(prefix="bench-holdout-model-", dir=home))
    model = load_model_dir(model_dir)
    meta = model.metadata
    spec = FeatureSpec.from_toml(model.spec_text, source="model")
    ref = meta.get("data_reference", {})
    version = ref.get("delta_version")
    test_start = train_start + timedelta(days=2 * days)
    columns = sorted(set(spec.input_columns) | {"impression_id", "label"})
    frame, read = read_window_arrow(settings, Window(test_start, test_start + timedelta(days=days)), columns,
                                    table=TABLES[layout], version=version)
    p_all = model.score_batch(Featurizer(spec).transform(frame))
    ids = frame.column("impression_id").to_pylist()
    labels = frame.column("label").to_numpy()
    p = np.full(len(test_keys), np.nan)
    y_wh = np.full(len(test_keys), -1)
    for key, prob, lab in zip(ids, p_all, labels):
        i = test_keys.get(key)
        if i is not None:
            p[i], y_wh[i] = prob, lab
    test_metrics = (meta.get("metrics") or {}).get("test") or {}
    try:  # the search's figures, as ctr train logged them to the version's MLflow run
        from training.tracking import _client

        run_params = _client(settings).get_run(newest["run_id"]).data.params
    except Exception:  # noqa: BLE001 - optional detail
        run_params = {}
    search = {k.split(".", 1)[1]: v for k, v in run_params.items() if k.startswith("search.")}
    out.update(
        version=newest["version"], aliases=newest["aliases"], engine=meta.get("engine"),
        hyperparameters=meta.get("hyperparameters"), downsample_rate=meta.get("downsample_rate"),
        n_nonzero=meta.get("n_nonzero"), bits=model.bits, delta_version=read.version, warehouse_test_rows=len(ids),
        platform_test_logloss=test_metrics.get("log_loss"), search=search,
        warehouse_test_logloss=_mean_logloss(labels, p_all) if len(ids) else None,
        p=p, y=y_wh,
    )
    return out


# -- the peer ---------------------------------------------------------------------------

def load_peers(peers_dir: Path):
    if not (peers_dir / "holdout_peers.py").is_file():
        raise SystemExit(f"--peers-dir {peers_dir}: no holdout_peers.py there. This benchmark imports the "
                         "peers' scripts (../shared/peers beside the checkout); pass --peers-dir to where they are.")
    sys.path.insert(0, str(peers_dir))
    import holdout_peers

    return holdout_peers


def run_peer(hp, y, toks, va0: int, te0: int, bits: int, check: bool) -> dict:
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    X = FeatureHasher(n_features=2 ** bits, input_type="string", alternate_sign=False).transform(toks).tocsr()

    def make(c):  # as holdout_peers.sk_peer makes its lr_l2
        if hp._new_sklearn():
            return LogisticRegression(solver="liblinear", l1_ratio=0, C=c)
        return LogisticRegression(solver="liblinear", penalty="l2", C=c)

    best = None
    for c in PEER_GRID_C:
        m = make(c).fit(X[:va0], y[:va0])
        v = hp.metrics(y[va0:te0], m.predict_proba(X[va0:te0])[:, 1])["logloss"]
        if best is None or v < best[0]:
            best = (v, c)
    p = make(best[1]).fit(X[:te0], y[:te0]).predict_proba(X[te0:])[:, 1]
    out = {"C": best[1], "val_logloss": best[0], "p": p, "seconds": time.perf_counter() - t0,
           "holdout_peers_metrics": hp.metrics(y[te0:], p)}
    if check:
        ref = hp.sk_peer(X[:va0], y[:va0], X[va0:te0], y[va0:te0], X[:te0], y[:te0], X[te0:], y[te0:])["sklearn_lr_l2"]
        out["check"] = {"holdout_peers_lr_l2": ref,
                        "same": ref["logloss"] == out["holdout_peers_metrics"]["logloss"] and ref["chosen"]["C"] == best[1]}
    return out


# -- comparison -------------------------------------------------------------------------

def row_logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, CLIP, 1 - CLIP)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _mean_logloss(y, p) -> float:
    return float(row_logloss(np.asarray(y, dtype=float), np.asarray(p, dtype=float)).mean())


def paired_bootstrap(d: np.ndarray, resamples: int, seed: int, chunk: int = 200) -> tuple[float, float, float]:
    """Mean of ``d`` and the percentile bootstrap 95 % interval of the mean (rows resampled)."""
    rng = np.random.default_rng(seed)
    n = d.size
    means = []
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means.append(d[rng.integers(0, n, size=(k, n))].mean(axis=1))
    lo, hi = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def verdict(lo: float, hi: float) -> str:
    return "loses" if lo > 0 else "wins" if hi < 0 else "no significant difference"


# -- main -------------------------------------------------------------------------------

def parse_args(argv=None):
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--layout", choices=["criteo", "avazu"], required=True)
    a.add_argument("--file", required=True, type=Path,
                   help="criteo: raw TSV (label, I1..I13, C1..C26) or Kaggle CSV; avazu: CSV with header")
    a.add_argument("--val", type=int, required=True, help="validation rows (before the test rows)")
    a.add_argument("--test", type=int, required=True, help="test rows (the file's last rows)")
    a.add_argument("--skip", type=int, default=0, help="leading data rows to leave out (as holdout_peers.py)")
    a.add_argument("--peers-dir", type=Path, default=REPO.parent / "shared" / "peers",
                   help="the peers' scripts (default ../shared/peers beside the checkout)")
    a.add_argument("--home", type=Path, help="data root for our import and training (default: a temp dir, removed)")
    a.add_argument("--bits", type=int, default=20, help="the peer's FeatureHasher bits (holdout_peers.py default)")
    a.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the test rows")
    a.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    a.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `ctr train` (repeatable; e.g. --train-arg=--trials=8): NOT the default")
    a.add_argument("--no-peer-check", action="store_true",
                   help="skip re-running holdout_peers.sk_peer to check the replicated peer")
    a.add_argument("--json", type=Path, help="write the figures and per-row values here")
    return a.parse_args(argv)


def main(argv=None) -> dict:
    o = parse_args(argv)
    if not o.file.is_file():
        raise SystemExit(f"--file {o.file}: no such file")
    peers_dir = o.peers_dir.expanduser().resolve()
    hp = load_peers(peers_dir)
    home = (o.home.expanduser().resolve() if o.home else Path(tempfile.mkdtemp(prefix="bench-holdout-")))
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="splits-", dir=home))
    try:
        lines = read_lines(o.file)
        if o.layout == "criteo":
            raw, converted = criteo_raw_lines(lines)
            peer_file = o.file
            if converted:
                peer_file = work / "all.tsv"
                peer_file.write_text("".join(line + "\n" for line in raw))
            rows = raw[o.skip:]
        else:
            peer_file, converted, rows = o.file, False, lines[1 + o.skip:]
        y, toks = hp.read_rows(o.layout, str(peer_file), o.skip)
        n = len(y)
        if n != len(rows):
            raise SystemExit(f"the peers' reader gives {n} rows, the file {len(rows)}")
        va0, te0 = split_bounds(n, o.val, o.test)
        bounds = [(0, va0), (va0, te0), (te0, n)]

        if o.layout == "criteo":
            split_rows = [rows[a:b] for a, b in bounds]
            names = ["train.tsv", "validation.tsv", "test.tsv"]
            header = None
            train_start, days = CRITEO_START, 1
            starts = [(CRITEO_START + timedelta(days=s)).isoformat() for s in range(3)]
            test_keys = {f"test.tsv:{i}": i for i in range(n - te0)}
        else:
            header = lines[0]
            split_rows, train_start = avazu_rewrite_hours(header, rows, va0, te0)
            split_rows = [[r for part in split_rows for r in part]]  # one import: the dates are in the rows
            names = ["splits.csv"]
            days, starts = 7, [""]
            id_col = header.split(",").index("id")
            test_keys = {}
            for i, r in enumerate(split_rows[0][te0:]):
                test_keys.setdefault(r.split(",")[id_col], i)
        files = []
        for name, part in zip(names, split_rows):
            f = work / name
            f.write_text("".join(line + "\n" for line in ([header] if header else []) + part))
            files.append(f)

        t0 = time.perf_counter()
        ours = run_ours(o, o.layout, files, starts, train_start, days, home, test_keys)
        ours["seconds"] = time.perf_counter() - t0
        peer = run_peer(hp, y, toks, va0, te0, o.bits, not o.no_peer_check)
    finally:
        if o.home is None:
            shutil.rmtree(home, ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)

    y_test = y[te0:].astype(float)
    p_ours, p_peer = ours.pop("p"), peer.pop("p")
    both = ~np.isnan(p_ours)
    mism = int(np.sum(both & (ours.pop("y") != y[te0:])))
    if mism:
        raise SystemExit(f"{mism} test rows have a different label in the warehouse than in the file: rows mismatched")
    ll_ours = np.full(y_test.size, np.nan)
    ll_ours[both] = row_logloss(y_test[both], p_ours[both])
    ll_peer = row_logloss(y_test, p_peer)
    d = ll_ours[both] - ll_peer[both]
    mean, lo, hi = paired_bootstrap(d, o.bootstrap, o.seed) if d.size else (math.nan,) * 3
    base = float(np.clip(y[:te0].mean(), CLIP, 1 - CLIP))
    res = {
        "layout": o.layout, "file": str(o.file), "kaggle_csv_converted": converted, "skip": o.skip,
        "rows": n, "train": va0, "val": te0 - va0, "test": n - te0,
        "test_ctr": round(float(y_test.mean()), 4), "train_ctr": round(float(y[:va0].mean()), 4),
        "test_rows_paired": int(both.sum()), "test_rows_missing_ours": int((~both).sum()),
        "ours": {"test_logloss": round(float(ll_ours[both].mean()), 5) if both.any() else None,
                 **{k: v for k, v in ours.items()}},
        "peer": {"name": "sklearn LogisticRegression liblinear L2, C grid on validation, refit train+val",
                 "test_logloss": round(float(ll_peer.mean()), 5),
                 "test_logloss_paired_rows": round(float(ll_peer[both].mean()), 5) if both.any() else None,
                 **peer},
        "constant_test_logloss": round(_mean_logloss(y_test, np.full(y_test.size, base)), 5),
        "paired": {"mean_diff_ours_minus_peer": mean, "ci95": [lo, hi], "bootstrap": o.bootstrap, "seed": o.seed,
                   "n": int(d.size), "verdict": verdict(lo, hi) if d.size else "no paired rows"},
        "per_row": {"test_row": list(range(y_test.size)), "label": y_test.astype(int).tolist(),
                    "p_ours": [None if math.isnan(v) else float(v) for v in p_ours],
                    "p_peer": p_peer.astype(float).tolist(),
                    "logloss_ours": [None if math.isnan(v) else float(v) for v in ll_ours],
                    "logloss_peer": ll_peer.astype(float).tolist()},
    }
    print_table(res)
    if o.json:
        o.json.write_text(json.dumps(res, indent=1, default=str))
    return res


def print_table(r: dict) -> None:
    ours, peer, pr = r["ours"], r["peer"], r["paired"]
    params = ours.get("hyperparameters") or {}
    short = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
    print(f"holdout {r['layout']} {r['file']}{' (Kaggle CSV -> raw TSV)' if r['kaggle_csv_converted'] else ''}: "
          f"{r['rows']} rows after skip {r['skip']}: train {r['train']}, val {r['val']}, test {r['test']} "
          f"(CTR train {r['train_ctr']:.4f}, test {r['test_ctr']:.4f})")
    ll = ours["test_logloss"]
    print(f"  {'ours: ctr train (default search)':<44} test log-loss {'-' if ll is None else f'{ll:.5f}'}  "
          f"v{ours['version']} {ours.get('engine')} [{short}]  {ours['seconds']:.1f} s "
          f"(import {ours['import_seconds']:.1f}, train {ours['train_seconds']:.1f})")
    if ours.get("platform_test_logloss") is not None:
        print(f"  {'  (ctr train reported on its test window)':<44} test log-loss {ours['platform_test_logloss']:.5f}"
              f"  ({ours['warehouse_test_rows']} warehouse rows)")
    search = ours.get("search") or {}
    if "best_val_log_loss" in search:
        print(f"  {'  (its search: best validation log-loss)':<44} val log-loss {float(search['best_val_log_loss']):.5f}"
              f"  ({search.get('trials', '?')} trials, stopped: {search.get('stopped', '?')})")
    print(f"  {'peer: sklearn L2 liblinear, C=' + str(peer['C']):<44} test log-loss {peer['test_logloss']:.5f}  "
          f"val {peer['val_logloss']:.5f}  {peer['seconds']:.1f} s"
          + ("" if "check" not in peer else
             f"  (holdout_peers.sk_peer: {peer['check']['holdout_peers_lr_l2']['logloss']:.5f}, "
             f"{'same' if peer['check']['same'] else 'DIFFERENT'})"))
    print(f"  {'constant (train+val CTR)':<44} test log-loss {r['constant_test_logloss']:.5f}")
    if r["test_rows_missing_ours"]:
        print(f"  {r['test_rows_missing_ours']} test rows have no score of ours (quarantined or deduplicated by the "
              f"import); paired on {r['test_rows_paired']}: peer {peer['test_logloss_paired_rows']:.5f}")
    lo, hi = pr["ci95"]
    print(f"  paired per-row log-loss, ours - peer: mean {pr['mean_diff_ours_minus_peer']:+.5f}, 95% bootstrap "
          f"[{lo:+.5f}, {hi:+.5f}] ({pr['bootstrap']} resamples of {pr['n']} rows) -> ours {pr['verdict']}")


if __name__ == "__main__":
    main()
