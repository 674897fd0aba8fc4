"""The hidden world: users, sites, placements, advertisers, campaigns and creatives, and
the draw of one batch of impressions from them (vectorized, as entity indices)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthetic.config import GeneratorConfig
from synthetic.vocabulary import (
    APP_SHARE_OF_MOBILE, COMPATIBLE, CONNECTION_TYPES, COUNTRIES, CREATIVE_TYPE_P, CREATIVE_TYPES,
    DEVICE_PROFILES, FLOOR_MEDIAN, FORMAT_BY_KIND, FULLSCREEN_SIZES, IAB_CATS, LOCAL_HOUR_CURVE,
    NATIVE_REQUEST, POSITIONS, SECTIONS, SEGMENT_PROVIDERS, SIZES, TLDS, WORDS,
)


def _zipf_weights(rng: np.random.Generator, n: int, s: float, q: float = 0.0) -> np.ndarray:
    """Zipf(-Mandelbrot) popularity (rank + q) ** -s over n entities in random rank order, normalized."""
    ranks = rng.permutation(n) + 1.0
    w = (ranks + q) ** -s
    return w / w.sum()


def hexes(rng: np.random.Generator, n: int, nbytes: int) -> list[str]:
    """``n`` random lowercase hex ids of ``nbytes`` bytes each."""
    h = rng.bytes(n * nbytes).hex()
    k = 2 * nbytes
    return [h[i:i + k] for i in range(0, n * k, k)]


def _unique_ints(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    return rng.choice(hi - lo, size=n, replace=False) + lo


def _pick(rng: np.random.Generator, table: tuple[tuple[Any, float], ...], n: int) -> list[Any]:
    values = [v for v, _ in table]
    p = np.array([w for _, w in table])
    return [values[i] for i in rng.choice(len(values), size=n, p=p / p.sum())]


def _dims(size: str | None) -> tuple[int, int]:
    """(w, h) of a ``"WxH"`` ad size; banner and video placements always draw one (SIZES)."""
    if size is None:
        raise ValueError("a banner or video placement without a size")
    w, h = (int(x) for x in size.split("x"))
    return w, h


def _cdf(w: np.ndarray) -> np.ndarray:
    c = np.cumsum(w, dtype=np.float64)
    c /= c[-1]
    c[-1] = 1.0
    return c


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _draw_within(group: np.ndarray, members: list[np.ndarray], cdfs: list[np.ndarray], u: np.ndarray) -> np.ndarray:
    """For each row, one of its group's members drawn by that group's CDF (``u`` uniform)."""
    out = np.empty(group.shape[0], dtype=np.int64)
    for g in range(len(members)):
        m = group == g
        if m.any():
            out[m] = members[g][_draw(cdfs[g], u[m])]
    return out


@dataclass
class World:
    """Entities and their popularity; a function of (seed, cardinalities) only."""

    # countries / regions
    country_codes: list[str]
    country_offset: np.ndarray
    country_lang: list[str]
    region_codes: list[str]  # global region index -> code
    region_country: np.ndarray
    geo_objs: list[dict]  # per global region
    # device profiles
    prof_dtype: np.ndarray
    prof_fields: list[dict]
    prof_ua: list[str]
    # users
    user_ids: list[str]
    user_ifa: list[str]
    user_ip: list[str]
    user_country: np.ndarray
    user_region: np.ndarray
    user_prof: np.ndarray
    seg_offsets: np.ndarray
    seg_values: np.ndarray  # segment indices, sorted per user
    users_by_country: list[np.ndarray]
    user_cdf_by_country: list[np.ndarray]
    segment_ids: list[str]
    segment_provider: np.ndarray
    # publishers / sites / placements
    pub_objs: list[dict]
    site_kind: np.ndarray  # 0 web, 1 mobile app, 2 ctv app
    site_ids: list[str]
    site_pub: np.ndarray
    site_objs: list[dict]
    sites_by_kind: list[np.ndarray]
    site_cdf_by_kind: list[np.ndarray]
    pl_site: np.ndarray
    pl_format: np.ndarray
    pl_size: list[str | None]
    pl_pos: np.ndarray  # -1 for none (native)
    pl_tag: list[str]
    pl_floor: np.ndarray
    pl_keys: np.ndarray  # site index + cumulative placement probability within the site
    pl_objs: list[dict]
    # demand
    adv_ids: list[str]
    adv_weight: np.ndarray
    camp_ids: list[str]
    camp_adv: np.ndarray
    cre_ids: list[str]
    cre_camp: np.ndarray
    cre_adv: np.ndarray
    cre_type: np.ndarray
    cre_by_format: list[np.ndarray]
    cre_cdf_by_format: list[np.ndarray]
    ad_objs: list[dict]
    # traffic
    utc_hour_share: np.ndarray  # 24
    country_cdf_by_hour: list[np.ndarray]  # 24 x C
    hashed_cache: dict = field(default_factory=dict)

    def cardinalities(self) -> dict[str, int]:
        """Entity counts by kind (the manifest's ``cardinalities``)."""
        return {
            "users": len(self.user_ids), "countries": len(self.country_codes), "regions": len(self.region_codes),
            "device_profiles": len(self.prof_ua), "segments": len(self.segment_ids),
            "publishers": len(self.pub_objs), "sites": int((self.site_kind == 0).sum()),
            "mobile_apps": int((self.site_kind == 1).sum()), "ctv_apps": int((self.site_kind == 2).sum()),
            "placements": len(self.pl_tag), "advertisers": len(self.adv_ids), "campaigns": len(self.camp_ids),
            "creatives": len(self.cre_ids),
        }


def build_world(cfg: GeneratorConfig) -> World:
    """Build the entities of ``cfg``'s world and their popularity (deterministic in the seed)."""
    rng = np.random.default_rng([cfg.seed, 0])

    # ---- countries, regions, traffic curve
    codes = [c[0] for c in COUNTRIES]
    cw = np.array([c[1] for c in COUNTRIES])
    cw /= cw.sum()
    offsets = np.array([c[2] for c in COUNTRIES])
    region_codes: list[str] = []
    region_country: list[int] = []
    region_w: list[np.ndarray] = []
    region_start: list[int] = []
    for ci, c in enumerate(COUNTRIES):
        region_start.append(len(region_codes))
        region_codes += [r for r, _ in c[4]]
        region_country += [ci] * len(c[4])
        w = np.array([x for _, x in c[4]])
        region_w.append(w / w.sum())
    geo_objs = [{"country": codes[region_country[r]], "region": region_codes[r], "type": 2}
                for r in range(len(region_codes))]
    local = (np.arange(24)[:, None] + offsets[None, :]) % 24  # utc hour x country -> local hour
    curve = LOCAL_HOUR_CURVE / LOCAL_HOUR_CURVE.sum()
    vol = cw[None, :] * curve[np.floor(local).astype(int)]  # 24 x C
    utc_hour_share = vol.sum(axis=1) / vol.sum()
    country_cdf_by_hour = [_cdf(vol[h]) for h in range(24)]

    # ---- device profiles
    prof_dtype = np.array([p[0] for p in DEVICE_PROFILES])
    prof_w = np.array([p[6] for p in DEVICE_PROFILES])
    prof_fields = []
    for dt, make, model, os_, osv, _, _ in DEVICE_PROFILES:
        d: dict[str, Any] = {"devicetype": dt}
        if make is not None:
            d["make"] = make
            d["model"] = model
        d["os"] = os_
        if osv:
            d["osv"] = osv
        prof_fields.append(d)
    prof_ua = [p[5] for p in DEVICE_PROFILES]

    # ---- users
    nu = cfg.n_users
    user_country = rng.choice(len(codes), size=nu, p=cw)
    user_region = np.empty(nu, dtype=np.int64)
    for ci in range(len(codes)):
        idx = np.flatnonzero(user_country == ci)
        user_region[idx] = region_start[ci] + rng.choice(len(region_w[ci]), size=len(idx), p=region_w[ci])
    user_prof = rng.choice(len(DEVICE_PROFILES), size=nu, p=prof_w / prof_w.sum())
    user_ids = hexes(rng, nu, 20)
    ifa_hex = hexes(rng, nu, 16)
    user_ifa = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".upper() for h in ifa_hex]
    ip = rng.integers(1, 224, size=(nu, 3))
    user_ip = [f"{a}.{b}.{c}.0" for a, b, c in ip.tolist()]  # exchanges truncate the last octet
    pop = _zipf_weights(rng, nu, cfg.user_zipf, cfg.user_zipf_offset)
    users_by_country, user_cdf_by_country = [], []
    for ci in range(len(codes)):
        idx = np.flatnonzero(user_country == ci)
        if len(idx) == 0:  # tiny worlds: give every country at least one user
            idx = np.array([ci % nu])
        users_by_country.append(idx)
        user_cdf_by_country.append(_cdf(pop[idx]))

    # segments: 0..max per user (35% none), Zipf popularity, two data providers
    ns = cfg.n_segments
    n_a = max(1, int(round(ns * 0.75))) if ns > 1 else 1
    seg_provider = np.array([0] * n_a + [1] * (ns - n_a))
    segment_ids = [str(SEGMENT_PROVIDERS[p][2] + (i if p == 0 else i - n_a)) for i, p in enumerate(seg_provider)]
    seg_pop = _zipf_weights(rng, ns, 1.0)
    kmax = cfg.max_segments_per_user
    k = np.where(rng.random(nu) < 0.35, 0,
                 np.minimum(1 + rng.poisson(max(cfg.mean_segments_per_user / 0.65 - 1.0, 0.0), size=nu), kmax))
    if kmax > 0:
        cand = _draw(_cdf(seg_pop), rng.random((nu, kmax)))
        cand = np.where(np.arange(kmax)[None, :] < k[:, None], cand, ns)  # ns = "no segment"
        cand.sort(axis=1)
        keep = cand < ns
        keep[:, 1:] &= cand[:, 1:] != cand[:, :-1]
        seg_values = cand[keep]
        seg_offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    else:
        seg_values = np.zeros(0, dtype=np.int64)
        seg_offsets = np.zeros(nu + 1, dtype=np.int64)

    # ---- publishers and inventory
    npub = cfg.n_publishers
    pub_ids = [str(x) for x in _unique_ints(rng, npub, 1000, 1000 + max(10 * npub, 9000))]
    pub_words = rng.integers(0, len(WORDS), size=(npub, 2))
    pub_cat = rng.integers(0, len(IAB_CATS), size=npub)
    pub_objs = []
    for i in range(npub):
        name = WORDS[pub_words[i, 0]] + WORDS[pub_words[i, 1]]
        pub_objs.append({"id": pub_ids[i], "name": name, "cat": [IAB_CATS[pub_cat[i]]], "domain": f"{name}{i}.com"})
    ns_ = cfg.n_sites
    n_ctv = max(1, int(round(ns_ * cfg.ctv_share)))
    n_app = max(1, int(round(ns_ * cfg.app_share)))
    n_web = ns_ - n_ctv - n_app
    site_kind = rng.permutation(np.array([0] * n_web + [1] * n_app + [2] * n_ctv))
    site_pub = rng.choice(npub, size=ns_, p=_zipf_weights(rng, npub, cfg.publisher_zipf))
    web_ids = _unique_ints(rng, ns_, 100_000, 1_000_000)
    app_hex = hexes(rng, ns_, 12)
    site_words = rng.integers(0, len(WORDS), size=(ns_, 2))
    site_tld = rng.integers(0, len(TLDS), size=ns_)
    site_cat = rng.integers(0, len(IAB_CATS), size=(ns_, 2))
    site_sec = rng.integers(0, len(SECTIONS), size=ns_)
    site_ids: list[str] = []
    site_objs: list[dict] = []
    for i in range(ns_):
        kind = int(site_kind[i])
        w1, w2 = WORDS[site_words[i, 0]], WORDS[site_words[i, 1]]
        cats = sorted({IAB_CATS[site_cat[i, 0]], IAB_CATS[site_cat[i, 1]]})
        pub = pub_objs[site_pub[i]]
        if kind == 0:
            sid = str(web_ids[i])
            domain = f"www.{w1}{w2}{i}.{TLDS[site_tld[i]]}"
            obj = {"id": sid, "name": f"{w1}{w2}", "domain": domain, "cat": cats,
                   "page": f"https://{domain}/{SECTIONS[site_sec[i]]}", "publisher": pub}
        else:
            sid = app_hex[i]
            bundle = f"com.{w1}{w2}.{'tv' if kind == 2 else 'app'}{i}"
            obj = {"id": sid, "name": f"{w1.capitalize()} {w2.capitalize()}", "bundle": bundle,
                   "storeurl": f"https://play.google.com/store/apps/details?id={bundle}", "cat": cats,
                   "ver": f"{1 + i % 7}.{i % 13}.{i % 5}", "publisher": pub}
        site_ids.append(sid)
        site_objs.append(obj)
    site_pop = _zipf_weights(rng, ns_, cfg.site_zipf, cfg.site_zipf_offset)
    sites_by_kind, site_cdf_by_kind = [], []
    for kind in range(3):
        idx = np.flatnonzero(site_kind == kind)
        sites_by_kind.append(idx)
        site_cdf_by_kind.append(_cdf(site_pop[idx]))

    # placements: 1-4 per site
    n_pl = rng.choice(4, size=ns_, p=[0.35, 0.35, 0.2, 0.1]) + 1
    pl_site = np.repeat(np.arange(ns_), n_pl)
    npl = len(pl_site)
    pl_kind = site_kind[pl_site]
    u_fmt = rng.random(npl)
    pl_format = np.empty(npl, dtype=np.int64)
    for kind, p in FORMAT_BY_KIND.items():
        m = pl_kind == kind
        pl_format[m] = _draw(_cdf(np.array(p)), u_fmt[m])
    pl_size: list[str | None] = [None] * npl
    pl_pos = np.full(npl, -1, dtype=np.int64)
    for (kind, fmt), table in SIZES.items():
        idx = np.flatnonzero((pl_kind == kind) & (pl_format == fmt))
        for j, s in zip(idx.tolist(), _pick(rng, table, len(idx))):
            pl_size[j] = s
        pos = _pick(rng, POSITIONS[(kind, fmt)], len(idx))
        pl_pos[idx] = pos
    for j in range(npl):
        if pl_size[j] in FULLSCREEN_SIZES and pl_format[j] == 0:
            pl_pos[j] = 7
    floor_med = np.array([FLOOR_MEDIAN[f] for f in pl_format.tolist()]) * np.where(pl_kind == 2, 3.0, 1.0)
    pl_floor = floor_med * np.exp(rng.normal(0.0, 0.5, size=npl))
    tag_nums = rng.integers(10**12, 10**13, size=npl)
    tag_hex = hexes(rng, npl, 12)
    pl_tag = []
    for j in range(npl):
        if pl_kind[j] == 0:
            pl_tag.append(f"div-gpt-ad-{tag_nums[j]}-{j % 4}")
        else:
            pl_tag.append(tag_hex[j])
    pl_w = rng.gamma(2.0, size=npl)
    within = np.zeros(npl)
    starts = np.concatenate([[0], np.cumsum(n_pl)[:-1]])
    for s0, cnt in zip(starts.tolist(), n_pl.tolist()):
        w = pl_w[s0:s0 + cnt]
        c = np.cumsum(w) / w.sum()
        c[-1] = 1.0
        within[s0:s0 + cnt] = c
    pl_keys = pl_site + within
    pl_objs = []
    for j in range(npl):
        f = int(pl_format[j])
        if f == 0:
            width, height = _dims(pl_size[j])
            pl_objs.append({"w": width, "h": height, "pos": int(pl_pos[j]), "format": [{"w": width, "h": height}]})
        elif f == 1:
            width, height = _dims(pl_size[j])
            pl_objs.append({"mimes": ["video/mp4", "video/webm"], "minduration": 5, "maxduration": 30,
                            "protocols": [2, 3, 5, 6, 7, 8], "w": width, "h": height, "startdelay": 0,
                            "plcmt": 1 if pl_kind[j] == 2 else 2, "linearity": 1, "pos": int(pl_pos[j])})
        else:
            pl_objs.append({"request": NATIVE_REQUEST, "ver": "1.2"})

    # ---- demand: advertisers -> campaigns -> creatives
    na = cfg.n_advertisers
    adv_ids = [str(x) for x in _unique_ints(rng, na, 1000, 10_000)]
    adv_weight = _zipf_weights(rng, na, cfg.advertiser_zipf, cfg.advertiser_zipf_offset)
    n_camp = 1 + rng.poisson(max(cfg.campaigns_per_advertiser - 1.0, 0.0), size=na)
    camp_adv = np.repeat(np.arange(na), n_camp)
    nc = len(camp_adv)
    camp_ids = [str(x) for x in _unique_ints(rng, nc, 100_000, 1_000_000)]
    camp_w = rng.gamma(1.0, size=nc)
    camp_share = camp_w / np.bincount(camp_adv, weights=camp_w, minlength=na)[camp_adv]
    n_cre = 1 + rng.poisson(max(cfg.creatives_per_campaign - 1.0, 0.0), size=nc)
    cre_camp = np.repeat(np.arange(nc), n_cre)
    ncr = len(cre_camp)
    cre_adv = camp_adv[cre_camp]
    cre_ids = [str(x) for x in _unique_ints(rng, ncr, 1_000_000, 10_000_000)]
    cre_type = rng.choice(4, size=ncr, p=CREATIVE_TYPE_P)
    for t in range(3):  # every placement format needs at least one compatible creative
        if not np.isin(cre_type, COMPATIBLE[t]).any():
            cre_type[t % ncr] = COMPATIBLE[t][0]
    cre_w = rng.gamma(1.5, size=ncr)
    cre_share = cre_w / np.bincount(cre_camp, weights=cre_w, minlength=nc)[cre_camp]
    cre_weight = adv_weight[cre_adv] * camp_share[cre_camp] * cre_share
    cre_by_format, cre_cdf_by_format = [], []
    for f in range(3):
        idx = np.flatnonzero(np.isin(cre_type, COMPATIBLE[f]))
        cre_by_format.append(idx)
        cre_cdf_by_format.append(_cdf(cre_weight[idx]))
    ad_objs = [{"advertiser_id": adv_ids[cre_adv[i]], "campaign_id": camp_ids[cre_camp[i]],
                "creative_id": cre_ids[i], "creative_type": CREATIVE_TYPES[cre_type[i]]} for i in range(ncr)]

    return World(
        country_codes=codes, country_offset=offsets, country_lang=[c[3] for c in COUNTRIES],
        region_codes=region_codes, region_country=np.array(region_country), geo_objs=geo_objs,
        prof_dtype=prof_dtype, prof_fields=prof_fields, prof_ua=prof_ua,
        user_ids=user_ids, user_ifa=user_ifa, user_ip=user_ip, user_country=user_country,
        user_region=user_region, user_prof=user_prof, seg_offsets=seg_offsets, seg_values=seg_values,
        users_by_country=users_by_country, user_cdf_by_country=user_cdf_by_country,
        segment_ids=segment_ids, segment_provider=seg_provider,
        pub_objs=pub_objs, site_kind=site_kind, site_ids=site_ids, site_pub=site_pub, site_objs=site_objs,
        sites_by_kind=sites_by_kind, site_cdf_by_kind=site_cdf_by_kind,
        pl_site=pl_site, pl_format=pl_format, pl_size=pl_size, pl_pos=pl_pos, pl_tag=pl_tag,
        pl_floor=pl_floor, pl_keys=pl_keys, pl_objs=pl_objs,
        adv_ids=adv_ids, adv_weight=adv_weight, camp_ids=camp_ids, camp_adv=camp_adv,
        cre_ids=cre_ids, cre_camp=cre_camp, cre_adv=cre_adv, cre_type=cre_type,
        cre_by_format=cre_by_format, cre_cdf_by_format=cre_cdf_by_format, ad_objs=ad_objs,
        utc_hour_share=utc_hour_share, country_cdf_by_hour=country_cdf_by_hour,
    )


@dataclass
class Draws:
    """One batch of impressions as entity indices (vectorized)."""

    country: np.ndarray
    user: np.ndarray
    site: np.ndarray
    placement: np.ndarray
    creative: np.ndarray
    conn: np.ndarray
    floor: np.ndarray


def draw_impressions(world: World, rng: np.random.Generator, n: int, utc_hour: int) -> Draws:
    """Draw ``n`` impressions of one UTC hour: country by the hour's traffic, then user, site,
    placement, a compatible creative, connection type and floor."""
    country = _draw(world.country_cdf_by_hour[utc_hour], rng.random(n))
    user = _draw_within(country, world.users_by_country[:len(world.country_codes)], world.user_cdf_by_country,
                        rng.random(n))
    dtype = world.prof_dtype[world.user_prof[user]]
    # inventory pool: PC -> web; phone/tablet -> app 55% / mobile web 45%; CTV -> CTV apps
    pool = np.where(dtype == 2, 0, np.where(dtype == 3, 2, np.where(rng.random(n) < APP_SHARE_OF_MOBILE, 1, 0)))
    site = _draw_within(pool, world.sites_by_kind[:3], world.site_cdf_by_kind, rng.random(n))
    placement = np.minimum(np.searchsorted(world.pl_keys, site + rng.random(n), side="right"),
                           len(world.pl_keys) - 1)
    fmt = world.pl_format[placement]
    creative = _draw_within(fmt, world.cre_by_format[:3], world.cre_cdf_by_format, rng.random(n))
    conn = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for dt, (vals, p) in CONNECTION_TYPES.items():
        m = dtype == dt
        if m.any():
            conn[m] = np.array(vals)[_draw(_cdf(np.array(p)), u[m])]
    floor = np.maximum(np.round(world.pl_floor[placement] * np.exp(rng.normal(0.0, 0.2, size=n)), 2), 0.01)
    return Draws(country=country, user=user, site=site, placement=placement, creative=creative,
                 conn=conn, floor=floor)

