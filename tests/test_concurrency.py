"""Concurrent writers (``docs/concurrency.md``), each race run for real:

- two ``ctr ingest`` processes of different days started together on a fresh data root (both
  create the tables): both succeed, and the warehouse is what the two give one after the other,
  in the order their observation commits landed (a day's ingest de-duplicates against the day
  before: the logs hold an impression logged on both days); the same with the interleaving that
  makes the later day's de-duplication stale forced (it is done again);
- the streaming ingest MERGEing while a ``ctr ingest`` process replaces a day of the same
  table: both finish, the table is the sequential result; and forced interleavings (a write
  held open between its snapshot and its commit): the loser of a race on one day is redone,
  the MERGE exactly once, while writers of different days never conflict;
- two ``ctr train`` processes registering at once: distinct versions, one champion, the better
  one, each gate compared against the champion current when it decided; the same race forced
  in threads (deterministic); the gate lock itself (a dead holder broken, a live one waited for,
  a silent one on another host broken after its lease, the declared error after the wait);
- the SQLite registry numbering versions created by several processes at once.

``make test`` runs the forced interleavings, the two trainings and the lock; the two
process-level ingest races (two JVMs starting together: about two minutes each on 2 cores)
run with ``CTR_CONCURRENCY_FULL=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from faults_support import ctr, ctr_in_process, rows
from registry_support import gates_at_once, versions_at_once
from training_support import ftrl_fixed_space
from feature_store import stream, tables
from feature_store.ingest import ingest_days
from shared.errors import ConcurrencyError
from synthetic.config import GeneratorConfig
from synthetic.logs import generate_logs
from warehouse_support import START, write_tiny_warehouse

pytestmark = [pytest.mark.spark, pytest.mark.slow]
FULL = "CTR_CONCURRENCY_FULL"
process_race = pytest.mark.skipif(not os.environ.get(FULL),
                                  reason=f"process-level ingest races run with {FULL}=1 (the forced ones always run)")

CFG = GeneratorConfig(days=2, impressions_per_day=500, seed=12, duplicate_rate=0.03, truncated_rate=0.01,
                      invalid_json_rate=0.01, missing_id_rate=0.01, late_click_share=0.3, base_ctr=0.05,
                      n_users=400, n_sites=40, n_publishers=20, n_advertisers=8, n_segments=20)
D1, D2 = CFG.start_date, CFG.start_date + timedelta(days=1)
SPARK = ("--spark-master", "local[2]")
RUN_COUNTS = ("date", "records_read", "observations", "duplicates", "quarantined", "clicks_attributed")


def _home(tmp_path_factory, name):
    from shared.config import load_settings

    return load_settings({"home": str(tmp_path_factory.mktemp(name)), "spark_master": "local[2]"}, env={})


def _at_once(*commands):
    """Run ``ctr`` commands ((home, args), ...) as processes started together; their runs."""
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = [pool.submit(ctr, home, *args) for home, args in commands]
        return [f.result() for f in futures]


def _retries(*outputs: str) -> list[str]:
    """The lines where a writer lost a race and tried again."""
    return [line for out in outputs for line in out.splitlines()
            if "conflicted with a concurrent commit" in line or "ingesting again" in line]


# -- the logs and the sequential warehouse ---------------------------------------------------------

def _valid(line: str) -> bool:
    from feature_store.parse import LineError, parse_impression

    try:
        parse_impression(line)
    except LineError:
        return False
    return True


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Two generated days of logs, plus an impression of D1's last hour logged again in D2's
    first hour (a duplicate across days: D2's ingest drops it only if D1 is stored)."""
    folder = tmp_path_factory.mktemp("concurrency_raw")
    generate_logs(CFG, folder)
    last = folder / "impressions" / f"date={D1}" / "hour=23.jsonl"
    first = folder / "impressions" / f"date={D2}" / "hour=00.jsonl"
    line = next(ln for ln in reversed(last.read_text().splitlines()) if _valid(ln))
    stat = first.stat()
    with first.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the stream reads files in time order
    return folder


