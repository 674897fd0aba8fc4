"""The ad-log generator: layout, OpenRTB shape, faults, clicks, ground truth, determinism.

Every check reads the files the generator wrote, the way the ingest will, and
classifies lines independently of the generator's own bookkeeping.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import shared_data
from shared.openrtb import MappingError, impression_fields
from synthetic import truth as tm
from synthetic.config import FAULT_KINDS, GeneratorConfig
from synthetic.frame import generate_frame
from synthetic.logs import generate_logs

CFG = GeneratorConfig(
    days=2, impressions_per_day=3000, seed=7, drift_day=1,
    n_users=3000, n_sites=200, n_publishers=80, n_advertisers=30, n_segments=60, user_zipf_offset=3.0,
    duplicate_rate=0.02, truncated_rate=0.005, invalid_json_rate=0.005, missing_id_rate=0.005,
    bad_timestamp_rate=0.005, wrong_type_rate=0.005,
    late_click_share=0.3, base_ctr=0.03,
)
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HOUR_FILE_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})\.(jsonl|parquet)$")


def _parse_ts(value) -> datetime | None:
    if not isinstance(value, str) or not TS_RE.match(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _classify(line: bytes):
    """(kind, record, fields): kind is 'ok' or one of FAULT_KINDS."""
    try:
        rec = json.loads(line)
    except ValueError:
        return ("invalid_json" if line.endswith(b"}") else "truncated"), None, None
    if "impression_id" not in rec:
        return "missing_impression_id", rec, None
    when = _parse_ts(rec.get("timestamp"))
    if when is None:
        return "bad_timestamp", rec, None
    req = rec["bid_request"]
    imp = next(i for i in req["imp"] if i["id"] == rec["imp_id"])
    try:
        fields = impression_fields(req, imp, rec["ad"], when)
    except MappingError as exc:
        assert exc.reason == "wrong_type", exc
        return "wrong_type", rec, None
    return "ok", rec, fields


def _hour_files(out: Path, kind: str) -> list[Path]:
    files = sorted((out / kind).glob("date=*/hour=*.*"))
    for f in files:
        assert HOUR_FILE_RE.match(f"{f.parent.name}/{f.name}"), f
    return files


def _file_hour(path: Path) -> datetime:
    day = path.parent.name.split("=")[1]
    hour = int(path.name.split("=")[1].split(".")[0])
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "raw"
    summary = generate_logs(CFG, out)
    manifest = json.loads((out / "manifest.json").read_text())
    lines = []  # (file, line)
    for f in _hour_files(out, "impressions"):
        assert f.suffix == ".jsonl"
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n")
        lines += [(f, ln) for ln in data.split(b"\n")[:-1]]
    classified = [(f, ln, *_classify(ln)) for f, ln in lines]
    truth = {}
    for f in _hour_files(out, "truth"):
        t = pq.read_table(f)
        assert t.schema.field("impression_id").type == "string"
        assert t.schema.field("p_true").type == "double"
        ids, ps = t.column("impression_id").to_pylist(), t.column("p_true").to_pylist()
        for i, p in zip(ids, ps):
            assert i not in truth
            truth[i] = (p, _file_hour(f))
    clicks = []
    for f in _hour_files(out, "clicks"):
        for ln in f.read_bytes().split(b"\n")[:-1]:
            rec = json.loads(ln)
            clicks.append((f, rec))
    model = tm.load(out / "truth" / "model.json")
    return dict(out=out, summary=summary, manifest=manifest, lines=classified, truth=truth,
                clicks=clicks, model=model)


def _ok(gen):
    """First occurrence of each cleanly parsed impression: {id: (record, fields, file)}."""
    out = {}
    for f, _, kind, rec, fields in gen["lines"]:
        if kind == "ok" and rec["impression_id"] not in out:
            out[rec["impression_id"]] = (rec, fields, f)
    return out


# ------------------------------------------------------------------- layout and manifest

def test_layout_and_manifest(gen):
    out, m = gen["out"], gen["manifest"]
    hours = CFG.days * 24
    assert len(_hour_files(out, "impressions")) == hours
    assert len(_hour_files(out, "truth")) == hours
    assert (out / "truth" / "model.json").is_file()
    assert m["parameters"]["seed"] == CFG.seed and m["parameters"]["days"] == CFG.days
    assert m["parameters"]["start_date"] == "2026-11-01" and m["parameters"]["impressions_per_day"] == 3000
    assert m["counts"]["impressions"] == CFG.days * CFG.impressions_per_day == len(gen["truth"])
    assert m["counts"]["lines_written"] == len(gen["lines"])
    assert m["time_range"] == {"start": "2026-11-01T00:00:00.000Z", "end": "2026-11-03T00:00:00.000Z", "hours": 48}
    # impressions are filed by their own hour, and every timestamp falls in that hour or (a duplicate) earlier
    for f, _, kind, rec, _ in gen["lines"]:
        if kind == "ok":
            t = _parse_ts(rec["timestamp"])
            h = _file_hour(f)
            assert t < h + timedelta(hours=1) and t >= h - timedelta(hours=3)


def test_hour_of_day_curve(gen):
    per_hour = Counter()
    for i, (_, when) in gen["truth"].items():
        per_hour[when.hour] += 1
    volumes = np.array([per_hour[h] for h in range(24)])
    assert volumes.min() > 0
    assert volumes.max() / volumes.min() > 1.5  # a daily traffic curve, not flat


# ------------------------------------------------------------------- OpenRTB shape

def _shape(obj, prefix=""):
    """{path: kind} for every leaf and object of a JSON value (arrays: their first element)."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out[prefix + k] = "object" if isinstance(v, dict) else "array" if isinstance(v, list) else (
                "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__)
            out.update(_shape(v, prefix + k + "."))
    elif isinstance(obj, list) and obj:
        out.update(_shape(obj[0], prefix + "[]."))
    return out


