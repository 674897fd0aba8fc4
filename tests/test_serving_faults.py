"""Serving under faults, with real faults against the real server: the tracking server
unreachable (a real MLflow tracking server behind a TCP relay that is cut and restored), a
registered version's files deleted or corrupted in the artifact store, the prediction-log
disk full (a small tmpfs: ENOSPC, then read-only: EROFS) or over the process's file-size
limit (RLIMIT_FSIZE in a ``ctr serve`` process: EFBIG), and slow or flooding clients
(idle sockets, slowloris heads and bodies, an endless head, more connections than allowed).
Every test asserts what the server computed and returned while the fault lasted and after."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import resource
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import numpy as np
import orjson
import pytest

from serving.lifecycle import REGISTRY_HTTP_DEFAULTS
from serving.server import ServeOptions, build_state, running_server
from shared.config import load_settings
from shared.mlflow_utils import configure_mlflow
from serving_support import Served, metric_value, register, score_body, settings_with_home, store, wait_for
from training.tracking import promote

REPO = Path(__file__).resolve().parents[1]

#: The real MLflow tracking server app (the one ``mlflow server`` runs), served by werkzeug
#: on a free port it prints; lighter to start than the ``mlflow server`` command.
TRACKING_SERVER = """
from werkzeug.serving import make_server
from mlflow.server import app
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_lines(root: Path) -> list[dict]:
    """Every line of every prediction-log file, parsed: a half-written line fails here."""
    return [json.loads(line) for f in sorted(root.rglob("*.jsonl")) for line in f.read_text().splitlines()]


def metrics_of(state) -> str:
    """The server's metrics read in process (the HTTP port may be the thing under test)."""
    return state.metrics.exposition()[0].decode()


class TrackingServer:
    """A real MLflow tracking server process over the shared store, started early (its
    imports take seconds) and waited for when first needed."""

    def __init__(self, store_settings, log_path: Path):
        # the store's schema exists before the server opens it (two creators would race)
        configure_mlflow(store_settings).MlflowClient().search_registered_models(max_results=1)
        env = {**os.environ, "_MLFLOW_SERVER_FILE_STORE": store_settings.mlflow_tracking_uri,
               "_MLFLOW_SERVER_ARTIFACT_ROOT": store_settings.mlflow_artifact_root}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", TRACKING_SERVER], env=env, stdout=subprocess.PIPE,
                                     stderr=self._log)
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            line = self.proc.stdout.readline()
            assert line.strip().isdigit(), f"the tracking server did not start (see {self._log.name})"
            self._port = int(line)
        return self._port

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


class TcpRelay:
    """The network path from the bidder to the tracking server: :meth:`stop` cuts it (new
    connections refused, open ones reset), :meth:`start` restores it on the same port."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        if self._listener is None:
            return
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        self._listener.close()
        self._listener = None
        for sock in self._open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._open.clear()


@pytest.fixture(scope="module", autouse=True)
def tracking_server(tmp_path_factory):
    """Started with the module's first test, so it boots while the others run."""
    server = TrackingServer(store(tmp_path_factory), tmp_path_factory.mktemp("tracking") / "server.log")
    yield server
    server.close()


def artifact_model_dir(store_settings, name: str, version: str) -> Path:
    """The model directory of a registered version inside the artifact store (the files the
    server downloads)."""
    from mlflow import MlflowClient

    uri = store_settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model_dir_uri = client.get_model_version(name, version).tags["model_dir_uri"]
    run_id = re.fullmatch(r"runs:/([^/]+)/model_dir", model_dir_uri).group(1)
    artifacts = urlsplit(client.get_run(run_id).info.artifact_uri)
    assert artifacts.scheme == "file", artifacts
    return Path(url2pathname(artifacts.path)) / "model_dir"