_SERIAL: dict = {}


def serial(spark, tmp_path_factory, raw, order):
    """The data root the ingests of the days in ``order`` give one after the other (this process)."""
    if order not in _SERIAL:
        settings = _home(tmp_path_factory, "serial_" + "_".join(d.isoformat() for d in order))
        for day in order:
            ingest_days(spark, settings, [day], raw_dir=raw)
        _SERIAL[order] = settings
    return _SERIAL[order]


def _run_counts(spark, settings):
    log = spark.read.format("delta").load(settings.table_path(tables.INGEST_RUNS)).collect()
    return sorted(tuple(r[c] for c in RUN_COUNTS) for r in log)


# -- Delta writers --------------------------------------------------------------------------------

@process_race
def test_two_ingests_of_different_days_at_once(spark, tmp_path_factory, raw):
    home = _home(tmp_path_factory, "two_ingests")
    started = time.perf_counter()
    runs = _at_once(*[(home.home, ("ingest", "--date", d.isoformat(), "--raw", str(raw), *SPARK)) for d in (D1, D2)])
    print(f"two ingests at once: {time.perf_counter() - started:.1f}s; races lost and retried: "
          f"{_retries(*(r.output for r in runs)) or 'none'}")
    for run in runs:
        assert run.returncode == 0, run.output

    log = spark.read.format("delta").load(home.table_path(tables.INGEST_RUNS)).collect()
    assert sorted(r.date for r in log) == [D1.isoformat(), D2.isoformat()]  # both runs recorded, once each
    # the commit order of the observations decides which sequential run the warehouse must equal
    order = tuple(sorted((D1, D2), key=lambda d: next(r.observations_version for r in log if r.date == d.isoformat())))
    expected = serial(spark, tmp_path_factory, raw, order)
    assert rows(spark, home.table_path(tables.OBSERVATIONS)) == rows(spark, expected.table_path(tables.OBSERVATIONS))
    assert (rows(spark, home.table_path(tables.QUARANTINE), ("run_id",))
            == rows(spark, expected.table_path(tables.QUARANTINE), ("run_id",)))
    assert _run_counts(spark, home) == _run_counts(spark, expected)


def test_an_ingest_whose_day_before_was_written_meanwhile_is_redone(spark, tmp_path_factory, raw, monkeypatch,
                                                                   capfd):
    """Forced interleaving: D2's ingest has read the ids stored for D1 (none yet) when D1's ingest
    commits; D2's first pass keeps D1's impression logged again in D2, so it is done again."""
    home = _home(tmp_path_factory, "day_before_meanwhile")
    obs_path = home.table_path(tables.OBSERVATIONS)
    replace, interleaved = tables.replace_partitions, []

    def d1_commits_first(df, path, column, values):
        if path == obs_path and not interleaved:  # D2's first pass, about to commit
            interleaved.append(True)
            ingest_days(spark, home, [D1], raw_dir=raw)
        return replace(df, path, column, values)

    monkeypatch.setattr(tables, "replace_partitions", d1_commits_first)
    ingest_days(spark, home, [D2], raw_dir=raw)
    monkeypatch.undo()
    err = capfd.readouterr().err
    expected = serial(spark, tmp_path_factory, raw, (D1, D2))
    assert rows(spark, obs_path) == rows(spark, expected.table_path(tables.OBSERVATIONS))
    assert _run_counts(spark, home) == _run_counts(spark, expected)
    assert "ingesting again (pass 2)" in err


FED_FROM_HOUR = 0  # log files from D2 at this hour on reach the stream while the batch runs, hour by hour


