"""``benchmarks/bench_holdout.py``: the helpers without Spark, then one end-to-end run on the tiny
real Criteo sample in ../shared/data (import, default ``ctr train``, the peers' scikit-learn grid,
paired bootstrap), skipped when the sample or ../shared/peers is absent."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from datetime import date

import numpy as np
import pytest

from conftest import REPO, shared_data

SCRIPT = REPO / "benchmarks" / "bench_holdout.py"
PEERS = REPO.parent / "shared" / "peers"


def _module():
    spec = importlib.util.spec_from_file_location("bench_holdout", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kaggle_csv_becomes_the_raw_layout():
    bh = _module()
    head = "Id,Label," + ",".join(f"I{j}" for j in range(1, 14)) + "," + ",".join(f"C{k}" for k in range(1, 27))
    row = ["7", "1"] + [str(j) for j in range(1, 14)] + [f"c{k}" if k != 3 else "" for k in range(1, 27)]
    raw, converted = bh.criteo_raw_lines([head, ",".join(row)])
    assert converted and raw == ["\t".join(row[1:])]
    tsv = ["0\t" + "\t".join([""] * 39)]
    assert bh.criteo_raw_lines(tsv) == (tsv, False)


def test_avazu_hours_keep_hour_and_weekday_in_one_window_per_split():
    bh = _module()
    header = "id,click,hour,C1"
    rows = ["a,0,14102100,1", "b,1,14102223,1", "c,0,14102105,1", "d,0,14102306,1", "e,1,14102101,1"]
    parts, base = bh.avazu_rewrite_hours(header, rows, 2, 3)
    assert base == date(2014, 10, 21)
    assert parts == [["a,0,14102100,1", "b,1,14102223,1"], ["c,0,14102805,1"], ["d,0,14110606,1", "e,1,14110401,1"]]


def test_paired_bootstrap_and_verdict():
    bh = _module()
    d = np.random.default_rng(1).normal(0.05, 0.01, 500)
    mean, lo, hi = bh.paired_bootstrap(d, 500, 0)
    assert lo < mean < hi and lo > 0 and bh.verdict(lo, hi) == "loses"
    assert bh.verdict(-0.2, -0.1) == "wins" and bh.verdict(-0.1, 0.1) == "no significant difference"


@pytest.mark.slow
@pytest.mark.full
def test_criteo_sample_end_to_end(tmp_path):
    sample = shared_data("criteo-kaggle-random461", "tr.r100000.csv")
    if not (PEERS / "holdout_peers.py").is_file():
        pytest.skip(f"peers' scripts not present: {PEERS}")
    out = tmp_path / "holdout.json"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--layout", "criteo", "--file", str(sample), "--val", "60", "--test", "60",
         "--peers-dir", str(PEERS), "--home", str(tmp_path / "home"), "--bootstrap", "500", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out.read_text())
    assert (r["train"], r["val"], r["test"]) == (r["rows"] - 120, 60, 60)
    ours, peer = r["ours"]["test_logloss"], r["peer"]["test_logloss"]
    assert math.isfinite(ours) and math.isfinite(peer) and 0 < ours < 2 and 0 < peer < 2
    assert r["test_rows_paired"] == 60
    assert r["peer"]["check"]["same"]  # the replicated grid reproduces holdout_peers.sk_peer's lr_l2
    assert abs(r["ours"]["platform_test_logloss"] - ours) < 1e-4  # scored as ctr train scored its test window
    mean, (lo, hi) = r["paired"]["mean_diff_ours_minus_peer"], r["paired"]["ci95"]
    assert lo <= mean <= hi
    assert abs(mean - (ours - peer)) < 1e-4
    assert r["paired"]["verdict"] in ("wins", "loses", "no significant difference")
    assert "paired per-row log-loss, ours - peer" in p.stdout