def test_bid_requests_have_the_shape_of_the_openrtb_examples(gen):
    examples = {p.stem: json.loads(p.read_text()) for p in sorted(shared_data("openrtb").glob("*.json"))}
    assert {"simple-banner", "mobile", "expandable-creative"} <= set(examples)
    ok = _ok(gen)
    requests = [rec["bid_request"] for rec, _, _ in ok.values()]
    site_reqs = [r for r in requests if "site" in r]
    app_reqs = [r for r in requests if "app" in r]
    assert site_reqs and app_reqs and all(("site" in r) != ("app" in r) for r in requests)

    # every path (and its JSON kind) the examples carry for site / app / imp / banner / user, ours carry too
    def required(example, keep):
        return {p: k for p, k in _shape(example).items() if p.split(".")[0] in keep and "segment" not in p
                and not p.startswith(("imp.[].iframebuster", "imp.[].banner.battr", "imp.[].banner.expdir",
                                      "imp.[].banner.btype", "imp.[].banner.api", "user.data", "user.buyeruid"))}

    def check(reqs, need):
        for r in reqs:
            have = _shape(r)
            missing = {p: k for p, k in need.items() if have.get(p) != k}
            assert not missing, f"request {r['id']} lacks {missing}"

    banner_site = [r for r in site_reqs if "banner" in r["imp"][0]]
    banner_app = [r for r in app_reqs if "banner" in r["imp"][0]]
    assert banner_site and banner_app
    check(banner_site, required(examples["simple-banner"], {"id", "at", "imp", "site", "user"}))
    # mobile.json's device keys except the carrier name, which the generator does not model
    check(banner_app, {p: k for p, k in required(examples["mobile"], {"id", "at", "imp", "app", "device", "user"}).items()
                       if p != "device.carrier"})

    for r in requests:
        assert len(r["imp"]) == 1
        imp = r["imp"][0]
        assert isinstance(imp["id"], str) and isinstance(imp["tagid"], str)
        assert isinstance(imp["bidfloor"], float) and imp["bidfloor"] > 0
        formats = [k for k in ("banner", "video", "native") if k in imp]
        assert len(formats) == 1
        if "banner" in imp or "video" in imp:
            obj = imp.get("banner") or imp.get("video")
            assert all(isinstance(obj[k], int) for k in ("w", "h", "pos"))
        else:
            assert isinstance(imp["native"]["request"], str)
            json.loads(imp["native"]["request"])
        inv = r.get("site") or r["app"]
        assert isinstance(inv["id"], str) and isinstance(inv["publisher"]["id"], str)
        dev = r["device"]
        for k in ("ua", "os", "make", "model"):
            assert isinstance(dev[k], str) and dev[k]
        assert dev["devicetype"] in (2, 3, 4, 5) and dev["connectiontype"] in (1, 2, 3, 6, 7)
        assert re.fullmatch(r"[A-Z]{3}", dev["geo"]["country"]) and dev["geo"]["region"]
        assert isinstance(r["user"]["id"], str) and len(r["user"]["id"]) == 40
        for entry in r["user"].get("data", []):
            assert entry["id"] and entry["segment"] and all(isinstance(s["id"], str) for s in entry["segment"])
    # the user.data segments are multi-valued: some users carry none, some several
    n_segs = Counter(len(f["user_segments"] or []) for _, f, _ in ok.values())
    assert n_segs[0] > 0 and sum(v for k, v in n_segs.items() if k >= 3) > 0
    # a site/app mix, every format, CTV video, and device types
    fields = [f for _, f, _ in ok.values()]
    assert {f["ad_format"] for f in fields} == {"banner", "video", "native"}
    assert {f["device_type"] for f in fields} == {2, 3, 4, 5}
    assert {f["creative_type"] for f in fields} == {"banner", "video", "native", "rich_media"}
    compatible = {"banner": {"banner", "rich_media"}, "video": {"video"}, "native": {"native"}}
    assert all(f["creative_type"] in compatible[f["ad_format"]] for f in fields)
    assert all(f["inventory_type"] == "site" for f in fields if f["device_type"] == 2)