def _stream_folder(raw: Path, folder: Path) -> list[list[Path]]:
    """``raw`` copied to ``folder / "logs"`` without its files from D2 :data:`FED_FROM_HOUR`:00
    on (later click files too: the stream's click watermark must not run ahead of what it
    has read); those are returned per hour in time order, to be fed as a logger would."""
    import shutil

    logs = folder / "logs"
    shutil.copytree(raw, logs)
    later: dict[str, list[Path]] = {}
    for f in sorted(logs.glob("*/date=*/hour=*.jsonl")):
        when = f"{f.parent.name[5:]} {f.stem[5:]}"
        if when >= f"{D2} {FED_FROM_HOUR:02d}":
            later.setdefault(when, []).append(f.rename(folder / f"{f.parent.parent.name}.{f.parent.name}.{f.name}"))
    return [later[when] for when in sorted(later)]


def _feed(hour: list[Path], logs: Path) -> None:
    """Put one hour's held-back files in place: a new modification time, then a rename (atomic)."""
    for f in hour:
        kind, day, name = f.name.split(".", 2)
        os.utime(f)
        f.rename(logs / kind / day / name)


@process_race
def test_stream_merges_racing_a_batch_ingest(spark, tmp_path_factory, raw):
    """The streaming ingest (this process's Spark, following a log folder that fills up) MERGEs
    while a ``ctr ingest --date D1`` process replaces D1 of the same table."""
    from delta.tables import DeltaTable

    home = _home(tmp_path_factory, "stream_and_batch")
    obs_path = home.table_path(tables.OBSERVATIONS)
    hours = _stream_folder(raw, tmp_path_factory.mktemp("stream_logs"))
    logs = hours[0][0].parent / "logs"  # (the held-back files wait beside it)
    started = time.perf_counter()
    query, _ = stream.start_stream(spark, home, stream.StreamOptions(trigger_seconds=1.0), raw_dir=logs)
    try:
        # synchronised on the Delta log: the stream's first MERGE has landed before the batch starts
        while not (Path(obs_path) / "_delta_log" / f"{1:020d}.json").exists():
            assert query.isActive, query.exception()
            time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            batch = pool.submit(ctr, home.home, "ingest", "--date", D1.isoformat(), "--raw", str(raw), *SPARK)
            while len(hours) > 2 and not batch.done():  # the logger keeps writing: the stream MERGEs meanwhile
                _feed(hours.pop(0), logs)
                time.sleep(4)
            run = batch.result()
        for hour in hours:  # the last hours arrive after the batch's commit
            _feed(hour, logs)
        query.processAllAvailable()
    finally:
        query.stop()
    assert query.exception() is None
    assert run.returncode == 0, run.output
    print(f"stream + batch: {time.perf_counter() - started:.1f}s; races lost and retried: "
          f"{_retries(run.output) or 'none'} (and this process's stderr)")

    committed = spark.read.format("delta").load(home.table_path(tables.INGEST_RUNS)).first().observations_version
    merges = [h.version for h in DeltaTable.forPath(spark, obs_path).history().collect() if h.operation == "MERGE"]
    # the race was real: the stream committed MERGEs before and after the batch's replacement
    assert min(merges) < committed < max(merges), (committed, sorted(merges))
    expected = serial(spark, tmp_path_factory, raw, (D1, D2))
    assert rows(spark, obs_path) == rows(spark, expected.table_path(tables.OBSERVATIONS))


def _held(df, gate: Path):
    """``df`` whose first evaluation (one task) waits, after creating ``gate/entered``, until the
    file ``gate/release`` exists: a write of it holds its Delta transaction open between its
    snapshot and its commit for as long as the test wants. Later evaluations (a retry) run through."""
    from pyspark.sql import functions as F

    entered, release = gate / "entered", gate / "release"

    def wait(label):
        if not entered.exists():
            entered.touch()
            while not release.exists():
                time.sleep(0.05)
        return label
    return df.coalesce(1).withColumn("label", F.udf(wait, "int")(F.col("label")))


def _merge(spark, settings, inserts, updates, path, batch_id=0):
    """A streaming micro-batch's MERGE into the observations of day D1 (the stream's own code)."""
    writer = stream._BatchWriter(settings, stream.StreamOptions(), Path(settings.home) / "checkpoint", False)
    writer._merge_observations(spark, inserts, updates, path, "query", batch_id, stream._tag("query", batch_id),
                               done=False, dates=[D1.isoformat()])


