"""Realistic ad logs, as a bidder and a click tracker write them.

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
  generated impression, and ``truth/model.json`` (see :mod:`feature_store.truth_model`);
- ``manifest.json``: parameters and counts, written last.

Clicks are Bernoulli draws from a logistic ground truth defined over the raw
field values of :func:`shared.openrtb.impression_fields` (:func:`build_truth_model`
documents its effects and interactions). Output is a pure function of the config:
the same config gives the same bytes.

``generate_frame(config)`` gives the same impressions in process, as one Arrow table of
raw fields with ``p_true`` and the click draw (no files, no log faults): for experiments
and benchmarks that do not need the warehouse (``benchmarks/bench_crosses.py``).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from feature_store import truth_model as tm

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
HOUR_MS = 3_600_000
FAULT_KINDS = ("truncated", "invalid_json", "missing_impression_id", "bad_timestamp", "wrong_type")


# ------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that determines the output. Same config, same bytes."""

    start_date: date = date(2026, 11, 1)
    days: int = 7
    impressions_per_day: int = 200_000
    seed: int = 42
    drift_day: int | None = None  # day index (0-based) from which the drifted model applies; None: days // 2 (>= 1)

    # faults, as a fraction of generated impressions (duplicates: extra identical lines)
    duplicate_rate: float = 0.005
    truncated_rate: float = 0.001
    invalid_json_rate: float = 0.001
    missing_id_rate: float = 0.001
    bad_timestamp_rate: float = 0.001
    wrong_type_rate: float = 0.001
    duplicate_later_hour_share: float = 0.4  # of duplicates, the share written 1-3 hours after the original

    # cardinalities and popularity (Zipf-Mandelbrot: weight of rank r is (r + offset) ** -exponent;
    # the offset flattens the head, e.g. the heaviest of 300k users sees ~250 ads a day at 200k/day)
    n_users: int = 300_000
    n_sites: int = 4_000  # web sites + mobile apps + CTV apps
    app_share: float = 0.35
    ctv_share: float = 0.03
    n_publishers: int = 1_500
    n_advertisers: int = 100
    campaigns_per_advertiser: float = 5.0  # mean
    creatives_per_campaign: float = 3.0  # mean
    n_segments: int = 200
    mean_segments_per_user: float = 3.0
    max_segments_per_user: int = 12
    user_zipf: float = 1.0
    user_zipf_offset: float = 100.0
    site_zipf: float = 1.1
    site_zipf_offset: float = 3.0
    publisher_zipf: float = 1.0
    advertiser_zipf: float = 1.1
    advertiser_zipf_offset: float = 1.0

    # ground truth (interaction sizes: see build_truth_model)
    base_ctr: float = 0.015  # mean true CTR before drift (the base logit is calibrated to it)
    n_site_advertiser_pairs: int = 600  # site x advertiser pairs with an idiosyncratic affinity, drawn by traffic
    site_advertiser_sd: float = 0.6  # sd of those pair affinities (logit)
    context_match_lift: float = 0.7  # mean logit lift when the advertiser's vertical is one of the site's categories
    interaction_scale: float = 1.0  # multiplies every interaction of the truth (0: a main-effects-only truth)

    # click delays: a mixture of two lognormals
    click_delay_median_s: float = 20.0
    click_delay_sigma: float = 1.3
    late_click_share: float = 0.04
    late_click_median_s: float = 3 * 3600.0
    late_click_sigma: float = 1.5
    attribution_window_hours: float = 24.0

    def __post_init__(self) -> None:
        if isinstance(self.start_date, str):
            object.__setattr__(self, "start_date", date.fromisoformat(self.start_date))
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.impressions_per_day < 0:
            raise ValueError("impressions_per_day must be >= 0")
        if self.drift_day is not None and self.drift_day < 0:
            raise ValueError("drift_day must be >= 0")
        for f in ("duplicate_rate", "truncated_rate", "invalid_json_rate", "missing_id_rate",
                  "bad_timestamp_rate", "wrong_type_rate", "duplicate_later_hour_share",
                  "app_share", "ctv_share", "late_click_share"):
            v = getattr(self, f)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{f} must be in [0, 1], got {v}")
        if sum(self.line_fault_rates) > 0.5:
            raise ValueError("line fault rates add up to more than 0.5")
        if self.app_share + self.ctv_share >= 1.0:
            raise ValueError("app_share + ctv_share must leave some web sites")
        if not 0.0 < self.base_ctr < 0.5:
            raise ValueError("base_ctr must be in (0, 0.5)")
        for f in ("n_users", "n_sites", "n_publishers", "n_advertisers", "n_segments"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")
        for f in ("n_site_advertiser_pairs", "site_advertiser_sd", "context_match_lift", "interaction_scale"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f} must be >= 0")
        if self.n_sites < 20:
            raise ValueError("n_sites must be >= 20 (web, app and CTV inventory)")

    @property
    def line_fault_rates(self) -> tuple[float, ...]:
        """Rates in the order of FAULT_KINDS."""
        return (self.truncated_rate, self.invalid_json_rate, self.missing_id_rate,
                self.bad_timestamp_rate, self.wrong_type_rate)

    @property
    def effective_drift_day(self) -> int:
        return self.drift_day if self.drift_day is not None else max(1, self.days // 2)

    def without_faults(self) -> "GeneratorConfig":
        return dataclasses.replace(self, duplicate_rate=0.0, truncated_rate=0.0, invalid_json_rate=0.0,
                                   missing_id_rate=0.0, bad_timestamp_rate=0.0, wrong_type_rate=0.0)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["start_date"] = self.start_date.isoformat()
        d["effective_drift_day"] = self.effective_drift_day
        return d


@dataclass
class GenerationSummary:
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
        return self.clicks / self.impressions if self.impressions else 0.0


# ------------------------------------------------------------------- static vocabularies

# code, traffic weight, UTC offset (hours), language, [(ISO-3166-2 subdivision, weight)]
COUNTRIES: tuple[tuple[str, float, float, str, tuple[tuple[str, float], ...]], ...] = (
    ("USA", 0.36, -5, "en", (("CA", .12), ("TX", .09), ("FL", .07), ("NY", .06), ("PA", .04), ("IL", .04),
                            ("OH", .035), ("GA", .033), ("NC", .032), ("MI", .03), ("NJ", .028), ("VA", .026),
                            ("WA", .024), ("AZ", .022), ("MA", .021), ("TN", .021), ("IN", .02), ("CO", .017))),
    ("GBR", 0.08, 0, "en", (("ENG", .84), ("SCT", .08), ("WLS", .05), ("NIR", .03))),
    ("DEU", 0.07, 1, "de", (("NW", .22), ("BY", .16), ("BW", .13), ("NI", .10), ("HE", .08), ("BE", .05), ("SN", .05))),
    ("IND", 0.07, 5.5, "en", (("MH", .10), ("UP", .10), ("KA", .06), ("TN", .06), ("DL", .05), ("GJ", .05), ("WB", .05))),
    ("JPN", 0.06, 9, "ja", (("13", .11), ("14", .07), ("27", .07), ("23", .06), ("11", .06), ("12", .05), ("01", .04))),
    ("FRA", 0.05, 1, "fr", (("IDF", .19), ("ARA", .12), ("NAQ", .09), ("OCC", .09), ("HDF", .09), ("PAC", .08))),
    ("BRA", 0.05, -3, "pt", (("SP", .22), ("MG", .10), ("RJ", .08), ("BA", .07), ("PR", .05), ("RS", .05))),
    ("CAN", 0.04, -5, "en", (("ON", .39), ("QC", .22), ("BC", .14), ("AB", .12))),
    ("AUS", 0.03, 10, "en", (("NSW", .32), ("VIC", .26), ("QLD", .20), ("WA", .10))),
    ("MEX", 0.03, -6, "es", (("CMX", .20), ("MEX", .15), ("JAL", .08), ("NLE", .07))),
    ("ESP", 0.025, 1, "es", (("MD", .15), ("CT", .16), ("AN", .18), ("VC", .11))),
    ("ITA", 0.025, 1, "it", (("25", .17), ("62", .10), ("72", .10), ("82", .08), ("21", .07))),
    ("IDN", 0.02, 7, "id", (("JK", .10), ("JB", .18), ("JT", .13), ("JI", .15))),
    ("KOR", 0.02, 9, "ko", (("11", .19), ("41", .26), ("26", .07), ("28", .06))),
    ("NLD", 0.015, 1, "nl", (("NH", .17), ("ZH", .21), ("NB", .15), ("UT", .08))),
    ("POL", 0.015, 1, "pl", (("14", .14), ("24", .12), ("12", .09))),
    ("TUR", 0.015, 3, "tr", (("34", .19), ("06", .07), ("35", .05))),
    ("ZAF", 0.01, 2, "en", (("GP", .26), ("KZN", .19), ("WC", .12))),
)

# Share of a country's daily traffic by LOCAL hour (quiet nights, evening peak).
LOCAL_HOUR_CURVE = np.array([
    0.025, 0.017, 0.012, 0.009, 0.008, 0.010, 0.017, 0.030, 0.042, 0.048, 0.050, 0.052,
    0.054, 0.053, 0.052, 0.052, 0.053, 0.056, 0.060, 0.064, 0.066, 0.062, 0.050, 0.036,
])

# OpenRTB 2.6 DeviceType: 2 PC, 3 Connected TV, 4 Phone, 5 Tablet.
# (devicetype, make, model, os, osv, ua, weight)
DEVICE_PROFILES: tuple[tuple[int, str | None, str | None, str, str, str, float], ...] = (
    (4, "Apple", "iPhone", "iOS", "18.1",
     "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", .16),
    (4, "Apple", "iPhone", "iOS", "17.6.1",
     "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", .07),
    (4, "Samsung", "SM-S928B", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .05),
    (4, "Samsung", "SM-A546B", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .06),
    (4, "Samsung", "SM-A156B", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-A156B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.6668.100 Mobile Safari/537.36", .04),
    (4, "Google", "Pixel 8", "Android", "15",
     "Mozilla/5.0 (Linux; Android 15; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .03),
    (4, "Xiaomi", "23129RAA4G", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; 23129RAA4G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.6668.81 Mobile Safari/537.36", .05),
    (4, "Motorola", "moto g54 5G", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; moto g54 5G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.86 Mobile Safari/537.36", .02),
    (4, "OnePlus", "CPH2581", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; CPH2581) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Mobile Safari/537.36", .015),
    (4, "Oppo", "CPH2591", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; CPH2591) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.6613.146 Mobile Safari/537.36", .015),
    (5, "Apple", "iPad", "iOS", "18.1",
     "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", .04),
    (5, "Samsung", "SM-X710", "Android", "14",
     "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.102 Safari/537.36", .015),
    (5, "Amazon", "KFTRWI", "Android", "9",
     "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/130.3.1 like Chrome/130.0.6723.102 Safari/537.36", .01),
    (2, "Generic", "Windows PC", "Windows", "10",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36", .17),
    (2, "Generic", "Windows PC", "Windows", "10",
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0", .04),
    (2, "Apple", "Macintosh", "macOS", "14.6",
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15", .06),
    (2, "Apple", "Macintosh", "macOS", "15.1",
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36", .04),
    (2, "Generic", "Linux PC", "Linux", "",
     "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36", .01),
    (3, "Roku", "3941X", "Roku OS", "13.0", "Roku/DVP-13.0 (13.0.0.4152-46)", .012),
    (3, "Samsung", "QN65Q80C", "Tizen", "7.0",
     "Mozilla/5.0 (SMART-TV; LINUX; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) 94.0.4606.31/7.0 TV Safari/537.36", .008),
    (3, "LG", "OLED55C3PUA", "webOS", "23",
     "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/94.0.4606.128 Safari/537.36 WebAppManager", .006),
    (3, "Amazon", "AFTKA", "Fire OS", "7.0",
     "Mozilla/5.0 (Linux; Android 9; AFTKA Build/PS7633.3445N; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36", .006),
)

# OpenRTB ConnectionType by device type: (values, probabilities)
CONNECTION_TYPES = {
    2: ((1, 2), (0.4, 0.6)),
    3: ((1, 2), (0.3, 0.7)),
    4: ((2, 3, 6, 7), (0.55, 0.08, 0.30, 0.07)),
    5: ((2, 6), (0.85, 0.15)),
}

WORDS = ("news", "daily", "tech", "sport", "city", "play", "game", "star", "cook", "home", "auto", "travel",
         "weather", "money", "style", "health", "music", "movie", "photo", "chat", "puzzle", "word", "fit",
         "kid", "shop", "deal", "map", "ride", "food", "pet", "garden", "craft", "zen", "pixel", "nova", "hub",
         "zone", "world", "live", "times", "post", "wire", "report", "guide", "mag", "tribune", "herald",
         "fan", "score", "crypto", "recipe", "solitaire", "block", "quiz", "radio", "stream", "tv", "local")
TLDS = ("com", "com", "com", "com", "net", "org", "co.uk", "de", "fr", "io", "com.br", "jp")
IAB_CATS = ("IAB1", "IAB1-6", "IAB2", "IAB3", "IAB3-1", "IAB5", "IAB7", "IAB8", "IAB9", "IAB9-30", "IAB12",
            "IAB13", "IAB15", "IAB15-10", "IAB17", "IAB18", "IAB19", "IAB20", "IAB22")
SECTIONS = ("", "news/", "sports/", "entertainment/", "business/", "tech/", "lifestyle/", "video/")

# Placement formats: 0 banner, 1 video, 2 native. Size/pos vocabularies by (kind, format);
# kind 0 web, 1 mobile app, 2 CTV app. OpenRTB AdPosition: 0 unknown, 1 above the fold,
# 3 below the fold, 4 header, 5 footer, 6 sidebar, 7 full screen.
FORMAT_NAMES = ("banner", "video", "native")
FORMAT_BY_KIND = {0: (0.80, 0.12, 0.08), 1: (0.70, 0.15, 0.15), 2: (0.0, 1.0, 0.0)}
SIZES = {
    (0, 0): (("300x250", .40), ("728x90", .20), ("160x600", .06), ("300x600", .08), ("970x250", .05),
             ("320x50", .11), ("320x100", .05), ("336x280", .05)),
    (1, 0): (("320x50", .50), ("300x250", .25), ("320x480", .15), ("728x90", .05), ("768x1024", .05)),
    (0, 1): (("640x360", .50), ("640x480", .20), ("1280x720", .30)),
    (1, 1): (("1080x1920", .30), ("640x360", .40), ("1280x720", .30)),
    (2, 1): (("1920x1080", .80), ("1280x720", .20)),
}
POSITIONS = {
    (0, 0): ((1, .35), (3, .25), (4, .10), (5, .05), (6, .15), (0, .10)),
    (1, 0): ((1, .30), (4, .10), (5, .30), (0, .30)),
    (0, 1): ((1, .50), (3, .20), (0, .30)),
    (1, 1): ((7, .70), (0, .30)),
    (2, 1): ((7, .90), (0, .10)),
}
APP_SHARE_OF_MOBILE = 0.55  # phone/tablet impressions in apps (the rest: mobile web)
FULLSCREEN_SIZES = {"320x480", "768x1024", "1080x1920"}
FLOOR_MEDIAN = {0: 0.40, 1: 2.50, 2: 0.80}  # by format; CTV video x3
CREATIVE_TYPES = ("banner", "video", "native", "rich_media")
CREATIVE_TYPE_P = (0.55, 0.20, 0.15, 0.10)
COMPATIBLE = {0: (0, 3), 1: (1,), 2: (2,)}  # placement format -> creative types
SEGMENT_PROVIDERS = (("7", "acme-dmp", 1000), ("12", "intentiq-contextual", 5000))
NATIVE_REQUEST = ('{"ver":"1.2","context":1,"plcmttype":1,"assets":[{"id":1,"required":1,"title":{"len":90}},'
                  '{"id":2,"required":1,"img":{"type":3,"wmin":300,"hmin":250}},{"id":3,"data":{"type":2,"len":140}}]}')


# ------------------------------------------------------------------- the world

def _zipf_weights(rng: np.random.Generator, n: int, s: float, q: float = 0.0) -> np.ndarray:
    """Zipf(-Mandelbrot) popularity (rank + q) ** -s over n entities in random rank order, normalized."""
    ranks = rng.permutation(n) + 1.0
    w = (ranks + q) ** -s
    return w / w.sum()


def _hexes(rng: np.random.Generator, n: int, nbytes: int) -> list[str]:
    h = rng.bytes(n * nbytes).hex()
    k = 2 * nbytes
    return [h[i:i + k] for i in range(0, n * k, k)]


def _unique_ints(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    return rng.choice(hi - lo, size=n, replace=False) + lo


def _pick(rng: np.random.Generator, table: tuple[tuple[Any, float], ...], n: int) -> list[Any]:
    values = [v for v, _ in table]
    p = np.array([w for _, w in table])
    return [values[i] for i in rng.choice(len(values), size=n, p=p / p.sum())]


def _cdf(w: np.ndarray) -> np.ndarray:
    c = np.cumsum(w, dtype=np.float64)
    c /= c[-1]
    c[-1] = 1.0
    return c


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


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
        return {
            "users": len(self.user_ids), "countries": len(self.country_codes), "regions": len(self.region_codes),
            "device_profiles": len(self.prof_ua), "segments": len(self.segment_ids),
            "publishers": len(self.pub_objs), "sites": int((self.site_kind == 0).sum()),
            "mobile_apps": int((self.site_kind == 1).sum()), "ctv_apps": int((self.site_kind == 2).sum()),
            "placements": len(self.pl_tag), "advertisers": len(self.adv_ids), "campaigns": len(self.camp_ids),
            "creatives": len(self.cre_ids),
        }


def build_world(cfg: GeneratorConfig) -> World:
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
    user_ids = _hexes(rng, nu, 20)
    ifa_hex = _hexes(rng, nu, 16)
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
    app_hex = _hexes(rng, ns_, 12)
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
    tag_hex = _hexes(rng, npl, 12)
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
            w, h = (int(x) for x in pl_size[j].split("x"))  # type: ignore[union-attr]
            pl_objs.append({"w": w, "h": h, "pos": int(pl_pos[j]), "format": [{"w": w, "h": h}]})
        elif f == 1:
            w, h = (int(x) for x in pl_size[j].split("x"))  # type: ignore[union-attr]
            pl_objs.append({"mimes": ["video/mp4", "video/webm"], "minduration": 5, "maxduration": 30,
                            "protocols": [2, 3, 5, 6, 7, 8], "w": w, "h": h, "startdelay": 0,
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


# ------------------------------------------------------------------- drawing impressions

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
    country = _draw(world.country_cdf_by_hour[utc_hour], rng.random(n))
    user = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for ci in range(len(world.country_codes)):
        m = country == ci
        if m.any():
            user[m] = world.users_by_country[ci][_draw(world.user_cdf_by_country[ci], u[m])]
    dtype = world.prof_dtype[world.user_prof[user]]
    # inventory pool: PC -> web; phone/tablet -> app 55% / mobile web 45%; CTV -> CTV apps
    pool = np.where(dtype == 2, 0, np.where(dtype == 3, 2, np.where(rng.random(n) < APP_SHARE_OF_MOBILE, 1, 0)))
    site = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for kind in range(3):
        m = pool == kind
        if m.any():
            site[m] = world.sites_by_kind[kind][_draw(world.site_cdf_by_kind[kind], u[m])]
    placement = np.minimum(np.searchsorted(world.pl_keys, site + rng.random(n), side="right"),
                           len(world.pl_keys) - 1)
    fmt = world.pl_format[placement]
    creative = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for f in range(3):
        m = fmt == f
        if m.any():
            creative[m] = world.cre_by_format[f][_draw(world.cre_cdf_by_format[f], u[m])]
    conn = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for dt, (vals, p) in CONNECTION_TYPES.items():
        m = dtype == dt
        if m.any():
            conn[m] = np.array(vals)[_draw(_cdf(np.array(p)), u[m])]
    floor = np.maximum(np.round(world.pl_floor[placement] * np.exp(rng.normal(0.0, 0.2, size=n)), 2), 0.01)
    return Draws(country=country, user=user, site=site, placement=placement, creative=creative,
                 conn=conn, floor=floor)


# ------------------------------------------------------------------- the ground truth

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


def build_truth_model(world: World, cfg: GeneratorConfig) -> tm.TruthModel:
    """The ground-truth logistic click model of ``world`` (see :mod:`feature_store.truth_model`).

    Main effects on every placement, device, geography, audience, ad and time field; a hashed
    per-user effect (sd 0.45, not learnable: user_id is not a feature); three interactions,
    the pairs the ``generated`` spec crosses; drift from ``cfg.effective_drift_day``.

    Interactions, and why they are this strong
    ------------------------------------------
    - site_id x advertiser_id: contextual relevance plus pair-specific affinity. Every
      advertiser has a hidden vertical (a top-level IAB category, not in the bid request);
      when it is one of the site's categories the pair gets a lift of about
      ``context_match_lift`` (0.7, i.e. roughly 2x the CTR; x exp(N(0, 0.25)) per vertical;
      ~13 % of pairs match). On top, ``n_site_advertiser_pairs`` pairs drawn by traffic
      get an idiosyncratic N(0, ``site_advertiser_sd`` = 0.6) affinity (deals, audience
      overlap), so the heavy pairs a model can actually learn carry one.
    - device_type x creative_type: ``DEVICE_X_CREATIVE`` (up to +0.6 for rich media on phones).
    - hour_of_day x country: a local-time cycle of amplitude ``LOCAL_HOUR_AMPLITUDE`` (0.25).
    ``interaction_scale`` multiplies all of them (0: main effects only, a control).

    These were weaker before (site x advertiser: only 600 pairs with sd 0.5, 14 % of the
    traffic; device x creative at about half these values; local-hour amplitude 0.15). Then
    the interactions were worth 0.0005 nats of expected log-loss when dropped outright, less
    once the main effects absorb what they can, and the site x advertiser cross's ~140k mostly
    noise pairs cost as much as the crosses gained: at 1M rows the ``generated`` spec did no
    better with its crosses than without (0.07143 vs 0.07132, best possible 0.06815). Real
    logs are not like that: contextual match and device-format fit move CTR by 1.5-2x, and
    cross features are worth percents of normalized entropy. Measured on the default world
    (seed 7, 200k impressions): the interactions now carry 15 % of the logit variance
    (site x advertiser 8 %, device x creative 4 %, hour x country 3 %; the user effect 16 %)
    and dropping them costs 0.0015 nats of expected log-loss (the user effect: 0.0013).
    With L2 C = 0.1 (the best of 0.03 / 0.1 / 0.3 on a validation day for both variants; the
    site x advertiser cross needs that much shrinkage) the crosses close 10 % of the gap to
    the best possible at 250k training rows, 19 % at 1M and 28 % at 5M
    (``benchmarks/bench_crosses.py``), and the gap keeps shrinking with rows as more pairs
    become learnable. Out of reach for any model of the spec: the user effect and the long
    tail of pairs too rare to estimate.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    r = lambda sd, n: rng.normal(0.0, sd, size=n).tolist()  # noqa: E731

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
    hashed = (tm.HashedEffect("user_id", 0.45, int(rng.integers(0, 2**31))),)

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
        tm.Interaction(("site_id", "advertiser_id"), scaled(sxa)),
        tm.Interaction(("device_type", "creative_type"), scaled(DEVICE_X_CREATIVE)),
        tm.Interaction(("hour_of_day", "country"), scaled(hxc)),
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
    drift = tm.Drift(
        day=day,
        date=cfg.start_date + timedelta(days=day),
        base_shift=-0.08,
        effects={"creative_id": cre_over, "site_id": site_over, "user_segments": seg_over},
        interactions=(tm.Interaction(("device_type", "creative_type"),
                                     scaled({"4": {"video": 0.15}, "2": {"native": -0.40}})),),
    )
    model = tm.TruthModel(base_logit=0.0, effects=effects, hashed=hashed, interactions=interactions, drift=drift)

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

    Every entry is looked up through :mod:`feature_store.truth_model` with the raw
    value the record will carry, so it agrees with the per-record function.
    """

    def __init__(self, world: World, model: tm.TruthModel, drifted: bool):
        unsupported = sorted((set(model.effects) | (set(model.drift.effects) if model.drift else set()))
                             - SUPPORTED_EFFECT_FIELDS)
        if unsupported:
            raise ValueError(f"the generator cannot evaluate effects on {unsupported}")
        ev = lambda f, v: 0.0 if v is None else tm.effect_value(model, f, tm.value_key(v), drifted)  # noqa: E731
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
                w.hashed_cache[key] = np.array([tm.hashed_value(h, uid) for uid in w.user_ids])
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
            iv = lambda a, b: tm.interaction_value(model, i, tm.value_key(a), tm.value_key(b), drifted)  # noqa: B023,E731
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


# ------------------------------------------------------------------- one hour's draws

@dataclasses.dataclass
class HourDraws:
    """The random draws of one generated hour, in the one order :func:`generate_logs` and
    :func:`generate_frame` both take them (so the files and the frame agree). ``rng`` is
    left after the click draw: the click delays come next from it."""

    hour_ms: int
    hour_dt: datetime
    abs_hour: int
    drifted: bool
    d: Draws
    t_ms: np.ndarray
    ids: list[str]
    req_ids: list[str]
    p: np.ndarray  # true click probability
    fault_u: np.ndarray  # uniforms deciding each line's fault
    dup_u: np.ndarray  # ... whether it is duplicated
    dup_later_u: np.ndarray  # ... whether the duplicate lands in a later hour
    dup_delay: np.ndarray  # ... how many hours later
    clicked: np.ndarray  # bool: the Bernoulli(p) click draw
    rng: np.random.Generator


def _draw_hour(cfg: GeneratorConfig, world: World, arrays: dict[bool, "TruthArrays"], drift_date,
               start: datetime, hi: int, n: int) -> HourDraws:
    hour_dt = start + timedelta(hours=hi)
    hour_ms = int(start.timestamp() * 1000) + hi * HOUR_MS
    drifted = drift_date is not None and hour_dt.date() >= drift_date
    abs_hour = hour_ms // HOUR_MS  # streams keyed by absolute time: adjacent ranges never repeat ids
    rng = np.random.default_rng([cfg.seed, 2, abs_hour])
    d = draw_impressions(world, rng, n, hour_dt.hour)
    t_ms = hour_ms + np.sort(rng.integers(0, HOUR_MS, size=n))
    ids = _hexes(rng, n, 16)
    req_ids = _hexes(rng, n, 20)
    z = arrays[drifted].logit(d, hour_dt.hour, hour_dt.weekday())
    p = 1.0 / (1.0 + np.exp(-z))
    fault_u, dup_u, dup_later_u = rng.random(n), rng.random(n), rng.random(n)
    dup_delay = rng.integers(1, 4, size=n)
    clicked = rng.random(n) < p
    return HourDraws(hour_ms, hour_dt, abs_hour, drifted, d, t_ms, ids, req_ids, p, fault_u, dup_u,
                     dup_later_u, dup_delay, clicked, rng)


# ------------------------------------------------------------------- in process, without files

def _entity_columns(world: World) -> dict[str, tuple[str, Any]]:
    """Each raw field as (entity kind, Arrow array over that kind's index), built from the
    same objects the records carry, so ``take`` gives what impression_fields maps them to."""
    import pyarrow as pa

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
                   model: tm.TruthModel | None = None) -> "pa.Table":
    """Every impression ``generate_logs(config, ...)`` generates, in process and without files.

    One row per impression (each once: no duplicate or damaged lines, i.e. the impressions
    before the log faults), in time order: ``impression_id``, ``event_time`` (UTC, ms), the
    raw fields of :data:`shared.openrtb.RAW_FIELDS` exactly as
    :func:`shared.openrtb.impression_fields` maps the written record, ``p_true`` and
    ``clicked`` (the same Bernoulli draw as the click log, whatever its delay: no
    attribution window). Same streams as :func:`generate_logs`, so ids, truth and clicks
    agree with the files (``tests/test_generator.py`` checks it). ~1M rows in ~15 s.
    ``world`` / ``model``: the ones :func:`build_world` / :func:`build_truth_model` give for
    ``config`` (pass them to skip rebuilding, or a changed model to relabel the same draws).
    """
    import pyarrow as pa

    from shared.openrtb import RAW_FIELDS

    cfg = config
    world = world if world is not None else build_world(cfg)
    model = model if model is not None else build_truth_model(world, cfg)
    arrays = {False: TruthArrays(world, model, drifted=False), True: TruthArrays(world, model, drifted=True)}
    drift_date = model.drift.date if model.drift else None
    columns = _entity_columns(world)
    start = datetime(cfg.start_date.year, cfg.start_date.month, cfg.start_date.day, tzinfo=timezone.utc)
    counts = np.concatenate([_hour_counts(cfg, world, day) for day in range(cfg.days)])
    dtypes = {"string": pa.string(), "long": pa.int64(), "double": pa.float64(),
              "array<string>": pa.list_(pa.string())}
    schema = pa.schema([("impression_id", pa.string()), ("event_time", pa.timestamp("ms", tz="UTC"))]
                       + [(f.name, dtypes[f.dtype]) for f in RAW_FIELDS]
                       + [("p_true", pa.float64()), ("clicked", pa.bool_())])
    parts = []
    for hi in range(cfg.days * 24):
        n = int(counts[hi])
        h = _draw_hour(cfg, world, arrays, drift_date, start, hi, n)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(lines) + b"\n" if lines else b""
    path.write_bytes(data)
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


def _hour_counts(cfg: GeneratorConfig, world: World, day: int) -> np.ndarray:
    """Impressions per UTC hour of one day: the traffic curve with a little noise, summing to the daily total."""
    rng = np.random.default_rng([cfg.seed, 4, (cfg.start_date + timedelta(days=day)).toordinal()])
    share = world.utc_hour_share * np.exp(rng.normal(0.0, 0.05, size=24))
    share /= share.sum()
    raw = share * cfg.impressions_per_day
    counts = np.floor(raw).astype(np.int64)
    rest = cfg.impressions_per_day - int(counts.sum())
    if rest:
        counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    return counts


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
    import pyarrow as pa  # imported here so `ctr --help` (which reads GeneratorConfig defaults) stays light
    import pyarrow.parquet as pq
    from tqdm import tqdm

    t0 = time.perf_counter()
    cfg = config
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    world = build_world(cfg)
    model = build_truth_model(world, cfg)
    arrays = {False: TruthArrays(world, model, drifted=False), True: TruthArrays(world, model, drifted=True)}
    drift_date = model.drift.date if model.drift else None

    (out / "truth").mkdir(parents=True, exist_ok=True)
    model_doc = tm.to_dict(model)
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
    counts = np.concatenate([_hour_counts(cfg, world, day) for day in range(cfg.days)])
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
        h = _draw_hour(cfg, world, arrays, drift_date, start, hi, n)
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
        "generator": "feature_store.generator",
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