def test_record_envelope(gen):
    for _, _, kind, rec, _ in gen["lines"]:
        if kind != "ok":
            continue
        assert set(rec) == {"impression_id", "timestamp", "bid_request", "imp_id", "ad"}
        assert rec["imp_id"] == rec["bid_request"]["imp"][0]["id"]
        assert set(rec["ad"]) == {"advertiser_id", "campaign_id", "creative_id", "creative_type"}
        assert all(isinstance(v, str) for v in rec["ad"].values())
        assert "p_true" not in json.dumps(rec) and "click" not in rec  # truth never leaks into the logs


# ------------------------------------------------------------------- faults

def test_fault_counts_match_the_manifest(gen):
    kinds = Counter(kind for _, _, kind, _, _ in gen["lines"])
    m = gen["manifest"]["counts"]
    for k in FAULT_KINDS:
        assert kinds[k] == m["faulty_lines"][k], k
        assert kinds[k] > 0, f"no {k} lines at rate 0.5%"
    ok_ids = Counter(rec["impression_id"] for _, _, kind, rec, _ in gen["lines"] if kind == "ok")
    dups = sum(c - 1 for c in ok_ids.values())
    assert dups == m["duplicates"] > 0
    assert kinds["ok"] == m["impressions"] - m["faulty_lines_total"] + m["duplicates"]
    assert len(ok_ids) == m["clean_unique_impressions"]
    # rates are real proportions of the generated impressions (binomial, generous bounds)
    n = m["impressions"]
    for k, rate in zip(FAULT_KINDS, CFG.line_fault_rates):
        assert abs(kinds[k] - n * rate) < 5 * math.sqrt(n * rate) + 5, k
    assert abs(dups - n * CFG.duplicate_rate) < 5 * math.sqrt(n * CFG.duplicate_rate) + 5
    assert sum(m["wrong_type_fields"].values()) == m["faulty_lines"]["wrong_type"]


def test_duplicates_are_identical_lines_some_in_a_later_hour(gen):
    by_id = {}
    later = 0
    for f, line, kind, rec, _ in gen["lines"]:
        if kind != "ok":
            continue
        iid = rec["impression_id"]
        if iid in by_id:
            first_file, first_line = by_id[iid]
            assert line == first_line
            later += _file_hour(f) > _file_hour(first_file)
        else:
            by_id[iid] = (f, line)
    assert later > 0


