"""The live-metrics job on the tiny world of ``monitoring_support``: every figure below is
computed by hand from the world's 10 + 3 predictions, and read back from the real
Delta table the job wrote (and from the dashboard's export of it)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from monitoring_support import AS_OF, DAY_A, DAY_B, REF_DAY, ts

pytestmark = pytest.mark.spark

LN2 = math.log(2)


def ll(pairs):
    """Hand log-loss of (label, p) pairs."""
    return -sum(math.log(p) if y else math.log(1 - p) for y, p in pairs) / len(pairs)


@pytest.fixture(scope="module")
def table(world, spark):
    from monitoring import tables

    return tables.read(spark, world.settings, tables.METRICS).to_pylist()


def one(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_day_overall_matches_hand_computation(table):
    r = one(table, model_version="1", window="day", window_start=ts(DAY_A, 0), slice_field="overall")
    assert r["slice_value"] == "all" and r["window_end"] == ts(DAY_A, 0) + timedelta(days=1)
    # 10 predictions (a1 logged twice by a re-delivered request counts once), 6 observed
    assert (r["predictions"], r["impressions"], r["unlabelled"], r["clicks"]) == (10, 6, 4, 3)
    assert r["ctr"] == pytest.approx(0.5)
    assert r["mean_predicted"] == pytest.approx(2.1 / 6)
    assert r["mean_predicted_all"] == pytest.approx(3.1 / 10)
    assert r["calibration"] == pytest.approx((2.1 / 6) / 0.5)
    labelled = [(1, .2), (0, .4), (0, .1), (1, .5), (0, .3), (1, .6)]
    assert r["log_loss"] == pytest.approx(ll(labelled), rel=1e-12)
    assert r["normalized_entropy"] == pytest.approx(ll(labelled) / LN2, rel=1e-12)
    # positives .2 .5 .6 vs negatives .4 .1 .3: 1 + 3 + 3 of 9 pairs ordered correctly
    assert r["auc"] == pytest.approx(7 / 9)
    assert sum(r["rel_count"]) == 6
    # the reliability bins hold the same rows: their weighted means give back the totals
    assert sum(c * m for c, m in zip(r["rel_count"], r["rel_mean_predicted"])) == pytest.approx(2.1)
    assert sum(c * o for c, o in zip(r["rel_count"], r["rel_observed_rate"])) == pytest.approx(3)


def test_hour_windows(table):
    h10 = one(table, model_version="1", window="hour", window_start=ts(DAY_A, 10), slice_field="overall")
    assert (h10["predictions"], h10["impressions"], h10["clicks"]) == (4, 4, 2)
    assert h10["window_end"] == ts(DAY_A, 11)
    assert h10["log_loss"] == pytest.approx(ll([(1, .2), (0, .4), (0, .1), (1, .5)]))
    assert h10["auc"] == pytest.approx(3 / 4)
    h11 = one(table, model_version="1", window="hour", window_start=ts(DAY_A, 11), slice_field="overall")
    assert (h11["predictions"], h11["impressions"], h11["unlabelled"], h11["clicks"]) == (6, 2, 4, 1)
    assert h11["auc"] == pytest.approx(1.0) and h11["calibration"] == pytest.approx(0.9 / 2 / 0.5)


def test_slices_capped_to_top_n(table):
    day = [r for r in table if r["window"] == "day" and r["window_start"] == ts(DAY_A, 0)
           and r["slice_field"] == "site_id"]
    # top 2 sites by volume over both days are s1 and s2; s3 goes to __other__
    assert {r["slice_value"] for r in day} == {"s1", "s2", "__other__"}
    s1 = one(day, slice_value="s1")
    assert (s1["predictions"], s1["impressions"], s1["clicks"]) == (4, 3, 1)
    assert s1["calibration"] == pytest.approx((0.9 / 3) / (1 / 3))
    assert s1["auc"] == 0.0  # the one click (.2) is ranked below both non-clicks (.4, .3)
    other = one(day, slice_value="__other__")
    assert (other["predictions"], other["impressions"], other["unlabelled"]) == (2, 0, 2)
    assert other["log_loss"] is None and other["calibration"] is None and other["auc"] is None
    overall = one(table, model_version="1", window="day", window_start=ts(DAY_A, 0), slice_field="overall")
    for key in ("predictions", "impressions", "unlabelled", "clicks"):  # slices partition the traffic
        assert sum(r[key] for r in day) == overall[key]


def test_unlabelled_candidates_versions_and_invalid_lines(world, table):
    b1 = one(table, model_version="1", window="day", window_start=ts(DAY_B, 0), slice_field="overall")
    # j1 observed; j2 was a candidate ad (creative c9) that was not the one shown: unlabelled
    assert (b1["predictions"], b1["impressions"], b1["unlabelled"], b1["clicks"]) == (2, 1, 1, 1)
    assert b1["auc"] is None  # one class only: undefined, stored as null
    b2 = one(table, model_version="2", window="day", window_start=ts(DAY_B, 0), slice_field="overall")
    assert (b2["impressions"], b2["clicks"]) == (1, 0)
    assert b2["log_loss"] == pytest.approx(-math.log(0.95)) and b2["calibration"] is None
    assert world.run.metrics.excluded == {DAY_A.isoformat(): {"duplicate": 1},
                                          DAY_B.isoformat(): {"malformed_json": 1, "bad_ctr": 1}}
    assert world.run.metrics.lines_read == {DAY_A.isoformat(): 11, DAY_B.isoformat(): 5}
    summary = world.run.summaries[DAY_B.isoformat()]
    assert summary.excluded_lines == {"malformed_json": 1, "bad_ctr": 1}
    assert (summary.predictions, summary.impressions, summary.unlabelled) == (3, 2, 1)
    assert summary.versions == ["1", "2"]


def test_label_maturity(table):
    """As of 2026-03-04 00:00, day A's labels are final (its last impression, 11:01, closed its
    24 h window at 03-03 11:01, and the clicks of 03-02/03-03 were ingested for it); day B's
    impressions (09:00) keep their windows open until 03-04 09:00."""
    for r in table:
        assert r["mature"] is (r["date"] == DAY_A), r
        assert r["as_of"] == AS_OF
        assert r["label_horizon"] == AS_OF  # clicks ingested through 03-05 (day B's run), capped at as_of
    a = one(table, model_version="1", window="day", window_start=ts(DAY_A, 0), slice_field="overall")
    assert a["labels_final_at"] == ts(DAY_A + timedelta(days=1), 11, 1)  # a6 at 11:01 + 24 h
    b = one(table, model_version="1", window="day", window_start=ts(DAY_B, 0), slice_field="overall")
    assert b["labels_final_at"] == ts(DAY_B + timedelta(days=1), 9, 1)


def test_label_horizons_from_ingest_runs(world, spark):
    from monitoring.live_metrics import label_horizons

    per_date, newest = label_horizons(spark, world.settings)
    # each run read its day's and the next day's clicks (24 h window), finished long after
    assert per_date == {d.isoformat(): ts(d + timedelta(days=2), 0) for d in (REF_DAY, DAY_A, DAY_B)}
    assert newest == ts(DAY_B + timedelta(days=2), 0)


def test_headline_summary(world):
    s = world.run.summaries[DAY_A.isoformat()]
    assert (s.predictions, s.impressions, s.unlabelled, s.clicks) == (10, 6, 4, 3)
    assert s.ctr == pytest.approx(0.5) and s.calibration == pytest.approx(0.7)
    assert s.log_loss == pytest.approx(ll([(1, .2), (0, .4), (0, .1), (1, .5), (0, .3), (1, .6)]))
    assert s.mature and s.auc_by_version == {"1": pytest.approx(7 / 9)}
    # across versions: day B's union log-loss is the impression-weighted mean
    # the generator's truth for the same six rows
    truth = [(1, .5), (0, .2), (0, .1), (1, .6), (0, .2), (1, .7)]
    assert s.best_possible_log_loss == pytest.approx(ll(truth), rel=1e-12)
    assert f"best possible log-loss {ll(truth):.5f}" in s.line()
    b = world.run.summaries[DAY_B.isoformat()]
    assert b.log_loss == pytest.approx((-math.log(0.3) - math.log(0.95)) / 2)
    assert not b.mature and "NOT mature" in b.line()
    assert b.best_possible_log_loss is None  # no truth for day B's impressions


def test_one_commit_partitions_and_export(world, spark, table):
    from delta.tables import DeltaTable

    from monitoring import export, tables

    path = world.settings.table_path(tables.METRICS)
    history = DeltaTable.forPath(spark, path).history().collect()
    # the world's two days went in as one commit (later commits are single-day re-runs)
    first = [h for h in history if h.version == world.run.metrics_version][0]
    assert first.operation == "WRITE" and "2026-03-02" in first.operationParameters["predicate"] \
        and "2026-03-03" in first.operationParameters["predicate"]
    assert sorted({r["date"] for r in table}) == [DAY_A, DAY_B]
    for day in (DAY_A, DAY_B):  # a day's rows come from one run
        assert len({r["run_id"] for r in table if r["date"] == day}) == 1
    exported = export.load(world.settings, tables.METRICS)
    assert exported.num_rows == len(table) == world.run.metrics.rows.num_rows
    folder = export.export_dir(world.settings) / tables.METRICS
    assert sorted(p.name for p in folder.iterdir()) == [f"date={DAY_A.isoformat()}", f"date={DAY_B.isoformat()}"]
    # `ctr dashboard --refresh`: the export rebuilt from Delta holds the same rows
    before = sorted(map(str, exported.to_pylist()))
    counts = export.refresh(spark, world.settings)
    assert counts[tables.METRICS] == len(table)
    assert sorted(map(str, export.load(world.settings, tables.METRICS).to_pylist())) == before
    assert counts[tables.ALERTS] == export.load(world.settings, tables.ALERTS).num_rows > 0
