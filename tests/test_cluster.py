"""Every stage on a real cluster: ``ctr cluster up`` starts a Spark standalone master and one
worker (1 GiB for executors, their own JVM and Python workers) and an MLflow tracking server on
PostgreSQL; the pipeline runs against them from a driver process started outside the
repository, and its warehouse tables and model weights are compared with the same commands run
on this session's ``local[2]`` Spark with a SQLite MLflow store.

The pipeline: batch ingest (with the worker killed while it runs, and started again: Spark
re-runs the lost tasks on the new worker's executor), the import of a Criteo file, the
streaming ingest of the same logs into its own data root, aggregate features, ``ctr train``
with each engine (the search with trials in threads on the driver, trials on Spark, the
per-segment fan-out; ``CTR_CLUSTER_FULL=1`` adds MLlib and a back-test); then ``ctr serve``
loads the champion from the tracking server over HTTP and follows its alias, and ``ctr
monitor`` runs on the cluster over what it logged. With ``CTR_CLUSTER_FULL=1``, a driver
killed after its observations commit is re-run to the same table.

PostgreSQL comes from Debian's ``postgresql`` package: when it is missing, this module's setup
installs it with apt-get (as the dashboard test does with Chromium: as root, not when
``CTR_NO_APT`` is set); when that is impossible the module is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from glob import glob
from pathlib import Path

import numpy as np
import pytest

from apt_support import apt_install
from faults_support import ctr, ctr_in_process, rows
from shared.config import Settings, load_settings

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
START = date(2026, 11, 1)
DAYS = 3
END = START + timedelta(days=DAYS - 1)
SEGMENT_COLUMN = "device_type"
#: Columns that name a run or a moment, not data: they differ between any two runs.
RUN_COLUMNS = ("run_id", "ingest_run_id", "ingested_at", "finished_at", "started_at", "seconds", "updated_at",
               "computed_at", "created_at", "fit_seconds")
#: ``make test`` runs the pipeline with every path to the cluster once: the batch ingest (the
#: worker killed in it), the import, the streaming ingest, aggregate features, ``ctr train``
#: reading on the driver (the search, trials in threads), trials on Spark, the per-segment
#: fan-out. ``CTR_CLUSTER_FULL=1`` adds MLlib, a back-test and a driver killed on the cluster.
FULL = bool(os.environ.get("CTR_CLUSTER_FULL"))
#: The pipeline's commands; ``{raw}`` / ``{criteo}`` are the generated logs and a Criteo file.
#: The streaming ingest writes its own data root (``stream/`` beside the pipeline's), whose
#: observation table must equal the batch ingest's.
PIPELINE = (
    f"ingest --start {START} --end {END} --raw {{raw}}",
    "import criteo {criteo} --start-date 2026-10-01 --days 2",
    "--home {stream} ingest --stream --once --raw {raw}",
    f"features build --start {START} --end {END}",
    f"train --start {START} --train-days 1 --trials 2",
    f"train --start {START} --train-days 1 --trials 2 --trials-on spark",
    f"train --start {START} --train-days 1 --per-segment {SEGMENT_COLUMN} --min-rows 200 --global-engine sklearn",
) + ((
    f"train --start {START} --train-days 1 --engine mllib --param max_iter=10",
    f"backtest --start {START} --days 1 --train-days 2 --engine ftrl",
) if FULL else ())
#: Registered versions the pipeline makes, in order (model name, engine, deterministic?).
VERSIONS = (("ctr-model", "search, threads", True), ("ctr-model", "search, trials on Spark", True),
            ("ctr-segment-model", "per-segment", True)) + ((("ctr-model", "mllib", False),) if FULL else ())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_present() -> bool:
    return bool(shutil.which("initdb") or glob("/usr/lib/postgresql/*/bin/initdb"))


def _ctr(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctr.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@dataclass
class Running:
    home: Path
    master: str
    mlflow: str
    settings: object  # ctr.cluster.Cluster

    @property
    def flags(self) -> tuple[str, ...]:
        return ("--spark-master", self.master, "--mlflow-uri", self.mlflow)


def _env() -> dict[str, str]:
    # the test session's partitioning, so the cluster's results compare bit for bit with it
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["CTR_SPARK_SHUFFLE_PARTITIONS"] = "2"
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ctr.cluster import load

    if not _postgres_present():
        why = apt_install("postgresql")
        if why or not _postgres_present():
            pytest.skip(why or "PostgreSQL could not be found after installing it")
    home = tmp_path_factory.mktemp("cluster_home")
    ports = {"--master-port": _free_port(), "--master-ui-port": _free_port(), "--worker-ui-port": _free_port(),
             "--postgres-port": _free_port(), "--mlflow-port": _free_port()}
    args = [f"{k}={v}" for k, v in ports.items()]
    started = _ctr("--home", str(home), "cluster", "up", *args, "--worker-memory", "1g", "--worker-cores", "2",
                   env=_env())
    recorded = load(load_settings({"home": str(home)}, env={}))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert recorded is not None
        yield Running(home, recorded.spark_master, recorded.mlflow_uri, recorded)
    finally:
        stopped = _ctr("--home", str(home), "cluster", "down", "--purge", env=_env())
        pids = [int(rec["pid"]) for rec in (recorded.processes.values() if recorded else ())]
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for pid in pids:  # each recorded process group is gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from synthetic.config import GeneratorConfig
    from synthetic.logs import generate_logs

    cfg = GeneratorConfig(days=DAYS, impressions_per_day=1500, seed=31, start_date=START, n_users=1200,
                          n_sites=60, n_publishers=30, n_advertisers=10, n_segments=20, base_ctr=0.04)
    out = tmp_path_factory.mktemp("cluster_raw")
    generate_logs(cfg, out / "logs")
    _write_criteo(out / "criteo.tsv", 800)
    return out


def _write_criteo(path: Path, n: int) -> None:
    """A Criteo-layout file (label, 13 integers, 26 hashed categoricals, tab-separated) with a
    few lines the import must quarantine (a wrong column count, a bad label, a bad integer)."""
    rng = np.random.default_rng(5)
    lines = []
    for i in range(n):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(0, 50))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 40)):08x}" for _ in range(26)]
        lines.append("\t".join([str(int(rng.random() < 0.25)), *ints, *cats]))
    lines[7] = "\t".join(lines[7].split("\t")[:30])
    lines[99] = "2" + lines[99][1:]
    lines[400] = "\t".join(lines[400].split("\t")[:3] + ["3.5"] + lines[400].split("\t")[4:])
    path.write_text("\n".join(lines) + "\n")


def _runner(home: Path, flags: tuple[str, ...], raw: Path) -> list[list[str]]:
    steps = []
    for line in PIPELINE:
        args = line.format(raw=raw / "logs", criteo=raw / "criteo.tsv", stream=home / "stream").split()
        if args[0] != "--home":
            args = ["--home", str(home), *args]
        steps.append([*args[:2], *flags, *args[2:]])
    return steps


RUN_STEPS = """
import json, sys, time
from ctr.cli import main
for argv in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    rc = main(argv)
    print(f"### {' '.join(argv[6:])}: exit {rc} in {time.perf_counter() - t0:.1f} s", flush=True)
    if rc:
        sys.exit(rc)
