"""Realistic ad log files, as a bidder and a click tracker write them, faults and duplicates included.

``generate_logs(config, out_dir)`` writes, for ``config.days`` UTC days from
``config.start_date``:

- ``impressions/date=YYYY-MM-DD/hour=HH.jsonl``: one JSON object per line,
  ``{"impression_id", "timestamp" (ISO-8601 UTC, ms, Z), "bid_request" (OpenRTB 2.6
  BidRequest with one imp), "imp_id", "ad" {advertiser_id, campaign_id, creative_id,
  creative_type}}``, plus injected faults (duplicates, truncated / invalid JSON lines,
  missing ids, unparseable timestamps, wrong types);
- ``clicks/date=YYYY-MM-DD/hour=HH.jsonl``: ``{"impression_id", "click_time"}`` filed by
  the click's own time (heavy-tailed delays: some land hours or days later, some
  after the attribution window, some after the generated range);
- ``truth/date=YYYY-MM-DD/hour=HH.parquet`` (``impression_id``, ``p_true``) for every
  generated impression, and ``truth/model.json`` (see :mod:`synthetic.truth`);
- ``manifest.json``: parameters and counts, written last.

Clicks are Bernoulli draws from a logistic ground truth defined over the raw
field values of :func:`shared.openrtb.impression_fields`
(:func:`synthetic.effects.build_truth_model` documents its effects and interactions).
Output is a pure function of the config: the same config gives the same bytes.
:func:`synthetic.frame.generate_frame` gives the same impressions in process.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no types; types-tqdm is not a dev dependency

from synthetic.config import FAULT_KINDS, GeneratorConfig
from synthetic.effects import TruthArrays, build_truth_model
from synthetic.hours import HOUR_MS, draw_hour, hour_counts
from synthetic.truth import to_dict
from synthetic.vocabulary import FORMAT_NAMES, SEGMENT_PROVIDERS
from synthetic.world import Draws, World, build_world

try:  # orjson is a declared dependency; json keeps the generator usable without it
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

    JSON_BACKEND = "orjson"
except ImportError:  # pragma: no cover - exercised only without orjson installed
    import json as _json

    def _dumps(obj: Any) -> bytes:
        return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def _loads(data: bytes) -> Any:
        return _json.loads(data)

    JSON_BACKEND = "json"

MANIFEST_VERSION = 1
# The manifest's "generator" label, from before the move to ``synthetic``; kept so the output stays byte-identical.
GENERATOR_LABEL = "feature_store.generator"


@dataclass
class GenerationSummary:
    """What :func:`generate_logs` wrote: paths, counts and timings."""

    out_dir: Path
    manifest_path: Path
    model_path: Path
    start: str
    end: str
    impressions: int
    lines_written: int
    duplicates: int
    faulty_lines: dict[str, int]
    clicks: int
    clicks_beyond_window: int
    clicks_later_hour: int
    clicks_later_day: int
    clicks_after_range: int
    mean_p_true: float
    drift_date: str
    impression_files: int
    click_files: int
    truth_files: int
    bytes_written: int
    elapsed_seconds: float = field(default=0.0)

    @property
    def ctr(self) -> float:
        """Clicks per generated impression."""
        return self.clicks / self.impressions if self.impressions else 0.0


# ------------------------------------------------------------------- faults

def _truncate(line: bytes, rng: np.random.Generator) -> bytes:
    cut = int(rng.integers(max(1, len(line) // 5), len(line) - 1))
    while cut > 1 and line[cut - 1:cut] in (b"}", b"]"):
        cut -= 1  # never end on a closing bracket, so a reader can tell truncation from other damage
    return line[:cut]


def _invalid_json(line: bytes, rng: np.random.Generator) -> bytes:
    variant = int(rng.integers(0, 3))
    if variant == 0:  # trailing comma, as a hand-rolled writer emits
        return line[:-1] + b",}"
    if variant == 1:  # unquoted first key
        return b"{impression_id:" + line[len(b'{"impression_id":'):]
    # a raw control character inside a string (JSON requires it escaped)
    return line[:19] + b"\t" + line[19:]


BAD_TIMESTAMPS = ("N/A", "", "0000-00-00T00:00:00.000Z")


def _bad_timestamp(rec: dict, rng: np.random.Generator) -> None:
    ts: str = rec["timestamp"]
    variant = int(rng.integers(0, 5))
    if variant == 0:
        rec["timestamp"] = ts[:11] + "25" + ts[13:]  # hour 25
    elif variant == 1:
        rec["timestamp"] = ts[:5] + "13" + ts[7:]  # month 13
    else:
        rec["timestamp"] = BAD_TIMESTAMPS[variant - 2]


def _wrong_type(rec: dict, rng: np.random.Generator) -> str:
    req = rec["bid_request"]
    imp = req["imp"][0]
    options = ["device.devicetype", "imp.bidfloor", "device.connectiontype", "user.data"]
    if "banner" in imp or "video" in imp:
        options.append("imp.w")
    choice = options[int(rng.integers(0, len(options)))]
    if choice == "device.devicetype":
        req["device"]["devicetype"] = str(req["device"]["devicetype"])
    elif choice == "imp.bidfloor":
        imp["bidfloor"] = f"{imp['bidfloor']:.2f}"
    elif choice == "device.connectiontype":
        req["device"]["connectiontype"] = str(req["device"]["connectiontype"])
    elif choice == "user.data":
        data = req["user"].get("data") or []
        req["user"]["data"] = {"segments": [s["id"] for e in data for s in e.get("segment", [])]}
    else:
        obj = imp["banner"] if "banner" in imp else imp["video"]
        obj["w"] = str(obj["w"])
    return choice


# ------------------------------------------------------------------- writing

def _iso_ms(ms: np.ndarray) -> list[str]:
    if len(ms) == 0:
        return []
    return [s + "Z" for s in np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()]


def _hour_path(base: Path, kind: str, hour_ms: int, suffix: str) -> Path:
    t = datetime.fromtimestamp(hour_ms / 1000, tz=timezone.utc)
    return base / kind / f"date={t:%Y-%m-%d}" / f"hour={t:%H}.{suffix}"


def _write_lines(path: Path, lines: list[bytes]) -> int:
    """Write one log file whole: under a hidden temporary name, then renamed into place, so a
    reader following the folder (``ctr ingest --stream``: Spark's file source skips names
    starting with ``.``) only ever sees finished files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(lines) + b"\n" if lines else b""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def _records(world: World, d: Draws, ids: list[str], req_ids: list[str], ts: list[str],
             kind_of_site: np.ndarray) -> Iterator[dict]:
    """Build the impression records of one batch (the hot loop: plain Python over lists)."""
    site_objs, pl_objs, pl_tag, ad_objs = world.site_objs, world.pl_objs, world.pl_tag, world.ad_objs
    fmt_key = [FORMAT_NAMES[f] for f in world.pl_format.tolist()]
    prof_fields, prof_ua = world.prof_fields, world.prof_ua
    user_ids, user_ifa, user_ip = world.user_ids, world.user_ifa, world.user_ip
    geo_objs, langs = world.geo_objs, world.country_lang
    seg_ids, seg_off, seg_val, seg_prov = world.segment_ids, world.seg_offsets, world.seg_values, world.segment_provider
    seg_objs = [{"id": s} for s in seg_ids]
    providers = [(p[0], p[1]) for p in SEGMENT_PROVIDERS]
    cur, regs = ["USD"], {"coppa": 0}
    user_prof, user_region, user_country = world.user_prof, world.user_region, world.user_country
    u_l = d.user.tolist()
    prof_l = user_prof[d.user].tolist()
    reg_l = user_region[d.user].tolist()
    cty_l = user_country[d.user].tolist()
    s0 = seg_off[d.user].tolist()
    s1 = seg_off[d.user + 1].tolist()
    seg_val_l = seg_val.tolist()
    seg_prov_l = seg_prov.tolist()
    for i, (u, s, pl, cr, ct, fl, is_app) in enumerate(zip(
            u_l, d.site.tolist(), d.placement.tolist(), d.creative.tolist(), d.conn.tolist(),
            d.floor.tolist(), kind_of_site.tolist())):
        p = prof_l[i]
        device = {"ua": prof_ua[p], "geo": geo_objs[reg_l[i]], "dnt": 0, "ip": user_ip[u], **prof_fields[p],
                  "js": 1,
                  "language": langs[cty_l[i]], "connectiontype": ct}
        if is_app:
            device["ifa"] = user_ifa[u]
        user: dict[str, Any] = {"id": user_ids[u]}
        a, b = s0[i], s1[i]
        if b > a:
            groups: dict[int, list] = {}
            for j in range(a, b):
                sv = seg_val_l[j]
                groups.setdefault(seg_prov_l[sv], []).append(seg_objs[sv])
            user["data"] = [{"id": providers[g][0], "name": providers[g][1], "segment": segs}
                            for g, segs in groups.items()]
        yield {
            "impression_id": ids[i],
            "timestamp": ts[i],
            "bid_request": {
                "id": req_ids[i],
                "at": 1,
                "tmax": 200,
                "cur": cur,
                "imp": [{"id": "1", "tagid": pl_tag[pl], "bidfloor": fl, "bidfloorcur": "USD", "secure": 1,
                         fmt_key[pl]: pl_objs[pl]}],
                ("app" if is_app else "site"): site_objs[s],
                "device": device,
                "user": user,
                "regs": regs,
            },
            "imp_id": "1",
            "ad": ad_objs[cr],
        }


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    owned = [out / "impressions", out / "clicks", out / "truth", out / "manifest.json"]
    existing = [p for p in owned if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds generated logs ({existing[0].name}); pass overwrite=True to replace them")
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_logs(config: GeneratorConfig, out_dir: str | Path, *, overwrite: bool = False,
                  progress: bool | None = False) -> GenerationSummary:
    """Write ``config.days`` days of impression, click and truth logs under ``out_dir``.

    Refuses to write into a directory that already holds generated logs unless
    ``overwrite`` (then only ``impressions/``, ``clicks/``, ``truth/`` and
    ``manifest.json`` are replaced). ``progress``: tqdm bar over hours (None: only on a tty).
    """
    t0 = time.perf_counter()
    cfg = config
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    world = build_world(cfg)
    model = build_truth_model(world, cfg)
    arrays = {False: TruthArrays(world, model, drifted=False), True: TruthArrays(world, model, drifted=True)}
    drift_date = model.drift.date if model.drift else None

    (out / "truth").mkdir(parents=True, exist_ok=True)
    model_doc = to_dict(model)
    model_doc["summary"] = {
        "base_ctr_target": cfg.base_ctr,
        "fields": sorted(set(model.effects) | {h.field for h in model.hashed}),
        "interactions": [list(i.fields) for i in model.interactions],
        "drift_changes": {k: len(v) for k, v in model.drift.effects.items()} if model.drift else {},
    }
    model_path = out / "truth" / "model.json"
    model_path.write_bytes(_dumps(model_doc))
    bytes_written = model_path.stat().st_size

    start = datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tzinfo=timezone.utc)
    start_ms = int(start.timestamp() * 1000)
    n_hours = cfg.days * 24
    end_ms = start_ms + n_hours * HOUR_MS
    window_ms = cfg.attribution_window_hours * HOUR_MS
    counts = np.concatenate([hour_counts(cfg, world, day) for day in range(cfg.days)])
    fault_cum = np.cumsum(cfg.line_fault_rates)

    n_imp = n_lines = n_dup = 0
    faults = {k: 0 for k in FAULT_KINDS}
    wrong_type_fields: dict[str, int] = {}
    n_clicks = n_beyond = n_later_hour = n_later_day = n_after_range = n_click_faulty = 0
    p_sum = {False: 0.0, True: 0.0}
    p_n = {False: 0, True: 0}
    pending_dups: dict[int, list[bytes]] = {}
    pending_clicks: dict[int, list[tuple[int, str]]] = {}
    files = {"impressions": 0, "clicks": 0, "truth": 0}

    def flush_clicks(upto_hour: int) -> None:
        nonlocal bytes_written
        for hk in sorted(k for k in pending_clicks if k < upto_hour):
            items = sorted(pending_clicks.pop(hk))
            iso = _iso_ms(np.array([c for c, _ in items], dtype=np.int64))
            lines = [_dumps({"impression_id": iid, "click_time": t}) for (_, iid), t in zip(items, iso)]
            bytes_written += _write_lines(_hour_path(out, "clicks", start_ms + hk * HOUR_MS, "jsonl"), lines)
            files["clicks"] += 1

    bar = tqdm(total=n_hours, unit="h", desc="generate", disable=(None if progress is None else not progress),
               leave=False)
    for hi in range(n_hours):
        n = int(counts[hi])
        h = draw_hour(cfg, world, arrays, drift_date, start, hi, n)
        hour_ms, abs_hour, d, t_ms, ids, req_ids, p, rng = (h.hour_ms, h.abs_hour, h.d, h.t_ms, h.ids,
                                                              h.req_ids, h.p, h.rng)
        ts = _iso_ms(t_ms)
        p_sum[h.drifted] += float(p.sum())
        p_n[h.drifted] += n

        # faults and duplicates, one draw per impression
        fault = np.searchsorted(fault_cum, h.fault_u, side="right")  # len(FAULT_KINDS) = clean
        clean = fault == len(FAULT_KINDS)
        dup = clean & (h.dup_u < cfg.duplicate_rate)
        dup_later = h.dup_later_u < cfg.duplicate_later_hour_share
        dup_delay = h.dup_delay
        fault_rng = np.random.default_rng([cfg.seed, 6, abs_hour])

        kind_of_site = world.site_kind[d.site] > 0
        lines: list[bytes] = []
        same_hour_dups: list[tuple[int, bytes]] = []
        fault_l, dup_idx = fault.tolist(), set(np.flatnonzero(dup).tolist())
        for i, rec in enumerate(_records(world, d, ids, req_ids, ts, kind_of_site)):
            fk = fault_l[i]
            if fk == 2:
                del rec["impression_id"]  # the record's top-level dict is its own
            elif fk == 3:
                _bad_timestamp(rec, fault_rng)
            elif fk == 4:
                rec = _loads(_dumps(rec))  # nested objects are shared between records: mutate a copy
                where = _wrong_type(rec, fault_rng)
                wrong_type_fields[where] = wrong_type_fields.get(where, 0) + 1
            line = _dumps(rec)
            if fk == 0:
                line = _truncate(line, fault_rng)
            elif fk == 1:
                line = _invalid_json(line, fault_rng)
            if fk < len(FAULT_KINDS):
                faults[FAULT_KINDS[fk]] += 1
            lines.append(line)
            if i in dup_idx:
                target = hi + int(dup_delay[i]) if dup_later[i] else hi
                if target >= n_hours:
                    target = hi
                if target == hi:
                    same_hour_dups.append((int(fault_rng.integers(i + 1, n + 1)), line))
                else:
                    pending_dups.setdefault(target, []).append(line)
                n_dup += 1
        # duplicates: after their original in the same hour, or anywhere in a later hour's file
        inserts = same_hour_dups + [(int(fault_rng.integers(0, n + 1)), ln) for ln in pending_dups.pop(hi, [])]
        if inserts:
            inserts.sort(key=lambda x: x[0])
            merged: list[bytes] = []
            prev = 0
            for pos, ln in inserts:
                merged.extend(lines[prev:pos])
                merged.append(ln)
                prev = pos
            merged.extend(lines[prev:])
            lines = merged
        bytes_written += _write_lines(_hour_path(out, "impressions", hour_ms, "jsonl"), lines)
        files["impressions"] += 1
        n_lines += len(lines)
        n_imp += n

        table = pa.table({"impression_id": pa.array(ids, type=pa.string()), "p_true": pa.array(p, type=pa.float64())})
        tpath = _hour_path(out, "truth", hour_ms, "parquet")
        tpath.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tpath)
        bytes_written += tpath.stat().st_size
        files["truth"] += 1

        # clicks: Bernoulli(p_true), heavy-tailed delays
        clicked = np.flatnonzero(h.clicked)
        k = len(clicked)
        late = rng.random(k) < cfg.late_click_share
        mu = np.where(late, math.log(cfg.late_click_median_s), math.log(cfg.click_delay_median_s))
        sigma = np.where(late, cfg.late_click_sigma, cfg.click_delay_sigma)
        delay_ms = np.maximum(np.ceil(np.exp(mu + sigma * rng.standard_normal(k)) * 1000.0), 1.0).astype(np.int64)
        c_ms = t_ms[clicked] + delay_ms
        c_hour = (c_ms - start_ms) // HOUR_MS
        n_clicks += k
        n_beyond += int((delay_ms > window_ms).sum())
        n_later_hour += int((c_hour > hi).sum())
        n_later_day += int(((c_ms - start_ms) // (24 * HOUR_MS) > hi // 24).sum())
        n_after_range += int((c_ms >= end_ms).sum())
        n_click_faulty += int((~clean[clicked]).sum())
        for ch, cm, idx in zip(c_hour.tolist(), c_ms.tolist(), clicked.tolist()):
            pending_clicks.setdefault(ch, []).append((cm, ids[idx]))
        pending_clicks.setdefault(hi, [])  # every generated hour gets a (possibly empty) click file
        flush_clicks(hi + 1)
        bar.update(1)
    bar.close()
    flush_clicks(max(pending_clicks, default=0) + 1)

    summary = GenerationSummary(
        out_dir=out, manifest_path=out / "manifest.json", model_path=model_path,
        start=_iso_ms(np.array([start_ms]))[0], end=_iso_ms(np.array([end_ms]))[0],
        impressions=n_imp, lines_written=n_lines, duplicates=n_dup, faulty_lines=dict(faults),
        clicks=n_clicks, clicks_beyond_window=n_beyond, clicks_later_hour=n_later_hour,
        clicks_later_day=n_later_day, clicks_after_range=n_after_range,
        mean_p_true=(p_sum[False] + p_sum[True]) / n_imp if n_imp else 0.0,
        drift_date=drift_date.isoformat() if drift_date else "",
        impression_files=files["impressions"], click_files=files["clicks"], truth_files=files["truth"],
        bytes_written=0,
    )
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "generator": GENERATOR_LABEL,
        "json_backend": JSON_BACKEND,
        "parameters": cfg.as_dict(),
        "time_range": {"start": summary.start, "end": summary.end, "hours": n_hours},
        "layout": {
            "impressions": "impressions/date=YYYY-MM-DD/hour=HH.jsonl",
            "clicks": "clicks/date=YYYY-MM-DD/hour=HH.jsonl (by click time; may extend past time_range.end)",
            "truth": "truth/date=YYYY-MM-DD/hour=HH.parquet (impression_id, p_true)",
            "truth_model": "truth/model.json",
        },
        "counts": {
            "impressions": n_imp,
            "lines_written": n_lines,
            "duplicates": n_dup,
            "faulty_lines": dict(faults),
            "faulty_lines_total": sum(faults.values()),
            "wrong_type_fields": dict(sorted(wrong_type_fields.items())),
            "clean_unique_impressions": n_imp - sum(faults.values()),
            "clicks": n_clicks,
            "clicks_beyond_window": n_beyond,
            "clicks_later_hour": n_later_hour,
            "clicks_later_day": n_later_day,
            "clicks_after_range": n_after_range,
            "clicks_on_faulty_impressions": n_click_faulty,
        },
        "truth": {
            "model": "truth/model.json",
            "drift_day": cfg.effective_drift_day,
            "drift_date": summary.drift_date,
            "base_logit": model.base_logit,
            "mean_p_true": summary.mean_p_true,
            "mean_p_true_before_drift": p_sum[False] / p_n[False] if p_n[False] else None,
            "mean_p_true_after_drift": p_sum[True] / p_n[True] if p_n[True] else None,
        },
        "cardinalities": world.cardinalities(),
        "files": files,
    }
    summary.manifest_path.write_bytes(_dumps(manifest) + b"\n")
    summary.bytes_written = bytes_written + summary.manifest_path.stat().st_size
    summary.elapsed_seconds = time.perf_counter() - t0
    return summary
