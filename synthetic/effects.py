"""The hidden world's click effects: the ground-truth model of a world
(:func:`build_truth_model`) and its vectorized evaluation over entity indices (:class:`TruthArrays`)."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

import numpy as np

from synthetic.config import GeneratorConfig
from synthetic.truth import (
    Drift, HashedEffect, Interaction, TruthModel, effect_value, hashed_value, interaction_value, value_key,
)
from synthetic.vocabulary import APP_SHARE_OF_MOBILE, CREATIVE_TYPES, DEVICE_PROFILES, FORMAT_NAMES, IAB_CATS
from synthetic.world import Draws, World, draw_impressions

# Main effects (logit) of the small vocabularies; entity effects are drawn per world.
SIZE_EFFECTS = {"300x250": 0.0, "728x90": -0.30, "160x600": -0.25, "300x600": 0.20, "970x250": 0.10,
                "320x50": -0.40, "320x100": -0.20, "336x280": 0.05, "320x480": 0.55, "768x1024": 0.45,
                "640x360": 0.10, "640x480": 0.05, "1280x720": 0.15, "1080x1920": 0.35, "1920x1080": -0.10}
POS_EFFECTS = {"0": 0.0, "1": 0.25, "3": -0.30, "4": 0.10, "5": -0.20, "6": -0.15, "7": 0.45}
DEVICE_TYPE_EFFECTS = {"2": 0.0, "3": -0.45, "4": 0.15, "5": 0.10}
OS_EFFECTS = {"iOS": 0.10, "Android": 0.0, "Windows": -0.10, "macOS": 0.05, "Linux": -0.25,
              "Roku OS": -0.10, "Tizen": 0.0, "webOS": 0.0, "Fire OS": -0.05}
CONNECTION_EFFECTS = {"1": 0.0, "2": 0.05, "3": -0.05, "6": -0.03, "7": 0.02}
CREATIVE_TYPE_EFFECTS = {"banner": 0.0, "video": 0.30, "native": 0.40, "rich_media": 0.20}
INVENTORY_EFFECTS = {"site": 0.0, "app": 0.15}
DOW_EFFECTS = {"0": 0.0, "1": 0.02, "2": 0.02, "3": 0.0, "4": -0.03, "5": -0.08, "6": -0.05}
# How a creative type performs depends on the screen: on phones rich media (expandable,
# interstitial-like) and in-feed native click far better than on a desktop, outstream video far
# worse; on desktops video and plain banners hold up better. CTV carries only video, so its
# entry is absorbed by the CTV main effect (kept small: CTV ads are barely clickable).
DEVICE_X_CREATIVE = {"2": {"banner": 0.10, "video": 0.20, "native": -0.20, "rich_media": -0.25},
                     "3": {"video": 0.35},
                     "4": {"banner": -0.10, "video": -0.40, "native": 0.40, "rich_media": 0.60},
                     "5": {"banner": 0.0, "video": 0.30, "native": 0.20, "rich_media": 0.40}}
# Amplitude (logit) of the LOCAL time-of-day cycle (peak 21:00 local): an hour_of_day (UTC) x
# country interaction, since the same UTC hour is evening in one country and night in another.
LOCAL_HOUR_AMPLITUDE = 0.25
# Advertiser verticals: the top-level IAB categories the sites are labelled with.
VERTICALS = tuple(sorted({c.split("-")[0] for c in IAB_CATS}))


def _local_hour_effect(local_hour: float, amplitude: float = LOCAL_HOUR_AMPLITUDE) -> float:
    return amplitude * math.cos(2.0 * math.pi * (math.floor(local_hour) - 21) / 24.0)


def build_truth_model(world: World, cfg: GeneratorConfig) -> TruthModel:
    """The ground-truth logistic click model of ``world`` (see :mod:`synthetic.truth`).

    Main effects on every placement, device, geography, audience, ad and time field; a hashed
    per-user effect (sd 0.45, not learnable: user_id is not a feature); three interactions,
    the pairs the ``generated`` spec crosses; drift from ``cfg.effective_drift_day``; the base
    logit calibrated so the mean pre-drift CTR is ``cfg.base_ctr``.

    - site_id x advertiser_id: contextual relevance (an advertiser's hidden vertical matching
      one of the site's categories: a lift of about ``context_match_lift``) plus an
      idiosyncratic N(0, ``site_advertiser_sd``) affinity on ``n_site_advertiser_pairs``
      pairs drawn by traffic.
    - device_type x creative_type: ``DEVICE_X_CREATIVE``.
    - hour_of_day x country: a local-time cycle of amplitude ``LOCAL_HOUR_AMPLITUDE``.

    ``interaction_scale`` multiplies all of them (0: main effects only, a control). Why they
    are this strong, and what the spec's crosses recover of them: ``docs/synthetic.md``.
    """
    rng = np.random.default_rng([cfg.seed, 1])

    def r(sd: float, n: int) -> list[float]:
        return rng.normal(0.0, sd, size=n).tolist()

    region_eff: dict[str, float] = {}
    for code, e in zip(world.region_codes, r(0.08, len(world.region_codes))):
        region_eff.setdefault(code, e)  # codes shared by two countries (e.g. WA) share one effect
    seg_eff = r(0.12, len(world.segment_ids))
    intent = rng.random(len(seg_eff)) < 0.1
    seg_eff = [e + (0.4 if m else 0.0) for e, m in zip(seg_eff, intent.tolist())]
    effects: dict[str, dict[str, float]] = {
        "inventory_type": dict(INVENTORY_EFFECTS),
        "publisher_id": {p["id"]: e for p, e in zip(world.pub_objs, r(0.15, len(world.pub_objs)))},
        "site_id": dict(zip(world.site_ids, r(0.45, len(world.site_ids)))),
        "tag_id": dict(zip(world.pl_tag, r(0.15, len(world.pl_tag)))),
        "ad_size": dict(SIZE_EFFECTS),
        "ad_pos": dict(POS_EFFECTS),
        "device_type": dict(DEVICE_TYPE_EFFECTS),
        "os": dict(OS_EFFECTS),
        "connection_type": dict(CONNECTION_EFFECTS),
        "country": dict(zip(world.country_codes, r(0.20, len(world.country_codes)))),
        "region": region_eff,
        "user_segments": dict(zip(world.segment_ids, seg_eff)),
        "advertiser_id": dict(zip(world.adv_ids, r(0.30, len(world.adv_ids)))),
        "campaign_id": dict(zip(world.camp_ids, r(0.20, len(world.camp_ids)))),
        "creative_id": dict(zip(world.cre_ids, r(0.30, len(world.cre_ids)))),
        "creative_type": dict(CREATIVE_TYPE_EFFECTS),
        "hour_of_day": {str(h): 0.05 * math.sin(2.0 * math.pi * h / 24.0) for h in range(24)},
        "day_of_week": dict(DOW_EFFECTS),
    }
    hashed = (HashedEffect("user_id", 0.45, int(rng.integers(0, 2**31))),)

    # site x advertiser: pairs drawn by popularity so they show up in the data
    # traffic share of each inventory kind follows the device mix (see draw_impressions)
    prof_w = np.array([p[6] for p in DEVICE_PROFILES])
    by_dt = {dt: prof_w[world.prof_dtype == dt].sum() / prof_w.sum() for dt in (2, 3, 4, 5)}
    mobile = by_dt[4] + by_dt[5]
    kind_share = (by_dt[2] + (1 - APP_SHARE_OF_MOBILE) * mobile, APP_SHARE_OF_MOBILE * mobile, by_dt[3])
    site_pop = np.zeros(len(world.site_ids))
    for kind in range(3):
        idx = world.sites_by_kind[kind]
        site_pop[idx] = kind_share[kind] * np.diff(np.concatenate([[0.0], world.site_cdf_by_kind[kind]]))
    site_pop /= site_pop.sum()
    n_pairs = cfg.n_site_advertiser_pairs
    sxa: dict[str, dict[str, float]] = {}
    if n_pairs > 0:
        ps = rng.choice(len(site_pop), size=4 * n_pairs, p=site_pop)
        pa_ = rng.choice(len(world.adv_ids), size=4 * n_pairs, p=world.adv_weight)
        eff = rng.normal(0.0, cfg.site_advertiser_sd, size=4 * n_pairs)
        count = 0
        for s, a, e in zip(ps.tolist(), pa_.tolist(), eff.tolist()):
            row = sxa.setdefault(world.site_ids[s], {})
            if world.adv_ids[a] in row:
                continue
            row[world.adv_ids[a]] = e
            count += 1
            if count >= n_pairs:
                break
    # contextual match: the advertiser's (hidden) vertical is one of the site's categories
    if cfg.context_match_lift > 0:
        vrng = np.random.default_rng([cfg.seed, 7])
        adv_vertical = vrng.integers(0, len(VERTICALS), size=len(world.adv_ids))
        lift = cfg.context_match_lift * np.exp(vrng.normal(0.0, 0.25, size=len(VERTICALS)))
        vindex = {v: i for i, v in enumerate(VERTICALS)}
        site_vert = np.zeros((len(world.site_ids), len(VERTICALS)), dtype=bool)
        for s, obj in enumerate(world.site_objs):
            for c in obj["cat"]:
                site_vert[s, vindex[c.split("-")[0]]] = True
        for s, a in zip(*np.nonzero(site_vert[:, adv_vertical])):
            row = sxa.setdefault(world.site_ids[s], {})
            aid = world.adv_ids[a]
            row[aid] = row.get(aid, 0.0) + float(lift[adv_vertical[a]])
    hxc = {str(h): {c: _local_hour_effect(h + off) for c, off in zip(world.country_codes, world.country_offset.tolist())}
           for h in range(24)}
    k = cfg.interaction_scale

    def scaled(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        out = {a: {b: k * e for b, e in row.items() if k * e != 0.0} for a, row in table.items()}
        return {a: row for a, row in out.items() if row}

    interactions = (
        Interaction(("site_id", "advertiser_id"), scaled(sxa)),
        Interaction(("device_type", "creative_type"), scaled(DEVICE_X_CREATIVE)),
        Interaction(("hour_of_day", "country"), scaled(hxc)),
    )

    # drift: creative fatigue, some sites and segments change, vertical video on phones takes off
    drng = np.random.default_rng([cfg.seed, 3])
    day = cfg.effective_drift_day
    cre_over = {}
    for cid, u, noise in zip(world.cre_ids, drng.random(len(world.cre_ids)).tolist(),
                             drng.normal(0.0, 0.2, size=len(world.cre_ids)).tolist()):
        if u < 0.30:
            cre_over[cid] = effects["creative_id"][cid] - 0.4 + noise
        elif u < 0.35:
            cre_over[cid] = effects["creative_id"][cid] + 0.3 + noise
    site_over = {sid: e for sid, u, e in zip(world.site_ids, drng.random(len(world.site_ids)).tolist(),
                                             drng.normal(0.0, 0.45, size=len(world.site_ids)).tolist()) if u < 0.10}
    seg_over = {sid: e for sid, u, e in zip(world.segment_ids, drng.random(len(world.segment_ids)).tolist(),
                                            drng.normal(0.0, 0.2, size=len(world.segment_ids)).tolist()) if u < 0.15}
    drift = Drift(
        day=day,
        date=cfg.start_date + timedelta(days=day),
        base_shift=-0.08,
        effects={"creative_id": cre_over, "site_id": site_over, "user_segments": seg_over},
        interactions=(Interaction(("device_type", "creative_type"),
                                     scaled({"4": {"video": 0.15}, "2": {"native": -0.40}})),),
    )
    model = TruthModel(base_logit=0.0, effects=effects, hashed=hashed, interactions=interactions, drift=drift)

    # calibrate the base logit so the mean pre-drift CTR is cfg.base_ctr on the traffic mix
    arrays = TruthArrays(world, model, drifted=False)
    crng = np.random.default_rng([cfg.seed, 5])
    zs = []
    for h in range(24):
        d = draw_impressions(world, crng, 2000, h)
        zs.append(arrays.logit(d, h, day_of_week=h % 7))
    z = np.concatenate(zs)
    lo, hi = -15.0, 5.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(z + mid)))) > cfg.base_ctr:
            hi = mid
        else:
            lo = mid
    return dataclasses.replace(model, base_logit=float(0.5 * (lo + hi)))


# Fields whose table effects TruthArrays evaluates (user_id only as a hashed effect).
SUPPORTED_EFFECT_FIELDS = frozenset({
    "inventory_type", "publisher_id", "site_id", "domain", "tag_id", "ad_format", "ad_size", "ad_pos",
    "device_type", "os", "make", "model", "connection_type", "country", "region", "user_segments",
    "advertiser_id", "campaign_id", "creative_id", "creative_type", "hour_of_day", "day_of_week",
})


class TruthArrays:
    """The truth model laid out over entity indices, for vectorized evaluation.

    Every entry is looked up through :mod:`synthetic.truth` with the raw
    value the record will carry, so it agrees with the per-record function.
    """

    def __init__(self, world: World, model: TruthModel, drifted: bool):
        unsupported = sorted((set(model.effects) | (set(model.drift.effects) if model.drift else set()))
                             - SUPPORTED_EFFECT_FIELDS)
        if unsupported:
            raise ValueError(f"the generator cannot evaluate effects on {unsupported}")
        ev = lambda f, v: 0.0 if v is None else effect_value(model, f, value_key(v), drifted)  # noqa: E731
        w = world
        self.base = model.base_logit + (model.drift.base_shift if drifted and model.drift else 0.0)
        # per user: country, region, segments, user id, device type, os, make, model
        prof = np.array([ev("device_type", p["devicetype"]) + ev("os", p.get("os"))
                         + ev("make", p.get("make")) + ev("model", p.get("model")) for p in w.prof_fields])
        country = np.array([ev("country", c) for c in w.country_codes])
        region = np.array([ev("region", c) for c in w.region_codes])
        seg = np.array([ev("user_segments", s) for s in w.segment_ids])
        nu = len(w.user_ids)
        seg_sum = np.bincount(np.repeat(np.arange(nu), np.diff(w.seg_offsets)), weights=seg[w.seg_values],
                              minlength=nu)
        hashed = np.zeros(len(w.user_ids))
        for h in model.hashed:
            if h.field != "user_id":
                raise ValueError(f"hashed effect on {h.field!r} is not supported by the generator")
            key = (h.field, h.scale, h.salt)
            if key not in w.hashed_cache:  # independent of drift: compute once per world
                w.hashed_cache[key] = np.array([hashed_value(h, uid) for uid in w.user_ids])
            hashed += w.hashed_cache[key]
        self.user = prof[w.user_prof] + country[w.user_country] + region[w.user_region] + seg_sum + hashed
        # per site: site, publisher, domain, inventory type
        inv = ["site" if k == 0 else "app" for k in w.site_kind.tolist()]
        self.site = np.array([ev("site_id", sid) + ev("publisher_id", o["publisher"]["id"])
                              + ev("domain", o.get("domain", o.get("bundle"))) + ev("inventory_type", t)
                              for sid, o, t in zip(w.site_ids, w.site_objs, inv)])
        # per placement: tag, format, size, position
        self.placement = np.array([ev("tag_id", t) + ev("ad_format", FORMAT_NAMES[f]) + ev("ad_size", s)
                                   + ev("ad_pos", None if p < 0 else p)
                                   for t, f, s, p in zip(w.pl_tag, w.pl_format.tolist(), w.pl_size, w.pl_pos.tolist())])
        # per creative: advertiser, campaign, creative, creative type
        self.creative = np.array([ev("advertiser_id", a["advertiser_id"]) + ev("campaign_id", a["campaign_id"])
                                  + ev("creative_id", a["creative_id"]) + ev("creative_type", a["creative_type"])
                                  for a in w.ad_objs])
        self.conn = np.array([ev("connection_type", c) for c in range(8)])
        self.hour = np.array([ev("hour_of_day", h) for h in range(24)])
        self.dow = np.array([ev("day_of_week", d) for d in range(7)])
        # interactions
        self.inter_site_adv: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.inter_dt_ct: list[tuple[int, np.ndarray]] = []
        self.inter_hour_country: list[tuple[int, np.ndarray]] = []
        site_index = {sid: i for i, sid in enumerate(w.site_ids)}
        adv_index = {aid: i for i, aid in enumerate(w.adv_ids)}
        na = len(w.adv_ids)
        for i, inter in enumerate(model.interactions):
            iv = lambda a, b: interaction_value(model, i, value_key(a), value_key(b), drifted)  # noqa: B023,E731
            if inter.fields == ("site_id", "advertiser_id"):
                codes, vals = [], []
                for sid, row in inter.effects.items():
                    for aid in row:
                        if sid in site_index and aid in adv_index:
                            codes.append(site_index[sid] * na + adv_index[aid])
                            vals.append(iv(sid, aid))
                if drifted and model.drift:
                    for over in model.drift.interactions:
                        if over.fields == inter.fields:
                            for sid, row in over.effects.items():
                                for aid in row:
                                    if sid in site_index and aid in adv_index:
                                        codes.append(site_index[sid] * na + adv_index[aid])
                                        vals.append(iv(sid, aid))
                c = np.array(codes, dtype=np.int64)
                c, first = np.unique(c, return_index=True)
                self.inter_site_adv.append((i, c, np.array(vals, dtype=np.float64)[first]))
            elif inter.fields == ("device_type", "creative_type"):
                self.inter_dt_ct.append((i, np.array([[iv(dt, ct) for ct in CREATIVE_TYPES] for dt in range(8)])))
            elif inter.fields == ("hour_of_day", "country"):
                self.inter_hour_country.append((i, np.array([[iv(h, c) for c in w.country_codes] for h in range(24)])))
            else:
                raise ValueError(f"interaction {inter.fields} is not supported by the generator")
        self.world = w

    def logit(self, d: Draws, utc_hour: int, day_of_week: int) -> np.ndarray:
        """True click log-odds of a batch of impressions drawn in one hour."""
        w = self.world
        cre_adv = w.cre_adv[d.creative]
        z = (self.base + self.user[d.user] + self.site[d.site] + self.placement[d.placement]
             + self.creative[d.creative] + self.conn[d.conn] + self.hour[utc_hour] + self.dow[day_of_week])
        for _, codes, vals in self.inter_site_adv:
            if len(codes):
                key = d.site * len(w.adv_ids) + cre_adv
                pos = np.minimum(np.searchsorted(codes, key), len(codes) - 1)
                z = z + np.where(codes[pos] == key, vals[pos], 0.0)
        dtype = w.prof_dtype[w.user_prof[d.user]]
        for _, table in self.inter_dt_ct:
            z = z + table[dtype, w.cre_type[d.creative]]
        for _, table in self.inter_hour_country:
            z = z + table[utc_hour, d.country]
        return z

