"""Drift: PSI on hand-computed histograms, the Spark path's bins and PSI on the world's data,
and parameter drift between real model directories (fitted, saved and loaded with the
training code), exact by index for one spec and by feature name across specs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitoring.drift import PSI_FLOOR, compare_models, numeric_labels, psi
from monitoring_support import DAY_A, DAY_B, fit_dir


def test_psi_hand_computed():
    # shares .5/.3/.2 -> .4/.4/.2: 0.1 ln(1.25) + 0.1 ln(4/3) + 0
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3)
    assert expected == pytest.approx(0.0510826, abs=1e-7)
    assert psi([50, 30, 20], [40, 40, 20]) == pytest.approx(expected, rel=1e-12)
    assert psi([0.5, 0.3, 0.2], [4, 4, 2]) == pytest.approx(expected, rel=1e-12)  # counts or shares
    assert psi([5, 5], [5, 5]) == 0.0
    # an emptied bin is floored: all mass moved from bin 0 to bin 1
    moved = 2 * (1 - PSI_FLOOR) * math.log(1 / PSI_FLOOR)
    assert psi([1, 0], [0, 1]) == pytest.approx(moved)
    assert math.isnan(psi([0, 0], [1, 1]))
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_numeric_bin_labels():
    assert numeric_labels([0.1, 0.5]) == ["<= 0.1", "(0.1, 0.5]", "> 0.5"]
    assert numeric_labels([]) == ["all"]


def test_calendar_fields_against_the_same_weekday():
    """A live day is one weekday: day_of_week and hour_of_day are compared with the reference's
    rows of that weekday (hours: every day's when the weekday is absent), never with the whole
    multi-day window (where a Saturday scores PSI ~17 against Sunday..Wednesday)."""
    from datetime import datetime, timezone

    from monitoring.drift import FieldProfile, ReferenceProfile, drift_rows
    from monitoring.tables import MISSING, OTHER

    weekdays = ["6", "0", "1", "2"]  # Sunday..Wednesday, 24 rows each, one per hour
    cal = {"day_of_week": {d: {d: 24} for d in weekdays},
           "hour_of_day": {d: {str(h): 1 for h in range(24)} for d in weekdays}}
    fields = {"day_of_week": FieldProfile("categorical", weekdays + [OTHER, MISSING], [24] * 4 + [0, 0]),
              "hour_of_day": FieldProfile("categorical", [str(h) for h in range(20)] + [OTHER, MISSING],
                                          [4] * 20 + [16, 0])}
    profile = ReferenceProfile("obs [2026-11-01, 2026-11-05)", 96, fields, cal)
    hours = {str(h): 10 for h in range(24)}
    counts = {("1", "2026-11-07"): {"day_of_week": {"5": 240}, "hour_of_day": hours},  # Saturday
              ("1", "2026-11-08"): {"day_of_week": {"6": 216, "0": 24}, "hour_of_day": hours}}  # Sunday, 10 % wrong
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    rows = {(r["date"].isoformat(), r["field"]): r for r in drift_rows(profile, counts, "run", now)}
    sat = rows[("2026-11-07", "day_of_week")]
    assert sat["psi"] is None and sat["reference_rows"] == 0 and sat["live_rows"] == 240
    assert sat["reference"] == "obs [2026-11-01, 2026-11-05) no Saturday in the reference: not compared"
    assert rows[("2026-11-07", "hour_of_day")]["psi"] == 0.0
    assert rows[("2026-11-07", "hour_of_day")]["reference"].endswith("all weekdays (no Saturday in the reference)")
    sun = rows[("2026-11-08", "day_of_week")]
    # against Sunday's rows: a client sending the wrong weekday for 10 % of its traffic shows
    assert sun["bins"] == ["6", OTHER, MISSING] and sun["reference_share"] == [1.0, 0.0, 0.0]
    assert sun["psi"] == pytest.approx(psi([24, 0, 0], [216, 24, 0])) and sun["psi"] > 0.2
    assert rows[("2026-11-08", "hour_of_day")]["psi"] == 0.0
    assert rows[("2026-11-08", "hour_of_day")]["reference_rows"] == 24
    # the whole-window comparison this replaces
    assert psi([24] * 4 + [0, 0], [0] * 4 + [240, 0]) > 15
    # a profile cached before calendar counts were kept: the plain comparison
    old = ReferenceProfile(profile.label, 96, fields)
    assert drift_rows(old, counts, "run", now)[0]["reference"] == profile.label


@pytest.mark.spark
def test_feature_drift_rows_through_spark(world):
    rows = {(r["model_version"], r["date"], r["field"]): r for r in world.run.feature_drift_rows}
    site = rows[("1", DAY_A, "site_id")]
    assert site["bins"] == ["s1", "s2", "s3", "__other__", "__missing__"]
    assert site["reference_share"] == pytest.approx([0.5, 0.3, 0.2, 0, 0])
    assert site["live_share"] == pytest.approx([0.4, 0.4, 0.2, 0, 0])
    assert site["psi"] == pytest.approx(0.1 * math.log(1.25) + 0.1 * math.log(4 / 3), rel=1e-9)
    assert (site["reference_rows"], site["live_rows"], site["kind"]) == (10, 10, "categorical")
    assert site["reference"] == "observations@v0 [2026-03-01, 2026-03-02)"
    # numeric: reference deciles of 0.1..1.0 are the edges; every live bid floor (0.5) is in (0.4, 0.5]
    floor = rows[("1", DAY_A, "bidfloor")]
    assert floor["bins"] == numeric_labels([k / 10 for k in range(1, 10)]) + ["__missing__"]
    assert floor["reference_share"] == pytest.approx([0.1] * 10 + [0])
    hot = floor["bins"].index("(0.4, 0.5]")
    assert floor["live_share"] == pytest.approx([1.0 if i == hot else 0 for i in range(11)])
    expected = 9 * (PSI_FLOOR - 0.1) * math.log(PSI_FLOOR / 0.1) + (1 - 0.1) * math.log(1 / 0.1)
    assert floor["psi"] == pytest.approx(expected, rel=1e-9)
    # multivalued: one occurrence per element; unchanged here
    assert rows[("1", DAY_A, "user_segments")]["psi"] == 0.0
    # day B: device_type arrived as the string "2" (not in the reference's top values) -> __other__
    dev = rows[("1", DAY_B, "device_type")]
    assert dev["bins"] == ["1", "__other__", "__missing__"] and dev["live_share"] == pytest.approx([0, 1, 0])
    assert dev["psi"] == pytest.approx(2 * (1 - PSI_FLOOR) * math.log(1 / PSI_FLOOR))
    assert ("2", DAY_B, "site_id") in rows  # each live version gets its own rows


# -- parameter drift ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("param_drift")
    a, recs = fit_dir(tmp, "a", 18, False)
    b, _ = fit_dir(tmp, "b", 18, True)
    c, _ = fit_dir(tmp, "c", 19, True)
    return a, b, c, recs[:300]


def dense(m):
    w = np.zeros(m.n_features)
    w[m.indices] = m.weights
    return w


def test_param_drift_same_spec_is_exact(models):
    a, b, _, recs = models
    same = compare_models(a, a, recs)
    assert (same["l2_change"], same["appeared_share"], same["vanished_share"]) == (0.0, 0.0, 0.0)
    assert same["top_features"] == [] and same["basis"] == "index"
    d = compare_models(a, b, recs)
    wa, wb = dense(a), dense(b)
    assert d["l2_change"] == pytest.approx(np.linalg.norm(wb - wa), rel=1e-12)
    assert d["l2_from"] == pytest.approx(np.linalg.norm(wa), rel=1e-12)
    assert d["relative_l2_change"] == pytest.approx(np.linalg.norm(wb - wa) / np.linalg.norm(wa))
    assert d["intercept_change"] == pytest.approx(b.intercept - a.intercept)
    na, nb = set(a.indices.tolist()), set(b.indices.tolist())
    assert d["appeared_share"] == pytest.approx(len(nb - na) / len(nb))
    assert d["vanished_share"] == pytest.approx(len(na - nb) / len(na))
    top = d["top_features"][0]
    # flipping site s0's effect moves its weight most; the name comes from inverting the hash
    assert "site_id=s0" in top["name"]
    assert top["delta"] == pytest.approx(wb[top["index"]] - wa[top["index"]])
    assert abs(top["delta"]) == pytest.approx(np.abs(wb - wa).max())


def test_param_drift_across_specs_compares_by_name(models):
    from shared.featurize import Featurizer, FeatureSpec

    a, _, c, recs = models
    d = compare_models(a, c, recs)
    assert d["basis"] == "keys" and "specs differ" in d["note"]
    fa = Featurizer(FeatureSpec.from_toml(a.spec_text))
    fc = Featurizer(FeatureSpec.from_toml(c.spec_text))
    top = d["top_features"][0]
    assert top["name"] == "site_id=s0"
    assert top["weight_from"] == pytest.approx(a.dense_weights[fa.index("site_id=s0")])
    assert top["weight_to"] == pytest.approx(c.dense_weights[fc.index("site_id=s0")])
    assert top["index"] == fc.index("site_id=s0")
    none = compare_models(a, c, [])
    assert none["basis"] == "none" and none["l2_change"] is None