def test_faulty_lines_still_belong_to_generated_impressions(gen):
    truth = gen["truth"]
    for _, line, kind, rec, _ in gen["lines"]:
        if kind in ("bad_timestamp", "wrong_type"):
            assert rec["impression_id"] in truth
        if kind == "truncated":
            assert not line.endswith(b"}") and len(line) > 10


def test_no_faults(tmp_path):
    cfg = dataclasses.replace(CFG, days=1, impressions_per_day=1500).without_faults()
    s = generate_logs(cfg, tmp_path / "raw")
    kinds = Counter()
    ids = Counter()
    for f in _hour_files(tmp_path / "raw", "impressions"):
        for ln in f.read_bytes().split(b"\n")[:-1]:
            kind, rec, _ = _classify(ln)
            kinds[kind] += 1
            ids[rec["impression_id"]] += 1
    assert kinds == {"ok": 1500} and max(ids.values()) == 1
    assert s.duplicates == 0 and sum(s.faulty_lines.values()) == 0 and s.lines_written == 1500


# ------------------------------------------------------------------- ground truth

def test_truth_is_a_function_of_the_mapped_fields(gen):
    """Map every clean record through impression_fields and recompute p_true from model.json."""
    model, truth = gen["model"], gen["truth"]
    ok = _ok(gen)
    assert len(ok) > 0.9 * len(truth)
    worst = 0.0
    for iid, (rec, fields, _) in ok.items():
        p = tm.p_true(model, fields, _parse_ts(rec["timestamp"]))
        worst = max(worst, abs(p - truth[iid][0]))
    assert worst < 1e-12
    # the stored truth is not trivial: it varies a lot and sits around the configured CTR
    ps = np.array([truth[i][0] for i in ok])
    logits = np.log(ps / (1 - ps))
    assert logits.std() > 0.5
    pre = [truth[i][0] for i, (rec, _, _) in ok.items() if not tm.is_drifted(model, _parse_ts(rec["timestamp"]))]
    assert 0.02 < float(np.mean(pre)) < 0.04


def test_truth_model_uses_the_requested_effects_and_interactions(gen):
    model = gen["model"]
    for f in ("site_id", "advertiser_id", "creative_id", "device_type", "ad_size", "ad_pos", "os", "country",
              "hour_of_day", "user_segments"):
        assert model.effects.get(f), f
    assert {i.fields for i in model.interactions} >= {
        ("site_id", "advertiser_id"), ("device_type", "creative_type"), ("hour_of_day", "country")}
    # the model round-trips through its JSON form
    assert tm.from_dict(json.loads(json.dumps(tm.to_dict(model)))) == model
    # changing one raw field changes the truth: it is read from the fields, not from hidden state
    _, fields, _ = next(iter(_ok(gen).values()))
    when = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    other_site = next(s for s in model.effects["site_id"] if s != fields["site_id"])
    assert tm.p_true(model, {**fields, "site_id": other_site}, when) != tm.p_true(model, fields, when)
    assert tm.p_true(model, {**fields, "hour_of_day": (fields["hour_of_day"] + 12) % 24}, when) != \
        tm.p_true(model, fields, when)


def test_truth_model_rejects_fields_the_mapping_does_not_produce():
    with pytest.raises(ValueError, match="impression_fields"):
        tm.TruthModel(base_logit=-4.0, effects={"site": {"x": 1.0}})