@pytest.mark.parametrize("held, day", [("replacement", D1), ("merge", D1), ("replacement", D2)],
                         ids=["batch-loses-to-stream", "stream-loses-to-batch", "other-day-no-conflict"])
def test_a_commit_that_lost_the_race_is_redone(spark, tmp_path_factory, raw, capfd, held, day):
    """Forced interleavings: the ``held`` write (a batch ingest's replacement of ``day``, or a
    stream's MERGE into D1) takes its snapshot, the other commits, then the held one commits.
    Writes to the same day conflict and the loser is redone (the MERGE with its txn ids, once);
    the table is what the two give one after the other. Other days never conflict."""
    from pyspark.sql import functions as F

    from delta.tables import DeltaTable

    reference = spark.read.format("delta").load(
        serial(spark, tmp_path_factory, raw, (D1, D2)).table_path(tables.OBSERVATIONS))
    on = {d: reference.filter(F.col("date") == F.lit(d.isoformat()).cast("date")) for d in (D1, D2)}
    inserts = (on[D1].limit(20).withColumn("impression_id", F.concat(F.lit("new-"), "impression_id"))
               .localCheckpoint())
    updates = (on[D1].filter("label = 0").limit(5).select("impression_id", "date", F.lit(0.5).alias("click_delay_s"))
               .localCheckpoint())
    replacement = on[day].withColumn("click_delay_s", F.lit(None).cast("double")).localCheckpoint()
    other = spark.newSession()  # the other writer: its own session (the MERGE sets session confs)

    def replace(session, df):
        tables.replace_partitions(session.createDataFrame(df.rdd, df.schema) if session is other else df,
                                  path, "date", [day.isoformat()])

    def merge(session, ins):
        _merge(session, settings, session.createDataFrame(ins.rdd, ins.schema) if session is other else ins,
               other.createDataFrame(updates.rdd, updates.schema) if session is other else updates, path)

    results = {}
    for run in ("sequential", "raced"):
        settings = _home(tmp_path_factory, f"lost_race_{run}")
        path = settings.table_path(tables.OBSERVATIONS)
        tables.replace_partitions(reference, path, "date", [D1.isoformat(), D2.isoformat()])
        capfd.readouterr()
        if run == "sequential":  # the other writer first, then the held one
            (merge(spark, inserts), replace(spark, replacement)) if held == "replacement" \
                else (replace(spark, replacement), merge(spark, inserts))
        else:
            gate = tmp_path_factory.mktemp("gate")
            first = (lambda: replace(spark, _held(replacement, gate))) if held == "replacement" \
                else (lambda: merge(spark, _held(inserts, gate)))
            with ThreadPoolExecutor(1) as pool:
                holding = pool.submit(first)
                while not (gate / "entered").exists():
                    assert not holding.done(), holding.result()
                    time.sleep(0.05)
                merge(other, inserts) if held == "replacement" else replace(other, replacement)
                (gate / "release").touch()
                holding.result()
        results[run] = rows(spark, path)
        retried = [ln for ln in capfd.readouterr().err.splitlines() if "conflicted with a concurrent commit" in ln]
        history = DeltaTable.forPath(spark, path).history().select("operation", "userMetadata").collect()
        assert [h.operation for h in history].count("MERGE") == 1  # exactly once, retried or not
    assert results["raced"] == results["sequential"]
    assert len(retried) == (1 if day == D1 else 0), retried  # the raced run's: same day only


def test_a_commit_retried_until_the_limit_is_a_declared_error(monkeypatch):
    import delta.exceptions as dx

    monkeypatch.setattr(tables, "backoff_seconds", lambda retry: 0.0)
    tries = []

    def losing():
        tries.append(1)
        raise dx.ConcurrentAppendException("files were added to partition [date=2026-11-01]", None, None)

    with pytest.raises(ConcurrencyError, match="observations: the append lost the commit race"):
        tables.retry_conflicts(losing, "/x/observations", "append", attempts=3)
    assert len(tries) == 3

    def failing():  # anything but a lost race is not retried
        tries.append(1)
        raise RuntimeError("disk full")

    tries.clear()
    with pytest.raises(RuntimeError):
        tables.retry_conflicts(failing, "/x/observations")
    assert len(tries) == 1


