"""Fault injection for every job that writes: batch ingest, import, aggregate features, the
per-segment fan-out, monitoring and the scheduler, each run as a real ``ctr`` process and
killed with SIGKILL at a named phase (``delta.<table>`` after each Delta commit,
``train.registered`` / ``train.promoted`` around the registry) or at a seeded random time,
then run again (in this process, same command line). The data root it leaves equals the
one an uninterrupted run of the same command leaves, except for what is listed per job:

- run ids and timestamps (``run_id``, ``finished_at``, ``seconds``, ``updated_at``,
  ``computed_at``, ``decided_at``) and registry version numbers;
- run logs, which hold one row per run: a killed run that reached its record keeps it
  (``ingest_runs``, ``import_runs``, ``schedule_decisions``);
- the registry: a killed training's version stays, marked ``interrupted`` by the next one.

``make test`` kills three of them, each at the phase that leaves the most half-done: batch
ingest with its observations committed and its run not recorded, the fan-out with its segment
models committed and the bundle not registered, the scheduler with its update registered and
not gated; ``CTR_FAULTS_FULL=1`` runs every job at every phase and at a seeded random time
(``benchmarks/bench_faults.py`` runs that and prints the table).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pytest

from faults_support import ctr, ctr_in_process, random_delay, report, rows, skip_unless_in_default
from training_support import FTRL_FIXED_SPACE
from warehouse_support import START, write_tiny_warehouse

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _home(tmp_path_factory, name):
    from shared.config import load_settings

    return load_settings({"home": str(tmp_path_factory.mktemp(name)), "spark_master": "local[2]"}, env={})


def _tiny(spark, tmp_path_factory, name):
    settings = _home(tmp_path_factory, name)
    write_tiny_warehouse(spark, settings)
    return settings


def _main(settings, *args):
    return ctr_in_process(settings.home, *args)


def _kill(job, settings, args, phase, prepare=None):
    """Kill ``ctr ARGS`` at ``phase``; "random": at a seeded time within an uninterrupted run's
    duration, measured first in a scratch data root made by ``prepare``. Returns the killed run."""
    if phase == "random":
        scratch = prepare()
        whole = ctr(scratch.home, *args)
        assert whole.returncode == 0, whole.output
        killed = ctr(settings.home, *args, kill_after=random_delay(whole.seconds, job))
    else:
        killed = ctr(settings.home, *args, kill_at=phase)
        assert killed.killed and killed.phases[-1] == phase, killed.output
    return killed


# -- batch ingest -------------------------------------------------------------------------------

INGEST_PHASES = ("delta.quarantine", "delta.observations", "delta.ingest_runs", "random")


@pytest.fixture(scope="module")
def ingest_clean(tmp_path_factory):
    from synthetic.config import GeneratorConfig
    from synthetic.logs import generate_logs

    cfg = GeneratorConfig(days=2, impressions_per_day=500, seed=12, duplicate_rate=0.03, truncated_rate=0.01,
                          invalid_json_rate=0.01, missing_id_rate=0.01, late_click_share=0.3, base_ctr=0.05,
                          n_users=400, n_sites=40, n_publishers=20, n_advertisers=8, n_segments=20)
    raw = tmp_path_factory.mktemp("faults_raw")
    generate_logs(cfg, raw)
    args = ("ingest", "--start", cfg.start_date.isoformat(),
            "--end", (cfg.start_date + timedelta(days=1)).isoformat(), "--raw", str(raw))
    clean = _home(tmp_path_factory, "ingest_clean")
    assert _main(clean, *args) == 0
    return clean, args


@pytest.mark.parametrize("phase", INGEST_PHASES)
def test_batch_ingest_killed_then_rerun(spark, tmp_path_factory, ingest_clean, phase):
    skip_unless_in_default(phase, ("delta.observations",))
    from feature_store import tables

    clean, args = ingest_clean
    home = _home(tmp_path_factory, "ingest_killed")
    killed = _kill("ingest", home, args, phase, lambda: _home(tmp_path_factory, "ingest_scratch"))
    assert _main(home, *args) == 0
    same = (rows(spark, home.table_path(tables.OBSERVATIONS)) == rows(spark, clean.table_path(tables.OBSERVATIONS))
            and rows(spark, home.table_path(tables.QUARANTINE), ("run_id",))
            == rows(spark, clean.table_path(tables.QUARANTINE), ("run_id",)))
    # the run log: the re-run's rows (the newest per day) carry the uninterrupted run's counts
    counts = ("date", "records_read", "observations", "duplicates", "quarantined", "clicks_attributed")
    runs = spark.read.format("delta").load(home.table_path(tables.INGEST_RUNS)).orderBy("finished_at").collect()
    newest = sorted(tuple(r[c] for c in counts) for r in {r["date"]: r for r in runs}.values())
    expected = sorted(tuple(r[c] for c in counts)
                      for r in spark.read.format("delta").load(clean.table_path(tables.INGEST_RUNS)).collect())
    report("ingest", phase, killed, same and newest == expected, f"{len(runs)} ingest_runs rows")
    assert same and newest == expected


# -- import (Criteo layout) ---------------------------------------------------------------------

IMPORT_PHASES = ("delta.criteo_quarantine", "delta.criteo_observations", "delta.import_runs", "random")


def _criteo_file(path, n=600, seed=3):
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(n):
        ints = [str(v) if v >= 0 else "" for v in rng.integers(-1, 50, 13)]
        cats = [f"{v:08x}" if v % 9 else "" for v in rng.integers(0, 200, 26)]
        label = str(int(rng.random() < 0.2))
        if k % 97 == 5:
            label = "7"  # quarantined: bad label
        lines.append("\t".join([label, *ints, *cats]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def import_clean(tmp_path_factory):
    src = _criteo_file(tmp_path_factory.mktemp("faults_criteo") / "day.txt")
    args = ("import", "criteo", str(src))
    clean = _home(tmp_path_factory, "import_clean")
    assert _main(clean, *args) == 0
    return clean, args


@pytest.mark.parametrize("phase", IMPORT_PHASES)
def test_import_killed_then_rerun(spark, tmp_path_factory, import_clean, phase):
    skip_unless_in_default(phase, ())
    clean, args = import_clean
    home = _home(tmp_path_factory, "import_killed")
    killed = _kill("import", home, args, phase, lambda: _home(tmp_path_factory, "import_scratch"))
    assert _main(home, *args) == 0
    same = all(rows(spark, home.table_path(t), ("run_id",)) == rows(spark, clean.table_path(t), ("run_id",))
               for t in ("criteo_observations", "criteo_quarantine"))
    report("import", phase, killed, same)
    assert same


# -- aggregate features -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def features_clean(spark, tmp_path_factory):
    args = ("features", "build", "--start", (START + timedelta(days=1)).isoformat(),
            "--end", (START + timedelta(days=4)).isoformat())
    clean = _tiny(spark, tmp_path_factory, "features_clean")
    assert _main(clean, *args) == 0
    return clean, args


@pytest.mark.parametrize("phase", ("delta.aggregate_features", "random"))
def test_aggregate_features_killed_then_rerun(spark, tmp_path_factory, features_clean, phase):
    skip_unless_in_default(phase, ())
    from feature_store import tables

    clean, args = features_clean
    home = _tiny(spark, tmp_path_factory, "features_killed")
    killed = _kill("features build", home, args, phase, lambda: _tiny(spark, tmp_path_factory, "features_scratch"))
    assert _main(home, *args) == 0
    same = rows(spark, home.table_path(tables.AGGREGATES)) == rows(spark, clean.table_path(tables.AGGREGATES))
    report("features build", phase, killed, same)
    assert same


# -- the per-segment fan-out --------------------------------------------------------------------

SEGMENT_PHASES = ("delta.segment_models", "train.registered", "train.promoted", "random")
SEGMENT_VOLATILE = ("run_id", "updated_at", "fit_seconds")


def _segment_args(spec):
    return ("train", "--start", START.isoformat(), "--train-days", "2", "--per-segment", "advertiser_id",
            "--global-engine", "sklearn", "--min-rows", "100", "--min-positives", "3", "--spec", str(spec),
            "--run-id", "faults-segments", "--model-name", "faults-segments", "--quiet")


def _bundle(settings):
    """The champion bundle: the checksums of its weights and spec, ``segments.json`` without its
    creation time (``model.json`` holds the run's timings and data path, ``checksums.json`` its
    checksum: both left out)."""
    import json

    from shared.model.format import verify_model_dir
    from shared.model.registry import download_model_dir

    folder = download_model_dir(settings, "faults-segments", "champion")
    out = {}
    for name, digest in verify_model_dir(folder).items():
        if name == "segments.json":
            out[name] = {k: v for k, v in json.loads((folder / name).read_text()).items() if k != "created_at"}
        elif name != "model.json":
            out[name] = digest
    return out


@pytest.fixture(scope="module")
def segments_clean(spark, tmp_path_factory):
    from shared.featurize import load_spec

    spec = tmp_path_factory.mktemp("faults_spec") / "spec.toml"
    spec.write_text(dataclasses.replace(load_spec("generated"), bits=18).to_toml())
    clean = _tiny(spark, tmp_path_factory, "segments_clean")
    assert _main(clean, *_segment_args(spec)) == 0
    return clean, _segment_args(spec)


@pytest.mark.parametrize("phase", SEGMENT_PHASES)
def test_segment_fan_out_killed_then_resumed(spark, tmp_path_factory, segments_clean, phase):
    skip_unless_in_default(phase, ("delta.segment_models",))
    from training.segment_table import SEGMENT_TABLE

    clean, args = segments_clean
    home = _tiny(spark, tmp_path_factory, "segments_killed")
    killed = _kill("train --per-segment", home, args, phase, lambda: _tiny(spark, tmp_path_factory, "segments_scratch"))
    assert _main(home, *args) == 0
    table_same = (rows(spark, home.table_path(SEGMENT_TABLE), SEGMENT_VOLATILE)
                  == rows(spark, clean.table_path(SEGMENT_TABLE), SEGMENT_VOLATILE))
    files_same = _bundle(home) == _bundle(clean)
    report("train --per-segment", phase, killed, table_same and files_same)
    assert table_same and files_same


# -- monitoring ---------------------------------------------------------------------------------

MONITOR_PHASES = ("delta.monitor_metrics", "delta.feature_drift", "random")
MONITOR_VOLATILE = ("run_id", "computed_at")


def _monitoring_inputs(spark, settings):
    from monitoring_support import record_ingest_runs, write_observations, write_predictions, write_truth

    write_observations(spark, settings)
    record_ingest_runs(spark, settings)
    write_predictions(settings)
    write_truth(settings)
    return settings


@pytest.fixture(scope="module")
def monitor_clean(spark, tmp_path_factory):
    from monitoring_support import AS_OF, DAY_A, DAY_B, REF_DAY

    args = ("monitor", "--start", DAY_A.isoformat(), "--end", DAY_B.isoformat(), "--as-of", AS_OF.isoformat(),
            "--slices", "site_id", "--top-n", "2", "--no-alerts",
            "--reference-window", f"{REF_DAY.isoformat()}:{DAY_A.isoformat()}")
    clean = _home(tmp_path_factory, "monitor_clean")
    _monitoring_inputs(spark, clean)
    assert _main(clean, *args) == 0
    return clean, args


@pytest.mark.parametrize("phase", MONITOR_PHASES)
def test_monitoring_killed_then_rerun(spark, tmp_path_factory, monitor_clean, phase):
    skip_unless_in_default(phase, ())
    from monitoring import tables

    clean, args = monitor_clean
    home = _monitoring_inputs(spark, _home(tmp_path_factory, "monitor_killed"))
    killed = _kill("monitor", home, args, phase,
                   lambda: _monitoring_inputs(spark, _home(tmp_path_factory, "monitor_scratch")))
    assert _main(home, *args) == 0
    same = all(rows(spark, home.table_path(t), MONITOR_VOLATILE) == rows(spark, clean.table_path(t), MONITOR_VOLATILE)
               for t in (tables.METRICS, tables.FEATURE_DRIFT))
    export_same = (sorted(p.relative_to(tables.export_dir(home)).parent for p in tables.export_dir(home).rglob("*.parquet"))
                   == sorted(p.relative_to(tables.export_dir(clean)).parent
                             for p in tables.export_dir(clean).rglob("*.parquet")))
    report("monitor", phase, killed, same and export_same)
    assert same and export_same


# -- the scheduler ------------------------------------------------------------------------------

SCHEDULE_PHASES = ("delta.schedule_decisions", "train.saved", "train.registered", "random")
SCHEDULE_MODEL = "faults-schedule"


def _champion(settings):
    from shared.model.format import load_model_dir
    from shared.model.registry import download_model_dir

    loaded = load_model_dir(download_model_dir(settings, SCHEDULE_MODEL, "champion"))
    return loaded.indices, loaded.weights, loaded.intercept


def _schedule_home(spark, tmp_path_factory, name):
    """A tiny warehouse with a one-day FTRL champion: the scheduler's decision is an update."""
    from shared.featurize import load_spec
    from training.pipeline import Windows, train_from_warehouse

    settings = _home(tmp_path_factory, name)
    write_tiny_warehouse(spark, settings)
    space, policy = settings.home / "fixed.toml", settings.home / "policy.toml"
    space.write_text(FTRL_FIXED_SPACE)
    policy.write_text("[policy]\nmin_hours_between_updates = 0\n")
    spec = dataclasses.replace(load_spec("generated"), bits=18)
    first = train_from_warehouse(None, settings, Windows.consecutive(START, 1), spec, search_space=space,
                                 model_name=SCHEDULE_MODEL)
    assert first.promoted
    return settings, ("schedule", "--model-name", SCHEDULE_MODEL, "--policy", str(policy))