def test_drift_changes_the_truth(gen):
    model, truth = gen["model"], gen["truth"]
    assert model.drift is not None and model.drift.day == 1 and model.drift.date.isoformat() == "2026-11-02"
    undrifted = dataclasses.replace(model, drift=None)
    before, after = datetime(2026, 11, 1, 12, tzinfo=timezone.utc), datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    changed = same = 0
    for n, (iid, (rec, fields, _)) in enumerate(_ok(gen).items()):
        when = _parse_ts(rec["timestamp"])
        stored = truth[iid][0]
        if when.date() < model.drift.date:
            assert tm.p_true(undrifted, fields, when) == pytest.approx(stored, abs=1e-12)
        else:
            if abs(tm.p_true(undrifted, fields, when) - stored) > 1e-9:
                changed += 1
            else:
                same += 1
        if n < 500:  # the same impression shown before and after the drift date gets a different truth
            assert tm.p_true(model, fields, before) != tm.p_true(model, fields, after)
    assert changed > 0 and changed + same > 0
    assert changed / (changed + same) > 0.9  # base shift plus changed effects: nearly every impression moves
    m = gen["manifest"]["truth"]
    assert m["drift_date"] == "2026-11-02"
    assert m["mean_p_true_before_drift"] != m["mean_p_true_after_drift"]
    # the drifted creatives' effects moved, on average down (creative fatigue)
    cre = model.drift.effects["creative_id"]
    assert len(cre) > 0.2 * len(model.effects["creative_id"])
    assert np.mean([cre[c] - model.effects["creative_id"][c] for c in cre]) < -0.1


# ------------------------------------------------------------------- clicks

def test_clicks(gen):
    m = gen["manifest"]["counts"]
    truth, clicks = gen["truth"], gen["clicks"]
    assert len(clicks) == m["clicks"] > 0
    ok = _ok(gen)
    delays = []
    later_hour = later_day = beyond = 0
    for f, rec in clicks:
        assert set(rec) == {"impression_id", "click_time"}
        t = _parse_ts(rec["click_time"])
        assert t is not None
        h = _file_hour(f)
        assert h <= t < h + timedelta(hours=1), "clicks are filed by their own time"
        assert rec["impression_id"] in truth
        if rec["impression_id"] in ok:
            imp_t = _parse_ts(ok[rec["impression_id"]][0]["timestamp"])
            d = (t - imp_t).total_seconds()
            assert d > 0
            delays.append(d)
            later_hour += t.replace(minute=0, second=0, microsecond=0) > imp_t.replace(minute=0, second=0, microsecond=0)
            later_day += t.date() > imp_t.date()
            beyond += d > CFG.attribution_window_hours * 3600
    assert len(delays) == m["clicks"] - m["clicks_on_faulty_impressions"]
    assert later_hour > 0 and later_day > 0 and beyond > 0
    assert later_hour <= m["clicks_later_hour"] and beyond <= m["clicks_beyond_window"]
    delays = np.array(delays)
    assert np.median(delays) < 600 and delays.max() > 24 * 3600  # most clicks quick, a long tail
    assert m["clicks_after_range"] > 0
    assert max(_file_hour(f) for f, _ in clicks) >= datetime(2026, 11, 3, tzinfo=timezone.utc)
    # clicks are Bernoulli(p_true): the count agrees with the sum of the truth
    ps = np.array([p for p, _ in truth.values()])
    assert abs(len(clicks) - ps.sum()) < 4 * math.sqrt((ps * (1 - ps)).sum())
    assert len({c["impression_id"] for _, c in clicks}) == len(clicks)


def test_generate_frame_is_what_generate_logs_writes(gen):
    """The in-process rows: the same impressions, raw fields, truth and clicks as the files."""
    frame = generate_frame(CFG)
    assert frame.num_rows == gen["summary"].impressions == len(gen["truth"])
    rows = {r["impression_id"]: r for r in frame.to_pylist()}
    assert rows.keys() == gen["truth"].keys()
    ok = _ok(gen)
    assert len(ok) > 0.9 * len(rows)
    for iid, (rec, fields, _) in ok.items():
        r = rows[iid]
        assert {k: r[k] for k in fields} == fields, iid
        assert r["event_time"] == _parse_ts(rec["timestamp"])
    assert all(r["p_true"] == gen["truth"][iid][0] for iid, r in rows.items())
    clicked = {c["impression_id"] for _, c in gen["clicks"]}
    assert {iid for iid, r in rows.items() if r["clicked"]} == clicked
    assert frame.column("event_time").to_pylist() == sorted(frame.column("event_time").to_pylist())