def test_deleted_or_corrupted_version_is_refused_and_the_old_one_kept(tmp_path_factory, w):
    """A version whose files were deleted or damaged after registration is refused with the
    reason (metric label, ``/v1/model`` last_error, log); the loaded version keeps serving,
    and the error clears once the alias names a good version again."""
    s = store(tmp_path_factory)
    name = "faults-files"
    va = register(s, w, name, "a", "files-a")
    broken = {}
    for label in ("weights_deleted", "spec_truncated", "dir_deleted"):
        broken[label] = register(s, w, name, "a", f"files-{label}")  # another window: not promoted
    model_dirs = {label: artifact_model_dir(s, name, v) for label, v in broken.items()}
    (model_dirs["weights_deleted"] / "weights.npz").unlink()
    spec = model_dirs["spec_truncated"] / "feature_spec.toml"
    spec.write_bytes(spec.read_bytes()[: spec.stat().st_size // 2])
    shutil.rmtree(model_dirs["dir_deleted"])
    settings = settings_with_home(s, tmp_path_factory.mktemp("files_home"))
    probe = orjson.dumps({"records": [{"fields": f} for f in w.fields[:4]]})
    with Served(settings, ServeOptions(model_name=name, poll_seconds=0.1, prediction_log=False)) as srv:
        c = srv.client

        def still_serving_a():
            assert c.get("/readyz").json()["ready"] is True
            r = c.post("/v1/score", content=probe)
            assert r.status_code == 200 and r.json()["model_version"] == va
            np.testing.assert_allclose([p["ctr"] for p in r.json()["predictions"]],
                                       w.offline["a"].ctrs(w.fields[:4]), rtol=1e-5)

        for label, reason, words in (("weights_deleted", "missing_files", "weights.npz is missing"),
                                     ("spec_truncated", "checksum_mismatch", "checksum mismatch for feature_spec.toml"),
                                     ("dir_deleted", "download", "Failed to download artifacts")):
            before = srv.metrics()
            promote(s, name, broken[label], reason=f"fault: {label}")
            wait_for(lambda: metric_value(srv.metrics(), "ctr_model_load_failures_total", reason=reason)
                     > metric_value(before, "ctr_model_load_failures_total", reason=reason),
                     what=f"a {reason} failure for {label}")
            still_serving_a()
            error = c.get("/v1/model").json()["last_error"]
            assert error.startswith(reason) and words in error, error
        promote(s, name, va, reason="rolled back")  # the alias names the served version again: all clear
        wait_for(lambda: c.get("/v1/model").json()["last_error"] is None, what="the error to clear")
        still_serving_a()
        text = srv.metrics()
    assert metric_value(text, "ctr_model_swaps_total") == 0
    assert metric_value(text, "ctr_model_version") == float(va)


@pytest.fixture()
def tmpfs(tmp_path):
    """A 512 KiB tmpfs (a real small disk), or a skip where mounting is not allowed."""
    path = tmp_path / "predictions"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode}): the full-disk "
                    "test needs root with CAP_SYS_ADMIN; test_prediction_log_file_size_limit covers EFBIG")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_prediction_log_disk_full_and_read_only(tmp_path, tmpfs, w):
    """ENOSPC and EROFS: every request is answered, the lost records are counted, every line
    on disk stays whole, /readyz says the log is failing, and writing resumes on its own
    once there is room (or the disk is writable) again."""
    settings = load_settings({"home": str(tmp_path)}, env={})
    assert settings.predictions_dir == tmpfs
    options = ServeOptions(model_dir=w.dirs["a"], log_flush_interval=0.05)
    sent = 0
    with Served(settings, options) as srv:
        c, plog = srv.client, srv.state.predlog

        def send(tag: str, n: int = 8, size: int = 10) -> None:
            nonlocal sent
            for k in range(n):
                records = w.fields[k * size:(k + 1) * size]
                r = c.post("/v1/score", json=score_body(records, request_id=f"{tag}-{k}"))
                assert r.status_code == 200 and len(r.json()["predictions"]) == size, r.text
                sent += size
            wait_for(lambda: plog.written + plog.write_errors == sent, what=f"the log to take the {tag} batch")

        def log_state() -> dict:
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True
            return ready.json()["prediction_log"]

        send("before")
        assert plog.write_errors == 0 and log_state() == {"writing": True, "failing_since": None, "error": None}
        filler = tmpfs / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            with pytest.raises(OSError) as full:
                while True:
                    f.write(b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        send("full")
        lost_full = plog.write_errors
        assert lost_full > 0
        state = log_state()
        assert state["writing"] is False and "No space left on device" in state["error"], state
        assert abs(datetime.fromisoformat(state["failing_since"]).timestamp() - time.time()) < 60
        assert metric_value(srv.metrics(), "ctr_prediction_log_write_errors_total") == lost_full
        log_lines(tmpfs)  # the write cut short by the full disk left no half line behind
        filler.unlink()
        send("after")
        assert plog.write_errors == lost_full and log_state()["writing"] is True
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        try:
            send("read-only")
            assert plog.write_errors > lost_full and "Read-only file system" in log_state()["error"]
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
        send("writable")
        assert log_state()["writing"] is True
        text = srv.metrics()
    assert metric_value(text, "ctr_prediction_log_write_errors_total") == plog.write_errors
    assert metric_value(text, "ctr_prediction_log_written_total") == plog.written == sent - plog.write_errors
    logged = {line["request_id"] for line in log_lines(tmpfs)}
    assert {f"{tag}-{k}" for tag in ("before", "after", "writable") for k in range(8)} <= logged
    assert not {f"read-only-{k}" for k in range(8)} & logged
    assert sum(len(line["ctrs"]) for line in log_lines(tmpfs)) == plog.written


def test_prediction_log_file_size_limit(tmp_path, w):
    """``ctr serve`` under a 16 KiB file-size limit (EFBIG, as a full quota would give): the
    hour file fills, requests are still answered and the drops counted, the file holds whole
    lines only, and once the full file is rotated away logging resumes."""
    limit = 16 * 1024
    port, home = free_port(), tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "ctr.cli", "--home", str(home), "--port", str(port), "serve",
                             "--model-dir", str(w.dirs["a"])], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # before its first request; Python ignores SIGXFSZ, so a write past the limit gets EFBIG
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    base = f"http://127.0.0.1:{port}"
    hour = home / "predictions" / "date=2026-11-07" / "hour=10.jsonl"

    def ready():
        try:
            return httpx.get(base + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, proc.stdout.read().decode()
            return False

    def logged_and_lost() -> tuple[float, float]:
        text = httpx.get(base + "/metrics").text
        return (metric_value(text, "ctr_prediction_log_written_total"),
                metric_value(text, "ctr_prediction_log_write_errors_total"))

    try:
        wait_for(ready, timeout=60, what="ctr serve to start")
        sent = 0
        with httpx.Client(base_url=base, timeout=10) as c:
            def send(tag: str, n: int) -> None:
                nonlocal sent
                for k in range(n):
                    body = {**score_body(w.fields[k * 10:(k + 1) * 10], request_id=f"{tag}-{k}"),
                            "event_time": "2026-11-07T10:30:00Z"}
                    r = c.post("/v1/score", json=body)
                    assert r.status_code == 200 and len(r.json()["predictions"]) == 10, r.text
                    sent += 10
                wait_for(lambda: sum(logged_and_lost()) == sent, what=f"the log to take the {tag} batch")

            send("fits", 2)  # ~6 KB a request line: 2 fit in 16 KiB, a third does not
            send("over", 2)
            written, lost = logged_and_lost()
            assert (written, lost) == (20, 20)
            assert hour.stat().st_size <= limit
            state = c.get("/readyz").json()["prediction_log"]
            assert state["writing"] is False and "File too large" in state["error"], state
            whole = log_lines(home / "predictions")  # the write cut short at the limit left no half line
            assert [line["request_id"] for line in whole] == ["fits-0", "fits-1"]
            hour.rename(hour.with_suffix(".full"))  # rotated away: the hour starts a new file
            send("rotated", 2)
            assert logged_and_lost() == (written + 20, lost)
            assert c.get("/readyz").json()["prediction_log"]["writing"] is True
        assert [line["request_id"] for line in log_lines(hour.parent)] == ["rotated-0", "rotated-1"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "prediction log:" in out and "File too large" in out and "writing again" in out, out[-2000:]


def _open(addr, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(addr, timeout=5)
    if first:
        sock.sendall(first)
    return sock


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    """Whether the server closed ``sock`` (EOF or reset) within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        while data := sock.recv(65536):
            if data.startswith(b"HTTP/1.1 "):
                continue  # a response before the close (408/400 are fine): keep reading to EOF
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, TimeoutError):
        return False


def test_slow_clients_and_connection_floods_do_not_block_others(tmp_path, w):
    """Idle sockets, heads and bodies sent a few bytes at a time, an endless head and more
    connections than allowed, all at once: an established bidder connection is answered
    throughout within a bound; the slow ones are closed after ``request_timeout``, the
    endless head gets 431 long before its end, the surplus connections are closed at once."""
    settings = load_settings({"home": str(tmp_path)}, env={})
    options = ServeOptions(model_dir=w.dirs["a"], prediction_log=False, request_timeout=1.5, max_connections=40)
    state = build_state(settings, options)
    body = orjson.dumps(score_body(w.fields[:3]))
    expected = w.offline["a"].ctrs(w.fields[:3])
    with running_server(settings, options, state=state) as url:
        addr = ("127.0.0.1", urlsplit(url).port)
        results: list = []
        stop = threading.Event()

        def bidder():
            with httpx.Client(base_url=url, timeout=5) as client:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
                        results.append((time.perf_counter() - t0, r.status_code, r.content))
                    except httpx.HTTPError as exc:
                        results.append((time.perf_counter() - t0, -1, repr(exc).encode()))
                    time.sleep(0.005)

        thread = threading.Thread(target=bidder)
        thread.start()
        try:
            wait_for(lambda: len(results) >= 5, what="the bidder's first answers")
            head = b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            idle = [_open(addr) for _ in range(15)]
            slow_heads = [_open(addr, head) for _ in range(5)]
            slow_bodies = [_open(addr, head + b"content-length: %d\r\n\r\n" % len(body) + body[:10]) for _ in range(5)]
            endless = _open(addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: ")
            sent = 0
            while sent < 16 * 1024 * 1024 and not select.select([endless], [], [], 0.001)[0]:
                endless.sendall(b"a" * 16384)  # the select's millisecond lets the server thread read it
                sent += 16384
            assert sent <= 1024 * 1024, f"{sent} bytes of an endless request head went in before the server refused it"
            assert endless.recv(100).startswith(b"HTTP/1.1 431 "), "no 431 for the endless head"
            # the flood: well past max_connections in all
            open_before = 1 + len(idle) + len(slow_heads) + len(slow_bodies)  # the bidder's too
            flood = [_open(addr) for _ in range(40)]

            def over_limit() -> float:
                return metric_value(metrics_of(state), "ctr_http_connections_closed_total", reason="over_limit")

            wait_for(lambda: over_limit() >= len(flood) - (options.max_connections - open_before), timeout=5,
                     what="the surplus connections to be closed")
            time.sleep(0.05)
            refused = sum(_closed_by_server(sock, 0.01) for sock in flood)
            assert refused == over_limit()
            for k in range(8):  # the slowloris heads and bodies keep trickling: that does not extend their time
                for sock, data in [*((h, b"x-k%d: v\r\n" % k) for h in slow_heads),
                                   *((b, body[10 + k:11 + k]) for b in slow_bodies)]:
                    try:
                        sock.sendall(data)
                    except OSError:  # already cut off
                        pass
                time.sleep(0.1)
            slow = idle + slow_heads + slow_bodies
            assert all(_closed_by_server(sock, 2.0) for sock in slow), "a slow client was not cut off"
        finally:
            stop.set()
            thread.join(10)
        for sock in [*idle, *slow_heads, *slow_bodies, endless, *flood]:
            sock.close()
        # the flood is gone: a new client is served again
        assert httpx.get(url + "/readyz", timeout=5).json()["ready"] is True
        text = metrics_of(state)
    assert len(results) >= 20
    failed = [(status, content[:200]) for _, status, content in results if status != 200]
    assert not failed, failed[:5]
    for _, _, content in results:
        np.testing.assert_allclose([p["ctr"] for p in orjson.loads(content)["predictions"]], expected, rtol=1e-5)
    slowest = max(seconds for seconds, _, _ in results)
    assert slowest < 0.5, f"the bidder waited {slowest:.3f} s for an answer"
    assert metric_value(text, "ctr_http_connections_closed_total", reason="head_too_large") == 1
    assert metric_value(text, "ctr_http_connections_closed_total", reason="timeout") >= len(slow)


def test_registry_outage_keeps_serving_and_recovers(tmp_path_factory, w, tracking_server):
    """The bidder reaches the registry through a real MLflow tracking server; the network path
    is cut: the loaded version keeps scoring, /readyz stays ready and says since when the
    registry is unreachable, failed polls are counted and the gauge drops; a promotion made
    meanwhile is picked up by itself once the path is back."""
    s = store(tmp_path_factory)
    name = "faults-outage"
    va = register(s, w, name, "a", "outage-a")
    vb = register(s, w, name, "b", "outage-b")  # another window: not promoted
    relay = TcpRelay(tracking_server.port)
    relay.start()
    settings = dataclasses.replace(settings_with_home(s, tmp_path_factory.mktemp("outage_home")),
                                   mlflow_tracking_uri=f"http://127.0.0.1:{relay.port}")
    probe = orjson.dumps({"records": [{"fields": f} for f in w.fields[:4]]})
    saved_env = {k: os.environ.get(k) for k in REGISTRY_HTTP_DEFAULTS}
    try:
        with Served(settings, ServeOptions(model_name=name, poll_seconds=0.1, prediction_log=False)) as srv:
            c = srv.client

            def registry() -> dict:
                ready = c.get("/readyz")
                assert ready.status_code == 200 and ready.json()["ready"] is True
                return ready.json()["registry"]

            def scores_with(version: str, which: str) -> None:
                r = c.post("/v1/score", content=probe)
                assert r.status_code == 200 and r.json()["model_version"] == version, r.text
                np.testing.assert_allclose([p["ctr"] for p in r.json()["predictions"]],
                                           w.offline[which].ctrs(w.fields[:4]), rtol=1e-5)

            assert registry() == {"reachable": True, "unreachable_since": None, "error": None}
            assert metric_value(srv.metrics(), "ctr_registry_reachable") == 1
            cut = time.time()
            relay.stop()
            status = wait_for(lambda: (r := registry())["reachable"] is False and r, timeout=10,
                              what="/readyz to report the outage")
            assert cut - 1 <= datetime.fromisoformat(status["unreachable_since"]).timestamp() <= time.time()
            assert "registry unreachable" in status["error"], status
            scores_with(va, "a")
            promote(s, name, vb, reason="promoted during the outage")  # in the store, out of the bidder's reach
            failures = metric_value(srv.metrics(), "ctr_model_load_failures_total", reason="registry_unreachable")
            wait_for(lambda: metric_value(srv.metrics(), "ctr_model_load_failures_total",
                                          reason="registry_unreachable") >= failures + 3,
                     timeout=10, what="more failed polls (polling goes on, each poll bounded)")
            text = srv.metrics()
            assert metric_value(text, "ctr_registry_reachable") == 0
            assert metric_value(text, "ctr_registry_unreachable_since_timestamp_seconds") == pytest.approx(
                datetime.fromisoformat(status["unreachable_since"]).timestamp(), abs=1)
            scores_with(va, "a")
            assert c.get("/v1/model").json()["version"] == va
            relay.start()
            wait_for(lambda: c.get("/v1/model").json()["version"] == vb, timeout=20, what="the promoted version")
            scores_with(vb, "b")
            assert registry() == {"reachable": True, "unreachable_since": None, "error": None}
            text = srv.metrics()
            assert metric_value(text, "ctr_registry_reachable") == 1
            assert metric_value(text, "ctr_registry_unreachable_since_timestamp_seconds") == 0
            assert metric_value(text, "ctr_model_swaps_total") == 1
    finally:
        relay.stop()
        for key, value in saved_env.items():  # the server set MLflow's HTTP defaults for this process
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