@pytest.fixture(scope="module")
def schedule_clean(spark, tmp_path_factory):
    clean, args = _schedule_home(spark, tmp_path_factory, "schedule_clean")
    assert _main(clean, *args) == 0
    return clean, args


@pytest.mark.parametrize("phase", SCHEDULE_PHASES)
def test_scheduler_killed_then_rerun(spark, tmp_path_factory, schedule_clean, phase, capsys):
    skip_unless_in_default(phase, ("train.registered",))
    from monitoring import registry, tables

    clean, args = schedule_clean
    home, args = _schedule_home(spark, tmp_path_factory, "schedule_killed")
    killed = _kill("schedule", home, args, phase, lambda: _schedule_home(spark, tmp_path_factory, "schedule_scratch")[0])
    capsys.readouterr()
    assert _main(home, *args) == 0
    out = capsys.readouterr().out
    a, b = _champion(home), _champion(clean)
    same = all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and a[2] == b[2]
    decisions = tables.read(spark, home, tables.SCHEDULE_DECISIONS).to_pylist()
    attempts = {}
    for r in sorted((r for r in decisions if r["action"] == "attempt"), key=lambda r: r["decided_at"]):
        attempts[r["decision_id"]] = r["attempt_status"]
    pending = [v.version for v in registry.versions(home, SCHEDULE_MODEL) if v.tags.get("gate.decision") == "pending"]
    ok = same and not pending
    last = killed.phases[-1] if killed.phases else ""
    started = killed.phases.count("delta.schedule_decisions") >= 2  # the attempt's "running" row written
    if started and last != "train.promoted":  # killed inside its attempt: interrupted, retried at once
        ok = ok and "interrupted" in out and list(attempts.values()) == ["running", "succeeded"]
    elif last == "" or killed.phases == ["delta.schedule_decisions"]:  # killed before its attempt began
        ok = ok and list(attempts.values()) == ["succeeded"]
    # killed after the alias moved: the champion is the update's, the re-run finds nothing new to learn
    report("schedule", phase, killed, ok, f"attempts {list(attempts.values())}")
    assert ok, out