# ------------------------------------------------------------------- popularity

def test_zipf_skew(gen):
    """A few big sites, advertisers and users, and a long tail: far from uniform popularity."""
    fields = [f for _, f, _ in _ok(gen).values()]
    n = len(fields)

    def top_share(key, frac):
        counts = sorted(Counter(f[key] for f in fields).values(), reverse=True)
        k = max(1, int(len(counts) * frac))
        return sum(counts[:k]) / n, len(counts)

    share, distinct = top_share("site_id", 0.05)
    assert share > 0.25 and distinct > 150  # the top 5% of sites: 5x their uniform share
    share, distinct = top_share("advertiser_id", 0.1)
    assert share > 0.3 and distinct == CFG.n_advertisers  # top 10%: 3x their uniform share
    share, distinct = top_share("user_id", 0.01)
    assert share > 0.08 and distinct > 1000
    singletons = sum(1 for c in Counter(f["user_id"] for f in fields).values() if c == 1)
    assert singletons > 0.2 * distinct


# ------------------------------------------------------------------- determinism, CLI

def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    cfg = dataclasses.replace(CFG, days=2, impressions_per_day=800)
    generate_logs(cfg, tmp_path / "a")
    generate_logs(cfg, tmp_path / "b")
    generate_logs(dataclasses.replace(cfg, seed=8), tmp_path / "c")
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a.keys() == b.keys() and len(a) > 96
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    assert a["impressions/date=2026-11-01/hour=12.jsonl"] != c["impressions/date=2026-11-01/hour=12.jsonl"]


def test_refuses_to_mix_with_existing_logs(tmp_path):
    cfg = dataclasses.replace(CFG, days=1, impressions_per_day=200)
    generate_logs(cfg, tmp_path)
    with pytest.raises(FileExistsError):
        generate_logs(cfg, tmp_path)
    (tmp_path / "unrelated.txt").write_text("kept")
    generate_logs(dataclasses.replace(cfg, start_date=datetime(2026, 12, 1).date()), tmp_path, overwrite=True)
    assert (tmp_path / "unrelated.txt").read_text() == "kept"
    assert [p.name for p in (tmp_path / "impressions").iterdir()] == ["date=2026-12-01"]


def test_config_validation():
    with pytest.raises(ValueError):
        GeneratorConfig(days=0)
    with pytest.raises(ValueError):
        GeneratorConfig(duplicate_rate=1.5)
    assert GeneratorConfig(days=7).effective_drift_day == 3
    assert GeneratorConfig(days=1).effective_drift_day == 1
    with pytest.raises(ValueError, match="interaction_scale"):
        GeneratorConfig(interaction_scale=-1.0)


def test_cli_generate(tmp_path, settings, capsys):
    from synthetic import cli as cli_generate
    from shared.errors import CommandError

    parser = argparse.ArgumentParser(prog="ctr")
    cli_generate.register(parser.add_subparsers(dest="command"))
    argv = ["generate", "--days", "1", "--per-day", "300", "--seed", "3", "--users", "500", "--sites", "60",
            "--start-date", "2026-10-05", "--drift-day", "0", "--no-faults"]
    args = parser.parse_args(argv)
    assert args.func(args, settings) == 0
    out = capsys.readouterr().out
    assert "impressions" in out and "300" in out and str(settings.raw_dir) in out
    m = json.loads((settings.raw_dir / "manifest.json").read_text())
    assert m["parameters"]["start_date"] == "2026-10-05" and m["parameters"]["seed"] == 3
    assert m["counts"]["faulty_lines_total"] == 0 and m["counts"]["duplicates"] == 0
    assert m["truth"]["drift_date"] == "2026-10-05"
    with pytest.raises(CommandError, match="--overwrite"):
        args.func(parser.parse_args(argv), settings)
    args = parser.parse_args(argv + ["--out", str(tmp_path / "elsewhere")])
    assert args.func(args, settings) == 0 and (tmp_path / "elsewhere" / "manifest.json").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--start-date", "yesterday"])
