"""Registry races shared by tests/test_concurrency.py (SQLite store) and tests/test_cluster.py
(the cluster's tracking server on PostgreSQL): two gates deciding at once, and versions
created by several processes at once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def tiny_model_dir(folder: Path, tag: str, C: float) -> Path:
    from training.artifacts import save_model_dir
    from training.model import SparseLogisticRegression
    from training_support import hashed_problem

    X, y, _ = hashed_problem(600, seed=3)
    model = SparseLogisticRegression(C=C, max_iter=50, random_state=0).fit(X, y)
    spec = 'version = 1\nname = "unit"\nbits = 12\nseed = 0\nmissing_token = "m"\n'
    return save_model_dir(model, spec, f"fp-{tag}", folder / tag)


def gates_at_once(settings, tmp_path) -> None:
    """Two gates rescoring the champion at the same moment (forced: each one's scorer waits for the
    other's), against the store ``settings`` names (also run against the cluster's
    tracking server on PostgreSQL, tests/test_cluster.py)."""
    from shared.model.registry import Tag
    from training.tracking import champion_version, configure_mlflow, gate_lock_name, promote, promotion_gate

    client = configure_mlflow(settings).MlflowClient()
    client.create_registered_model("gated")
    loss = {}  # a version's log-loss on the candidates' test rows, by its fingerprint
    for version, (tag, ll) in enumerate((("v1", 0.40), ("good", 0.30), ("worse", 0.35)), start=1):
        d = tiny_model_dir(tmp_path, tag, C=0.1 * version)
        # a tracking server refuses local paths as a version's source: the gate reads MODEL_DIR_URI
        client.create_model_version("gated", f"s3://ctr-tests/{tag}", tags={Tag.MODEL_DIR_URI: str(d),
                                                                             Tag.TEST_WINDOW: "w"})
        loss[f"fp-{tag}"] = ll
    promote(settings, "gated", "1")
    both_rescoring = threading.Barrier(2, timeout=2)  # broken when the other gate cannot be rescoring

    def scorer(delay):
        def score(loaded):
            try:
                both_rescoring.wait()
            except threading.BrokenBarrierError:
                pass
            time.sleep(delay)
            return loss[loaded.fingerprint]
        return score

    def gate(version, ll, delay):
        return promotion_gate(settings, "gated", version, candidate_log_loss=ll, test_window="w",
                              champion_scorer=scorer(delay))

    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(gate, "2", 0.30, 0.0)
        worse = pool.submit(gate, "3", 0.35, 0.5)  # would move the alias last
        decisions = {d.candidate_version: d for d in (good.result(), worse.result())}
    assert champion_version(settings, "gated") == "2"
    assert {d.champion_version for d in decisions.values()} != {"1"}  # one gate saw the other's result
    names = [m.name for m in client.search_registered_models()]
    assert "gated" in names and gate_lock_name("gated") not in names  # the lock is gone


_CREATE_VERSIONS = """
import sys, time
import mlflow
uri, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
client = mlflow.MlflowClient()
client.search_registered_models(max_results=1)  # connected before the start
while time.time() < start:
    time.sleep(0.001)
print(" ".join(str(client.create_model_version("m", f"s3://ctr-tests/src/{i}").version) for i in range(n)))
"""


def versions_at_once(settings) -> None:
    """Three processes creating versions of one model at the same moment get distinct numbers
    (also run against the cluster's tracking server on PostgreSQL, tests/test_cluster.py)."""
    from training.tracking import configure_mlflow

    configure_mlflow(settings).MlflowClient().create_registered_model("m")
    start, n, writers = time.time() + 6, 8, 3
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE_VERSIONS, settings.mlflow_tracking_uri, str(start), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(writers)]
    numbers = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        numbers += [int(v) for v in out.split()]
    assert sorted(numbers) == list(range(1, n * writers + 1))