# -- trainings registering at once -------------------------------------------------------------

MODEL = "concurrent-model"


TEST_COPIES = 150  # the test day's rows, copied: a champion rescoring that lasts (seconds, not milliseconds)


@pytest.fixture(scope="module")
def trainer(spark, tmp_path_factory):
    """A tiny warehouse (train 2 days, validate 1, test 1 of 1,200 rows copied 150 times, so both
    trainings' gates rescore the champion for a while) and three fixed FTRL settings, from good
    (l1 0.5) to bad (l1 50)."""
    from pyspark.sql import functions as F

    from warehouse_support import tiny_spec

    settings = _home(tmp_path_factory, "trainings")
    write_tiny_warehouse(spark, settings, days=4)
    obs, test_day = settings.table_path(tables.OBSERVATIONS), (START + timedelta(days=3)).isoformat()
    day = spark.read.format("delta").load(obs).filter(F.col("date") == F.lit(test_day).cast("date"))
    copies = (day.crossJoin(spark.range(TEST_COPIES).withColumnRenamed("id", "copy"))
              .withColumn("impression_id", F.concat_ws("-", "impression_id", F.col("copy").cast("string")))
              .select(*day.columns))
    tables.replace_partitions(copies.localCheckpoint(), obs, "date", [test_day])
    folder = tmp_path_factory.mktemp("trainings_files")
    (folder / "spec.toml").write_text(tiny_spec().to_toml())
    for name, l1 in (("good", 0.5), ("mid", 5.0), ("bad", 50.0)):
        (folder / f"{name}.toml").write_text(ftrl_fixed_space(l1))

    def args(quality):
        return ("train", "--start", START.isoformat(), "--train-days", "2", "--spec", str(folder / "spec.toml"),
                "--search-space", str(folder / f"{quality}.toml"), "--model-name", MODEL, "--quiet")
    return settings, args


def test_two_trainings_register_and_gate_at_once(trainer):
    from training.tracking import list_versions

    settings, args = trainer
    assert ctr_in_process(settings.home, *args("bad")) == 0  # the champion both will be compared against
    started = time.perf_counter()
    runs = _at_once((settings.home, args("good")), (settings.home, args("mid")))
    print(f"two trainings at once: {time.perf_counter() - started:.1f}s")
    for run in runs:
        assert run.returncode == 0, run.output

    versions = {v["version"]: v for v in list_versions(settings, MODEL)}
    assert sorted(versions, key=int) == ["1", "2", "3"]  # three registrations, three numbers
    champions = [v for v in versions.values() if "champion" in v["aliases"]]
    assert len(champions) == 1
    new = [v for k, v in versions.items() if k != "1"]
    best = min(new, key=lambda v: float(v["tags"]["test_log_loss"]))
    assert champions[0]["version"] == best["version"], {k: v["tags"]["gate.reason"] for k, v in versions.items()}
    # gated one after the other: the first against v1, the second against the first (both beat v1)
    compared = {v["version"]: v["tags"]["gate.champion_version"] for v in new}
    print("gates:", {k: v["tags"]["gate.reason"] for k, v in versions.items()})
    first = [k for k, champion in compared.items() if champion == "1"]
    assert len(first) == 1, f"both gates compared against v1: {compared}"
    (second,) = set(compared) - set(first)
    assert compared[second] == first[0] and versions[first[0]]["tags"]["gate.decision"] == "promoted", compared


def test_gates_deciding_at_once_compare_against_the_current_champion(tmp_path):
    """Two gates rescoring the champion at the same moment (forced: each one's scorer waits for
    the other's): without the lock both compare against v1 and the worse moves the alias last."""
    from shared.config import load_settings

    gates_at_once(load_settings({"home": str(tmp_path / "home")}, env={}), tmp_path)


