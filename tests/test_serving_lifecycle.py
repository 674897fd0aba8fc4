"""Model lifecycle against the real MLflow registry: hot swap under load, failed loads
keep the old version, checksum tampering and irreproducible fingerprints are refused,
and ``ctr serve`` runs as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from serving.predlog import expand_line
from serving.scorer import ModelLoadError, load_scorer
from serving.server import ServeOptions, build_state
from ctr.cli import main as ctr_main
from shared.config import load_settings
from synthetic import loadgen
from serving_support import (Served, copy_tampered_dir, metric_value, register, rewrite_model_dir, settings_with_home,
                             store, tamper_registered_weights, wait_for)
from training.artifacts import CHECKSUMS_FILE, SPEC_FILE, sha256_file
from training.tracking import champion_version, promote

REPO = Path(__file__).resolve().parents[1]


def test_hot_swap_under_load(tmp_path_factory, w):
    s = store(tmp_path_factory)
    name = "serving-swap"
    va = register(s, w, name, "a", "swap-a")
    vb = register(s, w, name, "b", "swap-b")  # another test window: the gate does not promote it
    assert champion_version(s, name) == va
    batches = [w.fields[k * 5:(k + 1) * 5] for k in range(60)]
    bodies = [orjson.dumps({"records": [{"fields": f} for f in b]}) for b in batches]
    expected = {va: [w.offline["a"].ctrs(b) for b in batches], vb: [w.offline["b"].ctrs(b) for b in batches]}
    settings = settings_with_home(s, tmp_path_factory.mktemp("swap_home"))
    results: list = []
    stop = threading.Event()
    with Served(settings, ServeOptions(model_name=name, poll_seconds=0.1, prediction_log=False)) as srv:
        url = srv.url + "/v1/score"

        async def hammer():
            async with loadgen.HttpClient("raw", 4, 10.0) as client:
                async def worker(k: int):
                    i = k
                    while not stop.is_set():
                        j = i % len(bodies)
                        sent = time.perf_counter()
                        try:
                            status, content = await client.request("POST", url, bodies[j],
                                                                   {"content-type": "application/json"})
                        except Exception as exc:  # noqa: BLE001 - a failed request is a test failure
                            status, content = -1, repr(exc).encode()
                        results.append((sent, time.perf_counter(), status, content, j))
                        i += 4
                await asyncio.gather(*(worker(k) for k in range(4)))

        client_thread = threading.Thread(target=loadgen.run, args=(hammer(),))
        client_thread.start()
        try:
            wait_for(lambda: len(results) >= 100, what="traffic before the swap")
            promote(s, name, vb, reason="hot swap test")
            wait_for(lambda: any(r[2] == 200 and orjson.loads(r[3])["model_version"] == vb for r in results[-20:]),
                     what="the new version in responses")
            n_at_swap = len(results)
            wait_for(lambda: len(results) >= n_at_swap + 100, what="traffic after the swap")
        finally:
            stop.set()
            client_thread.join(30)
        text = srv.metrics()
    assert len(results) >= 200
    failed = [(r[2], r[3][:200]) for r in results if r[2] != 200]
    assert not failed, failed[:5]
    versions = []
    for sent, received, _, content, j in results:
        body = orjson.loads(content)
        v = body["model_version"]
        assert v in (va, vb)
        # all predictions of one response come from one version: they match that model offline
        np.testing.assert_allclose([p["ctr"] for p in body["predictions"]], expected[v][j], rtol=1e-5)
        versions.append((sent, received, v))
    assert {v for *_, v in versions} == {va, vb}
    first_new = min(received for _, received, v in versions if v == vb)
    late_old = [(sent, v) for sent, _, v in versions if sent > first_new and v != vb]
    assert not late_old, "a request sent after the swap was answered by the old version"
    assert metric_value(text, "ctr_model_swaps_total") == 1
    assert metric_value(text, "ctr_model_version") == float(vb)


def test_failed_loads_keep_the_old_version(tmp_path_factory, w):
    s = store(tmp_path_factory)
    name = "serving-failures"
    va = register(s, w, name, "a", "fail-a")
    vt = register(s, w, name, "a", "fail-tampered")
    tamper_registered_weights(s, name, vt)
    vm = register(s, w, name, "mismatch", "fail-mismatch")
    vb = register(s, w, name, "b", "fail-b")
    settings = settings_with_home(s, tmp_path_factory.mktemp("fail_home"))
    probe = orjson.dumps({"records": [{"fields": f} for f in w.fields[:3]]})
    options = ServeOptions(model_name=name, poll_seconds=0.1, retry_failed_seconds=0.5, prediction_log=False)
    with Served(settings, options) as srv:
        c = srv.client

        def still_serving_a():
            assert c.get("/readyz").status_code == 200
            assert c.get("/v1/model").json()["version"] == va
            r = c.post("/v1/score", content=probe)
            assert r.status_code == 200 and r.json()["model_version"] == va
            np.testing.assert_allclose([p["ctr"] for p in r.json()["predictions"]],
                                       w.offline["a"].ctrs(w.fields[:3]), rtol=1e-5)

        for bad, reason, words in ((vt, "checksum_mismatch", "checksum mismatch for weights.npz"),
                                   (vm, "fingerprint_mismatch", "does not reproduce")):
            promote(s, name, bad, reason=f"test {reason}")
            wait_for(lambda: metric_value(srv.metrics(), "ctr_model_load_failures_total", reason=reason) >= 1,
                     what=f"a {reason} load failure")
            still_serving_a()
            assert words in c.get("/v1/model").json()["last_error"]
        # a failed version is retried after retry_failed_seconds, and keeps failing safely
        wait_for(lambda: metric_value(srv.metrics(), "ctr_model_load_failures_total",
                                      reason="fingerprint_mismatch") >= 2, what="a retry")
        still_serving_a()
        # the alias disappears: lookups fail, the loaded model keeps serving
        from shared.mlflow_utils import configure_mlflow

        configure_mlflow(s).MlflowClient().delete_registered_model_alias(name, "champion")
        wait_for(lambda: metric_value(srv.metrics(), "ctr_model_load_failures_total", reason="alias_lookup") >= 1,
                 what="an alias lookup failure")
        still_serving_a()
        # a good version recovers
        promote(s, name, vb, reason="recover")
        wait_for(lambda: c.get("/v1/model").json()["version"] == vb, what="the good version")
        assert c.get("/v1/model").json()["last_error"] is None
        text = srv.metrics()
        assert metric_value(text, "ctr_model_swaps_total") == 1 and metric_value(text, "ctr_model_version") == float(vb)


def test_checksum_tamper_refused(tmp_path, w, capsys):
    bad = copy_tampered_dir(w.dirs["a"], tmp_path / "tampered")
    with pytest.raises(ModelLoadError, match="checksum mismatch for weights.npz") as e:
        load_scorer(bad)
    assert e.value.reason == "checksum_mismatch"
    settings = load_settings({"home": str(tmp_path / "home")}, env={})
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        build_state(settings, ServeOptions(model_dir=bad))
    assert ctr_main(["--home", str(tmp_path / "home"), "serve", "--model-dir", str(bad)]) == 2
    assert "checksum mismatch for weights.npz" in capsys.readouterr().err


def test_fingerprint_mismatch_refused(tmp_path, w, capsys):
    # a comment or reordering does not change what is hashed: still served
    same = rewrite_model_dir(w.dirs["a"], tmp_path / "comment", SPEC_FILE, lambda t: "# reviewed\n" + t)
    assert load_scorer(same).fingerprint == w.offline["a"].model.fingerprint
    # another hashing seed would hash every feature elsewhere: refused
    other = rewrite_model_dir(w.dirs["a"], tmp_path / "seed", SPEC_FILE, lambda t: t.replace("seed = 0", "seed = 1", 1))
    with pytest.raises(ModelLoadError, match="does not reproduce") as e:
        load_scorer(other)
    assert e.value.reason == "fingerprint_mismatch"
    with pytest.raises(ModelLoadError, match="does not reproduce"):
        load_scorer(w.dirs["mismatch"])  # a model recorded with a fingerprint its spec does not give
    assert ctr_main(["--home", str(tmp_path / "home"), "serve", "--model-dir", str(other)]) == 2
    assert "does not reproduce" in capsys.readouterr().err


def test_model_files_the_server_cannot_apply_are_refused(tmp_path, w):
    """A model directory with an extra checksummed file this server cannot apply (say, an
    embedding table) would be scored without it: refused, naming the file."""
    d = rewrite_model_dir(w.dirs["a"], tmp_path / "extra", SPEC_FILE, lambda t: t)
    (d / "embeddings.bin").write_bytes(b"\x00" * 16)
    sums = json.loads((d / CHECKSUMS_FILE).read_text())
    (d / CHECKSUMS_FILE).write_text(json.dumps({**sums, "embeddings.bin": sha256_file(d / "embeddings.bin")}))
    with pytest.raises(ModelLoadError, match="does not know how to apply embeddings.bin") as e:
        load_scorer(d)
    assert e.value.reason == "unsupported_model_files"


def test_ctr_serve_process(tmp_path, w):
    """``ctr serve --model-dir`` as a real process: answers, then shuts down gracefully on
    SIGINT (uvicorn re-raises the signal afterwards, so ``ctr`` exits 130, its Ctrl-C status)
    and flushes the prediction log."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path / "home"
    env = {**os.environ, "CTR_API_TOKEN": "t0ken", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ctr.cli", "--home", str(home), "--port", str(port), "serve",
                             "--model-dir", str(w.dirs["a"])], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"

        def ready():
            try:
                return httpx.get(base + "/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                return False
        wait_for(ready, timeout=60, what="ctr serve to start")
        body = {"request_id": "cli-1", "records": [{"id": "x", "fields": w.fields[0]}]}
        assert httpx.post(base + "/v1/score", json=body).status_code == 401
        r = httpx.post(base + "/v1/score", json=body, headers={"authorization": "Bearer t0ken"})
        assert r.status_code == 200 and r.json()["model_version"].startswith("dir:")
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 130 and "Application shutdown complete" in out, out
    lines = [json.loads(line) for f in (home / "predictions").rglob("*.jsonl") for line in f.read_text().splitlines()]
    rows = [row for line in lines for row in expand_line(line)]
    assert [(x["request_id"], x["impression_id"]) for x in rows] == [("cli-1", "x")]
