"""``ctr ingest --stream`` on real Spark Structured Streaming and real Delta tables."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date, datetime, timezone

import pytest

from feature_store import stream, tables
from feature_store.ingest import ingest_days
from feature_store.stream import StreamOptions, run_stream
from synthetic.config import GeneratorConfig
from synthetic.logs import generate_logs
from faults_support import ctr, ctr_in_process, report, skip_unless_in_default
from ingest_support import click, imp, write

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CFG = GeneratorConfig(
    days=2, impressions_per_day=600, seed=11, drift_day=1,
    n_users=500, n_sites=60, n_publishers=30, n_advertisers=10, n_segments=30, user_zipf_offset=3.0,
    duplicate_rate=0.03, truncated_rate=0.01, invalid_json_rate=0.01, missing_id_rate=0.01,
    bad_timestamp_rate=0.01, wrong_type_rate=0.01, late_click_share=0.3, base_ctr=0.05,
)


def observations(spark, settings):
    rows = spark.read.format("delta").load(settings.table_path(tables.OBSERVATIONS)).collect()
    return {r.impression_id: r.asDict() for r in rows}


def quarantine(spark, settings):
    rows = spark.read.format("delta").load(settings.table_path(tables.QUARANTINE)).drop("run_id").collect()
    return sorted(tuple(r) for r in rows)


def batches(spark, settings):
    return spark.read.format("delta").load(settings.table_path(stream.STREAM_BATCHES.name)).collect()


@pytest.fixture(scope="module")
def generated(tmp_path_factory, spark, spark_settings):
    """Generated logs (2 days, faults and duplicates), batch-ingested into one data root."""
    raw = tmp_path_factory.mktemp("stream_raw")
    generate_logs(CFG, raw)
    batch = replace(spark_settings, home=tmp_path_factory.mktemp("batch_home"))
    ingest_days(spark, batch, [CFG.start_date, date.fromordinal(CFG.start_date.toordinal() + 1)], raw_dir=raw)
    return raw, batch


@pytest.fixture(scope="module")
def streamed(generated, tmp_path_factory, spark, spark_settings):
    """The same logs streamed (availableNow, a few files per micro-batch) into another data root."""
    raw, _ = generated
    settings = replace(spark_settings, home=tmp_path_factory.mktemp("stream_home"))
    t0 = time.perf_counter()
    run = run_stream(spark, settings, StreamOptions(once=True, max_files_per_trigger=30), raw_dir=raw)
    print(f"streamed {run.total('records_read')} lines in {len(run.batches)} batches: "
          f"{time.perf_counter() - t0:.1f}s")
    return settings, run


def test_streaming_gives_the_batch_table(spark, generated, streamed):
    _, batch = generated
    settings, run = streamed
    assert len(run.batches) == 2  # 48 impression files, 30 per micro-batch
    got, want = observations(spark, settings), observations(spark, batch)
    assert got == want
    assert sum(r["label"] for r in got.values()) > 20
    assert quarantine(spark, settings) == quarantine(spark, batch)
    from shared import catalog

    for table in (catalog.OBSERVATIONS, catalog.STREAM_CLICKS, catalog.STREAM_BATCHES):  # the stored schemas
        stored = spark.read.format("delta").load(settings.table_path(table.name)).schema
        assert [(f.name, f.dataType) for f in stored] == [(f.name, f.dataType) for f in table.spark_schema()]


def test_counts_are_conserved_per_micro_batch(spark, generated, streamed):
    settings, run = streamed
    assert all(b.conserved for b in run.batches)
    rows = batches(spark, settings)
    assert sorted(r.batch_id for r in rows) == list(range(len(run.batches)))
    for r in rows:
        assert r.records_read == r.observations + r.duplicates + r.quarantined
        assert r.clicks_read == (r.clicks_quarantined + r.clicks_attributed + r.clicks_outside_window
                                 + r.clicks_after_final + r.clicks_unmatched)
    assert sum(r.duplicates for r in rows) > 0 and sum(r.quarantined for r in rows) > 0
    batch_runs = spark.read.format("delta").load(generated[1].table_path(tables.INGEST_RUNS)).collect()
    assert sum(r.records_read for r in rows) == sum(r.records_read for r in batch_runs)
    assert sum(r.observations for r in rows) == sum(r.observations for r in batch_runs)
    assert sum(r.quarantined for r in rows) == sum(r.quarantined for r in batch_runs)
    # clicks of later hours reach impressions already written: labels updated by MERGE
    assert sum(r.labels_updated for r in rows) > 0
    final = stream.labels_final_before(spark, settings)
    assert final is not None and final == max(r.labels_final_before for r in rows).replace(tzinfo=timezone.utc)


def test_restart_after_a_completed_run_adds_nothing(spark, streamed):
    settings, _ = streamed
    path = settings.table_path(tables.OBSERVATIONS)
    version, before = tables.latest_version(spark, path), observations(spark, settings)
    run = run_stream(spark, settings, StreamOptions(once=True, max_files_per_trigger=30))
    assert run.batches == []
    assert tables.latest_version(spark, path) == version
    assert observations(spark, settings) == before


#: Phases of a micro-batch (feature_store/stream.py) a kill can hit, in order; each ends with the
#: batch id. ``make test`` kills at the one that leaves the most half-done (observations merged,
#: the batch not recorded, the checkpoint not committed); CTR_FAULTS_FULL=1 runs them all.
STREAM_PHASES = ("counted", "quarantined", "clicks_written", "merged", "recorded")
DEFAULT_PHASE = "merged"


def _stream_args(raw):
    return ("ingest", "--stream", "--once", "--max-files", "30", "--raw", str(raw))


@pytest.mark.parametrize("where", STREAM_PHASES)
def test_stream_killed_mid_batch_then_restarted_loses_and_duplicates_nothing(spark, generated, streamed, tmp_path,
                                                                             where):
    """A real ``ctr ingest --stream`` process killed with SIGKILL inside its second micro-batch,
    then run again (in this process): every table equals the uninterrupted stream's, and the
    batch is recorded once with the counts of an uninterrupted run."""
    skip_unless_in_default(where, (DEFAULT_PHASE,))
    raw, _ = generated
    home = tmp_path / "home"
    killed = ctr(home, *_stream_args(raw), kill_at=f"stream.{where}.1")
    assert killed.killed and killed.phases[-1] == f"stream.{where}.1", killed.output
    assert ctr_in_process(home, *_stream_args(raw)) == 0
    settings = replace(streamed[0], home=home)
    counts = lambda rows: sorted((r.batch_id, r.records_read, r.observations, r.duplicates, r.quarantined,  # noqa: E731
                                  r.clicks_attributed, r.labels_updated) for r in rows)
    same = (observations(spark, settings) == observations(spark, streamed[0])
            and quarantine(spark, settings) == quarantine(spark, streamed[0])
            and counts(batches(spark, settings)) == counts(batches(spark, streamed[0])))
    report("ingest --stream", f"stream.{where}.1", killed, same)
    assert same


D = date(2026, 1, 5)


def test_files_in_two_batches_late_click_and_quarantine(spark, spark_settings, tmp_path):
    settings = replace(spark_settings, home=tmp_path / "home")
    raw = settings.raw_dir
    opts = StreamOptions(once=True, attribution_window_hours=1.0, lateness_minutes=0.0)
    write(raw, "impressions", D, 10, [
        imp("A", "2026-01-05T10:00:00.000Z"), imp("B", "2026-01-05T10:05:00.000Z"),
        imp("C", "2026-01-05T10:10:00.000Z"),
        imp("E", "2026-01-05T10:20:00.000Z")[:57],  # truncated
        imp("G", "yesterday at noon"),  # bad timestamp
    ])
    write(raw, "clicks", D, 10, [click("A", "2026-01-05T10:00:30.000Z"), '{"impression_id": "A", "click_time": '])
    first = run_stream(spark, settings, opts)
    assert [(b.records_read, b.observations, b.duplicates, b.quarantined) for b in first.batches] == [(5, 3, 0, 2)]
    rows = observations(spark, settings)
    assert {k: v["label"] for k, v in rows.items()} == {"A": 1, "B": 0, "C": 0}
    q = spark.read.format("delta").load(settings.table_path(tables.QUARANTINE)).collect()
    assert sorted((x.source, x.reason, x.line_number) for x in q) == [
        ("clicks", "truncated_json", 2), ("impressions", "bad_timestamp", 5), ("impressions", "truncated_json", 4)]

    # Second batch: a duplicate of B in a later file, B's late click, a click for an unknown id,
    # and a click at 12:00 moving the watermark: rows up to 11:00 are final.
    write(raw, "impressions", D, 11, [imp("B", "2026-01-05T10:05:00.000Z"), imp("K", "2026-01-05T11:30:00.000Z")])
    write(raw, "clicks", D, 11, [click("B", "2026-01-05T10:55:00.000Z"), click("ZZ", "2026-01-05T11:00:00.000Z")])
    write(raw, "clicks", D, 12, [click("K", "2026-01-05T12:00:00.000Z")])
    second = run_stream(spark, settings, opts)
    (b,) = second.batches
    assert (b.records_read, b.observations, b.duplicates, b.quarantined) == (2, 1, 1, 0)
    assert (b.clicks_read, b.clicks_attributed, b.labels_updated, b.clicks_unmatched) == (3, 2, 1, 1)
    rows = observations(spark, settings)
    assert {k: (v["label"], v["click_delay_s"]) for k, v in rows.items()} == {
        "A": (1, 30.0), "B": (1, 3000.0), "C": (0, None), "K": (1, 1800.0)}
    assert stream.labels_final_before(spark, settings) == datetime(2026, 1, 5, 11, 0, tzinfo=timezone.utc)

    # Third batch: a click for C within its window, but after the window closed: C's label is final.
    write(raw, "clicks", D, 13, [click("C", "2026-01-05T10:40:00.000Z")])
    (b,) = run_stream(spark, settings, opts).batches
    assert (b.clicks_read, b.clicks_after_final, b.labels_updated) == (1, 1, 0)
    assert observations(spark, settings)["C"]["label"] == 0