# -- the gate lock ------------------------------------------------------------------------------------

@pytest.fixture()
def registry(tmp_path):
    from shared.config import load_settings
    from training.tracking import configure_mlflow

    settings = load_settings({"home": str(tmp_path / "home")}, env={})
    return settings, configure_mlflow(settings).MlflowClient()


def _lock_of(client, model, host, pid, ticks="", heartbeat=None):
    """A lock held by someone else: (host, pid, ticks) as its tags say."""
    from training import tracking

    client.create_registered_model(tracking.gate_lock_name(model), tags={
        tracking.LOCK_HOST: host, tracking.LOCK_PID: str(pid), tracking.LOCK_START: ticks,
        tracking.LOCK_TOKEN: "theirs", tracking.LOCK_HEARTBEAT: repr(heartbeat or time.time())})


def test_the_gate_lock_of_a_dead_process_is_broken(registry):
    from shared import processes
    from training.tracking import gate_lock, gate_lock_name

    settings, client = registry
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    host, pid, ticks = processes.host_id(), child.pid, processes.start_ticks(child.pid)
    child.wait()
    _lock_of(client, "m", host, pid, ticks)
    t0 = time.monotonic()
    with gate_lock(settings, "m", wait_seconds=10):
        held = client.get_registered_model(gate_lock_name("m")).tags
        assert held["lock.pid"] == str(os.getpid())
    assert time.monotonic() - t0 < 5
    assert client.search_registered_models() == []  # released


def test_a_live_holder_is_waited_for_and_the_wait_ends_in_a_declared_error(registry):
    from training.tracking import gate_lock

    settings, client = registry
    events = []

    def hold():
        with gate_lock(settings, "m"):
            events.append(("first in", time.monotonic()))
            time.sleep(1.5)
            events.append(("first out", time.monotonic()))

    holder = threading.Thread(target=hold)
    holder.start()
    while not events:
        time.sleep(0.05)
    with pytest.raises(ConcurrencyError, match=r"lock 'm\.gate-lock' is held by pid"):
        with gate_lock(settings, "m", wait_seconds=0.3):
            pass
    with gate_lock(settings, "m", wait_seconds=10):
        events.append(("second in", time.monotonic()))
    holder.join()
    assert [e for e, _ in events] == ["first in", "first out", "second in"]


def test_a_silent_holder_on_another_host_is_broken_after_its_lease(registry):
    from training.tracking import gate_lock

    settings, client = registry
    _lock_of(client, "m", "another-host/pid:[1]", 4242, heartbeat=time.time())
    with pytest.raises(ConcurrencyError):  # alive as far as anyone here can tell: within its lease
        with gate_lock(settings, "m", wait_seconds=0.5, lease_seconds=60):
            pass
    with gate_lock(settings, "m", wait_seconds=10, lease_seconds=1.0):  # silent for longer than the lease
        pass
    assert client.search_registered_models() == []


def test_manual_promote_waits_for_the_gate_lock(registry, monkeypatch):
    from training import tracking

    settings, client = registry
    client.create_registered_model("m")
    client.create_model_version("m", "/nowhere")
    _lock_of(client, "m", *tracking.processes.this_process())  # held by a live process: this one
    monkeypatch.setattr(tracking, "GATE_LOCK_WAIT_SECONDS", 0.3)
    with pytest.raises(ConcurrencyError):
        tracking.promote(settings, "m", "1")
    with pytest.raises(ConcurrencyError):
        tracking.rollback(settings, "m")
    assert tracking.champion_version(settings, "m") is None
    assert [v["version"] for v in tracking.list_versions(settings, "m")] == ["1"]  # the lock is no model of it


# -- version numbers ------------------------------------------------------------------------------

def test_versions_created_at_once_get_distinct_numbers(tmp_path):
    from shared.config import load_settings

    settings = load_settings({"home": str(tmp_path / "home")}, env={})
    assert settings.mlflow_tracking_uri.startswith("sqlite:///")  # the store raced: the default SQLite file
    versions_at_once(settings)
