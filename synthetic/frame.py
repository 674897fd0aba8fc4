"""The generated impressions in process, as one Arrow table of raw fields with ``p_true``
and the click draw (no files, no log faults): for experiments and benchmarks that do not
need the warehouse (``benchmarks/bench_crosses.py``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from shared.openrtb import RAW_FIELDS
from synthetic.config import GeneratorConfig
from synthetic.effects import TruthArrays, build_truth_model
from synthetic.hours import draw_hour, hour_counts
from synthetic.truth import TruthModel
from synthetic.vocabulary import FORMAT_NAMES
from synthetic.world import World, build_world


def _entity_columns(world: World) -> dict[str, tuple[str, Any]]:
    """Each raw field as (entity kind, Arrow array over that kind's index), built from the
    same objects the records carry, so ``take`` gives what impression_fields maps them to."""
    w = world
    prof = w.user_prof.tolist()
    pf = w.prof_fields
    segs = [None if a == b else [w.segment_ids[v] for v in w.seg_values[a:b].tolist()]
            for a, b in zip(w.seg_offsets[:-1].tolist(), w.seg_offsets[1:].tolist())]
    s, u = pa.string(), pa.int64()
    return {
        "inventory_type": ("site", pa.array(["site" if k == 0 else "app" for k in w.site_kind.tolist()], s)),
        "publisher_id": ("site", pa.array([o["publisher"]["id"] for o in w.site_objs], s)),
        "site_id": ("site", pa.array(w.site_ids, s)),
        "domain": ("site", pa.array([o.get("domain", o.get("bundle")) for o in w.site_objs], s)),
        "tag_id": ("placement", pa.array(w.pl_tag, s)),
        "ad_format": ("placement", pa.array([FORMAT_NAMES[f] for f in w.pl_format.tolist()], s)),
        "ad_size": ("placement", pa.array(w.pl_size, s)),
        "ad_pos": ("placement", pa.array([None if x < 0 else x for x in w.pl_pos.tolist()], u)),
        "device_type": ("user", pa.array([pf[i]["devicetype"] for i in prof], u)),
        "os": ("user", pa.array([pf[i].get("os") for i in prof], s)),
        "make": ("user", pa.array([pf[i].get("make") for i in prof], s)),
        "model": ("user", pa.array([pf[i].get("model") for i in prof], s)),
        "country": ("user", pa.array([w.geo_objs[r]["country"] for r in w.user_region.tolist()], s)),
        "region": ("user", pa.array([w.geo_objs[r]["region"] for r in w.user_region.tolist()], s)),
        "user_id": ("user", pa.array(w.user_ids, s)),
        "user_segments": ("user", pa.array(segs, pa.list_(s))),
        **{k: ("creative", pa.array([a[k] for a in w.ad_objs], s))
           for k in ("advertiser_id", "campaign_id", "creative_id", "creative_type")},
    }


def generate_frame(config: GeneratorConfig, world: World | None = None,
                   model: TruthModel | None = None) -> pa.Table:
    """Every impression :func:`synthetic.logs.generate_logs` generates for ``config``, in process and without files.

    One row per impression (each once: no duplicate or damaged lines, i.e. the impressions
    before the log faults), in time order: ``impression_id``, ``event_time`` (UTC, ms), the
    raw fields of :data:`shared.openrtb.RAW_FIELDS` exactly as
    :func:`shared.openrtb.impression_fields` maps the written record, ``p_true`` and
    ``clicked`` (the same Bernoulli draw as the click log, whatever its delay: no
    attribution window). Same streams as ``generate_logs``, so ids, truth and clicks
    agree with the files (``tests/test_generator.py`` checks it).
    ``world`` / ``model``: the ones :func:`~synthetic.world.build_world` /
    :func:`~synthetic.effects.build_truth_model` give for
    ``config`` (pass them to skip rebuilding, or a changed model to relabel the same draws).
    """
    cfg = config
    world = world if world is not None else build_world(cfg)
    model = model if model is not None else build_truth_model(world, cfg)
    arrays = {False: TruthArrays(world, model, drifted=False), True: TruthArrays(world, model, drifted=True)}
    drift_date = model.drift.date if model.drift else None
    columns = _entity_columns(world)
    start = datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tzinfo=timezone.utc)
    counts = np.concatenate([hour_counts(cfg, world, day) for day in range(cfg.days)])
    dtypes = {"string": pa.string(), "long": pa.int64(), "double": pa.float64(),
              "array<string>": pa.list_(pa.string())}
    schema = pa.schema([("impression_id", pa.string()), ("event_time", pa.timestamp("ms", tz="UTC"))]
                       + [(f.name, dtypes[f.dtype]) for f in RAW_FIELDS]
                       + [("p_true", pa.float64()), ("clicked", pa.bool_())])
    parts = []
    for hi in range(cfg.days * 24):
        n = int(counts[hi])
        h = draw_hour(cfg, world, arrays, drift_date, start, hi, n)
        d, hour_dt = h.d, h.hour_dt
        index = {"site": d.site, "placement": d.placement, "user": d.user, "creative": d.creative}
        cols: dict[str, Any] = {"impression_id": pa.array(h.ids, pa.string()),
                                "event_time": pa.array(h.t_ms, pa.timestamp("ms", tz="UTC"))}
        for f in RAW_FIELDS:
            if f.name in columns:
                kind, arr = columns[f.name]
                cols[f.name] = arr.take(index[kind])
        cols["bidfloor"] = pa.array(d.floor, pa.float64())
        cols["connection_type"] = pa.array(d.conn, pa.int64())
        cols["hour_of_day"] = pa.array(np.full(n, hour_dt.hour), pa.int64())
        cols["day_of_week"] = pa.array(np.full(n, hour_dt.weekday()), pa.int64())
        cols["p_true"] = pa.array(h.p, pa.float64())
        cols["clicked"] = pa.array(h.clicked, pa.bool_())
        parts.append(pa.table([cols[name] for name in schema.names], schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()