"""


@dataclass
class Pipelines:
    local: Settings
    cluster: Settings
    output: str
    executors: list[str]


def _executor_log(work: Path) -> Path | None:
    logs = sorted(work.glob("app-*/*/stderr"))
    return logs[0] if logs else None


def _kill_worker_during_ingest(running: Running, proc: subprocess.Popen) -> None:
    """Wait until the first executor runs a task, SIGKILL the worker's process group (the worker
    and its executor), then start a new worker with ``ctr cluster up``."""
    from ctr.cluster import load

    work = running.home / "cluster" / "work"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        log = _executor_log(work)
        if log is not None and "Running task" in log.read_text(errors="replace"):
            break
        assert proc.poll() is None, "the pipeline ended before its first task ran"
        time.sleep(0.2)
    else:
        raise AssertionError("no executor ran a task within 300 s")
    worker = load(load_settings({"home": str(running.home)}, env={})).processes["worker"]
    os.killpg(int(worker["pid"]), signal.SIGKILL)
    again = _ctr("--home", str(running.home), "cluster", "up", env=_env())
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.fixture(scope="module")
def pipelines(spark, cluster, raw, tmp_path_factory):
    local_home = tmp_path_factory.mktemp("local_pipeline")
    cluster_home = cluster.home / "data"
    # the cluster's driver: its own process, started outside the repository
    elsewhere = tmp_path_factory.mktemp("driver_cwd")
    log = elsewhere / "driver.log"
    with log.open("w") as out:  # a file, not a pipe: nobody reads while the local reference runs
        proc = subprocess.Popen([sys.executable, "-c", RUN_STEPS, json.dumps(_runner(cluster_home, cluster.flags, raw))],
                                cwd=elsewhere, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    # the local reference runs meanwhile, in this process (the cluster's driver mostly waits)
    killer = ThreadPoolExecutor(1)
    try:
        killed = killer.submit(_kill_worker_during_ingest, cluster, proc)
        for argv in _runner(local_home, (), raw):
            if "--stream" in argv:  # compared with the local batch ingest instead
                continue
            t0 = time.perf_counter()
            assert ctr_in_process(local_home, *argv[2:]) == 0, argv
            print(f"### local {' '.join(argv[2:4])}: {time.perf_counter() - t0:.1f} s")
        killed.result(timeout=600)
        proc.wait(timeout=1200)
    finally:
        killer.shutdown(wait=False, cancel_futures=True)
        if proc.poll() is None:
            proc.kill()
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output[-6000:]
    print("\n".join(line for line in output.splitlines() if line.startswith("###")))
    executors = sorted({p.parent.name for p in (cluster.home / "cluster" / "work").glob("app-*/*/stderr")})
    return Pipelines(load_settings({"home": str(local_home)}, env={}),
                     load_settings({"home": str(cluster_home), "mlflow_tracking_uri": cluster.mlflow}, env={}),
                     output, executors)


TABLES = ("observations", "quarantine", "ingest_runs", "aggregate_features", "segment_models",
          "criteo_observations", "criteo_quarantine", "import_runs") + (("backtest_metrics",) if FULL else ())


@pytest.mark.parametrize("table", TABLES)
def test_cluster_tables_equal_local(spark, pipelines, table):
    """Row for row, the cluster's warehouse tables equal the local run's (run ids and times aside),
    although the worker was killed while the ingest ran and a new one finished it."""
    local = rows(spark, pipelines.local.table_path(table), drop=RUN_COLUMNS)
    remote = rows(spark, pipelines.cluster.table_path(table), drop=RUN_COLUMNS)
    assert local, f"the local run wrote no {table} rows"
    assert remote == local


def test_stream_on_the_cluster_gives_the_batch_table(spark, pipelines):
    """The streaming ingest (Structured Streaming, its checkpoint under its data root) on the
    cluster writes the observations and quarantine the batch ingest wrote, row for row."""
    stream = load_settings({"home": str(pipelines.cluster.home / "stream")}, env={})
    for table in ("observations", "quarantine"):
        batch = rows(spark, pipelines.local.table_path(table), drop=RUN_COLUMNS)
        assert rows(spark, stream.table_path(table), drop=RUN_COLUMNS) == batch, table
    assert (pipelines.cluster.home / "stream" / "checkpoints" / "ingest").is_dir()


def test_worker_killed_mid_job_replaced(pipelines):
    """The kill landed while the first executor ran tasks: the application went on on a second
    executor (of the new worker), and the job finished (the tables above are complete)."""
    assert len(pipelines.executors) >= 2, pipelines.executors


def _weights(settings: Settings, name: str, version: str, tmp: Path):
    from shared.model.bundle import load_bundle
    from shared.model.format import load_model_dir
    from shared.model.registry import download_model_dir

    path = download_model_dir(settings, name, version, tmp / f"{name}-{version}")
    if name.endswith("segment-model"):
        bundle = load_bundle(path)
        return np.concatenate([bundle.intercepts.ravel(), bundle.weights.ravel(), bundle.global_weights.ravel()])
    model = load_model_dir(path)
    return np.concatenate([[model.intercept], model.dense_weights.ravel()])


@pytest.mark.parametrize("index", range(len(VERSIONS)), ids=[v[1] for v in VERSIONS])
def test_cluster_models_equal_local(pipelines, tmp_path, index):
    """Each registered version: identical weights for the deterministic engines; MLlib within
    its solver's tolerance and test log-loss within 1e-4. The cluster's versions live on the
    tracking server (PostgreSQL, artifacts served by the server), the local ones in SQLite."""
    from training.tracking import list_versions

    name, engine, exact = VERSIONS[index]
    nth = sum(1 for v in VERSIONS[:index] if v[0] == name)
    local_v = list_versions(pipelines.local, name)[nth]
    remote_v = list_versions(pipelines.cluster, name)[nth]
    assert remote_v["source"].startswith("mlflow-artifacts:") or "mlflow-artifacts" in remote_v["tags"].get(
        "model_dir_uri", "") or remote_v["tags"].get("model_dir_uri", "").startswith("runs:/")
    a = _weights(pipelines.local, name, local_v["version"], tmp_path / "local")
    b = _weights(pipelines.cluster, name, remote_v["version"], tmp_path / "cluster")
    if exact:
        np.testing.assert_array_equal(b, a)
        assert remote_v["tags"]["test_log_loss"] == local_v["tags"]["test_log_loss"]
    else:
        np.testing.assert_allclose(b, a, atol=1e-3, rtol=1e-2)
        assert abs(float(remote_v["tags"]["test_log_loss"]) - float(local_v["tags"]["test_log_loss"])) < 1e-4


def test_artifacts_on_the_tracking_server(pipelines, cluster):
    """The cluster's model files went to the tracking server's artifact store, not the data root."""
    served = list((cluster.home / "cluster" / "mlflow-artifacts").rglob("model.json"))
    assert served, "no model.json under the tracking server's artifact store"
    assert not (pipelines.cluster.home / "mlflow").exists()


def _champion_offline(settings: Settings, version: str, tmp: Path):
    from serving_support import Offline
    from shared.model.registry import download_model_dir

    return Offline(download_model_dir(settings, "ctr-model", version, tmp / f"offline-{version}"))


def test_serve_follows_the_tracking_servers_alias(spark, pipelines, cluster, tmp_path):
    """``ctr serve`` pointed at the tracking server loads the champion over HTTP, scores as the
    local run's identical version does, follows the alias when it moves, and logs what it
    served; ``ctr monitor`` then runs on the cluster over that log."""
    import httpx

    from serving_support import score_body, wait_for
    from synthetic.sample import generate_impressions
    from training.tracking import champion_version, list_versions

    fields = [imp.fields for imp in generate_impressions(40, seed=9, workdir=tmp_path)]
    champion = champion_version(pipelines.cluster, "ctr-model")
    local = {v["version"]: v for v in list_versions(pipelines.local, "ctr-model")}
    remote = list_versions(pipelines.cluster, "ctr-model")
    other = next(v["version"] for v in remote if v["version"] != champion)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ctr.cli", "--home", str(pipelines.cluster.home), "--port", str(port),
                             "--mlflow-uri", cluster.mlflow, "serve", "--poll-seconds", "1"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def score():
        try:
            r = httpx.post(base + "/v1/score", json=score_body(fields), timeout=10)
        except httpx.TransportError:
            assert proc.poll() is None, proc.stdout.read()
            return None
        return r.json() if r.status_code == 200 else None

    try:
        first = wait_for(score, timeout=120, what="ctr serve to answer")
        assert first["model_version"] == champion
        expected = _champion_offline(pipelines.local, local[champion]["version"], tmp_path).ctrs(fields)
        np.testing.assert_allclose([p["ctr"] for p in first["predictions"]], expected, rtol=1e-12)
        moved = _ctr("--home", str(pipelines.cluster.home), "--mlflow-uri", cluster.mlflow, "models", "promote",
                     other, env=_env())
        assert moved.returncode == 0, moved.stdout + moved.stderr
        after = wait_for(lambda: (s := score()) and s["model_version"] == other and s, timeout=60,
                         what="the server to swap to the promoted version")
        expected = _champion_offline(pipelines.cluster, other, tmp_path).ctrs(fields)
        np.testing.assert_allclose([p["ctr"] for p in after["predictions"]], expected, rtol=1e-12)
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    day = date.today().isoformat()
    monitored = _ctr("--home", str(pipelines.cluster.home), *cluster.flags, "monitor", "--date", day,
                     "--no-alerts", env=_env())
    assert monitored.returncode == 0, monitored.stdout + monitored.stderr
    from monitoring.tables import METRICS

    metrics = spark.read.format("delta").load(pipelines.cluster.table_path(METRICS))
    logged = metrics.where("window = 'day' AND slice_field = 'overall'").groupBy().sum("predictions").first()[0]
    assert logged and logged >= 2 * len(fields) and logged % len(fields) == 0, logged  # whole requests only


def test_registry_races_on_the_tracking_server(cluster, tmp_path):
    """On the team's store (the tracking server on PostgreSQL): versions created by three
    processes at once get distinct numbers, and two gates deciding at once compare against the
    champion current when each moves the alias (the gate lock, docs/concurrency.md)."""
    from registry_support import gates_at_once, versions_at_once

    settings = load_settings({"home": str(tmp_path / "home"), "mlflow_tracking_uri": cluster.mlflow}, env={})
    versions_at_once(settings)
    gates_at_once(settings, tmp_path)


def test_driver_killed_after_commit_rerun_completes(spark, cluster, raw, tmp_path):
    """A driver on the cluster killed right after its observations commit leaves no partial
    commit; the same command run again leaves the table an uninterrupted run leaves."""
    if not FULL:
        pytest.skip("the driver killed on the cluster runs with CTR_CLUSTER_FULL=1 (make test kills drivers on "
                    "local[2]: test_faults_jobs)")
    home = tmp_path / "killed"
    args = ("ingest", "--date", str(START), "--raw", str(raw / "logs"), *cluster.flags)
    killed = ctr(home, *args, kill_at="delta.observations")
    assert killed.killed and killed.phases[-1] == "delta.observations", killed.output
    again = ctr(home, *args)
    assert again.returncode == 0, again.output
    clean = tmp_path / "clean"
    assert ctr_in_process(clean, "ingest", "--date", str(START), "--raw", str(raw / "logs")) == 0
    for table in ("observations", "quarantine"):
        assert rows(spark, home / "warehouse" / table, drop=RUN_COLUMNS) == \
            rows(spark, clean / "warehouse" / table, drop=RUN_COLUMNS)
